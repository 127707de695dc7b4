//! Configuration errors as a sysadmin should read them: which file (and line) or which
//! environment variable, which key, and what to write instead. figment's own messages are
//! reworded here: they quote with backticks inside our backticks, and say "signed int" where
//! the reader needs `settle = "2s"`.

use std::ops::Range;
use std::path::Path;

use figment::error::{Actual, Kind};

use super::units::{NEEDS_UNIT, SEP};
use super::{ConfigError, ENV_PREFIX};

impl ConfigError {
    /// An error about `key` (`inbox[0].settle`; empty when no key is to blame) in `file`, with
    /// the line of the key when the file can be read and holds it.
    pub(super) fn in_file(file: &Path, key: &str, message: impl Into<String>) -> Self {
        let line = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| line_of(&text, key));
        ConfigError {
            source_desc: file.display().to_string(),
            line,
            message: message.into(),
        }
    }
}

/// Turns figment's error into one naming the key and the file (with its line) or the
/// environment variable.
pub(super) fn describe_figment(file: &Path, error: figment::Error) -> ConfigError {
    let mut from_env = None;
    let mut first_key = None;
    let mut parse_line = None;
    let mut parts = Vec::new();
    for e in error {
        let env = e
            .metadata
            .as_ref()
            .is_some_and(|m| m.name.contains("environment"))
            .then(|| env_var_name(e.path.iter().map(String::as_str)));
        let key = key_name(&e.path);
        let field = e.path.last().map_or("", String::as_str);
        let text = match &e.kind {
            Kind::Message(m) if m.starts_with("TOML parse error") => {
                let (line, text) = toml_parse_error(m);
                parse_line = parse_line.or(line);
                text
            }
            kind => describe_kind(kind, field, env.as_deref()),
        };
        if first_key.is_none() && !key.is_empty() {
            first_key = Some(key.clone());
        }
        if env.is_some() {
            from_env = env;
        }
        if key.is_empty() {
            parts.push(text);
        } else {
            parts.push(format!("key `{key}`: {text}"));
        }
    }
    let message = parts.join("; ");
    match from_env {
        Some(var) => ConfigError {
            source_desc: format!("environment variable {var}"),
            line: None,
            message,
        },
        None => {
            let mut e = ConfigError::in_file(file, first_key.as_deref().unwrap_or(""), message);
            e.line = e.line.or(parse_line);
            e
        }
    }
}

/// One figment error kind in words, without nested quoting. `field` is the key's last part
/// (`settle`), `env` the environment variable when the value came from one.
fn describe_kind(kind: &Kind, field: &str, env: Option<&str>) -> String {
    match kind {
        Kind::Message(m) => match m.strip_prefix(NEEDS_UNIT) {
            Some(rest) => {
                let (what, suggestion) = rest.split_once(SEP).unwrap_or((rest, ""));
                match env {
                    Some(var) => format!("a {what} needs its unit: {var}=\"{suggestion}\""),
                    None => format!(
                        "a {what} needs its unit, written as a string: {field} = \"{suggestion}\""
                    ),
                }
            }
            None => m.clone(),
        },
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {}, found {}",
                expected_words(expected),
                actual_words(actual)
            )
        }
        Kind::UnknownField(_, known) => {
            if known.is_empty() {
                "not a known key".to_owned()
            } else {
                format!("not a known key; the keys here are {}", known.join(", "))
            }
        }
        Kind::UnknownVariant(found, known) => {
            let known: Vec<String> = known.iter().map(|k| format!("\"{k}\"")).collect();
            format!("{found:?} is not one of {}", known.join(", "))
        }
        Kind::MissingField(_) => "is missing".to_owned(),
        Kind::DuplicateField(_) => "is given twice".to_owned(),
        other => other.to_string().replace('`', ""),
    }
}

/// serde's name for what was expected, as a reader would say it.
fn expected_words(expected: &str) -> String {
    match expected {
        "usize" | "u8" | "u16" | "u32" | "u64" | "u128" => "a whole number".to_owned(),
        "a boolean" => "true or false".to_owned(),
        "a sequence" => "a list".to_owned(),
        other => other.replace('`', ""),
    }
}

fn actual_words(actual: &Actual) -> String {
    match actual {
        Actual::Str(s) => format!("the text {s:?}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Bool(b) => b.to_string(),
        Actual::Seq => "a list".to_owned(),
        Actual::Map => "a table".to_owned(),
        other => other.to_string().replace('`', ""),
    }
}

/// toml's parse error is several lines (the offending line quoted, a caret, the message):
/// its line number, and the message on one line.
fn toml_parse_error(m: &str) -> (Option<usize>, String) {
    let mut lines = m.lines();
    let head = lines.next().unwrap_or_default();
    let line = head
        .split("at line ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    // The quoted source and the caret come after a gutter: "  |", "9 | [upload", "  |    ^".
    let words: Vec<&str> = lines
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains('|'))
        .collect();
    let text = if words.is_empty() {
        "not valid TOML".to_owned()
    } else {
        format!("not valid TOML: {}", words.join(", "))
    };
    (line, text)
}

/// `["inbox", "0", "bucket"]` → `inbox[0].bucket`, the way the rest of our messages spell it.
pub(super) fn key_name(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if !out.is_empty() && part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// `upload.concurrency` → `INBOXD_UPLOAD__CONCURRENCY`.
pub(super) fn env_var_name<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let parts: Vec<String> = parts.map(str::to_uppercase).collect();
    format!("{ENV_PREFIX}{}", parts.join("__"))
}

/// The line (from 1) of `key` (`inbox[0].settle`, `upload.concurrency`) in the TOML `text`;
/// for a key that is not there (a missing one), the line of the table that should hold it.
/// `None` when the text does not parse or names no part of the key.
pub(super) fn line_of(text: &str, key: &str) -> Option<usize> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut table = doc.as_table();
    let mut span: Option<Range<usize>> = None;
    for part in key_parts(key) {
        let (name, index) = part;
        let Some((k, item)) = table.get_key_value(name) else {
            break;
        };
        span = k.span().or(span);
        let item = match (index, item) {
            (Some(i), toml_edit::Item::ArrayOfTables(list)) => match list.get(i) {
                Some(t) => {
                    span = t.span().or(span);
                    table = t;
                    continue;
                }
                None => break,
            },
            (_, item) => item,
        };
        // A value, or an inline table: its key's line is as close as it gets.
        match item.as_table() {
            Some(t) => table = t,
            None => break,
        }
    }
    let at = span?.start;
    Some(text[..at.min(text.len())].matches('\n').count() + 1)
}

/// `inbox[0].settle` → [("inbox", Some(0)), ("settle", None)].
fn key_parts(key: &str) -> Vec<(&str, Option<usize>)> {
    key.split('.')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
            None => (p, None),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "state_dir = \"s\"\n\n[upload]\nconcurrency = 0\n\n[[inbox]]\nname = \"a\"\n\n[[inbox]]\nname = \"b\"\nsettle = 2\n";

    #[test]
    fn lines_of_keys() {
        assert_eq!(line_of(TEXT, "state_dir"), Some(1));
        assert_eq!(line_of(TEXT, "upload.concurrency"), Some(4));
        assert_eq!(line_of(TEXT, "upload.concurency"), Some(3), "the table");
        assert_eq!(line_of(TEXT, "inbox[1].settle"), Some(11));
        assert_eq!(line_of(TEXT, "inbox[0].bucket"), Some(6), "the block");
        assert_eq!(line_of(TEXT, "batch.window"), None);
        assert_eq!(line_of("not = = toml", "x"), None);
    }

    #[test]
    fn toml_parse_errors_become_one_line() {
        let m = "TOML parse error at line 9, column 8\n  |\n9 | [upload\n  |        ^\ninvalid table header\nexpected `.`, `]`\n";
        let (line, text) = toml_parse_error(m);
        assert_eq!(line, Some(9));
        assert_eq!(
            text,
            "not valid TOML: invalid table header, expected `.`, `]`"
        );
    }

    #[test]
    fn key_and_env_names() {
        let path: Vec<String> = ["inbox", "0", "bucket"].map(String::from).to_vec();
        assert_eq!(key_name(&path), "inbox[0].bucket");
        assert_eq!(
            env_var_name("upload.concurrency".split('.')),
            "INBOXD_UPLOAD__CONCURRENCY"
        );
    }
}
