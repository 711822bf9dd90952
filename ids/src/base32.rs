//! The compact text form of an ID: 13 characters of Crockford base32.
//!
//! Crockford's alphabet (`0-9`, then `A-Z` without `I L O U`) is in ASCII
//! order, and the form is fixed width, so comparing two encoded IDs as
//! strings gives the same answer as comparing the numbers. 13 characters
//! carry 65 bits; the first character is therefore `0`-`F`.

use core::fmt;
use core::ops::Deref;

use crate::error::ParseIdError;

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const LEN: usize = 13;

/// An ID in base32 text: 13 ASCII bytes on the stack; derefs to `&str`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Base32([u8; LEN]);

impl Base32 {
    pub(crate) const fn encode(mut value: u64) -> Self {
        let mut text = [b'0'; LEN];
        let mut i = LEN;
        while i > 0 {
            i -= 1;
            text[i] = ALPHABET[(value & 31) as usize];
            value >>= 5;
        }
        Self(text)
    }

    pub(crate) fn decode(text: &str) -> Result<u64, ParseIdError> {
        if text.is_empty() {
            return Err(ParseIdError::Empty);
        }
        if text.len() != LEN {
            return Err(ParseIdError::WrongLength { len: text.len() });
        }
        let mut value: u64 = 0;
        for (index, character) in text.char_indices() {
            let digit = digit_value(character)
                .ok_or(ParseIdError::InvalidCharacter { character, index })?;
            // The first digit holds the 65th bit; anything above 15 overflows.
            if value >> 59 != 0 {
                return Err(ParseIdError::Overflow);
            }
            value = (value << 5) | u64::from(digit);
        }
        Ok(value)
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Every byte comes from ALPHABET, so this is always ASCII.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn digit_value(character: char) -> Option<u8> {
    let upper = character.to_ascii_uppercase();
    match upper {
        'O' => Some(0),
        'I' | 'L' => Some(1),
        _ => ALPHABET
            .iter()
            .position(|&a| char::from(a) == upper)
            .and_then(|p| u8::try_from(p).ok()),
    }
}

impl Deref for Base32 {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Base32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Base32 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Hand computed: 32 = "10" in base 32; u64::MAX = 1 followed by 64 ones
        // split as 4 + 12*5 bits = "F" then twelve "Z".
        assert_eq!(Base32::encode(0).as_str(), "0000000000000");
        assert_eq!(Base32::encode(32).as_str(), "0000000000010");
        assert_eq!(Base32::encode(u64::MAX).as_str(), "FZZZZZZZZZZZZ");
        assert_eq!(Base32::decode("FZZZZZZZZZZZZ"), Ok(u64::MAX));
        assert_eq!(Base32::decode("fzzzzzzzzzzzz"), Ok(u64::MAX));
        assert_eq!(Base32::decode("0000000000OIL"), Ok(0b00000_00001_00001));
    }

    #[test]
    fn rejects_bad_text() {
        assert_eq!(Base32::decode(""), Err(ParseIdError::Empty));
        assert_eq!(
            Base32::decode("12"),
            Err(ParseIdError::WrongLength { len: 2 })
        );
        assert_eq!(Base32::decode("G000000000000"), Err(ParseIdError::Overflow));
        assert_eq!(
            Base32::decode("000000000000U"),
            Err(ParseIdError::InvalidCharacter {
                character: 'U',
                index: 12
            })
        );
        // 13 bytes but not 13 characters.
        assert!(Base32::decode("00000000000é").is_err());
    }
}
