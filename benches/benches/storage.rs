//! Appends per second with `fsync`: quorate-raft-core's `SegmentedLog`
//! against a plain `File::write_all` + `sync_data` loop writing the same
//! bytes (the log's own record encoding: length, CRC, entry), with 1 and
//! with 64 entries of 100 bytes per sync. Each iteration is one batch: the
//! appends (encoding, CRC, buffering) and one sync. Files live in the
//! system's temporary directory.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quorate_raft_core::storage::segmented::{Options, SegmentedLog};
use quorate_raft_core::{Configuration, Entry, LogIndex, LogStorage, NodeId, Term};
use std::io::Write;
use std::time::Duration;

const PAYLOAD: usize = 100;
/// A record as the log writes it: len u32, crc u32, tag, term, index, data.
const RECORD: usize = 8 + 17 + PAYLOAD;

fn appends(c: &mut Criterion) {
    let root = std::env::temp_dir().join(format!("quorate-bench-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let data = Bytes::from(vec![7u8; PAYLOAD]);
    let mut group = c.benchmark_group("fsync_appends");
    for batch in [1u64, 64] {
        group.throughput(Throughput::Elements(batch));
        let dir = root.join(format!("log-{batch}"));
        let mut log =
            SegmentedLog::open(&dir, Configuration::new([NodeId(1)]), Options::default()).unwrap();
        let mut next = 1u64;
        group.bench_function(format!("segmented_log_batch_{batch}"), |b| {
            b.iter(|| {
                let entries: Vec<Entry> = (next..next + batch)
                    .map(|i| Entry {
                        term: Term(1),
                        index: LogIndex(i),
                        data: data.clone(),
                    })
                    .collect();
                next += batch;
                log.append(&entries).unwrap();
                log.sync().unwrap();
            })
        });
        let path = root.join(format!("plain-{batch}"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let bytes = vec![7u8; RECORD * batch as usize];
        group.bench_function(format!("plain_write_all_sync_data_batch_{batch}"), |b| {
            b.iter(|| {
                file.write_all(&bytes).unwrap();
                file.sync_data().unwrap();
            })
        });
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    targets = appends
}
criterion_main!(benches);
