//! Many Raft groups per server ([`MultiRaft`](crate::multi::MultiRaft))
//! with quiescence on, in the deterministic simulator.
//!
//! `S` servers (3 or 5), each a `MultiRaft` over `G` groups, every group a
//! replica set on all servers; the servers' batches travel on
//! `quorate-transport`'s simulated network (loss, duplication,
//! reordering, delay, partitions, one-way cuts), servers crash and restart
//! from their disks (with a new incarnation), their clocks run at
//! different rates, and clients run key-value operations against many
//! groups (writes, ReadIndex reads, lease reads), retrying with unique ids.
//! A run has four phases:
//!
//! 1. **Faults**: random faults, clients running (groups quiesce between
//!    faults when idle, so faults also strike quiet groups).
//! 2. **Quiet**: everything heals; once the clients are done every group
//!    must quiesce on every server, and for a few liveness intervals the
//!    servers may send their liveness beats only.
//! 3. **A fault on the quiet system** ([`QuietFault`]): the server leading
//!    the most groups is cut off, crashed, or restarted at once, or a
//!    follower is cut off; clients keep reading through the old leader
//!    and writing elsewhere. The servers that can still form a quorum
//!    must elect a leader for every group they lost.
//! 4. **Heal**: every group must elect, serve, and quiesce again.
//!
//! After every Ready of every group it checks that group's figure 3
//! properties (election safety, leader append-only, log matching, leader
//! completeness, state machine safety), and at every lease read that no
//! leader of a newer term was elected in that group (a quiet leader's
//! lease must not outlive its leadership); at the end, per group, that
//! retries were not executed twice and that the clients' history is
//! linearizable.
//!
//! ```
//! use quorate_raft_core::sim::multi::{MultiSimOptions, MultiSimulation};
//!
//! let options = MultiSimOptions { groups: Some(4), fault_ticks: 40, ..MultiSimOptions::default() };
//! let report = MultiSimulation::run(7, &options).unwrap_or_else(|failure| panic!("{failure}"));
//! assert!(report.operations > 0);
//! assert_eq!(report.quiesced_groups, 4 * report.servers);
//! ```

mod server;

use crate::multi::{GroupId, MultiConfig};
use crate::sim::kv::{ClientSeq, KvCommand, KvModel, KvOp, KvOutput};
use crate::sim::linearizability::{self, Operation};
use crate::sim::{SimFailure, Violation, run_seed};
use crate::{Config, Configuration, Error, NodeId, Role, Term};
use quorate_transport::sim::{LinkConfig, Network, SimTime};
use server::World;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// The fault that strikes once every group is quiet (phase 3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuietFault {
    /// The server leading the most groups is cut off from the others.
    #[default]
    IsolateLeader,
    /// A server leading the fewest groups is cut off.
    IsolateFollower,
    /// The server leading the most groups crashes, and restarts after the
    /// others elected.
    CrashLeader,
    /// The server leading the most groups crashes and restarts at once:
    /// only its new incarnation tells the others.
    RestartLeader,
    /// The others stop hearing the server leading the most groups, which
    /// still hears them.
    MuteLeader,
    /// The server leading the most groups stops hearing the others, which
    /// still hear it.
    DeafenLeader,
    /// With 5 servers, the server leading the most groups and one other
    /// are split from the other three (with 3, as `IsolateLeader`).
    SplitMinority,
}

impl QuietFault {
    const ALL: [QuietFault; 7] = [
        QuietFault::IsolateLeader,
        QuietFault::IsolateFollower,
        QuietFault::CrashLeader,
        QuietFault::RestartLeader,
        QuietFault::MuteLeader,
        QuietFault::DeafenLeader,
        QuietFault::SplitMinority,
    ];
}

/// What a multi-raft simulation run does.
#[derive(Clone, Debug)]
pub struct MultiSimOptions {
    /// Servers; `None` draws 3 or 5 from the seed.
    pub servers: Option<u64>,
    /// Groups per server; `None` draws 8 to 64 from the seed (mostly few).
    pub groups: Option<u64>,
    /// Concurrent clients, each with one request outstanding.
    pub clients: u32,
    /// Keys per group.
    pub keys: u8,
    /// Nominal ticks of the random-fault phase.
    pub fault_ticks: u64,
    /// Ticks allowed, after a heal, for every group to elect, answer every
    /// pending request and quiesce on every server.
    pub settle_ticks: u64,
    /// Ticks a client waits for an answer before retrying elsewhere.
    pub client_timeout_ticks: u64,
    /// Inject faults (otherwise only jitter reorders batches).
    pub faults: bool,
    /// The fault on the quiet system; `None` draws it from the seed.
    pub quiet_fault: Option<QuietFault>,
    /// The nominal interval between two ticks of a server.
    pub tick: Duration,
    /// Clock-rate skew: each server's tick interval is the nominal one
    /// scaled by a factor drawn from `[1 - skew, 1 + skew]`.
    pub clock_skew: f64,
    /// The longest a storage write takes before it is durable.
    pub max_write_latency: Duration,
    /// The links' behaviour when no fault is injected.
    pub link: LinkConfig,
    /// Node timing (`id` and `seed` are set per node); pre-vote,
    /// check-quorum, message limits and early acks are drawn per seed.
    pub node_config: Config,
    /// Liveness beat and timeout; `None` draws them from the seed.
    pub liveness: Option<(u32, u32)>,
    /// How many trace events to keep for a failure report.
    pub trace_capacity: usize,
}

impl Default for MultiSimOptions {
    fn default() -> Self {
        MultiSimOptions {
            servers: None,
            groups: None,
            clients: 4,
            keys: 2,
            fault_ticks: 100,
            settle_ticks: 400,
            client_timeout_ticks: 25,
            faults: true,
            quiet_fault: None,
            tick: Duration::from_millis(10),
            clock_skew: 0.1,
            max_write_latency: Duration::from_millis(10),
            link: LinkConfig::new(Duration::from_millis(1)).with_jitter(Duration::from_millis(2)),
            node_config: Config::new(NodeId(0)),
            liveness: None,
            trace_capacity: 256,
        }
    }
}

/// A passing run's numbers.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct MultiSimReport {
    /// The seed.
    pub seed: u64,
    /// Servers.
    pub servers: u64,
    /// Groups per server.
    pub groups: u64,
    /// The fault on the quiet system.
    pub quiet_fault: QuietFault,
    /// Whether check-quorum (and so lease reads) was on.
    pub check_quorum: bool,
    /// Liveness beat interval and timeout, in ticks.
    pub liveness: (u32, u32),
    /// Client operations completed and checked for linearizability.
    pub operations: usize,
    /// Reads served without a log entry (ReadIndex or lease).
    pub index_reads: u64,
    /// Reads accepted under a leader lease.
    pub lease_reads: u64,
    /// Lease reads refused ([`Error::LeaseUnavailable`]), then retried by
    /// ReadIndex.
    pub lease_refused: u64,
    /// Retries answered from a session table instead of executed again.
    pub deduplicated: u64,
    /// Entries committed, over all groups.
    pub committed: u64,
    /// Terms that had a leader, over all groups.
    pub elections: u64,
    /// Random faults injected.
    pub faults: usize,
    /// Server crashes.
    pub crashes: u64,
    /// Simulation steps.
    pub steps: u64,
    /// Batches lost, cut or filtered by the network.
    pub dropped: u64,
    /// Snapshots installed from a leader.
    pub snapshots_installed: u64,
    /// Unsynced writes lost and appends torn by crashes.
    pub lost_writes: (u64, u64),
    /// Group replicas quiesced when the quiet fault struck (every group on
    /// every server).
    pub quiesced_groups: u64,
    /// In the quiet windows: ticks, batches sent, and the most the
    /// liveness beats allow.
    pub quiet_window: (u64, u64, u64),
    /// Groups the quiet fault's majority side had to elect a leader for,
    /// and the most ticks it took one of them from the fault.
    pub re_elected: (u64, u64),
    /// Group replicas on the majority side quiesced again (counting only
    /// live followers) at the end of the quiet fault.
    pub requiesced: u64,
    /// Groups woken by a peer's liveness change, over all servers.
    pub woken_by_liveness: u64,
    /// Batches sent, and messages in them, over the whole run.
    pub batches: (u64, u64),
}

/// A client with one request outstanding at a time.
#[derive(Debug)]
struct Client {
    id: u32,
    seq: u64,
    /// The server it believes leads each group.
    targets: BTreeMap<GroupId, NodeId>,
    pending: Option<Pending>,
    next_op_at: SimTime,
    /// Sent only to this server, reads only (the quiet-fault reader).
    pinned: Option<NodeId>,
}

#[derive(Debug)]
struct Pending {
    group: GroupId,
    op: KvOp,
    call: SimTime,
    retry_at: SimTime,
    sent: bool,
}

/// The multi-raft simulation; see the [module docs](self).
#[derive(Debug)]
pub struct MultiSimulation {
    rng: fastrand::Rng,
    options: MultiSimOptions,
    world: World,
    clients: Vec<Client>,
    /// Per group, the completed operations.
    history: BTreeMap<GroupId, Vec<Operation<KvOp, KvOutput>>>,
    /// Per group, the requests issued.
    issued: BTreeMap<GroupId, u64>,
    /// Per group, when a client last called into it.
    touched: BTreeMap<GroupId, SimTime>,
    next_read_id: u64,
    /// The groups the pinned readers read: those the struck server led.
    pinned_groups: Vec<GroupId>,
    /// While probing, the groups that still get one write each (and no
    /// other new request is made).
    probe: Option<VecDeque<GroupId>>,
    quiet_fault: QuietFault,
    report: MultiSimReport,
}

impl MultiSimulation {
    /// Runs one seed: faults, quiet, a fault on the quiet system, heal,
    /// then the checks.
    pub fn run(seed: u64, options: &MultiSimOptions) -> Result<MultiSimReport, SimFailure> {
        run_seed(
            seed,
            MultiSimulation::new(seed, options),
            MultiSimulation::run_phases,
            MultiSimulation::finish_report,
            |sim| sim.world.failure_trace(),
        )
    }

    fn new(seed: u64, options: &MultiSimOptions) -> Result<Self, Violation> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let servers = options.servers.unwrap_or_else(|| [3, 3, 5][rng.usize(..3)]);
        let groups = options
            .groups
            .unwrap_or_else(|| [8, 8, 8, 8, 16, 16, 16, 32, 32, 64][rng.usize(..10)]);
        let quiet_fault = options
            .quiet_fault
            .unwrap_or_else(|| QuietFault::ALL[rng.usize(..QuietFault::ALL.len())]);
        let mut node_config = options.node_config.clone();
        node_config.max_size_per_msg = [60, 200, 1 << 20][rng.usize(..3)];
        node_config.max_inflight_msgs = [1, 4, 256][rng.usize(..3)];
        node_config.pre_vote = rng.bool();
        // Lease reads need check-quorum: on in most seeds.
        node_config.check_quorum = rng.u8(..4) != 0;
        node_config.early_append_ack = rng.bool();
        node_config.max_snapshot_chunk_bytes = [16, 100, 1 << 20][rng.usize(..3)];
        let liveness = options.liveness.unwrap_or_else(|| {
            let interval = [2, 3, 5, 8][rng.usize(..4)];
            (interval, interval * rng.u32(2..=4))
        });
        let mut multi_config = MultiConfig::new(NodeId(0));
        multi_config.liveness_interval = liveness.0;
        multi_config.liveness_timeout = liveness.1;
        let max_write = options.max_write_latency.as_nanos() as u64;
        let mut net = Network::new(rng.u64(..));
        net.set_default_link(options.link);
        let group_ids: Vec<GroupId> = (0..groups).map(GroupId).collect();
        let mut world = World {
            now: SimTime::ZERO,
            rng: fastrand::Rng::with_seed(rng.u64(..)),
            net,
            servers: Vec::new(),
            invariants: BTreeMap::new(),
            newest_leader: BTreeMap::new(),
            node_config,
            multi_config,
            members: Configuration::new((1..=servers).map(NodeId)),
            groups: group_ids,
            max_write_latency: rng.u64(0..=max_write),
            compact_every: [0, 8, 30][rng.usize(..3)],
            trace: VecDeque::new(),
            deliveries: VecDeque::new(),
            trace_capacity: options.trace_capacity,
            responses: Vec::new(),
            steps: 0,
            served_reads: 0,
            snapshots: 0,
            elections: 0,
            deferred: None,
        };
        world.start(servers, options.tick.as_nanos() as u64, options.clock_skew)?;
        let clients = (0..options.clients)
            .map(|id| Client {
                id,
                seq: 0,
                targets: BTreeMap::new(),
                pending: None,
                next_op_at: SimTime::ZERO,
                pinned: None,
            })
            .collect();
        let report = MultiSimReport {
            seed,
            servers,
            groups,
            quiet_fault,
            check_quorum: world.node_config.check_quorum,
            liveness,
            ..MultiSimReport::default()
        };
        Ok(MultiSimulation {
            rng,
            options: options.clone(),
            world,
            clients,
            history: BTreeMap::new(),
            issued: BTreeMap::new(),
            touched: BTreeMap::new(),
            next_read_id: 0,
            pinned_groups: Vec::new(),
            probe: None,
            quiet_fault,
            report,
        })
    }

    fn election_tick(&self) -> u64 {
        u64::from(self.world.node_config.election_tick)
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        // 1. Random faults, clients running.
        for _ in 0..self.options.fault_ticks {
            if self.options.faults && self.rng.u32(..12) == 0 {
                self.inject_fault()?;
            }
            self.clients_act(true);
            self.advance_one_tick()?;
        }
        // 2. Heal; every group quiesces everywhere, then only beats flow.
        self.heal()?;
        self.settle("before the quiet fault")?;
        self.report.quiesced_groups = self.quiesced_everywhere();
        self.quiet_window()?;
        // 3. A fault on the quiet system.
        self.quiet_fault_phase()?;
        // 4. Heal: every group elects, serves a write, and goes quiet again.
        self.heal()?;
        self.probe_every_group()?;
        self.settle("after the quiet fault")?;
        self.quiet_window()?;
        self.check_deduplication()?;
        for (group, history) in &self.history {
            linearizability::check(&KvModel, history).map_err(|e| Violation::InGroup {
                group: group.0,
                violation: Box::new(Violation::NotLinearizable(e)),
            })?;
        }
        Ok(())
    }

    /// Every group serves one write (the clients' usual retries find its
    /// leader), within the settle bound.
    fn probe_every_group(&mut self) -> Result<(), Violation> {
        self.probe = Some(self.world.groups.iter().copied().collect());
        let bound = self.options.settle_ticks;
        let mut waited = 0;
        while self.probe.as_ref().is_some_and(|q| !q.is_empty()) {
            if waited == bound {
                return Err(Violation::Liveness {
                    what: "a group did not serve a write after healing",
                    ticks: bound,
                });
            }
            self.clients_act(true);
            self.advance_one_tick()?;
            waited += 1;
        }
        self.probe = None;
        Ok(())
    }

    fn advance_one_tick(&mut self) -> Result<(), Violation> {
        let until = self.world.now.saturating_add(self.options.tick);
        self.world.run_until(until)?;
        self.collect_responses();
        Ok(())
    }

    fn heal(&mut self) -> Result<(), Violation> {
        self.world.net.heal_all();
        self.world.net.set_default_link(self.options.link);
        self.world.fault("heal".to_owned());
        for id in self.world.crashed() {
            self.world.restart(id)?;
        }
        for c in &mut self.clients {
            c.pinned = None;
        }
        Ok(())
    }

    /// Waits, clients finishing what they started, until every group has
    /// one leader that every replica follows, everything is applied, and
    /// every replica is quiesced.
    fn settle(&mut self, when: &'static str) -> Result<(), Violation> {
        let bound = self.options.settle_ticks;
        let mut waited = 0;
        while let Some(what) = self.unsettled() {
            if waited == bound {
                return Err(Violation::Liveness { what, ticks: bound });
            }
            self.clients_act(false);
            self.advance_one_tick()?;
            waited += 1;
        }
        self.world
            .fault(format!("settled {when}: every group quiet everywhere"));
        Ok(())
    }

    fn unsettled(&self) -> Option<&'static str> {
        if self.clients.iter().any(|c| c.pending.is_some()) {
            return Some("pending requests not answered");
        }
        let blind = self
            .world
            .servers
            .iter()
            .filter_map(|s| s.multi.as_ref())
            .any(|m| m.peers().any(|(_, live)| !live));
        if blind {
            return Some("a server counts a running peer down");
        }
        for g in &self.world.groups {
            let Some(leader) = self.world.leader(*g) else {
                return Some("a group has no leader");
            };
            let (id, term, commit) = (leader.id(), leader.term(), leader.commit_index());
            for s in &self.world.servers {
                let Some(node) = s.multi.as_ref().and_then(|m| m.group(*g)) else {
                    return Some("a server is down");
                };
                if node.term() != term || node.leader() != Some(id) {
                    return Some("a replica does not follow its group's leader");
                }
                if node.applied_index() < commit {
                    return Some("a replica did not apply its leader's commit index");
                }
                if !node.is_quiesced() {
                    return Some("a group did not quiesce");
                }
            }
        }
        None
    }

    /// Group replicas quiesced, over all servers.
    fn quiesced_everywhere(&self) -> u64 {
        self.world
            .servers
            .iter()
            .filter_map(|s| s.multi.as_ref())
            .map(|m| m.quiesced() as u64)
            .sum()
    }

    /// A few liveness intervals with nothing to do: no group may tick or
    /// send a message, no leadership may change, and each server may send
    /// each peer one beat per liveness interval.
    fn quiet_window(&mut self) -> Result<(), Violation> {
        let interval = u64::from(self.report.liveness.0);
        let window = 3 * interval + 2 * self.election_tick();
        // The last quiescing heartbeats and their answers land first. A
        // late answer to an append (a retry's, sent once its write was
        // durable) wakes a leader for one heartbeat round: settle again.
        for _ in 0..2 {
            self.advance_one_tick()?;
        }
        if self.unsettled().is_some() {
            self.settle("after a late message")?;
            for _ in 0..2 {
                self.advance_one_tick()?;
            }
        }
        if let Some(what) = self.unsettled() {
            return Err(Violation::Liveness { what, ticks: 2 });
        }
        let before: Vec<_> = self
            .world
            .servers
            .iter()
            .map(|s| (s.stats(), s.multi.as_ref().map_or(0, |m| m.now())))
            .collect();
        let leaders: Vec<_> = self
            .world
            .groups
            .iter()
            .map(|g| self.world.leader(*g).map(|n| (n.id(), n.term())))
            .collect();
        for _ in 0..window {
            self.advance_one_tick()?;
        }
        let peers = self.world.servers.len() as u64 - 1;
        let (mut batches, mut allowed) = (0, 0);
        for (s, (stats, ticks)) in self.world.servers.iter().zip(before) {
            let now = s.stats();
            let elapsed = s.multi.as_ref().map_or(0, |m| m.now()) - ticks;
            if now.messages_sent != stats.messages_sent {
                return Err(Violation::NotQuiet {
                    what: "a quiet server sent group messages",
                    count: now.messages_sent - stats.messages_sent,
                });
            }
            if now.group_ticks != stats.group_ticks {
                return Err(Violation::NotQuiet {
                    what: "a quiet group ticked",
                    count: now.group_ticks - stats.group_ticks,
                });
            }
            batches += now.batches_sent - stats.batches_sent;
            allowed += peers * (elapsed / interval + 1);
        }
        if batches > allowed {
            return Err(Violation::NotQuiet {
                what: "a quiet system sent more than its liveness beats",
                count: batches,
            });
        }
        let after: Vec<_> = self
            .world
            .groups
            .iter()
            .map(|g| self.world.leader(*g).map(|n| (n.id(), n.term())))
            .collect();
        if after != leaders {
            return Err(Violation::NotQuiet {
                what: "leadership changed while quiet",
                count: 0,
            });
        }
        let w = &mut self.report.quiet_window;
        *w = (w.0 + window, w.1 + batches, w.2 + allowed);
        Ok(())
    }

    /// The server leading the most groups, and how many it leads.
    fn busiest_leader(&self) -> NodeId {
        let mut count: BTreeMap<NodeId, u64> = BTreeMap::new();
        for g in &self.world.groups {
            if let Some(l) = self.world.leader(*g) {
                *count.entry(l.id()).or_default() += 1;
            }
        }
        self.world
            .ids()
            .into_iter()
            .max_by_key(|id| (count.get(id).copied().unwrap_or(0), std::cmp::Reverse(*id)))
            .unwrap_or(NodeId(1))
    }

    fn idlest_server(&self) -> NodeId {
        let mut count: BTreeMap<NodeId, u64> = BTreeMap::new();
        for g in &self.world.groups {
            if let Some(l) = self.world.leader(*g) {
                *count.entry(l.id()).or_default() += 1;
            }
        }
        self.world
            .ids()
            .into_iter()
            .min_by_key(|id| (count.get(id).copied().unwrap_or(0), *id))
            .unwrap_or(NodeId(1))
    }

    /// Phase 3: with every group quiet, strike; clients read through the
    /// struck server and write elsewhere; the side with a quorum must elect
    /// for every group it lost, and (unless the struck server is its
    /// leader) the groups quiesce again counting only live followers.
    fn quiet_fault_phase(&mut self) -> Result<(), Violation> {
        let quiesced = self.quiesced_everywhere();
        let all = self.world.groups.len() as u64 * self.world.servers.len() as u64;
        if quiesced != all {
            return Err(Violation::NotQuiet {
                what: "not every group was quiesced when the quiet fault struck",
                count: quiesced,
            });
        }
        let leader = self.busiest_leader();
        let ids = self.world.ids();
        let others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != leader).collect();
        let fault = self.quiet_fault;
        let struck = match fault {
            QuietFault::IsolateFollower => self.idlest_server(),
            _ => leader,
        };
        self.pinned_groups = self
            .world
            .groups
            .iter()
            .copied()
            .filter(|g| self.world.leader(*g).is_some_and(|l| l.id() == struck))
            .collect();
        // The servers that keep a quorum, and the groups they must elect for.
        let mut minority = vec![struck];
        match fault {
            QuietFault::IsolateLeader | QuietFault::IsolateFollower => {
                self.world.net.isolate(struck);
            }
            QuietFault::CrashLeader | QuietFault::RestartLeader => self.world.crash(struck)?,
            QuietFault::MuteLeader => {
                for o in &others {
                    self.world.net.cut(struck, *o);
                }
            }
            QuietFault::DeafenLeader => {
                for o in &others {
                    self.world.net.cut(*o, struck);
                }
            }
            QuietFault::SplitMinority => {
                if ids.len() >= 5 {
                    minority.push(others[self.rng.usize(..others.len())]);
                }
                let majority: Vec<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|i| !minority.contains(i))
                    .collect();
                self.world.net.split(&[&minority, &majority]);
            }
        }
        self.world
            .fault(format!("quiet fault {fault:?} on {struck:?}"));
        if fault == QuietFault::RestartLeader {
            self.world.restart(struck)?;
        }
        let majority: Vec<NodeId> = ids
            .iter()
            .copied()
            .filter(|i| !minority.contains(i))
            .collect();
        // Groups whose leader the majority side lost.
        let must_elect: Vec<(GroupId, Term)> = match fault {
            QuietFault::IsolateFollower | QuietFault::RestartLeader => Vec::new(),
            // A deaf leader steps down only with check-quorum; then, without
            // pre-vote, its endless campaigns (granted, the answers lost)
            // keep resetting the others' election timers, as in any Raft.
            QuietFault::DeafenLeader
                if !(self.world.node_config.check_quorum && self.world.node_config.pre_vote) =>
            {
                Vec::new()
            }
            _ => self
                .world
                .groups
                .iter()
                .filter_map(|g| {
                    let l = self.world.leader(*g)?;
                    minority.contains(&l.id()).then(|| (*g, l.term()))
                })
                .collect(),
        };
        // Two clients read only, through the struck server, the groups it
        // led (lease reads of quiet leaders); the others go on as usual.
        let now = self.world.now;
        for reader in self.clients.iter_mut().take(2) {
            reader.pinned = Some(struck);
            if let Some(p) = reader.pending.as_mut() {
                p.retry_at = now;
                p.sent = false;
            }
        }
        let liveness_timeout = u64::from(self.report.liveness.1);
        // Elections after the liveness timeout: a few rounds (split votes,
        // pre-votes refused while a lease is honoured). A deaf leader first
        // heartbeats for two check-quorum intervals (woken, it counts its
        // followers active), and keeps campaigning where it cannot hear
        // the answers, which without pre-vote disrupts elections.
        let rounds = match fault {
            QuietFault::DeafenLeader => 16,
            _ => 8,
        };
        let elect_within = liveness_timeout + rounds * self.election_tick();
        let tail = 3 * self.election_tick();
        let length = elect_within + tail + u64::from(self.report.liveness.0) * 2;
        let mut elected: BTreeMap<GroupId, u64> = BTreeMap::new();
        for tick in 0..length {
            self.clients_act(tick + tail < length);
            self.advance_one_tick()?;
            for (g, old) in &must_elect {
                if elected.contains_key(g) {
                    continue;
                }
                let new = majority.iter().any(|id| {
                    self.world
                        .node(*id, *g)
                        .is_some_and(|n| n.role() == Role::Leader && n.term() > *old)
                });
                if new {
                    elected.insert(*g, tick + 1);
                }
            }
        }
        if elected.len() < must_elect.len() {
            return Err(Violation::Liveness {
                what: "the quorum side did not elect a leader for every group it lost",
                ticks: length,
            });
        }
        let slowest = elected.values().copied().max().unwrap_or(0);
        if slowest > elect_within {
            return Err(Violation::Liveness {
                what: "the quorum side elected too late after the quiet fault",
                ticks: elect_within,
            });
        }
        self.report.re_elected = (must_elect.len() as u64, slowest);
        // With a follower cut off, the others' groups quiesce again,
        // counting only live followers: every group no client touched
        // lately is quiet on every majority server.
        let tail_nanos = self.options.tick.as_nanos() as u64 * tail;
        let recent = SimTime::from_nanos(self.world.now.as_nanos().saturating_sub(tail_nanos));
        let mut requiesced = 0;
        for g in &self.world.groups {
            let touched = self.touched.get(g).is_some_and(|t| *t >= recent);
            for id in &majority {
                let Some(node) = self.world.node(*id, *g) else {
                    continue;
                };
                if node.is_quiesced() {
                    requiesced += 1;
                } else if fault == QuietFault::IsolateFollower && !touched {
                    return Err(Violation::NotQuiet {
                        what: "with a follower cut off, an idle group did not quiesce again",
                        count: g.0,
                    });
                }
            }
        }
        self.report.requiesced = requiesced;
        Ok(())
    }

    fn inject_fault(&mut self) -> Result<(), Violation> {
        self.report.faults += 1;
        let ids = self.world.ids();
        let pick = |rng: &mut fastrand::Rng, from: &[NodeId]| from[rng.usize(..from.len())];
        match self.rng.u32(..10) {
            0 | 1 => {
                let running = self.world.running();
                if running.len() > 1 {
                    let id = pick(&mut self.rng, &running);
                    self.report.crashes += 1;
                    self.world.crash(id)?;
                }
            }
            2 => {
                let crashed = self.world.crashed();
                if !crashed.is_empty() {
                    let id = pick(&mut self.rng, &crashed);
                    self.world.restart(id)?;
                }
            }
            3 => {
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                let cut = self.rng.usize(1..shuffled.len());
                let (a, b) = shuffled.split_at(cut);
                self.world.net.split(&[a, b]);
                self.world.fault(format!("partition {a:?} {b:?}"));
            }
            4 => {
                let id = pick(&mut self.rng, &ids);
                self.world.net.isolate(id);
                self.world.fault(format!("isolate {id:?}"));
            }
            5 => {
                let from = pick(&mut self.rng, &ids);
                let to = pick(&mut self.rng, &ids);
                if from != to {
                    self.world.net.cut(from, to);
                    self.world.fault(format!("cut {from:?}->{to:?}"));
                }
            }
            6 => {
                let link = LinkConfig::new(Duration::from_micros(self.rng.u64(200..3000)))
                    .with_jitter(Duration::from_micros(self.rng.u64(0..15_000)))
                    .with_loss(self.rng.f64() * 0.3)
                    .with_duplicate(self.rng.f64() * 0.2);
                self.world.net.set_default_link(link);
                self.world.fault(format!("links {link:?}"));
            }
            7 => {
                // A leadership transfer in some group.
                let g = self.world.groups[self.rng.usize(..self.world.groups.len())];
                let to = pick(&mut self.rng, &ids);
                let from = self.world.leader(g).map(|n| n.id());
                if let Some(i) = from.and_then(|f| self.world.index_of(f)) {
                    let transferred = self.world.servers[i]
                        .multi
                        .as_mut()
                        .and_then(|m| m.group_mut(g))
                        .is_some_and(|mut node| node.transfer_leadership(to).is_ok());
                    if transferred {
                        self.world.fault(format!("{g}: transfer {from:?}->{to:?}"));
                    }
                    self.world.pump(i)?;
                }
            }
            _ => {
                self.world.net.heal_all();
                self.world.net.set_default_link(self.options.link);
                self.world.fault("heal".to_owned());
            }
        }
        Ok(())
    }

    /// Clients start new requests (if `new_requests`) and retry timed-out
    /// ones.
    fn clients_act(&mut self, new_requests: bool) {
        let now = self.world.now;
        let timeout = self.options.tick * self.options.client_timeout_ticks as u32;
        let ids = self.world.ids();
        let groups = self.world.groups.len();
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            match &client.pending {
                None if new_requests && now >= client.next_op_at => {
                    let probed = match self.probe.as_mut() {
                        Some(queue) => match queue.pop_front() {
                            Some(group) => Some(group),
                            None => continue,
                        },
                        None => None,
                    };
                    client.seq += 1;
                    let group = match (probed, client.pinned, self.pinned_groups.len()) {
                        (Some(group), _, _) => group,
                        (None, Some(_), n) if n > 0 => self.pinned_groups[self.rng.usize(..n)],
                        _ => GroupId(self.rng.u64(..groups as u64)),
                    };
                    *self.issued.entry(group).or_default() += 1;
                    let key = self.rng.u8(..self.options.keys);
                    let kind = if probed.is_some() {
                        1
                    } else if client.pinned.is_some() {
                        0
                    } else {
                        self.rng.u8(..3)
                    };
                    let op = KvOp::draw(kind, key, &mut self.rng);
                    client.pending = Some(Pending {
                        group,
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
            let group = p.group;
            let command = KvCommand {
                id: ClientSeq {
                    client: client.id,
                    seq: client.seq,
                },
                op: p.op,
            }
            .encode();
            let random = ids[self.rng.usize(..ids.len())];
            let target = match client.pinned {
                Some(pinned) => pinned,
                None if p.sent => {
                    // No answer in time: try another server.
                    client.targets.insert(group, random);
                    random
                }
                None => *client.targets.entry(group).or_insert(random),
            };
            // Reads: a third through the log, a third ReadIndex, a third
            // by lease (ReadIndex without one); a pinned reader never uses
            // the log.
            let path = match p.op {
                KvOp::Get { .. } if client.pinned.is_some() => 1 + self.rng.u8(..2),
                KvOp::Get { .. } => self.rng.u8(..3),
                _ => 0,
            };
            self.next_read_id += 1;
            let read_id = self.next_read_id;
            self.touched.insert(group, now);
            let outcome = self.call(target, group, path, read_id, command);
            let pinned = self.clients[c].pinned.is_some();
            let (sent, retry_at) = match outcome {
                Ok(()) => (true, now.saturating_add(timeout)),
                Err(Error::NotLeader { leader_hint }) => {
                    if !pinned {
                        let next = leader_hint.unwrap_or_else(|| ids[self.rng.usize(..ids.len())]);
                        self.clients[c].targets.insert(group, next);
                    }
                    (false, now.saturating_add(self.options.tick))
                }
                Err(_) => (false, now.saturating_add(self.options.tick)),
            };
            if let Some(p) = self.clients[c].pending.as_mut() {
                p.retry_at = retry_at;
                p.sent = sent;
            }
        }
    }

    /// One client call on server `target`'s replica of `group`: a write
    /// (`path` 0; sometimes forwarded by a follower), a ReadIndex read (1)
    /// or a lease read falling back to ReadIndex (2).
    fn call(
        &mut self,
        target: NodeId,
        group: GroupId,
        path: u8,
        read_id: u64,
        command: bytes::Bytes,
    ) -> Result<(), Error> {
        let down = || Error::NotLeader { leader_hint: None };
        let i = self.world.index_of(target).ok_or_else(down)?;
        let forward = self.rng.bool();
        let world = &mut self.world;
        let newest = world.newest_leader.get(&group).copied().unwrap_or_default();
        let multi = world.servers[i].multi.as_mut().ok_or_else(down)?;
        let mut node = multi.group_mut(group).ok_or_else(down)?;
        let mut lease = None;
        let result = match path {
            0 if forward => node.propose_or_forward(command.clone()).map(|_| ()),
            0 => node.propose(command.clone()).map(|_| ()),
            1 => node.read_index(read_id),
            _ => match node.read_lease(read_id) {
                Err(Error::LeaseUnavailable) => {
                    self.report.lease_refused += 1;
                    node.read_index(read_id)
                }
                Ok(()) => {
                    self.report.lease_reads += 1;
                    lease = Some((target, node.term()));
                    Ok(())
                }
                other => other,
            },
        };
        drop(node);
        if let Some((leader, term)) = lease
            && newest > term
        {
            world.deferred.get_or_insert(Violation::InGroup {
                group: group.0,
                violation: Box::new(Violation::StaleLease {
                    leader,
                    term,
                    newer: newest,
                }),
            });
        }
        if result.is_ok() && path != 0 {
            world.remember_read(i, group, read_id, command);
        }
        if let Err(v) = world.pump(i) {
            world.deferred.get_or_insert(v);
            return Err(Error::InconsistentStorage(
                "invariant violated in a client call",
            ));
        }
        result
    }

    fn collect_responses(&mut self) {
        for (at, _server, group, (id, output)) in std::mem::take(&mut self.world.responses) {
            let Some(client) = self.clients.get_mut(id.client as usize) else {
                continue;
            };
            if client.seq != id.seq || client.pending.as_ref().is_none_or(|p| p.group != group) {
                continue;
            }
            if let Some(p) = client.pending.take() {
                self.history.entry(group).or_default().push(Operation {
                    client: u64::from(id.client),
                    call: p.call.as_nanos(),
                    ret: at.as_nanos(),
                    input: p.op,
                    output,
                });
                client.next_op_at = at.saturating_add(self.options.tick * self.rng.u32(0..4));
            }
        }
    }

    fn check_deduplication(&self) -> Result<(), Violation> {
        for s in &self.world.servers {
            for (g, machine) in &s.machines {
                let (executed, _) = machine.counts();
                let issued = self.issued.get(g).copied().unwrap_or(0);
                if executed > issued {
                    return Err(Violation::InGroup {
                        group: g.0,
                        violation: Box::new(Violation::DuplicateExecution {
                            node: s.id,
                            executed,
                            issued,
                        }),
                    });
                }
            }
        }
        Ok(())
    }

    fn finish_report(mut self) -> MultiSimReport {
        let r = &mut self.report;
        r.operations = self.history.values().map(Vec::len).sum();
        r.index_reads = self.world.served_reads;
        r.deduplicated = self
            .world
            .groups
            .iter()
            .map(|g| {
                self.world
                    .servers
                    .iter()
                    .filter_map(|s| s.machines.get(g))
                    .map(|m| m.counts().1)
                    .max()
                    .unwrap_or(0)
            })
            .sum();
        r.committed = self
            .world
            .invariants
            .values()
            .map(|i| i.committed_len())
            .sum();
        r.elections = self.world.elections;
        r.steps = self.world.steps;
        r.dropped = self.world.net.stats().dropped();
        r.snapshots_installed = self.world.snapshots;
        let mut lost = (0, 0);
        for s in &self.world.servers {
            let (a, b) = s.disk_losses();
            lost = (lost.0 + a, lost.1 + b);
            let stats = s.stats();
            r.woken_by_liveness += stats.woken_by_liveness;
            r.batches.0 += stats.batches_sent;
            r.batches.1 += stats.messages_sent;
        }
        r.lost_writes = lost;
        self.report
    }
}
