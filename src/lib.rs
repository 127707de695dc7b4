//! inboxd: watches inbox folders on a file server and uploads every complete file to S3 (or
//! any S3-compatible store) exactly once, then moves it to a done or failed folder.
//!
//! The pipeline, one module per stage, connected by bounded channels that carry one type each
//! (all wired in [`pipeline`], the only place that creates channels and spawns stages):
//!
//! | stage | input | output | job |
//! |---|---|---|---|
//! | [`watch`] | kernel events, startup sweep, periodic rescan | [`watch::Candidate`] | say which paths may hold a new file |
//! | [`settle`] | `Candidate` | [`settle::ReadyFile`] | wait until a file is complete (size + mtime stable), apply ignore rules |
//! | [`batch`] | `ReadyFile` | [`batch::Batch`] | group ready files (max files, max bytes, time window) |
//! | [`upload`] | `Batch` | [`upload::Outcome`] | hash, upload concurrently under one limit, classify errors, retry |
//! | [`finish`] | `Outcome` | — | record in the [`ledger`] and flush, *then* move to done/ or failed/; one report per batch |
//!
//! [`claims`] is the small shared registry that keeps a file from being taken twice while it
//! is in flight. [`config`] loads and validates the TOML file; [`shutdown`] turns signals into
//! cancellation; [`telemetry`] sets up logging.

pub mod batch;
pub mod claims;
pub mod config;
pub mod finish;
pub mod ledger;
pub mod pipeline;
pub mod settle;
pub mod shutdown;
pub mod telemetry;
pub mod upload;
pub mod watch;

/// Test hook: in debug builds, `INBOXD_FAILPOINT=<name>` aborts the process at the named
/// point, to prove that a crash there loses nothing. Release builds compile this to nothing.
#[inline]
pub fn failpoint(name: &str) {
    #[cfg(debug_assertions)]
    {
        if std::env::var("INBOXD_FAILPOINT").is_ok_and(|v| v == name) {
            eprintln!("inboxd: failpoint {name} reached, aborting");
            std::process::abort();
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
