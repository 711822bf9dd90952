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
//!
//! A [`Batch`] (the [`multi`](crate::multi) layer's messages of many groups
//! between two servers) has a layout of its own ([`encode_batch`],
//! [`decode_batch`]): version `2`, `from`, `to`, `incarnation` (u64 each),
//! a message count (u32), then per message its group and its length as
//! LEB128 varints and the message from its term on (its addresses are the
//! batch's). A heartbeat of one group costs 27 bytes in a batch, against
//! 42 as a message of its own.

use crate::config::Configuration;
use crate::message::{AppendOutcome, Message, MessageBody};
use crate::multi::{Batch, GroupId};
use crate::storage::SnapshotMeta;
use crate::types::{Entry, LogIndex, NodeId, Term};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use quorate_transport::codec::Codec;

const VERSION: u8 = 1;
/// The batch layout's version: distinct from a message's, so neither is
/// ever read as the other.
const BATCH_VERSION: u8 = 2;
/// The fewest bytes a message takes in a batch: a one-byte group, a
/// one-byte length, the term and the kind.
const MIN_BATCHED_MESSAGE: usize = 1 + 1 + 8 + 1;

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
    /// A batch announcing more messages than allowed
    /// ([`decode_batch`]'s `max_messages`) or than its bytes can hold.
    #[error("{count} messages announced, at most {max} accepted")]
    TooManyMessages {
        /// The announced count.
        count: u32,
        /// The lesser of the cap and what the remaining bytes could hold.
        max: usize,
    },
    /// A variable-length integer longer than 10 bytes or past `u64::MAX`.
    #[error("malformed variable-length integer")]
    InvalidVarint,
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
    encode_term_body(m, dst);
}

/// The part of a message after its addresses: term, kind, fields.
fn encode_term_body(m: &Message, dst: &mut BytesMut) {
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
    let (term, body) = decode_term_body(&mut r)?;
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

/// Reads a message's term, kind and fields: the rest of `r`, which must
/// end with them.
fn decode_term_body(r: &mut Reader) -> Result<(Term, MessageBody), CodecError> {
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
    Ok((term, body))
}

/// The most messages [`decode_batch`] accepts in one batch unless told
/// otherwise: a round of heartbeats and answers for this many groups.
pub const MAX_BATCH_MESSAGES: usize = 1 << 16;

/// Bytes the batch header takes: version, from, to, incarnation, count.
pub const BATCH_HEADER_LEN: usize = 1 + 8 + 8 + 8 + 4;

fn put_varint(mut v: u64, dst: &mut BytesMut) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Bytes one message takes inside a batch: its group, its length and the
/// message from its term on.
pub fn batched_len(group: GroupId, m: &Message) -> usize {
    let body = term_body_len(m);
    varint_len(group.0) + varint_len(body as u64) + body
}

/// Bytes [`encode`] writes for `m`.
pub fn encoded_len(m: &Message) -> usize {
    1 + 8 + 8 + term_body_len(m)
}

/// Bytes `encode_term_body` writes for `m` (kept next to it: a test
/// checks every kind).
fn term_body_len(m: &Message) -> usize {
    let ids = |n: usize| 4 + 8 * n;
    8 + 1
        + match &m.body {
            MessageBody::RequestVote { .. } => 17,
            MessageBody::TimeoutNow => 0,
            MessageBody::InstallSnapshot { meta, data, .. } => {
                let c = &meta.configuration;
                let witnesses = c.witnesses().len();
                16 + ids(c.voters().len())
                    + ids(c.learners().len())
                    + ids(c.outgoing().len())
                    + 8
                    + 1
                    + 4
                    + data.len()
                    + if witnesses > 0 { ids(witnesses) } else { 0 }
            }
            MessageBody::InstallSnapshotResponse { .. } => 16,
            MessageBody::ForwardedProposal { commands } => {
                4 + commands.iter().map(|c| 4 + c.len()).sum::<usize>()
            }
            MessageBody::RequestVoteResponse { .. } | MessageBody::PreVoteResponse { .. } => 1,
            MessageBody::AppendEntries { entries, .. } => {
                28 + entries.iter().map(|e| 12 + e.data.len()).sum::<usize>()
            }
            MessageBody::AppendEntriesResponse { outcome } => match outcome {
                AppendOutcome::Success { .. } | AppendOutcome::Received { .. } => 9,
                AppendOutcome::Conflict { .. } => 26,
            },
            MessageBody::Heartbeat { .. } | MessageBody::PreVote { .. } => 16,
            MessageBody::HeartbeatResponse { .. } => 8,
        }
}

/// Appends the wire form of `batch` to `dst` (see the [module
/// docs](self)). Each message's own `from` and `to` are not written: the
/// decoder gives every message the batch's, as [`MultiRaft::step`]
/// requires of them anyway. A batch of more than `u32::MAX` messages is
/// cut there.
///
/// [`MultiRaft::step`]: crate::multi::MultiRaft::step
pub fn encode_batch(batch: &Batch, dst: &mut BytesMut) {
    let count = batch.messages.len().min(u32::MAX as usize);
    dst.put_u8(BATCH_VERSION);
    dst.put_u64(batch.from.0);
    dst.put_u64(batch.to.0);
    dst.put_u64(batch.incarnation);
    dst.put_u32(count as u32);
    for (group, m) in batch.messages.iter().take(count) {
        put_varint(group.0, dst);
        put_varint(term_body_len(m) as u64, dst);
        encode_term_body(m, dst);
    }
}

impl Reader {
    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            // The tenth byte may only carry the top bit of a u64.
            if i == 9 && b > 1 {
                return Err(CodecError::InvalidVarint);
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::InvalidVarint)
    }
}

/// Parses one batch from the whole of `src`, accepting at most
/// `max_messages` messages ([`MAX_BATCH_MESSAGES`] is a safe default).
/// What it allocates is bounded by the bytes it reads: the message count is
/// checked against the cap and against the bytes left before anything is
/// allocated for it, and entry payloads are slices of `src`. Malformed
/// bytes give a [`CodecError`], never a panic.
pub fn decode_batch(src: Bytes, max_messages: usize) -> Result<Batch, CodecError> {
    let mut r = Reader(src);
    let version = r.u8()?;
    if version != BATCH_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let from = NodeId(r.u64()?);
    let to = NodeId(r.u64()?);
    let incarnation = r.u64()?;
    let count = r.u32()?;
    let max = max_messages.min(r.0.remaining() / MIN_BATCHED_MESSAGE);
    if count as usize > max {
        return Err(CodecError::TooManyMessages { count, max });
    }
    let mut messages = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let group = GroupId(r.varint()?);
        let len = usize::try_from(r.varint()?).unwrap_or(usize::MAX);
        let mut body = Reader(r.bytes(len)?);
        let (term, body) = decode_term_body(&mut body)?;
        messages.push((
            group,
            Message {
                from,
                to,
                term,
                body,
            },
        ));
    }
    if r.0.has_remaining() {
        return Err(CodecError::TrailingBytes(r.0.remaining()));
    }
    Ok(Batch {
        from,
        to,
        incarnation,
        messages,
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
        for body in all_bodies() {
            let m = msg(body);
            assert_eq!(round_trip(&m), m);
            let mut buf = BytesMut::new();
            encode(&m, &mut buf);
            assert_eq!(encoded_len(&m), buf.len(), "{m:?}");
        }
    }

    fn batch(messages: Vec<(GroupId, Message)>) -> Batch {
        Batch {
            from: NodeId(1),
            to: NodeId(2),
            incarnation: 0xfeed,
            messages,
        }
    }

    fn encoded_batch(b: &Batch) -> Bytes {
        let mut buf = BytesMut::new();
        encode_batch(b, &mut buf);
        buf.freeze()
    }

    #[test]
    fn batches_of_every_kind_round_trip_and_are_sized_exactly() {
        let groups = [0u64, 1, 127, 128, 300, u64::MAX];
        let messages: Vec<(GroupId, Message)> = all_bodies()
            .into_iter()
            .enumerate()
            .map(|(i, body)| (GroupId(groups[i % groups.len()]), msg(body)))
            .collect();
        let b = batch(messages);
        let bytes = encoded_batch(&b);
        let sized: usize = b.messages.iter().map(|(g, m)| batched_len(*g, m)).sum();
        assert_eq!(bytes.len(), BATCH_HEADER_LEN + sized);
        assert_eq!(decode_batch(bytes, MAX_BATCH_MESSAGES), Ok(b.clone()));
        // An empty batch is a liveness beat: just the header.
        let beat = batch(Vec::new());
        let bytes = encoded_batch(&beat);
        assert_eq!(bytes.len(), BATCH_HEADER_LEN);
        assert_eq!(decode_batch(bytes, 0), Ok(beat));
        // A snapshot with witnesses ends with them: inside a batch its
        // length tells where it ends.
        let with_witness = msg(MessageBody::InstallSnapshot {
            meta: Box::new(SnapshotMeta {
                index: LogIndex(4),
                term: Term(3),
                configuration: Configuration::new([NodeId(1), NodeId(2), NodeId(3)])
                    .with_witnesses([NodeId(3)]),
            }),
            offset: 0,
            data: Bytes::from_static(b"s"),
            done: true,
        });
        let hb = msg(MessageBody::HeartbeatResponse { round: 1 });
        let b = batch(vec![(GroupId(5), with_witness), (GroupId(6), hb)]);
        assert_eq!(decode_batch(encoded_batch(&b), 2), Ok(b));
    }

    #[test]
    fn a_batched_heartbeat_is_small() {
        let hb = msg(MessageBody::Heartbeat {
            commit: LogIndex(4),
            round: 9,
            quiesce: false,
        });
        // Group 1, length 25, term, kind, commit, round.
        assert_eq!(batched_len(GroupId(1), &hb), 27);
        assert!(batched_len(GroupId(1), &hb) < encoded_len(&hb));
    }

    #[test]
    fn malformed_batches_are_typed_errors() {
        let hb = |round| msg(MessageBody::HeartbeatResponse { round });
        let good = encoded_batch(&batch(vec![(GroupId(1), hb(1)), (GroupId(2), hb(2))]));
        for cut in 0..good.len() {
            assert!(decode_batch(good.slice(..cut), 10).is_err(), "cut at {cut}");
        }
        assert_eq!(
            decode_batch(good.clone(), 1),
            Err(CodecError::TooManyMessages { count: 2, max: 1 })
        );
        let mut bad = good.to_vec();
        bad[0] = 1;
        assert_eq!(
            decode_batch(bad.into(), 10),
            Err(CodecError::UnknownVersion(1))
        );
        // A single message is no batch, nor a batch a message.
        let mut single = BytesMut::new();
        encode(&hb(1), &mut single);
        assert_eq!(
            decode_batch(single.freeze(), 10),
            Err(CodecError::UnknownVersion(VERSION))
        );
        assert_eq!(
            decode(good.clone()),
            Err(CodecError::UnknownVersion(BATCH_VERSION))
        );
        // A forged count is refused before anything is allocated for it.
        let mut forged = good.to_vec();
        forged[25..29].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            decode_batch(forged.into(), usize::MAX),
            Err(CodecError::TooManyMessages {
                count: u32::MAX,
                ..
            })
        ));
        // A varint of eleven continuation bytes.
        let mut forged = good[..BATCH_HEADER_LEN].to_vec();
        forged[25..29].copy_from_slice(&1u32.to_be_bytes());
        forged.extend_from_slice(&[0xff; 11]);
        forged.extend_from_slice(&[0; 16]);
        assert_eq!(
            decode_batch(forged.into(), 10),
            Err(CodecError::InvalidVarint)
        );
        // A message length past the end.
        let mut forged = good[..BATCH_HEADER_LEN].to_vec();
        forged[25..29].copy_from_slice(&1u32.to_be_bytes());
        forged.extend_from_slice(&[1, 0x7f]);
        forged.extend_from_slice(&[0; 16]);
        assert!(matches!(
            decode_batch(forged.into(), 10),
            Err(CodecError::Truncated { .. })
        ));
        // Bytes left inside a message, and after the last one.
        let mut inner = good[..BATCH_HEADER_LEN].to_vec();
        inner[25..29].copy_from_slice(&1u32.to_be_bytes());
        inner.extend_from_slice(&[1, 18]);
        inner.extend_from_slice(&7u64.to_be_bytes());
        inner.push(5);
        inner.extend_from_slice(&1u64.to_be_bytes());
        inner.push(0);
        assert_eq!(
            decode_batch(inner.into(), 10),
            Err(CodecError::TrailingBytes(1))
        );
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(
            decode_batch(long.into(), 10),
            Err(CodecError::TrailingBytes(1))
        );
    }

    fn all_bodies() -> Vec<MessageBody> {
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
        vec![
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
        ]
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
