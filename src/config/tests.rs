//! Tests of loading a whole configuration: defaults, units, errors that name the key and
//! the line, and the shipped example against the README. `load_str` and `GOOD` serve the
//! section tests beside the code they test.

use std::path::Path;
use std::time::Duration;

use super::*;

pub(super) fn load_str(toml: &str) -> Result<Settings, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, toml).unwrap();
    Settings::load(&f)
}

pub(super) const GOOD: &str = r#"
state_dir = "state"
[[inbox]]
name = "a"
path = "in"
done_dir = "done"
failed_dir = "failed"
bucket = "b"
"#;

#[test]
fn defaults_and_relative_paths() {
    let s = load_str(GOOD).unwrap();
    assert_eq!(s.upload.concurrency, 32);
    assert_eq!(s.batch.max_files, 20);
    assert_eq!(s.batch.max_bytes, 1024 * MIB);
    assert_eq!(s.batch.window, Duration::from_millis(500));
    assert_eq!(s.inboxes[0].settle, Duration::from_secs(2));
    assert!(s.state_dir.is_absolute());
    assert!(s.inboxes[0].done_dir.ends_with("done"));
    assert_eq!(s.upload.on_conflict, OnConflict::Rename);
    assert!(!s.s3.force_path_style);
    assert_eq!(s.s3.stall_timeout, Duration::from_secs(30));
}

#[test]
fn sizes_are_binary_when_asked() {
    let s = load_str(&format!("{GOOD}\n[batch]\nmax_bytes = \"8 MiB\"\n")).unwrap();
    assert_eq!(s.batch.max_bytes, 8 * MIB);
}

#[test]
fn errors_name_the_key() {
    let e = load_str(&format!("{GOOD}\n[upload]\nconcurrency = 0\n")).unwrap_err();
    assert!(e.to_string().contains("upload.concurrency"), "{e}");
    let e = load_str(&format!("{GOOD}\n[upload]\nconcurency = 3\n")).unwrap_err();
    assert!(e.to_string().contains("concurency"), "{e}");
    let e = load_str(&format!("{GOOD}\n[s3]\nstall_timeout = \"500ms\"\n")).unwrap_err();
    assert!(e.to_string().contains("s3.stall_timeout"), "{e}");
    let e = load_str(&format!("{GOOD}\n[batch]\nwindow = \"soon\"\n")).unwrap_err();
    assert!(e.to_string().contains("batch.window"), "{e}");
    let e = load_str(&GOOD.replace("bucket = \"b\"", "")).unwrap_err();
    assert!(e.to_string().contains("inbox[0].bucket"), "{e}");
    let e = load_str(&GOOD.replace("\"done\"", "\"in/done\"")).unwrap_err();
    assert!(e.to_string().contains("inbox[0].done_dir"), "{e}");
    let e = load_str(&GOOD.replace("bucket = \"b\"", "bucket = \"b\"\nbukcet = 1")).unwrap_err();
    assert!(e.to_string().contains("inbox[0]"), "{e}");
}

#[test]
fn errors_say_what_to_write_and_where() {
    let e = load_str(&GOOD.replace("bucket = \"b\"", "bucket = \"b\"\nsettle = 2")).unwrap_err();
    assert!(
        e.to_string()
            .ends_with(", line 9: key `inbox[0].settle`: a duration needs its unit, written as a string: settle = \"2s\""),
        "{e}"
    );
    let e = load_str(&format!("{GOOD}\n[batch]\nmax_bytes = 1073741824\n")).unwrap_err();
    assert!(e.to_string().contains("max_bytes = \"1 GiB\""), "{e}");
    assert!(e.to_string().contains("line 11"), "{e}");
    let e = load_str(&format!("{GOOD}\n[upload]\nconcurency = 3\n")).unwrap_err();
    let text = e.to_string();
    assert_eq!(
        text.matches('`').count(),
        2,
        "only the key is quoted: {text}"
    );
    assert!(
        text.contains("key `upload.concurency`: not a known key; the keys here are concurrency, "),
        "{text}"
    );
    let e = load_str(&format!("{GOOD}\n[upload]\nconcurrency = \"many\"\n")).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("expected a whole number, found the text \"many\""),
        "{e}"
    );
    let e = load_str(&format!("{GOOD}\n[upload]\non_conflict = \"replace\"\n")).unwrap_err();
    assert!(
        e.to_string()
            .contains("\"replace\" is not one of \"rename\", \"fail\", \"overwrite\""),
        "{e}"
    );
    let e = load_str(&format!("{GOOD}\n[upload\n")).unwrap_err();
    assert!(e.to_string().contains(", line 10: not valid TOML: "), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

/// examples/inboxd.toml, as shipped, is the built-in defaults: the same settings as its
/// required keys alone.
#[test]
fn the_example_configuration_sets_only_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/inboxd.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let full = Settings::load(&example).unwrap_or_else(|e| panic!("{e}"));
    // The required keys only: the top of each [[inbox]] block down to `bucket`.
    let mut minimal = String::new();
    let mut keep = false;
    for line in text.lines() {
        if line == "[[inbox]]" {
            keep = true;
        }
        if keep && !line.starts_with('#') {
            minimal.push_str(line);
            minimal.push('\n');
        }
        if line.starts_with("bucket = ") {
            keep = false;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.toml");
    std::fs::write(&bare, &minimal).unwrap();
    let defaults = Settings::load(&bare).unwrap_or_else(|e| panic!("{e}\n{minimal}"));
    assert_eq!(Settings { file: bare, ..full }, defaults);
}

/// Every default in README's key tables is what examples/inboxd.toml shows for the key:
/// set to it, or commented out with it; "not set" keys are commented out.
#[test]
fn the_readme_and_the_example_agree_on_every_default() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let example = std::fs::read_to_string(root.join("examples/inboxd.toml")).unwrap();
    // (section, key) → (value, commented) as the example writes them.
    let mut shown: Vec<(String, String, String, bool)> = Vec::new();
    let mut section = String::new();
    for line in example.lines() {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        let (commented, body) = match line.strip_prefix("# ") {
            Some(b) => (true, b),
            None => (false, line),
        };
        let Some((key, value)) = body.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            shown.push((section.clone(), key.to_owned(), value.to_owned(), commented));
        }
    }
    let mut section = String::new();
    let mut checked = 0;
    for line in readme.lines() {
        if let Some(h) = line.strip_prefix("### ") {
            section = match h {
                "Top level" => String::new(),
                h if h.starts_with("`[") => h
                    .trim_start_matches("`[")
                    .split(']')
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches('[')
                    .to_owned(),
                _ => "-".to_owned(),
            };
            continue;
        }
        let cells: Vec<&str> = line.split(" | ").collect();
        if section == "-" || cells.len() < 4 || !cells[0].starts_with("| `") {
            continue;
        }
        let key = cells[0].trim_start_matches("| `").trim_end_matches('`');
        let default = cells[2];
        let lines: Vec<_> = shown
            .iter()
            .filter(|(s, k, _, _)| s == &section && k == key)
            .collect();
        assert!(!lines.is_empty(), "[{section}] {key} is not in the example");
        if default == "required" {
            continue;
        }
        if default.starts_with("not set") {
            assert!(
                lines.iter().all(|(_, _, _, commented)| *commented),
                "[{section}] {key}: README says not set, the example sets it"
            );
        } else if let Some(value) = default
            .strip_prefix('`')
            .and_then(|d| d.strip_suffix('`'))
            .filter(|d| !d.contains('`'))
        {
            assert!(
                lines.iter().any(|(_, _, v, _)| v == value),
                "[{section}] {key}: README's default {value} is not what the example shows: {lines:?}"
            );
        } else {
            continue; // a default that depends on another key
        }
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} defaults checked");
}
