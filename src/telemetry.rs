//! Logging: tracing to stdout (plain lines without colours or timestamps under journald,
//! which adds its own), optionally JSON, plus optional daily rolling JSON files via
//! tracing-appender. `RUST_LOG` overrides the configured level.

use std::io::IsTerminal;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::prelude::*;
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
    #[error("logging is already initialised: {0}")]
    Init(String),
}

/// Installs the global subscriber. Keep the returned guard alive until the end of `main`:
/// dropping it flushes the file log.
pub fn init(log: &LogSettings) -> Result<Option<WorkerGuard>, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let stdout = match log.format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text if journald => fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .with_target(false)
            .boxed(),
    };
    let (file_layer, guard) = match &log.dir {
        Some(dir) => {
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
            (
                Some(fmt::layer().json().with_writer(writer).with_ansi(false)),
                Some(guard),
            )
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(stdout)
        .with(file_layer)
        .try_init()
        .map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(guard)
}
