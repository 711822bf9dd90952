//! [`Simulation`]: the key-value workload over a [`Cluster`](super::Cluster): clients that retry
//! with unique request ids, the random or scripted faults, and the checks at the end.

use super::kv::{ClientSeq, KvCommand, KvModel, KvOp, KvOutput, KvStore};
use super::linearizability::Operation;
use super::nemesis::{Pin, Script};
use super::{
    Cluster, ClusterOptions, Nemesis, STABLE_TICKS, SimFailure, SimOptions, SimReport, Violation,
    run_seed,
};
use crate::{ChangeMethod, Configuration, Error, Node, NodeId};
use quorate_transport::sim::{LinkConfig, SimTime};
use std::time::Duration;

/// A client with one request outstanding at a time.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) id: u32,
    pub(super) seq: u64,
    pub(super) target: NodeId,
    pub(super) pending: Option<Pending>,
    pub(super) next_op_at: SimTime,
    /// Set while a targeted schedule steers this client.
    pub(super) pin: Option<Pin>,
}

#[derive(Debug)]
pub(super) struct Pending {
    pub(super) op: KvOp,
    pub(super) call: SimTime,
    pub(super) retry_at: SimTime,
    /// Whether the last attempt was accepted by a leader (so a retry means
    /// it timed out).
    pub(super) sent: bool,
}

/// The key-value simulation: clients, faults, checks.
#[derive(Debug)]
pub struct Simulation {
    pub(super) seed: u64,
    pub(super) rng: fastrand::Rng,
    pub(super) options: SimOptions,
    pub(super) cluster: Cluster<KvStore>,
    pub(super) clients: Vec<Client>,
    pub(super) history: Vec<Operation<KvOp, KvOutput>>,
    pub(super) issued: u64,
    pub(super) next_read_id: u64,
    pub(super) lease_reads: u64,
    pub(super) faults: usize,
    pub(super) tick: Duration,
    pub(super) nemesis: Nemesis,
    pub(super) script: Script,
}

impl Simulation {
    /// Runs one seed: faults, then healing, then the checks.
    pub fn run(seed: u64, options: &SimOptions) -> Result<SimReport, SimFailure> {
        run_seed(
            seed,
            Simulation::new(seed, options),
            Simulation::run_phases,
            |sim| sim.report(),
            |sim| sim.cluster.trace().cloned().collect(),
        )
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
        super::linearizability::check(&KvModel, &self.history).map_err(Violation::NotLinearizable)
    }

    pub(super) fn advance_one_tick(&mut self) -> Result<(), Violation> {
        let until = self.cluster.now().saturating_add(self.tick);
        self.cluster.run_until(until)?;
        self.collect_responses();
        Ok(())
    }

    pub(super) fn inject_fault(&mut self) -> Result<(), Violation> {
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
    pub(super) fn clients_act(&mut self, new_requests: bool) {
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
                    let kind = Pin::op_kind(client.pin, &mut self.rng);
                    let op = KvOp::draw(kind, key, &mut self.rng);
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
                id: ClientSeq {
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

    pub(super) fn collect_responses(&mut self) {
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
