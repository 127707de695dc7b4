//! Real files made by real encoders (zip, png, jpeg-encoder, gif, tiff, pdf-writer), whole
//! and cut at many points: every cut version must wait, every whole version must go.

use super::*;
use std::io::Write as _;

fn pdf_file() -> Vec<u8> {
    use pdf_writer::{Pdf, Rect, Ref};
    let mut pdf = Pdf::new();
    let (catalog, tree, page) = (Ref::new(1), Ref::new(2), Ref::new(3));
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    pdf.page(page)
        .parent(tree)
        .media_box(Rect::new(0.0, 0.0, 595.0, 842.0));
    pdf.finish()
}

fn zip_file() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default();
        for i in 0..3 {
            z.start_file(format!("word/part{i}.xml"), opts).unwrap();
            z.write_all(&vec![b'x'; 5000 + i * 100]).unwrap();
        }
        z.set_comment("made by the inboxd tests").unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

fn png_file() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut e = png::Encoder::new(&mut out, 64, 48);
        e.set_color(png::ColorType::Rgb);
        e.set_depth(png::BitDepth::Eight);
        let mut w = e.write_header().unwrap();
        let data: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        w.write_image_data(&data).unwrap();
    }
    out
}

fn jpeg_file() -> Vec<u8> {
    let mut out = Vec::new();
    let data: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 13 % 251) as u8).collect();
    jpeg_encoder::Encoder::new(&mut out, 90)
        .encode(&data, 64, 48, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

fn gif_file() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let palette = [0u8, 0, 0, 255, 255, 255];
        let mut e = gif::Encoder::new(&mut out, 16, 16, &palette).unwrap();
        let frame = gif::Frame {
            width: 16,
            height: 16,
            buffer: std::borrow::Cow::Owned((0..256).map(|i| (i % 2) as u8).collect()),
            ..gif::Frame::default()
        };
        e.write_frame(&frame).unwrap();
    }
    out
}

fn tiff_file() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut e = tiff::encoder::TiffEncoder::new(&mut buf).unwrap();
        for page in 0..2u8 {
            let data: Vec<u8> = (0..32 * 32).map(|i| (i as u8).wrapping_add(page)).collect();
            e.write_image::<tiff::encoder::colortype::Gray8>(32, 32, &data)
                .unwrap();
        }
    }
    buf.into_inner()
}

fn cuts(size: usize, keep_tail: usize) -> Vec<usize> {
    let last = size - keep_tail;
    let mut c: Vec<usize> = [0, 1, 3, 7, 8, 20, 100, size / 4, size / 2, size * 3 / 4]
        .into_iter()
        .chain([last.saturating_sub(32), last.saturating_sub(1)])
        .filter(|&n| n < last)
        .collect();
    c.sort();
    c.dedup();
    c
}

fn assert_whole_and_cuts_wait(name: &str, format: Format, bytes: &[u8], keep_tail: usize) {
    let path = Path::new(name);
    assert_eq!(
        check(path, bytes.len() as u64, &bytes).unwrap(),
        Whole::Yes(format),
        "{name}: the whole file"
    );
    for n in cuts(bytes.len(), keep_tail) {
        let cut = &bytes[..n];
        let got = check(path, n as u64, &cut).unwrap();
        assert!(
            matches!(got, Whole::No(f, _) if f == format),
            "{name} cut at {n} of {} bytes: {got:?}",
            bytes.len()
        );
    }
}

#[test]
fn pdf() {
    // The last bytes are "%%EOF" and a line end: a file cut inside them is not a file whose
    // content is missing, so cuts stop before them.
    assert_whole_and_cuts_wait("scan.pdf", Format::Pdf, &pdf_file(), 6);
}

#[test]
fn zip_and_office_documents() {
    let z = zip_file();
    assert_whole_and_cuts_wait("letter.docx", Format::Zip, &z, 1);
    assert_whole_and_cuts_wait("bundle.zip", Format::Zip, &z, 1);
}

#[test]
fn png() {
    assert_whole_and_cuts_wait("photo.png", Format::Png, &png_file(), 1);
}

#[test]
fn jpeg() {
    let j = jpeg_file();
    assert_whole_and_cuts_wait("photo.jpg", Format::Jpeg, &j, 1);
    let mut padded = j.clone();
    padded.extend_from_slice(&[0u8; 16]);
    assert_eq!(
        check(Path::new("p.jpg"), padded.len() as u64, &padded.as_slice()).unwrap(),
        Whole::Yes(Format::Jpeg),
        "zero padding after the end marker"
    );
}

#[test]
fn gif() {
    assert_whole_and_cuts_wait("anim.gif", Format::Gif, &gif_file(), 1);
}

#[test]
fn tiff_with_two_pages() {
    assert_whole_and_cuts_wait("fax.tif", Format::Tiff, &tiff_file(), 1);
}

#[test]
fn unknown_formats_are_left_to_time() {
    let text = b"just some text\n";
    assert_eq!(
        check(Path::new("notes.txt"), text.len() as u64, &&text[..]).unwrap(),
        Whole::Unknown
    );
    // A name that promises a PDF but holds something else entirely: not ours to judge.
    assert_eq!(
        check(Path::new("fake.pdf"), text.len() as u64, &&text[..]).unwrap(),
        Whole::Unknown
    );
    // A real file read through the file system.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("scan.pdf");
    std::fs::write(&p, pdf_file()).unwrap();
    let f = std::fs::File::open(&p).unwrap();
    let size = f.metadata().unwrap().len();
    assert_eq!(check(&p, size, &f).unwrap(), Whole::Yes(Format::Pdf));
}
