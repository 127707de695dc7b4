//! The pipeline run in the test's own runtime (`inboxd::pipeline::run`), for tests of timing on
//! a paused tokio clock: `#[tokio::test(start_paused = true)]` and the clock jumps over settle
//! windows, batch windows and backoffs instead of the test sleeping through them.
//!
//! The paused clock advances by itself only when every task waits on a timer; while a
//! file-system call runs on the blocking pool (`FsGuard`) or the test server writes an object,
//! it stands still, so time never passes under a step that is still working.
//!
//! Signals, crashes and the CLI stay with [`super::Daemon`] (the real binary).

use std::io::Write;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use inboxd::run::{Mode, Phase, Stats};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::s3::{self, TestS3};
use super::{Daemon, Inbox, Setup, TIMEOUT};

/// The AWS SDK takes credentials from the environment (as the daemon does), so the test
/// process carries the test server's. Set once, before any pipeline starts; every in-process
/// test sets the same values, and std's own env lock orders the write against std's reads.
fn credentials_in_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: std serialises its own environment access; nothing in the test process reads
        // the environment through libc directly while this runs.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", s3::ACCESS_KEY);
            std::env::set_var("AWS_SECRET_ACCESS_KEY", s3::SECRET_KEY);
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
            std::env::set_var("no_proxy", "127.0.0.1,localhost");
        }
    });
}

/// Log lines of one in-process pipeline (plain text, no colours).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// Lines containing every one of `words`.
    pub fn lines_with(&self, words: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// One pipeline in this process. Needs a current-thread runtime: the log subscriber is the
/// thread's default, which covers every task of that runtime (all polled on this thread) but
/// not calls running on the blocking pool.
pub struct InProc {
    /// Config file, state and inbox folders (the binary is never started).
    pub layout: Daemon,
    pub logs: Logs,
    intake: CancellationToken,
    rescan: Arc<Notify>,
    task: Option<JoinHandle<Result<(), inboxd::pipeline::PipelineError>>>,
    stats: Arc<Stats>,
    _log: tracing::subscriber::DefaultGuard,
}

impl InProc {
    /// Writes the config like [`Daemon::new`], loads it and starts `pipeline::run` (daemon
    /// mode) on the current runtime.
    pub fn start(s3: &TestS3, setup: Setup) -> Self {
        Self::start_with(s3, setup, |_| {})
    }

    /// Like [`InProc::start`], with `before` run on the first inbox once its folders exist and
    /// before the pipeline starts (files for the startup sweep).
    pub fn start_with(s3: &TestS3, setup: Setup, before: impl FnOnce(&Inbox)) -> Self {
        credentials_in_env();
        let layout = Daemon::new(s3, setup);
        before(layout.inbox());
        let settings = inboxd::config::Settings::load(&layout.config)
            .unwrap_or_else(|e| panic!("config does not load: {e}"));
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            // The pipeline's own debug lines (e.g. "rescanning all inboxes"), not the SDK's.
            .with_env_filter(tracing_subscriber::EnvFilter::new("inboxd=debug,warn"))
            .finish();
        let log = tracing::subscriber::set_default(subscriber);
        let intake = CancellationToken::new();
        let rescan = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        let task = tokio::spawn({
            let (intake, rescan, stats) = (intake.clone(), rescan.clone(), stats.clone());
            async move {
                inboxd::pipeline::run(settings, Mode::Daemon, intake, rescan, stats, &Phase::Start)
                    .await
            }
        });
        Self {
            layout,
            logs,
            intake,
            rescan,
            task: Some(task),
            stats,
            _log: log,
        }
    }

    pub fn inbox(&self) -> &Inbox {
        self.layout.inbox()
    }

    /// What SIGHUP does in the daemon: rescan every inbox now.
    pub fn rescan(&self) {
        self.rescan.notify_one();
    }

    /// Stops taking files (what SIGTERM does), waits for the pipeline to drain and returns
    /// its counters. On the paused clock the bound is virtual time.
    pub async fn stop(&mut self) -> Arc<Stats> {
        self.intake.cancel();
        let task = self.task.take().expect("the pipeline was already stopped");
        match tokio::time::timeout(TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => self.stats.clone(),
            Ok(Ok(Err(e))) => panic!(
                "the pipeline ended with an error: {e}\n{}",
                self.logs.text()
            ),
            Ok(Err(e)) => panic!("the pipeline task failed: {e}\n{}", self.logs.text()),
            Err(_) => panic!(
                "the pipeline did not stop within {TIMEOUT:?}\n{}",
                self.logs.text()
            ),
        }
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.intake.cancel();
            task.abort();
        }
        if std::thread::panicking() || std::env::var_os("INBOXD_TEST_DUMP").is_some() {
            eprintln!("--- in-process pipeline log ---\n{}", self.logs.text());
        }
    }
}

/// Polls `cond` every `step` of the tokio clock until it holds and returns how long that took
/// on that clock; panics naming `what` after [`TIMEOUT`] of it. On a paused clock each poll
/// lets the clock jump `step` when nothing else runs, so the answer has `step`'s resolution.
pub async fn wait_for(what: &str, step: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = tokio::time::Instant::now();
    loop {
        if cond() {
            return start.elapsed();
        }
        if start.elapsed() > TIMEOUT {
            panic!("timed out after {TIMEOUT:?} (tokio clock) waiting until {what}");
        }
        tokio::time::sleep(step).await;
    }
}
