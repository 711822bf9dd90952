//! Helpers shared by the TCP test files: bounded waits and hand-built wire
//! bytes for connections that misbehave.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use quorate_transport::framing::{ChannelId, Flags, Frame};
use quorate_transport::tcp::{CONTROL_CHANNEL, PeerId, StreamWrapper, TcpTransport};
use quorate_transport::{Event, Transport};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The next event, within 10 s.
pub async fn next_event<W: StreamWrapper>(t: &mut TcpTransport<W>) -> Event<PeerId, Frame> {
    tokio::time::timeout(Duration::from_secs(10), t.recv())
        .await
        .expect("no event within 10 s")
        .unwrap()
}

/// The next message, skipping connects and disconnects, within 10 s.
pub async fn next_message<W: StreamWrapper>(t: &mut TcpTransport<W>) -> (PeerId, Frame) {
    loop {
        if let Event::Message { from, msg } = next_event(t).await {
            return (from, msg);
        }
    }
}

/// Waits for `want`, skipping other events, within 10 s.
pub async fn wait_for<W: StreamWrapper>(t: &mut TcpTransport<W>, want: Event<PeerId, Frame>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, t.recv())
            .await
            .unwrap_or_else(|_| panic!("{want:?} did not come within 10 s"))
            .unwrap();
        if ev == want {
            return;
        }
    }
}

/// Polls `cond` every 5 ms for up to 10 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The wire bytes of a frame header.
pub fn header(len: u32, channel: ChannelId, flags: Flags) -> Vec<u8> {
    let mut h = len.to_be_bytes().to_vec();
    h.extend_from_slice(&channel.0.to_be_bytes());
    h.push(flags.bits());
    h
}

/// The wire bytes of a hello claiming `id`.
pub fn hello(id: u64) -> Vec<u8> {
    let mut h = header(8, CONTROL_CHANNEL, Flags::NONE);
    h.extend_from_slice(&id.to_be_bytes());
    h
}

/// Reads `stream` until the other side closes it; how long that took, or
/// `None` if it stayed open for `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut sink = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A frame on `channel` carrying `s`.
pub fn frame(channel: u32, s: &str) -> Frame {
    Frame::new(ChannelId(channel), Bytes::copy_from_slice(s.as_bytes()))
}
