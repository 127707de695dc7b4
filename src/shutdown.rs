//! Signals: SIGTERM/SIGINT drain and stop, SIGHUP asks for a configuration reload (which
//! rescans every inbox), via signal-hook.
//!
//! The first SIGTERM or SIGINT cancels intake: no new upload starts, uploads in flight get the
//! grace period, the ledger is flushed, the process exits 0. A second one exits at once with
//! code 1, after one line that says so (nothing is lost: whatever was not recorded is simply
//! done again on the next start).
//!
//! Signals are taken on a thread of their own, not on the async runtime: the second signal must
//! end the process even when the runtime is busy or stuck.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};

use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Exit code after a second SIGTERM or SIGINT.
pub const SECOND_SIGNAL_EXIT: i32 = 1;

/// What the signal thread has received.
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// The first SIGTERM or SIGINT, 0 before one.
    first: Arc<AtomicI32>,
}

impl Received {
    /// The name of the signal that asked the process to stop, if one did.
    pub fn stop_signal(&self) -> Option<&'static str> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            sig => Some(signal_name(sig)),
        }
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// Starts the thread that turns signals into requests, for the life of the process: SIGTERM
/// and SIGINT cancel `stop` (a second one ends the process), SIGHUP notifies `hup`. Call it
/// once, early: until then a SIGTERM ends the process without a word.
pub fn listen(stop: CancellationToken, hup: Arc<Notify>) -> std::io::Result<Received> {
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    let received = Received::default();
    let first = received.first.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGHUP {
                    hup.notify_one();
                } else if first
                    .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    tracing::info!(
                        signal = signal_name(sig),
                        "shutting down: no new uploads; in-flight uploads may finish"
                    );
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                    stop.cancel();
                } else {
                    // The one line that ends the process; the ledger is as safe as after a
                    // crash: what was not recorded is done again on the next start.
                    tracing::warn!(
                        reason = format!(
                            "a second {}: exiting at once; uploads not finished are done again at the next start",
                            signal_name(sig)
                        ),
                        exit_code = SECOND_SIGNAL_EXIT,
                        "inboxd stopped"
                    );
                    crate::telemetry::finish();
                    std::process::exit(SECOND_SIGNAL_EXIT);
                }
            }
        })?;
    Ok(received)
}
