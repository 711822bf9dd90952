//! Property tests of the offset estimator against a simulated pair of
//! clocks: a client on true time and a server `θ0` ahead and drifting at
//! `r` ppm, exchanging over a path with any one-way delays. The estimate must
//! bracket the server's true offset at any later time; the filter must pick
//! the narrowest (with no drift, the lowest-delay) sample; the window must
//! hold the newest samples whatever the insertion order; and the bound must
//! only grow with time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use quorate_clocks::offset::{DriftRate, Estimate, OffsetError, OffsetEstimator, Sample};

/// A server clock: `theta0` ns ahead of true time at `base`, drifting at
/// `ppm` parts per million (either sign). Readings round down.
#[derive(Debug, Clone, Copy)]
struct ServerClock {
    base: u64,
    theta0: i64,
    ppm: i32,
}

impl ServerClock {
    /// The true offset (server minus true time) at true time `t`.
    fn offset_at(self, t: u64) -> i128 {
        let elapsed = i128::from(t) - i128::from(self.base);
        i128::from(self.theta0) + (elapsed * i128::from(self.ppm)).div_euclid(1_000_000)
    }

    fn read(self, t: u64) -> u64 {
        u64::try_from(i128::from(t) + self.offset_at(t)).unwrap()
    }
}

/// One exchange, by its true times and path.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    t1: u64,
    out_ns: u64,
    hold_ns: u64,
    back_ns: u64,
}

impl Exchange {
    /// The sample the client records, and the true time it receives at.
    fn run(self, server: ServerClock) -> Result<(Sample, u64), OffsetError> {
        let t2_true = self.t1 + self.out_ns;
        let t3_true = t2_true + self.hold_ns;
        let t4 = t3_true + self.back_ns;
        let sample = Sample::new(self.t1, server.read(t2_true), server.read(t3_true), t4)?;
        Ok((sample, t4))
    }
}

const BASE: u64 = 1_700_000_000_000_000_000; // 2023, in ns

fn server(max_ppm: i32) -> impl Strategy<Value = ServerClock> {
    (-10_000_000_000i64..10_000_000_000, -max_ppm..=max_ppm).prop_map(|(theta0, ppm)| ServerClock {
        base: BASE,
        theta0,
        ppm,
    })
}

/// An exchange within a minute of `BASE`, with delays up to 10 ms.
fn exchange() -> impl Strategy<Value = Exchange> {
    (
        0u64..60_000_000_000,
        0u64..10_000_000,
        0u64..1_000_000,
        0u64..10_000_000,
    )
        .prop_map(|(at, out_ns, hold_ns, back_ns)| Exchange {
            t1: BASE + at,
            out_ns,
            hold_ns,
            back_ns,
        })
}

fn contains(estimate: &Estimate, offset: i128) -> bool {
    i128::from(estimate.low_ns()) <= offset && offset <= i128::from(estimate.high_ns())
}

proptest! {
    /// Whatever the asymmetry of the path, `[t3 − t4, t2 − t1]` holds the
    /// true offset, and `θ ± error bound` covers that bracket.
    #[test]
    fn brackets_the_true_offset_without_drift(server in server(0), x in exchange()) {
        let (sample, t4) = x.run(server).unwrap();
        let truth = server.offset_at(x.t1);
        // From first principles: θ = θ* + (out − back)/2, δ = out + back.
        prop_assert_eq!(sample.delay_ns(), x.out_ns + x.back_ns);
        let twice = 2 * truth + i128::from(x.out_ns) - i128::from(x.back_ns);
        prop_assert_eq!(i128::from(sample.offset_ns()), twice.div_euclid(2));
        let estimate = sample.estimate(t4, DriftRate::ppm(0));
        prop_assert!(contains(&estimate, truth));
        let (offset, bound) = (i128::from(estimate.offset_ns()), i128::from(estimate.error_bound_ns()));
        prop_assert!(offset - bound <= truth && truth <= offset + bound);
        prop_assert!(2 * bound <= i128::from(sample.delay_ns()) + 1);
    }

    /// With the server drifting at up to the configured rate, the estimate
    /// at any later time brackets the offset at that time.
    #[test]
    fn brackets_the_true_offset_under_drift(
        server in server(500),
        x in exchange(),
        later in 0u64..120_000_000_000,
    ) {
        let outcome = x.run(server);
        // A server clock running fast over a hold longer than the wire
        // delay can make δ negative; that sample is refused, not used.
        if let Err(e) = outcome {
            prop_assert!(matches!(e, OffsetError::NegativeDelay { .. }), "{e}");
            prop_assert!(server.ppm > 0 && x.out_ns + x.back_ns < x.hold_ns);
            return Ok(());
        }
        let (sample, t4) = outcome.unwrap();
        let now = t4 + later;
        let mut filter = OffsetEstimator::new()
            .with_drift_rate(DriftRate::ppm(500))
            .with_max_age_ns(u64::MAX);
        filter.add(sample);
        let estimate = filter.estimate(now).unwrap();
        prop_assert!(contains(&estimate, server.offset_at(now)), "{estimate:?} at {now}");
        prop_assert_eq!(estimate, sample.estimate(now, DriftRate::ppm(500)));
        // Readings of the server's clock taken at or before `now` are plausible.
        prop_assert!(estimate.is_plausible(server.read(t4), now));
        prop_assert!(estimate.is_plausible(server.read(now), now));
        prop_assert!(estimate.peer_clock_at(now).contains(&server.read(now)));
    }

    /// Several exchanges through one filter: still brackets the truth, and
    /// is never wider than the best sample alone.
    #[test]
    fn filter_brackets_and_picks_the_narrowest(
        server in server(500),
        xs in prop::collection::vec(exchange(), 1..20),
        later in 0u64..10_000_000_000,
    ) {
        let drift = DriftRate::ppm(500);
        let mut filter = OffsetEstimator::new()
            .with_window(32)
            .unwrap()
            .with_drift_rate(drift)
            .with_max_age_ns(u64::MAX);
        let mut samples = Vec::new();
        for x in &xs {
            if let Ok((sample, _)) = x.run(server) {
                filter.add(sample);
                samples.push(sample);
            }
        }
        prop_assume!(!samples.is_empty());
        let now = samples.iter().map(|s| s.timestamps()[3]).max().unwrap() + later;
        let estimate = filter.estimate(now).unwrap();
        prop_assert!(contains(&estimate, server.offset_at(now)));
        let narrowest = samples
            .iter()
            .map(|s| s.estimate(now, drift).error_bound_ns())
            .min()
            .unwrap();
        prop_assert_eq!(estimate.error_bound_ns(), narrowest);
    }

    /// No drift: the filter trusts the lowest-delay sample in the window.
    #[test]
    fn without_drift_the_min_delay_sample_wins(
        server in server(0),
        xs in prop::collection::vec(exchange(), 1..16),
        window in 1usize..10,
    ) {
        let mut filter = OffsetEstimator::new()
            .with_window(window)
            .unwrap()
            .with_drift_rate(DriftRate::ppm(0))
            .with_max_age_ns(u64::MAX);
        let mut samples: Vec<Sample> = xs.iter().map(|x| x.run(server).unwrap().0).collect();
        for s in &samples {
            filter.add(*s);
        }
        // Model: the window keeps the `window` newest (greatest) samples.
        samples.sort();
        let kept = &samples[samples.len().saturating_sub(window)..];
        prop_assert_eq!(filter.samples(), kept);
        let estimate = filter.estimate(u64::MAX).unwrap();
        let min_delay = kept.iter().map(Sample::delay_ns).min().unwrap();
        prop_assert_eq!(estimate.delay_ns(), min_delay);
        prop_assert_eq!(estimate.error_bound_ns(), min_delay.div_ceil(2));
    }

    /// The window holds, and the kept samples and estimate do not depend on
    /// the order the samples arrived in.
    #[test]
    fn independent_of_insertion_order(
        (xs, shuffled) in prop::collection::vec(exchange(), 1..24)
            .prop_flat_map(|xs| (Just(xs.clone()), Just(xs).prop_shuffle())),
        server in server(500),
        window in 1usize..12,
        now_after in 0u64..60_000_000_000,
    ) {
        let fill = |xs: &[Exchange]| -> Result<OffsetEstimator, TestCaseError> {
            let mut filter = OffsetEstimator::new().with_window(window).unwrap();
            for x in xs {
                if let Ok((sample, _)) = x.run(server) {
                    filter.add(sample);
                    prop_assert!(filter.samples().len() <= window);
                }
            }
            Ok(filter)
        };
        let (a, b) = (fill(&xs)?, fill(&shuffled)?);
        prop_assert_eq!(&a, &b);
        let now = BASE + now_after;
        prop_assert_eq!(a.estimate(now), b.estimate(now));
    }

    /// The bound never shrinks as time passes without new samples, and
    /// what is fresh later was fresh before.
    #[test]
    fn error_bound_grows_with_age(
        server in server(500),
        xs in prop::collection::vec(exchange(), 1..10),
        max_age in 0u64..60_000_000_000,
        a in 0u64..120_000_000_000,
        b in 0u64..120_000_000_000,
    ) {
        let mut filter = OffsetEstimator::new().with_max_age_ns(max_age);
        for x in &xs {
            if let Ok((sample, _)) = x.run(server) {
                filter.add(sample);
            }
        }
        let (early, late) = (BASE + a.min(b), BASE + a.max(b));
        if let Some(later) = filter.estimate(late) {
            let earlier = filter.estimate(early).expect("fresh later, so fresh before");
            prop_assert!(earlier.error_bound_ns() <= later.error_bound_ns());
            prop_assert!(later.age_ns() <= max_age);
        }
        // Pruning at `late` keeps exactly what `late` can still use.
        let before = filter.estimate(late);
        filter.prune(late);
        prop_assert_eq!(filter.estimate(late), before);
        prop_assert_eq!(filter.samples().is_empty(), before.is_none());
    }

    /// Any four timestamps: a sample exactly when the exchange is possible,
    /// computed without overflow.
    #[test]
    fn sample_new_is_total(t in any::<[u64; 4]>(), small in any::<[u32; 4]>()) {
        for [t1, t2, t3, t4] in [t, small.map(u64::from)] {
            let wide = [t1, t2, t3, t4].map(i128::from);
            let possible = wide[3] >= wide[0]
                && wide[2] >= wide[1]
                && wide[3] - wide[0] >= wide[2] - wide[1]
                && i64::try_from(wide[1] - wide[0]).is_ok()
                && i64::try_from(wide[2] - wide[3]).is_ok();
            match Sample::new(t1, t2, t3, t4) {
                Ok(s) => {
                    prop_assert!(possible);
                    let offset2 = (wide[1] - wide[0]) + (wide[2] - wide[3]);
                    let delay = (wide[3] - wide[0]) - (wide[2] - wide[1]);
                    prop_assert_eq!(i128::from(s.offset_ns()), offset2.div_euclid(2));
                    prop_assert_eq!(i128::from(s.delay_ns()), delay);
                    prop_assert_eq!(s.timestamps(), [t1, t2, t3, t4]);
                    let e = s.estimate(t4, DriftRate::ppm(u32::MAX));
                    prop_assert!(e.low_ns() <= s.low_ns() && s.high_ns() <= e.high_ns());
                }
                Err(_) => prop_assert!(!possible),
            }
        }
    }
}
