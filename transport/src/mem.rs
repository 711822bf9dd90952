//! An in-process [`Transport`]: peers in one process exchange messages
//! through bounded channels, with no encoding. Use it to run real async
//! nodes in one test binary, and read it as the reference implementation of
//! the trait.
//!
//! ```
//! use quorate_transport::mem::MemHub;
//! use quorate_transport::{Event, Transport};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let hub = MemHub::new(16);
//! let mut a = hub.join("a").unwrap();
//! let b = hub.join("b").unwrap();
//! assert_eq!(a.recv().await.unwrap(), Event::Connected("b"));
//! b.send("a", 42u32).await.unwrap();
//! assert_eq!(a.recv().await.unwrap(), Event::Message { from: "b", msg: 42 });
//! # });
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use core::fmt::Debug;
use core::hash::Hash;

use futures::SinkExt;
use futures::StreamExt;
use futures::channel::mpsc;

use crate::transport::{Event, Transport};

/// What went wrong on an in-process transport.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemError<P: Debug> {
    /// No peer of that name has joined (or it has left).
    #[error("no peer {0:?} on this hub")]
    UnknownPeer(P),
    /// A peer of that name is already on the hub.
    #[error("peer {0:?} already joined")]
    AlreadyJoined(P),
    /// The hub is gone and nothing more will arrive.
    #[error("the hub is closed")]
    Closed,
}

type Inboxes<P, M> = Arc<Mutex<HashMap<P, mpsc::Sender<Event<P, M>>>>>;

/// The shared "network" peers join. Cloning shares it.
#[derive(Debug)]
pub struct MemHub<P, M> {
    inboxes: Inboxes<P, M>,
    capacity: usize,
}

impl<P, M> Clone for MemHub<P, M> {
    fn clone(&self) -> Self {
        MemHub {
            inboxes: Arc::clone(&self.inboxes),
            capacity: self.capacity,
        }
    }
}

impl<P, M> MemHub<P, M>
where
    P: Clone + Eq + Hash + Debug + Send + Sync + 'static,
    M: Send + 'static,
{
    /// A hub whose peers each buffer about `capacity` inbound events: a send
    /// that finds the inbox fuller than that waits until the owner reads
    /// (each waiting send holds one message, so the bound is `capacity` plus
    /// one per concurrent send).
    pub fn new(capacity: usize) -> Self {
        MemHub {
            inboxes: Arc::default(),
            capacity,
        }
    }

    /// Adds peer `id`. Peers already there get [`Event::Connected`] for it
    /// when their inbox has room (the event is skipped otherwise: it is a
    /// hint, messages are what count).
    pub fn join(&self, id: P) -> Result<MemTransport<P, M>, MemError<P>> {
        let mut inboxes = self.inboxes.lock().unwrap_or_else(PoisonError::into_inner);
        if inboxes.contains_key(&id) {
            return Err(MemError::AlreadyJoined(id));
        }
        for inbox in inboxes.values_mut() {
            let _hint_only = inbox.try_send(Event::Connected(id.clone()));
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        inboxes.insert(id.clone(), tx);
        Ok(MemTransport {
            id,
            hub: self.clone(),
            inbox: rx,
        })
    }
}

/// One peer's end of a [`MemHub`]. Dropping it leaves the hub, and the
/// others get [`Event::Disconnected`] for it when they have room.
#[derive(Debug)]
pub struct MemTransport<P: Clone + Eq + Hash, M> {
    id: P,
    hub: MemHub<P, M>,
    inbox: mpsc::Receiver<Event<P, M>>,
}

impl<P: Clone + Eq + Hash, M> MemTransport<P, M> {
    /// This peer's name.
    pub fn id(&self) -> &P {
        &self.id
    }
}

impl<P: Clone + Eq + Hash, M> Drop for MemTransport<P, M> {
    fn drop(&mut self) {
        // Never panic in drop: a poisoned lock still holds a usable map.
        let mut inboxes = self
            .hub
            .inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        inboxes.remove(&self.id);
        for inbox in inboxes.values_mut() {
            let _hint_only = inbox.try_send(Event::Disconnected(self.id.clone()));
        }
    }
}

#[async_trait::async_trait]
impl<P, M> Transport for MemTransport<P, M>
where
    P: Clone + Eq + Hash + Debug + Send + Sync + 'static,
    M: Send + 'static,
{
    type Peer = P;
    type Message = M;
    type Error = MemError<P>;

    async fn send(&self, to: P, msg: M) -> Result<(), MemError<P>> {
        // Clone the sender so the lock is not held across the await.
        let inbox = self
            .hub
            .inboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&to)
            .cloned();
        let mut inbox = inbox.ok_or_else(|| MemError::UnknownPeer(to.clone()))?;
        let event = Event::Message {
            from: self.id.clone(),
            msg,
        };
        inbox
            .send(event)
            .await
            .map_err(|_| MemError::UnknownPeer(to))
    }

    async fn recv(&mut self) -> Result<Event<P, M>, MemError<P>> {
        self.inbox.next().await.ok_or(MemError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: core::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn messages_flow_both_ways_and_leaving_is_reported() {
        block_on(async {
            let hub: MemHub<u8, &str> = MemHub::new(4);
            let mut a = hub.join(1).unwrap();
            let mut b = hub.join(2).unwrap();
            assert_eq!(hub.join(2).unwrap_err(), MemError::AlreadyJoined(2));
            assert_eq!(a.recv().await.unwrap(), Event::Connected(2));
            b.send(1, "ping").await.unwrap();
            a.send(2, "pong").await.unwrap();
            assert_eq!(
                a.recv().await.unwrap(),
                Event::Message {
                    from: 2,
                    msg: "ping"
                }
            );
            assert_eq!(
                b.recv().await.unwrap(),
                Event::Message {
                    from: 1,
                    msg: "pong"
                }
            );
            assert_eq!(a.send(9, "x").await, Err(MemError::UnknownPeer(9)));
            drop(b);
            assert_eq!(a.recv().await.unwrap(), Event::Disconnected(2));
            assert_eq!(a.send(2, "x").await, Err(MemError::UnknownPeer(2)));
        });
    }

    #[test]
    fn a_full_inbox_makes_the_sender_wait() {
        use futures::FutureExt;
        block_on(async {
            let hub: MemHub<u8, u32> = MemHub::new(1);
            let a = hub.join(1).unwrap();
            let mut b = hub.join(2).unwrap();
            a.send(2, 0).await.unwrap();
            let blocked = a.send(2, 1).now_or_never();
            assert!(blocked.is_none(), "send did not wait on a full inbox");
            assert_eq!(b.recv().await.unwrap(), Event::Message { from: 1, msg: 0 });
        });
    }
}
