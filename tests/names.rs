//! Names chosen by whoever writes into an inbox: they cannot forge a log line or a line of a
//! reason file, and the clutter file servers and desktops leave behind is never uploaded.

mod support;

use support::s3::TestS3;
use support::{BUCKET, Daemon, Fault, Op, S3ErrorCode, Setup, assert_object, content, fingerprint};

/// Text that would pass for a line of inboxd's own if a name could break the line.
const FORGED: &str = "FORGED inboxd: all files uploaded";

/// Lines of `text` that start with the forged text (after any leading whitespace).
fn forged_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("FORGED"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_name_cannot_forge_a_log_line_or_a_reason_line() {
    let s3 = TestS3::start().await;
    // Debug logs too: more lines that carry the name (the per-file span, the hashing, ...).
    let daemon = Daemon::new(&s3, Setup::new().set("log", "level", "\"debug\""));
    let inbox = daemon.inbox().clone();
    let uploaded = format!("ok\n{FORGED}\r\n{FORGED}.pdf");
    let failing = format!("bad\n{FORGED}.pdf");
    let good = content(1, 5_000);
    let bad = content(2, 5_000);
    inbox.drop(&uploaded, &good);
    inbox.drop(&failing, &bad);
    s3.push(
        Op::PutObject,
        Fault::reject(S3ErrorCode::InvalidArgument)
            .for_key(inbox.key(&failing))
            .always(),
    );

    let out = daemon
        .cli(
            &["once", "--config", &daemon.config.to_string_lossy()],
            &[("RUST_LOG", "debug")],
        )
        .await;
    assert_eq!(out.code(), Some(1), "one file fails on purpose\n{out}");

    // The files themselves were handled like any other, under their real names.
    inbox.assert_done(&uploaded, &good);
    assert_object(&s3, &inbox.key(&uploaded), &good).await;
    let reason = inbox.assert_failed(&failing);

    // The logs name the files, escaped, and no line starts with the forged text.
    assert!(
        out.stdout
            .contains("ok\\nFORGED inboxd: all files uploaded\\r\\nFORGED"),
        "the log must show the name with its line breaks escaped\n{out}"
    );
    assert!(
        forged_lines(&out.stdout).is_empty(),
        "forged log line\n{out}"
    );
    assert!(
        forged_lines(&out.stderr).is_empty(),
        "forged log line\n{out}"
    );

    // The reason file names the file, escaped, on its one line.
    assert!(
        reason.contains("bad\\nFORGED inboxd: all files uploaded.pdf"),
        "the reason file must name the file with its line break escaped:\n{reason}"
    );
    assert!(
        forged_lines(&reason).is_empty(),
        "forged line in the reason file:\n{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_name_cannot_forge_a_line_in_json_logs_either() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().set("log", "format", "\"json\""));
    let inbox = daemon.inbox().clone();
    let name = format!("x\n{FORGED}.pdf");
    let bytes = content(3, 3_000);
    inbox.drop(&name, &bytes);

    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");
    inbox.assert_done(&name, &bytes);
    assert!(
        forged_lines(&out.stdout).is_empty(),
        "forged log line\n{out}"
    );
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}\n{out}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_server_clutter_is_never_uploaded_whatever_its_case() {
    let s3 = TestS3::start().await;
    let daemon = Daemon::new(&s3, Setup::new().inbox_set("ignore", "[\"*.bak\"]"));
    let inbox = daemon.inbox().clone();

    let uploads: Vec<(&str, Vec<u8>)> = vec![
        ("scan.pdf", content(1, 2_000)),
        ("2024/report.tmp.pdf", content(2, 2_000)),
        ("recycle/kept.pdf", content(3, 2_000)),
        ("Thumbs.db.pdf", content(4, 2_000)),
    ];
    // Each of the documented defaults, in other cases too, and folders that hide their content.
    let stays: Vec<&str> = vec![
        "Thumbs.db",
        "2024/thumbs.DB",
        "desktop.ini",
        "Desktop.INI",
        ".DS_Store",
        "$RECYCLE.BIN/S-1-5-21-1/$RABC123.pdf",
        "$Recycle.Bin/old.pdf",
        "2024/@eaDir/scan.pdf/SYNOFILE_THUMB_M.jpg",
        "#recycle/deleted.pdf",
        "movie.mkv.filepart",
        "disk.iso.partial",
        "setup.exe.crdownload",
        "~WRL0005.tmp",
        "CACHE.TMP",
        "y.PART",
        "~$report.docx",
        ".~lock.sheet.ods#",
        "old.BAK",
        "archive.bak/inside.pdf",
    ];
    for (rel, bytes) in &uploads {
        inbox.drop(rel, bytes);
    }
    for (i, rel) in stays.iter().enumerate() {
        inbox.drop(rel, &content(100 + i as u64, 500));
    }
    let before: Vec<_> = stays
        .iter()
        .map(|rel| fingerprint(&inbox.file(rel)))
        .collect();

    let out = daemon.once().await;
    assert_eq!(out.code(), Some(0), "{out}");

    for (rel, bytes) in &uploads {
        inbox.assert_done(rel, bytes);
        assert_object(&s3, &inbox.key(rel), bytes).await;
    }
    let mut want: Vec<String> = uploads.iter().map(|(rel, _)| inbox.key(rel)).collect();
    want.sort();
    assert_eq!(
        s3.list(BUCKET).await,
        want,
        "only the real files are in the bucket"
    );
    inbox.assert_holds(&stays);
    for (rel, before) in stays.iter().zip(&before) {
        assert_eq!(&fingerprint(&inbox.file(rel)), before, "{rel} was touched");
    }
    inbox.assert_no_failures();
}
