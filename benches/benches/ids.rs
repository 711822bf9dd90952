//! quorate-ids against rs-snowflake and sonyflake, in one run:
//! - `next_caller_time`: the pure cost of one ID when the caller supplies the
//!   time, at equal work against rs-snowflake's `lazy_generate`: our layout is
//!   rs-snowflake's (42 bits of ms since 1970 | 10 worker | 12 sequence, 64 bits,
//!   same IDs), both loops compute the same time from the iteration counter
//!   (1 ms per 4,096 IDs, which is when `lazy_generate` moves its own time on),
//!   and rs-snowflake, which takes no time, gets it through `black_box`;
//! - `system_clock`: end to end on the system clock, waits included, so the
//!   time per ID gives IDs per millisecond against each layout's cap;
//! - `two_threads`: `AtomicGenerator` shared by two threads against a
//!   `Mutex<Generator>`.
//!
//! Run: `cargo bench -p quorate-benches --bench ids`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, Throughput, criterion_group};
use quorate_ids::{
    AtomicGenerator, ClockPolicy, ConstLayout, FieldOrder, Generator, IdError, Layout,
    SystemClockGenerator, UnixMillis, WorkerId,
};

/// A time well inside every preset's range (2025-06-15).
const BASE: u64 = 1_750_000_000_000;
/// The caller's clock advances one ms every 4,096 IDs: a quarter of the seed
/// layout's 16,384 per ms, so `next` never blocks and measures minting only.
const IDS_PER_MS: u32 = 12;

/// rs-snowflake's layout: 42 bits of ms since 1970, 5 + 5 bits of machine and
/// node ids (our worker field), 12 bits of sequence, worker above sequence.
const RS_LAYOUT: Layout = match Layout::new(42, 12, 10, UnixMillis::UNIX_EPOCH) {
    Ok(layout) => layout.with_order(FieldOrder::WorkerThenSequence),
    Err(_) => panic!("invalid layout"),
};

/// The same layout fixed at compile time.
#[derive(Clone, Copy, Debug, Default)]
struct RsConst;
impl ConstLayout for RsConst {
    const LAYOUT: Layout = RS_LAYOUT;
}

/// The time both sides are given for the `n`th ID.
fn time_of(n: u64) -> UnixMillis {
    UnixMillis::from_millis(BASE + (n >> IDS_PER_MS))
}

/// A run-time layout the optimizer cannot see through.
fn opaque(layout: Layout) -> Layout {
    black_box(layout)
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// Reads peer IDs with our layouts: the presets must agree with the peers.
fn check_layouts_against_peers() {
    // rs-snowflake: 42 bits of ms since 1970 | 5 machine | 5 node | 12 sequence.
    let rs = RS_LAYOUT;
    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 2);
    let id = quorate_ids::Id::from_u64(u64::try_from(peer.real_time_generate()).unwrap());
    assert_eq!(rs.decompose(id).worker, WorkerId::new((1 << 5) | 2));
    let now = system_now().as_millis();
    assert!(rs.timestamp(id).as_millis().abs_diff(now) < 1_000);

    let peer = sonyflake::Sonyflake::builder()
        .machine_id(&|| Ok(0xBEEF))
        .finalize()
        .unwrap();
    let id = peer.next_id().unwrap();
    let theirs = sonyflake::decompose(id);
    let ours = Layout::SONYFLAKE.decompose(quorate_ids::Id::from_u64(id.to_u64()));
    assert_eq!(ours.ticks, theirs.time);
    assert_eq!(ours.sequence, theirs.sequence);
    assert_eq!(ours.worker.get(), theirs.machine_id);
}

fn system_now() -> UnixMillis {
    UnixMillis::from_duration_since_epoch(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap(),
    )
}

fn next_caller_time(c: &mut Criterion) {
    check_layouts_against_peers();
    let mut group = c.benchmark_group("ids/next_caller_time");
    group.throughput(Throughput::Elements(1));

    let mut dynamic =
        Generator::new(opaque(RS_LAYOUT), WorkerId::new(33), ClockPolicy::Reject).unwrap();
    let mut n = 0;
    group.bench_function("quorate Generator<Layout> rs layout", |b| {
        b.iter(|| {
            n += 1;
            dynamic.next(time_of(n)).unwrap()
        });
    });

    let mut fixed = Generator::new(RsConst, WorkerId::new(33), ClockPolicy::Reject).unwrap();
    let mut n = 0;
    group.bench_function("quorate Generator<ConstLayout> rs layout", |b| {
        b.iter(|| {
            n += 1;
            fixed.next(time_of(n)).unwrap()
        });
    });

    let atomic =
        AtomicGenerator::new(opaque(RS_LAYOUT), WorkerId::new(33), ClockPolicy::Reject).unwrap();
    let mut n: u64 = 0;
    group.bench_function("quorate AtomicGenerator rs layout (1 thread)", |b| {
        b.iter(|| {
            n += 1;
            atomic.next(time_of(n)).unwrap()
        });
    });

    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    let mut n: u64 = 0;
    group.bench_function("rs-snowflake lazy_generate (same time given)", |b| {
        b.iter(|| {
            n += 1;
            black_box(time_of(n));
            peer.lazy_generate()
        });
    });
    group.finish();
}

fn system_clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("ids/system_clock");
    group.throughput(Throughput::Elements(1));

    let seed =
        SystemClockGenerator::new(Layout::SEED, WorkerId::new(1), ClockPolicy::WaitUntil).unwrap();
    group.bench_function("quorate SystemClockGenerator seed (cap 16384/ms)", |b| {
        b.iter(|| seed.next().unwrap());
    });
    let twitter =
        SystemClockGenerator::new(Layout::TWITTER, WorkerId::new(1), ClockPolicy::WaitUntil)
            .unwrap();
    group.bench_function("quorate SystemClockGenerator twitter (cap 4096/ms)", |b| {
        b.iter(|| twitter.next().unwrap());
    });
    let sony =
        SystemClockGenerator::new(Layout::SONYFLAKE, WorkerId::new(1), ClockPolicy::WaitUntil)
            .unwrap();
    group.bench_function(
        "quorate SystemClockGenerator sonyflake (cap 25.6/ms)",
        |b| {
            b.iter(|| sony.next().unwrap());
        },
    );

    // One clock read per tick instead of per ID: 256 IDs per call.
    let batched =
        SystemClockGenerator::new(Layout::SEED, WorkerId::new(2), ClockPolicy::WaitUntil).unwrap();
    let mut batch = [quorate_ids::Id::from_u64(0); 256];
    group.throughput(Throughput::Elements(256));
    group.bench_function(
        "quorate SystemClockGenerator::fill seed x256 (cap 16384/ms)",
        |b| {
            b.iter(|| batched.fill(&mut batch).unwrap());
        },
    );
    group.throughput(Throughput::Elements(1));

    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    group.bench_function("rs-snowflake real_time_generate (cap 4096/ms)", |b| {
        b.iter(|| peer.real_time_generate());
    });
    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    group.bench_function("rs-snowflake generate (cap 4096/ms)", |b| {
        b.iter(|| peer.generate());
    });
    let peer = sonyflake::Sonyflake::builder()
        .machine_id(&|| Ok(1))
        .finalize()
        .unwrap();
    group.bench_function("sonyflake next_id (cap 25.6/ms)", |b| {
        b.iter(|| peer.next_id().unwrap());
    });
    group.finish();
}

/// Two threads mint `iters` IDs between them from one shared minter, each on a
/// caller clock advancing 1 ms per 4,096 of its own IDs from where the
/// generator left off; blocked calls move that thread's clock to `retry_at`.
fn two_threads<F>(iters: u64, start: UnixMillis, mint: F) -> Duration
where
    F: Fn(UnixMillis) -> Result<quorate_ids::Id, IdError> + Sync,
{
    let began = Instant::now();
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                let mut skip = 0;
                for i in 0..iters / 2 {
                    let now = UnixMillis::from_millis(start.as_millis() + skip + (i >> IDS_PER_MS));
                    match mint(now) {
                        Ok(id) => {
                            black_box(id);
                        }
                        // This thread's clock fell behind the other's: catch up.
                        Err(
                            IdError::WouldBlock { retry_at: to, .. }
                            | IdError::ClockMovedBackwards { last: to, .. },
                        ) => skip = to.as_millis() - start.as_millis() - (i >> IDS_PER_MS),
                        Err(e) => panic!("{e}"),
                    }
                }
            });
        }
    });
    began.elapsed()
}

fn resume_point(last: Option<quorate_ids::Id>) -> UnixMillis {
    last.map_or(UnixMillis::from_millis(BASE), |id| {
        Layout::SEED.timestamp(id).saturating_add_millis(1)
    })
}

fn two_thread_contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("ids/two_threads");
    group.throughput(Throughput::Elements(1));
    let policy = ClockPolicy::Tolerate(Duration::from_secs(1));

    let atomic = AtomicGenerator::new(Layout::SEED, WorkerId::new(1), policy).unwrap();
    group.bench_function("quorate AtomicGenerator", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, resume_point(atomic.last_issued()), |now| {
                atomic.next(now)
            })
        });
    });

    let locked = Mutex::new(Generator::new(Layout::SEED, WorkerId::new(1), policy).unwrap());
    group.bench_function("Mutex<quorate Generator>", |b| {
        b.iter_custom(|iters| {
            let start = resume_point(locked.lock().unwrap().last_issued());
            two_threads(iters, start, |now| locked.lock().unwrap().next(now))
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = next_caller_time, system_clock, two_thread_contention
}
/// This thread's (on-CPU, waiting-for-a-CPU) nanoseconds so far, from the
/// scheduler: on a shared machine a thread runnable but not running misses
/// ticks it could have filled, so the cap report states how much it ran.
fn thread_schedstat() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// Mints with `mint` (which returns how many IDs it minted) for `wall` and
/// prints IDs per wall millisecond against `cap`, and the share of the time
/// the thread was on a CPU.
fn cap_line(name: &str, cap_per_ms: f64, wall: Duration, mut mint: impl FnMut() -> u64) {
    let before = thread_schedstat();
    let began = Instant::now();
    let mut minted = 0;
    while began.elapsed() < wall {
        for _ in 0..64 {
            minted += mint();
        }
    }
    let elapsed = began.elapsed();
    let per_ms = minted as f64 / (elapsed.as_secs_f64() * 1e3);
    let (on_cpu, per_cpu_ms) = match (before, thread_schedstat()) {
        (Some((run0, _)), Some((run1, _))) => {
            let ran = Duration::from_nanos(run1 - run0).as_secs_f64();
            (
                format!("{:5.1}%", ran / elapsed.as_secs_f64() * 100.0),
                format!("{:9.1}", minted as f64 / (ran * 1e3)),
            )
        }
        _ => ("n/a".to_owned(), "n/a".to_owned()),
    };
    println!(
        "| {name:<48} | {cap_per_ms:>7.1} | {per_ms:>9.1} | {:>6.1}% | {on_cpu} | {per_cpu_ms} |",
        per_ms / cap_per_ms * 100.0
    );
}

/// The least nanoseconds per ID over `ROUNDS` runs of `PER_ROUND` calls: on a
/// shared machine the fastest round is the one least disturbed by others.
fn best_ns_per_id(name: &str, mut mint: impl FnMut(u64)) {
    const ROUNDS: u32 = 7;
    const PER_ROUND: u64 = 5_000_000;
    let best = (0..ROUNDS)
        .map(|round| {
            let began = Instant::now();
            for i in 0..PER_ROUND {
                mint(u64::from(round) * PER_ROUND + i);
            }
            began.elapsed()
        })
        .min()
        .unwrap_or_default();
    println!(
        "| {name:<48} | {:6.2} |",
        best.as_secs_f64() * 1e9 / PER_ROUND as f64
    );
}

/// The pure cost of one ID with the caller's time, best of several rounds,
/// at equal work with rs-snowflake (its layout, the same time computation).
fn cost_report() {
    println!("\n| mint with caller time, best of 7 x 5M | ns/ID |");
    println!("|---|---:|");
    let mut dynamic =
        Generator::new(opaque(RS_LAYOUT), WorkerId::new(33), ClockPolicy::Reject).unwrap();
    best_ns_per_id("quorate Generator<Layout>::next, rs layout", |n| {
        black_box(dynamic.next(time_of(n)).unwrap());
    });
    let mut fixed = Generator::new(RsConst, WorkerId::new(33), ClockPolicy::Reject).unwrap();
    best_ns_per_id("quorate Generator<ConstLayout>::next, rs layout", |n| {
        black_box(fixed.next(time_of(n)).unwrap());
    });
    let mut seed =
        Generator::new(opaque(Layout::SEED), WorkerId::new(33), ClockPolicy::Reject).unwrap();
    best_ns_per_id("quorate Generator<Layout>::next, seed layout", |n| {
        black_box(seed.next(time_of(n)).unwrap());
    });
    let atomic =
        AtomicGenerator::new(opaque(RS_LAYOUT), WorkerId::new(33), ClockPolicy::Reject).unwrap();
    best_ns_per_id("quorate AtomicGenerator::next, rs layout", |n| {
        black_box(atomic.next(time_of(n)).unwrap());
    });
    let batched =
        AtomicGenerator::new(opaque(RS_LAYOUT), WorkerId::new(33), ClockPolicy::Reject).unwrap();
    let mut batch = [quorate_ids::Id::from_u64(0); 64];
    let mut left = 0;
    best_ns_per_id("quorate AtomicGenerator::next_batch(64), per ID", |n| {
        if left == 0 {
            left = batched.next_batch(time_of(n), &mut batch).unwrap();
        }
        left -= 1;
        black_box(batch[left]);
    });
    let mut raw = 0u64;
    let counter = std::sync::atomic::AtomicU64::new(0);
    best_ns_per_id("floor: one AtomicU64::fetch_add (Relaxed)", |_| {
        raw ^= counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    });
    black_box(raw);
    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    best_ns_per_id("rs-snowflake lazy_generate (same time given)", |n| {
        black_box(time_of(n));
        black_box(peer.lazy_generate());
    });
    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    best_ns_per_id("rs-snowflake lazy_generate (bare)", |_| {
        black_box(peer.lazy_generate());
    });
}

/// IDs per millisecond of wall time on one thread, every generator on the
/// system clock, against its layout's cap.
fn cap_report() {
    let wall = Duration::from_secs(1);
    println!(
        "\n| generator (system clock, 1 thread, 1 s each) | cap/ms | IDs/wall ms | of cap | on CPU | IDs/on-CPU ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let seed =
        SystemClockGenerator::new(Layout::SEED, WorkerId::new(1), ClockPolicy::WaitUntil).unwrap();
    cap_line(
        "quorate SystemClockGenerator::next, seed",
        16_384.0,
        wall,
        || {
            black_box(seed.next().unwrap());
            1
        },
    );
    let filled =
        SystemClockGenerator::new(Layout::SEED, WorkerId::new(2), ClockPolicy::WaitUntil).unwrap();
    let mut batch = [quorate_ids::Id::from_u64(0); 256];
    cap_line(
        "quorate SystemClockGenerator::fill(256), seed",
        16_384.0,
        wall,
        || {
            filled.fill(&mut batch).unwrap();
            black_box(&batch);
            256
        },
    );
    let twitter =
        SystemClockGenerator::new(Layout::TWITTER, WorkerId::new(1), ClockPolicy::WaitUntil)
            .unwrap();
    cap_line(
        "quorate SystemClockGenerator::next, twitter",
        4_096.0,
        wall,
        || {
            black_box(twitter.next().unwrap());
            1
        },
    );
    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    cap_line("rs-snowflake real_time_generate", 4_096.0, wall, || {
        black_box(peer.real_time_generate());
        1
    });
    let mut peer = snowflake::SnowflakeIdGenerator::new(1, 1);
    cap_line(
        "rs-snowflake generate (clock read every 4096)",
        4_096.0,
        wall,
        || {
            black_box(peer.generate());
            1
        },
    );
    let sony =
        SystemClockGenerator::new(Layout::SONYFLAKE, WorkerId::new(1), ClockPolicy::WaitUntil)
            .unwrap();
    cap_line(
        "quorate SystemClockGenerator::next, sonyflake",
        25.6,
        wall,
        || {
            black_box(sony.next().unwrap());
            1
        },
    );
    let peer = sonyflake::Sonyflake::builder()
        .machine_id(&|| Ok(1))
        .finalize()
        .unwrap();
    cap_line("sonyflake next_id", 25.6, wall, || {
        black_box(peer.next_id().unwrap());
        1
    });
}

fn main() {
    // `cargo bench -- <filter>` runs only the criterion benches matching it;
    // the cap report runs with the full bench or with the filter `cap`.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if filter.as_deref().is_none_or(|f| f == "cap") {
        cost_report();
        cap_report();
    }
    if filter.as_deref() != Some("cap") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
