//! Deterministic simulation (feature `sim`): a Raft cluster on
//! `quorate-transport`'s simulated network with loss, duplication,
//! reordering, delay, partitions (including one-way cuts), crashes with
//! restart from disk alone, storage writes that take time, and clock-rate
//! skew between nodes. After every step it checks the safety properties of
//! the paper's figure 3; at the end it checks liveness after the faults
//! heal, and that the clients' history is linearizable. Half the seeds draw
//! faults at random; the others follow a targeted [`Nemesis`] that steers
//! the cluster to the moments random faults rarely hit (Raft figure 8, a
//! stale leader serving reads, a reboot inside a lease).
//!
//! Everything derives from one seed: a failing seed replays exactly
//! (`QUORATE_SIM_SEED=<seed> cargo test ...`), and the failure report ends
//! with the last events before the violation.
//!
//! ```
//! use quorate_raft_core::sim::{Simulation, SimOptions};
//!
//! let options = SimOptions { fault_ticks: 60, ..SimOptions::default() };
//! let report = Simulation::run(3, &options).unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.operations > 0);
//! ```
//!
//! [`multi::MultiSimulation`] runs the same checks, per group, over many
//! groups per server ([`MultiRaft`](crate::multi::MultiRaft)) with
//! quiescence on, and with faults that strike once every group is quiet.
//!
//! [`Cluster`] is generic over a [`StateMachine`], so the same machinery
//! tests your own state machine; [`Simulation`] drives the bundled
//! key-value store ([`kv`]) with clients that retry with unique request ids.

mod cluster;
mod disk;
mod invariants;
pub mod kv;
pub mod linearizability;
pub mod multi;
mod nemesis;
mod simulation;
mod trace;

pub use cluster::{Cluster, ClusterOptions};
pub use disk::SimStorage;
pub use nemesis::Nemesis;
pub use simulation::Simulation;
pub use trace::TraceEvent;

use crate::{Error, LogIndex, NodeId, Term};
use bytes::Bytes;
use linearizability::NotLinearizable;
use std::fmt;

/// Ticks a settled cluster must keep its leader (four election timeouts at
/// the default settings).
const STABLE_TICKS: u64 = 40;

/// An application state machine driven by committed entries.
pub trait StateMachine: Default {
    /// What applying a command produces for the client that sent it.
    type Response: Clone + fmt::Debug;

    /// Applies a committed, non-empty command; returns the response to
    /// route to the waiting client, if any.
    fn apply(&mut self, command: &Bytes) -> Option<Self::Response>;

    /// Answers a read-only query from the current state (reads served by
    /// ReadIndex, without a log entry). `None` by default.
    fn query(&self, _query: &Bytes) -> Option<Self::Response> {
        None
    }

    /// Serializes the whole state, for a snapshot (log compaction). It must
    /// include whatever deduplicates retried requests.
    fn snapshot(&self) -> Bytes;

    /// Replaces the whole state by one [`snapshot`](StateMachine::snapshot)
    /// produced (the empty snapshot of a fresh log means the initial state).
    fn restore(&mut self, snapshot: &Bytes);
}

/// A broken property.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Two leaders in one term (§5.2).
    #[error("election safety: {first} and {second} both lead term {term}")]
    ElectionSafety {
        /// The term.
        term: Term,
        /// The first leader seen.
        first: NodeId,
        /// The second.
        second: NodeId,
    },
    /// A leader overwrote or deleted entries of its own log.
    #[error("leader append-only: {node} changed its log at {index} while leading {term}")]
    LeaderAppendOnly {
        /// The leader.
        node: NodeId,
        /// Its term.
        term: Term,
        /// Where.
        index: LogIndex,
    },
    /// Two logs agree on an entry's index and term but not on the entry or
    /// what precedes it.
    #[error("log matching: {node} holds a different entry or prefix at {index} {term}")]
    LogMatching {
        /// The node whose log disagrees with one seen before.
        node: NodeId,
        /// The index.
        index: LogIndex,
        /// The term.
        term: Term,
    },
    /// A new leader lacks a committed entry (§5.4).
    #[error("leader completeness: {leader} leads {term} without committed entry {index}")]
    LeaderCompleteness {
        /// The leader.
        leader: NodeId,
        /// Its term.
        term: Term,
        /// The missing entry.
        index: LogIndex,
    },
    /// Two nodes applied different entries at one index.
    #[error("state machine safety: {node} applied a different entry at {index}")]
    StateMachineSafety {
        /// The node.
        node: NodeId,
        /// The index.
        index: LogIndex,
    },
    /// A witness campaigned or led.
    #[error("witness {node} left the follower role in term {term}")]
    WitnessCampaigned {
        /// The witness.
        node: NodeId,
        /// Its term.
        term: Term,
    },
    /// A witness held a command payload (an entry or snapshot data).
    #[error("witness {node} holds a payload at {index}")]
    WitnessPayload {
        /// The witness.
        node: NodeId,
        /// The entry (or snapshot) index.
        index: LogIndex,
    },
    /// A leader removed from the configuration kept leading after the
    /// configuration that removed it committed (thesis §4.2.2).
    #[error("{node} still leads term {term} after its removal committed")]
    RemovedLeader {
        /// The node.
        node: NodeId,
        /// Its term.
        term: Term,
    },
    /// Once the cluster settled, its leadership changed anyway: something
    /// (a removed server, say) disrupted it.
    #[error("the settled leader {leader} of term {term} was disrupted")]
    Disrupted {
        /// The settled leader.
        leader: NodeId,
        /// Its term.
        term: Term,
    },
    /// After the faults healed, the cluster did not make progress in time.
    #[error("liveness: {what} within {ticks} ticks after healing")]
    Liveness {
        /// What did not happen.
        what: &'static str,
        /// The bound.
        ticks: u64,
    },
    /// The clients' history has no linearization.
    #[error("not linearizable: key {} ({} operations)", .0.partition, .0.operations)]
    NotLinearizable(NotLinearizable),
    /// A retried request was executed twice.
    #[error("{node} executed {executed} requests but only {issued} were issued")]
    DuplicateExecution {
        /// The node.
        node: NodeId,
        /// Commands its store executed.
        executed: u64,
        /// Distinct requests issued by clients.
        issued: u64,
    },
    /// A broken property in one group of a multi-raft simulation
    /// ([`multi`]).
    #[error("group {group}: {violation}")]
    InGroup {
        /// The group.
        group: u64,
        /// What broke there.
        violation: Box<Violation>,
    },
    /// A leader served a lease read after a leader of a newer term was
    /// elected: its lease outlived its leadership.
    #[error(
        "{leader} served a lease read in term {term} after a leader of term {newer} was elected"
    )]
    StaleLease {
        /// The leader that served the read.
        leader: NodeId,
        /// Its term.
        term: Term,
        /// The newer term that already had a leader.
        newer: Term,
    },
    /// Idle groups did not quiesce, or a quiet system sent more than its
    /// liveness beats ([`multi`]).
    #[error("quiescence: {what} ({count})")]
    NotQuiet {
        /// What was expected.
        what: &'static str,
        /// The count that broke it.
        count: u64,
    },
    /// A multi-raft server refused an input (a bug when all peers are
    /// honest).
    #[error("{node}: {error}")]
    MultiRaft {
        /// The server.
        node: NodeId,
        /// Its error.
        #[source]
        error: crate::multi::MultiError,
    },
    /// A node refused a call (a bug when all peers are honest).
    #[error("{node}: {error}")]
    Node {
        /// The node.
        node: NodeId,
        /// Its error.
        #[source]
        error: Error,
    },
}

/// What a simulation run does.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Cluster size; `None` draws it from the seed (3 to 7).
    pub nodes: Option<u64>,
    /// Concurrent clients.
    pub clients: u32,
    /// Distinct keys the clients use.
    pub keys: u8,
    /// Nominal ticks of the fault phase.
    pub fault_ticks: u64,
    /// Ticks allowed after healing for a leader to emerge and every pending
    /// request to complete.
    pub liveness_ticks: u64,
    /// Ticks a client waits for an answer before retrying elsewhere.
    pub client_timeout_ticks: u64,
    /// Inject faults (otherwise only jitter reorders messages).
    pub faults: bool,
    /// Draw per seed the message size limit, the in-flight window, the
    /// storage write latency (up to the cluster option's), and whether
    /// pre-vote and check-quorum are on.
    pub vary_limits: bool,
    /// The fault schedule; `None` draws it from the seed (half the seeds
    /// random faults, a quarter each targeted schedule).
    pub nemesis: Option<Nemesis>,
    /// The cluster's construction.
    pub cluster: ClusterOptions,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: None,
            clients: 3,
            keys: 3,
            fault_ticks: 200,
            liveness_ticks: 200,
            client_timeout_ticks: 25,
            faults: true,
            vary_limits: true,
            nemesis: None,
            cluster: ClusterOptions::default(),
        }
    }
}

/// A passing run's numbers.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The fault schedule it followed.
    pub nemesis: Nemesis,
    /// Leaders rebooted at the figure 8 moment (leader churn).
    pub figure_8_moments: u64,
    /// Voters rebooted inside the lease they gave a leader (stale leader).
    pub lease_reboots: u64,
    /// Cluster size.
    pub nodes: u64,
    /// Client operations completed and checked for linearizability.
    pub operations: usize,
    /// Reads served by ReadIndex or lease (no log entry).
    pub index_reads: u64,
    /// Of those, reads accepted under a leader lease.
    pub lease_reads: u64,
    /// Retries answered from the session table instead of executed again.
    pub deduplicated: u64,
    /// Entries committed.
    pub committed: u64,
    /// Terms that had a leader.
    pub elections: usize,
    /// Faults injected.
    pub faults: usize,
    /// Simulation steps.
    pub steps: u64,
    /// Messages lost, cut or filtered by the network.
    pub dropped: u64,
    /// Snapshots followers installed from a leader (InstallSnapshot).
    pub snapshots_installed: u64,
    /// Membership changes the leader accepted (one step, joint, or a new
    /// voter caught up as a learner first).
    pub membership_changes: u64,
    /// Of those, the changes that went through a joint configuration.
    pub joint_changes: u64,
    /// Learners promoted to voters once caught up (`Node::add_voter`).
    pub promotions: u64,
    /// Servers removed from the configuration that kept running.
    pub removed_running: usize,
    /// Witnesses in the settled configuration.
    pub witnesses: usize,
    /// Unsynced writes lost by simulated crashes (every disk is a
    /// [`CrashStorage`](crate::CrashStorage)).
    pub lost_writes: u64,
    /// Appends torn by simulated crashes (a prefix of their entries kept).
    pub torn_appends: u64,
}

/// A failing run: the seed that replays it, what broke, and the last events.
#[derive(Debug)]
pub struct SimFailure {
    /// Replays the failure exactly.
    pub seed: u64,
    /// What broke.
    pub violation: Violation,
    /// The last events before the failure, oldest first.
    pub trace: Vec<TraceEvent>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed: {}",
            self.seed, self.violation
        )?;
        writeln!(
            f,
            "replay with QUORATE_SIM_SEED={}; last events:",
            self.seed
        )?;
        for e in &self.trace {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SimFailure {}

/// One seed of a simulation: build it, run it, report; a violation becomes
/// the [`SimFailure`] that replays it (with the trace so far; none if the
/// simulation could not even be built).
pub(crate) fn run_seed<S, R>(
    seed: u64,
    built: Result<S, Violation>,
    run: impl FnOnce(&mut S) -> Result<(), Violation>,
    report: impl FnOnce(S) -> R,
    trace: impl FnOnce(&S) -> Vec<TraceEvent>,
) -> Result<R, SimFailure> {
    let mut sim = built.map_err(|violation| SimFailure {
        seed,
        violation,
        trace: Vec::new(),
    })?;
    match run(&mut sim) {
        Ok(()) => Ok(report(sim)),
        Err(violation) => Err(SimFailure {
            seed,
            violation,
            trace: trace(&sim),
        }),
    }
}

/// The seeds a test shard runs: seeds `0..n` (`n` from the environment
/// variable `QUORATE_SIM_SEEDS`, else `default`) that are `shard` modulo
/// `shards`, so several test functions share the work in parallel.
/// `QUORATE_SIM_SEED=s` runs only seed `s` (in the shard it belongs to).
pub fn seeds_from_env(shard: u64, shards: u64, default: u64) -> Vec<u64> {
    let var = |name| {
        std::env::var(name)
            .ok()
            .and_then(|s: String| s.trim().parse::<u64>().ok())
    };
    let shards = shards.max(1);
    if let Some(seed) = var("QUORATE_SIM_SEED") {
        return if seed % shards == shard {
            vec![seed]
        } else {
            Vec::new()
        };
    }
    let n = var("QUORATE_SIM_SEEDS").unwrap_or(default);
    (0..n).filter(|s| s % shards == shard).collect()
}

/// Runs `run` on every seed of a test shard ([`seeds_from_env`]) and
/// returns the reports; panics with the failure of the first failing
/// seed. With `QUORATE_SIM_KEEP_GOING` set it runs every seed first and
/// then panics with the number of failures and the first one (mutation
/// testing counts failing seeds so).
pub fn run_seeds<R, F: fmt::Display>(
    shard: u64,
    shards: u64,
    default: u64,
    mut run: impl FnMut(u64) -> Result<R, F>,
) -> Vec<R> {
    let keep_going = std::env::var_os("QUORATE_SIM_KEEP_GOING").is_some();
    let seeds = seeds_from_env(shard, shards, default);
    let total = seeds.len();
    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for seed in seeds {
        match run(seed) {
            Ok(report) => reports.push(report),
            Err(failure) if keep_going => failures.push(failure),
            Err(failure) => panic!("{failure}"),
        }
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} of {total} seeds failed; the first: {first}",
            failures.len()
        );
    }
    reports
}
