//! cluster: several hosts, one shared inbox (`[[inbox]] shared = true`). Between settle and
//! batch: a complete file is claimed before any work, by an atomic rename into this host's
//! claim folder inside the inbox, `.inboxd/claims/<host_id>/<rel>`. Of several hosts renaming
//! the same file, exactly one succeeds (rename is atomic on local file systems, NFS and SMB);
//! the others find it gone and move on without a word. The claimed file keeps its relative
//! path for its key, done/ and the ledger.
//!
//! Each host refreshes a heartbeat file, `.inboxd/hosts/<host_id>`, every few seconds. A host
//! whose heartbeat has not changed for `claim_timeout` (measured by the observer's own clock)
//! is taken for dead: a live host renames the dead one's claims into its own claim folder, the
//! same atomic rename, so of two live hosts again exactly one takes each file. A host that
//! comes back finds its claims gone; its moves then find nothing and it does not fight.
//!
//! Everything in this host's claim folder is this host's to finish: files handed back
//! (deferred, changed, paused, interrupted), left by a crash, or taken over are offered again
//! once they have kept still for the inbox's settle window. `.inboxd` is hidden, so watch and
//! settle never see it; every access to it is resolved beneath the inbox root without
//! following links, like every other path in an inbox.
//!
//! Where the server honours conditional writes, a file that a dead host had uploaded before
//! it died is recognised at the bucket (its own SHA-256) and moved to done/ without a second
//! upload; where it does not, the look before the write does the same.

pub mod hosts;
mod share;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::beneath;
use crate::claims::Claims;
use crate::config::{ClusterSettings, InboxSettings};
use crate::run::Mode;
use crate::settle::{Kind, ReadyFile, Signature};
use crate::stall::FsGuard;
pub use hosts::{HostView, Hosts, Sweep, heartbeat_every};
use share::{Looked, look_at};

/// The folder inside a shared inbox that holds claims and heartbeats.
pub const DIR: &str = ".inboxd";

/// `host`'s claim folder, relative to the inbox.
pub fn claims_of(host: &str) -> PathBuf {
    Path::new(DIR).join("claims").join(host)
}

fn heartbeat_of(host: &str) -> PathBuf {
    Path::new(DIR).join("hosts").join(host)
}

pub struct ClusterStage {
    pub inboxes: Arc<Vec<InboxSettings>>,
    pub settings: ClusterSettings,
    pub claims: Arc<Claims>,
    pub guards: Vec<FsGuard>,
    pub mode: Mode,
    /// Where the hosts seen on each shared inbox are shown (`/status`, metrics).
    pub ops: Arc<crate::ops::Ops>,
}

/// The cluster stage's running state.
struct Round {
    me: String,
    nonce: String,
    every: Duration,
    beats: u64,
    last_beat: Option<Instant>,
    /// Per inbox (shared ones used).
    hosts: Vec<Hosts>,
    sweep: Sweep,
    twin_warned: bool,
    /// Inboxes with `shared = true`: heartbeats, hosts, takeovers.
    shared: Vec<usize>,
    /// Those, and inboxes whose claim folder of this host is left from when they were shared:
    /// this host's claimed files there are offered again.
    swept: Vec<usize>,
}

impl ClusterStage {
    pub async fn run(
        self,
        mut input: mpsc::Receiver<ReadyFile>,
        output: mpsc::Sender<ReadyFile>,
        intake: CancellationToken,
    ) {
        let shared: Vec<usize> = (0..self.inboxes.len())
            .filter(|&i| self.inboxes[i].shared)
            .collect();
        let me = self.settings.host_id.clone();
        let mut swept = shared.clone();
        swept.extend(self.formerly_shared(&shared, &me).await);
        if swept.is_empty() {
            while let Some(f) = input.recv().await {
                if output.send(f).await.is_err() {
                    return;
                }
            }
            return;
        }
        let every = heartbeat_every(self.settings.claim_timeout);
        let mut r = Round {
            me,
            // Tells this process's heartbeat from another host's that uses the same host_id.
            nonce: format!("{:016x}", fastrand::u64(..)),
            every,
            beats: 0,
            last_beat: None,
            hosts: self.inboxes.iter().map(|_| Hosts::default()).collect(),
            sweep: Sweep::default(),
            twin_warned: false,
            shared,
            swept,
        };
        let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if self.mode == Mode::Once && !self.once_leftovers(&mut r, &output).await {
            return;
        }
        loop {
            tokio::select! {
                f = input.recv() => {
                    let Some(f) = f else { break };
                    let f = if self.inboxes[f.inbox].shared {
                        match self.claim(f, &r.me).await {
                            Some(f) => f,
                            None => continue,
                        }
                    } else {
                        f
                    };
                    if output.send(f).await.is_err() {
                        return;
                    }
                }
                _ = tick.tick(), if !intake.is_cancelled() => {
                    if !self.tick(&mut r, &output).await {
                        return;
                    }
                }
            }
        }
    }

    /// Inboxes no longer shared that still hold this host's claim folder from when they were:
    /// its files are finished here like any claimed file (otherwise they would wait, hidden,
    /// for good).
    async fn formerly_shared(&self, shared: &[usize], me: &str) -> Vec<usize> {
        let mut out = Vec::new();
        for i in (0..self.inboxes.len()).filter(|i| !shared.contains(i)) {
            let (root, sub) = (self.inboxes[i].path.clone(), claims_of(me));
            let held = self.guards[i]
                .run(move || beneath::metadata(&root, &sub).is_ok())
                .await;
            if held == Ok(true) {
                tracing::info!(inbox = %self.inboxes[i].name,
                    "this host's claim folder is still here from when the inbox was shared; its files are finished as usual");
                out.push(i);
            }
        }
        out
    }

    /// `once`: one heartbeat, then this host's claims left by an earlier run, at once (they
    /// were complete when claimed). False when downstream has gone away.
    async fn once_leftovers(&self, r: &mut Round, output: &mpsc::Sender<ReadyFile>) -> bool {
        self.heartbeat(r, Instant::now()).await;
        for &i in &r.swept {
            if let Some(l) = self.look(i, &r.me).await {
                for (at, rel, sig) in l.mine {
                    if !self.offer(i, at, rel, sig, output).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    /// Refreshes the heartbeat when it is due.
    async fn heartbeat(&self, r: &mut Round, now: Instant) {
        if r.last_beat.is_none_or(|t| now.duration_since(t) >= r.every) {
            r.beats += 1;
            self.beat(&r.shared, &r.me, &r.nonce, r.beats).await;
            r.last_beat = Some(now);
        }
    }

    /// One round: heartbeat; per inbox, the hosts seen, takeovers of dead ones (daemon), and
    /// this host's claimed files offered again once still. False when downstream has gone.
    async fn tick(&self, r: &mut Round, output: &mpsc::Sender<ReadyFile>) -> bool {
        self.heartbeat(r, Instant::now()).await;
        let mut seen = Vec::new();
        for i in r.swept.clone() {
            let Some(l) = self.look(i, &r.me).await else {
                continue;
            };
            let now = Instant::now();
            if self.inboxes[i].shared {
                self.observe(r, i, &l, now);
            }
            if self.mode != Mode::Daemon {
                continue;
            }
            if self.inboxes[i].shared {
                for dead in r.hosts[i].dead(&r.me, self.settings.claim_timeout, now) {
                    self.take_over(i, &dead, &r.me).await;
                }
            }
            for (at, rel, sig) in l.mine {
                let path = self.inboxes[i].path.join(&at);
                seen.push(path.clone());
                if self.claims.busy(&path, now).is_some() {
                    continue;
                }
                if r.sweep.seen(&path, sig, self.inboxes[i].settle, now) {
                    r.sweep.offered(&path);
                    if !self.offer(i, at, rel, sig, output).await {
                        return false;
                    }
                }
            }
        }
        r.sweep.keep_only(&seen);
        true
    }

    /// What a look at shared inbox `i` says about the hosts: fed to [`Hosts`] and shown.
    fn observe(&self, r: &mut Round, i: usize, l: &Looked, now: Instant) {
        for (host, content, claimed) in &l.hosts {
            if *host == r.me {
                // Our own file holds another process's nonce: a second host with this
                // host_id writes here too.
                if !content.is_empty() && !content.starts_with(r.nonce.as_bytes()) && !r.twin_warned
                {
                    r.twin_warned = true;
                    tracing::error!(inbox = %self.inboxes[i].name, host_id = %r.me,
                        "another inboxd uses this host_id on this share: give each host its own [cluster] host_id");
                }
                continue;
            }
            r.hosts[i].observe(host, content, *claimed, now);
        }
        let (me, nonce) = (r.me.clone(), r.nonce.clone());
        r.hosts[i].observe(&me, nonce.as_bytes(), l.mine.len(), now);
        self.ops
            .hosts(i, r.hosts[i].view(self.settings.claim_timeout, now));
    }

    /// Claims `f` for this host. `None`: not claimed now (another host has it, or it is
    /// tried again later).
    async fn claim(&self, f: ReadyFile, me: &str) -> Option<ReadyFile> {
        let inbox = &self.inboxes[f.inbox];
        let at = claims_of(me).join(&f.rel);
        let (root, from, to) = (inbox.path.clone(), f.at.clone(), at.clone());
        let renamed = self.guards[f.inbox]
            .run(move || beneath::rename_within(&root, &from, &to))
            .await;
        let now = Instant::now();
        match renamed {
            Ok(Ok(())) => {
                let path = inbox.path.join(&at);
                // Its place in the inbox is free for a new file of that name; the claimed
                // file is held under its new path until finish lets it go.
                self.claims.release(&f.path);
                let _ = self.claims.try_claim(&path, now);
                Some(ReadyFile { path, at, ..f })
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                // Another host claimed it first: its file now, nothing to say.
                tracing::debug!(inbox = %inbox.name, path = %crate::telemetry::escape(&f.rel), "claimed by another host");
                self.claims.release(&f.path);
                None
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
                // This host still holds an earlier file of that name: once that one has gone
                // to done/, this one is claimed.
                self.claims.defer(&f.path, now + inbox.settle);
                None
            }
            Ok(Err(e)) => {
                tracing::warn!(inbox = %inbox.name, path = %crate::telemetry::escape(&f.rel), error = %e,
                    "cannot claim the file in the shared inbox; trying again later");
                self.claims
                    .defer(&f.path, now + inbox.settle.max(Duration::from_secs(1)));
                None
            }
            Err(_) => {
                // The share does not answer: the inbox is stalled, and said so.
                self.claims.defer(&f.path, now + inbox.settle);
                None
            }
        }
    }

    /// Offers one of this host's claimed files to the pipeline again. False when downstream
    /// has gone away.
    async fn offer(
        &self,
        inbox: usize,
        at: PathBuf,
        rel: PathBuf,
        sig: Signature,
        output: &mpsc::Sender<ReadyFile>,
    ) -> bool {
        let path = self.inboxes[inbox].path.join(&at);
        if self.claims.try_claim(&path, Instant::now()).is_err() {
            return true;
        }
        let f = ReadyFile {
            inbox,
            path: path.clone(),
            rel,
            root: self.inboxes[inbox].path.clone(),
            at,
            size: sig.size,
            sig,
            kind: Kind::Regular,
            ready_at: Instant::now(),
        };
        if output.send(f).await.is_err() {
            self.claims.release(&path);
            return false;
        }
        true
    }

    /// Refreshes this host's heartbeat in every shared inbox.
    async fn beat(&self, shared: &[usize], me: &str, nonce: &str, n: u64) {
        let text = format!("{nonce} {n} pid={}\n", std::process::id());
        for &i in shared {
            let root = self.inboxes[i].path.clone();
            let rel = heartbeat_of(me);
            let bytes = text.clone().into_bytes();
            match self.guards[i]
                .run(move || beneath::write_whole(&root, &rel, &bytes))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(inbox = %self.inboxes[i].name, error = %e, "cannot write this host's heartbeat in the shared inbox")
                }
                Err(_) => {}
            }
        }
    }

    /// Reads the heartbeats and claims of a shared inbox. `None` when the share does not
    /// answer (the inbox is stalled; nothing is decided on what could not be read).
    async fn look(&self, i: usize, me: &str) -> Option<Looked> {
        let root = self.inboxes[i].path.clone();
        let me = me.to_owned();
        let label = self.inboxes[i].name.clone();
        self.guards[i]
            .run(move || look_at(&label, &root, &me))
            .await
            .ok()
    }

    /// Takes the claims of `dead` over into this host's claim folder.
    async fn take_over(&self, i: usize, dead: &str, me: &str) {
        let root = self.inboxes[i].path.clone();
        let (from, to) = (claims_of(dead), claims_of(me));
        let label = self.inboxes[i].name.clone();
        let moved = self.guards[i]
            .run(move || {
                let base = root.join(&from);
                let mut n = 0usize;
                for full in beneath::walk(&label, &root, &from) {
                    let Ok(rel) = full.strip_prefix(&base) else {
                        continue;
                    };
                    // NotFound: another live host took this one; AlreadyExists: this host
                    // holds a file of that name, so this one waits for the next round.
                    if beneath::rename_within(&root, &from.join(rel), &to.join(rel)).is_ok() {
                        n += 1;
                    }
                }
                n
            })
            .await;
        if let Ok(n) = moved
            && n > 0
        {
            tracing::warn!(inbox = %self.inboxes[i].name, host = dead, files = n,
                timeout = %humantime::format_duration(self.settings.claim_timeout),
                "took over the claimed files of a host whose heartbeat stopped");
        }
    }
}
