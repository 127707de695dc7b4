//! batch: groups ready files into batches. A batch opens at its first file and closes when it
//! holds `max_files` files, reaches `max_bytes`, or its time window has passed.
//!
//! [`Batcher`] is a pure state machine (no tokio, no clock of its own) so it can be tested
//! exhaustively; [`run`] is the thin async stage around it.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::config::BatchSettings;
use crate::settle::ReadyFile;

/// A closed group of files, reported on together.
#[derive(Debug)]
pub struct Batch<T = ReadyFile> {
    pub id: u64,
    pub items: Vec<T>,
    pub bytes: u64,
    pub opened: Instant,
}

#[derive(Debug)]
pub struct Batcher<T> {
    max_files: usize,
    max_bytes: u64,
    window: Duration,
    open: Option<Batch<T>>,
    next_id: u64,
}

impl<T> Batcher<T> {
    pub fn new(limits: BatchSettings) -> Self {
        Batcher {
            max_files: limits.max_files.max(1),
            max_bytes: limits.max_bytes.max(1),
            window: limits.window,
            open: None,
            next_id: 1,
        }
    }

    /// Adds one item of `size` bytes. Returns the batches this closed (zero, one or two: a
    /// file that does not fit closes the open batch and may close its own at once).
    pub fn push(&mut self, item: T, size: u64, now: Instant) -> Vec<Batch<T>> {
        let mut closed = Vec::new();
        if let Some(open) = &self.open
            && !open.items.is_empty()
            && open.bytes.saturating_add(size) > self.max_bytes
        {
            closed.extend(self.open.take());
        }
        let open = self.open.get_or_insert_with(|| {
            let id = self.next_id;
            self.next_id += 1;
            Batch {
                id,
                items: Vec::new(),
                bytes: 0,
                opened: now,
            }
        });
        open.items.push(item);
        open.bytes = open.bytes.saturating_add(size);
        if open.items.len() >= self.max_files || open.bytes >= self.max_bytes {
            closed.extend(self.open.take());
        }
        closed
    }

    /// When the open batch's window ends, if one is open.
    pub fn deadline(&self) -> Option<Instant> {
        self.open.as_ref().map(|b| b.opened + self.window)
    }

    /// Closes the open batch if its window has passed.
    pub fn tick(&mut self, now: Instant) -> Option<Batch<T>> {
        match self.deadline() {
            Some(d) if d <= now => self.open.take(),
            _ => None,
        }
    }

    /// Closes the open batch whatever its state (input ended).
    pub fn flush(&mut self) -> Option<Batch<T>> {
        self.open.take()
    }
}

/// The batch stage: ready files in, closed batches out. Ends when its input ends, after
/// passing on the batch that was still open.
pub async fn run(
    limits: BatchSettings,
    mut input: mpsc::Receiver<ReadyFile>,
    output: mpsc::Sender<Batch>,
) {
    let mut batcher = Batcher::new(limits);
    loop {
        let deadline = batcher.deadline();
        let closed = tokio::select! {
            file = input.recv() => match file {
                Some(f) => {
                    let size = f.size;
                    batcher.push(f, size, Instant::now())
                }
                None => break,
            },
            _ = sleep_until(deadline), if deadline.is_some() => {
                batcher.tick(Instant::now()).into_iter().collect()
            }
        };
        for b in closed {
            if output.send(b).await.is_err() {
                return;
            }
        }
    }
    if let Some(b) = batcher.flush() {
        let _ = output.send(b).await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d.into()).await;
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
        assert!(b.push("a", 1, t).is_empty());
        assert!(b.push("b", 1, t).is_empty());
        let closed = b.push("c", 1, t);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].items, vec!["a", "b", "c"]);
        assert_eq!(closed[0].bytes, 3);
        assert!(b.deadline().is_none());
    }

    #[test]
    fn closes_on_window_measured_from_first_file() {
        let mut b = Batcher::new(limits(10, 1000, 500));
        let t = Instant::now();
        b.push("a", 1, t);
        b.push("b", 1, t + Duration::from_millis(400));
        assert_eq!(b.deadline(), Some(t + Duration::from_millis(500)));
        assert!(b.tick(t + Duration::from_millis(499)).is_none());
        let closed = b.tick(t + Duration::from_millis(500)).unwrap();
        assert_eq!(closed.items, vec!["a", "b"]);
    }

    #[test]
    fn a_file_that_does_not_fit_starts_the_next_batch() {
        let mut b = Batcher::new(limits(10, 100, 500));
        let t = Instant::now();
        b.push("a", 60, t);
        let closed = b.push("b", 60, t);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].items, vec!["a"]);
        let rest = b.flush().unwrap();
        assert_eq!(rest.items, vec!["b"]);
        assert_ne!(closed[0].id, rest.id);
    }

    #[test]
    fn an_oversized_file_is_a_batch_of_its_own() {
        let mut b = Batcher::new(limits(10, 100, 500));
        let t = Instant::now();
        b.push("a", 10, t);
        let closed = b.push("huge", 1000, t);
        assert_eq!(closed.len(), 2);
        assert_eq!(closed[0].items, vec!["a"]);
        assert_eq!(closed[1].items, vec!["huge"]);
        assert!(b.flush().is_none());
    }

    #[test]
    fn ids_increase() {
        let mut b = Batcher::new(limits(1, 100, 500));
        let t = Instant::now();
        let ids: Vec<u64> = (0..3).flat_map(|i| b.push(i, 1, t)).map(|x| x.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
