//! inboxd: watches inbox folders on a file server and uploads every complete file to S3 (or
//! any S3-compatible store) exactly once, then moves it to a done or failed folder.
//!
//! The pipeline, one module per stage, connected by bounded channels that carry one type each
//! (all wired in [`pipeline`], the only place that creates channels and spawns stages):
//!
//! | stage | input | output | job |
//! |---|---|---|---|
//! | [`watch`] | kernel events, startup sweep, periodic rescan, polling | [`watch::Candidate`] | say which paths may hold a new file |
//! | [`settle`] | `Candidate` | [`settle::ReadyFile`] | wait until a file is complete (size + mtime stable, not open for writing, whole by its format; a close on a local disk looks at once), apply ignore rules |
//! | [`cluster`] | `ReadyFile` | `ReadyFile` | on a shared inbox (several hosts, one share): claim the file for this host by an atomic rename into its claim folder, or drop it when another host was first; offer this host's claimed files again (left by a crash, handed back, taken over from a dead host); other inboxes pass straight through |
//! | [`batch`] | `ReadyFile` | [`batch::Batched`] | place each file in a batch (max files, max bytes, time window) and pass it on at once; say when a batch closes |
//! | [`upload`] | `Batched` | [`upload::Report`] | start files in turns over the inboxes, large files in a lane of their own ([`upload::admission`]); hash, upload concurrently under one limit (multipart for large files), classify errors, retry, pause; wait out an unreachable endpoint as one event |
//! | [`finish`] | `Report` | — | record in the [`ledger`] and flush, *then* move to done/ or failed/; one report per closed batch |
//!
//! Every stage imports only the types of the stages before it. Run-wide state that all of them
//! read, the [`run::Mode`] (daemon or one sweep) and the [`run::Stats`] counters, lives in
//! [`run`].
//!
//! [`beneath`] is the one way any stage reaches a path below an inbox (or below done/ and
//! failed/): it never follows a link at any component, opens only regular files, and moves
//! without clobbering, also across file systems.
//!
//! A file that cannot go yet comes back on its own, through [`claims`], the small shared
//! registry that keeps a file from being taken twice while it is in flight:
//!
//! | from | what happens | back into |
//! |---|---|---|
//! | [`finish`] | a deferred file (S3 refused it too often, unreadable for now), a paused inbox's file, a file whose move failed: `claims.defer(path, until)`; a file changed while uploaded: claim released | [`settle`], which keeps every file in view in daemon mode and offers it again when its claim allows (no rescan needed) |
//! | [`upload`] | a stalled inbox (its share does not answer, see [`stall`]): the file is handed back as paused until the next look | the same way, through [`finish`] |
//! | [`watch`] | periodic rescans and polls find every file again | [`settle`], which ignores files it already has in view |
//! | [`finish`], on a shared inbox | the same hand-backs, for a file in this host's claim folder (which settle never sees) | [`cluster`], whose sweep offers every claimed file that is not in flight once it has kept still for the settle window |
//!
//! Beside the stages: [`upkeep`] recovers at startup (aborts multipart uploads that cannot be
//! resumed, completes records of files moved just before a crash) and tidies hourly (prunes
//! old records, aborts idle uploads). [`stall`] gives each inbox a guard that runs its
//! blocking file-system calls off the async workers under a time limit. [`config`] loads and
//! validates the TOML file; [`shutdown`] turns signals into cancellation and reload requests;
//! [`telemetry`] sets up logging (and escapes names for it); [`mounts`] tells whether moving to
//! done/ or failed/ can be a rename; [`check`] is `inboxd check` (folders as the service user,
//! buckets, server capabilities), of which [`preflight`] is the local half (can the service
//! user use every folder); [`progress`] draws `inboxd once`'s progress bar on a
//! terminal. [`ops`] serves what the daemon does (metrics, health, status, the ledger) on the
//! operations listener, and [`operator`] holds the commands that ask it (`status`, `ledger`)
//! or work beside it (`retry`). [`cli`] is the command line the binary reads, and
//! [`lifecycle`] a run of `inboxd run` or `inboxd once` from start to its last line (signals,
//! the runtime, reloads, the exit code).

pub mod batch;
pub mod beneath;
pub mod check;
pub mod claims;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod finish;
pub mod ledger;
pub mod lifecycle;
pub mod mounts;
pub mod operator;
pub mod ops;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod run;
pub mod settle;
pub mod shutdown;
pub mod stall;
pub mod telemetry;
pub mod upkeep;
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

/// Test hook: in debug builds, never returns when `INBOXD_FAILPOINT=<name>` (a stage that
/// hangs, for the watchdog and `/healthz` tests). Release builds return at once.
pub async fn failpoint_hang(name: &str) {
    #[cfg(debug_assertions)]
    {
        if std::env::var("INBOXD_FAILPOINT").is_ok_and(|v| v == name) {
            eprintln!("inboxd: failpoint {name} reached, hanging");
            std::future::pending::<()>().await;
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}

/// Test hook: in debug builds, true when `INBOXD_FAILPOINT=<name>`: the caller then fails the
/// step as if the system had refused it (for errors that are hard to cause from outside, such
/// as a ledger write failing). Release builds always return false.
#[inline]
pub fn failpoint_error(name: &str) -> bool {
    #[cfg(debug_assertions)]
    {
        std::env::var("INBOXD_FAILPOINT").is_ok_and(|v| v == name)
    }
    #[cfg(not(debug_assertions))]
    {
        let _ = name;
        false
    }
}

#[cfg(test)]
mod house {
    /// The house rule for the next engineer: a module holds one job and stays readable in one
    /// sitting. A file past the limit must say why in a line containing
    /// "longer than 400 lines because".
    #[test]
    fn every_module_is_under_400_lines_or_says_why() {
        fn visit(dir: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).expect("read src/") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    visit(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).expect("read a module");
                    let lines = text.lines().count();
                    if lines > 400 && !text.contains("longer than 400 lines because") {
                        out.push(format!("{} ({lines} lines)", path.display()));
                    }
                }
            }
        }
        let mut long = Vec::new();
        visit(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut long,
        );
        assert!(
            long.is_empty(),
            "modules over 400 lines that do not say why: {long:?}"
        );
    }
}
