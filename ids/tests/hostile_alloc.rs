//! Every parser and deserializer of this crate — `Id`'s `FromStr` and
//! [`Id::from_base32`], and with the `serde` feature the `Deserialize` of
//! [`Id`] (a number or a decimal string), `serde_as_string`, [`Layout`]
//! and the small value types — fed hostile strings (huge digit runs,
//! numbers past 64 bits, long runs of leading zeros, non-ASCII digits,
//! escapes, deep nesting, layouts with impossible bit counts, random
//! bytes) returns a value or a typed error, never panics, and allocates
//! at most in proportion to its input.
//!
//! **The cap.** Every byte allocated while one input of `n` bytes is
//! parsed or deserialized, in all, is at most `64 × n + 4 KiB`; parsing an
//! id from a `&str` allocates nothing at all.
//!
//! Counted by a global allocator that counts every thread, so this binary
//! has one test, which runs the cases one after another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;

use proptest::test_runner::{Config, TestRunner};
use quorate_ids::{Id, ParseIdError};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes deserializing `n` input bytes may cost: 64 per byte and 4 KiB.
#[cfg_attr(not(feature = "serde"), allow(dead_code))]
fn cap(n: usize) -> usize {
    64 * n + 4096
}

/// The bytes allocated while `f` runs, in all.
fn allocated<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    let grown = usize::try_from(change.bytes_reallocated).unwrap_or(0);
    (out, change.bytes_allocated + grown)
}

/// Both parsers of `text`, which must allocate nothing. The test
/// harness's own thread may allocate while the first cases run, so the
/// least of three measurements counts (an allocation of the parser's would
/// show in all three).
fn parse(case: &str, text: &str) -> (Result<Id, ParseIdError>, Result<Id, ParseIdError>) {
    let run = || (text.parse::<Id>(), Id::from_base32(text));
    let (out, least) = (0..3)
        .map(|_| allocated(run))
        .min_by_key(|(_, bytes)| *bytes)
        .unwrap();
    assert_eq!(least, 0, "{case}: parsing allocated {least} bytes");
    out
}

#[test]
fn hostile_strings_cost_at_most_the_cap() {
    let nines = "9".repeat(100_000);
    let zeros = format!("{}1", "0".repeat(100_000));
    let wide = "١".repeat(10_000);
    let base32 = "z".repeat(13);
    let cases: [(&str, &str); 8] = [
        ("nines", &nines),
        ("leading zeros", &zeros),
        ("arabic digits", &wide),
        ("2^64", "18446744073709551616"),
        ("empty", ""),
        ("sign", "-1"),
        ("base32 past 64 bits", &base32),
        ("base32 too long", &zeros),
    ];
    for (case, text) in cases {
        let (decimal, base32) = parse(case, text);
        // Only the zero-padded 1 is a decimal id; no case is a base32 id.
        assert_eq!(decimal.is_ok(), text == zeros, "{case}");
        assert!(base32.is_err(), "{case}");
    }
    let id = Id::from_u64(u64::MAX);
    let (decimal, base32) = parse("max", &id.to_string());
    assert_eq!(decimal, Ok(id));
    assert!(base32.is_err());
    assert_eq!(parse("base32 max", id.to_base32().as_str()).1, Ok(id));

    let mut runner = TestRunner::new(Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&"[0-9a-zA-Z+ é١]{0,40}", |text| {
            let _ = parse("random", &text);
            Ok(())
        })
        .unwrap();

    #[cfg(feature = "serde")]
    serde_cases::run(&mut runner);
}

#[cfg(feature = "serde")]
mod serde_cases {
    use super::*;
    use proptest::prelude::*;
    use quorate_ids::{ClockPolicy, FieldOrder, Layout, Parts, TimeUnit, UnixMillis};
    use serde::Deserialize;
    use serde::de::DeserializeOwned;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct AsString {
        #[serde(with = "quorate_ids::serde_as_string")]
        id: Id,
    }

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
            check::<Id>("Id", doc),
            check::<AsString>("serde_as_string", doc),
            check::<Layout>("Layout", doc),
            check::<Parts>("Parts", doc),
            check::<ClockPolicy>("ClockPolicy", doc),
            check::<FieldOrder>("FieldOrder", doc),
            check::<TimeUnit>("TimeUnit", doc),
            check::<UnixMillis>("UnixMillis", doc),
        ]
        .into_iter()
        .filter(|accepted| *accepted)
        .count()
    }

    pub(super) fn run(runner: &mut TestRunner) {
        let nines = "9".repeat(100_000);
        let escaped = "\\u0039".repeat(20_000);
        let layout = serde_json::to_string(&Layout::TWITTER).unwrap();
        for (doc, accepted) in [
            (nines.clone(), 0),
            (format!(r#""{nines}""#), 0),
            (format!(r#""{escaped}""#), 0),
            (format!(r#"{{"id":"{nines}"}}"#), 0),
            (format!(r#"{{"id":"{escaped}"}}"#), 0),
            ("18446744073709551616".to_string(), 0),
            ("-1".to_string(), 0),
            ("1e400".to_string(), 0),
            ("0".to_string(), 2), // Id, UnixMillis
            ("[".repeat(100_000), 0),
            (format!(r#"{{"id":"{}"#, "1".repeat(100_000)), 0),
            (layout.replace("41", "255"), 0),
            (layout.replace("\"epoch\"", "\"epoch\":1,\"epoch\""), 0),
            (layout.replace('{', r#"{"extra":1,"#), 0),
            (
                format!(
                    r#"{{"time_bits":41,"sequence_bits":12,"node_bits":10,"epoch":1,"time_unit":0,"x":"{nines}"}}"#
                ),
                0,
            ),
            (layout.clone(), 1),
        ] {
            let shown: String = doc.chars().take(60).collect();
            assert_eq!(check_all(&doc), accepted, "{shown}");
        }
        for cut in 0..layout.len() {
            check_all(&layout[..cut]);
        }
        runner
            .run(&proptest::collection::vec(any::<u8>(), 0..128), |bytes| {
                check_all(&String::from_utf8_lossy(&bytes));
                Ok(())
            })
            .unwrap();
    }
}
