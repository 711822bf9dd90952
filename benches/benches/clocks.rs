//! quorate-clocks against crdts::VClock and uhlc::HLC, in the same run.
//!
//! Vector clocks, at equal work on both sides:
//! - merge: every timed iteration clones both inputs, merges one clone into
//!   the other and drops both, for both crates (`clone+merge+drop`). crdts's
//!   `merge` consumes its argument, so this is the least work it can do to
//!   join two clocks it must keep; ours borrows, so the row
//!   `quorate clone-a+merge(&b)+drop` shows what our API needs (one clone),
//!   labelled as such.
//! - compare: `partial_cmp` on both crates with the clocks differing at the
//!   first actor, at the last actor, or at every actor (one clock one event
//!   ahead there: ordered, so every entry must be read), and concurrent at
//!   the first two or the last two actors (an answer known early or late).
//!
//! HLC: a bare `SystemTime::now()`, uhlc's `new_timestamp` (which reads the
//! system clock itself), and quorate's `Hlc::now` fed the same system clock
//! read; the cost beyond the clock read is each minus the bare read.
//!
//! Offset estimation (no peer crate): a full filter (window 8 and 64) taking
//! one more exchange and producing an estimate, the usual step per reply;
//! and an estimate alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crdts::{CmRDT, CvRDT, Dot, VClock};
use criterion::{BenchmarkId, Criterion, criterion_group};
use quorate_clocks::offset::{OffsetEstimator, Sample};
use quorate_clocks::{AtomicHlc, Hlc, HlcTimestamp, VectorClock};

const SIZES: [u64; 3] = [8, 64, 512];

/// A clock as `(actor, counter)` pairs, fed to both crates alike.
type Entries = Vec<(u64, u64)>;

/// Deterministic counters in 1..=1000 (a 64-bit LCG; no OS randomness).
fn counters(n: u64, seed: u64) -> Vec<u64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % 1000 + 1
        })
        .collect()
}

/// The same clock as a quorate and as a crdts value.
fn both(entries: &[(u64, u64)]) -> (VectorClock<u64>, VClock<u64>) {
    let ours: VectorClock<u64> = entries.iter().copied().collect();
    let mut theirs = VClock::new();
    entries
        .iter()
        .for_each(|&(actor, c)| theirs.apply(Dot::new(actor, c)));
    assert_eq!(ours.len(), theirs.dots.len());
    (ours, theirs)
}

fn entries(actors: std::ops::Range<u64>, seed: u64) -> Entries {
    actors
        .clone()
        .zip(counters(actors.end - actors.start, seed))
        .collect()
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("vclock_merge");
    let mut cases: Vec<(String, Entries, Entries)> = SIZES
        .iter()
        .map(|&n| (n.to_string(), entries(0..n, 1), entries(0..n, 2)))
        .collect();
    // Half-overlapping actor sets: the general (sorted-union) path.
    cases.push((
        "64-half-overlap".into(),
        entries(0..64, 1),
        entries(32..96, 2),
    ));
    for (name, a, b) in &cases {
        let (ours_a, theirs_a) = both(a);
        let (ours_b, theirs_b) = both(b);
        let mut check_ours = ours_a.clone();
        check_ours.merge(&ours_b);
        let mut check_theirs = theirs_a.clone();
        check_theirs.merge(theirs_b.clone());
        assert!(
            check_ours
                .iter()
                .eq(check_theirs.dots.iter().map(|(a, c)| (a, *c)))
        );
        group.bench_with_input(
            BenchmarkId::new("quorate clone+merge+drop", name),
            &(),
            |bench, ()| {
                bench.iter(|| {
                    let mut a = black_box(&ours_a).clone();
                    let b = black_box(&ours_b).clone();
                    a.merge(&b);
                    drop(black_box(b));
                    drop(black_box(a));
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("crdts clone+merge+drop", name),
            &(),
            |bench, ()| {
                bench.iter(|| {
                    let mut a = black_box(&theirs_a).clone();
                    let b = black_box(&theirs_b).clone();
                    a.merge(b);
                    drop(black_box(a));
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("quorate clone-a+merge(&b)+drop", name),
            &(),
            |bench, ()| {
                bench.iter(|| {
                    let mut a = black_box(&ours_a).clone();
                    a.merge(black_box(&ours_b));
                    drop(black_box(a));
                })
            },
        );
    }
    group.finish();
}

/// Where two compared clocks differ.
const POSITIONS: [&str; 5] = [
    "first",
    "last",
    "all",
    "first-two-concurrent",
    "last-two-concurrent",
];

/// `a` and `b` over actors `0..n` with `b` changed at `position`.
fn differing(n: u64, position: &str) -> (Entries, Entries) {
    let a = entries(0..n, 1);
    let mut b = a.clone();
    let last = b.len() - 1;
    match position {
        "first" => b[0].1 += 1,
        "last" => b[last].1 += 1,
        "all" => b.iter_mut().for_each(|e| e.1 += 1),
        "first-two-concurrent" => {
            b[0].1 += 1;
            b[1].1 -= 1;
        }
        "last-two-concurrent" => {
            b[last - 1].1 += 1;
            b[last].1 -= 1;
        }
        _ => unreachable!(),
    }
    (a, b)
}

fn compare(c: &mut Criterion) {
    let mut group = c.benchmark_group("vclock_compare");
    for n in SIZES {
        for position in POSITIONS {
            let (a, b) = differing(n, position);
            let (ours_a, theirs_a) = both(&a);
            let (ours_b, theirs_b) = both(&b);
            assert_eq!(ours_a.partial_cmp(&ours_b), theirs_a.partial_cmp(&theirs_b));
            let name = format!("{n}/{position}");
            group.bench_with_input(BenchmarkId::new("quorate", &name), &(), |bench, ()| {
                bench.iter(|| black_box(&ours_a).partial_cmp(black_box(&ours_b)))
            });
            group.bench_with_input(BenchmarkId::new("crdts", &name), &(), |bench, ()| {
                bench.iter(|| black_box(&theirs_a).partial_cmp(black_box(&theirs_b)))
            });
        }
    }
    group.finish();
}

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn hlc(c: &mut Criterion) {
    let mut group = c.benchmark_group("hlc");
    group.bench_function("SystemTime::now (bare)", |bench| {
        bench.iter(SystemTime::now)
    });
    let theirs = uhlc::HLC::default();
    group.bench_function("uhlc new_timestamp", |bench| {
        bench.iter(|| theirs.new_timestamp())
    });
    let mut ours = Hlc::default();
    group.bench_function("quorate now(SystemTime)", |bench| {
        bench.iter(|| ours.now(system_ms()).unwrap())
    });
    // The thread-safe counterpart of uhlc's mutex-guarded HLC (uncontended here).
    let shared = AtomicHlc::default();
    group.bench_function("quorate AtomicHlc now(SystemTime)", |bench| {
        bench.iter(|| shared.now(system_ms()).unwrap())
    });
    let mut ours = Hlc::default();
    let mut physical = 1_700_000_000_000u64;
    group.bench_function("quorate now(given ms)", |bench| {
        bench.iter(|| {
            physical += 1;
            ours.now(black_box(physical)).unwrap()
        })
    });
    // update: a remote stamp slightly behind local physical time.
    let remote_theirs = uhlc::HLC::default().new_timestamp();
    group.bench_function("uhlc update_with_timestamp", |bench| {
        bench.iter(|| {
            theirs
                .update_with_timestamp(black_box(&remote_theirs))
                .unwrap()
        })
    });
    let mut ours = Hlc::default();
    let remote_ours = HlcTimestamp::new(system_ms(), 3).unwrap();
    group.bench_function("quorate update(SystemTime)", |bench| {
        bench.iter(|| ours.update(black_box(remote_ours), system_ms()).unwrap())
    });
    group.finish();
}

/// Exchanges one second apart with a peer 3 ms ahead, wire delays of
/// 50..1050 µs each way and 1..1000 µs of server hold.
fn exchanges(n: u64) -> Vec<Sample> {
    const MS: u64 = 1_000_000;
    let base = 1_700_000_000_000 * MS;
    let out = counters(n, 3);
    let back = counters(n, 4);
    let hold = counters(n, 5);
    (0..n as usize)
        .map(|i| {
            let t1 = base + i as u64 * 1_000 * MS;
            let t2 = t1 + 50_000 + out[i] * 1_000 + 3 * MS;
            let t3 = t2 + hold[i] * 1_000;
            let t4 = t3 - 3 * MS + 50_000 + back[i] * 1_000;
            Sample::new(t1, t2, t3, t4).unwrap()
        })
        .collect()
}

fn offset(c: &mut Criterion) {
    let mut group = c.benchmark_group("offset");
    let stream = exchanges(4096);
    for window in [OffsetEstimator::DEFAULT_WINDOW, 64] {
        let mut filter = OffsetEstimator::new()
            .with_window(window)
            .unwrap()
            .with_max_age_ns(u64::MAX);
        stream[..window].iter().for_each(|s| filter.add(*s));
        let estimate = filter.estimate(stream[window - 1].timestamps()[3]).unwrap();
        assert!(estimate.contains_offset(3_000_000));
        let mut next = window;
        group.bench_function(BenchmarkId::new("add+estimate", window), |bench| {
            bench.iter(|| {
                // Cycle through the stream; later samples keep arriving newest.
                let sample = stream[next];
                next = if next + 1 == stream.len() {
                    window
                } else {
                    next + 1
                };
                if next == window {
                    filter.clear();
                    stream[..window].iter().for_each(|s| filter.add(*s));
                }
                filter.add(black_box(sample));
                black_box(filter.estimate(black_box(sample.timestamps()[3])))
            })
        });
        let now = stream[window - 1].timestamps()[3];
        let mut full = OffsetEstimator::new()
            .with_window(window)
            .unwrap()
            .with_max_age_ns(u64::MAX);
        stream[..window].iter().for_each(|s| full.add(*s));
        group.bench_function(BenchmarkId::new("estimate", window), |bench| {
            bench.iter(|| black_box(&full).estimate(black_box(now)))
        });
    }
    group.finish();
}

/// Median ns per call of each closure, measured in alternating batches so
/// that load changes on a shared machine hit every variant alike.
/// A named closure to time.
type Variant<'a> = (&'static str, Box<dyn FnMut() + 'a>);

fn interleaved(variants: &mut [Variant<'_>], rounds: usize, batch: u32) -> Vec<f64> {
    let mut samples = vec![Vec::with_capacity(rounds); variants.len()];
    for round in 0..rounds {
        for k in 0..variants.len() {
            let index = (round + k) % variants.len();
            let run = &mut variants[index].1;
            let start = Instant::now();
            for _ in 0..batch {
                run();
            }
            samples[index].push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// The HLC goal: cost beyond the physical-clock read, quorate vs uhlc.
fn hlc_overhead_summary() {
    let theirs = uhlc::HLC::default();
    let mut ours = Hlc::default();
    let mut given = 1_700_000_000_000u64;
    let mut sink = 0u64;
    let mut pure = Hlc::default();
    let shared = AtomicHlc::default();
    let shared_pure = AtomicHlc::default();
    let mut shared_given = 1_700_000_000_000u64;
    let mut variants: Vec<Variant<'_>> = vec![
        (
            "SystemTime::now",
            Box::new(|| {
                black_box(SystemTime::now());
            }),
        ),
        (
            "uhlc::system_time_clock",
            Box::new(|| {
                black_box(uhlc::system_time_clock());
            }),
        ),
        (
            "uhlc new_timestamp",
            Box::new(|| {
                black_box(theirs.new_timestamp());
            }),
        ),
        (
            "system_ms (our read)",
            Box::new(|| sink ^= black_box(system_ms())),
        ),
        (
            "quorate now(system_ms)",
            Box::new(|| {
                let _ = black_box(ours.now(system_ms()));
            }),
        ),
        (
            "quorate now(given ms)",
            Box::new(|| {
                given += 1;
                let _ = black_box(pure.now(black_box(given)));
            }),
        ),
        (
            "AtomicHlc now(system_ms)",
            Box::new(|| {
                let _ = black_box(shared.now(system_ms()));
            }),
        ),
        (
            "AtomicHlc now(given ms)",
            Box::new(|| {
                shared_given += 1;
                let _ = black_box(shared_pure.now(black_box(shared_given)));
            }),
        ),
    ];
    let medians = interleaved(&mut variants, 400, 1000);
    let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
    drop(variants);
    println!("\nHLC cost beyond the physical-clock read (median of interleaved batches, ns/call):");
    for (name, ns) in names.iter().zip(&medians) {
        println!("  {name:<26} {ns:>7.1}");
    }
    let uhlc_beyond_bare = medians[2] - medians[0];
    let uhlc_beyond_own = medians[2] - medians[1];
    let ours_beyond_bare = medians[4] - medians[0];
    let ours_beyond_own = medians[4] - medians[3];
    println!("  uhlc    new_timestamp - SystemTime::now      = {uhlc_beyond_bare:>6.1} ns");
    println!("  uhlc    new_timestamp - its own clock read   = {uhlc_beyond_own:>6.1} ns");
    println!("  quorate now(system_ms) - SystemTime::now     = {ours_beyond_bare:>6.1} ns");
    println!("  quorate now(system_ms) - system_ms           = {ours_beyond_own:>6.1} ns");
    println!(
        "  ratio quorate/uhlc beyond SystemTime::now = {:.2}; beyond each one's own read = {:.2}; quorate now(given ms)/uhlc = {:.2}",
        ours_beyond_bare / uhlc_beyond_bare,
        ours_beyond_own / uhlc_beyond_own,
        medians[5] / uhlc_beyond_bare
    );
    println!(
        "  AtomicHlc: now(system_ms) - system_ms = {:.1} ns; now(given ms)/uhlc beyond SystemTime::now = {:.2}",
        medians[6] - medians[3],
        medians[7] / uhlc_beyond_bare
    );
    black_box(sink);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = merge, compare, hlc, offset
}

fn main() {
    benches();
    // Only under `cargo bench` (which passes --bench), and only when the hlc
    // group is not filtered out.
    let args: Vec<String> = std::env::args().collect();
    let filters: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args.iter().any(|a| a == "--bench")
        && (filters.is_empty()
            || filters
                .iter()
                .any(|f| "hlc".contains(f.as_str()) || f.contains("hlc")))
    {
        hlc_overhead_summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
