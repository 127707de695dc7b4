//! Logging: tracing to stdout (plain lines without colours or timestamps under journald,
//! which adds its own), optionally JSON, plus optional daily rolling JSON files via
//! tracing-appender. `RUST_LOG` overrides the configured level.
//!
//! Anyone who can write into an inbox chooses file names, and names reach log lines and
//! reason files. [`escape`] makes a name safe to print; as a second line of defence the text
//! format turns any line break left in a field into `\n`, so one event is always one line
//! (JSON output escapes control characters by itself).

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::field::VisitOutput;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogFormat, LogSettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot open the log directory {dir}: {source}")]
    Dir {
        dir: std::path::PathBuf,
        #[source]
        source: tracing_appender::rolling::InitError,
    },
    #[error("cannot create the log directory {dir}: {source}")]
    CreateDir {
        dir: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("logging is already initialised: {0}")]
    Init(String),
}

/// The file log's writer thread; dropped by [`finish`], which flushes the file log.
static FILE_LOG: std::sync::Mutex<Option<WorkerGuard>> = std::sync::Mutex::new(None);

/// Writes out what the file log still holds. Call it last, before the process ends (also
/// from a thread that ends the process at once: the guard lives here, not on a stack).
pub fn finish() {
    let guard = FILE_LOG.lock().unwrap_or_else(|p| p.into_inner()).take();
    drop(guard);
}

/// Installs the global subscriber. Call [`finish`] before the process ends, to flush the file
/// log.
pub fn init(log: &LogSettings) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Under journald every line starts with its syslog priority (`<4>` for a warning), which
    // the journal strips and stores as PRIORITY, so `journalctl -p warning` finds them.
    let stdout = match log.format {
        LogFormat::Json if journald => fmt::layer()
            .event_format(Priority(flat_json()))
            .fmt_fields(fmt::format::JsonFields::new())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .event_format(flat_json())
            .fmt_fields(fmt::format::JsonFields::new())
            .with_writer(crate::progress::Suspending)
            .boxed(),
        LogFormat::Text if journald => fmt::layer()
            .event_format(Priority(
                fmt::format()
                    .without_time()
                    .with_target(false)
                    .with_ansi(false),
            ))
            .fmt_fields(OneLine)
            .boxed(),
        // Written around `once`'s progress bar, when there is one.
        LogFormat::Text => fmt::layer()
            .fmt_fields(OneLine)
            .with_ansi(std::io::stdout().is_terminal())
            .with_target(false)
            .with_writer(crate::progress::Suspending)
            .boxed(),
    };
    let (file_layer, guard) = match &log.dir {
        Some(dir) => {
            // Made here rather than by the appender: it looks into the folder for old files to
            // prune before it creates it, and prints a bare "Error reading the log
            // directory/files" line to stderr when the folder is not there yet.
            std::fs::create_dir_all(dir).map_err(|source| TelemetryError::CreateDir {
                dir: dir.clone(),
                source,
            })?;
            let appender = RollingFileAppender::builder()
                .rotation(Rotation::DAILY)
                .filename_prefix("inboxd")
                .filename_suffix("log")
                .max_log_files(log.keep)
                .build(dir)
                .map_err(|source| TelemetryError::Dir {
                    dir: dir.clone(),
                    source,
                })?;
            // lossy(false): a log line about a file's fate is never silently dropped.
            let (writer, guard) = NonBlockingBuilder::default().lossy(false).finish(appender);
            // The same flat JSON shape as on stdout, so one parser reads both.
            let layer = fmt::layer()
                .event_format(flat_json())
                .fmt_fields(fmt::format::JsonFields::new())
                .with_writer(writer)
                .with_ansi(false);
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .with(file_layer)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    *FILE_LOG.lock().unwrap_or_else(|p| p.into_inner()) = guard;
    Ok(())
}

/// JSON lines with the event's fields at the top level and the current span's fields (inbox,
/// path) beside them.
fn flat_json() -> fmt::format::Format<fmt::format::Json> {
    fmt::format()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
}

/// Prefixes each line with its sd-daemon priority (`<3>` error, `<4>` warning, `<6>` info,
/// `<7>` debug and trace), as journald's stdout stream expects.
struct Priority<F>(F);

impl<S, N, F> FormatEvent<S, N> for Priority<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", syslog_priority(event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

fn syslog_priority(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 3,
        tracing::Level::WARN => 4,
        tracing::Level::INFO => 6,
        _ => 7,
    }
}

/// A file name or path (or any text that came from outside) made safe for one log field or
/// one line of a reason file: control characters (line breaks, tabs, ESC, DEL, C1), Unicode
/// line and paragraph separators and bidirectional overrides are written as `\n`, `\t` or
/// `\u{..}`, bytes that are not UTF-8 as `\xNN`, and a backslash as `\\`, so the escaped
/// form is unambiguous. Everything else, including non-ASCII letters, is kept as it is.
///
/// Hand-written rather than `str::escape_debug`: that one also escapes quotes and would
/// print `O'Brien.pdf` as `O\'Brien.pdf`, and it cannot show bytes that are not UTF-8.
pub fn escape(name: &(impl AsRef<OsStr> + ?Sized)) -> String {
    let bytes = name.as_ref().as_encoded_bytes();
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if needs_escape(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Characters that can break a line or change how the text around them is displayed.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The default `key=value` field format, with every line break inside a value written as
/// `\n` or `\r` (whatever a field holds, one event stays one line of text), and every value
/// that holds a space, a quote or `=` in double quotes, as text values always are: a name such
/// as `path="scan 2.pdf"` reads as one value, like `key="incoming/scan 2.pdf"`.
struct OneLine;

impl<'w> FormatFields<'w> for OneLine {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut guard = NoLineBreaks(&mut writer);
        let mut visitor = Quoting(DefaultVisitor::new(Writer::new(&mut guard), true));
        fields.record(&mut visitor);
        visitor.0.finish()
    }
}

/// Puts quotes around field values that need them (see [`OneLine`]); everything else is
/// written by the default visitor.
struct Quoting<'a>(DefaultVisitor<'a>);

impl Visit for Quoting<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // Text values are written quoted already.
        self.0.record_str(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            return self.0.record_debug(field, value);
        }
        let text = format!("{value:?}");
        match quoted(&text) {
            Some(q) => self.0.record_debug(field, &format_args!("{q}")),
            None => self.0.record_debug(field, &format_args!("{text}")),
        }
    }
}

/// `text` in double quotes (inner quotes as `\"`) when it would not read as one value
/// otherwise; `None` when it can stand as it is (or is quoted already).
fn quoted(text: &str) -> Option<String> {
    let already = text.len() >= 2 && text.starts_with('"') && text.ends_with('"');
    let needs =
        text.is_empty() || text.contains([' ', '"', '=']) || text.contains(char::is_whitespace);
    (needs && !already).then(|| format!("\"{}\"", text.replace('"', "\\\"")))
}

/// Passes text through, replacing line breaks.
struct NoLineBreaks<'a, 'w>(&'a mut Writer<'w>);

impl std::fmt::Write for NoLineBreaks<'_, '_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
            self.0.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().unwrap_or('\n');
            match c {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                c => write!(self.0, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn escape_keeps_ordinary_names_and_escapes_the_rest() {
        assert_eq!(
            escape("Rechnungen/März/Übersicht 東京 O'Brien.pdf"),
            "Rechnungen/März/Übersicht 東京 O'Brien.pdf"
        );
        assert_eq!(escape("a\nINFO forged"), "a\\nINFO forged");
        assert_eq!(
            escape("a\r\tb\u{1b}[31m\u{7f}"),
            "a\\r\\tb\\u{1b}[31m\\u{7f}"
        );
        assert_eq!(
            escape("x\u{2028}y\u{202e}fdp.exe"),
            "x\\u{2028}y\\u{202e}fdp.exe"
        );
        // A literal backslash-n in a name stays distinguishable from a newline.
        assert_eq!(escape("a\\nb"), "a\\\\nb");
        assert_eq!(
            escape(OsStr::from_bytes(b"bad\xff\xfe.pdf")),
            "bad\\xff\\xfe.pdf"
        );
        assert_eq!(escape(std::path::Path::new("dir/file.pdf")), "dir/file.pdf");
    }

    #[test]
    fn values_that_would_not_read_as_one_are_quoted() {
        assert_eq!(quoted("a.pdf"), None);
        assert_eq!(quoted("1.5s"), None);
        assert_eq!(quoted("scan 2.pdf").as_deref(), Some("\"scan 2.pdf\""));
        assert_eq!(quoted("a=b").as_deref(), Some("\"a=b\""));
        assert_eq!(quoted("").as_deref(), Some("\"\""));
        assert_eq!(quoted("say \"hi\"").as_deref(), Some(r#""say \"hi\"""#));
        assert_eq!(quoted("\"already quoted\""), None);
    }

    #[test]
    fn text_fields_never_break_the_line() {
        let mut out = String::new();
        let mut w = Writer::new(&mut out);
        let mut guard = NoLineBreaks(&mut w);
        guard.write_str("path=a\nINFO forged\r\u{2028}end").unwrap();
        assert_eq!(out, "path=a\\nINFO forged\\r\\u{2028}end");
    }
}
