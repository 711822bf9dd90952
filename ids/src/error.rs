//! The crate's error types: one for building layouts, one for minting and
//! composing IDs, one for parsing IDs from text.

use crate::time::UnixMillis;

/// Why a [`Layout`](crate::Layout) could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The three widths must fill 63 bits (the sign bit stays clear, so the ID
    /// is also a positive `i64`) or all 64.
    #[error("field widths {time}+{sequence}+{worker} = {sum} bits; they must add up to 63 or 64")]
    WidthsDoNotFill {
        /// Requested time width.
        time: u8,
        /// Requested sequence width.
        sequence: u8,
        /// Requested worker width.
        worker: u8,
        /// Their sum.
        sum: u16,
    },
    /// An ID needs at least one bit of time to order by.
    #[error("the time field needs at least one bit")]
    NoTimeBits,
    /// The generators keep (time, sequence) in 63 bits so that "one past the last
    /// issued ID" always fits in a `u64`; a 64-bit layout therefore needs a worker bit.
    #[error("time {time} + sequence {sequence} bits exceed the 63 bits a generator can track")]
    TimeAndSequenceTooWide {
        /// Requested time width.
        time: u8,
        /// Requested sequence width.
        sequence: u8,
    },
    /// A split asks for more process bits than the worker field has.
    #[error("{process} process bits do not fit in the {worker}-bit worker field")]
    ProcessWiderThanWorker {
        /// Requested process width.
        process: u8,
        /// The layout's worker width.
        worker: u8,
    },
    /// The epoch lies after the time it was checked against: IDs minted now
    /// would have a negative time.
    #[error("epoch {epoch} is after the current time {now}")]
    EpochInFuture {
        /// The layout's epoch.
        epoch: UnixMillis,
        /// The time it was checked against.
        now: UnixMillis,
    },
}

/// A field of an ID, named in errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The time field (ticks since the epoch).
    Time,
    /// The per-tick sequence number.
    Sequence,
    /// The worker id (Twitter's worker, Sonyflake's machine, Instagram's shard).
    Worker,
    /// The host part of a split worker field ([`Layout::worker_id`](crate::Layout::worker_id)).
    Host,
    /// The process part of a split worker field.
    Process,
}

/// What an [`IdError::WouldBlock`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockCause {
    /// Every sequence number of the current tick has been issued.
    SequenceExhausted,
    /// The clock is behind the last issued ID and the policy is
    /// [`ClockPolicy::WaitUntil`](crate::ClockPolicy::WaitUntil).
    ClockBehind,
}

/// Why no ID was minted, or why an ID could not be composed or checked.
///
/// A failed call leaves the generator unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// No ID can be issued before `retry_at`; call again at or after that time.
    /// The library never spins or sleeps itself.
    #[error("no id available before {retry_at} ({cause:?})")]
    WouldBlock {
        /// The earliest time at which the call can succeed.
        retry_at: UnixMillis,
        /// What the wait is for.
        cause: BlockCause,
    },
    /// The clock stepped back behind the last issued ID further than the
    /// policy accepts ([`ClockPolicy::Reject`](crate::ClockPolicy::Reject), or a
    /// [`ClockPolicy::Tolerate`](crate::ClockPolicy::Tolerate) bound exceeded).
    #[error("clock moved backwards: now {now} is behind the last issued time {last}")]
    ClockMovedBackwards {
        /// The time passed in.
        now: UnixMillis,
        /// The start of the tick of the last issued ID.
        last: UnixMillis,
    },
    /// The time is before the layout's epoch.
    #[error("time {now} is before the layout's epoch {epoch}")]
    BeforeEpoch {
        /// The time passed in.
        now: UnixMillis,
        /// The layout's epoch.
        epoch: UnixMillis,
    },
    /// The time is past the last tick the layout's time field can hold, or the
    /// generator has used up that last tick: the layout has run out of time
    /// (IDs never wrap around).
    #[error("time {now} is past the layout's last representable time {last}")]
    TimeOutOfRange {
        /// The time passed in.
        now: UnixMillis,
        /// The last millisecond the layout can represent.
        last: UnixMillis,
    },
    /// A field value does not fit its width in the layout.
    #[error("{field:?} value {value} does not fit the layout (max {max})")]
    FieldOutOfRange {
        /// Which field.
        field: Field,
        /// The value given.
        value: u64,
        /// The largest value the field holds.
        max: u64,
    },
    /// The ID has bits set above the layout's width (a 63-bit layout never
    /// sets the sign bit).
    #[error("id {id} has bits set above the layout's {bits} bits")]
    NotInLayout {
        /// The raw ID.
        id: u64,
        /// The layout's total width.
        bits: u8,
    },
}

impl IdError {
    /// The time to call again at, if this error is a [`IdError::WouldBlock`].
    #[must_use]
    pub const fn retry_at(&self) -> Option<UnixMillis> {
        match self {
            Self::WouldBlock { retry_at, .. } => Some(*retry_at),
            _ => None,
        }
    }
}

/// Why a string is not an ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseIdError {
    /// The string is empty.
    #[error("empty id")]
    Empty,
    /// A character is not a digit of the expected form.
    #[error("invalid character {character:?} at byte {index}")]
    InvalidCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset.
        index: usize,
    },
    /// The value does not fit in 64 bits.
    #[error("id does not fit in 64 bits")]
    Overflow,
    /// A base32 ID has exactly 13 characters.
    #[error("base32 id has {len} bytes, expected 13")]
    WrongLength {
        /// The length given.
        len: usize,
    },
}
