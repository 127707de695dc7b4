//! watch: turns the file system into [`Candidate`]s — paths that may hold a new file.
//!
//! Kernel events are only hints: they can be lost (queue overflow), arrive before a new
//! sub-folder is watched, or never come at all for writes made by other machines on a network
//! share. So the truth comes from walking the tree: once at startup, after every overflow,
//! whenever a new folder appears, and periodically. A lost event costs latency, never a file.
//! Per inbox, `watch = "poll"` relies on walking alone (every `watch.poll_interval`), and
//! `"auto"` picks polling when the inbox lives on a network file system.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{InboxSettings, WatchSettings};
use crate::run::Mode;
use crate::settle::Hint;
use crate::stall::FsGuard;

mod kernel;
use kernel::{Watched, uses_events, watch_error, watch_inbox};

/// A path in inbox number `inbox` that may be a new or changed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub inbox: usize,
    pub path: PathBuf,
    /// Look at it now, even if settle already has it in view with a later time: what it
    /// waited for is over (its paused inbox works again).
    pub now: bool,
    /// What brought it: a sweep, a kernel event, or its writer closing it.
    pub hint: Hint,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot watch {path}: the inotify watch limit is reached; raise it with \
         `sysctl fs.inotify.max_user_watches=524288` (and a file in /etc/sysctl.d/), \
         or set watch = \"poll\" for this inbox"
    )]
    WatchLimit { path: PathBuf },
    #[error("cannot watch {path}: {source}")]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// One raw notification from a watcher thread, tagged with its inbox: paths, what the event
/// says about them, and whether the kernel asks for a rescan.
enum Raw {
    Paths(usize, Vec<PathBuf>, Hint, bool),
    Error(usize, notify::Error),
}

/// A new folder is swept when its event arrives and once more this much later: its watch is
/// added after that first walk, so a file created in between raises no event and may not
/// exist yet at the first sweep.
const NEW_DIR_RESWEEP: Duration = Duration::from_secs(1);

/// Capacity of the queue between notify's thread and this stage. When it is full, events are
/// dropped and a full rescan is requested instead (the callback must never block).
const RAW_QUEUE: usize = 16_384;

pub struct WatchStage {
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub settings: WatchSettings,
    pub mode: Mode,
    /// Notified (e.g. by SIGHUP) to rescan every inbox now.
    pub rescan_now: Arc<Notify>,
    /// One per inbox: walks and looks run under its time limit (see [`crate::stall`]).
    pub guards: Vec<FsGuard>,
}

impl WatchStage {
    /// Starts the kernel watchers (daemon mode). Done before the stage runs so that a watch
    /// problem stops the daemon at startup with a clear message. An inbox whose folder is
    /// missing (a share not mounted yet) does not stop the others: it is reported once and
    /// looked for again at every rescan, see `WatchStage::check_presence`.
    pub fn start_watchers(&self) -> Result<Watchers, WatchError> {
        let (tx, rx) = mpsc::channel(RAW_QUEUE);
        let overflowed = Arc::new(AtomicBool::new(false));
        let mut watchers = Vec::new();
        let mut missing = Vec::new();
        for (idx, inbox) in self.inboxes.iter().enumerate() {
            let absent = !inbox.path.is_dir();
            if absent {
                if self.mode == Mode::Once {
                    tracing::warn!(inbox = %inbox.name, path = %inbox.path.display(),
                        "the inbox folder is missing (is the share mounted?); this inbox is skipped in this run");
                } else {
                    tracing::warn!(inbox = %inbox.name, path = %inbox.path.display(), rescan = ?self.settings.rescan,
                        "the inbox folder is missing (is the share mounted?); the other inboxes run, and this one is taken up when its folder appears");
                }
                watchers.push(None);
            } else {
                watchers.push(self.watch_one(idx, &tx, &overflowed)?);
            }
            missing.push(absent);
        }
        Ok(Watchers {
            watchers,
            missing,
            raw: rx,
            overflowed,
            tx,
        })
    }

    /// Starts watching inbox `idx` with kernel events, or returns `None` when it is polled.
    fn watch_one(
        &self,
        idx: usize,
        tx: &mpsc::Sender<Raw>,
        overflowed: &Arc<AtomicBool>,
    ) -> Result<Option<Watched>, WatchError> {
        let inbox = &self.inboxes[idx];
        if self.mode == Mode::Once || !uses_events(inbox) {
            if self.mode == Mode::Daemon {
                tracing::info!(inbox = %inbox.name, path = %inbox.path.display(),
                    interval = ?self.settings.poll_interval, "watching by polling");
            }
            return Ok(None);
        }
        let w = watch_inbox(idx, inbox, tx, overflowed)?;
        tracing::info!(inbox = %inbox.name, path = %inbox.path.display(), "watching with kernel events");
        Ok(Some(w))
    }

    /// Runs the stage until `shutdown` (daemon) or after one sweep (once).
    pub async fn run(
        self,
        started: Watchers,
        output: mpsc::Sender<Candidate>,
        shutdown: CancellationToken,
    ) {
        let Watchers {
            mut watchers,
            mut missing,
            mut raw,
            overflowed,
            tx,
        } = started;
        // Startup sweep: files present before we started get no events.
        if !self
            .sweep_all("startup", &output, &missing, &mut watchers)
            .await
        {
            return;
        }
        if self.mode == Mode::Once {
            return;
        }
        // `watchers` lives for the whole run: dropping a watcher stops it.

        let mut rescan = tokio::time::interval(self.settings.rescan);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        rescan.tick().await; // the first tick is immediate; the startup sweep just did it
        let mut poll = tokio::time::interval(self.settings.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await;
        // New folders to sweep a second time, in order of due time.
        let mut resweep: std::collections::VecDeque<(Instant, usize, PathBuf)> =
            std::collections::VecDeque::new();

        loop {
            // Recomputed each time round: a missing inbox that appears may be polled.
            let polled: Vec<usize> = (0..self.inboxes.len())
                .filter(|&i| !missing[i] && watchers.get(i).is_none_or(Option::is_none))
                .collect();
            let ok = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = raw.recv() => match ev {
                    Some(ev) => self.on_raw(ev, &output, &mut resweep, &mut watchers).await,
                    None => true, // cannot happen: `_keep_open` holds a sender
                },
                _ = rescan.tick() => {
                    self.check_presence(&mut watchers, &mut missing, &tx, &overflowed).await;
                    self.rewatch_replaced(&mut watchers, &tx, &overflowed).await;
                    self.sweep_all("periodic", &output, &missing, &mut watchers).await
                }
                _ = poll.tick(), if !polled.is_empty() => {
                    let mut ok = true;
                    for &i in &polled {
                        ok &= self.sweep(i, &self.inboxes[i].path, &output, &mut watchers).await;
                    }
                    ok
                }
                _ = self.rescan_now.notified() => {
                    self.check_presence(&mut watchers, &mut missing, &tx, &overflowed).await;
                    self.rewatch_replaced(&mut watchers, &tx, &overflowed).await;
                    self.sweep_all("requested", &output, &missing, &mut watchers).await
                }
                _ = crate::run::sleep_until(resweep.front().map(|r| r.0)), if !resweep.is_empty() => {
                    match resweep.pop_front() {
                        Some((_, idx, dir)) => self.sweep(idx, &dir, &output, &mut watchers).await,
                        None => true,
                    }
                }
            };
            if !ok {
                return; // settle is gone: the pipeline is shutting down
            }
            if overflowed.swap(false, Ordering::Relaxed) {
                tracing::warn!("file events were dropped (queue full); rescanning every inbox");
                if !self
                    .sweep_all("overflow", &output, &missing, &mut watchers)
                    .await
                {
                    return;
                }
            }
        }
    }

    async fn on_raw(
        &self,
        ev: Raw,
        output: &mpsc::Sender<Candidate>,
        resweep: &mut std::collections::VecDeque<(Instant, usize, PathBuf)>,
        watchers: &mut [Option<Watched>],
    ) -> bool {
        match ev {
            Raw::Error(idx, e) => {
                let inbox = &self.inboxes[idx];
                // A failed watch on a new sub-folder: the periodic rescan still covers it, but
                // latency suffers, so say so loudly and once per occurrence.
                tracing::error!(inbox = %inbox.name, error = %watch_error(&inbox.path, e),
                    "file watching degraded; files are still found by the periodic rescan");
                true
            }
            Raw::Paths(idx, _, _, true) => {
                tracing::warn!(inbox = %self.inboxes[idx].name, "kernel event queue overflowed; rescanning");
                self.sweep(idx, &self.inboxes[idx].path, output, watchers)
                    .await
            }
            Raw::Paths(idx, paths, hint, false) => {
                let own = self.inboxes[idx].path.join(crate::cluster::DIR);
                for path in paths {
                    // inboxd's own folder in a shared inbox (claims, heartbeats rewritten every
                    // few seconds): hidden, so settle would skip it anyway; not even looked at.
                    if path.starts_with(&own) {
                        continue;
                    }
                    // A new folder's own files raise no events if they were written before its
                    // watch was added (or it was moved in whole): walk it.
                    // Never through a link: a link to a folder is a candidate like a file (it
                    // goes to failed/ as the link), never a folder to walk.
                    // A share that does not answer: not known as a folder, so passed on as a
                    // candidate; settle looks again once the share answers.
                    let is_dir = match path.strip_prefix(&self.inboxes[idx].path) {
                        Ok(rel) if rel.as_os_str().is_empty() => true,
                        Ok(rel) => {
                            let (root, rel) = (self.inboxes[idx].path.clone(), rel.to_path_buf());
                            self.guards[idx]
                                .run(move || crate::beneath::metadata(&root, &rel))
                                .await
                                .is_ok_and(|m| m.is_ok_and(|m| m.is_dir()))
                        }
                        Err(_) => false,
                    };
                    let ok = if is_dir {
                        resweep.push_back((Instant::now() + NEW_DIR_RESWEEP, idx, path.clone()));
                        self.sweep(idx, &path, output, watchers).await
                    } else {
                        output
                            .send(Candidate {
                                inbox: idx,
                                path,
                                now: false,
                                hint,
                            })
                            .await
                            .is_ok()
                    };
                    if !ok {
                        return false;
                    }
                }
                true
            }
        }
    }

    /// Sweeps every inbox whose folder is there.
    async fn sweep_all(
        &self,
        why: &str,
        output: &mpsc::Sender<Candidate>,
        missing: &[bool],
        watchers: &mut [Option<Watched>],
    ) -> bool {
        tracing::debug!(reason = why, "rescanning all inboxes");
        for (idx, inbox) in self.inboxes.iter().enumerate() {
            if missing[idx] {
                continue; // reported when it went missing; looked for again at each rescan
            }
            if !self.sweep(idx, &inbox.path, output, watchers).await {
                return false;
            }
        }
        true
    }

    /// Walks `dir` (inside inbox `idx`), watches every folder found (when the inbox uses
    /// kernel events) and sends every non-directory entry as a candidate.
    async fn sweep(
        &self,
        idx: usize,
        dir: &Path,
        output: &mpsc::Sender<Candidate>,
        watchers: &mut [Option<Watched>],
    ) -> bool {
        let root = self.inboxes[idx].path.clone();
        let Ok(sub) = dir.strip_prefix(&root).map(Path::to_path_buf) else {
            return true; // not in this inbox (cannot happen: paths come from its watcher)
        };
        let name = self.inboxes[idx].name.clone();
        // Under the inbox's time limit, counted from the last entry read: a long walk that
        // keeps moving is fine, one stuck on a hung share stalls only this inbox.
        let found = self.guards[idx]
            .run_with_progress(move |p| {
                crate::beneath::walk_tree_ticking(&name, &root, &sub, &|| p.tick())
            })
            .await;
        let Ok(found) = found else {
            return true; // the share does not answer: said once by the guard; the next sweep retries
        };
        // inboxd's own folder in a shared inbox is neither watched nor offered (see above).
        let own = self.inboxes[idx].path.join(crate::cluster::DIR);
        let mut found = found;
        found.dirs.retain(|d| !d.starts_with(&own));
        found.files.retain(|f| !f.starts_with(&own));
        if let Some(Some(w)) = watchers.get_mut(idx) {
            let inbox = &self.inboxes[idx];
            if let Err(e) = w.add_dirs(inbox, &found.dirs) {
                // The periodic rescan still covers folders without a watch, but latency
                // suffers, so say so loudly.
                tracing::error!(inbox = %inbox.name, error = %e,
                    "file watching degraded; files are still found by the periodic rescan");
            }
        }
        for path in found.files {
            let c = Candidate {
                inbox: idx,
                path,
                now: false,
                hint: Hint::Found,
            };
            if output.send(c).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// The running kernel watchers and the queue they feed (opaque outside this module).
pub struct Watchers {
    /// One per inbox; `None` for polled inboxes and missing ones.
    watchers: Vec<Option<Watched>>,
    /// Per inbox: its folder was not there at the last look.
    missing: Vec<bool>,
    raw: mpsc::Receiver<Raw>,
    overflowed: Arc<AtomicBool>,
    /// For watchers created later. Also keeps the queue open when no inbox uses kernel
    /// events (all polled), so waiting on it simply never yields instead of ending.
    tx: mpsc::Sender<Raw>,
}
