//! Completeness from the file's own format. Time alone cannot tell a finished scan from one
//! whose writer paused; most document and image formats end with a structure that is only
//! there once the file is whole. Pure: it reads through [`ReadAt`] only the bytes it needs
//! (the head, the tail, a TIFF's directory chain), never the whole file.

use std::path::Path;

/// Reads `len` bytes at `offset` (fewer at the end of the file).
pub trait ReadAt {
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>>;
}

/// The formats that say when they are whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pdf,
    /// ZIP and everything built on it: docx, xlsx, pptx, odt, ods, jar, epub, …
    Zip,
    Png,
    Jpeg,
    Tiff,
    Gif,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Pdf => "PDF",
            Format::Zip => "ZIP",
            Format::Png => "PNG",
            Format::Jpeg => "JPEG",
            Format::Tiff => "TIFF",
            Format::Gif => "GIF",
        }
    }
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whole {
    /// The format's end structure is there.
    Yes(Format),
    /// Not whole yet: what is missing.
    No(Format, String),
    /// Not a format we know: time alone decides.
    Unknown,
}

const MAGIC: &[(&[u8], Format)] = &[
    (b"%PDF-", Format::Pdf),
    (b"PK\x03\x04", Format::Zip),
    // An empty archive is only its end record.
    (b"PK\x05\x06", Format::Zip),
    (b"\x89PNG\r\n\x1a\n", Format::Png),
    (b"\xff\xd8\xff", Format::Jpeg),
    (b"II*\x00", Format::Tiff),
    (b"MM\x00*", Format::Tiff),
    (b"GIF87a", Format::Gif),
    (b"GIF89a", Format::Gif),
];

/// The format the name promises (so that a file still too short for its header waits).
fn by_extension(name: &Path) -> Option<Format> {
    let ext = name.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => Format::Pdf,
        "zip" | "docx" | "xlsx" | "pptx" | "odt" | "ods" | "odp" | "jar" | "epub" => Format::Zip,
        "png" => Format::Png,
        "jpg" | "jpeg" => Format::Jpeg,
        "tif" | "tiff" => Format::Tiff,
        "gif" => Format::Gif,
        _ => return None,
    })
}

/// How far back from the end a PDF's `%%EOF` may be (trailing whitespace, a final comment).
const PDF_TAIL: u64 = 1024;
/// A ZIP's end record is 22 bytes plus a comment of at most 65 535.
const ZIP_TAIL: u64 = 22 + 65_535;
/// A TIFF with more directories than this is not checked further (and not held back).
const TIFF_MAX_IFDS: usize = 10_000;

/// Checks the file `name` of `size` bytes.
pub fn check(name: &Path, size: u64, file: &dyn ReadAt) -> std::io::Result<Whole> {
    let head = file.read_at(0, 8)?;
    let found = MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, f)| *f);
    let format = match (found, by_extension(name)) {
        (Some(f), _) => f,
        // Named like a format but its header is not (all) there yet: still being written.
        (None, Some(f))
            if size < 8 || MAGIC.iter().any(|(m, g)| *g == f && m.starts_with(&head)) =>
        {
            return Ok(Whole::No(
                f,
                format!("the {} header is not complete", f.name()),
            ));
        }
        _ => return Ok(Whole::Unknown),
    };
    Ok(match format {
        Format::Pdf => pdf(size, file)?,
        Format::Zip => zip(size, file)?,
        Format::Png => ends_with(
            format,
            size,
            file,
            b"\x00\x00\x00\x00IEND\xaeB`\x82",
            "IEND chunk",
        )?,
        Format::Jpeg => jpeg(size, file)?,
        Format::Gif => ends_with(format, size, file, b"\x3b", "trailer (0x3B)")?,
        Format::Tiff => tiff(size, file)?,
    })
}

fn tail(size: u64, file: &dyn ReadAt, n: u64) -> std::io::Result<(u64, Vec<u8>)> {
    let start = size.saturating_sub(n);
    Ok((start, file.read_at(start, (size - start) as usize)?))
}

fn ends_with(
    f: Format,
    size: u64,
    file: &dyn ReadAt,
    end: &[u8],
    what: &str,
) -> std::io::Result<Whole> {
    let (_, t) = tail(size, file, end.len() as u64)?;
    Ok(if t == end {
        Whole::Yes(f)
    } else {
        Whole::No(f, format!("no {} {what} at the end", f.name()))
    })
}

fn pdf(size: u64, file: &dyn ReadAt) -> std::io::Result<Whole> {
    let (_, t) = tail(size, file, PDF_TAIL)?;
    Ok(if t.windows(5).any(|w| w == b"%%EOF") {
        Whole::Yes(Format::Pdf)
    } else {
        Whole::No(
            Format::Pdf,
            "no %%EOF in the last 1 KiB of the PDF".to_owned(),
        )
    })
}

fn jpeg(size: u64, file: &dyn ReadAt) -> std::io::Result<Whole> {
    // Some cameras pad the file with zeros after the end-of-image marker.
    let (_, t) = tail(size, file, 64)?;
    let end = t.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    Ok(if t[..end].ends_with(b"\xff\xd9") {
        Whole::Yes(Format::Jpeg)
    } else {
        Whole::No(
            Format::Jpeg,
            "no JPEG end-of-image marker (FF D9) at the end".to_owned(),
        )
    })
}

fn u16le(b: &[u8]) -> u64 {
    u64::from(u16::from_le_bytes([b[0], b[1]]))
}

fn u32le(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn zip(size: u64, file: &dyn ReadAt) -> std::io::Result<Whole> {
    let missing = |what: &str| Whole::No(Format::Zip, what.to_owned());
    let (start, t) = tail(size, file, ZIP_TAIL)?;
    // The last end-of-central-directory signature whose record fits and whose comment
    // length reaches exactly to the end of the file.
    let found = (0..t.len().saturating_sub(21)).rev().find(|&i| {
        t[i..].starts_with(b"PK\x05\x06") && i + 22 + u16le(&t[i + 20..]) as usize == t.len()
    });
    let Some(i) = found else {
        return Ok(missing("no ZIP end-of-central-directory record at the end"));
    };
    let eocd = start + i as u64;
    let (cd_size, cd_offset) = (u32le(&t[i + 12..]), u32le(&t[i + 16..]));
    if cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // ZIP64: its own end record sits before a locator right in front of this one.
        let has_locator = i >= 20 && t[i - 20..].starts_with(b"PK\x06\x07");
        return Ok(if has_locator {
            Whole::Yes(Format::Zip)
        } else {
            missing("a ZIP64 archive without its end-record locator")
        });
    }
    Ok(if cd_offset + cd_size <= eocd {
        Whole::Yes(Format::Zip)
    } else {
        missing("the ZIP central directory lies outside the file")
    })
}

fn tiff(size: u64, file: &dyn ReadAt) -> std::io::Result<Whole> {
    let missing = |what: String| Whole::No(Format::Tiff, what);
    let head = file.read_at(0, 8)?;
    if head.len() < 8 {
        return Ok(missing("the TIFF header is not complete".to_owned()));
    }
    let le = head[0] == b'I';
    let rd16 = |b: &[u8]| {
        if le {
            u16le(b)
        } else {
            u64::from(u16::from_be_bytes([b[0], b[1]]))
        }
    };
    let rd32 = |b: &[u8]| {
        if le {
            u32le(b)
        } else {
            u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    };
    let mut ifd = rd32(&head[4..]);
    let mut seen = 0usize;
    while ifd != 0 {
        if seen >= TIFF_MAX_IFDS {
            return Ok(Whole::Yes(Format::Tiff));
        }
        seen += 1;
        if ifd + 2 > size {
            return Ok(missing(format!(
                "TIFF directory {seen} at offset {ifd} lies beyond the end ({size} bytes)"
            )));
        }
        let n = rd16(&file.read_at(ifd, 2)?);
        let next_at = ifd + 2 + 12 * n;
        if next_at + 4 > size {
            return Ok(missing(format!(
                "TIFF directory {seen} ({n} entries at offset {ifd}) does not fit in {size} bytes"
            )));
        }
        let next = file.read_at(next_at, 4)?;
        ifd = rd32(&next);
    }
    Ok(Whole::Yes(Format::Tiff))
}

impl ReadAt for &[u8] {
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let start = (offset as usize).min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Ok(self[start..end].to_vec())
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        let mut got = 0;
        while got < len {
            match std::os::unix::fs::FileExt::read_at(self, &mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
