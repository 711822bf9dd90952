//! Proposals: the leader appends commands, within the entry-size and uncommitted-bytes caps.

use super::{Node, Proposed};
use crate::config::Configuration;
use crate::error::Error;
use crate::message::MessageBody;
use crate::ready::Role;
use crate::storage::Storage;
use crate::types::{Entry, LogIndex};
use bytes::Bytes;

impl<S: Storage> Node<S> {
    /// Proposes a command. On the leader, appends it to the log and returns
    /// its index; it is replicated on the next [`ready`](Node::ready). The
    /// entry may still be lost if leadership changes before it commits:
    /// watch the index in committed entries, and retry with a request id
    /// your state machine deduplicates.
    pub fn propose(&mut self, data: Bytes) -> Result<LogIndex, Error> {
        if self.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(to) = self.transferee {
            return Err(Error::TransferInProgress { to });
        }
        if data.starts_with(crate::config::CONFIGURATION_TAG) {
            return Err(Error::ReservedCommand);
        }
        let size = data.len() as u64;
        if size > self.config.max_entry_bytes {
            return Err(Error::EntryTooLarge {
                size,
                max: self.config.max_entry_bytes,
            });
        }
        // etcd-raft's rule: with nothing uncommitted any one command fits,
        // so a command above the limit is not refused forever; an empty one
        // costs nothing and always fits.
        let max = self.config.max_uncommitted_bytes;
        if self.uncommitted_bytes > 0
            && size > 0
            && self.uncommitted_bytes.saturating_add(size) > max
        {
            return Err(Error::UncommittedLimit {
                uncommitted: self.uncommitted_bytes,
                size,
                max,
            });
        }
        Ok(self.append_as_leader(data))
    }

    /// Payload bytes this leader appended in its term and has not yet
    /// committed (what [`Config::max_uncommitted_bytes`](crate::Config::max_uncommitted_bytes) caps); zero on
    /// other roles.
    pub fn uncommitted_bytes(&self) -> u64 {
        self.uncommitted_bytes
    }

    /// Appends an entry of the current term to the leader's log.
    pub(super) fn append_as_leader(&mut self, data: Bytes) -> LogIndex {
        // A quiet leader has work again.
        self.wake();
        let index = self.log.last_index().next();
        let configuration = Configuration::decode(&data);
        let size = data.len() as u64;
        if size > 0 {
            self.uncommitted.push_back((index, size));
            self.uncommitted_bytes = self.uncommitted_bytes.saturating_add(size);
        }
        self.log.push(Entry {
            term: self.term,
            index,
            data,
        });
        if let Some(c) = configuration {
            self.configurations.push((index, c));
            self.configuration_changed();
        }
        index
    }

    /// Proposes on the leader, or forwards the command to the leader this
    /// node knows (thesis §6.2 leaves the choice to the implementation).
    /// A forwarded command has no index yet and may be dropped if
    /// leadership moves; retry with a request id your state machine
    /// deduplicates. Without a known leader: [`Error::NotLeader`].
    pub fn propose_or_forward(&mut self, data: Bytes) -> Result<Proposed, Error> {
        match (self.role, self.leader) {
            (Role::Leader, _) => self.propose(data).map(Proposed::Appended),
            (_, Some(leader)) => {
                self.send(
                    leader,
                    MessageBody::ForwardedProposal {
                        commands: vec![data],
                    },
                );
                Ok(Proposed::Forwarded(leader))
            }
            (_, None) => Err(Error::NotLeader { leader_hint: None }),
        }
    }

    /// The uncommitted-bytes cap counts this leader's own term only
    /// (etcd-raft resets it on election too): entries inherited from
    /// earlier terms are not its proposals.
    pub(super) fn forget_uncommitted(&mut self) {
        self.uncommitted.clear();
        self.uncommitted_bytes = 0;
    }
}
