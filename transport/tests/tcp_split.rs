//! A transport split into a cloneable sender and one receiver: one task
//! receives while others send, shutdown from any sender ends every handle,
//! and the halves share one set of queues, limits and stats (127.0.0.1,
//! ephemeral ports only).
#![cfg(feature = "tokio")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{eventually, next_event};
use quorate_transport::framing::{ChannelId, Frame};
use quorate_transport::tcp::{PeerId, TcpConfig, TcpError, TcpReceiver, TcpSender, TcpTransport};
use quorate_transport::{Event, Transport};

const A: PeerId = PeerId(1);
const B: PeerId = PeerId(2);
const SENDERS: u32 = 4;
const EACH: u32 = 200;

fn numbered(sender: u32, i: u32) -> Frame {
    let mut p = sender.to_be_bytes().to_vec();
    p.extend_from_slice(&i.to_be_bytes());
    Frame::new(ChannelId(1), Bytes::from(p))
}

fn parse(f: &Frame) -> (u32, u32) {
    let p = &f.payload;
    let n = |r: core::ops::Range<usize>| u32::from_be_bytes(p[r].try_into().unwrap());
    (n(0..4), n(4..8))
}

/// The next event on a receiver half, within 10 s.
async fn next(rx: &mut TcpReceiver) -> Event<PeerId, Frame> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("no event within 10 s")
        .unwrap()
}

/// Waits (10 s at most) for `rx` to fail with `Shutdown`. A `Disconnected`
/// may come first: a connection closing while the transport shuts down
/// can still be reported.
async fn ends_with_shutdown(rx: &mut TcpReceiver) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Err(TcpError::Shutdown)) => return,
            Ok(Ok(Event::Disconnected(B))) => {}
            other => panic!("{other:?} instead of the end"),
        }
    }
}

#[test]
fn the_halves_can_go_to_other_tasks() {
    fn sender<T: Clone + Send + Sync + 'static>() {}
    fn receiver<T: Send + Sync + 'static>() {}
    sender::<TcpSender>();
    receiver::<TcpReceiver>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_receives_while_others_send_both_ways() {
    let a = TcpTransport::bind(A, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = a.local_addr().unwrap();
    let (a_tx, mut a_rx) = a.into_split();
    // B keeps its transport whole, receives on it in a task, and sends
    // through sender handles from others.
    let mut b = TcpTransport::client(B, TcpConfig::default());
    b.add_peer(A, addr);
    let b_tx = b.sender();

    let a_receives = tokio::spawn(async move {
        let mut next_of = vec![0u32; SENDERS as usize];
        let mut got = 0;
        while got < SENDERS * EACH {
            if let Event::Message { from, msg } = next(&mut a_rx).await {
                assert_eq!(from, B);
                let (s, i) = parse(&msg);
                // Each sender's frames keep their order.
                assert_eq!(i, next_of[s as usize], "sender {s}");
                next_of[s as usize] += 1;
                got += 1;
            }
        }
        a_rx
    });
    let b_sends: Vec<_> = (0..SENDERS)
        .map(|s| {
            let tx = b_tx.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    tx.send(A, numbered(s, i)).await.unwrap();
                }
            })
        })
        .collect();
    // A answers from a task of its own once B has connected (A knows no
    // address for B: its frames go back on B's connection).
    let a_answers = {
        let a_tx = a_tx.clone();
        tokio::spawn(async move {
            eventually("B connected to A", || a_tx.open_connections() == 1).await;
            for i in 0..EACH {
                a_tx.send(B, numbered(9, i)).await.unwrap();
            }
        })
    };
    let b_receives = tokio::spawn(async move {
        let mut i = 0;
        while i < EACH {
            if let Event::Message { from, msg } = next_event(&mut b).await {
                assert_eq!((from, parse(&msg)), (A, (9, i)));
                i += 1;
            }
        }
        b
    });
    for s in b_sends {
        s.await.unwrap();
    }
    a_answers.await.unwrap();
    let _a_rx = a_receives.await.unwrap();
    let b = b_receives.await.unwrap();
    assert_eq!(a_tx.stats().peer_connections, 1);
    drop(b_tx);
    b.shutdown().await;
    a_tx.shutdown().await;
}

#[tokio::test]
async fn shutdown_from_one_sender_ends_every_handle_after_the_waiting_events() {
    let a = TcpTransport::bind(A, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = a.local_addr().unwrap();
    let (a_tx, mut a_rx) = a.into_split();
    let other = a_tx.clone();
    let b = TcpTransport::client(B, TcpConfig::default());
    b.add_peer(A, addr);
    for i in 0..3 {
        b.send(A, numbered(0, i)).await.unwrap();
    }
    // Connected and three messages wait in A's lane.
    eventually("four events waiting", || a_tx.stats().inbound.peers == 4).await;
    a_tx.shutdown().await;
    assert!(matches!(
        other.send(B, numbered(0, 9)).await,
        Err(TcpError::Shutdown)
    ));
    assert!(matches!(
        other.try_send(B, numbered(0, 9)),
        Err(TcpError::Shutdown)
    ));
    assert_eq!(next(&mut a_rx).await, Event::Connected(B));
    for i in 0..3 {
        let Event::Message { msg, .. } = next(&mut a_rx).await else {
            panic!("not a message");
        };
        assert_eq!(parse(&msg), (0, i));
    }
    ends_with_shutdown(&mut a_rx).await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_transport_runs_until_its_last_sender_is_dropped() {
    let a = TcpTransport::bind(A, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    let addr = a.local_addr().unwrap();
    let (a_tx, mut a_rx) = a.into_split();
    let kept = a_tx.clone();
    let mut b = TcpTransport::client(B, TcpConfig::default());
    b.add_peer(A, addr);
    b.send(A, numbered(0, 0)).await.unwrap();
    assert_eq!(next(&mut a_rx).await, Event::Connected(B));
    // One sender gone, one left: still up both ways.
    drop(a_tx);
    b.send(A, numbered(0, 1)).await.unwrap();
    let Event::Message { msg, .. } = next(&mut a_rx).await else {
        panic!("not a message");
    };
    assert_eq!(parse(&msg), (0, 0));
    let Event::Message { msg, .. } = next(&mut a_rx).await else {
        panic!("not a message");
    };
    assert_eq!(parse(&msg), (0, 1));
    kept.send(B, numbered(1, 0)).await.unwrap();
    assert_eq!(next_event(&mut b).await, Event::Connected(A));
    let Event::Message { msg, .. } = next_event(&mut b).await else {
        panic!("not a message");
    };
    assert_eq!(parse(&msg), (1, 0));
    // The last sender gone: A shuts down, B sees it go, the receiver ends.
    drop(kept);
    assert_eq!(next_event(&mut b).await, Event::Disconnected(A));
    ends_with_shutdown(&mut a_rx).await;
    b.shutdown().await;
}

#[tokio::test]
async fn clones_share_queues_limits_and_stats() {
    // Nobody listens there: frames stay queued, dials fail.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = gone.local_addr().unwrap();
    drop(gone);
    let config = TcpConfig {
        peer_queue: 3,
        peer_queue_bytes: 100,
        backoff_initial: Duration::from_millis(5),
        ..TcpConfig::default()
    };
    let (tx, _rx) = TcpTransport::client(A, config).into_split();
    let other = tx.clone();
    tx.add_peer(B, nowhere);
    tx.add_peer(PeerId(3), nowhere);
    let small = |n: usize| Frame::new(ChannelId(1), Bytes::from(vec![0u8; n]));
    for _ in 0..3 {
        tx.try_send(B, small(1)).unwrap();
    }
    // The other handle finds the same queue full.
    assert!(matches!(
        other.try_send(B, small(1)),
        Err(TcpError::Full { peer: B, hwm: 3 })
    ));
    other.try_send(PeerId(3), small(60)).unwrap();
    let refused = tx.try_send(PeerId(3), small(50)).unwrap_err();
    assert!(
        matches!(
            refused,
            TcpError::FullBytes {
                peer: PeerId(3),
                len: 50,
                queued: 60,
                max: 100
            }
        ),
        "{refused:?}"
    );
    let said = refused.to_string();
    assert!(
        said.contains("50") && said.contains("60") && said.contains("100"),
        "{said}"
    );
    assert_eq!((tx.dropped(), other.dropped()), (2, 2));
    assert_eq!(other.stats().dropped, 2);
    let depth = tx.stats().queues;
    assert_eq!(
        depth
            .iter()
            .map(|q| (q.peer, q.bulk_frames))
            .collect::<Vec<_>>(),
        [(B, 3), (PeerId(3), 1)]
    );
    // A dial failure seen by one handle is seen by all.
    eventually("a failed dial", || other.dial_failure(B).is_some()).await;
    assert_eq!(tx.dial_failure(B).unwrap().addr, nowhere);
    other.remove_peer(B);
    assert!(tx.dial_failure(B).is_none());
    assert!(matches!(
        tx.try_send(B, small(1)),
        Err(TcpError::UnknownPeer(B))
    ));
    tx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_recv_drains_what_is_waiting_in_order_and_never_waits() {
    let mut a = TcpTransport::bind(A, "127.0.0.1:0", TcpConfig::default())
        .await
        .unwrap();
    assert!(a.try_recv().is_none(), "nothing has arrived yet");
    let b = TcpTransport::client(B, TcpConfig::default());
    b.add_peer(A, a.local_addr().unwrap());
    for i in 0..EACH {
        b.send(A, numbered(0, i)).await.unwrap();
    }
    // Everything sent is waiting in A's inbound lanes (with the connect).
    eventually("every frame queued at A", || {
        let depth = a.stats().inbound;
        (depth.urgent + depth.peers + depth.clients) as u32 > EACH
    })
    .await;
    let mut next = 0;
    while let Some(event) = a.try_recv() {
        if let Event::Message { msg, .. } = event {
            assert_eq!(parse(&msg), (0, next));
            next += 1;
        }
    }
    assert_eq!(next, EACH, "try_recv handed out every waiting frame");
    assert!(a.try_recv().is_none());
    // recv still works after the drain.
    b.send(A, numbered(1, 0)).await.unwrap();
    let (_, msg) = common::next_message(&mut a).await;
    assert_eq!(parse(&msg), (1, 0));
    b.shutdown().await;
    a.shutdown().await;
}
