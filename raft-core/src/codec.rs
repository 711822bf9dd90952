//! A compact binary wire format for [`Message`], as a `quorate-transport`
//! [`Codec`] (feature `codec`). Decoding is total: malformed bytes give a
//! [`CodecError`] saying what was wrong, never a panic, and entry payloads
//! are zero-copy slices of the received frame.
//!
//! Layout (big-endian): version `1`, `from`, `to`, `term` (u64 each), a
//! kind byte, then the kind's fields. Entries carry their term and payload;
//! their indices follow from `prev_log_index`, so a non-contiguous batch
//! cannot even be encoded. An InstallSnapshot whose configuration has
//! witnesses ends with the witness set after the data (absent otherwise,
//! so frames without witnesses are unchanged and older frames still read).

use crate::config::Configuration;
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::storage::SnapshotMeta;
use crate::types::{Entry, LogIndex, NodeId, Term};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_transport::codec::Codec;

const VERSION: u8 = 1;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The frame ended early.
    #[error("truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes left in the frame.
        remaining: usize,
    },
    /// An unknown format version.
    #[error("unknown wire format version {0}")]
    UnknownVersion(u8),
    /// An unknown message or outcome kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// A boolean byte other than 0 or 1.
    #[error("invalid boolean byte {0}")]
    InvalidBool(u8),
    /// More entries announced than the frame can hold.
    #[error("{count} entries announced, the frame holds at most {max}")]
    TooManyEntries {
        /// The announced count.
        count: u32,
        /// What the remaining bytes could hold.
        max: usize,
    },
    /// An entry index past `u64::MAX`.
    #[error("entry indices overflow")]
    IndexOverflow,
    /// A snapshot's configuration names a witness that is not a voter.
    #[error("a witness of the snapshot's configuration is not a voter")]
    WitnessNotAVoter,
    /// Bytes after the end of the message.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

/// The [`Codec`] for Raft messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageCodec;

impl Codec for MessageCodec {
    type Message = Message;
    type Error = CodecError;

    fn encode(&self, msg: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode(msg, dst);
        Ok(())
    }

    fn decode(&self, src: Bytes) -> Result<Message, CodecError> {
        decode(src)
    }
}

/// Appends the wire form of `m` to `dst`.
pub fn encode(m: &Message, dst: &mut BytesMut) {
    dst.put_u8(VERSION);
    dst.put_u64(m.from.0);
    dst.put_u64(m.to.0);
    dst.put_u64(m.term.0);
    match &m.body {
        MessageBody::RequestVote {
            last_log_index,
            last_log_term,
            leadership_transfer,
        } => {
            dst.put_u8(0);
            dst.put_u64(last_log_index.0);
            dst.put_u64(last_log_term.0);
            dst.put_u8(u8::from(*leadership_transfer));
        }
        MessageBody::TimeoutNow => dst.put_u8(8),
        MessageBody::InstallSnapshot {
            meta,
            offset,
            data,
            done,
        } => {
            dst.put_u8(10);
            dst.put_u64(meta.index.0);
            dst.put_u64(meta.term.0);
            let voters = meta.configuration.voters();
            let learners = meta.configuration.learners();
            dst.put_u32(voters.len() as u32);
            voters.iter().for_each(|v| dst.put_u64(v.0));
            dst.put_u32(learners.len() as u32);
            learners.iter().for_each(|l| dst.put_u64(l.0));
            // A snapshot may end inside a joint membership change.
            let outgoing = meta.configuration.outgoing();
            dst.put_u32(outgoing.len() as u32);
            outgoing.iter().for_each(|o| dst.put_u64(o.0));
            dst.put_u64(*offset);
            dst.put_u8(u8::from(*done));
            dst.put_u32(data.len() as u32);
            dst.put_slice(data);
            let witnesses = meta.configuration.witnesses();
            if !witnesses.is_empty() {
                dst.put_u32(witnesses.len() as u32);
                witnesses.iter().for_each(|w| dst.put_u64(w.0));
            }
        }
        MessageBody::InstallSnapshotResponse { index, received } => {
            dst.put_u8(11);
            dst.put_u64(index.0);
            dst.put_u64(*received);
        }
        MessageBody::ForwardedProposal { commands } => {
            dst.put_u8(9);
            dst.put_u32(commands.len() as u32);
            for c in commands {
                dst.put_u32(c.len() as u32);
                dst.put_slice(c);
            }
        }
        MessageBody::RequestVoteResponse { granted } => {
            dst.put_u8(1);
            dst.put_u8(u8::from(*granted));
        }
        MessageBody::AppendEntries {
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
        } => {
            dst.put_u8(2);
            dst.put_u64(prev_log_index.0);
            dst.put_u64(prev_log_term.0);
            dst.put_u64(leader_commit.0);
            dst.put_u32(entries.len() as u32);
            for e in entries {
                dst.put_u64(e.term.0);
                dst.put_u32(e.data.len() as u32);
                dst.put_slice(&e.data);
            }
        }
        MessageBody::AppendEntriesResponse { outcome } => {
            dst.put_u8(3);
            match outcome {
                AppendOutcome::Success { match_index } => {
                    dst.put_u8(0);
                    dst.put_u64(match_index.0);
                }
                AppendOutcome::Conflict {
                    rejected_index,
                    conflict_term,
                    first_index,
                } => {
                    dst.put_u8(1);
                    dst.put_u64(rejected_index.0);
                    dst.put_u8(u8::from(conflict_term.is_some()));
                    dst.put_u64(conflict_term.map_or(0, |t| t.0));
                    dst.put_u64(first_index.0);
                }
                AppendOutcome::Received { match_index } => {
                    dst.put_u8(2);
                    dst.put_u64(match_index.0);
                }
            }
        }
        MessageBody::Heartbeat {
            commit,
            round,
            quiesce,
        } => {
            // A quiescing heartbeat has its own kind, so the plain one
            // keeps its encoding.
            dst.put_u8(if *quiesce { 12 } else { 4 });
            dst.put_u64(commit.0);
            dst.put_u64(*round);
        }
        MessageBody::HeartbeatResponse { round } => {
            dst.put_u8(5);
            dst.put_u64(*round);
        }
        MessageBody::PreVote {
            last_log_index,
            last_log_term,
        } => {
            dst.put_u8(6);
            dst.put_u64(last_log_index.0);
            dst.put_u64(last_log_term.0);
        }
        MessageBody::PreVoteResponse { granted } => {
            dst.put_u8(7);
            dst.put_u8(u8::from(*granted));
        }
    }
}

/// Reads fields off a frame, failing with [`CodecError::Truncated`].
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.0.remaining() < n {
            return Err(CodecError::Truncated {
                needed: n,
                remaining: self.0.remaining(),
            });
        }
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }

    fn bool(&mut self) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(CodecError::InvalidBool(b)),
        }
    }

    /// A count-prefixed list of node ids; the count is checked against
    /// the bytes left before allocating.
    fn ids(&mut self) -> Result<Vec<NodeId>, CodecError> {
        let count = self.u32()?;
        let max = self.0.remaining() / 8;
        if count as usize > max {
            return Err(CodecError::TooManyEntries { count, max });
        }
        (0..count).map(|_| self.u64().map(NodeId)).collect()
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, CodecError> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
}

/// Parses one message from the whole of `src`.
pub fn decode(src: Bytes) -> Result<Message, CodecError> {
    let mut r = Reader(src);
    let version = r.u8()?;
    if version != VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let from = NodeId(r.u64()?);
    let to = NodeId(r.u64()?);
    let term = Term(r.u64()?);
    let body = match r.u8()? {
        0 => MessageBody::RequestVote {
            last_log_index: LogIndex(r.u64()?),
            last_log_term: Term(r.u64()?),
            leadership_transfer: r.bool()?,
        },
        8 => MessageBody::TimeoutNow,
        10 => {
            let index = LogIndex(r.u64()?);
            let term = Term(r.u64()?);
            let voters = r.ids()?;
            let learners = r.ids()?;
            let outgoing = r.ids()?;
            let offset = r.u64()?;
            let done = r.bool()?;
            let len = r.u32()? as usize;
            let data = r.bytes(len)?;
            let witnesses = if r.0.has_remaining() {
                r.ids()?
            } else {
                Vec::new()
            };
            let configuration = Configuration::from_sets(
                voters.into_iter().collect(),
                learners.into_iter().collect(),
                outgoing.into_iter().collect(),
                witnesses.into_iter().collect(),
            )
            .ok_or(CodecError::WitnessNotAVoter)?;
            MessageBody::InstallSnapshot {
                meta: Box::new(SnapshotMeta {
                    index,
                    term,
                    configuration,
                }),
                offset,
                done,
                data,
            }
        }
        11 => MessageBody::InstallSnapshotResponse {
            index: LogIndex(r.u64()?),
            received: r.u64()?,
        },
        9 => {
            let count = r.u32()?;
            // Each command takes at least its 4-byte length.
            let max = r.0.remaining() / 4;
            if count as usize > max {
                return Err(CodecError::TooManyEntries { count, max });
            }
            let mut commands = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let len = r.u32()? as usize;
                commands.push(r.bytes(len)?);
            }
            MessageBody::ForwardedProposal { commands }
        }
        1 => MessageBody::RequestVoteResponse { granted: r.bool()? },
        2 => {
            let prev_log_index = LogIndex(r.u64()?);
            let prev_log_term = Term(r.u64()?);
            let leader_commit = LogIndex(r.u64()?);
            let count = r.u32()?;
            // Each entry takes at least 12 bytes: refuse a forged count
            // before allocating for it.
            let max = r.0.remaining() / 12;
            if count as usize > max {
                return Err(CodecError::TooManyEntries { count, max });
            }
            let mut entries = Vec::with_capacity(count as usize);
            let mut index = prev_log_index;
            for _ in 0..count {
                index = LogIndex(index.0.checked_add(1).ok_or(CodecError::IndexOverflow)?);
                let term = Term(r.u64()?);
                let len = r.u32()? as usize;
                entries.push(Entry {
                    term,
                    index,
                    data: r.bytes(len)?,
                });
            }
            MessageBody::AppendEntries {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            }
        }
        3 => {
            let outcome = match r.u8()? {
                0 => AppendOutcome::Success {
                    match_index: LogIndex(r.u64()?),
                },
                1 => {
                    let rejected_index = LogIndex(r.u64()?);
                    let has_term = r.bool()?;
                    let conflict_term = Term(r.u64()?);
                    AppendOutcome::Conflict {
                        rejected_index,
                        conflict_term: has_term.then_some(conflict_term),
                        first_index: LogIndex(r.u64()?),
                    }
                }
                2 => AppendOutcome::Received {
                    match_index: LogIndex(r.u64()?),
                },
                k => return Err(CodecError::UnknownKind(k)),
            };
            MessageBody::AppendEntriesResponse { outcome }
        }
        kind @ (4 | 12) => MessageBody::Heartbeat {
            commit: LogIndex(r.u64()?),
            round: r.u64()?,
            quiesce: kind == 12,
        },
        5 => MessageBody::HeartbeatResponse { round: r.u64()? },
        6 => MessageBody::PreVote {
            last_log_index: LogIndex(r.u64()?),
            last_log_term: Term(r.u64()?),
        },
        7 => MessageBody::PreVoteResponse { granted: r.bool()? },
        k => return Err(CodecError::UnknownKind(k)),
    };
    if r.0.has_remaining() {
        return Err(CodecError::TrailingBytes(r.0.remaining()));
    }
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: &Message) -> Message {
        let mut buf = BytesMut::new();
        MessageCodec.encode(m, &mut buf).unwrap();
        MessageCodec.decode(buf.freeze()).unwrap()
    }

    fn msg(body: MessageBody) -> Message {
        Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(7),
            body,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let entries = vec![
            Entry {
                term: Term(6),
                index: LogIndex(11),
                data: Bytes::from_static(b"put x 1"),
            },
            Entry {
                term: Term(7),
                index: LogIndex(12),
                data: Bytes::new(),
            },
        ];
        for body in [
            MessageBody::RequestVote {
                last_log_index: LogIndex(3),
                last_log_term: Term(2),
                leadership_transfer: true,
            },
            MessageBody::TimeoutNow,
            MessageBody::InstallSnapshot {
                meta: Box::new(SnapshotMeta {
                    index: LogIndex(40),
                    term: Term(3),
                    configuration: Configuration::new([NodeId(1), NodeId(2), NodeId(4)]).joint_to(
                        &Configuration::new([NodeId(1), NodeId(2), NodeId(3)])
                            .with_learners([NodeId(9)]),
                    ),
                }),
                offset: 4096,
                data: Bytes::from_static(b"state"),
                done: true,
            },
            MessageBody::InstallSnapshotResponse {
                index: LogIndex(40),
                received: 4101,
            },
            MessageBody::ForwardedProposal {
                commands: vec![Bytes::from_static(b"a"), Bytes::new()],
            },
            MessageBody::RequestVoteResponse { granted: true },
            MessageBody::AppendEntries {
                prev_log_index: LogIndex(10),
                prev_log_term: Term(6),
                entries,
                leader_commit: LogIndex(9),
            },
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Success {
                    match_index: LogIndex(12),
                },
            },
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Received {
                    match_index: LogIndex(12),
                },
            },
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Conflict {
                    rejected_index: LogIndex(10),
                    conflict_term: Some(Term(4)),
                    first_index: LogIndex(8),
                },
            },
            MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Conflict {
                    rejected_index: LogIndex(10),
                    conflict_term: None,
                    first_index: LogIndex(5),
                },
            },
            MessageBody::Heartbeat {
                commit: LogIndex(4),
                round: 9,
                quiesce: false,
            },
            MessageBody::Heartbeat {
                commit: LogIndex(4),
                round: 9,
                quiesce: true,
            },
            MessageBody::HeartbeatResponse { round: 9 },
            MessageBody::PreVote {
                last_log_index: LogIndex(3),
                last_log_term: Term(2),
            },
            MessageBody::PreVoteResponse { granted: false },
        ] {
            let m = msg(body);
            assert_eq!(round_trip(&m), m);
        }
    }

    #[test]
    fn snapshots_carry_witnesses_and_frames_without_them_are_unchanged() {
        let snapshot = |configuration| {
            msg(MessageBody::InstallSnapshot {
                meta: Box::new(SnapshotMeta {
                    index: LogIndex(40),
                    term: Term(3),
                    configuration,
                }),
                offset: 0,
                data: Bytes::new(),
                done: true,
            })
        };
        let plain = Configuration::new([NodeId(1), NodeId(2)]);
        let with = plain.clone().with_witnesses([NodeId(3)]);
        let m = snapshot(with);
        assert_eq!(round_trip(&m), m);
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        encode(&snapshot(plain.clone().with_learners([NodeId(3)])), &mut a);
        encode(&m, &mut b);
        // Same sets (3 as a learner instead), plus the trailing witness
        // set: a 4-byte count and one 8-byte id.
        assert_eq!(b.len(), a.len() + 12);
        let mut plain_frame = BytesMut::new();
        encode(&snapshot(plain), &mut plain_frame);
        // Without witnesses the frame ends with the (empty) data.
        assert_eq!(&plain_frame[plain_frame.len() - 5..], &[1, 0, 0, 0, 0]);
    }

    #[test]
    fn known_layout_of_a_heartbeat() {
        // Hand-assembled: version 1, from 1, to 2, term 7, kind 4, commit 4,
        // round 9.
        let mut expected = vec![1u8];
        for v in [1u64, 2, 7] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        expected.push(4);
        expected.extend_from_slice(&4u64.to_be_bytes());
        expected.extend_from_slice(&9u64.to_be_bytes());
        let mut buf = BytesMut::new();
        encode(
            &msg(MessageBody::Heartbeat {
                commit: LogIndex(4),
                round: 9,
                quiesce: false,
            }),
            &mut buf,
        );
        assert_eq!(&buf[..], &expected[..]);
    }

    #[test]
    fn known_layout_of_a_received_ack() {
        // Hand-assembled: version 1, from 1, to 2, term 7, kind 3 (append
        // response), outcome 2 (received), match index 12.
        let mut expected = vec![1u8];
        for v in [1u64, 2, 7] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        expected.extend_from_slice(&[3, 2]);
        expected.extend_from_slice(&12u64.to_be_bytes());
        let mut buf = BytesMut::new();
        encode(
            &msg(MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Received {
                    match_index: LogIndex(12),
                },
            }),
            &mut buf,
        );
        assert_eq!(&buf[..], &expected[..]);
        assert_eq!(
            decode(buf.freeze()),
            Ok(msg(MessageBody::AppendEntriesResponse {
                outcome: AppendOutcome::Received {
                    match_index: LogIndex(12)
                },
            }))
        );
    }

    #[test]
    fn malformed_frames_are_typed_errors() {
        let mut buf = BytesMut::new();
        encode(&msg(MessageBody::HeartbeatResponse { round: 1 }), &mut buf);
        let good = buf.freeze();
        assert!(matches!(
            decode(good.slice(..10)),
            Err(CodecError::Truncated { .. })
        ));
        let mut bad = good.to_vec();
        bad[0] = 9;
        assert_eq!(decode(bad.into()), Err(CodecError::UnknownVersion(9)));
        let mut bad = good.to_vec();
        bad[25] = 42;
        assert_eq!(decode(bad.into()), Err(CodecError::UnknownKind(42)));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(decode(long.into()), Err(CodecError::TrailingBytes(1)));
        // A forged entry count is refused without allocating for it.
        let mut forged = BytesMut::new();
        encode(
            &msg(MessageBody::AppendEntries {
                prev_log_index: LogIndex(0),
                prev_log_term: Term(0),
                entries: Vec::new(),
                leader_commit: LogIndex(0),
            }),
            &mut forged,
        );
        let n = forged.len();
        forged[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode(forged.freeze()),
            Err(CodecError::TooManyEntries { .. })
        ));
    }
}
