//! The `tracing` feature: an operator can tell who leads, in which term,
//! and why a leader stepped down. A minimal subscriber, scoped to the test's
//! thread, records every event with its fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use harness::{Network, id};
use quorate_raft_core::{Message, MessageBody, Term};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// One event: its level and its fields, the message under `message`.
#[derive(Clone, Debug)]
struct Recorded {
    level: Level,
    fields: BTreeMap<String, String>,
}

impl Recorded {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Collector {
    events: Arc<Mutex<Vec<Recorded>>>,
}

impl Visit for Recorded {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.fields
            .insert(field.name().to_string(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_string(), value.to_string());
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut recorded = Recorded {
            level: *event.metadata().level(),
            fields: BTreeMap::new(),
        };
        event.record(&mut recorded);
        self.events.lock().unwrap().push(recorded);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// Runs `f` with the collector installed on this thread and returns what
/// it recorded.
fn record(f: impl FnOnce()) -> Vec<Recorded> {
    let collector = Collector::default();
    let events = collector.events.clone();
    tracing::subscriber::with_default(collector, f);
    let events = events.lock().unwrap();
    events.clone()
}

fn find<'a>(events: &'a [Recorded], message: &str) -> Vec<&'a Recorded> {
    events.iter().filter(|e| e.message() == message).collect()
}

#[test]
fn an_election_reports_the_leader_its_term_and_votes() {
    let mut net = Network::new(3);
    let events = record(|| net.campaign(1));

    let campaigns = find(&events, "campaign started");
    assert_eq!(campaigns.len(), 1, "{events:#?}");
    assert_eq!(campaigns[0].level, Level::INFO);
    assert_eq!(campaigns[0].field("node"), Some("1"));
    assert_eq!(campaigns[0].field("term"), Some("1"));
    // Node 1 was asked to campaign before its timeout elapsed.
    assert_eq!(campaigns[0].field("why"), Some("campaign requested"));

    let leaders = find(&events, "became leader");
    assert_eq!(leaders.len(), 1, "{events:#?}");
    let leader = leaders[0];
    assert_eq!(leader.level, Level::INFO);
    assert_eq!(leader.field("node"), Some("1"));
    // A fresh cluster's first election is for term 1.
    assert_eq!(leader.field("term"), Some("1"));
    // FIFO delivery: node 2's grant arrives before node 3's, and with its
    // own durable vote node 1 has a quorum of 3 at that point.
    assert_eq!(leader.field("votes"), Some("2"));
    assert_eq!(leader.field("voters"), Some("3"));

    // Both voters granted, and each follower names its new leader.
    let votes = find(&events, "vote");
    for voter in ["2", "3"] {
        assert!(
            votes.iter().any(|v| v.level == Level::DEBUG
                && v.field("node") == Some(voter)
                && v.field("peer") == Some("1")
                && v.field("granted") == Some("true")),
            "no granted vote from {voter}: {events:#?}"
        );
        assert!(
            find(&events, "following a new leader")
                .iter()
                .any(|f| f.field("node") == Some(voter) && f.field("leader") == Some("1")),
            "{voter} did not report following 1: {events:#?}"
        );
    }
    assert_eq!(net.leaders(), vec![id(1)]);
}

#[test]
fn a_leader_that_sees_a_higher_term_reports_stepping_down() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.isolate(1);
    net.campaign(2);
    assert_eq!(net.node(2).term(), Term(2));
    net.heal();

    // Node 2's next heartbeat reaches the old leader (which does not
    // tick, so it sends nothing that could tell it of term 2 otherwise).
    let events = record(|| {
        for _ in 0..net.node(2).config().heartbeat_tick {
            net.node_mut(2).tick();
        }
        net.drive(id(2));
        net.deliver_all();
    });
    let downs = find(&events, "stepped down");
    assert_eq!(downs.len(), 1, "{events:#?}");
    let down = downs[0];
    assert_eq!(down.level, Level::INFO);
    assert_eq!(down.field("node"), Some("1"));
    assert_eq!(down.field("peer"), Some("2"));
    assert_eq!(down.field("term"), Some("2"));
    assert_eq!(down.field("old_term"), Some("1"));
    assert_eq!(down.field("why"), Some("higher term seen"));
    assert_eq!(down.field("role"), Some("Leader"));
    assert!(
        find(&events, "following a new leader")
            .iter()
            .any(|f| f.field("node") == Some("1") && f.field("leader") == Some("2")),
        "{events:#?}"
    );
    assert!(net.node(1).leader() == Some(id(2)));
}

#[test]
fn a_refused_vote_says_why() {
    let mut net = Network::new(3);
    net.campaign(1);
    // Node 3 asks for votes in term 2 with an empty log, behind the
    // leader's no-op entry: node 2 refuses it for a stale log.
    let events = record(|| {
        net.node_mut(2)
            .step(Message {
                from: id(3),
                to: id(2),
                term: Term(2),
                body: MessageBody::RequestVote {
                    last_log_index: quorate_raft_core::LogIndex(0),
                    last_log_term: Term(0),
                    leadership_transfer: true,
                },
            })
            .unwrap();
    });
    let votes = find(&events, "vote");
    assert_eq!(votes.len(), 1, "{events:#?}");
    assert_eq!(votes[0].field("granted"), Some("false"));
    assert_eq!(votes[0].field("why"), Some("stale log"));
    assert_eq!(votes[0].field("peer"), Some("3"));
}

#[test]
fn a_message_from_an_unknown_peer_is_reported_refused() {
    let mut net = Network::new(3);
    let events = record(|| {
        let refused = net.node_mut(1).step(Message {
            from: id(9),
            to: id(1),
            term: Term(5),
            body: MessageBody::RequestVote {
                last_log_index: quorate_raft_core::LogIndex(0),
                last_log_term: Term(0),
                leadership_transfer: false,
            },
        });
        assert!(matches!(
            refused,
            Ok(quorate_raft_core::StepOutcome::Dropped(
                quorate_raft_core::DropReason::UnknownPeer { .. }
            ))
        ));
    });
    let refused = find(&events, "message refused");
    assert_eq!(refused.len(), 1, "{events:#?}");
    assert_eq!(refused[0].level, Level::DEBUG);
    assert_eq!(refused[0].field("peer"), Some("9"));
    assert_eq!(refused[0].field("kind"), Some("RequestVote"));
    assert_eq!(
        refused[0].field("error"),
        Some("message from unknown peer 9")
    );
    // A refused message changes nothing, and no term moved.
    assert!(find(&events, "term advanced: higher term seen").is_empty());
    assert_eq!(net.node(1).term(), Term(0));
}

#[test]
fn a_leadership_transfer_and_a_membership_change_are_reported() {
    let mut net = Network::new(3);
    net.campaign(1);
    net.propose(1, b"a").unwrap();
    let events = record(|| {
        net.node_mut(1).transfer_leadership(id(3)).unwrap();
        net.drive(id(1));
        net.deliver_all();
    });
    let has = |message: &str, node: &str, field: &str, value: &str| {
        find(&events, message)
            .iter()
            .any(|e| e.field("node") == Some(node) && e.field(field) == Some(value))
    };
    assert!(
        has("leadership transfer started", "1", "peer", "3"),
        "{events:#?}"
    );
    assert!(
        has("campaign started", "3", "why", "leadership transfer"),
        "{events:#?}"
    );
    assert!(
        has(
            "leadership transfer finished: the transferee started its election",
            "1",
            "peer",
            "3"
        ),
        "{events:#?}"
    );
    assert!(has("became leader", "3", "term", "2"), "{events:#?}");
    assert_eq!(net.leaders(), vec![id(3)]);

    net.propose(3, b"b").unwrap();
    let events = record(|| {
        net.node_mut(3).remove_member(id(2)).unwrap();
        net.drive(id(3));
        net.deliver_all();
    });
    let committed = find(&events, "configuration change committed");
    assert_eq!(committed.len(), 1, "{events:#?}");
    assert_eq!(committed[0].field("node"), Some("3"));
    let voters = format!("{:?}", std::collections::BTreeSet::from([id(1), id(3)]));
    assert_eq!(committed[0].field("voters"), Some(voters.as_str()));
    assert_eq!(committed[0].field("joint"), Some("false"));
}

/// Events only observe: with every event enabled and recorded, the
/// simulator's runs are the same as without a subscriber.
#[test]
fn recording_every_event_leaves_simulations_unchanged() {
    use quorate_raft_core::sim::{SimOptions, Simulation};
    let options = SimOptions::default();
    let mut recorded = Vec::new();
    for seed in 0..4 {
        let quiet = Simulation::run(seed, &options).unwrap();
        let mut traced = None;
        recorded.extend(record(|| {
            traced = Some(Simulation::run(seed, &options).unwrap());
        }));
        assert_eq!(format!("{quiet:?}"), format!("{:?}", traced.unwrap()));
    }
    for message in ["became leader", "campaign started", "message received"] {
        assert!(!find(&recorded, message).is_empty(), "no {message:?}");
    }
    let count = |level| recorded.iter().filter(|e| e.level == level).count();
    eprintln!(
        "4 seeds: {} events ({} info, {} debug, {} trace)",
        recorded.len(),
        count(Level::INFO),
        count(Level::DEBUG),
        count(Level::TRACE)
    );
}
