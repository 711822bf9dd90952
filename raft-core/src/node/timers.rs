//! Time: which tick next does something ([`Node::poll_timeout`]), and many
//! ticks at once ([`Node::tick_by`]).
//!
//! Every timer of a node counts ticks: the election timeout (followers and
//! candidates), and on a leader the heartbeat interval, check-quorum, the
//! end of a leadership transfer and the catch-up deadlines of learners on
//! their way to becoming voters. Each is a counter compared against a
//! limit at every tick, so the next tick that acts is the smallest of the
//! limits left; nothing else that [`tick`](Node::tick) does depends on how
//! many ticks pass in between, which is what lets `tick_by` jump there.

use super::Node;
use crate::error::Error;
use crate::membership::{CatchUpDue, CatchUpLimits};
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::LogIndex;

/// Which ticks [`Node::due`] looks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Ticks with an outcome the application can see: what
    /// [`Node::poll_timeout`] reports.
    Visible,
    /// Ticks that change any state besides the counters, seen or not:
    /// where [`Node::tick_by`] must run a real tick.
    AnyChange,
}

impl<S: Storage> Node<S> {
    /// Logical ticks this node has seen since it started:
    /// [`tick`](Node::tick) adds one, [`tick_by`](Node::tick_by) `n`. The
    /// unit of [`poll_timeout`](Node::poll_timeout). It restarts from zero
    /// with the node, so it is a count, not a clock.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The tick count, in the units of [`ticks`](Node::ticks), at which
    /// the node next needs time: the first tick that will do something
    /// unless an input comes first. Like quinn-proto's `poll_timeout`, it
    /// lets an event loop sleep until then instead of ticking blindly;
    /// unlike it, the answer is a logical tick, which the application maps
    /// to its clock (`deadline = start + t * tick_interval`).
    ///
    /// `Some(t)` (always `t > ticks()`): the ticks that bring
    /// [`ticks`](Node::ticks) below `t` send nothing, change no role, term,
    /// leader or transfer and end no catch-up; the tick that reaches `t`
    /// does one of these things: the leader's heartbeat round, its
    /// check-quorum (with [`Config::check_quorum`](crate::Config::check_quorum):
    /// it may step down, and it restarts the count of which followers were
    /// heard from), the abandonment of a leadership transfer, a catch-up
    /// round ending, a learner promoted or given up on, or the election
    /// timeout of a follower or candidate (a campaign).
    ///
    /// It is never late, and early in two cases only: a leader with no
    /// other member still counts its heartbeat interval (the round goes
    /// to nobody), and a caught-up learner whose promotion the leader
    /// could propose now counts as promoted at the next tick even if the
    /// configuration change is refused for a reason other than another
    /// change or a transfer under way (the tick then retries and nothing
    /// shows). A leader with check-quorum off counts its election timeout
    /// without acting on it, so that timeout is not reported.
    ///
    /// `None`: no tick can do anything until an input arrives: a node that
    /// cannot campaign (a learner, a witness, a server removed from the
    /// configuration, a follower restoring a snapshot) and does not lead.
    ///
    /// Inputs move the deadline ([`step`](Node::step) can reset the
    /// election timer or make this node leader, [`propose`](Node::propose),
    /// [`transfer_leadership`](Node::transfer_leadership),
    /// [`add_voter`](Node::add_voter), [`advance`](Node::advance)...): ask
    /// again after every input. Leases are not timers: a lease ends when
    /// enough ticks have passed, which matters only to the next read or
    /// vote request, and nothing happens at its end. So bring the node up
    /// to date with `tick_by(elapsed)` before stepping a message, also
    /// when `poll_timeout` returned `None`.
    pub fn poll_timeout(&self) -> Option<u64> {
        self.due(Due::Visible)
    }

    /// Advances logical time by `n` ticks: the same outputs, state and
    /// role changes as calling [`tick`](Node::tick) `n` times in a row
    /// (with no other call in between), but the ticks that would do
    /// nothing are skipped by moving the counters, so the cost is that of
    /// the ticks that act (on a leader about one per heartbeat interval,
    /// elsewhere one per campaign, none on a learner). An event
    /// loop that slept until [`poll_timeout`](Node::poll_timeout) calls
    /// `tick_by(elapsed_ticks)`. [`ticks`](Node::ticks) saturates at
    /// `u64::MAX`.
    pub fn tick_by(&mut self, n: u64) {
        let end = self.ticks.saturating_add(n);
        while self.ticks < end {
            // The ticks before the next one that changes anything only
            // move counters.
            let quiet_to = self
                .due(Due::AnyChange)
                .map_or(end, |due| due.saturating_sub(1).min(end));
            if quiet_to > self.ticks {
                self.skip_quiet_ticks(quiet_to - self.ticks);
            }
            if self.ticks < end {
                self.tick();
            }
        }
    }

    /// `k` ticks at which, as [`due`](Node::due) found, nothing but the
    /// counters moves: what `k` calls of [`tick`](Node::tick) would do.
    pub(super) fn skip_quiet_ticks(&mut self, k: u64) {
        self.ticks = self.ticks.saturating_add(k);
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        self.election_elapsed = self.election_elapsed.saturating_add(k);
        if self.role == Role::Leader {
            self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(k);
            if self.transferee.is_some() {
                self.transfer_elapsed = self.transfer_elapsed.saturating_add(k);
            }
        }
    }

    /// The first tick (absolute, `> self.ticks`) at which
    /// [`tick`](Node::tick) does what `what` asks for, if no input comes
    /// first. Mirrors `tick` branch by branch.
    fn due(&self, what: Due) -> Option<u64> {
        if self.quiesced {
            return None;
        }
        let now = self.ticks;
        // A counter at `elapsed` that acts on reaching `limit` (and at the
        // next tick if it is there already).
        let reaches = |elapsed: u32, limit: u32| {
            now.saturating_add(u64::from(limit.saturating_sub(elapsed).max(1)))
        };
        if self.role != Role::Leader {
            return self
                .can_campaign()
                .then(|| reaches(self.election_elapsed, self.randomized_election_timeout));
        }
        let mut due = reaches(self.heartbeat_elapsed, self.config.heartbeat_tick);
        // Without check-quorum the count restarts and nothing else happens;
        // `tick_by` still runs that tick, to keep the counter exact.
        if self.config.check_quorum || what == Due::AnyChange {
            due = due.min(reaches(self.election_elapsed, self.config.election_tick));
        }
        if self.transferee.is_some() {
            due = due.min(reaches(self.transfer_elapsed, self.config.election_tick));
        }
        if let Some(catch_up) = self.catch_up_due(what) {
            due = due.min(catch_up);
        }
        Some(due)
    }

    /// The first tick at which the leader's catch-ups do what `what` asks
    /// for (`advance_catch_ups` at every tick).
    fn catch_up_due(&self, what: Due) -> Option<u64> {
        let next = self.ticks.saturating_add(1);
        let limits = CatchUpLimits::of(&self.config);
        let learners = self.configuration.learners();
        let mut due: Option<u64> = None;
        for c in &self.catching_up {
            let at = if !learners.contains(&c.id) {
                // Cancelled at the next tick.
                Some(next)
            } else {
                let (matched, offset) = self
                    .progress
                    .iter()
                    .find(|p| p.id == c.id)
                    .map_or((LogIndex::ZERO, 0), |p| (p.match_index, p.snapshot_offset));
                match c.due(matched, offset, self.ticks, limits) {
                    CatchUpDue::At { changes, acts } => Some(match what {
                        Due::Visible => acts,
                        Due::AnyChange => changes,
                    }),
                    // Every tick retries the promotion; a refusal changes
                    // nothing, and these refusals last until an input.
                    CatchUpDue::Promotion => match self.check_can_change() {
                        Err(
                            Error::NotLeader { .. }
                            | Error::TransferInProgress { .. }
                            | Error::ConfigurationChangeInProgress { .. }
                            | Error::NoCommitInTerm { .. },
                        ) => None,
                        _ => Some(next),
                    },
                }
            };
            due = match (due, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        due
    }
}
