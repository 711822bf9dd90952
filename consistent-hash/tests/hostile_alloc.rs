//! Every deserializer of this crate (`Ring`, `Maglev`, `MultiProbe`,
//! `Rendezvous`, and the Chord node's `Message` and `Config`), fed hostile documents — huge sizes, counts and weights,
//! many small nodes adding up past a cap, deep nesting, truncation, random
//! bytes — returns a value or a typed error, never panics, and allocates
//! at most what the input and the crate's documented caps allow.
//!
//! **The cap.** For a document of `n` bytes, every byte allocated while it
//! is deserialized, in all (a bound on what was held at once), is at most
//! `64 × n + 4 KiB`, plus, for a document that is accepted, what the
//! structure it describes holds: 48 bytes per ring point (at most
//! [`MAX_RING_POINTS`]) and 8 bytes per Maglev slot (at most
//! [`MAX_MAGLEV_TABLE`]). A refused document gets no such allowance.
//!
//! Counted by a global allocator that counts every thread, so this binary
//! has one test, which runs the cases one after another.
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use quorate_consistent_hash::{
    MAX_MAGLEV_TABLE, MAX_PROBES, MAX_RING_POINTS, Maglev, MultiProbe, Rendezvous, Ring, chord,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes the input itself may cost: 64 per input byte and 4 KiB.
fn cap(input_len: usize) -> usize {
    64 * input_len + 4096
}

/// Ring points of 8 bytes, owners of 4, the point index and the sort.
const PER_RING_POINT: usize = 48;
/// Table entries of 4 bytes, once built, once copied.
const PER_MAGLEV_SLOT: usize = 8;

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

/// What each deserializer made of a document: accepted (and the bytes the
/// structure may hold) or refused.
#[derive(Debug)]
enum Outcome {
    Accepted { holds: usize },
    Refused(String),
}

fn ring(doc: &str) -> Outcome {
    match serde_json::from_str::<Ring<String>>(doc) {
        Ok(ring) => Outcome::Accepted {
            holds: PER_RING_POINT * ring.point_count(),
        },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

fn maglev(doc: &str) -> Outcome {
    match serde_json::from_str::<Maglev<String>>(doc) {
        Ok(maglev) => Outcome::Accepted {
            holds: PER_MAGLEV_SLOT * maglev.table_size() as usize,
        },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

fn multi_probe(doc: &str) -> Outcome {
    match serde_json::from_str::<MultiProbe<String>>(doc) {
        Ok(probes) => Outcome::Accepted {
            holds: PER_RING_POINT * probes.len(),
        },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

fn rendezvous(doc: &str) -> Outcome {
    match serde_json::from_str::<Rendezvous<String>>(doc) {
        Ok(_) => Outcome::Accepted { holds: 0 },
        Err(e) => Outcome::Refused(e.to_string()),
    }
}

/// The Chord node's messages and configuration (derived deserializers).
fn chord(doc: &str) -> Outcome {
    let message = serde_json::from_str::<chord::Message>(doc);
    let config = serde_json::from_str::<chord::Config>(doc);
    match (message, config) {
        (Err(e), Err(_)) => Outcome::Refused(e.to_string()),
        _ => Outcome::Accepted { holds: 0 },
    }
}

type Deserializer = fn(&str) -> Outcome;
const ALL: [(&str, Deserializer); 5] = [
    ("Ring", ring),
    ("Maglev", maglev),
    ("MultiProbe", multi_probe),
    ("Rendezvous", rendezvous),
    ("chord", chord),
];

/// Runs `de` on `doc` and checks the cap; returns what it made of it.
fn within_cap(name: &str, de: Deserializer, doc: &str) -> Outcome {
    let (outcome, bytes) = allocated(|| de(doc));
    let allowed = cap(doc.len())
        + match outcome {
            Outcome::Accepted { holds } => holds,
            Outcome::Refused(_) => 0,
        };
    let shown: String = doc.chars().take(80).collect();
    assert!(
        bytes <= allowed,
        "{name}: {bytes} bytes allocated for a {} byte document (cap {allowed}): {shown}",
        doc.len()
    );
    outcome
}

fn refused(name: &str, de: Deserializer, doc: &str) -> String {
    match within_cap(name, de, doc) {
        Outcome::Refused(e) => e,
        Outcome::Accepted { .. } => panic!("{name} accepted a hostile document: {doc}"),
    }
}

#[test]
fn hostile_documents_cost_at_most_the_cap() {
    let max = u32::MAX;
    // Huge declared sizes in a few bytes: refused before anything is built.
    let ring_points = MAX_RING_POINTS.to_string();
    for doc in [
        format!(r#"{{"vnodes":{max},"nodes":[["a",{max}]]}}"#),
        r#"{"vnodes":10000000,"nodes":[["a",1]]}"#.to_string(),
        format!(r#"{{"vnodes":1,"nodes":[["a",{max}],["b",{max}]]}}"#),
    ] {
        let err = refused("Ring", ring, &doc);
        assert!(err.contains(&ring_points), "{err}");
    }
    // Many small nodes adding up past the cap.
    let nodes: Vec<String> = (0..600).map(|n| format!(r#"["{n}",20]"#)).collect();
    let doc = format!(r#"{{"vnodes":100,"nodes":[{}]}}"#, nodes.join(","));
    assert!(refused("Ring", ring, &doc).contains(&ring_points));
    // 4294967291 is the largest prime below 2^32.
    for size in [4_294_967_291u32, MAX_MAGLEV_TABLE + 15] {
        let doc = format!(r#"{{"table_size":{size},"nodes":["a","b"]}}"#);
        let err = refused("Maglev", maglev, &doc);
        assert!(err.contains(&MAX_MAGLEV_TABLE.to_string()), "{err}");
    }
    for probes in [max, MAX_PROBES + 1] {
        let doc = format!(r#"{{"probes":{probes},"nodes":["a"]}}"#);
        let err = refused("MultiProbe", multi_probe, &doc);
        assert!(err.contains(&MAX_PROBES.to_string()), "{err}");
    }
    for weight in ["-1", "0", "1e400", "-0.0"] {
        let doc = format!(r#"{{"nodes":[["a",{weight}]]}}"#);
        refused("Rendezvous", rendezvous, &doc);
    }

    // At the caps: accepted, costing what the structure holds.
    let weight = MAX_RING_POINTS / 64;
    let doc = format!(r#"{{"vnodes":64,"nodes":[["a",{weight}]]}}"#);
    assert!(matches!(
        within_cap("Ring", ring, &doc),
        Outcome::Accepted { .. }
    ));
    // 4194301 is the largest prime below 2^22.
    let doc = r#"{"table_size":4194301,"nodes":["a","b","c"]}"#;
    assert!(matches!(
        within_cap("Maglev", maglev, doc),
        Outcome::Accepted { .. }
    ));
    let doc = format!(r#"{{"probes":{MAX_PROBES},"nodes":["a","b"]}}"#);
    assert!(matches!(
        within_cap("MultiProbe", multi_probe, &doc),
        Outcome::Accepted { .. }
    ));
    // Many nodes, legitimately: linear in the document, not its square.
    let names: Vec<String> = (0..20_000).map(|n| format!(r#""node-{n}""#)).collect();
    let doc = format!(r#"{{"probes":21,"nodes":[{}]}}"#, names.join(","));
    assert!(matches!(
        within_cap("MultiProbe", multi_probe, &doc),
        Outcome::Accepted { .. }
    ));
    let pairs: Vec<String> = names.iter().map(|n| format!("[{n},1.5]")).collect();
    let doc = format!(r#"{{"nodes":[{}]}}"#, pairs.join(","));
    assert!(matches!(
        within_cap("Rendezvous", rendezvous, &doc),
        Outcome::Accepted { .. }
    ));
    let pairs: Vec<String> = names.iter().map(|n| format!("[{n},1]")).collect();
    let doc = format!(r#"{{"vnodes":10,"nodes":[{}]}}"#, pairs.join(","));
    assert!(matches!(
        within_cap("Ring", ring, &doc),
        Outcome::Accepted { .. }
    ));

    // Deep nesting, huge strings that are never closed, truncation.
    let deep = format!(r#"{{"vnodes":1,"nodes":{}"#, "[".repeat(100_000));
    let unclosed = format!(r#"{{"vnodes":1,"nodes":[["{}"#, "x".repeat(100_000));
    let whole = r#"{"vnodes":4,"table_size":13,"probes":3,"nodes":[["a",2],["b",1]]}"#;
    for (name, de) in ALL {
        refused(name, de, &deep);
        refused(name, de, &unclosed);
        for end in 0..whole.len() - 1 {
            refused(name, de, &whole[..end]);
        }
    }

    // Random documents, and random bytes: whatever the outcome, the cap.
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let documents = (
        0..=u32::MAX,
        0..=u32::MAX,
        proptest::collection::vec(("[a-c]{0,3}", 0..=u32::MAX), 0..8),
    );
    runner
        .run(&documents, |(size, vnodes, nodes)| {
            let pairs: Vec<String> = nodes
                .iter()
                .map(|(n, w)| format!(r#"["{n}",{w}]"#))
                .collect();
            let names: Vec<String> = nodes.iter().map(|(n, _)| format!(r#""{n}""#)).collect();
            let (pairs, names) = (pairs.join(","), names.join(","));
            within_cap(
                "Ring",
                ring,
                &format!(r#"{{"vnodes":{vnodes},"nodes":[{pairs}]}}"#),
            );
            within_cap(
                "Maglev",
                maglev,
                &format!(r#"{{"table_size":{size},"nodes":[{names}]}}"#),
            );
            within_cap(
                "MultiProbe",
                multi_probe,
                &format!(r#"{{"probes":{size},"nodes":[{names}]}}"#),
            );
            within_cap(
                "Rendezvous",
                rendezvous,
                &format!(r#"{{"nodes":[{pairs}]}}"#),
            );
            Ok(())
        })
        .unwrap();
    runner
        .run(&proptest::collection::vec(any::<u8>(), 0..256), |bytes| {
            let text = String::from_utf8_lossy(&bytes);
            for (name, de) in ALL {
                within_cap(name, de, &text);
            }
            Ok(())
        })
        .unwrap();
}
