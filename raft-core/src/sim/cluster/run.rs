//! The cluster's event loop: choosing the next event (a delivery, a tick,
//! a finished disk write), driving each node's Ready pipeline through
//! its simulated disk, and checking the invariants after every step.

use crate::sim::{StateMachine, Violation};
use crate::{Error, Message, MessageBody, NodeId, Promotion, Ready, Role, Snapshot, StepOutcome};
use bytes::Bytes;
use quorate_transport::sim::SimTime;
use std::time::Duration;

use super::{Cluster, Event};
use crate::sim::disk::SimStorage;
use crate::sim::trace::{TraceEvent, kind};

impl<SM: StateMachine, S: SimStorage> Cluster<SM, S> {
    pub(super) fn next_event(&self) -> Option<(SimTime, Event)> {
        let mut best = self.net.next_delivery_time().map(|t| (t, Event::Deliver));
        for (i, s) in self.servers.iter().enumerate() {
            if s.node.is_none() {
                continue;
            }
            let candidates = [
                s.writes.front().map(|(t, _, _)| (*t, Event::WriteDone(i))),
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

    pub(super) fn deliver(
        &mut self,
        from: NodeId,
        to: NodeId,
        m: Message,
    ) -> Result<(), Violation> {
        let Some(i) = self.index_of(to) else {
            return Ok(());
        };
        if self.trace_capacity > 0 {
            self.record(TraceEvent::Deliver {
                at: self.now,
                from,
                to,
                term: m.term,
                kind: kind(&m.body),
            });
        }
        let Some(node) = self.servers[i].node.as_mut() else {
            return Ok(());
        };
        if m.body == MessageBody::TimeoutNow {
            self.last_handover = Some(self.now);
        }
        match node.step(m) {
            // Messages from servers outside the configuration (removed
            // ones still running) are dropped: that is the point. Honest
            // peers send nothing invalid.
            Ok(StepOutcome::Dropped(reason)) if reason.is_invalid() => {
                let error = Error::Dropped(reason);
                return Err(Violation::Node { node: to, error });
            }
            Ok(_) => {}
            Err(error) => {
                let error = error.into();
                return Err(Violation::Node { node: to, error });
            }
        }
        self.pump(i)
    }

    pub(super) fn tick(&mut self, i: usize) -> Result<(), Violation> {
        let server = &mut self.servers[i];
        server.next_tick = server
            .next_tick
            .saturating_add(Duration::from_nanos(server.tick_interval));
        let Some(node) = server.node.as_mut() else {
            return Ok(());
        };
        node.tick();
        let id = server.id;
        if self.trace_capacity > 0 {
            self.record(TraceEvent::Tick {
                at: self.now,
                node: id,
            });
        }
        self.pump(i)
    }

    /// Collects the node's Readies: messages go out at once, writes are
    /// queued to complete after a random delay, in order.
    pub(super) fn pump(&mut self, i: usize) -> Result<(), Violation> {
        self.collect_promotions(i);
        loop {
            let server = &mut self.servers[i];
            let id = server.id;
            let Some(node) = server.node.as_mut() else {
                return Ok(());
            };
            let was_leader = node.role() == Role::Leader;
            let Some(mut ready) = node
                .ready()
                .map_err(|error| Violation::Node { node: id, error })?
            else {
                return Ok(());
            };
            self.invariants.appended(node, ready.entries())?;
            if ready
                .soft_state()
                .is_some_and(|soft| soft.role == Role::Leader && !was_leader)
            {
                let term = node.term();
                self.record(TraceEvent::Elected {
                    at: self.now,
                    node: id,
                    term,
                });
            }
            for m in ready.take_messages() {
                self.net.send(self.now, m.from, m.to, m);
            }
            // The writes are issued now and synced when due: a crash in
            // between loses what the disk had not synced.
            let snapshot = self.write(i, &mut ready)?;
            let server = &mut self.servers[i];
            let latency = if ready.must_persist() || snapshot.is_some() {
                self.rng.u64(0..=self.max_write_latency)
            } else {
                0
            };
            let after = server.writes.back().map_or(self.now, |(t, _, _)| *t);
            let due = self
                .now
                .saturating_add(Duration::from_nanos(latency))
                .max(after);
            if due == self.now && server.writes.is_empty() {
                self.finish_write(i, ready, snapshot)?;
            } else {
                server.writes.push_back((due, ready, snapshot));
            }
        }
    }

    /// Counts and traces how the node's catch-ups ended.
    pub(super) fn collect_promotions(&mut self, i: usize) {
        let server = &mut self.servers[i];
        let id = server.id;
        let Some(node) = server.node.as_mut() else {
            return;
        };
        let ended: Vec<Promotion> = std::iter::from_fn(|| node.poll_promotion()).collect();
        for promotion in ended {
            if matches!(promotion, Promotion::Promoted { .. }) {
                self.promotions += 1;
            }
            self.fault(format!("{id:?}: {promotion:?}"));
        }
    }

    /// Issues the writes `ready` asks for, unsynced (a leader's snapshot
    /// is installed at once, atomically); returns that snapshot.
    pub(super) fn write(
        &mut self,
        i: usize,
        ready: &mut Ready,
    ) -> Result<Option<Snapshot>, Violation> {
        let witness = self.invariants.is_witness(self.servers[i].id);
        let server = &mut self.servers[i];
        let id = server.id;
        let Some(node) = server.node.as_mut() else {
            return Ok(None);
        };
        let fail = |e| Violation::Node {
            node: id,
            error: Error::Storage(e),
        };
        let snapshot = ready.take_snapshot();
        if let Some(snapshot) = &snapshot {
            if witness && !snapshot.data.is_empty() {
                return Err(Violation::WitnessPayload {
                    node: id,
                    index: snapshot.meta.index,
                });
            }
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

    pub(super) fn complete_write(&mut self, i: usize) -> Result<(), Violation> {
        let Some((_, ready, snapshot)) = self.servers[i].writes.pop_front() else {
            return Ok(());
        };
        self.finish_write(i, ready, snapshot)?;
        self.pump(i)
    }

    /// The write of `ready` is due: sync it, apply, advance.
    pub(super) fn finish_write(
        &mut self,
        i: usize,
        mut ready: Ready,
        snapshot: Option<Snapshot>,
    ) -> Result<(), Violation> {
        let server = &mut self.servers[i];
        let id = server.id;
        let Some(node) = server.node.as_mut() else {
            return Ok(());
        };
        let fail = |error| Violation::Node { node: id, error };
        let witness = self.invariants.is_witness(id);
        if ready.must_persist() {
            node.storage_mut()
                .sync()
                .map_err(|e| fail(Error::Storage(e)))?;
        }
        if let Some(snapshot) = snapshot {
            server.state_machine.restore(&snapshot.data);
            self.snapshots += 1;
        }
        let last = ready.entries().last().map(|e| e.index);
        server.confirmed.extend(ready.take_read_states());
        for entry in ready.take_committed_entries() {
            self.invariants.applied(id, &entry)?;
            if entry.data.is_empty() || entry.configuration().is_some() {
                continue;
            }
            if let Some(response) = server.state_machine.apply(&entry.data) {
                self.responses.push((self.now, id, response));
            }
        }
        node.advance(ready).map_err(fail)?;
        let applied = node.applied_index();
        let first = node
            .storage()
            .first_index()
            .map_err(|e| fail(Error::Storage(e)))?;
        if self.compact_every > 0 && applied.0 >= first.0 + self.compact_every {
            // A witness has no state machine: its snapshots are metadata.
            let data = match witness {
                true => Bytes::new(),
                false => server.state_machine.snapshot(),
            };
            node.storage_mut()
                .compact(applied, data)
                .map_err(|e| fail(Error::Storage(e)))?;
        }
        // Serve the confirmed reads the state machine has caught up with.
        let applied = node.applied_index();
        let mut i = 0;
        while let Some(read) = server.confirmed.get(i).copied() {
            if read.index > applied {
                i += 1;
                continue;
            }
            server.confirmed.swap_remove(i);
            let answer = server
                .reads
                .remove(&read.id)
                .and_then(|query| server.state_machine.query(&query));
            if let Some(response) = answer {
                self.served_reads += 1;
                self.responses.push((self.now, id, response));
            }
        }
        if let (Some(last), true) = (last, self.trace_capacity > 0) {
            self.record(TraceEvent::Persisted {
                at: self.now,
                node: id,
                last,
            });
        }
        Ok(())
    }

    pub(super) fn check(&mut self) -> Result<(), Violation> {
        for s in &self.servers {
            if let Some(node) = &s.node {
                self.invariants.observe(node)?;
                let removed = !node.configuration().is_voter(node.id())
                    && node.configuration_index() <= node.commit_index();
                if node.role() == Role::Leader && removed {
                    return Err(Violation::RemovedLeader {
                        node: node.id(),
                        term: node.term(),
                    });
                }
            }
        }
        Ok(())
    }
}
