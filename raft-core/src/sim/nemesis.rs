//! Targeted fault schedules (nemeses). Faults drawn at random rarely line
//! up with the few protocol moments where some bugs show, so a share of the
//! seeds follows a script that steers the cluster there; the invariants and
//! the linearizability checker judge what happens, as in every seed.
//!
//! - Leader churn (Raft figure 8, §5.4.2): leaders are crashed or cut off
//!   shortly after their election, or as they are elected, and come back,
//!   so logs grow uncommitted tails of different terms. When a leader has
//!   an entry of an earlier term acknowledged by a quorum while its own
//!   term's first entry is not durable on a quorum yet, it reboots at that
//!   very step, the nodes holding that entry are cut off from the rest
//!   for a while, and the cut-off leaders come back and campaign: had it
//!   committed the old entry by counting replicas, one with a newer tail
//!   can now be elected without it (figure 8 (d)).
//! - Stale leader (thesis §6.4): the leader is cut off while one client
//!   keeps reading through it and the others write through a node made to
//!   campaign. In one variant the voters whose answers give it its lease
//!   reboot at that moment, inside the lease window: only their promise to
//!   honour a lease they may have given keeps them from electing the
//!   candidate, which takes writes while the old leader still serves lease
//!   reads.

use super::{Simulation, Violation};
use crate::{LogIndex, NodeId, Storage, Term};

/// The fault schedule of a seed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nemesis {
    /// Faults drawn at random every tick: crashes and restarts,
    /// partitions, one-way cuts, lossy links, membership changes,
    /// leadership transfers.
    #[default]
    Random,
    /// Leaders crash soon after their election, and at the step where an
    /// earlier term's entry reached a quorum before their own term's did.
    LeaderChurn,
    /// The leader is cut off while a client keeps reading through it and
    /// the other side elects and writes; sometimes the voters that gave it
    /// its lease restart inside the lease window.
    StaleLeader,
}

impl Nemesis {
    /// Half the seeds get random faults, a quarter each targeted schedule.
    pub(crate) fn draw(rng: &mut fastrand::Rng) -> Nemesis {
        match rng.u8(..4) {
            0 => Nemesis::LeaderChurn,
            1 => Nemesis::StaleLeader,
            _ => Nemesis::Random,
        }
    }
}

/// What a client pinned by the stale-leader script does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pin {
    /// Only gets, by lease or ReadIndex, through the node it was sent to.
    Reader,
    /// Only puts, through the node it was sent to (or the leader it names).
    Writer,
}

impl Pin {
    /// The kind of a new operation: 0 get, 1 put, 2 compare-and-set.
    pub(crate) fn op_kind(pin: Option<Pin>, rng: &mut fastrand::Rng) -> u8 {
        match pin {
            Some(Pin::Reader) => 0,
            Some(Pin::Writer) => 1,
            None => rng.u8(..3),
        }
    }

    /// How a get is served: 0 through the log, 1 ReadIndex, 2 lease
    /// falling back to ReadIndex. A pinned reader never uses the log.
    pub(crate) fn read_path(pin: Option<Pin>, rng: &mut fastrand::Rng) -> u8 {
        match pin {
            Some(_) => 1 + rng.u8(..2),
            None => rng.u8(..3),
        }
    }
}

/// Where a targeted schedule stands.
#[derive(Debug, Default)]
pub(crate) struct Script {
    tick: u64,
    stage: Stage,
    /// Leader churn: the leader and term whose crash is decided, and when.
    doomed: Option<(NodeId, Term, u64)>,
    /// Leader churn: the leader and term last seen, how many entries were
    /// known committed when it was first seen, and whether its figure 8
    /// moment was considered.
    seen: Option<(NodeId, Term, u64, bool)>,
    /// Leader churn: leaders cut off, and when they rejoin.
    isolated: Vec<(NodeId, u64)>,
    /// Leader churn: when the partition made at a figure 8 moment heals.
    heal_at: Option<u64>,
    /// Leaders rebooted at the figure 8 moment.
    pub(crate) figure_8_moments: u64,
    /// Episodes whose voters rebooted inside the leader's lease.
    pub(crate) lease_reboots: u64,
}

#[derive(Debug, Default)]
enum Stage {
    /// Not started.
    #[default]
    Idle,
    /// Nothing under way until this tick.
    Waiting(u64),
    /// The leader is cut off; `candidate` campaigns at `campaign_at`.
    Stale {
        candidate: NodeId,
        campaign_at: u64,
        until: u64,
    },
}

impl Simulation {
    /// One tick of the fault phase: faults, clients, then the cluster.
    pub(super) fn fault_tick(&mut self) -> Result<(), Violation> {
        self.script.tick += 1;
        match self.nemesis {
            _ if !self.options.faults => {}
            Nemesis::Random => {
                if self.rng.u32(..12) == 0 {
                    self.inject_fault()?;
                }
            }
            Nemesis::LeaderChurn => self.churn()?,
            Nemesis::StaleLeader => self.stale_leader()?,
        }
        self.clients_act(true);
        if self.nemesis != Nemesis::LeaderChurn {
            return self.advance_one_tick();
        }
        let until = self.cluster.now().saturating_add(self.tick);
        while self.cluster.step(until)? {
            self.figure_8_moment()?;
        }
        self.cluster.run_until(until)?;
        self.collect_responses();
        Ok(())
    }

    /// Ends any script: clients go back to their normal ways.
    pub(super) fn end_script(&mut self) {
        for client in &mut self.clients {
            client.pin = None;
        }
    }

    /// Leader churn: crash each new leader after a short while (sometimes
    /// a longer one), bring crashed nodes back, and now and then a random
    /// fault for variety.
    fn churn(&mut self) -> Result<(), Violation> {
        let now = self.script.tick;
        let (back, away) = std::mem::take(&mut self.script.isolated)
            .into_iter()
            .partition(|(_, at)| now >= *at);
        self.script.isolated = away;
        for (id, _) in back {
            self.cluster.network_mut().rejoin(id);
        }
        if self.script.heal_at.is_some_and(|at| now >= at) {
            self.script.heal_at = None;
            self.script.isolated.clear();
            self.cluster.heal();
        }
        if let Some(leader) = self.cluster.leader() {
            let term = self.cluster.node(leader).map(|n| n.term());
            match self.script.doomed {
                Some((l, t, at)) if l == leader && Some(t) == term => {
                    if now >= at {
                        // Cut off rather than crashed, the proposals it
                        // accepts from now on stay in its log alone.
                        if self.rng.bool() {
                            self.isolate_for_a_while(leader);
                        } else {
                            self.cluster.crash(leader);
                        }
                        self.faults += 1;
                    }
                }
                _ => {
                    let delay = if self.rng.u8(..4) == 0 {
                        self.rng.u64(3..25)
                    } else {
                        self.rng.u64(..3)
                    };
                    let term = term.unwrap_or_default();
                    self.script.doomed = Some((leader, term, now + delay));
                }
            }
        }
        let crashed = self.cluster.crashed();
        let running = self.cluster.running().len();
        if !crashed.is_empty() && (running <= crashed.len() || self.rng.u8(..3) == 0) {
            let id = crashed[self.rng.usize(..crashed.len())];
            self.cluster.restart(id)?;
        }
        if self.rng.u32(..40) == 0 {
            self.inject_fault()?;
        }
        Ok(())
    }

    /// Cuts `id` off for 5 to 30 ticks; messages in flight from it are lost.
    fn isolate_for_a_while(&mut self, id: NodeId) {
        self.cluster.isolate(id);
        let rejoin = self.script.tick + self.rng.u64(5..30);
        self.script.isolated.push((id, rejoin));
    }

    /// The figure 8 moment: the leader holds an entry of an earlier term
    /// that no leader had committed when it took over, acknowledged by a
    /// quorum (itself included, once durable), and its own term's first
    /// entry is not durable on a quorum yet. Crash it there and restart it. Judged without the leader's commit index, which a broken
    /// commit rule has moved already.
    fn figure_8_moment(&mut self) -> Result<(), Violation> {
        let Some(leader) = self.cluster.leader() else {
            return Ok(());
        };
        let Some(node) = self.cluster.node(leader) else {
            return Ok(());
        };
        let term = node.term();
        let known = match self.script.seen {
            Some((l, t, known, considered)) if l == leader && t == term => {
                if considered {
                    return Ok(());
                }
                known
            }
            _ => {
                let known = self.cluster.committed();
                self.script.seen = Some((leader, term, known, false));
                // Cut off as elected, before its first append arrives: its
                // entries of this term stay on its log alone, a tail that
                // conflicts with what the next leader replicates.
                if self.rng.bool() {
                    self.isolate_for_a_while(leader);
                    self.faults += 1;
                }
                return Ok(());
            }
        };
        let durable_on_quorum = |index: LogIndex, entry_term: Term| {
            node.configuration().has_quorum(|v| {
                self.cluster
                    .node(v)
                    .is_some_and(|n| n.storage().term(index).ok() == Some(entry_term))
            })
        };
        let mut own = node.last_index();
        while own.0 > known && node.log_term(own.prev()).ok().flatten() == Some(term) {
            own = own.prev();
        }
        let newest_old = own.prev();
        if newest_old.0 <= known || node.log_term(own).ok().flatten() != Some(term) {
            return Ok(());
        }
        // The leader knows the old entry is on a quorum (the acks arrived).
        let acked = node.configuration().has_quorum(|v| {
            if v == leader {
                node.persisted_index() >= newest_old
            } else {
                node.progress(v)
                    .is_some_and(|p| p.match_index >= newest_old)
            }
        });
        if !acked || durable_on_quorum(own, term) {
            return Ok(());
        }
        self.script.seen = Some((leader, term, known, true));
        // The nodes that hold its own entry are cut off from the rest
        // for a while (figure 8 (d): the others alone elect).
        let (holders, rest): (Vec<NodeId>, Vec<NodeId>) =
            self.cluster.running().into_iter().partition(|v| {
                *v != leader
                    && self
                        .cluster
                        .node(*v)
                        .is_some_and(|n| n.storage().term(own).ok() == Some(term))
            });
        // It reboots at once, losing what it had not written; the leaders
        // cut off earlier come back with their newer tails and campaign.
        self.cluster.crash(leader);
        self.faults += 1;
        self.script.figure_8_moments += 1;
        self.cluster.restart(leader)?;
        for (id, _) in std::mem::take(&mut self.script.isolated) {
            self.cluster.network_mut().rejoin(id);
            self.cluster.campaign(id)?;
        }
        if !holders.is_empty() {
            self.cluster.partition(&[&holders, &rest]);
            self.script.heal_at = Some(self.script.tick + self.rng.u64(20..40));
        }
        Ok(())
    }

    /// The stale-leader script: wait, cut the leader off, make a node on
    /// the other side campaign, pin the clients, heal, repeat.
    fn stale_leader(&mut self) -> Result<(), Violation> {
        let now = self.script.tick;
        match std::mem::take(&mut self.script.stage) {
            Stage::Idle => self.script.stage = Stage::Waiting(now + self.rng.u64(3..15)),
            Stage::Waiting(at) if now < at => self.script.stage = Stage::Waiting(at),
            Stage::Waiting(_) => self.cut_leader_off()?,
            Stage::Stale {
                candidate,
                campaign_at,
                until,
            } => {
                if now >= until {
                    self.heal_script();
                    return Ok(());
                }
                if now == campaign_at {
                    self.cluster.campaign(candidate)?;
                }
                self.script.stage = Stage::Stale {
                    candidate,
                    campaign_at,
                    until,
                };
            }
        }
        Ok(())
    }

    /// Cuts the current leader off and picks the node that will campaign.
    /// With check-quorum, half the time every other voter but the
    /// candidate reboots at once: the leader's lease is still running on
    /// the answers they gave, and only their promise to honour it after a
    /// restart keeps them from electing the candidate at once.
    fn cut_leader_off(&mut self) -> Result<(), Violation> {
        let now = self.script.tick;
        self.script.stage = Stage::Waiting(now + 1);
        let Some(leader) = self.cluster.leader() else {
            return Ok(());
        };
        let Some(node) = self.cluster.node(leader) else {
            return Ok(());
        };
        let check_quorum = node.config().check_quorum;
        let running = self.cluster.running();
        let others: Vec<NodeId> = node
            .configuration()
            .voters()
            .iter()
            .copied()
            .filter(|v| *v != leader && running.contains(v))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        self.faults += 1;
        let candidate = others[self.rng.usize(..others.len())];
        self.cluster.isolate(leader);
        self.pin_clients(leader, candidate);
        let campaign_at = if check_quorum && self.rng.bool() {
            for id in others.into_iter().filter(|id| *id != candidate) {
                self.cluster.crash(id);
                self.cluster.restart(id)?;
            }
            self.cluster.campaign(candidate)?;
            self.script.lease_reboots += 1;
            u64::MAX
        } else {
            now + self.rng.u64(..=12)
        };
        self.script.stage = Stage::Stale {
            candidate,
            campaign_at,
            until: now + 30,
        };
        Ok(())
    }

    /// The first client reads through the stale leader, the others write
    /// through the candidate; pending requests are sent again at once.
    fn pin_clients(&mut self, stale: NodeId, candidate: NodeId) {
        let now = self.cluster.now();
        for (i, client) in self.clients.iter_mut().enumerate() {
            let (pin, target) = if i == 0 {
                (Pin::Reader, stale)
            } else {
                (Pin::Writer, candidate)
            };
            client.pin = Some(pin);
            client.target = target;
            if let Some(p) = client.pending.as_mut() {
                p.retry_at = now;
                p.sent = false;
            }
        }
    }

    fn heal_script(&mut self) {
        self.cluster.heal();
        self.end_script();
        self.script.stage = Stage::Waiting(self.script.tick + self.rng.u64(5..20));
    }
}
