//! What a leader knows about each follower's log, and the flow control
//! that decides when to send it more.

use crate::types::{LogIndex, NodeId};
use std::collections::VecDeque;

/// Tick-driven heartbeats that must begin, with appends outstanding and no
/// acknowledgment since, before a heartbeat answer makes the leader re-probe.
/// One is enough: appends sent before a beat are answered before the beat
/// (or any later round) on an ordered link, so an answer that overtakes
/// their acknowledgment means they were lost, while an append sent after
/// the beat into an empty window restarts the count.
const STALL_BEATS: u32 = 1;

/// How the leader is replicating to a follower.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ProgressState {
    /// The follower's match point is unknown: one AppendEntries at a time,
    /// moving `next` back on each rejection.
    Probe,
    /// The follower's log matches: AppendEntries are pipelined, up to
    /// `max_inflight_msgs` unacknowledged.
    Replicate,
    /// The follower needs entries the leader compacted: the leader sends
    /// its snapshot, one chunk at a time.
    Snapshot,
}

/// The leader's record of one follower (figure 2: `nextIndex`, `matchIndex`).
#[derive(Clone, Debug)]
pub struct Progress {
    /// The follower.
    pub id: NodeId,
    /// Highest index known to match the leader's log.
    pub match_index: LogIndex,
    /// Index of the next entry to send.
    pub next_index: LogIndex,
    /// Probing or replicating.
    pub state: ProgressState,
    /// In probe state: an AppendEntries is outstanding, wait for its answer
    /// or the next heartbeat response.
    pub(crate) paused: bool,
    /// Last index of each unacknowledged AppendEntries (replicate state).
    pub(crate) inflight: VecDeque<LogIndex>,
    /// The commit index last told to the follower.
    pub(crate) sent_commit: LogIndex,
    /// Tick-driven heartbeats begun since the follower last acknowledged
    /// entries, or since appends started to flow with none outstanding.
    /// Counted in ticks, not read rounds: a ReadIndex round says nothing
    /// about how long an append has gone unanswered.
    pub(crate) unacked_beats: u32,
    /// Whether the follower answered anything in the current check-quorum
    /// interval.
    pub(crate) recent_active: bool,
    /// The highest read round the follower answered (ReadIndex).
    pub(crate) acked_round: u64,
    /// In snapshot state: the index of the snapshot being sent.
    pub(crate) snapshot_index: LogIndex,
    /// In snapshot state: how many bytes of it the follower holds.
    pub(crate) snapshot_offset: u64,
    /// In snapshot state: how many bytes the leader sends in all (none of
    /// the data to a witness), the bound on what the follower can hold.
    pub(crate) snapshot_len: u64,
}

impl Progress {
    pub(crate) fn new(id: NodeId, next_index: LogIndex) -> Self {
        Progress {
            id,
            match_index: LogIndex::ZERO,
            next_index,
            state: ProgressState::Probe,
            paused: false,
            inflight: VecDeque::new(),
            sent_commit: LogIndex::ZERO,
            unacked_beats: 0,
            // A new leader gives every follower one interval to answer.
            recent_active: true,
            acked_round: 0,
            snapshot_index: LogIndex::ZERO,
            snapshot_offset: 0,
            snapshot_len: 0,
        }
    }

    /// In probe or snapshot state: whether the leader waits for an answer
    /// (or a heartbeat answer) before sending again.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How many pipelined AppendEntries are unacknowledged (replicate
    /// state).
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether the leader may send another AppendEntries now, given the
    /// window [`Config::max_inflight_msgs`](crate::Config::max_inflight_msgs).
    pub fn can_send_now(&self, max_inflight: usize) -> bool {
        self.can_send(max_inflight)
    }

    /// The commit index last told to the follower.
    pub fn sent_commit(&self) -> LogIndex {
        self.sent_commit
    }

    /// Whether the follower answered anything in the current check-quorum
    /// interval.
    pub fn recent_active(&self) -> bool {
        self.recent_active
    }

    /// The highest ReadIndex heartbeat round the follower answered.
    pub fn acked_round(&self) -> u64 {
        self.acked_round
    }

    /// In snapshot state: the snapshot being sent (its index), how many
    /// bytes the follower holds, and how many are sent in all.
    pub fn snapshot_transfer(&self) -> Option<(LogIndex, u64, u64)> {
        (self.state == ProgressState::Snapshot).then_some((
            self.snapshot_index,
            self.snapshot_offset,
            self.snapshot_len,
        ))
    }

    /// Starts sending the snapshot at `index`, `len` bytes, from its first
    /// byte.
    pub(crate) fn send_snapshot(&mut self, index: LogIndex, len: u64) {
        self.state = ProgressState::Snapshot;
        self.snapshot_index = index;
        self.snapshot_offset = 0;
        self.snapshot_len = len;
        self.inflight.clear();
        self.paused = false;
    }

    /// The follower holds `received` bytes of the snapshot at `index`.
    pub(crate) fn snapshot_received(&mut self, index: LogIndex, received: u64) {
        if self.state == ProgressState::Snapshot && index == self.snapshot_index {
            self.snapshot_offset = received;
            self.paused = false;
        }
    }

    /// Whether the leader may send another AppendEntries now.
    pub(crate) fn can_send(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => !self.paused,
            ProgressState::Replicate => self.inflight.len() < max_inflight,
        }
    }

    /// Records an AppendEntries whose last entry is `last`.
    pub(crate) fn sent(&mut self, last: Option<LogIndex>) {
        match self.state {
            ProgressState::Probe | ProgressState::Snapshot => self.paused = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    if self.next_index.prev() == self.match_index {
                        // Nothing was outstanding: the stall clock starts now.
                        self.unacked_beats = 0;
                    }
                    self.next_index = last.next();
                    self.inflight.push_back(last);
                }
            }
        }
    }

    /// The follower acknowledged a match up to `index`. Returns whether the
    /// match index moved.
    pub(crate) fn acknowledge(&mut self, index: LogIndex) -> bool {
        if self.state == ProgressState::Snapshot && index < self.snapshot_index {
            // A stale answer from before the snapshot: the follower still
            // needs it.
            let moved = index > self.match_index;
            self.match_index = self.match_index.max(index);
            return moved;
        }
        if self.state == ProgressState::Snapshot {
            self.state = ProgressState::Probe;
        }
        self.paused = false;
        self.unacked_beats = 0;
        while self.inflight.front().is_some_and(|last| *last <= index) {
            self.inflight.pop_front();
        }
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index.next());
        if self.state == ProgressState::Probe {
            self.state = ProgressState::Replicate;
            self.next_index = self.match_index.next();
        }
        moved
    }

    /// The follower received entries matching the leader's log up to
    /// `index`, not necessarily durable yet (early append acknowledgment):
    /// frees in-flight slots and moves `next_index` on, but not the match
    /// index, which counts towards commitment and so waits for durability.
    pub(crate) fn received(&mut self, index: LogIndex) {
        match self.state {
            // The snapshot transfer ends with a durable acknowledgment.
            ProgressState::Snapshot => return,
            // Answers older than the probe in flight say nothing new.
            ProgressState::Probe if index < self.next_index.prev() => return,
            ProgressState::Probe => {
                self.state = ProgressState::Replicate;
                self.next_index = index.next();
            }
            ProgressState::Replicate => self.next_index = self.next_index.max(index.next()),
        }
        self.paused = false;
        self.unacked_beats = 0;
        while self.inflight.front().is_some_and(|last| *last <= index) {
            self.inflight.pop_front();
        }
    }

    /// A tick-driven heartbeat interval begins.
    pub(crate) fn beat(&mut self) {
        self.unacked_beats = self.unacked_beats.saturating_add(1);
    }

    /// The follower answered a heartbeat, so it is reachable. If appends
    /// sent to it went unacknowledged through a whole heartbeat interval,
    /// they were probably lost: probe again from the match index. Appends
    /// merely still in flight (an answer to a ReadIndex round can overtake
    /// them) are left alone, so the window is not sent twice.
    pub(crate) fn heartbeat_answered(&mut self) {
        self.paused = false;
        // In snapshot state the unpause resends the chunk in flight, in
        // probe state the probe: either may have been lost.
        let outstanding = self.match_index < self.next_index.prev();
        if self.state == ProgressState::Replicate
            && outstanding
            && self.unacked_beats >= STALL_BEATS
        {
            self.state = ProgressState::Probe;
            self.inflight.clear();
            self.next_index = self.match_index.next();
        }
    }

    /// The follower rejected an AppendEntries at `rejected`; `hint` is the
    /// leader's guess at the next index to try. Returns false when the
    /// rejection is stale and was ignored.
    pub(crate) fn reject(&mut self, rejected: LogIndex, hint: LogIndex) -> bool {
        match self.state {
            // Answers to appends sent before the snapshot.
            ProgressState::Snapshot => return false,
            ProgressState::Replicate if rejected <= self.match_index => return false,
            ProgressState::Probe if rejected != self.next_index.prev() => return false,
            _ => {}
        }
        self.state = ProgressState::Probe;
        self.inflight.clear();
        self.paused = false;
        // The entry at `rejected` does not match, everything up to
        // `match_index` does.
        self.next_index = hint.min(rejected).max(self.match_index.next());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sends_one_at_a_time_then_replicates() {
        let mut p = Progress::new(NodeId(2), LogIndex(10));
        assert!(p.can_send(4));
        p.sent(Some(LogIndex(12)));
        assert!(!p.can_send(4), "probe waits for an answer");
        assert!(p.acknowledge(LogIndex(12)));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, LogIndex(13));
        for last in [14, 16, 18, 20] {
            assert!(p.can_send(4));
            p.sent(Some(LogIndex(last)));
        }
        assert!(!p.can_send(4), "window of four is full");
        p.acknowledge(LogIndex(16));
        assert_eq!(p.inflight.len(), 2);
        assert!(p.can_send(4));
    }

    #[test]
    fn received_slides_the_window_but_not_the_match() {
        let mut p = Progress::new(NodeId(2), LogIndex(10));
        p.sent(Some(LogIndex(12)));
        p.received(LogIndex(12));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, LogIndex(13));
        assert_eq!(p.match_index, LogIndex::ZERO, "not durable yet");
        for last in [14, 16, 18, 20] {
            p.sent(Some(LogIndex(last)));
        }
        assert!(!p.can_send(4));
        p.received(LogIndex(16));
        assert!(p.can_send(4), "two slots freed");
        // A duplicate or reordered older answer changes nothing.
        p.received(LogIndex(14));
        assert_eq!((p.inflight.len(), p.next_index), (2, LogIndex(21)));
        // The durable acknowledgment then moves the match index.
        assert!(p.acknowledge(LogIndex(16)));
        assert_eq!(p.match_index, LogIndex(16));
        // In probe state, an answer older than the probe is stale.
        assert!(p.reject(LogIndex(18), LogIndex(17)));
        p.sent(None);
        p.received(LogIndex(15));
        assert_eq!(p.state, ProgressState::Probe);
        p.received(LogIndex(17));
        assert_eq!(p.state, ProgressState::Replicate);
        assert_eq!(p.next_index, LogIndex(18));
    }

    #[test]
    fn heartbeat_answers_reprobe_only_after_a_beat_without_acks() {
        let mut p = Progress::new(NodeId(2), LogIndex(1));
        p.sent(None);
        p.acknowledge(LogIndex(0));
        assert_eq!(p.state, ProgressState::Replicate);
        // An answer overtaking appends in flight (a read round) leaves the
        // window alone.
        p.sent(Some(LogIndex(4)));
        p.sent(Some(LogIndex(8)));
        p.heartbeat_answered();
        assert_eq!(
            (p.state, p.next_index),
            (ProgressState::Replicate, LogIndex(9))
        );
        // An acknowledgment after the beat shows the link works.
        p.beat();
        p.acknowledge(LogIndex(4));
        p.heartbeat_answered();
        assert_eq!((p.state, p.inflight.len()), (ProgressState::Replicate, 1));
        // Acked up to date; a window started after the beat is not stale.
        p.acknowledge(LogIndex(8));
        p.beat();
        p.sent(Some(LogIndex(12)));
        p.heartbeat_answered();
        assert_eq!(p.state, ProgressState::Replicate);
        // Appends outstanding through a beat with no acknowledgment since:
        // probably lost, probe from the match index.
        p.beat();
        p.heartbeat_answered();
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!((p.next_index, p.inflight.len()), (LogIndex(9), 0));
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(NodeId(2), LogIndex(10));
        p.sent(None);
        assert!(
            !p.reject(LogIndex(5), LogIndex(3)),
            "not the probe in flight"
        );
        assert!(p.reject(LogIndex(9), LogIndex(4)));
        assert_eq!(p.next_index, LogIndex(4));
        p.acknowledge(LogIndex(6));
        assert!(!p.reject(LogIndex(6), LogIndex(1)), "below the match index");
        assert!(p.reject(LogIndex(8), LogIndex(1)));
        assert_eq!(p.next_index, LogIndex(7), "never behind the match index");
    }
}
