//! serde forms of an ID: a number by default, a string for JavaScript.
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_ids::{Id, Layout, UnixMillis};
use serde::{Deserialize, Serialize};

/// Above 2^53: a JavaScript number would round it.
const BIG: u64 = 9_007_199_254_740_993;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct AsNumber {
    id: Id,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct AsString {
    #[serde(with = "quorate_ids::serde_as_string")]
    id: Id,
}

#[test]
fn an_id_is_a_json_number_and_reads_back_from_a_number_or_a_string() {
    let value = AsNumber {
        id: Id::from_u64(BIG),
    };
    let json = serde_json::to_string(&value).unwrap();
    assert_eq!(json, r#"{"id":9007199254740993}"#);
    assert_eq!(serde_json::from_str::<AsNumber>(&json).unwrap(), value);
    assert_eq!(
        serde_json::from_str::<AsNumber>(r#"{"id":"9007199254740993"}"#).unwrap(),
        value
    );
}

#[test]
fn serde_as_string_writes_a_json_string() {
    let value = AsString {
        id: Id::from_u64(u64::MAX),
    };
    let json = serde_json::to_string(&value).unwrap();
    assert_eq!(json, r#"{"id":"18446744073709551615"}"#);
    assert_eq!(serde_json::from_str::<AsString>(&json).unwrap(), value);
    assert_eq!(
        serde_json::from_str::<AsString>(r#"{"id":7}"#).unwrap().id,
        Id::from_u64(7)
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for json in [
        r#"{"id":-1}"#,
        r#"{"id":"-1"}"#,
        r#"{"id":"18446744073709551616"}"#,
        r#"{"id":1.5}"#,
        r#"{"id":"abc"}"#,
        r#"{"id":null}"#,
        r#"{"id":18446744073709551616}"#,
    ] {
        assert!(serde_json::from_str::<AsNumber>(json).is_err(), "{json}");
        assert!(serde_json::from_str::<AsString>(json).is_err(), "{json}");
    }
}

#[test]
fn layouts_round_trip_and_invalid_ones_are_rejected() {
    for layout in Layout::PRESETS {
        let json = serde_json::to_string(&layout).unwrap();
        assert_eq!(
            serde_json::from_str::<Layout>(&json).unwrap(),
            layout,
            "{json}"
        );
    }
    let config = r#"{"time_bits":41,"sequence_bits":12,"worker_bits":10,"order":"WorkerThenSequence","epoch":1288834974657}"#;
    assert_eq!(
        serde_json::from_str::<Layout>(config).unwrap(),
        Layout::TWITTER
    );
    let too_wide = r#"{"time_bits":41,"sequence_bits":12,"worker_bits":12,"epoch":0}"#;
    let err = serde_json::from_str::<Layout>(too_wide).unwrap_err();
    assert!(err.to_string().contains("65 bits"), "{err}");
    // The names from before the node field became the worker field still parse.
    let old_names = r#"{"time_bits":41,"sequence_bits":12,"node_bits":10,"order":"NodeThenSequence","epoch":1288834974657}"#;
    assert_eq!(
        serde_json::from_str::<Layout>(old_names).unwrap(),
        Layout::TWITTER
    );
    let zero_unit =
        r#"{"time_bits":40,"sequence_bits":14,"worker_bits":10,"time_unit":0,"epoch":0}"#;
    assert!(serde_json::from_str::<Layout>(zero_unit).is_err());
}

#[test]
fn layouts_and_times_have_plain_forms() {
    assert_eq!(
        serde_json::to_string(&UnixMillis::from_millis(5)).unwrap(),
        "5"
    );
    let parts = Layout::SEED.decompose(Id::from_u64((3 << 24) | (2 << 10) | 1));
    assert_eq!(
        serde_json::to_string(&parts).unwrap(),
        r#"{"ticks":3,"sequence":2,"worker":1}"#
    );
    assert_eq!(
        serde_json::from_str::<quorate_ids::Parts>(r#"{"ticks":3,"sequence":2,"node":1}"#).unwrap(),
        parts
    );
}

#[test]
fn a_split_worker_field_survives_serde_and_is_validated() {
    let json = serde_json::to_string(&Layout::DISCORD).unwrap();
    assert!(json.contains(r#""process_bits":5"#), "{json}");
    assert_eq!(
        serde_json::from_str::<Layout>(&json).unwrap(),
        Layout::DISCORD
    );
    // Unsplit layouts keep their old form.
    assert!(
        !serde_json::to_string(&Layout::SEED)
            .unwrap()
            .contains("process_bits")
    );
    let too_wide =
        r#"{"time_bits":40,"sequence_bits":14,"worker_bits":10,"epoch":0,"process_bits":11}"#;
    let err = serde_json::from_str::<Layout>(too_wide).unwrap_err();
    assert!(err.to_string().contains("11 process bits"), "{err}");
}
