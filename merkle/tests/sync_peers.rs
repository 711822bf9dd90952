//! Deterministic, seeded simulation of one receiver syncing from several
//! senders over links that reorder, lose and misattribute messages, with
//! peers dropping and coming back at random. Every differing block must be
//! accepted exactly once, only from the peer it was asked of, and none may be
//! lost. Set `QUORATE_SIM_SEEDS=N` to run more seeds; a failure prints its seed.
#![cfg(feature = "sha2")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_merkle::{
    Error, Sha256,
    sync::{Event, Message, Receiver, RequestId, Sender, Server},
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

mod common;
use common::{TestKey, seeds};

/// One sender and the link to it.
struct Peer {
    sender: Sender<Sha256, u8>,
    up: bool,
    to_peer: VecDeque<Message>,
    /// Answers on their way to the receiver; they may outlive the connection.
    to_receiver: VecDeque<Message>,
}

#[derive(Default)]
struct Tally {
    /// Times each block index was reported accepted.
    accepted: BTreeMap<u64, u32>,
    /// Answers refused as late or misdirected.
    refused: u64,
    disconnects: u64,
    misattributed: u64,
}

fn run(seed: u64) -> Tally {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rng.usize(1..700);
    let remote: Vec<Vec<u8>> = (0..n)
        .map(|i| (i as u32 ^ 0xabcd).to_le_bytes().to_vec())
        .collect();
    let mut local = remote.clone();
    match rng.u8(0..3) {
        0 => local.clear(),
        1 => {
            for _ in 0..rng.usize(1..50) {
                let i = rng.usize(..n);
                local[i] = b"stale".to_vec();
            }
        }
        _ => local.truncate(rng.usize(0..n)),
    }
    let peers_n = rng.u8(2..6);
    // One tree, one session per serving peer.
    let server = Server::<Sha256>::new(remote.clone(), &TestKey(0));
    let mut peers: BTreeMap<u8, Peer> = (0..peers_n)
        .map(|p| {
            let peer = Peer {
                sender: server.session(p),
                up: true,
                to_peer: VecDeque::new(),
                to_receiver: VecDeque::new(),
            };
            (p, peer)
        })
        .collect();
    let timeout = Duration::from_millis(40);
    let mut rx = Receiver::<Sha256, TestKey, u8>::new(local, TestKey(0));
    rx.set_request_timeout(timeout);
    // Requests by id: the peer asked and when.
    let mut asked_of: BTreeMap<RequestId, (u8, Duration)> = BTreeMap::new();
    // Requests whose peer dropped since.
    let mut dropped: BTreeSet<RequestId> = BTreeSet::new();
    let mut missing = None;
    let mut tally = Tally::default();
    let mut now = Duration::ZERO;

    for _step in 0..200_000 {
        now += Duration::from_millis(rng.u64(0..3));
        rx.handle_timeout(now);
        // The receiver asks every live peer for work.
        for (&p, peer) in peers.iter_mut().filter(|(_, peer)| peer.up) {
            while let Some(m) = rx.poll_transmit_to(now, p) {
                if let Message::GetNodes { id, .. } | Message::GetBlocks { id, .. } = &m {
                    asked_of.insert(*id, (p, now));
                }
                peer.to_peer
                    .push_back(Message::from_bytes(&m.to_bytes()).unwrap());
            }
        }
        match rng.u8(0..100) {
            // A live peer drops; its answers in transit may still arrive.
            0..2 => {
                let p = rng.u8(0..peers_n);
                let peer = peers.get_mut(&p).unwrap();
                if peer.up {
                    peer.up = false;
                    tally.disconnects += 1;
                    rx.on_peer_disconnect(&p);
                    dropped.extend(asked_of.iter().filter(|(_, a)| a.0 == p).map(|(id, _)| *id));
                    peer.to_peer.clear();
                    while peer.sender.poll_transmit().is_some() {}
                    if rng.bool() {
                        peer.to_receiver.clear();
                    }
                }
            }
            // A dropped peer comes back.
            2..6 => {
                let p = rng.u8(0..peers_n);
                peers.get_mut(&p).unwrap().up = true;
            }
            // A peer takes one request, possibly not the oldest.
            6..50 => {
                let p = rng.u8(0..peers_n);
                let peer = peers.get_mut(&p).unwrap();
                if peer.up && !peer.to_peer.is_empty() {
                    let i = rng.usize(..peer.to_peer.len());
                    let m = peer.to_peer.remove(i).unwrap();
                    if rng.f64() < 0.05 {
                        continue; // lost
                    }
                    peer.sender.handle(m).unwrap();
                    while let Some(a) = peer.sender.poll_transmit() {
                        peer.to_receiver.push_back(a);
                    }
                }
            }
            // An answer reaches the receiver, now and then credited to the
            // wrong peer.
            _ => {
                let p = rng.u8(0..peers_n);
                let Some(m) = peers.get_mut(&p).unwrap().to_receiver.pop_front() else {
                    continue;
                };
                let from = if rng.f64() < 0.03 {
                    tally.misattributed += 1;
                    rng.u8(0..peers_n)
                } else {
                    p
                };
                let id = match &m {
                    Message::Blocks { id, .. } | Message::Nodes { id, .. } => Some(*id),
                    _ => None,
                };
                // Asked of `from`, its connection never dropped, not timed out.
                let live = id.is_some_and(|id| {
                    asked_of
                        .get(&id)
                        .is_some_and(|&(p, sent)| p == from && now < sent + timeout)
                        && !dropped.contains(&id)
                });
                match rx.handle_from(&from, m) {
                    Ok(()) => {
                        if let Some(id) = id {
                            assert!(
                                asked_of.get(&id).is_some_and(|a| a.0 == from),
                                "seed {seed}: answer to {id:?} accepted from peer {from}"
                            );
                        }
                    }
                    Err(Error::Unexpected { .. }) => {
                        // Another peer's disconnect must not cancel this one's work.
                        assert!(
                            !live,
                            "seed {seed}: live answer to {id:?} from {from} refused"
                        );
                        tally.refused += 1;
                    }
                    Err(e) => panic!("seed {seed}: honest answer rejected: {e}"),
                }
                while let Some(e) = rx.poll_event() {
                    match e {
                        Event::BlockAccepted { index } => {
                            *tally.accepted.entry(index).or_default() += 1;
                        }
                        Event::DiffDone { missing: m, .. } => missing = Some(m),
                        _ => {}
                    }
                }
            }
        }
        if rx.is_complete() {
            let got: Vec<&[u8]> = rx.blocks().unwrap();
            assert!(
                got.iter().zip(&remote).all(|(a, b)| *a == b.as_slice()) && got.len() == n,
                "seed {seed}: synced blocks differ"
            );
            let missing = missing.expect("diff finished");
            assert_eq!(
                tally.accepted.len() as u64,
                missing,
                "seed {seed}: a missing block was never accepted"
            );
            if let Some((i, times)) = tally.accepted.iter().find(|(_, t)| **t != 1) {
                panic!("seed {seed}: block {i} accepted {times} times");
            }
            return tally;
        }
    }
    panic!("seed {seed}: sync did not converge: {rx:?}");
}

#[test]
fn several_peers_with_random_disconnects_fetch_every_block_exactly_once() {
    let mut total = Tally::default();
    for seed in 0..seeds() {
        let t = run(seed);
        total.refused += t.refused;
        total.disconnects += t.disconnects;
        total.misattributed += t.misattributed;
    }
    eprintln!(
        "{} disconnects, {} misattributed, {} late or misdirected answers refused",
        total.disconnects, total.misattributed, total.refused
    );
    // The harness must actually exercise the paths under test.
    assert!(
        total.disconnects >= seeds(),
        "{} disconnects",
        total.disconnects
    );
    assert!(total.refused > 0);
}
