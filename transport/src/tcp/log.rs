//! The transport's logging: `tracing` events with feature `tracing`,
//! nothing at all without it.

/// Logs a format-string message at `$level` (`info`, `warn`, `debug`) on
/// target `quorate_transport::tcp`. Without feature `tracing` the
/// arguments are type-checked but never evaluated, so a log call costs
/// nothing and its variables still count as used.
macro_rules! tcp_log {
    ($level:ident, $($arg:tt)+) => {{
        #[cfg(feature = "tracing")]
        ::tracing::$level!(target: "quorate_transport::tcp", $($arg)+);
        #[cfg(not(feature = "tracing"))]
        if false {
            let _ = ::core::format_args!($($arg)+);
        }
    }};
}

pub(crate) use tcp_log;
