//! The simulated servers of a multi-raft simulation: each a
//! [`MultiRaft`] over one disk per group, its writes that take time and are
//! lost on a crash, its state machines, and the event loop that drives
//! them over the simulated network, checking every group's invariants at
//! every Ready.

use crate::multi::{Batch, GroupId, MultiConfig, MultiEvent, MultiRaft, MultiStats};
use crate::sim::disk::SimStorage;
use crate::sim::invariants::Invariants;
use crate::sim::kv::KvStore;
use crate::sim::trace::{TraceEvent, kind};
use crate::sim::{StateMachine, Violation};
use crate::{
    Config, Configuration, CrashStorage, Error, LogStorage, Node, NodeId, ReadState, Ready, Role,
    Snapshot, Storage, Term,
};
use bytes::Bytes;
use quorate_transport::sim::{Network, SimTime};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// A write issued and not yet durable: when it is, the group, its Ready
/// and the leader's snapshot it carried.
type Write = (SimTime, GroupId, Ready, Option<Snapshot>);

/// A delivered batch, as the trace keeps it.
pub(super) type Delivered = (SimTime, NodeId, NodeId, Vec<(GroupId, &'static str, Term)>);

/// One simulated server.
#[derive(Debug)]
pub(super) struct Server {
    pub(super) id: NodeId,
    /// Absent while crashed.
    pub(super) multi: Option<MultiRaft<CrashStorage>>,
    /// The disks while crashed.
    disks: BTreeMap<GroupId, CrashStorage>,
    pub(super) machines: BTreeMap<GroupId, KvStore>,
    writes: VecDeque<Write>,
    pub(super) tick_interval: u64,
    pub(super) next_tick: SimTime,
    /// Starts so far (the incarnation of the running MultiRaft).
    pub(super) incarnation: u64,
    /// Queries of the reads asked here, by group and read id.
    reads: BTreeMap<(GroupId, u64), Bytes>,
    /// Reads confirmed by a leader, waiting for the applied index.
    confirmed: Vec<(GroupId, ReadState)>,
    /// The counters of the incarnations before this one.
    past_stats: MultiStats,
}

/// Everything the servers share: the clock, the network, the checks.
#[derive(Debug)]
pub(super) struct World {
    pub(super) now: SimTime,
    pub(super) rng: fastrand::Rng,
    pub(super) net: Network<NodeId, Batch>,
    pub(super) servers: Vec<Server>,
    /// One checker per group.
    pub(super) invariants: BTreeMap<GroupId, Invariants>,
    /// Per group, the newest term a leader was seen in.
    pub(super) newest_leader: BTreeMap<GroupId, Term>,
    pub(super) node_config: Config,
    pub(super) multi_config: MultiConfig,
    pub(super) members: Configuration,
    pub(super) groups: Vec<GroupId>,
    pub(super) max_write_latency: u64,
    pub(super) compact_every: u64,
    pub(super) trace: VecDeque<TraceEvent>,
    /// The last batches delivered: when, from, to, and each message's
    /// group, kind and term.
    pub(super) deliveries: VecDeque<Delivered>,
    pub(super) trace_capacity: usize,
    /// `(time, server, group, response)` produced since the last take.
    pub(super) responses: Vec<(
        SimTime,
        NodeId,
        GroupId,
        <KvStore as StateMachine>::Response,
    )>,
    pub(super) steps: u64,
    pub(super) served_reads: u64,
    pub(super) snapshots: u64,
    pub(super) elections: u64,
    /// A violation found while a client call ran a server's Ready loop.
    pub(super) deferred: Option<Violation>,
}

#[derive(Clone, Copy, Debug)]
enum Event {
    Deliver,
    WriteDone(usize),
    Tick(usize),
}

/// Wraps a violation of one group's invariants.
fn in_group(group: GroupId) -> impl Fn(Violation) -> Violation {
    move |violation| Violation::InGroup {
        group: group.0,
        violation: Box::new(violation),
    }
}

fn multi_error(node: NodeId) -> impl Fn(crate::multi::MultiError) -> Violation {
    move |error| Violation::MultiRaft { node, error }
}

impl Server {
    /// The counters over every incarnation.
    pub(super) fn stats(&self) -> MultiStats {
        let now = self
            .multi
            .as_ref()
            .map(MultiRaft::stats)
            .unwrap_or_default();
        let p = self.past_stats;
        let mut s = now;
        s.batches_sent += p.batches_sent;
        s.messages_sent += p.messages_sent;
        s.beats_sent += p.beats_sent;
        s.batches_received += p.batches_received;
        s.messages_dropped += p.messages_dropped;
        s.group_ticks += p.group_ticks;
        s.quiesced += p.quiesced;
        s.woken_by_liveness += p.woken_by_liveness;
        s
    }

    /// How many crashes lost unsynced writes and tore appends.
    pub(super) fn disk_losses(&self) -> (u64, u64) {
        let running = self
            .multi
            .iter()
            .flat_map(|m| m.groups().map(|(_, n)| n.storage().losses()));
        let down = self.disks.values().map(SimStorage::losses);
        running
            .chain(down)
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

impl World {
    /// Builds the servers, each with every group.
    pub(super) fn start(
        &mut self,
        count: u64,
        nominal_tick: u64,
        skew: f64,
    ) -> Result<(), Violation> {
        for n in 1..=count {
            let id = NodeId(n);
            let factor = 1.0 + skew * (self.rng.f64() * 2.0 - 1.0);
            let tick_interval = ((nominal_tick as f64) * factor).max(1.0) as u64;
            let next_tick = SimTime::from_nanos(self.rng.u64(1..=tick_interval));
            let mut disks = BTreeMap::new();
            for g in &self.groups {
                let seed = self.rng.u64(..);
                disks.insert(*g, CrashStorage::create(self.members.clone(), seed));
            }
            self.servers.push(Server {
                id,
                multi: None,
                disks,
                machines: BTreeMap::new(),
                writes: VecDeque::new(),
                tick_interval,
                next_tick,
                incarnation: 0,
                reads: BTreeMap::new(),
                confirmed: Vec::new(),
                past_stats: MultiStats::default(),
            });
            let i = self.servers.len() - 1;
            self.boot(i)?;
        }
        Ok(())
    }

    /// Starts server `i` from its disks alone, with a new incarnation.
    fn boot(&mut self, i: usize) -> Result<(), Violation> {
        let server = &mut self.servers[i];
        let id = server.id;
        server.incarnation += 1;
        let mut config = self.multi_config.clone();
        config.id = id;
        config.incarnation = server.incarnation;
        let mut multi = MultiRaft::new(config).map_err(multi_error(id))?;
        for (g, disk) in std::mem::take(&mut server.disks) {
            let snapshot = disk.snapshot().map_err(|e| Violation::Node {
                node: id,
                error: Error::Storage(e),
            })?;
            let mut machine = KvStore::default();
            machine.restore(&snapshot.data);
            server.machines.insert(g, machine);
            let mut node_config = self.node_config.clone();
            node_config.id = id;
            node_config.seed = self.rng.u64(..);
            let node = Node::new(node_config, disk)
                .map_err(|error| Violation::Node { node: id, error })?;
            multi.add_group(g, node).map_err(multi_error(id))?;
        }
        server.multi = Some(multi);
        Ok(())
    }

    pub(super) fn index_of(&self, id: NodeId) -> Option<usize> {
        self.servers.iter().position(|s| s.id == id)
    }

    pub(super) fn ids(&self) -> Vec<NodeId> {
        self.servers.iter().map(|s| s.id).collect()
    }

    pub(super) fn running(&self) -> Vec<NodeId> {
        self.servers
            .iter()
            .filter(|s| s.multi.is_some())
            .map(|s| s.id)
            .collect()
    }

    pub(super) fn crashed(&self) -> Vec<NodeId> {
        self.servers
            .iter()
            .filter(|s| s.multi.is_none())
            .map(|s| s.id)
            .collect()
    }

    /// The node of `group` on server `id`, if it runs.
    pub(super) fn node(&self, id: NodeId, group: GroupId) -> Option<&Node<CrashStorage>> {
        let i = self.index_of(id)?;
        self.servers[i].multi.as_ref()?.group(group)
    }

    /// The running leader of `group` with the highest term.
    pub(super) fn leader(&self, group: GroupId) -> Option<&Node<CrashStorage>> {
        self.servers
            .iter()
            .filter_map(|s| s.multi.as_ref()?.group(group))
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
    }

    /// The trace for a failure report: the events and the last batches
    /// delivered, in time order.
    pub(super) fn failure_trace(&self) -> Vec<TraceEvent> {
        let mut events: Vec<TraceEvent> = self.trace.iter().cloned().collect();
        for (at, from, to, messages) in &self.deliveries {
            let mut what = format!("{from:?}->{to:?}");
            if messages.is_empty() {
                what.push_str(" beat");
            }
            for (g, kind, term) in messages {
                what.push_str(&format!(" g{}:{kind}@{}", g.0, term.0));
            }
            events.push(TraceEvent::Fault { at: *at, what });
        }
        let at = |e: &TraceEvent| match e {
            TraceEvent::Fault { at, .. } => *at,
            _ => SimTime::ZERO,
        };
        events.sort_by_key(at);
        let skip = events.len().saturating_sub(self.trace_capacity);
        events.split_off(skip)
    }

    pub(super) fn fault(&mut self, what: String) {
        let at = self.now;
        self.record(TraceEvent::Fault { at, what });
    }

    pub(super) fn record(&mut self, event: TraceEvent) {
        if self.trace_capacity == 0 {
            return;
        }
        if self.trace.len() == self.trace_capacity {
            self.trace.pop_front();
        }
        self.trace.push_back(event);
    }

    /// Crashes server `id`: its volatile state, unsynced writes and the
    /// batches in flight to it are lost; every group's disk keeps what it
    /// synced (and a torn prefix of the rest).
    pub(super) fn crash(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.index_of(id) else {
            return Ok(());
        };
        let server = &mut self.servers[i];
        let Some(mut multi) = server.multi.take() else {
            return Ok(());
        };
        let stats = multi.stats();
        let p = &mut server.past_stats;
        p.batches_sent += stats.batches_sent;
        p.messages_sent += stats.messages_sent;
        p.beats_sent += stats.beats_sent;
        p.batches_received += stats.batches_received;
        p.messages_dropped += stats.messages_dropped;
        p.group_ticks += stats.group_ticks;
        p.quiesced += stats.quiesced;
        p.woken_by_liveness += stats.woken_by_liveness;
        for g in &self.groups {
            if let Some(node) = multi.remove_group(*g) {
                let mut disk = node.into_storage();
                disk.crash().map_err(|e| Violation::Node {
                    node: id,
                    error: Error::Storage(e),
                })?;
                server.disks.insert(*g, disk);
            }
            if let Some(inv) = self.invariants.get_mut(g) {
                inv.crashed(id);
            }
        }
        server.writes.clear();
        server.reads.clear();
        server.confirmed.clear();
        server.machines.clear();
        self.net.crash(id);
        self.fault(format!("crash {id:?}"));
        Ok(())
    }

    /// Restarts a crashed server from its disks, with a new incarnation.
    pub(super) fn restart(&mut self, id: NodeId) -> Result<(), Violation> {
        let Some(i) = self.index_of(id) else {
            return Ok(());
        };
        if self.servers[i].multi.is_some() {
            return Ok(());
        }
        self.boot(i)?;
        let server = &mut self.servers[i];
        server.next_tick = self
            .now
            .saturating_add(Duration::from_nanos(server.tick_interval));
        let incarnation = server.incarnation;
        self.net.restart(id);
        self.fault(format!("restart {id:?} (incarnation {incarnation})"));
        self.pump(i)
    }

    // ----- the event loop -----

    fn next_event(&self) -> Option<(SimTime, Event)> {
        let mut best = self.net.next_delivery_time().map(|t| (t, Event::Deliver));
        for (i, s) in self.servers.iter().enumerate() {
            if s.multi.is_none() {
                continue;
            }
            let candidates = [
                s.writes.front().map(|w| (w.0, Event::WriteDone(i))),
                Some((s.next_tick, Event::Tick(i))),
            ];
            for (t, e) in candidates.into_iter().flatten() {
                if best.is_none_or(|(b, _)| t < b) {
                    best = Some((t, e));
                }
            }
        }
        best
    }

    /// Runs every event up to and including `until`.
    pub(super) fn run_until(&mut self, until: SimTime) -> Result<(), Violation> {
        while self.step(until)? {}
        self.now = self.now.max(until);
        Ok(())
    }

    /// Runs the next event due by `until`; `false` if there is none.
    fn step(&mut self, until: SimTime) -> Result<bool, Violation> {
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
                    self.deliver(d.msg)?;
                }
            }
            Event::WriteDone(i) => self.complete_write(i)?,
            Event::Tick(i) => {
                let server = &mut self.servers[i];
                server.next_tick = server
                    .next_tick
                    .saturating_add(Duration::from_nanos(server.tick_interval));
                if let Some(multi) = server.multi.as_mut() {
                    multi.tick();
                }
                self.pump(i)?;
            }
        }
        Ok(true)
    }

    fn deliver(&mut self, batch: Batch) -> Result<(), Violation> {
        let Some(i) = self.index_of(batch.to) else {
            return Ok(());
        };
        if self.trace_capacity > 0 {
            // Formatted only for a failure report (`failure_trace`).
            if self.deliveries.len() == self.trace_capacity {
                self.deliveries.pop_front();
            }
            let messages = batch
                .messages
                .iter()
                .map(|(g, m)| (*g, kind(&m.body), m.term))
                .collect();
            self.deliveries
                .push_back((self.now, batch.from, batch.to, messages));
        }
        let id = batch.to;
        let Some(multi) = self.servers[i].multi.as_mut() else {
            return Ok(());
        };
        multi.step(batch).map_err(multi_error(id))?;
        self.pump(i)
    }

    /// Runs server `i`'s Ready loop: every group's Ready is checked, its
    /// writes issued (durable after a random delay, in order), and the
    /// batches sent.
    pub(super) fn pump(&mut self, i: usize) -> Result<(), Violation> {
        let id = self.servers[i].id;
        loop {
            let Some(multi) = self.servers[i].multi.as_mut() else {
                return Ok(());
            };
            let Some((group, mut ready)) = multi.ready().map_err(multi_error(id))? else {
                break;
            };
            let check = in_group(group);
            let Some(node) = multi.group(group) else {
                continue;
            };
            let invariants = self.invariants.entry(group).or_default();
            invariants.appended(node, ready.entries()).map_err(&check)?;
            invariants.observe(node).map_err(&check)?;
            if node.role() == Role::Leader {
                let term = node.term();
                let newest = self.newest_leader.entry(group).or_default();
                if term > *newest {
                    *newest = term;
                    self.elections += 1;
                    self.fault(format!("{group}: {id:?} leads {term:?}"));
                }
            }
            let snapshot = self.write(i, group, &mut ready)?;
            let latency = if ready.must_persist() || snapshot.is_some() {
                self.rng.u64(0..=self.max_write_latency)
            } else {
                0
            };
            let server = &mut self.servers[i];
            let after = server.writes.back().map_or(self.now, |w| w.0);
            let due = self
                .now
                .saturating_add(Duration::from_nanos(latency))
                .max(after);
            if due == self.now && server.writes.is_empty() {
                self.finish_write(i, group, ready, snapshot)?;
            } else {
                server.writes.push_back((due, group, ready, snapshot));
            }
        }
        let server = &mut self.servers[i];
        let Some(multi) = server.multi.as_mut() else {
            return Ok(());
        };
        let mut events = Vec::new();
        while let Some(event) = multi.poll_event() {
            events.push(event);
        }
        let mut batches = Vec::new();
        while let Some(batch) = multi.poll_transmit() {
            batches.push(batch);
        }
        for batch in batches {
            self.net.send(self.now, batch.from, batch.to, batch);
        }
        for event in events {
            let what = match event {
                MultiEvent::PeerDown(p) => format!("{id:?} sees {p:?} down"),
                MultiEvent::PeerUp(p) => format!("{id:?} sees {p:?} up"),
                MultiEvent::PeerRestarted(p) => format!("{id:?} sees {p:?} restarted"),
            };
            self.fault(what);
        }
        Ok(())
    }

    /// Issues the writes of a group's Ready, unsynced (a leader's snapshot
    /// is installed at once); returns that snapshot.
    fn write(
        &mut self,
        i: usize,
        group: GroupId,
        ready: &mut Ready,
    ) -> Result<Option<Snapshot>, Violation> {
        let server = &mut self.servers[i];
        let id = server.id;
        let fail = |e| Violation::Node {
            node: id,
            error: Error::Storage(e),
        };
        let Some(mut node) = server.multi.as_mut().and_then(|m| m.group_mut(group)) else {
            return Ok(None);
        };
        let snapshot = ready.take_snapshot();
        if let Some(snapshot) = &snapshot {
            node.storage_mut()
                .install_snapshot(snapshot.clone())
                .map_err(fail)?;
        }
        node.storage_mut().append(ready.entries()).map_err(fail)?;
        if let Some(hs) = ready.hard_state() {
            node.storage_mut().set_hard_state(hs).map_err(fail)?;
        }
        Ok(snapshot)
    }

    fn complete_write(&mut self, i: usize) -> Result<(), Violation> {
        let Some((_, group, ready, snapshot)) = self.servers[i].writes.pop_front() else {
            return Ok(());
        };
        self.finish_write(i, group, ready, snapshot)?;
        self.pump(i)
    }

    /// A group's write is due: sync, apply, advance, compact, serve the
    /// reads the state machine caught up with.
    fn finish_write(
        &mut self,
        i: usize,
        group: GroupId,
        mut ready: Ready,
        snapshot: Option<Snapshot>,
    ) -> Result<(), Violation> {
        let now = self.now;
        let server = &mut self.servers[i];
        let id = server.id;
        let fail = |error| Violation::Node { node: id, error };
        let check = in_group(group);
        let Some(multi) = server.multi.as_mut() else {
            return Ok(());
        };
        let machine = server.machines.entry(group).or_default();
        {
            let Some(mut node) = multi.group_mut(group) else {
                return Ok(());
            };
            if ready.must_persist() {
                node.storage_mut()
                    .sync()
                    .map_err(|e| fail(Error::Storage(e)))?;
            }
        }
        if let Some(snapshot) = snapshot {
            machine.restore(&snapshot.data);
            self.snapshots += 1;
        }
        server
            .confirmed
            .extend(ready.take_read_states().into_iter().map(|r| (group, r)));
        let invariants = self.invariants.entry(group).or_default();
        for entry in ready.take_committed_entries() {
            invariants.applied(id, &entry).map_err(&check)?;
            if entry.data.is_empty() || entry.configuration().is_some() {
                continue;
            }
            if let Some(response) = machine.apply(&entry.data) {
                self.responses.push((now, id, group, response));
            }
        }
        multi.advance(group, ready).map_err(multi_error(id))?;
        let Some(mut node) = multi.group_mut(group) else {
            return Ok(());
        };
        let applied = node.applied_index();
        let first = node
            .storage()
            .first_index()
            .map_err(|e| fail(Error::Storage(e)))?;
        if self.compact_every > 0 && applied.0 >= first.0 + self.compact_every {
            node.storage_mut()
                .compact(applied, machine.snapshot())
                .map_err(|e| fail(Error::Storage(e)))?;
        }
        drop(node);
        // Serve the confirmed reads of this group that are applied.
        let mut k = 0;
        while let Some((g, read)) = server.confirmed.get(k).copied() {
            if g != group || read.index > applied {
                k += 1;
                continue;
            }
            server.confirmed.swap_remove(k);
            let answer = server
                .reads
                .remove(&(g, read.id))
                .and_then(|query| machine.query(&query));
            if let Some(response) = answer {
                self.served_reads += 1;
                self.responses.push((now, id, group, response));
            }
        }
        Ok(())
    }

    /// Remembers the query of a read asked of server `i`.
    pub(super) fn remember_read(&mut self, i: usize, group: GroupId, read_id: u64, query: Bytes) {
        self.servers[i].reads.insert((group, read_id), query);
    }
}
