//! The family's canonical varint lives as one block of code in two crates
//! that share no source file: this keeps the two copies identical.
#![allow(clippy::expect_used)]

/// The block from its opening comment to the end of `decode_varint`.
fn varint_block(source: &str) -> &str {
    let start = source
        .find("// The family's canonical LEB128 varint.")
        .expect("varint block start");
    let rest = &source[start..];
    let decode = rest.find("fn decode_varint").expect("decode_varint");
    let end = decode + rest[decode..].find("\n}\n").expect("end of decode_varint") + 3;
    &rest[..end]
}

#[test]
fn merkle_and_clocks_carry_the_same_varint_code() {
    let merkle = include_str!("../src/codec.rs");
    let clocks = include_str!("../../clocks/src/encoding.rs");
    assert_eq!(varint_block(merkle), varint_block(clocks));
    assert!(varint_block(merkle).contains("Err(VarintError::Overlong)"));
}
