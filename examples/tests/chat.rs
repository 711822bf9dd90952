//! The chat example over real TCP on 127.0.0.1: every client displays every
//! message, never before one it depends on, and the client that dropped its
//! connection catches up from the archive.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use quorate_examples::chat::{self, ChatMessage, Displayed, Via};

fn position(shown: &[Displayed], text: &str) -> usize {
    shown
        .iter()
        .position(|d| d.message.text == text)
        .unwrap_or_else(|| panic!("{text:?} not displayed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_display_the_same_causal_order() {
    let report = chat::run().await.unwrap();
    print!("{}", report.render());
    assert_eq!(report.archived, 7);
    assert_eq!(report.displays.len(), 3);
    assert!(report.causally_consistent());

    // The script's reply structure, independent of the clocks: each message
    // was posted only after its author had displayed these.
    let after = [
        ("lunch, anyone?", "yes! noodles?"),
        ("lunch, anyone?", "count me in"),
        ("yes! noodles?", "noodles it is, 12:30"),
        ("count me in", "noodles it is, 12:30"),
        ("noodles it is, 12:30", "booking a table"),
        ("booking a table", "table for three booked"),
        (
            "table for three booked",
            "sorry, lost my connection. see you there!",
        ),
    ];
    for (name, shown) in &report.displays {
        assert_eq!(shown.len(), 7, "{name}");
        for (cause, effect) in after {
            assert!(
                position(shown, cause) < position(shown, effect),
                "{name} shows {effect:?} before {cause:?}"
            );
        }
        // Snowflake ids are unique and each author's increase with its posts.
        let mut ids: Vec<u64> = shown.iter().map(|d| d.message.id.to_u64()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 7);
        for a in shown {
            for b in shown {
                let (ma, mb) = (&a.message, &b.message);
                if ma.author == mb.author && ma.clock.get(&ma.author) < mb.clock.get(&mb.author) {
                    assert!(ma.id < mb.id, "{name}: ids of {} out of order", ma.author);
                }
            }
        }
    }

    // Carol was away for these two: she got them from the archive.
    let carol = &report.displays["carol"];
    for text in ["noodles it is, 12:30", "booking a table"] {
        assert_eq!(carol[position(carol, text)].via, Via::Archive, "{text}");
    }
    // Bob's post reached her on the feed before its causes (the script
    // makes it so): the causal buffer held it until the archive's arrived.
    let table = &carol[position(carol, "table for three booked")];
    assert_eq!(table.via, Via::Feed);
    assert!(table.waited);
    assert!(carol.iter().filter(|d| d.waited).count() == 1);
    // Alice and Bob never needed the archive.
    for name in ["alice", "bob"] {
        assert!(report.displays[name].iter().all(|d| d.via != Via::Archive));
    }
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    let report_message = ChatMessage {
        id: quorate_ids::Id::from_u64(42),
        author: "alice".into(),
        clock: [("alice".to_string(), 1u64)].into_iter().collect(),
        text: "hi".into(),
    };
    let bytes = report_message.to_bytes();
    assert_eq!(ChatMessage::from_bytes(&bytes).unwrap(), report_message);
    // Every strict prefix that cuts into the header or clock is refused.
    for len in 0..bytes.len() - "hi".len() {
        assert!(
            ChatMessage::from_bytes(&bytes[..len]).is_err(),
            "prefix {len}"
        );
    }
    // A length field claiming more than is there.
    let mut lying = bytes.clone();
    lying[8] = 0xff;
    assert!(ChatMessage::from_bytes(&lying).is_err());
}

mod archive {
    use quorate_clocks::VectorClock;
    use quorate_examples::chat::ChatMessage;
    use quorate_examples::chat::archive::{Appended, Archive, ArchiveError, FILE_NAME};
    use quorate_examples::jepsen::cluster::run_dir;
    use std::fs;
    use std::io::Write;

    fn message(id: u64, author: &str, clock: &[(&str, u64)], text: &str) -> ChatMessage {
        ChatMessage {
            id: quorate_ids::Id::from_u64(id),
            author: author.into(),
            clock: clock.iter().map(|&(a, n)| (a.to_string(), n)).collect(),
            text: text.into(),
        }
    }

    #[test]
    fn posts_are_admitted_in_causal_order_per_author_and_retries_are_duplicates() {
        let mut a = Archive::in_memory();
        let first = message(10, "alice", &[("alice", 1)], "one");
        assert_eq!(a.append(&first), Appended::Stored);
        assert_eq!(a.append(&first), Appended::Duplicate);
        // The same slot, another message: a second client with this name.
        let impostor = message(11, "alice", &[("alice", 1)], "other");
        assert_eq!(a.append(&impostor), Appended::Conflict);
        // alice's third before her second.
        let third = message(13, "alice", &[("alice", 3)], "three");
        assert_eq!(a.append(&third), Appended::Gap);
        assert_eq!(
            a.append(&message(14, "bob", &[("alice", 1)], "x")),
            Appended::Invalid
        );
        assert_eq!(
            a.append(&message(15, "bob", &[("bob", 2)], "x")),
            Appended::Gap
        );
        let second = message(12, "alice", &[("alice", 2)], "two");
        assert_eq!(a.append(&second), Appended::Stored);
        assert_eq!(a.append(&third), Appended::Stored);
        a.sync().unwrap();
        assert_eq!(a.messages().unwrap(), [first, second, third]);
    }

    #[test]
    fn pages_hold_what_the_clock_lacks_and_continue_where_they_ended() {
        let mut a = Archive::in_memory();
        for (id, m) in [
            message(1, "alice", &[("alice", 1)], "a1"),
            message(2, "bob", &[("alice", 1), ("bob", 1)], "b1"),
            message(3, "alice", &[("alice", 2), ("bob", 1)], "a2"),
            message(4, "bob", &[("alice", 2), ("bob", 2)], "b2"),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(a.append(&m), Appended::Stored, "{id}");
        }
        a.sync().unwrap();
        let text = |bytes: &Vec<u8>| ChatMessage::from_bytes(bytes).unwrap().text;
        // Has alice's first only: everything else, from position 1.
        let since: VectorClock<String> = [("alice".to_string(), 1)].into_iter().collect();
        let page = a.page(&since, 0, 2, usize::MAX).unwrap();
        assert_eq!(
            page.messages.iter().map(text).collect::<Vec<_>>(),
            ["b1", "a2"]
        );
        assert!(page.more);
        let rest = a.page(&since, page.next, 2, usize::MAX).unwrap();
        assert_eq!(rest.messages.iter().map(text).collect::<Vec<_>>(), ["b2"]);
        assert!(!rest.more);
        // Has bob's both but not alice's second.
        let since: VectorClock<String> = [("alice".to_string(), 1), ("bob".to_string(), 2)]
            .into_iter()
            .collect();
        let page = a.page(&since, 0, 10, usize::MAX).unwrap();
        assert_eq!(page.messages.iter().map(text).collect::<Vec<_>>(), ["a2"]);
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_it_is_refused() {
        let dir = run_dir("chat-archive").unwrap();
        let one = message(1, "alice", &[("alice", 1)], "one");
        let two = message(2, "alice", &[("alice", 2)], "two");
        {
            let mut a = Archive::open(&dir).unwrap();
            assert_eq!(a.append(&one), Appended::Stored);
            assert_eq!(a.append(&two), Appended::Stored);
            a.sync().unwrap();
        }
        let path = dir.join(FILE_NAME);
        let whole = fs::read(&path).unwrap();
        // A third record cut short by a crash.
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&whole[8..8 + 15]).unwrap();
        drop(f);
        let mut a = Archive::open(&dir).unwrap();
        assert_eq!(a.torn_bytes(), 15);
        assert_eq!(a.messages().unwrap(), [one.clone(), two.clone()]);
        // Going on after the cut works, and survives another reopen.
        let three = message(3, "alice", &[("alice", 3)], "three");
        assert_eq!(a.append(&three), Appended::Stored);
        a.sync().unwrap();
        drop(a);
        let mut a = Archive::open(&dir).unwrap();
        assert_eq!(a.torn_bytes(), 0);
        assert_eq!(a.messages().unwrap(), [one, two, three]);
        drop(a);
        // A flipped byte in the first record's text is not a torn write.
        let mut bytes = fs::read(&path).unwrap();
        let first_end = 8 + 12 + u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        bytes[first_end - 1] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        match Archive::open(&dir) {
            Err(ArchiveError::Corrupt { offset, .. }) => assert_eq!(offset, 8),
            other => panic!("expected corruption at byte 8, got {other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}

/// The library's client against the library's server: posts are
/// acknowledged, and a client that joins later gets them from the archive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_posts_are_acknowledged_and_a_later_client_sees_them() {
    use quorate_examples::chat::archive::Archive;
    use quorate_examples::chat::client::{self, ClientOptions};
    use quorate_examples::chat::server::{self, ServerStats};
    use quorate_transport::tcp::TcpTransport;
    use std::time::Duration;
    use tokio::sync::{mpsc, oneshot, watch};

    let net = TcpTransport::bind(chat::SERVER, "127.0.0.1:0", server::tcp_config())
        .await
        .unwrap();
    let addr = net.local_addr().unwrap();
    let (stats_tx, stats) = watch::channel(ServerStats::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server::serve(
        net,
        Archive::in_memory(),
        async {
            let _ = stopped.await;
        },
        stats_tx,
    ));
    let bound = Duration::from_secs(20);

    let (lines, input) = mpsc::channel(4);
    for line in ["one", "two", "three"] {
        lines.send(line.to_owned()).await.unwrap();
    }
    drop(lines);
    let mut alice_saw = Vec::new();
    let summary = tokio::time::timeout(
        bound,
        client::run(ClientOptions::new("alice", addr), input, |d| {
            alice_saw.push((d.via, d.message.text.clone()));
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(summary.acknowledged, 3);
    assert_eq!(
        alice_saw,
        [
            (Via::Local, "one"),
            (Via::Local, "two"),
            (Via::Local, "three")
        ]
        .map(|(v, t)| (v, t.to_owned()))
    );
    // Acknowledged means archived (the counters follow within the loop).
    let mut stats = stats;
    tokio::time::timeout(bound, stats.wait_for(|s| s.stored == 3 && s.archived == 3))
        .await
        .unwrap()
        .unwrap();

    let (lines, input) = mpsc::channel(1);
    drop(lines);
    let mut bob_saw = Vec::new();
    tokio::time::timeout(
        bound,
        client::run(ClientOptions::new("bob", addr), input, |d| {
            bob_saw.push((d.via, d.message.author.clone(), d.message.text.clone()));
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let expected: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|t| (Via::Archive, "alice".to_owned(), (*t).to_owned()))
        .collect();
    assert_eq!(bob_saw, expected);
    stop.send(()).unwrap();
    let final_stats = server.await.unwrap().unwrap();
    assert_eq!(final_stats.archived, 3);
    assert_eq!(final_stats.refused, 0);
}
