//! The gate in front of handshakes: how many connections may be opening
//! at once, in all and per peer address, and who waits for room.

use super::*;

/// The bounds on unauthenticated connections a listener keeps: at most
/// [`MAX_PENDING_HANDSHAKES`] in their handshake (past that, connections
/// wait in the kernel's backlog), at most [`MAX_PENDING_PER_PEER`] of them
/// from one address (the rest wait their turn, boundedly, without holding
/// a place; one that waits past the handshake timeout is closed). Hitting a
/// bound is logged, at most every ten seconds.
pub struct Gate {
    all: Arc<tokio::sync::Semaphore>,
    per_peer: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, PeerSlots>>,
    waiting: std::sync::atomic::AtomicUsize,
    last_warning: std::sync::Mutex<Option<std::time::Instant>>,
    what: &'static str,
}

/// One address's handshakes at a [`Gate`].
struct PeerSlots {
    running: Arc<tokio::sync::Semaphore>,
    waiting: usize,
}

/// A handshake's place at a [`Gate`], given back when dropped.
pub struct Pass {
    gate: Arc<Gate>,
    peer: std::net::IpAddr,
    own: Option<tokio::sync::OwnedSemaphorePermit>,
    _all: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Pass {
    fn drop(&mut self) {
        // Give the address's place back, then forget an address nobody
        // else holds or waits on.
        self.own = None;
        let mut per_peer = self.gate.per_peer.lock().expect("never poisoned");
        if let Some(slots) = per_peer.get(&self.peer)
            && slots.waiting == 0
            && slots.running.available_permits() == MAX_PENDING_PER_PEER
        {
            per_peer.remove(&self.peer);
        }
    }
}

impl Gate {
    /// A gate for the listener of `what` (for log lines).
    pub fn new(what: &'static str) -> Arc<Self> {
        Arc::new(Self {
            all: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES)),
            per_peer: Default::default(),
            waiting: Default::default(),
            last_warning: Default::default(),
            what,
        })
    }

    /// Waits for room for one more handshake (call before accepting).
    pub async fn room(&self) -> tokio::sync::OwnedSemaphorePermit {
        if let Ok(p) = self.all.clone().try_acquire_owned() {
            return p;
        }
        self.warn(format_args!(
            "{} connections are in their handshake on the {} (the most at once); \
             further connections wait until one ends",
            MAX_PENDING_HANDSHAKES, self.what
        ));
        self.all
            .clone()
            .acquire_owned()
            .await
            .expect("never closed")
    }

    /// Lets a connection from `peer` start its handshake: at once while
    /// that address has fewer than [`MAX_PENDING_PER_PEER`] in theirs, else
    /// after waiting its turn (giving `room` back meanwhile). `None`: close
    /// it (too many waiting, or it waited past the handshake timeout).
    pub async fn admit(
        self: &Arc<Self>,
        room: tokio::sync::OwnedSemaphorePermit,
        peer: std::net::IpAddr,
    ) -> Option<Pass> {
        use std::sync::atomic::Ordering::Relaxed;
        let running = {
            let mut per_peer = self.per_peer.lock().expect("never poisoned");
            let slots = per_peer.entry(peer).or_insert_with(|| PeerSlots {
                running: Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_PER_PEER)),
                waiting: 0,
            });
            if let Ok(own) = slots.running.clone().try_acquire_owned() {
                return Some(self.pass(peer, own, room));
            }
            if slots.waiting >= MAX_WAITING_PER_PEER || self.waiting.load(Relaxed) >= MAX_WAITING {
                drop(per_peer);
                self.warn(format_args!(
                    "closing a connection from {peer} to the {}: too many of its connections \
                     wait for their handshake",
                    self.what
                ));
                return None;
            }
            slots.waiting += 1;
            self.waiting.fetch_add(1, Relaxed);
            slots.running.clone()
        };
        self.warn(format_args!(
            "{MAX_PENDING_PER_PEER} handshakes from {peer} are in progress on the {}; its \
             further connections wait their turn",
            self.what
        ));
        drop(room);
        let own = tokio::time::timeout(HANDSHAKE_TIMEOUT, running.acquire_owned()).await;
        let room = match &own {
            Ok(Ok(_)) => Some(self.room().await),
            _ => None,
        };
        {
            let mut per_peer = self.per_peer.lock().expect("never poisoned");
            if let Some(slots) = per_peer.get_mut(&peer) {
                slots.waiting -= 1;
            }
            self.waiting.fetch_sub(1, Relaxed);
        }
        match (own, room) {
            (Ok(Ok(own)), Some(room)) => Some(self.pass(peer, own, room)),
            _ => None,
        }
    }

    fn pass(
        self: &Arc<Self>,
        peer: std::net::IpAddr,
        own: tokio::sync::OwnedSemaphorePermit,
        room: tokio::sync::OwnedSemaphorePermit,
    ) -> Pass {
        Pass {
            gate: self.clone(),
            peer,
            own: Some(own),
            _all: room,
        }
    }

    fn warn(&self, message: std::fmt::Arguments<'_>) {
        let mut last = self.last_warning.lock().expect("never poisoned");
        let now = std::time::Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            *last = Some(now);
            tracing::warn!("{message}");
        }
    }
}
