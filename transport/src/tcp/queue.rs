//! A peer's outbound queue, in two lanes (urgent and bulk), and the inbound
//! lanes `recv` serves in priority order.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::BytesMut;
use tokio::sync::{Mutex as AsyncMutex, Notify, mpsc, watch};

use super::{PeerId, lock};
use crate::framing::{Flags, Frame, FrameCodec, HEADER_LEN};
use crate::transport::Event;

/// The most bytes one write coalesces, and so the most bulk a queued
/// urgent frame can find written ahead of it (plus one frame).
const COALESCE: usize = 64 * 1024;

/// The bounds of one peer's outbound lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct QueueLimits {
    pub(super) urgent_frames: usize,
    pub(super) bulk_frames: usize,
    /// Payload bytes, per lane.
    pub(super) bytes: usize,
}

/// Why a frame was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// The lane holds its most frames.
    Frames { hwm: usize },
    /// The lane holds its most bytes.
    Bytes { queued: usize, max: usize },
    /// The queue is closed (its peer was removed).
    Closed,
}

#[derive(Debug, Default)]
struct Lane {
    frames: VecDeque<Frame>,
    bytes: usize,
}

impl Lane {
    /// Whether `frame` may join. A lane that is empty takes any frame, so a
    /// frame larger than the byte bound can still be sent.
    fn admits(&self, frame: &Frame, max_frames: usize, max_bytes: usize) -> Result<(), Refused> {
        if self.frames.len() >= max_frames.max(1) {
            return Err(Refused::Frames { hwm: max_frames });
        }
        let total = self.bytes.saturating_add(frame.payload.len());
        if !self.frames.is_empty() && total > max_bytes {
            return Err(Refused::Bytes {
                queued: self.bytes,
                max: max_bytes,
            });
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame) {
        self.bytes += frame.payload.len();
        self.frames.push_back(frame);
    }

    fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.payload.len();
        Some(frame)
    }
}

#[derive(Debug, Default)]
struct State {
    urgent: Lane,
    bulk: Lane,
    closed: bool,
}

/// What a peer has queued, for [`TcpStats`](super::TcpStats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Depth {
    pub(super) urgent_frames: usize,
    pub(super) bulk_frames: usize,
    pub(super) bulk_bytes: usize,
}

/// One peer's outbound frames. Senders push into the lane the frame's
/// [`Flags::URGENT`] picks; the connection holding [`writer`](Self::writer)
/// takes urgent frames first.
#[derive(Debug)]
pub(super) struct OutQueue {
    state: Mutex<State>,
    limits: QueueLimits,
    /// Woken when frames arrive or the queue closes (the writer waits).
    readable: Notify,
    /// Woken when frames leave or the queue closes (blocked senders wait).
    writable: Notify,
    /// Held by the connection writing this queue: the current one, so
    /// frames move to a new connection in order.
    pub(super) writer: AsyncMutex<()>,
}

impl OutQueue {
    pub(super) fn new(limits: QueueLimits) -> Self {
        OutQueue {
            state: Mutex::default(),
            limits,
            readable: Notify::new(),
            writable: Notify::new(),
            writer: AsyncMutex::new(()),
        }
    }

    fn try_push_locked(&self, state: &mut State, frame: Frame) -> Result<(), (Frame, Refused)> {
        if state.closed {
            return Err((frame, Refused::Closed));
        }
        let l = self.limits;
        let (lane, max_frames) = if frame.flags.contains(Flags::URGENT) {
            (&mut state.urgent, l.urgent_frames)
        } else {
            (&mut state.bulk, l.bulk_frames)
        };
        if let Err(refused) = lane.admits(&frame, max_frames, l.bytes) {
            return Err((frame, refused));
        }
        lane.push(frame);
        self.readable.notify_waiters();
        Ok(())
    }

    /// Queues `frame` if its lane has room.
    pub(super) fn try_push(&self, frame: Frame) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        self.try_push_locked(&mut state, frame).map_err(|(_, r)| r)
    }

    /// Queues `frame`, waiting while its lane is full.
    pub(super) async fn push(&self, mut frame: Frame) -> Result<(), Refused> {
        // Like a tokio channel send: a sender that never has to wait still
        // yields now and then, so the link and writer tasks get to run.
        tokio::task::consume_budget().await;
        loop {
            let room = self.writable.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = lock(&self.state);
                match self.try_push_locked(&mut state, frame) {
                    Ok(()) => return Ok(()),
                    Err((_, Refused::Closed)) => return Err(Refused::Closed),
                    Err((f, _)) => frame = f,
                }
            }
            room.await;
        }
    }

    /// Refuses further frames; the writer still writes what is queued.
    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.readable.notify_waiters();
        self.writable.notify_waiters();
    }

    /// Closed with nothing left to write.
    pub(super) fn is_drained(&self) -> bool {
        let state = lock(&self.state);
        state.closed && state.urgent.frames.is_empty() && state.bulk.frames.is_empty()
    }

    /// Resolves once there is a frame to write or the queue is closed.
    pub(super) async fn ready(&self) {
        loop {
            let readable = self.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            {
                let state = lock(&self.state);
                if state.closed || !state.urgent.frames.is_empty() || !state.bulk.frames.is_empty()
                {
                    return;
                }
            }
            readable.await;
        }
    }

    /// Encodes the next write into `out`: every queued urgent frame first,
    /// then bulk frames up to [`COALESCE`] bytes in all. `false` once the
    /// queue is closed and empty.
    pub(super) fn take_batch(&self, framing: FrameCodec, out: &mut BytesMut) -> bool {
        self.take(framing, out, COALESCE)
    }

    /// Encodes everything queued into `out` (shutdown's last write).
    pub(super) fn take_all(&self, framing: FrameCodec, out: &mut BytesMut) {
        self.take(framing, out, usize::MAX);
    }

    fn take(&self, framing: FrameCodec, out: &mut BytesMut, budget: usize) -> bool {
        let mut batch = Vec::new();
        let mut size = 0usize;
        {
            let mut guard = lock(&self.state);
            let state = &mut *guard;
            if state.closed && state.urgent.frames.is_empty() && state.bulk.frames.is_empty() {
                return false;
            }
            for lane in [&mut state.urgent, &mut state.bulk] {
                while size < budget {
                    let Some(frame) = lane.pop() else { break };
                    size = size.saturating_add(HEADER_LEN + frame.payload.len());
                    batch.push(frame);
                }
            }
        }
        self.writable.notify_waiters();
        // Frames were checked against the codec when queued.
        for frame in &batch {
            let _ = framing.encode(frame, out);
        }
        true
    }

    pub(super) fn depth(&self) -> Depth {
        let state = lock(&self.state);
        Depth {
            urgent_frames: state.urgent.frames.len(),
            bulk_frames: state.bulk.frames.len(),
            bulk_bytes: state.bulk.bytes,
        }
    }
}

/// An event on its way to `recv`.
pub(super) type Ev = Event<PeerId, Frame>;

/// The inbound lane an event waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum InLane {
    /// Urgent frames from peers.
    Urgent,
    /// Everything else from peers, their connects and disconnects included.
    Peers,
    /// Everything from client connections.
    Clients,
}

/// The sending side of the inbound lanes.
#[derive(Debug)]
pub(super) struct Inbound {
    urgent: mpsc::Sender<Ev>,
    peers: mpsc::Sender<Ev>,
    clients: mpsc::Sender<Ev>,
}

/// The receiving side: urgent first, then peers, then clients.
#[derive(Debug)]
pub(super) struct InboundRx {
    urgent: mpsc::Receiver<Ev>,
    peers: mpsc::Receiver<Ev>,
    clients: mpsc::Receiver<Ev>,
}

/// Inbound lanes of `capacity` events each.
pub(super) fn inbound(capacity: usize) -> (Inbound, InboundRx) {
    let capacity = capacity.max(1);
    let (ut, ur) = mpsc::channel(capacity);
    let (pt, pr) = mpsc::channel(capacity);
    let (ct, cr) = mpsc::channel(capacity);
    (
        Inbound {
            urgent: ut,
            peers: pt,
            clients: ct,
        },
        InboundRx {
            urgent: ur,
            peers: pr,
            clients: cr,
        },
    )
}

impl Inbound {
    fn lane(&self, lane: InLane) -> &mpsc::Sender<Ev> {
        match lane {
            InLane::Urgent => &self.urgent,
            InLane::Peers => &self.peers,
            InLane::Clients => &self.clients,
        }
    }

    /// Queues `ev` in `lane`, waiting for room.
    pub(super) async fn send(&self, lane: InLane, ev: Ev) {
        let _ = self.lane(lane).send(ev).await;
    }

    /// Events waiting in `lane`.
    pub(super) fn depth(&self, lane: InLane) -> usize {
        let tx = self.lane(lane);
        tx.max_capacity() - tx.capacity()
    }
}

impl InboundRx {
    /// The next event, from the first lane that has one; `None` once the
    /// lanes are empty and `stop` is set (or its sender gone).
    pub(super) async fn recv(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Ev> {
        tokio::select! {
            biased;
            Some(ev) = self.urgent.recv() => Some(ev),
            Some(ev) = self.peers.recv() => Some(ev),
            Some(ev) = self.clients.recv() => Some(ev),
            () = super::conn::stopped(stop) => None,
        }
    }

    /// The next event already waiting, in the order of [`recv`](Self::recv),
    /// without waiting; `None` if every lane is empty.
    pub(super) fn try_recv(&mut self) -> Option<Ev> {
        self.urgent
            .try_recv()
            .or_else(|_| self.peers.try_recv())
            .or_else(|_| self.clients.try_recv())
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{ChannelId, FrameCodec};
    use bytes::Bytes;

    fn limits() -> QueueLimits {
        QueueLimits {
            urgent_frames: 2,
            bulk_frames: 3,
            bytes: 100,
        }
    }

    fn bulk(n: usize) -> Frame {
        Frame::new(ChannelId(1), Bytes::from(vec![0u8; n]))
    }

    fn urgent(tag: u8) -> Frame {
        Frame::new(ChannelId(2), Bytes::from(vec![tag])).with_flags(Flags::URGENT)
    }

    fn decode_all(mut out: BytesMut) -> Vec<Frame> {
        let codec = FrameCodec::new();
        let mut frames = Vec::new();
        while let Some(f) = codec.decode(&mut out).unwrap() {
            frames.push(f);
        }
        assert!(out.is_empty());
        frames
    }

    #[test]
    fn lanes_are_bounded_by_frames_and_bytes() {
        let q = OutQueue::new(limits());
        assert_eq!(q.try_push(bulk(60)), Ok(()));
        assert_eq!(
            q.try_push(bulk(41)),
            Err(Refused::Bytes {
                queued: 60,
                max: 100
            })
        );
        assert_eq!(q.try_push(bulk(40)), Ok(()));
        assert_eq!(q.try_push(bulk(0)), Ok(()));
        assert_eq!(q.try_push(bulk(0)), Err(Refused::Frames { hwm: 3 }));
        // The urgent lane has room of its own.
        assert_eq!(q.try_push(urgent(1)), Ok(()));
        assert_eq!(q.try_push(urgent(2)), Ok(()));
        assert_eq!(q.try_push(urgent(3)), Err(Refused::Frames { hwm: 2 }));
        let d = q.depth();
        assert_eq!((d.urgent_frames, d.bulk_frames, d.bulk_bytes), (2, 3, 100));
    }

    #[test]
    fn an_empty_lane_takes_a_frame_above_the_byte_bound() {
        let q = OutQueue::new(limits());
        assert_eq!(q.try_push(bulk(500)), Ok(()));
        assert!(matches!(q.try_push(bulk(1)), Err(Refused::Bytes { .. })));
    }

    #[test]
    fn a_batch_takes_urgent_frames_first_and_bounds_bulk() {
        let q = OutQueue::new(QueueLimits {
            urgent_frames: 10,
            bulk_frames: 100,
            bytes: usize::MAX,
        });
        for _ in 0..40 {
            q.try_push(bulk(10 * 1024)).unwrap();
        }
        q.try_push(urgent(7)).unwrap();
        let mut out = BytesMut::new();
        assert!(q.take_batch(FrameCodec::new(), &mut out));
        let frames = decode_all(out);
        assert_eq!(frames[0].payload, Bytes::from(vec![7u8]));
        // 64 KiB of coalescing: seven 10 KiB frames (the seventh crosses it).
        assert_eq!(frames.len(), 1 + 7);
        assert_eq!(q.depth().bulk_frames, 40 - 7);
    }

    #[test]
    fn a_closed_queue_refuses_frames_but_is_written_out() {
        let q = OutQueue::new(limits());
        q.try_push(bulk(1)).unwrap();
        q.close();
        assert_eq!(q.try_push(bulk(1)), Err(Refused::Closed));
        assert!(!q.is_drained());
        let mut out = BytesMut::new();
        assert!(q.take_batch(FrameCodec::new(), &mut out));
        assert_eq!(decode_all(out).len(), 1);
        assert!(q.is_drained());
        assert!(!q.take_batch(FrameCodec::new(), &mut BytesMut::new()));
    }

    #[tokio::test]
    async fn a_blocked_push_resumes_when_the_writer_takes_frames() {
        let q = std::sync::Arc::new(OutQueue::new(limits()));
        for _ in 0..3 {
            q.try_push(bulk(1)).unwrap();
        }
        let pusher = tokio::spawn({
            let q = std::sync::Arc::clone(&q);
            async move { q.push(bulk(1)).await }
        });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished(), "push did not wait at the bound");
        q.take_batch(FrameCodec::new(), &mut BytesMut::new());
        let pushed = tokio::time::timeout(core::time::Duration::from_secs(5), pusher).await;
        assert_eq!(pushed.unwrap().unwrap(), Ok(()));
        assert_eq!(q.depth().bulk_frames, 1);
    }
}
