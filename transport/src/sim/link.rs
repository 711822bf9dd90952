//! How one directed link of the simulated network behaves.

use core::time::Duration;

/// The behaviour of one directed link `from -> to`: delay, loss, duplication
/// and whether it keeps order.
///
/// Each message sent over the link is, independently:
/// - lost with probability [`loss`](Self::loss);
/// - otherwise delivered after [`latency`](Self::latency) plus a uniform
///   random extra delay in `[0, jitter]`;
/// - with probability [`duplicate`](Self::duplicate), delivered a second
///   time with its own independently drawn delay.
///
/// Reordering comes from jitter: on an unordered link (the default) a later
/// message can draw a shorter delay and overtake an earlier one. An
/// [`ordered`](Self::with_ordered) link clamps each delivery time so that it
/// is never before the previous one on that link, like a TCP stream.
///
/// Probabilities are clamped to `[0, 1]`; NaN counts as 0.
///
/// ```
/// use core::time::Duration;
/// use quorate_transport::sim::LinkConfig;
///
/// let flaky = LinkConfig::new(Duration::from_millis(5))
///     .with_jitter(Duration::from_millis(20))
///     .with_loss(0.1)
///     .with_duplicate(0.05);
/// assert_eq!(flaky.loss(), 0.1);
/// assert_eq!(LinkConfig::new(Duration::ZERO).with_loss(7.0).loss(), 1.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LinkConfig {
    latency: Duration,
    jitter: Duration,
    loss: f64,
    duplicate: f64,
    ordered: bool,
}

impl Default for LinkConfig {
    /// A reliable, unordered link with 1 ms latency and no jitter.
    fn default() -> Self {
        LinkConfig::new(Duration::from_millis(1))
    }
}

impl LinkConfig {
    /// A reliable link with a fixed `latency`: no jitter, loss or duplication.
    pub const fn new(latency: Duration) -> Self {
        LinkConfig {
            latency,
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            ordered: false,
        }
    }

    /// Sets the base one-way delay.
    pub const fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the maximum random extra delay added to each message.
    pub const fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the probability that a message is lost.
    pub fn with_loss(mut self, probability: f64) -> Self {
        self.loss = clamp_probability(probability);
        self
    }

    /// Sets the probability that a message is delivered twice.
    pub fn with_duplicate(mut self, probability: f64) -> Self {
        self.duplicate = clamp_probability(probability);
        self
    }

    /// Makes the link FIFO (`true`) or lets jitter reorder it (`false`).
    pub const fn with_ordered(mut self, ordered: bool) -> Self {
        self.ordered = ordered;
        self
    }

    /// The base one-way delay.
    pub const fn latency(&self) -> Duration {
        self.latency
    }

    /// The maximum random extra delay.
    pub const fn jitter(&self) -> Duration {
        self.jitter
    }

    /// The probability that a message is lost.
    pub const fn loss(&self) -> f64 {
        self.loss
    }

    /// The probability that a message is delivered twice.
    pub const fn duplicate(&self) -> f64 {
        self.duplicate
    }

    /// Whether the link keeps messages in send order.
    pub const fn ordered(&self) -> bool {
        self.ordered
    }
}

fn clamp_probability(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_clamped() {
        let l = LinkConfig::default()
            .with_loss(-1.0)
            .with_duplicate(f64::NAN);
        assert_eq!(l.loss(), 0.0);
        assert_eq!(l.duplicate(), 0.0);
        assert_eq!(LinkConfig::default().with_duplicate(2.0).duplicate(), 1.0);
    }

    #[test]
    fn builder_sets_every_field() {
        let l = LinkConfig::new(Duration::from_millis(3))
            .with_jitter(Duration::from_millis(4))
            .with_loss(0.25)
            .with_duplicate(0.5)
            .with_ordered(true)
            .with_latency(Duration::from_millis(6));
        assert_eq!(l.latency(), Duration::from_millis(6));
        assert_eq!(l.jitter(), Duration::from_millis(4));
        assert_eq!(l.loss(), 0.25);
        assert_eq!(l.duplicate(), 0.5);
        assert!(l.ordered());
    }
}
