//! Faults for a cluster of node processes behind a proxied [`Network`],
//! drawn from a seed so that a printed seed replays the same schedule
//! (the timing of the processes themselves does not replay).

use std::fmt;
use std::time::Duration;

use super::Error;
use super::cluster::ProcessCluster;
use super::proxy::{Mode, Network};

/// One fault, injected by [`Fault::start`] and undone by [`Fault::heal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `kill -9` the node; healing restarts it with the same flags.
    Kill(u64),
    /// SIGSTOP the node; healing sends SIGCONT.
    Pause(u64),
    /// Cut every link of the node, both ways (a minority of one against
    /// the majority).
    Isolate(u64),
    /// Drop what `from` sends `to` (the other direction still flows).
    OneWay {
        /// The sender cut off.
        from: u64,
        /// The receiver.
        to: u64,
    },
    /// Stall the link between two nodes both ways (bytes held, then
    /// delivered on heal).
    Stall(u64, u64),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(n) => write!(f, "kill -9 node {n}"),
            Fault::Pause(n) => write!(f, "SIGSTOP node {n}"),
            Fault::Isolate(n) => write!(f, "isolate node {n}"),
            Fault::OneWay { from, to } => write!(f, "drop {from}->{to}"),
            Fault::Stall(a, b) => write!(f, "stall {a}<->{b}"),
        }
    }
}

impl Fault {
    /// Injects the fault.
    pub fn start(&self, cluster: &mut ProcessCluster, net: &Network) -> Result<(), Error> {
        match *self {
            Fault::Kill(n) => cluster.kill(n),
            Fault::Pause(n) => cluster.pause(n),
            Fault::Isolate(n) => {
                let others: Vec<u64> = cluster.ids().into_iter().filter(|&o| o != n).collect();
                net.partition(&[n], &others);
                Ok(())
            }
            Fault::OneWay { from, to } => {
                net.set(&[(from, to)], Mode::Drop);
                Ok(())
            }
            Fault::Stall(a, b) => {
                net.set_pair(a, b, Mode::Stall);
                Ok(())
            }
        }
    }

    /// The same fault with `node` in place of its first node (the other
    /// node of a link becomes one of `ids` other than `node` if needed).
    pub fn aimed_at(&self, node: u64, ids: &[u64]) -> Fault {
        let other = |b: u64| {
            if b != node {
                b
            } else {
                ids.iter().copied().find(|&o| o != node).unwrap_or(b)
            }
        };
        match *self {
            Fault::Kill(_) => Fault::Kill(node),
            Fault::Pause(_) => Fault::Pause(node),
            Fault::Isolate(_) => Fault::Isolate(node),
            Fault::OneWay { to, .. } => Fault::OneWay {
                from: node,
                to: other(to),
            },
            Fault::Stall(_, b) => Fault::Stall(node, other(b)),
        }
    }

    /// Undoes the fault.
    pub fn heal(&self, cluster: &mut ProcessCluster, net: &Network) -> Result<(), Error> {
        match *self {
            Fault::Kill(n) => cluster.restart(n),
            Fault::Pause(n) => cluster.resume(n),
            Fault::Isolate(_) | Fault::OneWay { .. } | Fault::Stall(..) => {
                net.heal();
                Ok(())
            }
        }
    }
}

/// A fault and how long it lasts, then how long the cluster is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// The fault.
    pub fault: Fault,
    /// How long it lasts.
    pub hold: Duration,
    /// The quiet time after healing it.
    pub quiet: Duration,
    /// Aim the fault at whoever leads this shard when it starts (see
    /// [`Fault::aimed_at`]) instead of the node drawn.
    pub at_leader_of: Option<u32>,
    /// Hold the clients back from the fault's start to the end of the
    /// quiet time: some failures only show in an idle cluster.
    pub idle: bool,
}

/// Faults over nodes `ids` from `seed`, filling about `total`; half of
/// them aimed at the leader of one of `shards` shards.
pub fn schedule(seed: u64, ids: &[u64], shards: u32, total: Duration) -> Vec<Step> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut steps = Vec::new();
    let mut used = Duration::ZERO;
    let pick = |rng: &mut fastrand::Rng| ids.get(rng.usize(..ids.len().max(1))).copied();
    while used < total {
        let (Some(a), Some(b)) = (pick(&mut rng), pick(&mut rng)) else {
            break;
        };
        let b = if a == b {
            ids.iter().copied().find(|&o| o != a).unwrap_or(b)
        } else {
            b
        };
        let fault = match rng.u8(..5) {
            0 => Fault::Kill(a),
            1 => Fault::Pause(a),
            2 => Fault::Isolate(a),
            3 => Fault::OneWay { from: a, to: b },
            _ => Fault::Stall(a, b),
        };
        let hold = Duration::from_millis(rng.u64(1000..=3500));
        let quiet = Duration::from_millis(rng.u64(500..=2000));
        let at_leader_of = (shards > 0 && rng.bool()).then(|| rng.u32(..shards));
        let idle = rng.u8(..4) == 0;
        used += hold + quiet;
        steps.push(Step {
            fault,
            hold,
            quiet,
            at_leader_of,
            idle,
        });
    }
    steps
}
