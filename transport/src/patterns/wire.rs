//! The messages the patterns exchange, and their byte encoding inside a
//! frame payload.
//!
//! Encoding: one tag byte, then the variant's fields in order; integers are
//! big-endian `u64`; variable byte strings (topics, identities, prefixes)
//! are a `u32` length then the bytes; the last `body` field takes the rest of
//! the payload without a length.

use alloc::vec::Vec;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::framing::{ChannelId, Frame};

/// Correlates a reply with its request. Unique per requester.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RequestId(pub u64);

/// One pattern message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Wire {
    /// Request/reply: a request awaiting a reply with the same id.
    Request {
        /// Correlation id.
        id: RequestId,
        /// Application payload.
        body: Bytes,
    },
    /// Request/reply: the answer to request `id`.
    Reply {
        /// Correlation id of the request answered.
        id: RequestId,
        /// Application payload.
        body: Bytes,
    },
    /// Push/pull: one pushed message, numbered per pusher-puller pair.
    Push {
        /// Sequence number, from 0.
        seq: u64,
        /// Application payload.
        body: Bytes,
    },
    /// Push/pull: the puller allows pushes with `seq < grant`. Absolute, so
    /// a lost, repeated or late credit is harmless.
    Credit {
        /// One past the highest sequence number received.
        high: u64,
        /// One past the last sequence number the pusher may send.
        grant: u64,
    },
    /// Push/pull: the pusher declares every push below `to` that the puller
    /// has not received lost.
    Skip {
        /// The pusher's next sequence number.
        to: u64,
    },
    /// Pub/sub: the subscriber's whole subscription set, replacing any with a
    /// lower version.
    Subscribe {
        /// Increases with every change at the subscriber.
        version: u64,
        /// Topic prefixes; an empty prefix matches everything.
        prefixes: Vec<Bytes>,
    },
    /// Pub/sub: a message on a topic.
    Publish {
        /// The topic.
        topic: Bytes,
        /// Application payload.
        body: Bytes,
    },
    /// Dealer/router: the dealer names itself to the router.
    Hello {
        /// The identity the router routes replies by.
        identity: Bytes,
    },
    /// Dealer/router: an application message either way.
    Data {
        /// Application payload.
        body: Bytes,
    },
}

/// What was wrong with a pattern message's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The payload was empty: no tag.
    #[error("empty pattern message")]
    Empty,
    /// The tag names no message.
    #[error("unknown pattern message tag {0}")]
    UnknownTag(u8),
    /// The payload ended inside a field.
    #[error("pattern message truncated: needed {needed} more bytes, {remaining} left")]
    Truncated {
        /// Bytes the field needed.
        needed: u64,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A subscription set claimed more prefixes than allowed.
    #[error("{count} subscription prefixes exceed the limit of {max}")]
    TooManyPrefixes {
        /// Claimed count.
        count: u64,
        /// The limit.
        max: usize,
    },
}

/// At most this many prefixes are decoded from one subscription message;
/// more is an error rather than an allocation the peer chose.
pub const MAX_WIRE_PREFIXES: usize = 4096;

const REQUEST: u8 = 1;
const REPLY: u8 = 2;
const PUSH: u8 = 3;
const CREDIT: u8 = 4;
const SUBSCRIBE: u8 = 5;
const PUBLISH: u8 = 6;
const HELLO: u8 = 7;
const DATA: u8 = 8;
const SKIP: u8 = 9;

impl Wire {
    /// Appends this message's encoding to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            Wire::Request { id, body } => {
                dst.put_u8(REQUEST);
                dst.put_u64(id.0);
                dst.extend_from_slice(body);
            }
            Wire::Reply { id, body } => {
                dst.put_u8(REPLY);
                dst.put_u64(id.0);
                dst.extend_from_slice(body);
            }
            Wire::Push { seq, body } => {
                dst.put_u8(PUSH);
                dst.put_u64(*seq);
                dst.extend_from_slice(body);
            }
            Wire::Credit { high, grant } => {
                dst.put_u8(CREDIT);
                dst.put_u64(*high);
                dst.put_u64(*grant);
            }
            Wire::Skip { to } => {
                dst.put_u8(SKIP);
                dst.put_u64(*to);
            }
            Wire::Subscribe { version, prefixes } => {
                dst.put_u8(SUBSCRIBE);
                dst.put_u64(*version);
                put_len(dst, prefixes.len());
                for p in prefixes {
                    put_bytes(dst, p);
                }
            }
            Wire::Publish { topic, body } => {
                dst.put_u8(PUBLISH);
                put_bytes(dst, topic);
                dst.extend_from_slice(body);
            }
            Wire::Hello { identity } => {
                dst.put_u8(HELLO);
                put_bytes(dst, identity);
            }
            Wire::Data { body } => {
                dst.put_u8(DATA);
                dst.extend_from_slice(body);
            }
        }
    }

    /// The bytes [`encode`](Self::encode) appends.
    pub(crate) fn encoded_len(&self) -> usize {
        const TAG: usize = 1;
        const U64: usize = 8;
        const LEN: usize = 4;
        TAG + match self {
            Wire::Request { body, .. } | Wire::Reply { body, .. } | Wire::Push { body, .. } => {
                U64 + body.len()
            }
            Wire::Credit { .. } => 2 * U64,
            Wire::Skip { .. } => U64,
            Wire::Subscribe { prefixes, .. } => {
                U64 + LEN + prefixes.iter().map(|p| LEN + p.len()).sum::<usize>()
            }
            Wire::Publish { topic, body } => LEN + topic.len() + body.len(),
            Wire::Hello { identity } => LEN + identity.len(),
            Wire::Data { body } => body.len(),
        }
    }

    /// This message encoded into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut buf = BytesMut::new();
        self.encode(&mut buf);
        buf.freeze()
    }

    /// This message as a frame on `channel`, ready for a frame transport.
    pub fn to_frame(&self, channel: ChannelId) -> Frame {
        Frame::new(channel, self.to_bytes())
    }

    /// Decodes a frame's payload (the caller has routed it by channel).
    pub fn from_frame(frame: &Frame) -> Result<Wire, WireError> {
        Wire::decode(frame.payload.clone())
    }

    /// Decodes one message from a whole payload. Fields share `src`'s
    /// memory; nothing is allocated on a length the peer claimed.
    pub fn decode(mut src: Bytes) -> Result<Wire, WireError> {
        if src.is_empty() {
            return Err(WireError::Empty);
        }
        let tag = src.get_u8();
        Ok(match tag {
            REQUEST => Wire::Request {
                id: RequestId(get_u64(&mut src)?),
                body: src,
            },
            REPLY => Wire::Reply {
                id: RequestId(get_u64(&mut src)?),
                body: src,
            },
            PUSH => Wire::Push {
                seq: get_u64(&mut src)?,
                body: src,
            },
            CREDIT => Wire::Credit {
                high: get_u64(&mut src)?,
                grant: get_u64(&mut src)?,
            },
            SKIP => Wire::Skip {
                to: get_u64(&mut src)?,
            },
            SUBSCRIBE => {
                let version = get_u64(&mut src)?;
                let count = get_u32(&mut src)?;
                if count as usize > MAX_WIRE_PREFIXES {
                    return Err(WireError::TooManyPrefixes {
                        count: u64::from(count),
                        max: MAX_WIRE_PREFIXES,
                    });
                }
                // Each prefix takes at least 4 bytes, so this bounds `count` by the input too.
                let mut prefixes = Vec::with_capacity((count as usize).min(src.len() / 4));
                for _ in 0..count {
                    prefixes.push(get_bytes(&mut src)?);
                }
                Wire::Subscribe { version, prefixes }
            }
            PUBLISH => Wire::Publish {
                topic: get_bytes(&mut src)?,
                body: src,
            },
            HELLO => Wire::Hello {
                identity: get_bytes(&mut src)?,
            },
            DATA => Wire::Data { body: src },
            other => return Err(WireError::UnknownTag(other)),
        })
    }
}

fn put_len(dst: &mut BytesMut, len: usize) {
    // Lengths come from our own values, all bounded far below 4 GiB by the
    // frame size limit; saturate rather than wrap if that ever fails.
    dst.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

fn put_bytes(dst: &mut BytesMut, b: &[u8]) {
    put_len(dst, b.len());
    dst.extend_from_slice(b);
}

fn need(src: &Bytes, needed: usize) -> Result<(), WireError> {
    if src.len() < needed {
        Err(WireError::Truncated {
            needed: needed as u64,
            remaining: src.len(),
        })
    } else {
        Ok(())
    }
}

fn get_u64(src: &mut Bytes) -> Result<u64, WireError> {
    need(src, 8)?;
    Ok(src.get_u64())
}

fn get_u32(src: &mut Bytes) -> Result<u32, WireError> {
    need(src, 4)?;
    Ok(src.get_u32())
}

fn get_bytes(src: &mut Bytes) -> Result<Bytes, WireError> {
    let len = get_u32(src)? as usize;
    need(src, len)?;
    Ok(src.split_to(len))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
    }

    pub(crate) fn wire() -> impl Strategy<Value = Wire> {
        prop_oneof![
            (any::<u64>(), bytes()).prop_map(|(i, body)| Wire::Request {
                id: RequestId(i),
                body
            }),
            (any::<u64>(), bytes()).prop_map(|(i, body)| Wire::Reply {
                id: RequestId(i),
                body
            }),
            (any::<u64>(), bytes()).prop_map(|(seq, body)| Wire::Push { seq, body }),
            (any::<u64>(), any::<u64>()).prop_map(|(high, grant)| Wire::Credit { high, grant }),
            any::<u64>().prop_map(|to| Wire::Skip { to }),
            (any::<u64>(), proptest::collection::vec(bytes(), 0..5))
                .prop_map(|(version, prefixes)| Wire::Subscribe { version, prefixes }),
            (bytes(), bytes()).prop_map(|(topic, body)| Wire::Publish { topic, body }),
            bytes().prop_map(|identity| Wire::Hello { identity }),
            bytes().prop_map(|body| Wire::Data { body }),
        ]
    }

    #[test]
    fn layout_of_a_publish() {
        let w = Wire::Publish {
            topic: Bytes::from_static(b"ab"),
            body: Bytes::from_static(b"xyz"),
        };
        // Hand-assembled: tag 6, u32 topic length 2, topic, body.
        assert_eq!(
            &w.to_bytes()[..],
            &[6, 0, 0, 0, 2, b'a', b'b', b'x', b'y', b'z'][..]
        );
    }

    #[test]
    fn malformed_inputs_are_typed_errors() {
        assert_eq!(Wire::decode(Bytes::new()), Err(WireError::Empty));
        assert_eq!(
            Wire::decode(Bytes::from_static(&[99])),
            Err(WireError::UnknownTag(99))
        );
        assert_eq!(
            Wire::decode(Bytes::from_static(&[CREDIT, 0, 0])),
            Err(WireError::Truncated {
                needed: 8,
                remaining: 2
            })
        );
        assert_eq!(
            Wire::decode(Bytes::from_static(&[HELLO, 0xff, 0xff, 0xff, 0xff, 1])),
            Err(WireError::Truncated {
                needed: u64::from(u32::MAX),
                remaining: 1
            })
        );
        let mut many = vec![SUBSCRIBE, 0, 0, 0, 0, 0, 0, 0, 0];
        many.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            Wire::decode(Bytes::from(many)),
            Err(WireError::TooManyPrefixes {
                count: u64::from(u32::MAX),
                max: MAX_WIRE_PREFIXES
            })
        );
    }

    proptest! {
        #[test]
        fn round_trips(w in wire()) {
            prop_assert_eq!(Wire::decode(w.to_bytes()).unwrap(), w);
        }

        #[test]
        fn encoded_len_is_what_encode_appends(w in wire()) {
            let mut buf = BytesMut::from(&b"before"[..]);
            w.encode(&mut buf);
            prop_assert_eq!(w.encoded_len(), buf.len() - b"before".len());
        }

        #[test]
        fn garbage_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Wire::decode(Bytes::from(b));
        }
    }
}
