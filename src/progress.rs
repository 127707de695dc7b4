//! `inboxd once` on a terminal: a progress bar (files, bytes, rate, time left) drawn on
//! stderr with indicatif. Off a terminal (a cron job, a pipe, journald) there is no bar: the
//! log lines say everything, as before.
//!
//! The totals come from a survey of the inboxes made beside the run (files and bytes not
//! ignored, outside done/ and failed/): an estimate, since files may still arrive or be
//! ignored later for reasons only settle knows, so it is shown as such ("of about"). What is
//! done comes from the run's own counts ([`Stats`]), the same the final line gives.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::InboxSettings;
use crate::run::Stats;

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

/// The bar's text. Pure: `total` is `None` while the survey runs; `elapsed` is the time
/// since the first file reached upload (`None` before), the rate's base.
pub fn describe(done: Count, total: Option<Count>, elapsed: Option<Duration>) -> String {
    let mut out = match total {
        Some(t) => format!(
            "{}/{} files, {} of about {}",
            done.files,
            t.files.max(done.files),
            HumanBytes(done.bytes),
            HumanBytes(t.bytes.max(done.bytes))
        ),
        None => format!(
            "{} files, {} (counting)",
            done.files,
            HumanBytes(done.bytes)
        ),
    };
    let rate = elapsed
        .filter(|e| e.as_secs_f64() >= 0.5 && done.bytes > 0)
        .map(|e| done.bytes as f64 / e.as_secs_f64());
    if let Some(rate) = rate {
        out.push_str(&format!(", {}/s", HumanBytes(rate as u64)));
        if let Some(t) = total {
            let left = t.bytes.saturating_sub(done.bytes) as f64 / rate;
            // Under a second is not worth a number that flickers.
            if left >= 1.0 {
                out.push_str(&format!(
                    ", about {} left",
                    HumanDuration(Duration::from_secs_f64(left))
                ));
            }
        }
    }
    out
}

/// Whether `once` shows a bar: stderr is a terminal, and not the journal's stream.
pub fn wanted() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("JOURNAL_STREAM").is_none()
}

/// The bar on screen, if any: log lines are written around it (see [`Suspending`]).
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn bar() -> Option<ProgressBar> {
    BAR.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A running bar; [`Progress::finish`] draws the last state and takes it off.
pub struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts the bar for a run over `inboxes`, fed by `stats`.
    pub fn start(inboxes: &[InboxSettings], stats: Arc<Stats>) -> Progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        *BAR.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        // Surveyed on a thread of its own: a share that hangs must not hold up the run (the
        // bar then says "counting" until it answers).
        let total: Arc<OnceLock<Count>> = Arc::default();
        let inboxes = inboxes.to_vec();
        let found = total.clone();
        std::thread::spawn(move || {
            let _ = found.set(survey(&inboxes));
        });
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (bar, stop) = (bar.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    update(&bar, &stats, total.get().copied());
                    std::thread::sleep(Duration::from_millis(200));
                }
                update(&bar, &stats, total.get().copied());
            })
        };
        Progress {
            bar,
            stop,
            ticker: Some(ticker),
        }
    }

    /// Draws the final state and leaves it on screen; log lines go straight out again.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        self.bar.finish();
        // indicatif leaves the cursor at the end of the bar: the next log line starts below.
        eprintln!();
        *BAR.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Bytes done at the last update, so the bar only moves forward.
static SHOWN: AtomicU64 = AtomicU64::new(0);

fn update(bar: &ProgressBar, stats: &Stats, total: Option<Count>) {
    let done = Count {
        files: Stats::get(&stats.uploaded)
            + Stats::get(&stats.duplicates)
            + Stats::get(&stats.failed),
        bytes: Stats::get(&stats.done_bytes),
    };
    let elapsed = stats.busy_since().map(|t| t.elapsed());
    if let Some(t) = total {
        bar.set_length(t.bytes.max(done.bytes).max(1));
    }
    SHOWN.fetch_max(done.bytes, Ordering::Relaxed);
    bar.set_position(SHOWN.load(Ordering::Relaxed));
    bar.set_message(describe(done, total, elapsed));
}

/// What the inboxes hold that a run will take: every entry outside done/ and failed/ that
/// the ignore rules let through (links and special files too: they go to failed/), with the
/// sizes of the regular files.
fn survey(inboxes: &[InboxSettings]) -> Count {
    let mut total = Count::default();
    for inbox in inboxes {
        let Ok(ignore) = crate::settle::Ignore::new(&inbox.ignore) else {
            continue;
        };
        for path in crate::beneath::walk(&inbox.name, &inbox.path, Path::new("")) {
            if path.starts_with(&inbox.done_dir) || path.starts_with(&inbox.failed_dir) {
                continue;
            }
            let Ok(rel) = path.strip_prefix(&inbox.path) else {
                continue;
            };
            if ignore.is_ignored(rel) {
                continue;
            }
            total.files += 1;
            if let Ok(meta) = std::fs::symlink_metadata(&path)
                && meta.is_file()
            {
                total.bytes += meta.len();
            }
        }
    }
    total
}

/// Stdout for log lines: while a bar is on screen, each line is written with the bar taken
/// off and drawn again after it, so lines and bar never mix.
pub struct Suspending;

impl std::io::Write for Suspending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match bar() {
            Some(bar) => bar.suspend(|| {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()?;
                Ok(buf.len())
            }),
            None => std::io::stdout().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Suspending {
    type Writer = Suspending;

    fn make_writer(&'a self) -> Self::Writer {
        Suspending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn before_the_survey_the_totals_are_not_guessed() {
        let done = Count {
            files: 2,
            bytes: 3 * MIB,
        };
        assert_eq!(describe(done, None, None), "2 files, 3.00 MiB (counting)");
    }

    #[test]
    fn rate_and_time_left_follow_from_bytes_done_over_time() {
        let done = Count {
            files: 10,
            bytes: 100 * MIB,
        };
        let total = Count {
            files: 40,
            bytes: 400 * MIB,
        };
        assert_eq!(
            describe(done, Some(total), Some(Duration::from_secs(10))),
            "10/40 files, 100.00 MiB of about 400.00 MiB, 10.00 MiB/s, about 30 seconds left"
        );
    }

    #[test]
    fn no_rate_before_anything_is_done_or_too_soon_to_tell() {
        let total = Count {
            files: 3,
            bytes: 3 * MIB,
        };
        let none = Count::default();
        assert_eq!(
            describe(none, Some(total), Some(Duration::from_secs(5))),
            "0/3 files, 0 B of about 3.00 MiB"
        );
        let some = Count {
            files: 1,
            bytes: MIB,
        };
        assert_eq!(
            describe(some, Some(total), Some(Duration::from_millis(100))),
            "1/3 files, 1.00 MiB of about 3.00 MiB"
        );
    }

    #[test]
    fn more_done_than_surveyed_never_shows_a_total_below_it() {
        // Files that arrived after the survey.
        let done = Count { files: 5, bytes: 5 };
        let total = Count { files: 3, bytes: 3 };
        assert_eq!(
            describe(done, Some(total), None),
            "5/5 files, 5 B of about 5 B"
        );
    }

    #[test]
    fn nothing_left_says_no_time() {
        let c = Count {
            files: 2,
            bytes: 2 * MIB,
        };
        assert_eq!(
            describe(c, Some(c), Some(Duration::from_secs(2))),
            "2/2 files, 2.00 MiB of about 2.00 MiB, 1.00 MiB/s"
        );
    }
}
