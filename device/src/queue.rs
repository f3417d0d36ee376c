//! A bounded queue between pipeline threads. Live sources push with
//! [`DropQueue::push`], which drops the oldest item when full, so a slow consumer
//! always gets the newest frame (latency about one frame) and memory stays flat.
//! Finite sources (files) push with [`DropQueue::push_wait`], which waits for room
//! instead, so no image of a folder is skipped.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What [`DropQueue::pop`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pop<T> {
    Item(T),
    /// Nothing arrived within the timeout; the queue is still open.
    Empty,
    /// Closed and drained: nothing more will come.
    Closed,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    closed: bool,
    dropped: u64,
    high_water: usize,
}

/// A bounded multi-producer, multi-consumer queue that drops the oldest item when full.
#[derive(Debug)]
pub struct DropQueue<T> {
    capacity: usize,
    state: Mutex<State<T>>,
    /// Signalled when an item arrives or the queue closes.
    filled: Condvar,
    /// Signalled when an item leaves or the queue closes.
    emptied: Condvar,
}

impl<T> DropQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                dropped: 0,
                high_water: 0,
            }),
            filled: Condvar::new(),
            emptied: Condvar::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Add `item`, dropping the oldest items to make room; returns how many were
    /// dropped. Never blocks. Into a closed queue, `item` is discarded.
    pub fn push(&self, item: T) -> usize {
        let mut state = self.lock();
        if state.closed {
            return 0;
        }
        let mut dropped = 0;
        while state.items.len() >= self.capacity {
            state.items.pop_front();
            dropped += 1;
        }
        state.dropped += dropped as u64;
        state.items.push_back(item);
        state.high_water = state.high_water.max(state.items.len());
        drop(state);
        self.filled.notify_one();
        dropped
    }

    /// Add `item`, waiting while the queue is full; `false` (item discarded) when the
    /// queue is or gets closed.
    pub fn push_wait(&self, item: T) -> bool {
        let mut state = self.lock();
        while state.items.len() >= self.capacity && !state.closed {
            state = self.emptied.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.closed {
            return false;
        }
        state.items.push_back(item);
        state.high_water = state.high_water.max(state.items.len());
        drop(state);
        self.filled.notify_one();
        true
    }

    /// Wait up to `timeout` until an item fits without dropping another; `false` on
    /// timeout or when the queue is closed.
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.items.len() >= self.capacity && !state.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .emptied
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        !state.closed
    }

    /// The oldest item, waiting up to `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Pop<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(item) = state.items.pop_front() {
                drop(state);
                self.emptied.notify_one();
                return Pop::Item(item);
            }
            if state.closed {
                return Pop::Closed;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Pop::Empty;
            }
            state = self
                .filled
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Refuse further items and wake every waiter; items already queued can still be
    /// popped.
    pub fn close(&self) {
        self.lock().closed = true;
        self.filled.notify_all();
        self.emptied.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items dropped by [`DropQueue::push`] so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// The most items the queue ever held at once.
    pub fn high_water(&self) -> usize {
        self.lock().high_water
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Holders only move items in and out: a panicked one leaves a usable queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SHORT: Duration = Duration::from_millis(20);

    #[test]
    fn a_full_queue_drops_the_oldest_and_keeps_the_newest() {
        let q = DropQueue::new(2);
        assert_eq!(q.push(1), 0);
        assert_eq!(q.push(2), 0);
        assert_eq!(q.push(3), 1);
        assert_eq!(q.push(4), 1);
        assert_eq!(q.len(), 2);
        assert_eq!(q.dropped(), 2);
        assert_eq!(q.pop(SHORT), Pop::Item(3));
        assert_eq!(q.pop(SHORT), Pop::Item(4));
        assert_eq!(q.pop(SHORT), Pop::Empty);
    }

    #[test]
    fn never_holds_more_than_its_capacity_under_a_fast_producer() {
        let q = Arc::new(DropQueue::new(3));
        let consumer = {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match q.pop(Duration::from_secs(5)) {
                        Pop::Item(v) => {
                            got.push(v);
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        Pop::Closed => return got,
                        Pop::Empty => panic!("the producer stalled"),
                    }
                }
            })
        };
        let mut dropped = 0;
        for i in 0..5000u32 {
            dropped += q.push(i);
            assert!(q.len() <= 3);
        }
        q.close();
        let got = consumer.join().unwrap();
        assert!(q.high_water() <= 3, "held {}", q.high_water());
        assert!(dropped > 0, "a slow consumer makes the producer drop");
        assert_eq!(got.len() + dropped, 5000);
        assert_eq!(q.dropped(), dropped as u64);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "order kept");
        assert_eq!(
            *got.last().unwrap(),
            4999,
            "the newest item is never dropped"
        );
    }

    #[test]
    fn push_wait_loses_nothing_and_close_wakes_waiters() {
        let q = Arc::new(DropQueue::new(1));
        let producer = {
            let q = q.clone();
            std::thread::spawn(move || (0..200).all(|i| q.push_wait(i)))
        };
        let mut got = Vec::new();
        while got.len() < 200 {
            if let Pop::Item(v) = q.pop(Duration::from_secs(5)) {
                got.push(v);
            }
        }
        assert!(producer.join().unwrap());
        assert_eq!(got, (0..200).collect::<Vec<_>>());
        assert_eq!(q.high_water(), 1);

        // A producer blocked on a full queue is released by close.
        q.push(7);
        let blocked = {
            let q = q.clone();
            std::thread::spawn(move || q.push_wait(8))
        };
        std::thread::sleep(SHORT);
        q.close();
        assert!(!blocked.join().unwrap(), "a closed queue refuses");
        assert_eq!(q.pop(SHORT), Pop::Item(7), "queued items still drain");
        assert_eq!(q.pop(SHORT), Pop::Closed);
        assert_eq!(q.push(9), 0);
        assert!(q.is_empty());
    }
}
