//! A simulated Raft cluster: nodes, their disks and state machines, the
//! `quorate-transport` simulated network between them, per-node clocks
//! that drift, and storage writes that take time and are lost on a crash.
//!
//! Generic over the disk ([`SimStorage`]); by default every node runs on a
//! [`CrashStorage`], so each simulated crash loses the unsynced writes the
//! persistence contract allows to lose, and each restart recovers from
//! what is left.

mod run;

use crate::sim::disk::SimStorage;
use crate::sim::invariants::Invariants;
use crate::sim::trace::TraceEvent;
use crate::sim::{StateMachine, Violation};
use crate::{
    ChangeMethod, Config, Configuration, CrashStorage, Error, LogIndex, Message, Node, NodeId,
    Proposed, ReadState, Ready, Role, Snapshot,
};
use bytes::Bytes;
use quorate_transport::sim::{LinkConfig, Network, SimTime};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::Duration;

/// How a simulated cluster is built.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of voters, 1 to 9.
    pub nodes: u64,
    /// The nominal interval between two ticks of a node.
    pub tick: Duration,
    /// Clock-rate skew: each node's tick interval is the nominal one scaled
    /// by a factor drawn from `[1 - skew, 1 + skew]`.
    pub clock_skew: f64,
    /// The longest a storage write takes before it is durable.
    pub max_write_latency: Duration,
    /// Node timing (its `id` and `seed` are set per node).
    pub node_config: Config,
    /// The links' behaviour when no fault is injected.
    pub link: LinkConfig,
    /// How many trace events to keep for a failure report.
    pub trace_capacity: usize,
    /// Each node compacts its log into a snapshot of its state machine
    /// once this many applied entries follow its latest snapshot (0: never).
    pub compact_every: u64,
    /// How many of the `nodes` voters (the highest ids) are witnesses.
    pub witnesses: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            tick: Duration::from_millis(10),
            clock_skew: 0.1,
            max_write_latency: Duration::from_millis(10),
            node_config: Config::new(NodeId(0)),
            link: LinkConfig::new(Duration::from_millis(1)).with_jitter(Duration::from_millis(2)),
            trace_capacity: 256,
            compact_every: 0,
            witnesses: 0,
        }
    }
}

/// A simulated server: the Raft node (absent while crashed), its disk and
/// its volatile state machine.
#[derive(Debug)]
struct Server<SM, S> {
    id: NodeId,
    config: Config,
    node: Option<Node<S>>,
    /// The disk while the node is down.
    disk: Option<S>,
    state_machine: SM,
    /// Readies whose writes are issued and not yet synced, with the time
    /// they become durable and the leader's snapshot they carried.
    writes: VecDeque<(SimTime, Ready, Option<Snapshot>)>,
    tick_interval: u64,
    next_tick: SimTime,
    restarts: u64,
    /// ReadIndex queries asked of this node, by read id.
    reads: BTreeMap<u64, Bytes>,
    /// Reads confirmed by the leader, waiting for the applied index.
    confirmed: Vec<ReadState>,
}

impl<SM: Default, S: SimStorage> Server<SM, S> {
    /// A server running a fresh node whose empty disk holds `configuration`.
    fn start(
        config: Config,
        configuration: Configuration,
        tick_interval: u64,
        first_tick: SimTime,
    ) -> Result<Self, Violation> {
        let id = config.id;
        let disk = S::create(configuration, config.seed ^ 0x5eed_d15c);
        let node =
            Node::new(config.clone(), disk).map_err(|error| Violation::Node { node: id, error })?;
        Ok(Server {
            id,
            config,
            node: Some(node),
            disk: None,
            state_machine: SM::default(),
            writes: VecDeque::new(),
            tick_interval,
            next_tick: first_tick,
            restarts: 0,
            reads: BTreeMap::new(),
            confirmed: Vec::new(),
        })
    }
}

/// What happens next.
#[derive(Clone, Copy, Debug)]
enum Event {
    Deliver,
    WriteDone(usize),
    Tick(usize),
}

/// A cluster of Raft nodes over a simulated network, with the safety
/// invariants checked after every step. Generic over the application's
/// [`StateMachine`], so it tests yours as well as the key-value store, and
/// over the disk `S`, so it tests yours too.
pub struct Cluster<SM: StateMachine, S: SimStorage = CrashStorage> {
    seed: u64,
    now: SimTime,
    rng: fastrand::Rng,
    net: Network<NodeId, Message>,
    servers: Vec<Server<SM, S>>,
    invariants: Invariants,
    trace: VecDeque<TraceEvent>,
    trace_capacity: usize,
    max_write_latency: u64,
    compact_every: u64,
    /// The node configuration new servers start with.
    node_config: Config,
    membership_changes: u64,
    /// Membership changes that went through a joint configuration.
    joint_changes: u64,
    /// Learners promoted after catching up (`Node::add_voter`).
    promotions: u64,
    snapshots: u64,
    responses: Vec<(SimTime, NodeId, SM::Response)>,
    steps: u64,
    served_reads: u64,
    /// When a TimeoutNow was last delivered to a running node.
    last_handover: Option<SimTime>,
    /// A violation found while a client call ran the Ready loop: the client
    /// gets an error, and the next [`step`](Cluster::step) reports the
    /// violation, so it cannot be mistaken for a refusal to retry.
    deferred: Option<Violation>,
}

impl<SM: StateMachine, S: SimStorage> fmt::Debug for Cluster<SM, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("seed", &self.seed)
            .field("now", &self.now)
            .field("nodes", &self.servers.len())
            .field("steps", &self.steps)
            .finish_non_exhaustive()
    }
}

impl<SM: StateMachine, S: SimStorage> Cluster<SM, S> {
    /// Builds a cluster whose every random choice derives from `seed`.
    pub fn new(seed: u64, options: &ClusterOptions) -> Result<Self, Violation> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let data_nodes = options.nodes.saturating_sub(options.witnesses);
        let members = Configuration::new((1..=data_nodes).map(NodeId))
            .with_witnesses((data_nodes + 1..=options.nodes).map(NodeId));
        let mut invariants = Invariants::default();
        for w in members.witnesses() {
            invariants.witness(*w);
        }
        let mut net = Network::new(rng.u64(..));
        net.set_default_link(options.link);
        let nominal = options.tick.as_nanos() as f64;
        let mut servers = Vec::new();
        for n in 1..=options.nodes {
            let id = NodeId(n);
            let mut config = options.node_config.clone();
            config.id = id;
            config.seed = rng.u64(..);
            let skew = 1.0 + options.clock_skew * (rng.f64() * 2.0 - 1.0);
            let tick_interval = (nominal * skew).max(1.0) as u64;
            let first_tick = SimTime::from_nanos(rng.u64(1..=tick_interval));
            servers.push(Server::start(
                config,
                members.clone(),
                tick_interval,
                first_tick,
            )?);
        }
        Ok(Cluster {
            seed,
            now: SimTime::ZERO,
            rng,
            net,
            servers,
            invariants,
            trace: VecDeque::new(),
            trace_capacity: options.trace_capacity,
            max_write_latency: options.max_write_latency.as_nanos() as u64,
            compact_every: options.compact_every,
            node_config: options.node_config.clone(),
            membership_changes: 0,
            joint_changes: 0,
            promotions: 0,
            snapshots: 0,
            responses: Vec::new(),
            steps: 0,
            served_reads: 0,
            last_handover: None,
            deferred: None,
        })
    }

    /// The seed the cluster was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The simulated time.
    pub fn now(&self) -> SimTime {
        self.now
    }

    /// How many ReadIndex reads were served.
    pub fn served_reads(&self) -> u64 {
        self.served_reads
    }

    /// When a TimeoutNow (a leadership handover) was last delivered.
    pub fn last_handover(&self) -> Option<SimTime> {
        self.last_handover
    }

    /// How many events were processed.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The simulated network, for faults beyond the helpers below.
    pub fn network_mut(&mut self) -> &mut Network<NodeId, Message> {
        &mut self.net
    }

    /// The network's counters.
    pub fn network_stats(&self) -> quorate_transport::sim::Stats {
        self.net.stats()
    }

    /// The member ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.servers.iter().map(|s| s.id).collect()
    }

    /// A running node, or `None` if it is down.
    pub fn node(&self, id: NodeId) -> Option<&Node<S>> {
        self.server(id).and_then(|s| s.node.as_ref())
    }

    /// The state machine of a node (rebuilt from the log after a restart).
    pub fn state_machine(&self, id: NodeId) -> Option<&SM> {
        self.server(id).map(|s| &s.state_machine)
    }

    /// The running leader with the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.servers
            .iter()
            .filter_map(|s| s.node.as_ref())
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id())
    }

    /// Ids of the nodes that are up.
    pub fn running(&self) -> Vec<NodeId> {
        self.servers
            .iter()
            .filter(|s| s.node.is_some())
            .map(|s| s.id)
            .collect()
    }

    /// Ids of the nodes that are down.
    pub fn crashed(&self) -> Vec<NodeId> {
        self.servers
            .iter()
            .filter(|s| s.node.is_none())
            .map(|s| s.id)
            .collect()
    }

    /// How many entries are known committed.
    pub fn committed(&self) -> u64 {
        self.invariants.committed_len()
    }

    /// How many terms had a leader.
    pub fn elections(&self) -> usize {
        self.invariants.elections()
    }

    /// The most recent events, oldest first.
    pub fn trace(&self) -> impl Iterator<Item = &TraceEvent> + '_ {
        self.trace.iter()
    }

    /// Responses the state machines produced since the last call, with the
    /// time and node that produced them.
    pub fn take_responses(&mut self) -> Vec<(SimTime, NodeId, SM::Response)> {
        std::mem::take(&mut self.responses)
    }

    /// Proposes a command at node `id`. A node that is down answers
    /// `NotLeader` without a hint, as a client would conclude from silence.
    pub fn propose(&mut self, id: NodeId, command: Bytes) -> Result<LogIndex, Error> {
        let i = self.index_of(id).ok_or(Error::UnknownPeer { from: id })?;
        let node = self.servers[i]
            .node
            .as_mut()
            .ok_or(Error::NotLeader { leader_hint: None })?;
        let index = node.propose(command)?;
        self.record(TraceEvent::Proposed {
            at: self.now,
            node: id,
            index,
        });
        self.pump_for_client(i, "invariant violated while proposing")?;
        Ok(index)
    }

    /// Proposes at node `id`, or lets it forward to the leader it knows.
    pub fn propose_or_forward(&mut self, id: NodeId, command: Bytes) -> Result<Proposed, Error> {
        let i = self.index_of(id).ok_or(Error::UnknownPeer { from: id })?;
        let node = self.servers[i]
            .node
            .as_mut()
            .ok_or(Error::NotLeader { leader_hint: None })?;
        let proposed = node.propose_or_forward(command)?;
        self.pump_for_client(i, "invariant violated while proposing")?;
        Ok(proposed)
    }

    /// Asks node `id` for a linearizable read without a log write
    /// (ReadIndex): once confirmed and applied far enough, the state
    /// machine's [`query`](StateMachine::query) answers it into
    /// [`take_responses`](Cluster::take_responses).
    pub fn read(&mut self, id: NodeId, read_id: u64, query: Bytes) -> Result<(), Error> {
        // No Ready now: the heartbeat round goes out at the node's next
        // event, shared by every read asked until then (ReadIndex batching).
        self.start_read(id, read_id, query, Node::read_index, false)
    }

    /// Asks node `id` for a lease read
    /// ([`Node::read_lease`](crate::Node::read_lease)), answered like
    /// [`read`](Cluster::read).
    pub fn read_lease(&mut self, id: NodeId, read_id: u64, query: Bytes) -> Result<(), Error> {
        self.start_read(id, read_id, query, Node::read_lease, true)
    }

    /// Starts a read on node `id` with `start` and remembers its query until
    /// the node releases it; runs the node's Ready loop now if `pump`.
    fn start_read(
        &mut self,
        id: NodeId,
        read_id: u64,
        query: Bytes,
        start: impl FnOnce(&mut Node<S>, u64) -> Result<(), Error>,
        pump: bool,
    ) -> Result<(), Error> {
        let i = self.index_of(id).ok_or(Error::UnknownPeer { from: id })?;
        let server = &mut self.servers[i];
        let node = server
            .node
            .as_mut()
            .ok_or(Error::NotLeader { leader_hint: None })?;
        start(node, read_id)?;
        server.reads.insert(read_id, query);
        if !pump {
            return Ok(());
        }
        self.pump_for_client(i, "invariant violated while reading")
    }

    /// Runs node `i`'s Ready loop for a client call. A violation is kept
    /// for the next [`step`](Cluster::step) and the client sees an error.
    fn pump_for_client(&mut self, i: usize, what: &'static str) -> Result<(), Error> {
        self.pump(i).map_err(|v| {
            self.deferred.get_or_insert(v);
            Error::InconsistentStorage(what)
        })
    }

    /// Runs every event up to and including time `until`; stops at the
    /// first invariant violation.
    pub fn run_until(&mut self, until: SimTime) -> Result<(), Violation> {
        while self.step(until)? {}
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs the next event if it is due by `until` (a message delivery, a
    /// write becoming durable or a tick) and checks the invariants; `false`
    /// if no event is due. Between steps a test may inject faults at exact
    /// protocol moments.
    pub fn step(&mut self, until: SimTime) -> Result<bool, Violation> {
        if let Some(violation) = self.deferred.take() {
            return Err(violation);
        }
        let Some((at, event)) = self.next_event().filter(|(at, _)| *at <= until) else {
            return Ok(false);
        };
        self.now = self.now.max(at);
        self.steps += 1;
        match event {
            Event::Deliver => {
                if let Some(d) = self.net.poll_delivery(self.now) {
                    self.deliver(d.from, d.to, d.msg)?;
                }
            }
            Event::WriteDone(i) => self.complete_write(i)?,
            Event::Tick(i) => self.tick(i)?,
        }
        self.check()?;
        Ok(true)
    }

    /// Crashes a node: its volatile state, unsynced writes and in-flight
    /// messages to it are lost; its disk keeps what it synced (and with a
    /// [`CrashStorage`], a torn prefix of the rest).
    pub fn crash(&mut self, id: NodeId) {
        let Some(i) = self.index_of(id) else { return };
        let server = &mut self.servers[i];
        if let Some(node) = server.node.take() {
            let mut disk = node.into_storage();
            if let Err(error) = disk.crash() {
                self.deferred.get_or_insert(Violation::Node {
                    node: id,
                    error: Error::Storage(error),
                });
            }
            server.disk = Some(disk);
            server.writes.clear();
            server.reads.clear();
            server.confirmed.clear();
            server.state_machine = SM::default();
            self.net.crash(id);
            self.invariants.crashed(id);
            self.fault(format!("crash {id:?}"));
        }
    }

    /// How many membership changes leaders accepted.
    pub fn membership_changes(&self) -> u64 {
        self.membership_changes
    }

    /// How many unsynced writes the nodes' crashes lost, and how many
    /// appends they tore, over every disk.
    pub fn disk_losses(&self) -> (u64, u64) {
        self.servers
            .iter()
            .filter_map(|s| s.node.as_ref().map(Node::storage).or(s.disk.as_ref()))
            .map(SimStorage::losses)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// How many snapshots nodes installed from a leader (InstallSnapshot).
    pub fn installed_snapshots(&self) -> u64 {
        self.snapshots
    }

    /// Restarts a crashed node from its disk alone.
    pub fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.index_of(id) else {
            return Ok(());
        };
        let server = &mut self.servers[i];
        let Some(disk) = server.disk.take() else {
            return Ok(());
        };
        server.restarts += 1;
        let mut config = server.config.clone();
        config.seed = config.seed.wrapping_add(server.restarts);
        // The state machine comes back from the snapshot, the node applies
        // the committed log tail after it.
        let snapshot = disk.snapshot().map_err(|e| Violation::Node {
            node: id,
            error: Error::Storage(e),
        })?;
        server.state_machine.restore(&snapshot.data);
        let node = Node::new(config, disk).map_err(|error| Violation::Node { node: id, error })?;
        server.node = Some(node);
        server.next_tick = self
            .now
            .saturating_add(Duration::from_nanos(server.tick_interval));
        self.net.restart(id);
        self.fault(format!("restart {id:?}"));
        self.pump(i)
    }

    /// Asks the leader `leader` to change the membership to `target` the
    /// way `method` says, then starts the target's new nodes (with empty
    /// disks and the current voters as their boot configuration,
    /// themselves as learners).
    pub fn change_membership(
        &mut self,
        leader: NodeId,
        target: Configuration,
        method: ChangeMethod,
    ) -> Result<(), Violation> {
        let Some(i) = self.index_of(leader) else {
            return Ok(());
        };
        let Some(current) = self.servers[i]
            .node
            .as_ref()
            .map(|n| n.configuration().clone())
        else {
            return Ok(());
        };
        // Refused proposals (a change in progress, no commit in the term)
        // are not faults; check before starting servers.
        let Some(node) = self.servers[i].node.as_mut() else {
            return Ok(());
        };
        let Ok(index) = node.propose_configuration_with(target.clone(), method) else {
            return Ok(());
        };
        self.membership_changes += 1;
        if node.configuration().is_joint() {
            self.joint_changes += 1;
        }
        self.fault(format!("membership {target:?} ({method:?}) at {index:?}"));
        for id in target.witnesses() {
            self.invariants.witness(*id);
        }
        self.start_new_members(&current, target.members())?;
        self.pump(i)
    }

    /// Asks the leader `leader` to make `id` a voter once it has caught up
    /// (`Node::add_voter`), starting `id` if it is a new server.
    pub fn add_voter(&mut self, leader: NodeId, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.index_of(leader) else {
            return Ok(());
        };
        let Some(node) = self.servers[i].node.as_mut() else {
            return Ok(());
        };
        let current = node.configuration().clone();
        if node.add_voter(id).is_err() {
            return Ok(());
        }
        self.membership_changes += 1;
        self.fault(format!("add voter {id:?} after catch-up"));
        self.start_new_members(&current, [id])?;
        self.pump(i)
    }

    /// How many membership changes went through a joint configuration
    /// (the others took one step).
    pub fn joint_changes(&self) -> u64 {
        self.joint_changes
    }

    /// How many learners were promoted after catching up.
    pub fn promotions(&self) -> u64 {
        self.promotions
    }

    /// Starts the servers among `members` that never ran, booting from
    /// `current`'s voters with themselves as learners.
    fn start_new_members(
        &mut self,
        current: &Configuration,
        members: impl IntoIterator<Item = NodeId>,
    ) -> Result<(), Violation> {
        for id in members {
            if self.index_of(id).is_none() {
                let boot = Configuration::new(current.voters().iter().copied()).with_learners([id]);
                self.start_server(id, boot)?;
            }
        }
        Ok(())
    }

    /// Starts a new server with an empty disk holding `boot`.
    fn start_server(&mut self, id: NodeId, boot: Configuration) -> Result<(), Violation> {
        let mut config = self.node_config.clone();
        config.id = id;
        config.seed = self.rng.u64(..);
        let tick_interval = self.servers.first().map_or(1_000_000, |s| s.tick_interval);
        let first_tick = self.now.saturating_add(Duration::from_nanos(tick_interval));
        self.servers
            .push(Server::start(config, boot, tick_interval, first_tick)?);
        self.fault(format!("start {id:?}"));
        Ok(())
    }

    /// Asks the leader `from` to hand leadership to `to`.
    pub fn transfer_leadership(&mut self, from: NodeId, to: NodeId) -> Result<(), Violation> {
        let Some(i) = self.index_of(from) else {
            return Ok(());
        };
        let Some(node) = self.servers[i].node.as_mut() else {
            return Ok(());
        };
        if node.transfer_leadership(to).is_ok() {
            self.fault(format!("transfer {from:?}->{to:?}"));
        }
        self.pump(i)
    }

    /// Makes node `id` start an election now, as if its election timeout
    /// fired ([`Node::campaign`]; safety never depends on when a candidate
    /// campaigns, only on whom voters grant).
    pub fn campaign(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.index_of(id) else {
            return Ok(());
        };
        let Some(node) = self.servers[i].node.as_mut() else {
            return Ok(());
        };
        node.campaign();
        self.fault(format!("campaign {id:?}"));
        self.pump(i)
    }

    /// Splits the nodes into groups that cannot reach each other.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        self.net.split(groups);
        self.fault(format!("partition {groups:?}"));
    }

    /// Cuts the link from `from` to `to` only (an asymmetric partition).
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        self.net.cut(from, to);
        self.fault(format!("cut {from:?}->{to:?}"));
    }

    /// Isolates one node from all others.
    pub fn isolate(&mut self, id: NodeId) {
        self.net.isolate(id);
        self.fault(format!("isolate {id:?}"));
    }

    /// Removes every partition and cut.
    pub fn heal(&mut self) {
        self.net.heal_all();
        self.fault("heal".to_owned());
    }

    /// Sets every link's behaviour (loss, duplication, jitter).
    pub fn set_links(&mut self, link: LinkConfig) {
        self.net.set_default_link(link);
        self.fault(format!("links {link:?}"));
    }

    // ----- internals -----

    fn server(&self, id: NodeId) -> Option<&Server<SM, S>> {
        self.index_of(id).map(|i| &self.servers[i])
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        self.servers.iter().position(|s| s.id == id)
    }

    fn fault(&mut self, what: String) {
        self.record(TraceEvent::Fault { at: self.now, what });
    }

    fn record(&mut self, event: TraceEvent) {
        if self.trace_capacity == 0 {
            return;
        }
        if self.trace.len() == self.trace_capacity {
            self.trace.pop_front();
        }
        self.trace.push_back(event);
    }
}
