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
//! [`Cluster`] is generic over a [`StateMachine`], so the same machinery
//! tests your own state machine; [`Simulation`] drives the bundled
//! key-value store ([`kv`]) with clients that retry with unique request ids.

mod cluster;
mod invariants;
pub mod kv;
pub mod linearizability;
mod nemesis;

pub use cluster::{Cluster, ClusterOptions, SimStorage, TraceEvent};
pub use nemesis::Nemesis;

use crate::{ChangeMethod, Configuration, Error, LogIndex, Node, NodeId, Term};
use bytes::Bytes;
use kv::{KvCommand, KvModel, KvOp, KvOutput, KvStore, RequestId};
use linearizability::{NotLinearizable, Operation};
use nemesis::{Pin, Script};
use quorate_transport::sim::{LinkConfig, SimTime};
use std::fmt;
use std::time::Duration;

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

/// A client with one request outstanding at a time.
#[derive(Debug)]
struct Client {
    id: u32,
    seq: u64,
    target: NodeId,
    pending: Option<Pending>,
    next_op_at: SimTime,
    /// Set while a targeted schedule steers this client.
    pin: Option<Pin>,
}

#[derive(Debug)]
struct Pending {
    op: KvOp,
    call: SimTime,
    retry_at: SimTime,
    /// Whether the last attempt was accepted by a leader (so a retry means
    /// it timed out).
    sent: bool,
}

/// The key-value simulation: clients, faults, checks.
#[derive(Debug)]
pub struct Simulation {
    seed: u64,
    rng: fastrand::Rng,
    options: SimOptions,
    cluster: Cluster<KvStore>,
    clients: Vec<Client>,
    history: Vec<Operation<KvOp, KvOutput>>,
    issued: u64,
    next_read_id: u64,
    lease_reads: u64,
    faults: usize,
    tick: Duration,
    nemesis: Nemesis,
    script: Script,
}

impl Simulation {
    /// Runs one seed: faults, then healing, then the checks.
    pub fn run(seed: u64, options: &SimOptions) -> Result<SimReport, SimFailure> {
        let mut sim = match Simulation::new(seed, options) {
            Ok(sim) => sim,
            Err(violation) => {
                return Err(SimFailure {
                    seed,
                    violation,
                    trace: Vec::new(),
                });
            }
        };
        match sim.run_phases() {
            Ok(()) => Ok(sim.report()),
            Err(violation) => Err(SimFailure {
                seed,
                violation,
                trace: sim.cluster.trace().cloned().collect(),
            }),
        }
    }

    fn new(seed: u64, options: &SimOptions) -> Result<Self, Violation> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let nemesis = options.nemesis.unwrap_or_else(|| Nemesis::draw(&mut rng));
        // Figure 8 needs few voters: one cut-off leader's tail, one other.
        let sizes: &[u64] = match nemesis {
            Nemesis::LeaderChurn => &[3, 3, 3, 5],
            _ => &[3, 3, 4, 5, 5, 7],
        };
        let nodes = options
            .nodes
            .unwrap_or_else(|| sizes[rng.usize(..sizes.len())]);
        let mut cluster_options = ClusterOptions {
            nodes,
            ..options.cluster.clone()
        };
        if options.vary_limits {
            // Small messages and windows split appends at arbitrary points,
            // which is where commitment and repair bugs hide.
            let node = &mut cluster_options.node_config;
            node.max_size_per_msg = [60, 200, 1 << 20][rng.usize(..3)];
            node.max_inflight_msgs = [1, 4, 256][rng.usize(..3)];
            node.pre_vote = rng.bool();
            node.check_quorum = rng.bool();
            let max_write = cluster_options.max_write_latency.as_micros() as u64;
            cluster_options.max_write_latency = Duration::from_micros(rng.u64(0..=max_write));
            // Frequent compaction sends snapshots to every lagging or
            // restarted follower; small chunks split them.
            cluster_options.compact_every = [0, 6, 25][rng.usize(..3)];
            node.max_snapshot_chunk_bytes = [16, 100, 1 << 20][rng.usize(..3)];
            // Followers acknowledge receipt before durability (§10.2.1).
            node.early_append_ack = rng.bool();
        }
        if nemesis == Nemesis::LeaderChurn {
            // Slow disks: a new leader's own entry often becomes durable
            // after its followers acknowledged the entries before it.
            cluster_options.max_write_latency = options.cluster.max_write_latency * 3;
        }
        let cluster = Cluster::new(rng.u64(..), &cluster_options)?;
        let clients = (0..options.clients)
            .map(|id| Client {
                id,
                seq: 0,
                target: NodeId(rng.u64(1..=nodes)),
                pending: None,
                next_op_at: SimTime::ZERO,
                pin: None,
            })
            .collect();
        Ok(Simulation {
            seed,
            rng,
            options: options.clone(),
            cluster,
            clients,
            history: Vec::new(),
            issued: 0,
            next_read_id: 0,
            lease_reads: 0,
            faults: 0,
            tick: options.cluster.tick,
            nemesis,
            script: Script::default(),
        })
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        // Fault phase: clients run, faults come and go.
        for _ in 0..self.options.fault_ticks {
            self.fault_tick()?;
        }
        self.end_script();
        // Heal: everything up, no partitions, reliable (still reordering) links.
        self.cluster.heal();
        self.cluster.set_links(self.options.cluster.link);
        for id in self.cluster.crashed() {
            self.cluster.restart(id)?;
        }
        // Liveness: within the bound, a leader is elected, every pending
        // request is answered and every node has applied what it committed.
        let bound = self.options.liveness_ticks;
        let mut waited = 0;
        while let Some(what) = self.unsettled() {
            if waited == bound {
                return Err(Violation::Liveness { what, ticks: bound });
            }
            self.clients_act(false);
            self.advance_one_tick()?;
            waited += 1;
        }
        // Settled: the leader must stay, whatever removed servers still
        // running try (thesis §4.2.3).
        if let Some(leader) = self.cluster.leader() {
            let term = self.cluster.node(leader).map(Node::term);
            for _ in 0..STABLE_TICKS {
                self.advance_one_tick()?;
            }
            let now = self.cluster.leader();
            let now_term = now.and_then(|l| self.cluster.node(l)).map(Node::term);
            if now != Some(leader) || now_term != term {
                return Err(Violation::Disrupted {
                    leader,
                    term: term.unwrap_or_default(),
                });
            }
        }
        self.check_deduplication()?;
        linearizability::check(&KvModel, &self.history).map_err(Violation::NotLinearizable)
    }

    fn advance_one_tick(&mut self) -> Result<(), Violation> {
        let until = self.cluster.now().saturating_add(self.tick);
        self.cluster.run_until(until)?;
        self.collect_responses();
        Ok(())
    }

    fn inject_fault(&mut self) -> Result<(), Violation> {
        self.faults += 1;
        let ids = self.cluster.ids();
        let pick = |rng: &mut fastrand::Rng, from: &[NodeId]| from[rng.usize(..from.len())];
        match self.rng.u32(..10) {
            9 => self.change_membership()?,
            8 => {
                if let Some(leader) = self.cluster.leader() {
                    let to = pick(&mut self.rng, &ids);
                    self.cluster.transfer_leadership(leader, to)?;
                }
            }
            0 | 1 => {
                let running = self.cluster.running();
                if running.len() > 1 {
                    let id = pick(&mut self.rng, &running);
                    self.cluster.crash(id);
                }
            }
            2 => {
                let crashed = self.cluster.crashed();
                if !crashed.is_empty() {
                    let id = pick(&mut self.rng, &crashed);
                    self.cluster.restart(id)?;
                }
            }
            3 => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let cut = self.rng.usize(1..shuffled.len());
                let (a, b) = shuffled.split_at(cut);
                self.cluster.partition(&[a, b]);
            }
            4 => {
                let id = pick(&mut self.rng, &ids);
                self.cluster.isolate(id);
            }
            5 => {
                let from = pick(&mut self.rng, &ids);
                let to = pick(&mut self.rng, &ids);
                if from != to {
                    self.cluster.cut(from, to);
                }
            }
            6 => {
                let link = LinkConfig::new(Duration::from_micros(self.rng.u64(200..3000)))
                    .with_jitter(Duration::from_micros(self.rng.u64(0..15_000)))
                    .with_loss(self.rng.f64() * 0.3)
                    .with_duplicate(self.rng.f64() * 0.2);
                self.cluster.set_links(link);
            }
            _ => {
                self.cluster.heal();
                self.cluster.set_links(self.options.cluster.link);
            }
        }
        Ok(())
    }

    /// Asks the leader for a membership change: add a new node (as voter,
    /// directly or after catching up as a learner, or as a learner), promote
    /// a learner (directly or after catching up), remove a member (the
    /// leader included), or replace a voter by a new node; voters stay
    /// within 3-7. Single-server changes take one step or, one time in
    /// three, go through joint consensus.
    fn change_membership(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.cluster.leader() else {
            return Ok(());
        };
        let Some(current) = self.cluster.node(leader).map(|n| n.configuration().clone()) else {
            return Ok(());
        };
        let mut voters: Vec<NodeId> = current.voters().iter().copied().collect();
        let mut learners: Vec<NodeId> = current.learners().iter().copied().collect();
        let fresh = self.cluster.ids().into_iter().max().unwrap_or_default().0 + 1;
        let fresh = NodeId(fresh);
        // With witnesses, a third of the changes add one or replace one by
        // a new witness (witness status of members never changes). Other
        // runs draw exactly as before.
        let witnesses: Vec<NodeId> = current.witnesses().iter().copied().collect();
        if !witnesses.is_empty() && self.rng.u32(..3) == 0 {
            if voters.len() >= 7 || self.rng.bool() {
                let old = witnesses[self.rng.usize(..witnesses.len())];
                voters.retain(|v| *v != old);
            }
            let target = Configuration::new(voters)
                .with_learners(learners)
                .with_witnesses([fresh]);
            return self
                .cluster
                .change_membership(leader, target, ChangeMethod::Auto);
        }
        let method = if self.rng.u32(..3) == 0 {
            ChangeMethod::Joint
        } else {
            ChangeMethod::Auto
        };
        let catch_up = self.rng.bool();
        match self.rng.u32(..5) {
            0 if voters.len() < 7 && catch_up => {
                return self.cluster.add_voter(leader, fresh);
            }
            2 if !learners.is_empty() && voters.len() < 7 && catch_up => {
                let learner = learners[self.rng.usize(..learners.len())];
                return self.cluster.add_voter(leader, learner);
            }
            0 if voters.len() < 7 => voters.push(fresh),
            1 => learners.push(fresh),
            2 if !learners.is_empty() && voters.len() < 7 => {
                voters.push(learners.remove(self.rng.usize(..learners.len())));
            }
            3 if voters.len() > 3 => {
                voters.remove(self.rng.usize(..voters.len()));
            }
            3 if !learners.is_empty() => {
                learners.remove(self.rng.usize(..learners.len()));
            }
            _ => {
                voters.remove(self.rng.usize(..voters.len()));
                voters.push(fresh);
            }
        }
        let target = Configuration::new(voters).with_learners(learners);
        self.cluster.change_membership(leader, target, method)
    }

    /// Clients start new requests (if `new_requests`) and retry timed-out ones.
    fn clients_act(&mut self, new_requests: bool) {
        let now = self.cluster.now();
        let timeout = self.tick * self.options.client_timeout_ticks as u32;
        let nodes = self.cluster.ids();
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            match &client.pending {
                None if new_requests && now >= client.next_op_at => {
                    client.seq += 1;
                    self.issued += 1;
                    let key = self.rng.u8(..self.options.keys);
                    let op = match Pin::op_kind(client.pin, &mut self.rng) {
                        0 => KvOp::Get { key },
                        1 => KvOp::Put {
                            key,
                            value: self.rng.u64(..10),
                        },
                        _ => KvOp::Cas {
                            key,
                            expected: self.rng.u64(..10),
                            new: self.rng.u64(..10),
                        },
                    };
                    client.pending = Some(Pending {
                        op,
                        call: now,
                        retry_at: now,
                        sent: false,
                    });
                }
                Some(p) if now >= p.retry_at => {}
                _ => continue,
            }
            let Some(p) = client.pending.as_ref() else {
                continue;
            };
            let command = KvCommand {
                id: RequestId {
                    client: client.id,
                    seq: client.seq,
                },
                op: p.op,
            }
            .encode();
            if p.sent && client.pin.is_none() {
                // No answer in time: the node may have lost leadership or
                // be cut off. Try another one.
                client.target = nodes[self.rng.usize(..nodes.len())];
            }
            let target = client.target;
            // A third of the reads go through the log, a third by ReadIndex,
            // a third by lease (falling back to ReadIndex without one).
            let pin = client.pin;
            let path = if matches!(p.op, KvOp::Get { .. }) {
                Pin::read_path(pin, &mut self.rng)
            } else {
                0
            };
            self.next_read_id += 1;
            let read_id = self.next_read_id;
            let outcome = match path {
                // Some writes are forwarded by followers instead of refused.
                0 if self.rng.bool() => {
                    self.cluster.propose_or_forward(target, command).map(|_| ())
                }
                0 => self.cluster.propose(target, command).map(|_| ()),
                1 => self.cluster.read(target, read_id, command),
                _ => match self.cluster.read_lease(target, read_id, command.clone()) {
                    Err(Error::LeaseUnavailable) => self.cluster.read(target, read_id, command),
                    Ok(()) => {
                        self.lease_reads += 1;
                        Ok(())
                    }
                    other => other,
                },
            };
            let (sent, retry_at) = match outcome {
                Ok(_) => (true, now.saturating_add(timeout)),
                // A pinned client stays with its node until told of a leader.
                Err(Error::NotLeader { leader_hint: None }) if pin.is_some() => {
                    (false, now.saturating_add(self.tick))
                }
                Err(Error::NotLeader { leader_hint }) => {
                    self.clients[c].target =
                        leader_hint.unwrap_or_else(|| nodes[self.rng.usize(..nodes.len())]);
                    (false, now.saturating_add(self.tick))
                }
                Err(_) => (false, now.saturating_add(self.tick)),
            };
            if let Some(p) = self.clients[c].pending.as_mut() {
                p.retry_at = retry_at;
                p.sent = sent;
            }
        }
    }

    fn collect_responses(&mut self) {
        for (at, _node, (id, output)) in self.cluster.take_responses() {
            let Some(client) = self.clients.get_mut(id.client as usize) else {
                continue;
            };
            if client.seq != id.seq {
                continue;
            }
            if let Some(p) = client.pending.take() {
                self.history.push(Operation {
                    client: u64::from(id.client),
                    call: p.call.as_nanos(),
                    ret: at.as_nanos(),
                    input: p.op,
                    output,
                });
                client.next_op_at = at.saturating_add(self.tick * self.rng.u32(0..4));
            }
        }
    }

    /// What the healed cluster has yet to do, if anything.
    fn unsettled(&self) -> Option<&'static str> {
        let Some(leader) = self.cluster.leader().and_then(|l| self.cluster.node(l)) else {
            return Some("no leader elected");
        };
        if self.clients.iter().any(|c| c.pending.is_some()) {
            return Some("pending requests not answered");
        }
        let configuration = leader.configuration();
        if configuration.is_joint() || leader.configuration_index() > leader.commit_index() {
            return Some("the membership change did not finish");
        }
        if leader.transferee().is_some() {
            return Some("the leadership transfer did not finish");
        }
        if leader.catching_up().next().is_some() {
            return Some("a learner's catch-up did not finish");
        }
        // A TimeoutNow may arrive just as the leader abandons the transfer;
        // the election it starts is the leader's handover, not a
        // disruption: let it play out before the leader must stay.
        let election_timeout = self.tick * self.options.cluster.node_config.election_tick;
        let handing_over = self
            .cluster
            .last_handover()
            .is_some_and(|at| self.cluster.now() < at.saturating_add(election_timeout));
        if handing_over {
            return Some("a leadership handover is under way");
        }
        let commit = leader.commit_index();
        let behind = self
            .cluster
            .running()
            .into_iter()
            .filter(|id| configuration.contains(*id))
            .filter_map(|id| self.cluster.node(id))
            .any(|n| n.applied_index() < commit);
        behind.then_some("a node did not apply the leader's commit index")
    }

    fn check_deduplication(&self) -> Result<(), Violation> {
        for id in self.cluster.running() {
            if let Some(store) = self.cluster.state_machine(id) {
                let (executed, _) = store.counts();
                if executed > self.issued {
                    return Err(Violation::DuplicateExecution {
                        node: id,
                        executed,
                        issued: self.issued,
                    });
                }
            }
        }
        Ok(())
    }

    /// Running servers outside the settled leader's configuration.
    fn removed_running(&self) -> usize {
        let Some(leader) = self.cluster.leader().and_then(|l| self.cluster.node(l)) else {
            return 0;
        };
        self.cluster
            .running()
            .into_iter()
            .filter(|id| !leader.configuration().contains(*id))
            .count()
    }

    fn report(&self) -> SimReport {
        let deduplicated = self
            .cluster
            .running()
            .iter()
            .filter_map(|id| self.cluster.state_machine(*id))
            .map(|s| s.counts().1)
            .max()
            .unwrap_or(0);
        let (lost_writes, torn_appends) = self.cluster.disk_losses();
        SimReport {
            lost_writes,
            torn_appends,
            seed: self.seed,
            nemesis: self.nemesis,
            figure_8_moments: self.script.figure_8_moments,
            lease_reboots: self.script.lease_reboots,
            nodes: self.cluster.ids().len() as u64,
            operations: self.history.len(),
            index_reads: self.cluster.served_reads(),
            lease_reads: self.lease_reads,
            deduplicated,
            committed: self.cluster.committed(),
            elections: self.cluster.elections(),
            faults: self.faults,
            steps: self.cluster.steps(),
            dropped: self.cluster.network_stats().dropped(),
            snapshots_installed: self.cluster.installed_snapshots(),
            membership_changes: self.cluster.membership_changes(),
            joint_changes: self.cluster.joint_changes(),
            promotions: self.cluster.promotions(),
            removed_running: self.removed_running(),
            witnesses: self
                .cluster
                .leader()
                .and_then(|l| self.cluster.node(l))
                .map_or(0, |n| n.configuration().witnesses().len()),
        }
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
