//! Clock-offset probes between kv-cluster nodes: each node asks each peer
//! for its time now and then (a [`Probe::Ask`] carrying `t1`), the peer
//! answers with when it got the ask and when it answered (`t2`, `t3`),
//! and the asker, reading `t4` on arrival, feeds the four timestamps to
//! an NTP-style estimator per peer (`quorate_clocks::offset`). `status`
//! shows the estimates; a leader whose peers' clocks are not known to a
//! bound refuses lease reads.
//!
//! The probes go on their own channel, so nodes of an older version drop
//! them unread. Times are the nodes' wall clocks in milliseconds (what a
//! [`NodeCore`](super::server::NodeCore) is handed), so every bound
//! includes [`RESOLUTION_NS`].

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_clocks::offset::{OffsetEstimator, Sample};
use quorate_transport::framing::ChannelId;

use super::Error;
use super::protocol::{PeerClock, get_u8, get_u64, need};

/// The channel clock probes travel on.
pub const CLOCK_CHANNEL: ChannelId = ChannelId((1 << 20) + 2);

/// Ticks between two probes of every peer (with 20 ms ticks: every 1 s).
pub const PROBE_TICKS: u64 = 50;

/// The resolution of the nodes' clock reads (milliseconds): each of the
/// four timestamps can be up to this much early, so the bracket widens by
/// it on each side.
pub const RESOLUTION_NS: u64 = 1_000_000;

/// A clock probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// "What time is it?", sent at `t1` (the asker's clock, ns).
    Ask {
        /// When the ask was sent.
        t1: u64,
    },
    /// The answer: the ask's `t1`, when it arrived (`t2`) and when the
    /// answer left (`t3`), on the answering node's clock.
    Answer {
        /// The ask's `t1`.
        t1: u64,
        /// When the ask arrived.
        t2: u64,
        /// When the answer was sent.
        t3: u64,
    },
}

impl Probe {
    /// The frame payload.
    pub fn encode(&self) -> Bytes {
        let mut dst = BytesMut::with_capacity(25);
        match *self {
            Probe::Ask { t1 } => {
                dst.put_u8(1);
                dst.put_u64(t1);
            }
            Probe::Answer { t1, t2, t3 } => {
                dst.put_u8(2);
                for t in [t1, t2, t3] {
                    dst.put_u64(t);
                }
            }
        }
        dst.freeze()
    }

    /// Parses a frame payload.
    pub fn decode(mut src: Bytes) -> Result<Self, Error> {
        let probe = match get_u8(&mut src)? {
            1 => Probe::Ask {
                t1: get_u64(&mut src)?,
            },
            2 => {
                need(&src, 24)?;
                Probe::Answer {
                    t1: src.get_u64(),
                    t2: src.get_u64(),
                    t3: src.get_u64(),
                }
            }
            _ => return Err(Error::Malformed("unknown clock probe")),
        };
        super::protocol::finish(&src, probe)
    }
}

/// Every peer's clock as this node estimates it.
#[derive(Debug, Default)]
pub struct PeerClocks {
    estimators: HashMap<u64, OffsetEstimator>,
    /// The `t1` of the ask outstanding to each peer: only its answer is
    /// taken (one per ask), so a peer cannot stuff the filter.
    asked: HashMap<u64, u64>,
}

impl PeerClocks {
    /// Notes an ask to `peer` sent at `t1` (ns); returns the probe to send.
    pub fn ask(&mut self, peer: u64, t1: u64) -> Probe {
        self.asked.insert(peer, t1);
        Probe::Ask { t1 }
    }

    /// Takes `peer`'s answer, arrived at `t4` (ns). Answers to no
    /// outstanding ask, and impossible samples, are dropped.
    pub fn answer(&mut self, peer: u64, t1: u64, t2: u64, t3: u64, t4: u64) -> bool {
        if self.asked.get(&peer) != Some(&t1) {
            return false;
        }
        self.asked.remove(&peer);
        let Ok(sample) = Sample::new(t1, t2, t3, t4) else {
            return false;
        };
        let estimator = self.estimators.entry(peer).or_default();
        estimator.prune(t4);
        estimator.add(sample);
        true
    }

    /// The estimate for `peer` at `now` (ns), resolution included.
    pub fn peer(&self, peer: u64, now: u64) -> PeerClock {
        let estimator = self.estimators.get(&peer);
        let estimate = estimator.and_then(|e| e.estimate(now));
        let samples = estimator.map_or(0, |e| e.samples().len() as u32);
        match estimate {
            Some(e) => PeerClock {
                id: peer,
                offset_ns: e.offset_ns(),
                bound_ns: e.error_bound_ns().saturating_add(RESOLUTION_NS),
                delay_ns: e.delay_ns(),
                samples,
            },
            None => PeerClock {
                id: peer,
                bound_ns: u64::MAX,
                samples,
                ..PeerClock::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn probes_round_trip_and_refuse_truncation() {
        for p in [
            Probe::Ask { t1: 5 },
            Probe::Answer {
                t1: 1,
                t2: 2,
                t3: 3,
            },
        ] {
            let bytes = p.encode();
            assert_eq!(Probe::decode(bytes.clone()).unwrap(), p);
            for cut in 0..bytes.len() {
                assert!(Probe::decode(bytes.slice(..cut)).is_err());
            }
        }
    }

    #[test]
    fn estimates_a_skewed_peer_and_takes_only_answers_it_asked_for() {
        let mut clocks = PeerClocks::default();
        let t1 = 1_767_225_600_000 * MS;
        // The peer is 300 ms ahead; 2 ms each way.
        let (t2, t4) = (t1 + 302 * MS, t1 + 4 * MS);
        assert!(!clocks.answer(2, t1, t2, t2, t4), "never asked");
        clocks.ask(2, t1);
        assert!(!clocks.answer(2, t1 + 1, t2, t2, t4), "another t1");
        assert!(clocks.answer(2, t1, t2, t2, t4));
        assert!(!clocks.answer(2, t1, t2, t2, t4), "answered once");
        let c = clocks.peer(2, t4);
        assert_eq!(c.samples, 1);
        assert!(
            c.bound_ns >= 2 * MS + RESOLUTION_NS && c.bound_ns < 4 * MS,
            "{c:?}"
        );
        let low = c.offset_ns - c.bound_ns as i64;
        let high = c.offset_ns + c.bound_ns as i64;
        assert!((low..=high).contains(&(300 * MS as i64)), "{c:?}");
        assert_eq!(clocks.peer(3, t4).bound_ns, u64::MAX);
    }
}
