//! Every decoder of this crate — `from_bytes` of each clock and stamp, and
//! with the `serde` feature each `Deserialize` — fed huge declared lengths
//! and counts (varint maxima, `u64::MAX`, one more than the input holds),
//! nested counts (a `DvvSet`'s context and siblings, length-prefixed
//! actors and values inside them), input truncated after a large header,
//! and random bytes, returns a value or a typed error, never panics, and
//! never allocates on a count it has not read the bytes for.
//!
//! **The cap.** Every byte allocated while one input of `n` bytes is
//! decoded, in all, is at most `64 × n + 4 KiB`. A serde deserializer
//! whose sequences declare `usize::MAX` elements (a lying binary format)
//! costs at most serde's own preallocation limit, 1 MiB per sequence, plus
//! 4 KiB.
//!
//! Counted by a global allocator that counts every thread, so this binary
//! has one test, which runs the cases one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quorate_clocks::encoding::write_varint;
use quorate_clocks::{
    AtomicLamportClock, DecodeError, Dot, DottedVersionVector, DvvSet, Hlc, HlcTimestamp,
    LamportClock, LamportTimestamp, VectorClock,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const KIB: usize = 1024;

/// Bytes decoding `n` input bytes may cost: 64 per byte and 4 KiB.
fn cap(n: usize) -> usize {
    64 * n + 4 * KIB
}

/// The bytes allocated while `f` runs, in all. The test harness's own
/// thread may allocate meanwhile (the counter counts every thread), so `f`
/// runs twice and the lesser count is kept: an allocation of `f`'s shows
/// in both.
fn allocated<T>(f: impl Fn() -> T) -> (T, usize) {
    let once = || {
        let region = Region::new(GLOBAL);
        let out = f();
        let change = region.change();
        let grown = usize::try_from(change.bytes_reallocated).unwrap_or(0);
        (out, change.bytes_allocated + grown)
    };
    let (_, first) = once();
    let (out, second) = once();
    (out, first.min(second))
}

type Decoder = fn(&[u8]) -> Result<(), DecodeError>;

fn ok<T>(r: Result<T, DecodeError>) -> Result<(), DecodeError> {
    r.map(drop)
}

/// Every `from_bytes`, with actors and values of each kind the crate
/// encodes (varints, 16-byte ids, length-prefixed strings and bytes).
const DECODERS: &[(&str, Decoder)] = &[
    ("LamportTimestamp<u64>", |b| {
        ok(LamportTimestamp::<u64>::from_bytes(b))
    }),
    ("LamportTimestamp<String>", |b| {
        ok(LamportTimestamp::<String>::from_bytes(b))
    }),
    ("LamportClock<Vec<u8>>", |b| {
        ok(LamportClock::<Vec<u8>>::from_bytes(b))
    }),
    ("AtomicLamportClock<String>", |b| {
        ok(AtomicLamportClock::<String>::from_bytes(b))
    }),
    ("VectorClock<u64>", |b| {
        ok(VectorClock::<u64>::from_bytes(b))
    }),
    ("VectorClock<u128>", |b| {
        ok(VectorClock::<u128>::from_bytes(b))
    }),
    ("VectorClock<String>", |b| {
        ok(VectorClock::<String>::from_bytes(b))
    }),
    ("VectorClock<Vec<u8>>", |b| {
        ok(VectorClock::<Vec<u8>>::from_bytes(b))
    }),
    // Actors and values far larger in memory than their smallest encoding.
    ("VectorClock<[u8; 512]>", |b| {
        ok(VectorClock::<[u8; 512]>::from_bytes(b))
    }),
    ("DvvSet<u8, [u8; 512]>", |b| {
        ok(DvvSet::<u8, [u8; 512]>::from_bytes(b))
    }),
    ("Dot<String>", |b| ok(Dot::<String>::from_bytes(b))),
    ("DottedVersionVector<String>", |b| {
        ok(DottedVersionVector::<String>::from_bytes(b))
    }),
    ("DvvSet<u64, Vec<u8>>", |b| {
        ok(DvvSet::<u64, Vec<u8>>::from_bytes(b))
    }),
    ("DvvSet<String, String>", |b| {
        ok(DvvSet::<String, String>::from_bytes(b))
    }),
    ("HlcTimestamp", |b| ok(HlcTimestamp::from_bytes(b))),
    ("Hlc", |b| ok(Hlc::from_bytes(b))),
];

/// Runs every decoder on `input`, checking the cap; how many accepted it.
fn decode_all(case: &str, input: &[u8]) -> usize {
    let mut accepted = 0;
    for (name, decode) in DECODERS {
        let (out, bytes) = allocated(|| decode(input));
        assert!(
            bytes <= cap(input.len()),
            "{case}: {name} allocated {bytes} bytes for {} input bytes ({out:?})",
            input.len()
        );
        accepted += usize::from(out.is_ok());
    }
    accepted
}

fn varint(v: u128) -> Vec<u8> {
    let mut out = Vec::new();
    write_varint(&mut out, v);
    out
}

/// The valid encodings the hostile inputs start from.
fn samples() -> Vec<Vec<u8>> {
    let mut key: DvvSet<u64, Vec<u8>> = DvvSet::new();
    key.event(&VectorClock::new(), 1, vec![7; 300]);
    key.event(&VectorClock::new(), 2, b"y".to_vec());
    let mut text: DvvSet<String, String> = DvvSet::new();
    let version = text.event(&VectorClock::new(), "a".repeat(200), "b".repeat(200));
    let clock: VectorClock<String> = (0..50).map(|i| (format!("actor-{i}"), i + 1)).collect();
    let wide: VectorClock<u128> = (0..50).map(|i| (u128::MAX - i, 1 << 40)).collect();
    let mut lamport = LamportClock::new("node".to_string());
    let stamp = lamport.send();
    vec![
        key.to_bytes(),
        text.to_bytes(),
        version.to_bytes(),
        clock.to_bytes(),
        wide.to_bytes(),
        stamp.to_bytes(),
        lamport.to_bytes(),
        Dot::new(vec![1u8; 40], 9).to_bytes(),
        Hlc::default().to_bytes(),
        HlcTimestamp::new(1_700_000_000_000, 3).unwrap().to_bytes(),
    ]
}

#[test]
fn hostile_bytes_cost_at_most_the_cap() {
    let samples = samples();
    // Each sample decodes as what it is, within the cap.
    for sample in &samples {
        assert!(decode_all("sample", sample) >= 1, "{sample:?}");
    }
    let headers: Vec<u8> = samples.iter().map(|s| s[0]).collect();
    // Huge counts and lengths right after each header, then nothing, a
    // few bytes, or a plausible first entry.
    let huge = [
        u128::from(u64::MAX),
        1 << 63,
        u128::from(u32::MAX),
        1 << 20,
        u128::from(u64::MAX) + 1,
    ];
    for &header in &headers {
        for &count in &huge {
            for tail in [
                &[][..],
                &[1, 1, 1][..],
                &[5, b'a', b'b', b'c', b'd', b'e', 1][..],
            ] {
                let input = [&[header][..], &varint(count), tail].concat();
                decode_all("huge count", &input);
                // The same count in a nested position: a DvvSet's
                // siblings after an empty context, an actor's length
                // inside the first entry.
                let nested = [&[header, 0][..], &varint(count), tail].concat();
                decode_all("nested count", &nested);
                let inner = [&[header, 1][..], &varint(count), tail].concat();
                decode_all("inner length", &inner);
            }
        }
        // A count exactly as large as the bytes left, each a valid
        // one-byte counter or actor: a count the input could hold if
        // every entry took one byte.
        for len in [1usize, 100, 2000] {
            let tail = vec![1u8; len];
            for prefix in [&[header][..], &[header, 0][..], &[header, 1, 1, 1][..]] {
                let input = [prefix, &varint(len as u128), &tail].concat();
                decode_all("count as large as the input", &input);
            }
        }
        // Over-long and overflowing varints.
        for bad in [&[0x80u8; 11][..], &[0xff; 10][..], &[0x80, 0x00][..]] {
            let input = [&[header][..], bad].concat();
            assert_eq!(decode_all("bad varint", &input), 0);
        }
    }
    // A count the input can hold exactly once more than it does.
    for sample in &samples {
        let header = sample[0];
        let input = [&[header][..], &varint(sample.len() as u128)].concat();
        decode_all("one more", &[&input[..], &sample[1..]].concat());
        // Truncated anywhere.
        for cut in 0..sample.len() {
            decode_all("truncated", &sample[..cut]);
        }
        // Every byte in turn set to 0xff (a length or count grown huge).
        for at in 0..sample.len() {
            let mut forged = sample.clone();
            forged[at] = 0xff;
            decode_all("forged byte", &forged);
        }
    }

    // Random bytes, and random bytes after each header.
    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    let headers_strategy = proptest::sample::select(headers);
    runner
        .run(
            &(
                headers_strategy,
                proptest::collection::vec(any::<u8>(), 0..96),
            ),
            |(header, rest)| {
                decode_all("random", &rest);
                decode_all("random after a header", &[&[header][..], &rest].concat());
                Ok(())
            },
        )
        .unwrap();

    #[cfg(feature = "serde")]
    serde_cases::run();
}

#[cfg(feature = "serde")]
mod serde_cases {
    use super::*;
    use serde::de::value::{Error as ValueError, SeqDeserializer};
    use serde::de::{DeserializeOwned, IntoDeserializer};

    fn check<T: DeserializeOwned>(name: &str, doc: &str) -> bool {
        let (out, bytes) = allocated(|| serde_json::from_str::<T>(doc).is_ok());
        assert!(
            bytes <= cap(doc.len()),
            "{name}: {bytes} bytes allocated for a {} byte document",
            doc.len()
        );
        out
    }

    fn check_all(doc: &str) -> usize {
        [
            check::<VectorClock<u64>>("VectorClock<u64>", doc),
            check::<VectorClock<String>>("VectorClock<String>", doc),
            check::<DvvSet<String, String>>("DvvSet", doc),
            check::<DottedVersionVector<u64>>("DottedVersionVector", doc),
            check::<LamportClock<u64>>("LamportClock", doc),
            check::<LamportTimestamp<String>>("LamportTimestamp", doc),
            check::<AtomicLamportClock<u64>>("AtomicLamportClock", doc),
            check::<Dot<u64>>("Dot", doc),
            check::<Hlc>("Hlc", doc),
            check::<HlcTimestamp>("HlcTimestamp", doc),
            check::<quorate_clocks::offset::Sample>("offset::Sample", doc),
            check::<quorate_clocks::offset::Estimate>("offset::Estimate", doc),
            check::<quorate_clocks::offset::OffsetEstimator>("OffsetEstimator", doc),
        ]
        .into_iter()
        .filter(|accepted| *accepted)
        .count()
    }

    /// An iterator that claims to hold `usize::MAX` items.
    struct Lying<I>(I);

    impl<I: Iterator> Iterator for Lying<I> {
        type Item = I::Item;
        fn next(&mut self) -> Option<I::Item> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (usize::MAX, Some(usize::MAX))
        }
    }

    type Pair = SeqDeserializer<Lying<std::vec::IntoIter<u64>>, ValueError>;

    /// A sequence of `(actor, counter)` pairs, every sequence declaring
    /// `usize::MAX` elements.
    fn lying_pairs(
        pairs: &[(u64, u64)],
    ) -> SeqDeserializer<Lying<std::vec::IntoIter<Pair>>, ValueError> {
        let pairs: Vec<Pair> = pairs
            .iter()
            .map(|&(a, c)| SeqDeserializer::new(Lying(vec![a, c].into_iter())))
            .collect();
        SeqDeserializer::new(Lying(pairs.into_iter()))
    }

    pub(super) fn run() {
        let max = u64::MAX;
        let past = u128::from(u64::MAX) + 1;
        for doc in [
            // Counters past MAX_COUNTER, past u64, duplicate actors.
            format!("[[1,{max}]]"),
            format!("[[1,{past}]]"),
            "[[1,1],[1,2]]".to_string(),
            format!(r#"{{"node":1,"time":{max}}}"#),
            format!(r#"{{"actor":1,"counter":{past}}}"#),
            // Siblings outside the context, unsorted.
            r#"{"context":[["a",1]],"siblings":[[{"actor":"a","counter":2},"x"]]}"#.to_string(),
            r#"{"context":[["a",2]],"siblings":[[{"actor":"a","counter":2},"x"],[{"actor":"a","counter":1},"y"]]}"#.to_string(),
            // Deep nesting, a string never closed, truncation.
            "[".repeat(100_000),
            format!(r#"[["{}"#, "x".repeat(100_000)),
            format!(r#"{{"context":[["a",1]],"siblings":[[{{"actor":"a","counter":1}},"{}"#, "v".repeat(50_000)),
            // An offset filter holding far more samples than its window,
            // impossible samples, a window past the largest.
            format!(
                r#"{{"window":1,"max_age_ns":1,"drift_ppm":1,"samples":[{}[0,0,0,0]]}}"#,
                "[0,5,5,10],".repeat(20_000)
            ),
            r#"{"window":1,"max_age_ns":1,"drift_ppm":1,"samples":[[10,0,0,9]]}"#.to_string(),
            format!(r#"{{"window":{max},"max_age_ns":1,"drift_ppm":1,"samples":[]}}"#),
            format!("[0,{max},{max},0]"),
        ] {
            assert_eq!(check_all(&doc), 0, "{}", &doc[..doc.len().min(80)]);
        }
        // Many entries, legitimately: linear in the document.
        let entries: Vec<String> = (0..20_000)
            .map(|i| format!(r#"["actor-{i}",{i}]"#))
            .collect();
        let doc = format!("[{}]", entries.join(","));
        assert!(check::<VectorClock<String>>("many entries", &doc));
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..128), |bytes| {
                check_all(&String::from_utf8_lossy(&bytes));
                Ok(())
            })
            .unwrap();
        let json = serde_json::to_string(&{
            let mut key = DvvSet::new();
            key.event(&VectorClock::new(), "a".to_string(), "b".to_string());
            key
        })
        .unwrap();
        for cut in 0..json.len() {
            check_all(&json[..cut]);
        }

        // A binary format whose sequences declare usize::MAX elements:
        // what is preallocated is serde's limit, never the declared count.
        let (clock, bytes) =
            allocated(|| VectorClock::<u64>::deserialize(lying_pairs(&[(2, 5), (1, 3)])));
        assert_eq!(clock.unwrap(), [(1, 3), (2, 5)].into_iter().collect());
        assert!(bytes <= 1024 * KIB + 4 * KIB, "{bytes} bytes");
        let (clock, bytes) =
            allocated(|| VectorClock::<u64>::deserialize(lying_pairs(&[(1, 3), (1, 4)])));
        assert!(clock.is_err());
        assert!(bytes <= 1024 * KIB + 4 * KIB, "{bytes} bytes");
        let (stamp, bytes) = allocated(|| {
            let fields = vec![7u64, 9].into_deserializer();
            LamportTimestamp::<u64>::deserialize::<SeqDeserializer<_, ValueError>>(fields)
        });
        assert!(stamp.is_ok(), "{stamp:?}");
        assert!(bytes <= 4 * KIB, "{bytes} bytes");
    }

    use serde::Deserialize;
}
