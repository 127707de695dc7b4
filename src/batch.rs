//! batch: groups ready files into batches, the unit of reporting. A batch opens at its first
//! file and closes when it holds `max_files` files, reaches `max_bytes`, or its time window
//! has passed.
//!
//! Files are passed on the moment they are placed in a batch, not when the batch closes: a
//! batch says which files are reported on together, it never holds a file back. (Waiting for
//! the window would add up to `batch.window` to every file's latency for no gain: uploads are
//! limited by one global semaphore anyway, and the ledger is flushed per group in finish.)
//! When a batch closes, a [`Batched::Closed`] event follows its files, so finish can write the
//! batch report once every file of it has an outcome.
//!
//! [`Batcher`] is a pure state machine (no tokio, no clock of its own) so it can be tested
//! exhaustively; [`run`] is the thin async stage around it.

use std::time::Duration;
use tokio::time::Instant;

use tokio::sync::mpsc;

use crate::config::BatchSettings;
use crate::settle::ReadyFile;

/// What flows from batch to upload.
#[derive(Debug)]
pub enum Batched {
    /// A file, placed in the batch with this id (which may still be open).
    File(u64, ReadyFile),
    /// The batch is complete, with its totals: no more files will be placed in it.
    Closed(Summary),
}

/// Totals of a batch, as the state machine counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub id: u64,
    pub files: usize,
    pub bytes: u64,
    pub opened: Instant,
}

/// Where one file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The open batch was closed first because the file did not fit in it.
    pub closed_before: Option<Summary>,
    /// The batch the file was placed in.
    pub batch: u64,
    /// That batch closed with this file (it reached `max_files` or `max_bytes`).
    pub closed_after: Option<Summary>,
}

#[derive(Debug)]
pub struct Batcher {
    max_files: usize,
    max_bytes: u64,
    window: Duration,
    open: Option<Summary>,
    next_id: u64,
}

impl Batcher {
    pub fn new(limits: BatchSettings) -> Self {
        Batcher {
            max_files: limits.max_files.max(1),
            max_bytes: limits.max_bytes.max(1),
            window: limits.window,
            open: None,
            next_id: 1,
        }
    }

    /// Places one file of `size` bytes.
    pub fn push(&mut self, size: u64, now: Instant) -> Placement {
        let mut closed_before = None;
        if let Some(open) = &self.open
            && open.files > 0
            && open.bytes.saturating_add(size) > self.max_bytes
        {
            closed_before = self.open.take();
        }
        let open = self.open.get_or_insert_with(|| {
            let id = self.next_id;
            self.next_id += 1;
            Summary {
                id,
                files: 0,
                bytes: 0,
                opened: now,
            }
        });
        open.files += 1;
        open.bytes = open.bytes.saturating_add(size);
        let batch = open.id;
        let closed_after = if open.files >= self.max_files || open.bytes >= self.max_bytes {
            self.open.take()
        } else {
            None
        };
        Placement {
            closed_before,
            batch,
            closed_after,
        }
    }

    /// When the open batch's window ends, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|b| b.opened + self.window)
    }

    /// Closes the open batch if its window has passed.
    pub fn tick(&mut self, now: Instant) -> Option<Summary> {
        match self.deadline() {
            Some(d) if d <= now => self.open.take(),
            _ => None,
        }
    }

    /// Closes the open batch whatever its state (input ended).
    pub fn flush(&mut self) -> Option<Summary> {
        self.open.take()
    }
}

/// The batch stage. Ends when its input ends, after closing the batch still open.
pub async fn run(
    limits: BatchSettings,
    mut input: mpsc::Receiver<ReadyFile>,
    output: mpsc::Sender<Batched>,
) {
    let mut batcher = Batcher::new(limits);
    loop {
        let deadline = batcher.deadline();
        tokio::select! {
            file = input.recv() => {
                let Some(file) = file else { break };
                let p = batcher.push(file.size, Instant::now());
                if let Some(s) = p.closed_before
                    && output.send(Batched::Closed(s)).await.is_err()
                {
                    return;
                }
                if output.send(Batched::File(p.batch, file)).await.is_err() {
                    return;
                }
                if let Some(s) = p.closed_after
                    && output.send(Batched::Closed(s)).await.is_err()
                {
                    return;
                }
            }
            _ = crate::run::sleep_until(deadline), if deadline.is_some() => {
                if let Some(s) = batcher.tick(Instant::now())
                    && output.send(Batched::Closed(s)).await.is_err()
                {
                    return;
                }
            }
        }
    }
    if let Some(s) = batcher.flush() {
        let _ = output.send(Batched::Closed(s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_files: usize, max_bytes: u64, window_ms: u64) -> BatchSettings {
        BatchSettings {
            max_files,
            max_bytes,
            window: Duration::from_millis(window_ms),
        }
    }

    #[test]
    fn closes_on_max_files() {
        let mut b = Batcher::new(limits(3, 1000, 500));
        let t = Instant::now();
        assert_eq!(b.push(1, t).closed_after, None);
        assert_eq!(b.push(1, t).closed_after, None);
        let p = b.push(1, t);
        let s = p.closed_after.unwrap();
        assert_eq!((s.id, s.files, s.bytes), (1, 3, 3));
        assert_eq!(p.batch, 1);
        assert!(b.deadline().is_none());
        assert_eq!(b.push(1, t).batch, 2);
    }

    #[test]
    fn closes_on_window_measured_from_first_file() {
        let mut b = Batcher::new(limits(10, 1000, 500));
        let t = Instant::now();
        b.push(1, t);
        b.push(1, t + Duration::from_millis(400));
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(500)));
        assert!(b.tick(t + Duration::from_millis(499)).is_none());
        let s = b.tick(t + Duration::from_millis(500)).unwrap();
        assert_eq!(s.files, 2);
        assert!(b.flush().is_none());
    }

    #[test]
    fn a_file_that_does_not_fit_starts_the_next_batch() {
        let mut b = Batcher::new(limits(10, 100, 500));
        let t = Instant::now();
        b.push(60, t);
        let p = b.push(60, t);
        let before = p.closed_before.unwrap();
        assert_eq!((before.id, before.files, before.bytes), (1, 1, 60));
        assert_eq!(p.batch, 2);
        assert!(p.closed_after.is_none());
        let rest = b.flush().unwrap();
        assert_eq!((rest.id, rest.files), (2, 1));
    }

    #[test]
    fn an_oversized_file_is_a_batch_of_its_own() {
        let mut b = Batcher::new(limits(10, 100, 500));
        let t = Instant::now();
        b.push(10, t);
        let p = b.push(1000, t);
        assert_eq!(p.closed_before.map(|s| s.files), Some(1));
        assert_eq!(p.closed_after.map(|s| (s.id, s.files)), Some((2, 1)));
        assert!(b.flush().is_none());
    }

    #[tokio::test]
    async fn stage_passes_files_on_at_once_and_closes_batches() {
        let (in_tx, in_rx) = mpsc::channel(8);
        let (out_tx, mut out_rx) = mpsc::channel(8);
        tokio::spawn(run(limits(2, 1000, 60_000), in_rx, out_tx));
        let file = |n: &str| ReadyFile {
            inbox: 0,
            path: n.into(),
            root: "/".into(),
            at: n.into(),
            rel: n.into(),
            size: 5,
            sig: crate::settle::Signature {
                size: 5,
                mtime_ns: 0,
                ino: 0,
                dev: 0,
            },
            kind: crate::settle::Kind::Regular,
            ready_at: Instant::now(),
        };
        in_tx.send(file("a")).await.unwrap();
        // Passed on before the batch closes (the window is a minute long).
        match out_rx.recv().await.unwrap() {
            Batched::File(id, f) => assert_eq!((id, f.rel.to_str()), (1, Some("a"))),
            other => panic!("{other:?}"),
        }
        in_tx.send(file("b")).await.unwrap();
        assert!(matches!(out_rx.recv().await.unwrap(), Batched::File(..)));
        match out_rx.recv().await.unwrap() {
            Batched::Closed(s) => assert_eq!((s.id, s.files, s.bytes), (1, 2, 10)),
            other => panic!("{other:?}"),
        }
        in_tx.send(file("c")).await.unwrap();
        assert!(matches!(out_rx.recv().await.unwrap(), Batched::File(..)));
        drop(in_tx);
        match out_rx.recv().await.unwrap() {
            Batched::Closed(s) => assert_eq!((s.id, s.files), (2, 1)),
            other => panic!("{other:?}"),
        }
        assert!(out_rx.recv().await.is_none());
    }
}
