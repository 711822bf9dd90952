//! quorate-clocks against crdts::VClock and uhlc::HLC, in the same run.
//!
//! Vector clocks: merge and compare at 8, 64 and 512 actors. Inputs are built
//! once; each iteration merges into a fresh clone made outside the timed
//! region (criterion's `iter_batched`, batches of 64), for both crates;
//! `quorate-in-place` merges repeatedly into one clock, which our borrowing
//! `merge` allows. Compare uses clocks that differ only in the last actor, so
//! both crates must scan everything.
//!
//! HLC: a bare `SystemTime::now()`, uhlc's `new_timestamp` (which reads the
//! system clock itself), and quorate's `Hlc::now` fed the same system clock
//! read; the cost beyond the clock read is each minus the bare read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crdts::{CmRDT, CvRDT, Dot, VClock};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group};
use quorate_clocks::{AtomicHlc, Hlc, HlcTimestamp, VectorClock};

const SIZES: [u64; 3] = [8, 64, 512];

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

/// The same two clocks, as quorate and as crdts values.
type Pair = (VectorClock<u64>, VectorClock<u64>, VClock<u64>, VClock<u64>);

fn pair(actors_a: std::ops::Range<u64>, actors_b: std::ops::Range<u64>) -> Pair {
    let a: Vec<(u64, u64)> = actors_a
        .clone()
        .zip(counters(actors_a.end - actors_a.start, 1))
        .collect();
    let b: Vec<(u64, u64)> = actors_b
        .clone()
        .zip(counters(actors_b.end - actors_b.start, 2))
        .collect();
    let ours_a: VectorClock<u64> = a.iter().copied().collect();
    let ours_b: VectorClock<u64> = b.iter().copied().collect();
    let mut theirs_a = VClock::new();
    let mut theirs_b = VClock::new();
    a.iter()
        .for_each(|&(actor, c)| theirs_a.apply(Dot::new(actor, c)));
    b.iter()
        .for_each(|&(actor, c)| theirs_b.apply(Dot::new(actor, c)));
    (ours_a, ours_b, theirs_a, theirs_b)
}

fn merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("vclock_merge");
    let mut cases: Vec<(String, Pair)> = SIZES
        .iter()
        .map(|&n| (n.to_string(), pair(0..n, 0..n)))
        .collect();
    // Half-overlapping actor sets: the general (sorted-union) path.
    cases.push(("64-half-overlap".into(), pair(0..64, 32..96)));
    for (name, (ours_a, ours_b, theirs_a, theirs_b)) in &cases {
        group.bench_with_input(BenchmarkId::new("quorate", name), &(), |bench, ()| {
            bench.iter_batched(
                || ours_a.clone(),
                |mut a| {
                    a.merge(black_box(ours_b));
                    a
                },
                BatchSize::NumIterations(64),
            )
        });
        // Our merge borrows its input, so it can also run in place on one
        // clock, the steady state of gossip (the same work in the dense path).
        let mut in_place = ours_a.clone();
        group.bench_with_input(
            BenchmarkId::new("quorate-in-place", name),
            &(),
            |bench, ()| bench.iter(|| in_place.merge(black_box(ours_b))),
        );
        group.bench_with_input(BenchmarkId::new("crdts", name), &(), |bench, ()| {
            bench.iter_batched(
                || (theirs_a.clone(), theirs_b.clone()),
                |(mut a, b)| {
                    a.merge(black_box(b));
                    a
                },
                BatchSize::NumIterations(64),
            )
        });
    }
    group.finish();
}

fn compare(c: &mut Criterion) {
    let mut group = c.benchmark_group("vclock_compare");
    for n in SIZES {
        let (ours_a, _, theirs_a, _) = pair(0..n, 0..n);
        // b = a with the last actor one event ahead: ordered, found only at the end.
        let mut ours_b = ours_a.clone();
        ours_b.increment(n - 1);
        let mut theirs_b = theirs_a.clone();
        theirs_b.apply(theirs_b.inc(n - 1));
        assert_eq!(ours_a.partial_cmp(&ours_b), theirs_a.partial_cmp(&theirs_b));
        group.bench_with_input(BenchmarkId::new("quorate", n), &n, |bench, _| {
            bench.iter(|| black_box(&ours_a).partial_cmp(black_box(&ours_b)))
        });
        group.bench_with_input(BenchmarkId::new("crdts", n), &n, |bench, _| {
            bench.iter(|| black_box(&theirs_a).partial_cmp(black_box(&theirs_b)))
        });
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
    targets = merge, compare, hlc
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
