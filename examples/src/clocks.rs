//! Three processes exchange messages; every event is stamped by a Lamport
//! clock, a vector clock and a hybrid logical clock, side by side.
//!
//! The run is deterministic: either the scripted scenario the `clocks`
//! example prints, or a seeded random one. The happened-before relation is
//! also computed the textbook way, from program order and send/receive edges,
//! so tests can check each clock against it.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use quorate_clocks::{
    Causality, Hlc, HlcTimestamp, LamportClock, LamportTimestamp, MaxDrift, VectorClock,
};

/// Physical time at the start of every run, ms since the Unix epoch
/// (2023-11-14T22:13:20Z): a realistic magnitude for the HLC.
pub const EPOCH_MS: u64 = 1_700_000_000_000;

/// The HLC's maximum accepted drift in these runs.
pub const MAX_DRIFT: MaxDrift = MaxDrift::millis(100);

/// One of the three processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Process(pub u8);

impl Process {
    /// The three processes of the example.
    pub const ALL: [Process; 3] = [Process(0), Process(1), Process(2)];

    /// How far this process's wall clock is off, in ms (A exact, B fast, C slow).
    pub fn skew_ms(self) -> i64 {
        match self.0 {
            0 => 0,
            1 => 6,
            _ => -4,
        }
    }
}

impl fmt::Display for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let letter = char::from(b'A' + self.0 % 26);
        write!(f, "{letter}")
    }
}

/// An identifier of a message in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(pub usize);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}", self.0 + 1)
    }
}

/// One step of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A local event at a process.
    Local(Process),
    /// `from` sends the next message to `to`.
    Send {
        /// The sender.
        from: Process,
        /// The destination.
        to: Process,
    },
    /// The destination of `message` receives it.
    Receive(MessageId),
}

/// What an event was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A local step.
    Local,
    /// Sending `message` to `to`.
    Send {
        /// The message sent.
        message: MessageId,
        /// Its destination.
        to: Process,
    },
    /// Receiving `message` from `from`.
    Receive {
        /// The message received.
        message: MessageId,
        /// Its sender.
        from: Process,
    },
}

/// One event with its three timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Short name: process letter and its event count, e.g. `b2`.
    pub name: String,
    /// Where it happened.
    pub process: Process,
    /// What it was.
    pub kind: EventKind,
    /// The process's wall-clock reading, ms since the run started.
    pub wall_ms: u64,
    /// Lamport stamp.
    pub lamport: LamportTimestamp<Process>,
    /// Vector clock after the event.
    pub vector: VectorClock<Process>,
    /// Hybrid logical clock stamp.
    pub hlc: HlcTimestamp,
}

#[derive(Debug, Clone)]
struct InFlight {
    from: Process,
    to: Process,
    send_event: usize,
    lamport: LamportTimestamp<Process>,
    vector: VectorClock<Process>,
    hlc: HlcTimestamp,
}

#[derive(Debug, Clone)]
struct Node {
    lamport: LamportClock<Process>,
    vector: VectorClock<Process>,
    hlc: Hlc,
    events: usize,
    last_event: Option<usize>,
}

/// Why a scenario could not be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// A step receives a message that was never sent or was already received.
    #[error("step {step}: message {message} is not in flight")]
    NotInFlight {
        /// Index of the step.
        step: usize,
        /// The message.
        message: MessageId,
    },
    /// A clock refused an input (cannot happen with the built-in skews).
    #[error("step {step}: {reason}")]
    Clock {
        /// Index of the step.
        step: usize,
        /// The clock's error.
        reason: String,
    },
}

/// A finished run: the events in execution order and the happened-before
/// relation derived from the message pattern (not from any clock).
#[derive(Debug, Clone)]
pub struct Run {
    /// Events in the order they executed.
    pub events: Vec<Event>,
    /// `direct[j]` lists the events that immediately precede event `j`: the
    /// previous event of its process and, for a receive, the matching send.
    direct: Vec<Vec<usize>>,
}

/// The scenario the example prints: a classic exchange with both causal
/// chains and concurrent events, including a message that arrives from a
/// wall clock ahead of the receiver's.
pub fn scripted() -> Vec<Action> {
    let (a, b, c) = (Process(0), Process(1), Process(2));
    vec![
        Action::Local(a),
        Action::Send { from: a, to: b }, // m1
        Action::Local(c),
        Action::Receive(MessageId(0)),
        Action::Send { from: b, to: c }, // m2
        Action::Local(a),
        Action::Send { from: c, to: a }, // m3, concurrent with m2
        Action::Receive(MessageId(1)),
        Action::Receive(MessageId(2)),
        Action::Local(b),
        Action::Send { from: c, to: a }, // m4, after c saw m2
        Action::Receive(MessageId(3)),
    ]
}

/// A seeded random scenario of about `steps` actions over the three
/// processes; messages are received in random order and all are received by
/// the end.
pub fn random(seed: u64, steps: usize) -> Vec<Action> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut actions = Vec::new();
    let mut in_flight: Vec<MessageId> = Vec::new();
    let mut sent = 0;
    while actions.len() < steps || !in_flight.is_empty() {
        let may_start = actions.len() < steps;
        match rng.u8(0..3) {
            0 if may_start => actions.push(Action::Local(Process(rng.u8(0..3)))),
            1 if may_start => {
                let from = rng.u8(0..3);
                let to = (from + rng.u8(1..3)) % 3;
                actions.push(Action::Send {
                    from: Process(from),
                    to: Process(to),
                });
                in_flight.push(MessageId(sent));
                sent += 1;
            }
            _ if !in_flight.is_empty() => {
                let message = in_flight.swap_remove(rng.usize(..in_flight.len()));
                actions.push(Action::Receive(message));
            }
            _ => {}
        }
    }
    actions
}

/// Runs `actions`, stamping every event with all three clocks. Wall time
/// advances by `1 + step % 3` ms per step, read through each process's skew.
pub fn run(actions: &[Action]) -> Result<Run, ScenarioError> {
    let mut nodes: BTreeMap<Process, Node> = Process::ALL
        .iter()
        .map(|&p| {
            let node = Node {
                lamport: LamportClock::new(p),
                vector: VectorClock::new(),
                hlc: Hlc::with_max_drift(MAX_DRIFT),
                events: 0,
                last_event: None,
            };
            (p, node)
        })
        .collect();
    let mut in_flight: BTreeMap<MessageId, InFlight> = BTreeMap::new();
    let mut next_message = 0;
    let mut events: Vec<Event> = Vec::new();
    let mut direct: Vec<Vec<usize>> = Vec::new();
    let mut now_ms: u64 = 0;

    for (step, action) in actions.iter().enumerate() {
        now_ms += 1 + step as u64 % 3;
        let process = match action {
            Action::Local(p) => *p,
            Action::Send { from, .. } => *from,
            Action::Receive(message) => {
                in_flight
                    .get(message)
                    .ok_or(ScenarioError::NotInFlight {
                        step,
                        message: *message,
                    })?
                    .to
            }
        };
        let wall_ms = now_ms.saturating_add_signed(process.skew_ms());
        let physical = EPOCH_MS + wall_ms;
        let index = events.len();
        let Some(node) = nodes.get_mut(&process) else {
            continue;
        };
        let clock_error = |e: &dyn fmt::Display| ScenarioError::Clock {
            step,
            reason: e.to_string(),
        };
        let mut preceding: Vec<usize> = node.last_event.into_iter().collect();
        node.vector.increment(process);
        let (kind, lamport, hlc) = match *action {
            Action::Local(_) => (
                EventKind::Local,
                node.lamport.tick(),
                node.hlc.now(physical).map_err(|e| clock_error(&e))?,
            ),
            Action::Send { to, .. } => {
                let message = MessageId(next_message);
                next_message += 1;
                let lamport = node.lamport.send();
                let hlc = node.hlc.now(physical).map_err(|e| clock_error(&e))?;
                in_flight.insert(
                    message,
                    InFlight {
                        from: process,
                        to,
                        send_event: index,
                        lamport,
                        vector: node.vector.clone(),
                        hlc,
                    },
                );
                (EventKind::Send { message, to }, lamport, hlc)
            }
            Action::Receive(message) => {
                let Some(msg) = in_flight.remove(&message) else {
                    return Err(ScenarioError::NotInFlight { step, message });
                };
                preceding.push(msg.send_event);
                node.vector.merge(&msg.vector);
                let lamport = node
                    .lamport
                    .receive(&msg.lamport)
                    .map_err(|e| clock_error(&e))?;
                let hlc = node
                    .hlc
                    .update(msg.hlc, physical)
                    .map_err(|e| clock_error(&e))?;
                let kind = EventKind::Receive {
                    message,
                    from: msg.from,
                };
                (kind, lamport, hlc)
            }
        };
        node.events += 1;
        node.last_event = Some(index);
        events.push(Event {
            name: format!("{}{}", process.to_string().to_lowercase(), node.events),
            process,
            kind,
            wall_ms,
            lamport,
            vector: node.vector.clone(),
            hlc,
        });
        direct.push(preceding);
    }
    Ok(Run { events, direct })
}

impl Run {
    /// Happened-before from the message pattern: `i` reaches `j` through
    /// program order and send/receive edges. Independent of every clock.
    pub fn happened_before(&self, i: usize, j: usize) -> bool {
        let mut stack = vec![j];
        let mut seen = vec![false; self.events.len()];
        while let Some(k) = stack.pop() {
            for &p in self.direct.get(k).map(Vec::as_slice).unwrap_or(&[]) {
                if p == i {
                    return true;
                }
                if !seen[p] {
                    seen[p] = true;
                    stack.push(p);
                }
            }
        }
        false
    }

    /// Pairs `(i, j)`, `i < j`, whose vector clocks are incomparable: the
    /// events the vector clocks report as concurrent.
    pub fn concurrent_pairs(&self) -> Vec<(usize, usize)> {
        let mut pairs = Vec::new();
        for (i, e) in self.events.iter().enumerate() {
            for (j, f) in self.events.iter().enumerate().skip(i + 1) {
                if e.vector.compare(&f.vector) == Causality::Concurrent {
                    pairs.push((i, j));
                }
            }
        }
        pairs
    }

    /// Concurrent pairs whose Lamport stamps are nevertheless ordered, which
    /// shows that Lamport order does not imply causality.
    pub fn lamport_ordered_but_concurrent(&self) -> Vec<(usize, usize)> {
        self.concurrent_pairs()
            .into_iter()
            .filter(|&(i, j)| self.events[i].lamport.time != self.events[j].lamport.time)
            .collect()
    }

    /// The events whose HLC had to use its logical counter (several events
    /// within one millisecond, or a message from a wall clock that runs ahead).
    pub fn logical_counter_events(&self) -> Vec<usize> {
        (0..self.events.len())
            .filter(|&i| self.events[i].hlc.logical() > 0)
            .collect()
    }

    /// The largest distance, in ms, between an HLC stamp and the wall clock
    /// of the process that issued it.
    pub fn max_hlc_lead_ms(&self) -> u64 {
        self.events
            .iter()
            .map(|e| e.hlc.physical_ms().saturating_sub(EPOCH_MS + e.wall_ms))
            .max()
            .unwrap_or(0)
    }

    /// The readable report the example prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let concurrent = self.concurrent_pairs();
        let concurrent_with = |i: usize| -> String {
            let names: Vec<&str> = concurrent
                .iter()
                .filter_map(|&(a, b)| match (a == i, b == i) {
                    (true, _) => Some(self.events[b].name.as_str()),
                    (_, true) => Some(self.events[a].name.as_str()),
                    _ => None,
                })
                .collect();
            if names.is_empty() {
                "-".to_string()
            } else {
                names.join(" ")
            }
        };
        let skews: Vec<String> = Process::ALL
            .iter()
            .map(|p| match p.skew_ms() {
                0 => format!("{p} exact"),
                s if s > 0 => format!("{p} {s} ms fast"),
                s => format!("{p} {} ms slow", -s),
            })
            .collect();
        let _ = writeln!(
            out,
            "Three processes, wall clocks: {}. Times are ms since the run started;\n\
             HLC stamps print as wall.logical. Vector clocks list [A, B, C].\n",
            skews.join(", ")
        );
        let _ = writeln!(
            out,
            "{:<6} {:<16} {:>5} {:>8} {:>10} {:>9}   concurrent with",
            "event", "what", "wall", "Lamport", "vector", "HLC"
        );
        for (i, e) in self.events.iter().enumerate() {
            let what = match e.kind {
                EventKind::Local => format!("{} local", e.process),
                EventKind::Send { message, to } => format!("{} send {message}->{to}", e.process),
                EventKind::Receive { message, from } => {
                    format!("{} recv {message}<-{from}", e.process)
                }
            };
            let vector: Vec<String> = Process::ALL
                .iter()
                .map(|p| e.vector.get(p).to_string())
                .collect();
            let hlc = format!(
                "{}.{}",
                e.hlc.physical_ms().saturating_sub(EPOCH_MS),
                e.hlc.logical()
            );
            let _ = writeln!(
                out,
                "{:<6} {:<16} {:>5} {:>8} {:>10} {:>9}   {}",
                e.name,
                what,
                e.wall_ms,
                format!("{}.{}", e.lamport.time, e.lamport.node),
                format!("[{}]", vector.join(",")),
                hlc,
                concurrent_with(i)
            );
        }
        let ordered = self.ordered_pairs();
        let lamport_ok = ordered
            .iter()
            .all(|&(i, j)| self.events[i].lamport < self.events[j].lamport);
        let hlc_ok = ordered
            .iter()
            .all(|&(i, j)| self.events[i].hlc < self.events[j].hlc);
        let verdict = |ok: bool| if ok { "yes" } else { "NO" };
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} of {} event pairs are causally ordered (e happened before f), {} are concurrent.",
            ordered.len(),
            self.pair_count(),
            concurrent.len()
        );
        let _ = writeln!(
            out,
            "Lamport stamps order every causal pair: {}.  HLC stamps order every causal pair: {}.",
            verdict(lamport_ok),
            verdict(hlc_ok)
        );
        if let Some(&(i, j)) = self.lamport_ordered_but_concurrent().first() {
            let (e, f) = (&self.events[i], &self.events[j]);
            let (first, second) = if e.lamport < f.lamport {
                (e, f)
            } else {
                (f, e)
            };
            let _ = writeln!(
                out,
                "Only vector clocks detect concurrency: {} and {} are concurrent, yet Lamport puts {} ({}) before {} ({}).",
                e.name, f.name, first.name, first.lamport.time, second.name, second.lamport.time
            );
        }
        let logical: Vec<&str> = self
            .logical_counter_events()
            .iter()
            .map(|&i| self.events[i].name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "The HLC stays within {} ms of the local wall clock; its logical counter was needed at: {}.",
            self.max_hlc_lead_ms(),
            if logical.is_empty() {
                "no event".to_string()
            } else {
                logical.join(", ")
            }
        );
        out
    }

    /// All pairs `(i, j)` with event `i` happened-before event `j`.
    pub fn ordered_pairs(&self) -> Vec<(usize, usize)> {
        let n = self.events.len();
        (0..n)
            .flat_map(|i| (0..n).map(move |j| (i, j)))
            .filter(|&(i, j)| i != j && self.happened_before(i, j))
            .collect()
    }

    fn pair_count(&self) -> usize {
        let n = self.events.len();
        n * n.saturating_sub(1) / 2
    }
}
