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
