//! How one directed link of the simulated network behaves.

use core::num::NonZeroU64;
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
/// # Bandwidth, queues and lanes
///
/// By default a link has unlimited bandwidth: messages never wait for each
/// other. A link [`with_bandwidth`](Self::with_bandwidth) serializes them
/// like a real connection: a message of `n` bytes (as told by the
/// network's size function, see [`WireSize`](super::WireSize)) occupies the
/// link for `n / bandwidth` seconds, rounded up to a nanosecond, and a
/// message sent while the link is busy waits in the link's queue (head-of-
/// line blocking). When its transmission ends, the latency, jitter and
/// ordering above apply. Loss and duplication are decided at send time; a
/// lost message takes no bandwidth, and a duplicate shares its original's
/// transmission.
///
/// The queue is unbounded unless [`with_max_queued_bytes`](Self::with_max_queued_bytes)
/// or [`with_max_queued_messages`](Self::with_max_queued_messages) bound it:
/// a message that would take the waiting messages past a bound is refused
/// (dropped as [`LossCause::QueueFull`](super::LossCause::QueueFull), which
/// [`Network::send`](super::Network::send) returns). The message being
/// transmitted no longer counts, so a link that is idle takes any message.
///
/// A link [`with_lanes`](Self::with_lanes) has two queues, like the real
/// transport: urgent messages (for a [`Frame`](crate::framing::Frame),
/// [`Flags::URGENT`](crate::framing::Flags::URGENT)) wait in their own lane,
/// bounded separately, and whenever the link becomes free the urgent lane
/// goes first, so a bulk backlog delays an urgent message by at most the one
/// message being transmitted. Without lanes (the default) there is one FIFO
/// queue and urgency is ignored.
///
/// Bounds and lanes only matter on a link with a bandwidth; on other links
/// nothing ever waits.
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
    /// Bytes per second; `None` is unlimited.
    #[cfg_attr(feature = "serde", serde(default))]
    bandwidth: Option<NonZeroU64>,
    #[cfg_attr(feature = "serde", serde(default))]
    lanes: bool,
    #[cfg_attr(feature = "serde", serde(default))]
    max_queued_bytes: Option<u64>,
    #[cfg_attr(feature = "serde", serde(default))]
    max_queued_messages: Option<u64>,
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
            bandwidth: None,
            lanes: false,
            max_queued_bytes: None,
            max_queued_messages: None,
        }
    }

    /// A node-to-node TCP connection fed by one bounded send queue: FIFO
    /// ([`ordered`](Self::with_ordered)), `bytes_per_second` of bandwidth, at
    /// most `queue_bytes` waiting to be sent, the default 1 ms latency, no
    /// loss and one lane, so control traffic queues behind bulk traffic.
    /// Add [`with_lanes(true)`](Self::with_lanes) to model a transport that
    /// sends urgent frames first, and [`with_latency`](Self::with_latency) for
    /// a longer path.
    ///
    /// ```
    /// use quorate_transport::sim::LinkConfig;
    ///
    /// // 10 MB/s with a 1 MiB send queue, as the old kv-cluster peer link.
    /// let old = LinkConfig::tcp_like(10_000_000, 1 << 20);
    /// assert!(old.ordered() && !old.lanes());
    /// assert_eq!(old.bandwidth(), Some(10_000_000));
    /// assert_eq!(old.max_queued_bytes(), Some(1 << 20));
    /// let two_lanes = old.with_lanes(true);
    /// assert!(two_lanes.lanes());
    /// ```
    pub const fn tcp_like(bytes_per_second: u64, queue_bytes: u64) -> Self {
        LinkConfig::new(Duration::from_millis(1))
            .with_ordered(true)
            .with_bandwidth(bytes_per_second)
            .with_max_queued_bytes(Some(queue_bytes))
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

    /// Sets the bandwidth in bytes per second; 0 means unlimited (the
    /// default), where messages never wait for each other.
    pub const fn with_bandwidth(mut self, bytes_per_second: u64) -> Self {
        self.bandwidth = NonZeroU64::new(bytes_per_second);
        self
    }

    /// Gives the link an urgent lane that is sent ahead of bulk messages
    /// (`true`), or one FIFO queue for everything (`false`, the default).
    pub const fn with_lanes(mut self, lanes: bool) -> Self {
        self.lanes = lanes;
        self
    }

    /// Bounds the bytes waiting in each of the link's queues (`None`:
    /// unbounded, the default).
    pub const fn with_max_queued_bytes(mut self, bytes: Option<u64>) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// Bounds the messages waiting in each of the link's queues (`None`:
    /// unbounded, the default).
    pub const fn with_max_queued_messages(mut self, messages: Option<u64>) -> Self {
        self.max_queued_messages = messages;
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

    /// The bandwidth in bytes per second, if limited.
    pub const fn bandwidth(&self) -> Option<u64> {
        match self.bandwidth {
            Some(b) => Some(b.get()),
            None => None,
        }
    }

    /// Whether urgent messages have their own lane, sent first.
    pub const fn lanes(&self) -> bool {
        self.lanes
    }

    /// The bound on bytes waiting in each queue, if any.
    pub const fn max_queued_bytes(&self) -> Option<u64> {
        self.max_queued_bytes
    }

    /// The bound on messages waiting in each queue, if any.
    pub const fn max_queued_messages(&self) -> Option<u64> {
        self.max_queued_messages
    }

    /// How long a message of `bytes` occupies the link: `bytes / bandwidth`
    /// rounded up to a nanosecond, or zero on an unlimited link.
    pub fn transmission_time(&self, bytes: u64) -> Duration {
        match self.bandwidth {
            None => Duration::ZERO,
            Some(bw) => {
                let nanos = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(bw.get()));
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
            }
        }
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
        assert_eq!(l.bandwidth(), None);
        assert!(!l.lanes());
        assert_eq!(l.max_queued_bytes(), None);
        assert_eq!(l.max_queued_messages(), None);

        let p = l
            .with_bandwidth(1_000)
            .with_lanes(true)
            .with_max_queued_bytes(Some(10))
            .with_max_queued_messages(Some(2));
        assert_eq!(p.bandwidth(), Some(1_000));
        assert!(p.lanes());
        assert_eq!(p.max_queued_bytes(), Some(10));
        assert_eq!(p.max_queued_messages(), Some(2));
        assert_eq!(p.with_bandwidth(0).bandwidth(), None);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn configs_saved_before_bandwidth_existed_still_load() {
        let old = r#"{"latency":{"secs":0,"nanos":5000000},"jitter":{"secs":0,"nanos":0},"loss":0.5,"duplicate":0.0,"ordered":true}"#;
        let l: LinkConfig = serde_json::from_str(old).unwrap();
        assert_eq!(
            l,
            LinkConfig::new(Duration::from_millis(5))
                .with_loss(0.5)
                .with_ordered(true)
        );
        let paced = LinkConfig::tcp_like(1_000, 10).with_lanes(true);
        let back: LinkConfig =
            serde_json::from_str(&serde_json::to_string(&paced).unwrap()).unwrap();
        assert_eq!(back, paced);
    }

    #[test]
    fn transmission_time_is_size_over_bandwidth_rounded_up() {
        let l = LinkConfig::default().with_bandwidth(1_000_000); // 1 MB/s
        assert_eq!(l.transmission_time(1_000), Duration::from_millis(1));
        assert_eq!(l.transmission_time(0), Duration::ZERO);
        // 1 byte at 3 B/s is 333333333.3 ns: rounded up, never free.
        let slow = LinkConfig::default().with_bandwidth(3);
        assert_eq!(slow.transmission_time(1), Duration::from_nanos(333_333_334));
        assert_eq!(
            LinkConfig::default().transmission_time(u64::MAX),
            Duration::ZERO
        );
        // Saturates instead of overflowing.
        assert_eq!(
            LinkConfig::default()
                .with_bandwidth(1)
                .transmission_time(u64::MAX),
            Duration::from_nanos(u64::MAX)
        );
    }
}
