//! Connection budgets. A socket whose request head has not arrived is *pending*;
//! pending sockets are few and, when a new one comes, the oldest is shut, so idle
//! and trickling clients cannot keep a short request such as `/healthz` out. A
//! burst of clients arriving together is let past the limit for a moment (their
//! heads are on their way), up to a hard ceiling. Once the head is in, the request
//! is counted where it belongs (stream viewers, other pages); `/healthz` and
//! `/stats.json` answer whatever the counts.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a pending socket is safe from being shut to make room: a burst of real
/// clients (a dashboard's panels, a fleet's health checks) gets its heads in.
const GRACE: Duration = Duration::from_millis(500);
/// Past `max` × this, the oldest is shut however young: the ceiling on threads
/// waiting for heads (below the server's connection cap, so that there is room left).
const BURST: usize = 4;

/// A count with a ceiling.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, if one is free; it is given back when dropped.
    pub fn take(self: &Arc<Self>) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.clone()))
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// One taken unit of a [`Budget`].
#[derive(Debug)]
pub struct Slot(Arc<Budget>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A socket waiting for its head: its id, since when, and a handle to shut it.
type Entry = (u64, Instant, TcpStream);

/// Sockets waiting for their request head, oldest first.
#[derive(Debug)]
pub struct Pending {
    waiting: Mutex<VecDeque<Entry>>,
    next: AtomicU64,
    max: usize,
    grace: Duration,
}

impl Pending {
    pub fn new(max: usize) -> Arc<Self> {
        Self::with_grace(max, GRACE)
    }

    fn with_grace(max: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            max: max.max(1),
            grace,
        })
    }

    /// Count `stream` as waiting for its head. When `max` already wait, shut the
    /// oldest (its thread sees the socket end and leaves), unless it arrived within
    /// the grace period and fewer than `max` × [`BURST`] wait. Without a handle to
    /// shut, the socket is refused.
    pub fn enter(self: &Arc<Self>, stream: &TcpStream) -> Option<Waiting> {
        let handle = stream.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut waiting = self.lock();
        while waiting.len() >= self.max {
            let young = waiting
                .front()
                .is_some_and(|(_, since, _)| since.elapsed() < self.grace);
            if young && waiting.len() < self.max.saturating_mul(BURST) {
                break;
            }
            if let Some((_, _, oldest)) = waiting.pop_front() {
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }
        waiting.push_back((id, Instant::now(), handle));
        Some(Waiting {
            pending: self.clone(),
            id,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn leave(&self, id: u64) {
        self.lock().retain(|(i, ..)| *i != id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A socket counted as pending until its head is read (or it goes).
#[derive(Debug)]
pub struct Waiting {
    pending: Arc<Pending>,
    id: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.pending.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn budgets_give_back_what_is_dropped() {
        let b = Budget::new(2);
        let one = b.take().unwrap();
        let two = b.take().unwrap();
        assert!(b.take().is_none());
        drop(one);
        assert_eq!(b.used(), 1);
        let _three = b.take().unwrap();
        drop(two);
        assert_eq!(b.used(), 1);
    }

    /// `n` connected pairs (client, server side counted as pending).
    fn connect(pending: &Arc<Pending>, n: usize) -> Vec<(TcpStream, Waiting, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        (0..n)
            .map(|_| {
                let client = TcpStream::connect(addr).unwrap();
                let (s, _) = listener.accept().unwrap();
                (client, pending.enter(&s).unwrap(), s)
            })
            .collect()
    }

    fn is_shut(server_side: &TcpStream) -> bool {
        server_side.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        // Shut: reading ends at once; open: no data yet.
        (&*server_side).read(&mut buf).is_ok_and(|n| n == 0)
    }

    #[test]
    fn a_burst_waits_past_the_limit_up_to_its_ceiling_and_then_the_oldest_goes() {
        let pending = Pending::with_grace(2, Duration::from_secs(3600));
        let sockets = connect(&pending, 2 * BURST);
        assert_eq!(pending.len(), 2 * BURST);
        assert!(sockets.iter().all(|(.., s)| !is_shut(s)));
        let more = connect(&pending, 1);
        assert_eq!(pending.len(), 2 * BURST);
        assert!(is_shut(&sockets[0].2));
        assert!(!is_shut(&sockets[1].2) && !is_shut(&more[0].2));
    }

    #[test]
    fn once_a_burst_is_past_its_grace_the_oldest_go_down_to_the_limit() {
        let grace = Duration::from_millis(50);
        let pending = Pending::with_grace(2, grace);
        let old = connect(&pending, 3);
        std::thread::sleep(grace * 2);
        let new = connect(&pending, 1);
        assert_eq!(pending.len(), 2);
        assert!(is_shut(&old[0].2) && is_shut(&old[1].2));
        assert!(!is_shut(&old[2].2) && !is_shut(&new[0].2));
    }

    #[test]
    fn the_oldest_pending_socket_is_shut_when_a_new_one_comes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Past the grace period at once: the limit holds.
        let pending = Pending::with_grace(2, Duration::ZERO);
        let mut clients = Vec::new();
        let mut served = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).unwrap());
            let (s, _) = listener.accept().unwrap();
            served.push((pending.enter(&s).unwrap(), s));
        }
        assert_eq!(pending.len(), 2);
        // The first server-side socket was shut: reading it ends at once.
        let mut buf = [0u8; 1];
        assert_eq!(served[0].1.read(&mut buf).unwrap(), 0);
        // Leaving takes a socket off the list.
        served.pop();
        assert_eq!(pending.len(), 1);
    }
}
