//! The decoders of bytes from peers — [`FrameCodec::decode`] (the
//! length-prefixed framing) and [`Wire::decode`] (the patterns' messages)
//! — fed huge declared lengths and counts (`u32::MAX`, one past the
//! maximum), input truncated after a large header, and random bytes,
//! return a value, `Ok(None)` or a typed error, never panic, and never
//! allocate on a length the peer claimed. With the `serde` feature, the
//! derived deserializers of the public types are held to the same cap.
//!
//! **The cap.** Every byte allocated while one input of `n` bytes is
//! decoded, in all, is at most `64 × n + 4 KiB`; the framing decoder,
//! which splits payloads off the caller's buffer without copying, is held
//! to 4 KiB whatever the input.
//!
//! Counted by a global allocator that counts every thread, so this binary
//! has one test, which runs the cases one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quorate_transport::framing::{
    ChannelId, DEFAULT_MAX_FRAME_SIZE, Frame, FrameCodec, FrameError, HEADER_LEN,
};
use quorate_transport::patterns::{MAX_WIRE_PREFIXES, RequestId, Wire, WireError};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SLACK: usize = 4096;

/// Bytes decoding `n` input bytes may cost: 64 per byte and 4 KiB.
fn cap(n: usize) -> usize {
    64 * n + SLACK
}

/// The bytes allocated while `f` runs, in all.
fn allocated<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    let grown = usize::try_from(change.bytes_reallocated).unwrap_or(0);
    (out, change.bytes_allocated + grown)
}

/// [`Wire::decode`] of `input`, checked against the cap.
fn wire(case: &str, input: &[u8]) -> Result<Wire, WireError> {
    let src = Bytes::copy_from_slice(input);
    // Shares the buffer now, so that the clones below allocate nothing.
    drop(src.clone());
    // The harness's own thread may allocate meanwhile (the counter counts
    // every thread): of two runs the lesser count is kept, as an
    // allocation of the decoder's shows in both.
    let (_, first) = allocated(|| Wire::decode(src.clone()));
    let (out, second) = allocated(|| Wire::decode(src.clone()));
    let bytes = first.min(second);
    assert!(
        bytes <= cap(input.len()),
        "{case}: Wire::decode allocated {bytes} bytes for {} input bytes",
        input.len()
    );
    out
}

/// [`FrameCodec::decode`] of what `buf` holds, checked against 4 KiB.
fn frame(case: &str, codec: &FrameCodec, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let (out, bytes) = allocated(|| codec.decode(buf));
    assert!(
        bytes <= SLACK,
        "{case}: FrameCodec::decode allocated {bytes} bytes"
    );
    out
}

/// A frame header claiming `len` payload bytes on channel 1, no flags.
fn header(len: u32) -> BytesMut {
    let mut buf = BytesMut::with_capacity(HEADER_LEN);
    buf.put_u32(len);
    buf.put_u32(1);
    buf.put_u8(0);
    buf
}

/// The tag byte a message kind is encoded with.
fn tag(w: Wire) -> u8 {
    w.to_bytes()[0]
}

#[test]
fn hostile_bytes_cost_at_most_the_cap() {
    // Framing: a huge claimed length is refused from the header alone.
    let codec = FrameCodec::new();
    for len in [u32::MAX, DEFAULT_MAX_FRAME_SIZE as u32 + 1] {
        let mut buf = header(len);
        buf.extend_from_slice(&[7; 100]);
        let before = buf.len();
        assert!(matches!(
            frame("huge length", &codec, &mut buf),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(buf.len(), before, "the buffer is left untouched");
    }
    // At the maximum, truncated after the header: more bytes needed, and
    // nothing is reserved for the claimed 8 MiB meanwhile.
    let mut buf = header(DEFAULT_MAX_FRAME_SIZE as u32);
    let capacity = buf.capacity();
    for _ in 0..3 {
        assert_eq!(frame("truncated", &codec, &mut buf), Ok(None));
        buf.extend_from_slice(&[1; 1000]);
    }
    assert!(buf.capacity() < capacity + 8192, "{}", buf.capacity());
    for cut in 0..HEADER_LEN {
        let mut short = header(5);
        short.truncate(cut);
        assert_eq!(frame("short header", &codec, &mut short), Ok(None));
    }
    // A small maximum refuses what the default accepts.
    let small = FrameCodec::with_max_frame_size(16);
    let mut buf = header(17);
    assert!(frame("small max", &small, &mut buf).is_err());
    // Unknown flags.
    let mut buf = header(0);
    buf[8] = 0xff;
    assert!(matches!(
        frame("flags", &codec, &mut buf),
        Err(FrameError::UnknownFlags { .. })
    ));
    // Many whole frames back to back: each is a slice of the buffer.
    let mut buf = BytesMut::new();
    for i in 0..1000u32 {
        codec
            .encode(
                &Frame::new(ChannelId(i), Bytes::from(vec![0u8; 100])),
                &mut buf,
            )
            .unwrap();
    }
    for _ in 0..1000 {
        assert!(frame("back to back", &codec, &mut buf).unwrap().is_some());
    }
    assert!(buf.is_empty());

    // Wire: counts and lengths past what the input holds.
    let subscribe = tag(Wire::Subscribe {
        version: 0,
        prefixes: Vec::new(),
    });
    let publish = tag(Wire::Publish {
        topic: Bytes::new(),
        body: Bytes::new(),
    });
    let hello = tag(Wire::Hello {
        identity: Bytes::new(),
    });
    let request = tag(Wire::Request {
        id: RequestId(0),
        body: Bytes::new(),
    });
    let mut counts = Vec::new();
    for count in [
        u32::MAX,
        MAX_WIRE_PREFIXES as u32 + 1,
        MAX_WIRE_PREFIXES as u32,
    ] {
        let mut b = vec![subscribe];
        b.extend_from_slice(&7u64.to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        counts.push(b);
    }
    for (i, input) in counts.iter().enumerate() {
        let out = wire("prefix count", input);
        assert!(
            matches!(
                out,
                Err(WireError::TooManyPrefixes { .. } | WireError::Truncated { .. })
            ),
            "{i}: {out:?}"
        );
    }
    // The most prefixes, each empty: allowed, and linear in the input.
    let mut many = counts[2].clone();
    many.extend(std::iter::repeat_n(0u8, 4 * MAX_WIRE_PREFIXES));
    assert!(
        matches!(wire("many prefixes", &many), Ok(Wire::Subscribe { prefixes, .. }) if prefixes.len() == MAX_WIRE_PREFIXES)
    );
    for kind in [publish, hello] {
        for len in [u32::MAX, 1 << 30, 9] {
            let mut b = vec![kind];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(b"12345678");
            assert!(matches!(
                wire("claimed length", &b),
                Err(WireError::Truncated { .. })
            ));
        }
    }
    // Every tag, cut after every byte of a valid message with a large body.
    let big = Bytes::from(vec![3u8; 10_000]);
    let messages = [
        Wire::Request {
            id: RequestId(u64::MAX),
            body: big.clone(),
        },
        Wire::Reply {
            id: RequestId(1),
            body: big.clone(),
        },
        Wire::Push {
            seq: 2,
            body: big.clone(),
        },
        Wire::Credit {
            high: u64::MAX,
            grant: u64::MAX,
        },
        Wire::Skip { to: 3 },
        Wire::Subscribe {
            version: 4,
            prefixes: vec![big.clone(), Bytes::from_static(b"a")],
        },
        Wire::Publish {
            topic: big.clone(),
            body: big.clone(),
        },
        Wire::Hello {
            identity: big.clone(),
        },
        Wire::Data { body: big },
    ];
    for m in &messages {
        let bytes = m.to_bytes();
        assert_eq!(wire("whole", &bytes).as_ref(), Ok(m));
        for cut in (0..bytes.len()).step_by(97).chain(0..bytes.len().min(40)) {
            let _ = wire("cut", &bytes[..cut]);
        }
    }
    assert_eq!(wire("empty", &[]), Err(WireError::Empty));
    assert!(wire("request", &[request]).is_err());

    // Random bytes, and random bytes after each tag.
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(
            &(any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64)),
            |(first, rest)| {
                let kind = first % 12;
                let input = [&[kind][..], &rest].concat();
                let _ = wire("random after a tag", &input);
                let _ = wire("random", &rest);
                let mut buf = BytesMut::from(&input[..]);
                while let Ok(Some(_)) = frame("random", &codec, &mut buf) {}
                Ok(())
            },
        )
        .unwrap();

    #[cfg(feature = "serde")]
    serde_cases::run(&mut runner);
}

/// With the `serde` feature: the derived deserializers of the public
/// types, from hostile JSON, under the same cap.
#[cfg(feature = "serde")]
mod serde_cases {
    use super::*;
    use quorate_transport::framing::Flags;
    use quorate_transport::patterns::Limits;
    use quorate_transport::sim::{LinkConfig, TraceEvent};
    use serde::de::DeserializeOwned;

    fn check<T: DeserializeOwned>(name: &str, doc: &str) -> bool {
        let (_, first) = allocated(|| serde_json::from_str::<T>(doc).is_ok());
        let (out, second) = allocated(|| serde_json::from_str::<T>(doc).is_ok());
        let bytes = first.min(second);
        assert!(
            bytes <= cap(doc.len()),
            "{name}: {bytes} bytes allocated for a {} byte document",
            doc.len()
        );
        out
    }

    fn check_all(doc: &str) -> usize {
        [
            check::<ChannelId>("ChannelId", doc),
            check::<Flags>("Flags", doc),
            check::<RequestId>("RequestId", doc),
            check::<Limits>("Limits", doc),
            check::<LinkConfig>("LinkConfig", doc),
            check::<TraceEvent<u64>>("TraceEvent", doc),
        ]
        .into_iter()
        .filter(|accepted| *accepted)
        .count()
    }

    pub(super) fn run(runner: &mut TestRunner) {
        let limits = serde_json::to_string(&Limits::default()).unwrap();
        let link = serde_json::to_string(&LinkConfig::default()).unwrap();
        for doc in [&limits, &link] {
            assert_eq!(check_all(doc), 1, "{doc}");
            for cut in 0..doc.len() {
                check_all(&doc[..cut]);
            }
        }
        let nines = "9".repeat(100_000);
        for doc in [
            "[".repeat(100_000),
            "{\"a\":".repeat(50_000),
            nines.clone(),
            format!(r#""{nines}""#),
            format!(r#"{{"x":"{nines}""#),
        ] {
            assert_eq!(check_all(&doc), 0);
        }
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..128), |bytes| {
                check_all(&String::from_utf8_lossy(&bytes));
                Ok(())
            })
            .unwrap();
    }
}
