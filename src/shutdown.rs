//! Signals: SIGTERM/SIGINT drain and stop, SIGHUP asks for a configuration reload (which
//! rescans every inbox), via signal-hook.
//!
//! The first SIGTERM or SIGINT cancels intake: no new upload starts, uploads in flight get the
//! grace period, the ledger is flushed, the process exits 0. A second one exits at once
//! (nothing is lost: whatever was not recorded is simply done again on the next start).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::StreamExt;
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Arms the "second signal exits immediately" behaviour. Call once, early.
pub fn arm_double_signal_exit() -> std::io::Result<()> {
    let term_now = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        // Registration order matters: the exit must be conditioned on the flag *before* the
        // flag is set by this same signal, so the first signal only sets it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&term_now))?;
        signal_hook::flag::register(sig, Arc::clone(&term_now))?;
    }
    Ok(())
}

/// Listens for signals until the process ends: SIGTERM/SIGINT cancel `stop`, SIGHUP
/// notifies `hup`. Must be called inside the tokio runtime.
pub fn listen(
    stop: CancellationToken,
    hup: Arc<Notify>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    Ok(tokio::spawn(async move {
        while let Some(sig) = signals.next().await {
            match sig {
                SIGHUP => hup.notify_one(),
                _ => {
                    tracing::info!(
                        signal = sig,
                        "shutting down: no new uploads; in-flight uploads may finish"
                    );
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
                    stop.cancel();
                }
            }
        }
    }))
}
