//! Known-answer tests against published IDs and layouts, each value from an
//! independent source named beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_ids::{ClockPolicy, Generator, Id, Layout, Parts, UnixMillis, WorkerId};

#[test]
fn discord_documented_snowflake() {
    // Discord API reference, "Snowflakes": 175928847299117063 has timestamp
    // 41944705796 ms after the Discord epoch (1462015105796, 2016-04-30
    // 11:18:25.796 UTC), internal worker 1, internal process 0, increment 7.
    let id = Id::from_u64(175_928_847_299_117_063);
    let parts = id.decompose(Layout::DISCORD);
    assert_eq!(parts.ticks, 41_944_705_796);
    assert_eq!(parts.sequence, 7);
    // The 10-bit worker field is host (5 bits) above process (5 bits).
    assert_eq!(parts.worker, WorkerId::new(1 << 5));
    assert_eq!(Layout::DISCORD.host_and_process(parts.worker), (1, 0));
    assert_eq!(Layout::DISCORD.worker_id(1, 0), Ok(parts.worker));
    assert_eq!(
        id.timestamp(Layout::DISCORD),
        UnixMillis::from_millis(1_462_015_105_796)
    );
    assert_eq!(Layout::DISCORD.compose(parts), Ok(id));
}

#[test]
fn discord_generator_reproduces_the_documented_id() {
    let mut ids =
        Generator::new(Layout::DISCORD, WorkerId::new(1 << 5), ClockPolicy::Reject).unwrap();
    let now = UnixMillis::from_millis(1_462_015_105_796);
    let minted: Vec<Id> = (0..8).map(|_| ids.next(now).unwrap()).collect();
    assert_eq!(minted[7], Id::from_u64(175_928_847_299_117_063));
}

#[test]
fn instagram_engineering_blog_example() {
    // Instagram Engineering, "Sharding & IDs at Instagram" (2012): 1387263000 ms
    // since their epoch in the top 41 bits, shard 31341 % 2000 = 1341 in the
    // next 13, sequence 5001 % 1024 = 905 in the last 10; the blog builds it as
    // (1387263000 << 23) | (1341 << 10) | 905.
    let expected = (1_387_263_000u64 << (64 - 41)) | (1341 << (64 - 41 - 13)) | (5001 % 1024);
    let id = Layout::INSTAGRAM
        .compose(Parts {
            ticks: 1_387_263_000,
            sequence: 905,
            worker: WorkerId::new(31_341 % 2000),
        })
        .unwrap();
    assert_eq!(id.to_u64(), expected);
}

#[test]
fn sonyflake_bit_positions() {
    // sony/sonyflake README: 39 bits of time in units of 10 ms, 8 bits of
    // sequence, 16 bits of machine id, so an ID is time<<24 | seq<<16 | machine
    // and the start time defaults to 2014-09-01 00:00:00 UTC (1409529600 s).
    let layout = Layout::SONYFLAKE;
    let id = Id::from_u64((1_000 << 24) | (3 << 16) | 0xBEEF);
    let parts = id.decompose(layout);
    assert_eq!(
        (parts.ticks, parts.sequence, parts.worker.get()),
        (1_000, 3, 0xBEEF)
    );
    assert_eq!(
        id.timestamp(layout),
        UnixMillis::from_millis(1_409_529_600_000 + 10_000)
    );
}

#[test]
fn twitter_epoch_and_widths() {
    // Twitter's snowflake README: 41 bits of ms since the custom epoch
    // 1288834974657, 10 bits of machine id, 12 bits of sequence; 63 bits total.
    let layout = Layout::TWITTER;
    assert_eq!(layout.epoch(), UnixMillis::from_millis(1_288_834_974_657));
    let id = Id::from_u64((5 << 22) | (0x3FF << 12) | 0xFFF);
    let parts = id.decompose(layout);
    assert_eq!(
        (parts.ticks, parts.worker.get(), parts.sequence),
        (5, 1023, 4095)
    );
    assert!(layout.check(Id::from_u64(1 << 63)).is_err());
}
