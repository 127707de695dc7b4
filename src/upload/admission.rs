//! Admission: which waiting file the upload stage starts next. Pure: files in, decisions out;
//! the stage loop does the spawning.
//!
//! The stage receives files in the order settle found them complete, which is per inbox in
//! bursts: a sweep of one inbox holding ten thousand files sends them all before a file
//! dropped a second later into another inbox. If the stage started files in that order, the
//! other inbox's file would wait for the whole burst. So the stage takes every file it is
//! handed into a queue per inbox (it never stops receiving because one inbox has a backlog),
//! and starts them round-robin over the inboxes that have files waiting: while one inbox has
//! a backlog, every other inbox's file is started at the next free slot.
//!
//! Large files (multipart uploads) are started in their own, smaller lane: however many of
//! them wait, they never hold all the slots, so a small file never waits for a large one.
//!
//! The slots bound the files started and not yet reported (hashing, waiting for an upload
//! slot, uploading): twice the upload concurrency, so that one round of files hashes while
//! the previous one uploads, and so that a file started now waits behind at most one round.

use std::collections::VecDeque;

/// The most files that wait here before the stage stops receiving (and settle waits): about
/// 300 bytes each, a few MiB in all; far more than any burst a round-robin needs to reach
/// the next inbox's file in practice.
pub const MAX_WAITING: usize = 20_000;

/// Which lane a file is started in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Small,
    /// Uploaded in parts (larger than `multipart_threshold`).
    Large,
}

pub struct Admission<T> {
    /// Per inbox, its waiting files in arrival order, each with its arrival number (so the
    /// two lanes of one inbox keep their order where both may start).
    waiting: Vec<VecDeque<(u64, Lane, T)>>,
    arrived: u64,
    queued: usize,
    /// Files started and not yet done, in all and in the large lane.
    started: usize,
    started_large: usize,
    slots: usize,
    large_slots: usize,
    /// The inbox whose turn it is next.
    turn: usize,
}

impl<T> Admission<T> {
    /// `slots` files at once over all inboxes, at most `large_slots` of them large.
    pub fn new(inboxes: usize, slots: usize, large_slots: usize) -> Admission<T> {
        Admission {
            waiting: (0..inboxes.max(1)).map(|_| VecDeque::new()).collect(),
            arrived: 0,
            queued: 0,
            started: 0,
            started_large: 0,
            slots: slots.max(1),
            large_slots: large_slots.clamp(1, slots.max(1)),
            turn: 0,
        }
    }

    /// A file of `inbox` to start when its turn comes.
    pub fn offer(&mut self, inbox: usize, lane: Lane, item: T) {
        let inbox = inbox.min(self.waiting.len() - 1);
        self.arrived += 1;
        self.waiting[inbox].push_back((self.arrived, lane, item));
        self.queued += 1;
    }

    /// The next file to start now, if a slot is free and a file may take it: the inboxes take
    /// turns; within an inbox the earliest file that its lane lets start.
    pub fn start_next(&mut self) -> Option<(usize, Lane, T)> {
        if self.started >= self.slots || self.queued == 0 {
            return None;
        }
        let large_free = self.started_large < self.large_slots;
        let n = self.waiting.len();
        for step in 0..n {
            let inbox = (self.turn + step) % n;
            let queue = &mut self.waiting[inbox];
            // The earliest file of this inbox that may start: its first file, or (when the
            // large lane is full) its first small one.
            let Some(pos) = queue
                .iter()
                .position(|(_, lane, _)| *lane == Lane::Small || large_free)
            else {
                continue;
            };
            let Some((_, lane, item)) = queue.remove(pos) else {
                continue;
            };
            self.queued -= 1;
            self.started += 1;
            if lane == Lane::Large {
                self.started_large += 1;
            }
            self.turn = (inbox + 1) % n;
            return Some((inbox, lane, item));
        }
        None
    }

    /// A file started in `lane` is done (reported): its slot is free.
    pub fn done(&mut self, lane: Lane) {
        self.started = self.started.saturating_sub(1);
        if lane == Lane::Large {
            self.started_large = self.started_large.saturating_sub(1);
        }
    }

    /// Whether the stage should stop receiving until files have started.
    pub fn is_full(&self) -> bool {
        self.queued >= MAX_WAITING
    }

    /// Files waiting or started and not yet done.
    pub fn held(&self) -> usize {
        self.queued + self.started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(a: &mut Admission<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| a.start_next().map(|(_, _, t)| t)).collect()
    }

    #[test]
    fn inboxes_take_turns_whatever_order_their_files_came_in() {
        let mut a = Admission::new(3, 4, 2);
        for f in ["a1", "a2", "a3", "a4", "a5"] {
            a.offer(0, Lane::Small, f);
        }
        a.offer(2, Lane::Small, "c1");
        a.offer(1, Lane::Small, "b1");
        // Four slots: every inbox gets one before the first gets its second.
        assert_eq!(drain(&mut a), ["a1", "b1", "c1", "a2"]);
        assert_eq!(a.held(), 7);
        a.done(Lane::Small);
        assert_eq!(drain(&mut a), ["a3"]);
        a.offer(1, Lane::Small, "b2");
        a.done(Lane::Small);
        a.done(Lane::Small);
        // b's turn came after a3 (a's), so b2 goes before a4.
        assert_eq!(drain(&mut a), ["b2", "a4"]);
    }

    #[test]
    fn large_files_never_take_every_slot() {
        let mut a = Admission::new(1, 4, 2);
        for f in ["L1", "L2", "L3", "L4"] {
            a.offer(0, Lane::Large, f);
        }
        a.offer(0, Lane::Small, "s1");
        a.offer(0, Lane::Small, "s2");
        // Two large (the lane is full), then the small files behind the waiting large ones.
        assert_eq!(drain(&mut a), ["L1", "L2", "s1", "s2"]);
        a.done(Lane::Small);
        assert_eq!(
            drain(&mut a),
            Vec::<&str>::new(),
            "the large lane is still full"
        );
        a.done(Lane::Large);
        assert_eq!(drain(&mut a), ["L3"]);
        a.done(Lane::Large);
        a.done(Lane::Large);
        assert_eq!(drain(&mut a), ["L4"]);
        assert_eq!(a.held(), 2, "s2 and L4");
    }

    #[test]
    fn within_an_inbox_files_start_in_arrival_order() {
        let mut a = Admission::new(2, 1, 1);
        for f in ["x1", "x2", "x3"] {
            a.offer(1, Lane::Small, f);
        }
        let mut order = Vec::new();
        while let Some((_, lane, f)) = a.start_next() {
            order.push(f);
            a.done(lane);
        }
        assert_eq!(order, ["x1", "x2", "x3"]);
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn the_queue_says_when_it_is_full() {
        let mut a = Admission::new(1, 1, 1);
        for _ in 0..MAX_WAITING - 1 {
            a.offer(0, Lane::Small, "f");
        }
        assert!(!a.is_full());
        a.offer(0, Lane::Small, "f");
        assert!(a.is_full());
        assert!(a.start_next().is_some());
        assert!(!a.is_full());
    }
}
