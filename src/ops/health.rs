//! Health: whether a stage is stuck (work waiting, nothing finished for too long), which
//! `/healthz` answers and the systemd watchdog pings are withheld on.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Ops;

/// A stage with work waiting that has not finished anything for this long is stuck (unless
/// the systemd watchdog asks for less, see [`Ops::set_stuck_after`]).
pub const STUCK_AFTER: Duration = Duration::from_secs(120);

impl Ops {
    /// A stage's work waiting (`waiting`) and whether it just finished something.
    pub fn stage(&self, name: &'static str, waiting: u64, progressed: bool, now: Instant) {
        let mut st = self.state();
        let entry = st.stages.entry(name).or_insert((0, now));
        entry.0 = waiting;
        if progressed || waiting == 0 {
            entry.1 = now;
        }
    }

    /// The first stage that has had work waiting and finished nothing for the stuck time.
    pub fn stuck(&self, now: Instant) -> Option<&'static str> {
        let after = self.stuck_after();
        let st = self.state();
        stuck_stage(&st.stages, now, after)
    }

    pub fn stuck_after(&self) -> Duration {
        *self.stuck_after.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Under a systemd watchdog: stuck after two watchdog periods when that is shorter, so
    /// that systemd restarts a stuck daemon within about three periods.
    pub fn set_stuck_after(&self, d: Duration) {
        *self.stuck_after.lock().unwrap_or_else(|p| p.into_inner()) = d;
    }
}

/// Sends `WATCHDOG=1` twice per watchdog `period` while no stage is stuck; says once when it
/// stops and once when it goes on again.
pub async fn watchdog(
    ops: std::sync::Arc<Ops>,
    period: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(period / 2);
    let mut withheld = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        match ops.stuck(Instant::now()) {
            None => {
                if std::mem::replace(&mut withheld, false) {
                    tracing::info!("the pipeline moves again; watchdog pings resumed");
                }
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            Some(stage) => {
                if !std::mem::replace(&mut withheld, true) {
                    tracing::error!(stage, stuck_for = ?ops.stuck_after(), "a pipeline stage is stuck; no more watchdog pings, so systemd restarts the daemon");
                }
            }
        }
    }
}

pub(super) fn stuck_stage(
    stages: &BTreeMap<&'static str, (u64, Instant)>,
    now: Instant,
    after: Duration,
) -> Option<&'static str> {
    stages
        .iter()
        .find(|(_, (waiting, last))| *waiting > 0 && now.saturating_duration_since(*last) >= after)
        .map(|(name, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_with_waiting_work_and_no_progress_is_stuck() {
        let ops = Ops::new(&[], None);
        let t0 = Instant::now();
        ops.stage("upload", 3, true, t0);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER / 2), None);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER), Some("upload"));
        ops.stage("upload", 3, true, t0 + STUCK_AFTER);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER), None, "it moved again");
        ops.stage("upload", 0, false, t0 + STUCK_AFTER);
        assert_eq!(ops.stuck(t0 + STUCK_AFTER * 5), None, "idle is not stuck");
    }
}
