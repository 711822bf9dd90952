//! Event emission behind the `tracing` feature. Without it both macros
//! expand to nothing: their arguments are never evaluated, and no
//! `tracing` code is compiled. Values computed only for an event are
//! therefore computed inside the macro, never in a `let` outside it.
//!
//! Fields are numbers and short static reasons (`node`, `term`, `peer`,
//! `index`, `why`); never message payloads or snapshot data.

/// `trace_event!(info, field = value, ..., "message")`: the `tracing` macro
/// of that level, or nothing without the feature.
#[cfg(feature = "tracing")]
macro_rules! trace_event {
    ($level:ident, $($arg:tt)+) => {
        ::tracing::$level!(target: "quorate_raft_core", $($arg)+)
    };
}

/// `trace_event!(info, field = value, ..., "message")`: the `tracing` macro
/// of that level, or nothing without the feature.
#[cfg(not(feature = "tracing"))]
macro_rules! trace_event {
    ($level:ident, $($arg:tt)+) => {};
}

/// Code that only decides which event to emit (a condition, a choice of
/// message): compiled with the feature, dropped without it.
#[cfg(feature = "tracing")]
macro_rules! if_tracing {
    ($($body:tt)*) => {
        $($body)*
    };
}

/// Code that only decides which event to emit (a condition, a choice of
/// message): compiled with the feature, dropped without it.
#[cfg(not(feature = "tracing"))]
macro_rules! if_tracing {
    ($($body:tt)*) => {};
}
