//! Key templates (`[[inbox]] key`, issue 11): where below `prefix` a file lands, e.g.
//! `"{yyyy}/{mm}/{dd}/{name}"`. Parsed once when the configuration is loaded (unknown
//! placeholders and templates that would give every file the same key are configuration
//! errors); rendered per file from facts fixed once (the moment the file was found complete
//! is kept in the ledger, so a restart at midnight never moves an in-flight file's key).
//! Pure.

use std::fmt::Write as _;

/// One placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Path,
    Dir,
    Name,
    Stem,
    Ext,
    Inbox,
    Host,
    Year,
    Month,
    Day,
    Hour,
    Timestamp,
    Sha256,
    Sha256Short,
}

const VARS: &[(&str, Var)] = &[
    ("path", Var::Path),
    ("dir", Var::Dir),
    ("name", Var::Name),
    ("stem", Var::Stem),
    ("ext", Var::Ext),
    ("inbox", Var::Inbox),
    ("host", Var::Host),
    ("yyyy", Var::Year),
    ("mm", Var::Month),
    ("dd", Var::Day),
    ("hh", Var::Hour),
    ("timestamp", Var::Timestamp),
    ("sha256", Var::Sha256),
    ("sha256_12", Var::Sha256Short),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The facts a key is made of, for one file.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Relative path with `/` separators.
    pub rel: &'a str,
    pub inbox: &'a str,
    pub host: &'a str,
    /// When the file was found complete, seconds since the Unix epoch (UTC).
    pub found_at: i64,
    pub sha256_hex: &'a str,
}

/// The default: the relative path, as before templates existed.
pub const DEFAULT: &str = "{path}";

impl Template {
    /// Parses `text`; the error says what is wrong, for a message naming the key.
    pub fn parse(text: &str) -> Result<Template, String> {
        let t = Template::pieces(text)?;
        t.check()?;
        Ok(t)
    }

    /// Parses a template for a value that is not a key (a metadata value): any text, any
    /// placeholder; no rules about segments.
    pub fn parse_value(text: &str) -> Result<Template, String> {
        Template::pieces(text)
    }

    /// The default key template, `{path}`.
    pub fn default_key() -> Template {
        Template {
            pieces: vec![Piece::Var(Var::Path)],
        }
    }

    /// Whether it uses the moment the file was found complete.
    pub fn uses_time(&self) -> bool {
        self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Var(Var::Year | Var::Month | Var::Day | Var::Hour | Var::Timestamp)
            )
        })
    }

    fn pieces(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    pieces.push(Piece::Text(rest.to_owned()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(format!("a '}}' without its '{{' in {text:?}"));
                }
                Some(i) => {
                    if i > 0 {
                        pieces.push(Piece::Text(rest[..i].to_owned()));
                    }
                    let Some(end) = rest[i..].find('}') else {
                        return Err(format!("a '{{' without its '}}' in {text:?}"));
                    };
                    let name = &rest[i + 1..i + end];
                    let Some((_, var)) = VARS.iter().find(|(n, _)| *n == name) else {
                        let known: Vec<String> =
                            VARS.iter().map(|(n, _)| format!("{{{n}}}")).collect();
                        return Err(format!(
                            "unknown placeholder {{{name}}}; known: {}",
                            known.join(" ")
                        ));
                    };
                    pieces.push(Piece::Var(*var));
                    rest = &rest[i + end + 1..];
                }
            }
        }
        Ok(Template { pieces })
    }

    /// Rejects templates that cannot name files apart or could leave the prefix.
    fn check(&self) -> Result<(), String> {
        let names_the_file = self.pieces.iter().any(|p| {
            matches!(
                p,
                Piece::Var(Var::Path | Var::Name | Var::Stem | Var::Sha256 | Var::Sha256Short)
            )
        });
        if !names_the_file {
            return Err(
                "it gives every file the same key: use {path}, {name}, {stem} or {sha256} in it"
                    .to_owned(),
            );
        }
        // Literal segments (the text between slashes, placeholders aside) that are "." or
        // "..", or a leading slash: a key must stay below the prefix.
        let mut literal = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => literal.push_str(t),
                Piece::Var(_) => literal.push('\u{0}'),
            }
        }
        if literal.starts_with('/') {
            return Err("it must not start with '/' (keys are below the prefix)".to_owned());
        }
        if literal.split('/').any(|seg| seg == "." || seg == "..") {
            return Err("it must not contain a '.' or '..' segment".to_owned());
        }
        Ok(())
    }

    /// The key below the prefix. Empty segments (an empty `{dir}` for a file at the top of
    /// the inbox) are dropped; a segment that renders as `.` or `..` is an error for this file.
    pub fn render(&self, f: &Facts<'_>) -> Result<String, String> {
        let out = self.render_value(f);
        let segments: Vec<&str> = out.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(format!(
                "the key template renders {out:?}, which has a '.' or '..' segment"
            ));
        }
        if segments.is_empty() {
            return Err("the key template renders an empty key".to_owned());
        }
        Ok(segments.join("/"))
    }

    /// The template with every placeholder filled in, as it is (for values, not keys).
    pub fn render_value(&self, f: &Facts<'_>) -> String {
        let (dir, name) = f.rel.rsplit_once('/').unwrap_or(("", f.rel));
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
            _ => (name, ""),
        };
        let (y, mo, d, h, mi, s) = civil(f.found_at);
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => match v {
                    Var::Path => out.push_str(f.rel),
                    Var::Dir => out.push_str(dir),
                    Var::Name => out.push_str(name),
                    Var::Stem => out.push_str(stem),
                    Var::Ext => out.push_str(ext),
                    Var::Inbox => out.push_str(f.inbox),
                    Var::Host => out.push_str(f.host),
                    Var::Year => {
                        let _ = write!(out, "{y:04}");
                    }
                    Var::Month => {
                        let _ = write!(out, "{mo:02}");
                    }
                    Var::Day => {
                        let _ = write!(out, "{d:02}");
                    }
                    Var::Hour => {
                        let _ = write!(out, "{h:02}");
                    }
                    Var::Timestamp => {
                        let _ = write!(out, "{y:04}-{mo:02}-{d:02}T{h:02}-{mi:02}-{s:02}");
                    }
                    Var::Sha256 => out.push_str(f.sha256_hex),
                    Var::Sha256Short => out.push_str(&f.sha256_hex[..f.sha256_hex.len().min(12)]),
                },
            }
        }
        out
    }

    pub fn is_default(&self) -> bool {
        self.pieces == [Piece::Var(Var::Path)]
    }
}

/// UTC date and time of `secs` since the Unix epoch: (year, month, day, hour, minute,
/// second), read off humantime's RFC 3339 form (`2026-11-29T08:15:07Z`).
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let text = humantime::format_rfc3339_seconds(t).to_string();
    let num = |from: usize, to: usize| text.get(from..to).and_then(|s| s.parse().ok()).unwrap_or(0);
    (
        i64::from(num(0, 4)),
        num(5, 7),
        num(8, 10),
        num(11, 13),
        num(14, 16),
        num(17, 19),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Facts for one file, found complete at 2026-11-29T08:15:07Z (also used by `object`).
    pub(in crate::upload) fn facts(rel: &str) -> Facts<'_> {
        Facts {
            rel,
            inbox: "scans",
            host: "fs1",
            // 2026-11-29T08:15:07Z
            found_at: 1_795_940_107,
            sha256_hex: "3f2a9c1b7d0e55aa0000000000000000000000000000000000000000000000ff",
        }
    }

    #[test]
    fn placeholders_render() {
        let t =
            Template::parse("{yyyy}/{mm}/{dd}/{hh}/{inbox}-{host}/{dir}/{stem}.{sha256_12}.{ext}")
                .unwrap();
        assert_eq!(
            t.render(&facts("a/b/scan.pdf")).unwrap(),
            "2026/11/29/08/scans-fs1/a/b/scan.3f2a9c1b7d0e.pdf"
        );
        // An empty {dir} leaves no empty segment.
        assert_eq!(
            t.render(&facts("scan.pdf")).unwrap(),
            "2026/11/29/08/scans-fs1/scan.3f2a9c1b7d0e.pdf"
        );
        let t = Template::parse("uploads/{timestamp}_{name}").unwrap();
        assert_eq!(
            t.render(&facts("doc.pdf")).unwrap(),
            "uploads/2026-11-29T08-15-07_doc.pdf"
        );
        let t = Template::parse(DEFAULT).unwrap();
        assert!(t.is_default());
        assert_eq!(t.render(&facts("x/y.txt")).unwrap(), "x/y.txt");
        let t = Template::parse("{name}.{sha256}").unwrap();
        assert!(t.render(&facts(".env")).unwrap().starts_with(".env.3f2a"));
    }

    #[test]
    fn bad_templates_are_refused_with_the_reason() {
        let err = |t: &str| Template::parse(t).unwrap_err();
        assert!(err("{yyyy}/{nmae}").contains("unknown placeholder {nmae}"));
        assert!(err("{yyyy}/{mm}").contains("same key"));
        assert!(err("../{path}").contains("'..'"));
        assert!(err("a/./{name}").contains("'.'"));
        assert!(err("/{path}").contains("start with '/'"));
        assert!(err("{path").contains("without its '}'"));
        assert!(err("path}").contains("without its '{'"));
    }

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(1_795_940_107), (2026, 11, 29, 8, 15, 7));
        assert_eq!(civil(4_102_444_799), (2099, 12, 31, 23, 59, 59));
    }
}
