//! Objects people can find (issue 11): key templates rendered below the prefix, dates fixed
//! once and kept across a crash, and the object options (Content-Type, metadata, tags,
//! storage class, SSE, Cache-Control) as the server received and stored them; an option the
//! server refuses pauses the inbox with a message naming the key.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::s3::{BUCKET, ObjectOptions, TestS3};
use support::{Daemon, Setup, TIMEOUT, content, toml_str, wait_until};

/// UTC calendar date (yyyy, mm, dd) of `secs` since the epoch, read off RFC 3339.
fn date_of(secs: u64) -> (String, String, String) {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    (
        text[0..4].to_owned(),
        text[5..7].to_owned(),
        text[8..10].to_owned(),
    )
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn head(s3: &TestS3, key: &str) -> aws_sdk_s3::operation::head_object::HeadObjectOutput {
    s3.client()
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD {key}: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_templates_place_files_by_date_and_content() {
    let s3 = TestS3::start().await;
    let setup = Setup::new()
        .inbox_set("prefix", &toml_str("archive/"))
        .inbox_set(
            "key",
            &toml_str("{yyyy}/{mm}/{dd}/{inbox}/{dir}/{stem}-{sha256_12}.{ext}"),
        );
    let mut daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    let files = [
        ("scan.pdf", content(1, 5_000)),
        ("lab 2/Übersicht.tif", content(2, 70_000)),
    ];
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    let before = now_secs();
    daemon.start();
    wait_until(TIMEOUT, "both files in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    let after = now_secs();
    daemon.stop().await;

    // The date is the moment each file was found complete: between start and finish (a run
    // across midnight may give either day).
    let days = [date_of(before), date_of(after)];
    let mut expected = Vec::new();
    for (rel, bytes) in &files {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let (stem, ext) = name.rsplit_once('.').unwrap();
        let sha12 = &support::sha256_hex(bytes)[..12];
        let below: String = [dir, &format!("{stem}-{sha12}.{ext}")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let candidates: Vec<String> = days
            .iter()
            .map(|(y, m, d)| format!("archive/{y}/{m}/{d}/{}/{below}", inbox.name))
            .collect();
        let listed = s3.list(BUCKET).await;
        let key = candidates
            .iter()
            .find(|k| listed.contains(k))
            .unwrap_or_else(|| panic!("none of {candidates:?} in the bucket: {listed:?}"));
        support::assert_object(&s3, key, bytes).await;
        inbox.assert_done(rel, bytes);
        expected.push(key.clone());
    }
    let mut listed = s3.list(BUCKET).await;
    listed.sort();
    expected.sort();
    assert_eq!(
        listed, expected,
        "exactly one object per file, nothing else"
    );
    inbox.assert_no_failures();
}

/// The upload succeeds, then the daemon dies before it records that. On restart a second
/// later, a key rendered afresh would hold a new `{timestamp}`: the file would be stored twice.
/// The moment it was found complete is kept in the ledger before the upload, so the restart
/// renders the same key and recognises its own object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dated_key_is_the_same_after_a_crash() {
    let s3 = TestS3::start().await;
    let setup = Setup::new().inbox_set("key", &toml_str("{timestamp}_{name}"));
    let mut daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    let bytes = content(7, 20_000);
    inbox.drop("doc.pdf", &bytes);
    daemon.start_with_env(&[("INBOXD_FAILPOINT", "after-upload")]);
    let status = daemon.wait_exit(TIMEOUT).await;
    assert!(!status.success(), "the failpoint aborts the daemon");
    let first = s3.list(BUCKET).await;
    assert_eq!(first.len(), 1, "uploaded once before the crash: {first:?}");
    assert!(inbox.in_inbox("doc.pdf"), "not moved before the crash");

    // Let the clock pass into a later second, so that a fresh rendering would differ.
    let crashed_at = now_secs();
    wait_until(Duration::from_secs(3), "the next second", || {
        now_secs() > crashed_at
    })
    .await;
    daemon.start();
    wait_until(TIMEOUT, "doc.pdf in done/", || inbox.is_done("doc.pdf")).await;
    daemon.stop().await;

    assert_eq!(
        s3.list(BUCKET).await,
        first,
        "still the one object, same key"
    );
    support::assert_object(&s3, &first[0], &bytes).await;
    assert!(first[0].ends_with("_doc.pdf"), "{first:?}");
    inbox.assert_done("doc.pdf", &bytes);
    let rec = daemon.ledger_for("doc.pdf").await;
    assert_eq!(rec[0]["key"], first[0].as_str());
    assert!(rec[0]["found_at"].as_i64().is_some(), "{rec:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_options_reach_the_server_for_single_and_multipart_uploads() {
    let s3 = TestS3::start().await;
    let setup = Setup::new()
        .multipart("5 MiB", "5 MiB")
        .inbox_set(
            "metadata",
            r#"{ Source = "{inbox}:{path}", dept = "lab two" }"#,
        )
        .inbox_set("tags", r#"{ project = "apollo 11", keep = "7y" }"#)
        .inbox_set("storage_class", &toml_str("REDUCED_REDUNDANCY"))
        .inbox_set("sse", &toml_str("aws:kms"))
        .inbox_set("sse_kms_key_id", &toml_str("alias/inboxd-test"))
        .inbox_set("cache_control", &toml_str("max-age=3600"));
    let mut daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    let small = content(3, 10_000);
    let large = content(4, 11 * 1024 * 1024);
    inbox.drop("notes/Grüße.pdf", &small);
    inbox.drop("big.bin", &large);
    daemon.start();
    wait_until(TIMEOUT, "both files in done/", || {
        inbox.is_done("notes/Grüße.pdf") && inbox.is_done("big.bin")
    })
    .await;
    daemon.stop().await;

    for (rel, bytes, content_type) in [
        ("notes/Grüße.pdf", &small, "application/pdf"),
        ("big.bin", &large, "application/octet-stream"),
    ] {
        let key = inbox.key(rel);
        support::assert_object(&s3, &key, bytes).await;
        let h = head(&s3, &key).await;
        assert_eq!(h.content_type(), Some(content_type), "{key}");
        assert_eq!(h.cache_control(), Some("max-age=3600"), "{key}");
        let meta = h.metadata().cloned().unwrap_or_default();
        assert_eq!(
            meta.get("dept").map(String::as_str),
            Some("lab two"),
            "{meta:?}"
        );
        // Names are stored lower-case; a value that is not ASCII travels RFC 2047-encoded.
        let source = format!("{}:{rel}", inbox.name);
        let sent = meta.get("source").unwrap_or_else(|| panic!("{meta:?}"));
        if source.is_ascii() {
            assert_eq!(sent, &source);
        } else {
            use base64::Engine as _;
            let b64 = sent
                .strip_prefix("=?UTF-8?B?")
                .and_then(|s| s.strip_suffix("?="))
                .unwrap_or_else(|| panic!("not an encoded word: {sent}"));
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap();
            assert_eq!(String::from_utf8(decoded).unwrap(), source);
        }
        assert_eq!(
            s3.options(&key),
            Some(ObjectOptions {
                tagging: Some("keep=7y&project=apollo%2011".into()),
                storage_class: Some("REDUCED_REDUNDANCY".into()),
                sse: Some("aws:kms".into()),
                sse_kms_key_id: Some("alias/inboxd-test".into()),
            }),
            "{key}"
        );
    }
    let big = head(&s3, &inbox.key("big.bin")).await;
    assert!(
        big.e_tag().unwrap_or_default().contains('-'),
        "big.bin went up in parts: {:?}",
        big.e_tag()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_type_override_replaces_the_guess() {
    let s3 = TestS3::start().await;
    let setup = Setup::new().inbox_set("content_type", &toml_str("application/x-lab-data"));
    let mut daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    let bytes = content(5, 2_000);
    inbox.drop("run.pdf", &bytes);
    daemon.start();
    wait_until(TIMEOUT, "run.pdf in done/", || inbox.is_done("run.pdf")).await;
    daemon.stop().await;
    let h = head(&s3, &inbox.key("run.pdf")).await;
    assert_eq!(h.content_type(), Some("application/x-lab-data"));
    assert_eq!(
        s3.options(&inbox.key("run.pdf")),
        Some(ObjectOptions::default())
    );
}

/// s3s-fs, like AWS, refuses a storage class it does not have (InvalidStorageClass). That
/// would fail every file the same way: the inbox pauses, naming the key; nothing goes to
/// failed/; after the configuration is fixed and reloaded, every file goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_storage_class_pauses_the_inbox_naming_the_key() {
    let s3 = TestS3::start().await;
    let setup = Setup::new().inbox_set("storage_class", &toml_str("STANDARD_IA"));
    let mut daemon = Daemon::new(&s3, setup);
    let inbox = daemon.inbox().clone();
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("scan-{i}.pdf"), content(10 + i, 3_000)))
        .collect();
    for (rel, bytes) in &files {
        inbox.drop(rel, bytes);
    }
    daemon.start();
    wait_until(TIMEOUT, "the pause naming storage_class", || {
        daemon
            .stdout()
            .contains(r#"refused this inbox's storage_class = \"STANDARD_IA\""#)
    })
    .await;
    assert!(inbox.failed_files().is_empty(), "no file failed for it");
    assert!(s3.list(BUCKET).await.is_empty());

    let fixed = daemon
        .config_text()
        .replace("storage_class = \"STANDARD_IA\"", "");
    daemon.write_config(&fixed);
    daemon.sighup();
    wait_until(TIMEOUT, "every file in done/", || {
        files.iter().all(|(rel, _)| inbox.is_done(rel))
    })
    .await;
    daemon.stop().await;
    for (rel, bytes) in &files {
        support::assert_object(&s3, &inbox.key(rel), bytes).await;
    }
    inbox.assert_no_failures();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_templates_and_options_are_config_errors_naming_the_key() {
    let s3 = TestS3::start().await;
    for (key, raw, needle) in [
        (
            "key",
            toml_str("{yyyy}/{nmae}"),
            "unknown placeholder {nmae}",
        ),
        ("key", toml_str("{yyyy}/{mm}"), "same key"),
        ("key", toml_str("../{path}"), "'..'"),
        ("metadata", r#"{ sha256 = "x" }"#.to_owned(), "inboxd's own"),
        ("tags", r#"{ a = "b&c" }"#.to_owned(), "only letters"),
        ("sse", toml_str("DES"), "not one of"),
        ("content_type", toml_str("pdf"), "not a media type"),
        // A header injection through the configuration: refused.
        (
            "cache_control",
            r#""max-age=1\r\nX-Evil: 1""#.to_owned(),
            "printable ASCII",
        ),
    ] {
        let daemon = Daemon::new(&s3, Setup::new().inbox_set(key, &raw));
        let out = daemon.check().await;
        assert_eq!(out.code(), Some(2), "{key} = {raw}\n{out}");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(text.contains(&format!("inbox[0].{key}")), "{key}: {text}");
        assert!(text.contains("inboxd.toml"), "names the file: {text}");
        assert!(text.contains(needle), "{key}: wanted {needle:?} in {text}");
    }
    let daemon = Daemon::new(
        &s3,
        Setup::new().inbox_set("sse_kms_key_id", &toml_str("k")),
    );
    let out = daemon.check().await;
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("needs sse = \"aws:kms\""), "{out}");
}

/// `inboxd check` tries the inbox's object options on the server (a multipart upload started
/// with them and aborted): a refused one is named at install time, not at the first file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_an_option_the_server_refuses() {
    let s3 = TestS3::start().await;
    let good = Daemon::new(
        &s3,
        Setup::new().inbox_set("storage_class", &toml_str("REDUCED_REDUNDANCY")),
    );
    let out = good.check().await;
    assert_eq!(out.code(), Some(0), "{out}");
    let bad = Daemon::new(
        &s3,
        Setup::new().inbox_set("storage_class", &toml_str("STANDARD_IA")),
    );
    let out = bad.check().await;
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stdout
            .contains(r#"the server refuses this inbox's storage_class = "STANDARD_IA""#),
        "{out}"
    );
    assert!(
        s3.open_uploads().is_empty(),
        "the check leaves nothing behind"
    );
}
