//! Real files made by real encoders (pdf-writer, zip, png, jpeg-encoder, gif, tiff), and the
//! points to cut them at so that what makes them whole is missing.

use std::io::Write as _;

/// One sample: its extension, its bytes, and how many bytes at its end hold what makes it
/// whole (a cut inside those is a file whose content is all there; cuts stop before them).
pub struct Sample {
    pub ext: &'static str,
    pub format: &'static str,
    pub bytes: Vec<u8>,
    pub keep_tail: usize,
}

impl Sample {
    /// Where to cut it: early (header only), in the middle, and just before its end structure.
    pub fn cuts(&self) -> Vec<usize> {
        let last = self.bytes.len() - self.keep_tail;
        let mut c = vec![5, self.bytes.len() / 2, last - 1];
        c.retain(|&n| n < last);
        c.dedup();
        c
    }
}

/// One sample of each format inboxd checks.
pub fn samples() -> Vec<Sample> {
    let s = |ext, format, bytes, keep_tail| Sample {
        ext,
        format,
        bytes,
        keep_tail,
    };
    vec![
        // The last bytes are "%%EOF" and a line end.
        s("pdf", "PDF", pdf(6), 6),
        // The others end with what makes them whole (a ZIP's end record with its comment
        // length, a PNG's IEND, a JPEG's end marker, a GIF's trailer, the tiff crate's last
        // directory): without even their last byte they are cut.
        s("docx", "ZIP", docx(), 1),
        s("png", "PNG", png(), 1),
        s("jpg", "JPEG", jpeg(), 1),
        s("gif", "GIF", gif(), 1),
        s("tif", "TIFF", tiff(), 1),
    ]
}

/// A PDF of `pages` pages, made by pdf-writer.
pub fn pdf(pages: usize) -> Vec<u8> {
    use pdf_writer::{Pdf, Rect, Ref};
    let mut pdf = Pdf::new();
    let (catalog, tree) = (Ref::new(1), Ref::new(2));
    let kids: Vec<Ref> = (0..pages).map(|i| Ref::new(3 + i as i32)).collect();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree)
        .kids(kids.iter().copied())
        .count(pages as i32);
    for page in &kids {
        pdf.page(*page)
            .parent(tree)
            .media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
    }
    pdf.finish()
}

const ZIP_COMMENT: &str = "made by the inboxd tests";

/// A ZIP shaped like a Word document, made by the zip crate.
pub fn docx() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        for (i, name) in [
            "[Content_Types].xml",
            "word/document.xml",
            "docProps/app.xml",
        ]
        .iter()
        .enumerate()
        {
            z.start_file(*name, opts).expect("zip entry");
            z.write_all(&super::content(500 + i as u64, 3000))
                .expect("zip data");
        }
        z.set_comment(ZIP_COMMENT).expect("zip comment");
        z.finish().expect("zip finish");
    }
    buf.into_inner()
}

pub fn png() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, 64, 48);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        let mut w = e.write_header().expect("png header");
        w.write_image_data(&super::content(510, 64 * 48 * 3))
            .expect("png data");
    }
    out
}

pub fn jpeg() -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(
            &super::content(520, 64 * 48 * 3),
            64,
            48,
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("jpeg");
    out
}

pub fn gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let palette = [0u8, 0, 0, 255, 255, 255];
        let mut e = gif::Encoder::new(&mut out, 16, 16, &palette).expect("gif");
        let frame = gif::Frame {
            width: 16,
            height: 16,
            buffer: std::borrow::Cow::Owned((0..256).map(|i| (i % 2) as u8).collect()),
            ..gif::Frame::default()
        };
        e.write_frame(&frame).expect("gif frame");
    }
    out
}

/// A two-page TIFF, made by the tiff crate.
pub fn tiff() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut e = tiff::encoder::TiffEncoder::new(&mut buf).expect("tiff");
        for page in 0..2u64 {
            let data = super::content(530 + page, 32 * 32);
            e.write_image::<tiff::encoder::colortype::Gray8>(32, 32, &data)
                .expect("tiff page");
        }
    }
    buf.into_inner()
}
