//! Connection budgets. A socket whose request head has not arrived is *pending*;
//! pending sockets are few and, when a new one comes, the oldest is shut, so idle
//! and trickling clients cannot keep a short request such as `/healthz` out. Once
//! the head is in, the request is counted where it belongs (stream viewers, other
//! pages); `/healthz` and `/stats.json` answer whatever the counts.

use std::collections::VecDeque;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// Sockets waiting for their request head, oldest first.
#[derive(Debug)]
pub struct Pending {
    waiting: Mutex<VecDeque<(u64, TcpStream)>>,
    next: AtomicU64,
    max: usize,
}

impl Pending {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(0),
            max: max.max(1),
        })
    }

    /// Count `stream` as waiting for its head; when more than `max` wait, shut the
    /// oldest (its thread sees the socket end and leaves). Without a handle to
    /// shut, the socket is refused.
    pub fn enter(self: &Arc<Self>, stream: &TcpStream) -> Option<Waiting> {
        let handle = stream.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let mut waiting = self.lock();
        while waiting.len() >= self.max {
            if let Some((_, oldest)) = waiting.pop_front() {
                let _ = oldest.shutdown(Shutdown::Both);
            }
        }
        waiting.push_back((id, handle));
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
        self.lock().retain(|(i, _)| *i != id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, TcpStream)>> {
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

    #[test]
    fn the_oldest_pending_socket_is_shut_when_a_new_one_comes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pending = Pending::new(2);
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
