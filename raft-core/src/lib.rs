//! The Raft consensus protocol as a pure state machine: the application feeds
//! it ticks, messages and proposals, and drives persistence, sending and
//! applying from what it hands back. No I/O, no clock, no threads: the same
//! inputs give the same outputs, which is what lets the deterministic
//! simulator (feature `sim`) test it, and your state machine on top of it,
//! under loss, reordering, partitions and crashes, with every run replayable
//! from its seed.
//!
//! # The contract
//!
//! A [`Node`] takes three kinds of input: [`Node::tick`] (logical time; call
//! it at a fixed interval, or see [Time](#time)), [`Node::step`] (a message from a peer) and
//! [`Node::propose`] (a command, on the leader). After any of them, call
//! [`Node::ready`] until it returns `None`. Each [`Ready`] asks you to
//!
//! * send its [`messages`](Ready::messages) (right away, no need to wait),
//! * if it carries a [`snapshot`](Ready::snapshot) from the leader, store it
//!   (it replaces the stored log) and restore your state machine from it,
//! * append its [`entries`](Ready::entries) and store its
//!   [`hard_state`](Ready::hard_state) durably,
//! * apply its [`committed_entries`](Ready::committed_entries) in order,
//!
//! and then hand it back with [`Node::advance`]. `step` drops what it
//! cannot use (a message from a non-member, a stale or malformed one) and
//! says so with [`StepOutcome::Dropped`] and a [`DropReason`]; it fails
//! only with a [`FatalError`] (the storage failed), so `node.step(m)?` is
//! right in an event loop. On a restart, set [`Config::applied`] to what
//! your state machine holds, and the node hands back only the committed
//! entries after it. Replies that promise
//! durable state (a granted vote, an acknowledged append) are never in the
//! `Ready` that asks for that state to be persisted: the node holds them
//! until `advance` says the write is done, and releases them in a later
//! `Ready`. So sending early cannot break safety, and forgetting to
//! `advance` only stalls the node. A leader counts its own log towards
//! commitment only once durable (thesis §10.2.1), so it can replicate
//! while its own write is in flight; with [`Config::early_append_ack`]
//! followers also tell it at once that they received entries, which slides
//! its in-flight window but counts for nothing until they are durable.
//!
//! # Time
//!
//! A node's notion of time is logical ticks passed in by the caller:
//! [`Node::tick`] one at a time, [`Node::tick_by`] several at once (the
//! same outcome as as many `tick` calls, but the ticks that would do
//! nothing cost nothing). It never reads a clock: the caller chooses how
//! long a tick lasts, every timeout in [`Config`] is counted in ticks, and
//! [`Node::ticks`] says how many the node has seen. [`Node::poll_timeout`]
//! says at which tick count it next needs one (a heartbeat, check-quorum,
//! an election timeout, the end of a leadership transfer or of a
//! catch-up), like quinn-proto's `poll_timeout`: an event loop sleeps
//! until then or until a message arrives, and before handling anything
//! catches the node up with `tick_by` for the ticks that passed. `None`
//! means no tick can do anything before the next input (a learner, a
//! witness). Ask again after every input: a message can reset the election
//! timer or make the node leader. Leases are counted in the same ticks, so
//! [`Config::max_clock_drift_ticks`] bounds how far two nodes' tick rates
//! may drift apart, whichever way they are driven.
//!
//! ```
//! use quorate_raft_core::{Config, Configuration, MemStorage, Message, Node, NodeId, Role};
//! use std::collections::VecDeque;
//!
//! # fn main() -> Result<(), quorate_raft_core::Error> {
//! fn persist_and_send(
//!     node: &mut Node<MemStorage>,
//!     network: &mut VecDeque<Message>,
//! ) -> Result<(), quorate_raft_core::Error> {
//!     while let Some(mut ready) = node.ready()? {
//!         network.extend(ready.take_messages());
//!         node.storage_mut().append(ready.entries())?;
//!         if let Some(hard_state) = ready.hard_state() {
//!             node.storage_mut().set_hard_state(hard_state);
//!         }
//!         node.advance(ready)?;
//!     }
//!     Ok(())
//! }
//!
//! let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     let mut config = Config::new(NodeId(id));
//!     config.heartbeat_tick = 5; // election_tick is 10
//!     nodes.push(Node::new(config, MemStorage::new(members.clone()))?);
//! }
//! let mut network = VecDeque::new();
//! // The clock, in ticks. A real loop reads its clock and divides by the
//! // tick interval; here the loop jumps straight to the next deadline.
//! let mut now = 0;
//! let mut wake_ups = 0;
//! while now < 1_000 {
//!     let deadline = nodes.iter().filter_map(Node::poll_timeout).min();
//!     now = deadline.unwrap_or(u64::MAX).min(1_000); // sleep until then
//!     wake_ups += 1;
//!     for node in &mut nodes {
//!         node.tick_by(now - node.ticks());
//!         persist_and_send(node, &mut network)?;
//!     }
//!     while let Some(message) = network.pop_front() {
//!         let node = &mut nodes[(message.to.0 - 1) as usize];
//!         node.tick_by(now - node.ticks()); // up to date before any input
//!         node.step(message)?;
//!         persist_and_send(node, &mut network)?;
//!     }
//! }
//! assert_eq!(nodes.iter().filter(|n| n.role() == Role::Leader).count(), 1);
//! // One wake-up per heartbeat, not one per tick: the followers, hearing
//! // from the leader, never need time of their own.
//! assert!(wake_ups <= 1_000 / 5 + 5, "{wake_ups} wake-ups");
//! # Ok(())
//! # }
//! ```
//!
//! # Ids
//!
//! A [`NodeId`] (`NodeId(u64)`) names a Raft member: in a
//! [`Configuration`] and in every [`Message`]'s `from` and `to`. The
//! numbers are chosen by the user: one per server, never reused for
//! another server (a server replaced with an empty disk gets a new id),
//! and the same `u64` that the transport's peer id carries, so routing a
//! message is looking up its `to`. With the `codec` feature,
//! `PeerId::try_from(node_id)` and `NodeId::try_from(peer_id)` convert,
//! refusing ids of 2^63 and above, which the transport keeps for client
//! connections.
//!
//! # Example
//!
//! A complete event loop: three nodes in one process, an in-memory "network"
//! and an in-memory "disk". A real application would put the network and
//! the disk behind the same loop.
//!
//! ```
//! use bytes::Bytes;
//! use quorate_raft_core::{
//!     Config, Configuration, LogIndex, MemStorage, Message, Node, NodeId, Role, StepOutcome,
//! };
//! use std::collections::VecDeque;
//!
//! /// The state machine: the commands applied, and up to which index.
//! #[derive(Clone, Default)]
//! struct App {
//!     commands: Vec<Bytes>,
//!     applied: LogIndex,
//! }
//!
//! # fn main() -> Result<(), quorate_raft_core::Error> {
//! let members = Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
//! let config = |id| {
//!     let mut config = Config::new(NodeId(id));
//!     config.seed = 42; // election timeouts are drawn from this seed
//!     config
//! };
//! let mut nodes = Vec::new();
//! for id in 1..=3 {
//!     nodes.push(Node::new(config(id), MemStorage::new(members.clone()))?);
//! }
//! let mut network: VecDeque<Message> = VecDeque::new();
//! let mut apps = vec![App::default(); 3];
//!
//! // Persist, send, apply; then advance. Loop until the node is idle.
//! fn handle_ready(
//!     node: &mut Node<MemStorage>,
//!     network: &mut VecDeque<Message>,
//!     app: &mut App,
//! ) -> Result<(), quorate_raft_core::Error> {
//!     while let Some(mut ready) = node.ready()? {
//!         network.extend(ready.take_messages());
//!         if let Some(snapshot) = ready.take_snapshot() {
//!             // Restore your state machine from snapshot.data.
//!             *app = App { commands: Vec::new(), applied: snapshot.meta.index };
//!             node.storage_mut().apply_snapshot(snapshot);
//!         }
//!         node.storage_mut().append(ready.entries())?;
//!         if let Some(hard_state) = ready.hard_state() {
//!             node.storage_mut().set_hard_state(hard_state);
//!         }
//!         for entry in ready.take_committed_entries() {
//!             // Configuration entries and a new leader's empty entry are
//!             // the node's business, not the state machine's.
//!             if entry.is_command() {
//!                 app.commands.push(entry.data);
//!             }
//!             app.applied = entry.index;
//!         }
//!         node.advance(ready)?;
//!     }
//!     Ok(())
//! }
//!
//! let mut proposed = false;
//! let mut dropped = 0;
//! for _tick in 0..200 {
//!     for (i, node) in nodes.iter_mut().enumerate() {
//!         node.tick();
//!         handle_ready(node, &mut network, &mut apps[i])?;
//!     }
//!     while let Some(message) = network.pop_front() {
//!         let i = (message.to.0 - 1) as usize;
//!         // `?` is safe: a stray, stale or malformed message comes back as
//!         // `Dropped`; only a storage failure is an error.
//!         if let StepOutcome::Dropped(_reason) = nodes[i].step(message)? {
//!             dropped += 1; // log or count it
//!         }
//!         handle_ready(&mut nodes[i], &mut network, &mut apps[i])?;
//!     }
//!     if !proposed {
//!         if let Some(leader) = nodes.iter_mut().find(|n| n.role() == Role::Leader) {
//!             leader.propose(Bytes::from_static(b"set x = 1"))?;
//!             proposed = true;
//!         }
//!     }
//! }
//! for app in &apps {
//!     assert_eq!(app.commands, [Bytes::from_static(b"set x = 1")]);
//! }
//! # let _ = dropped;
//!
//! // A restart: the state machine recorded what it applied (durably, in
//! // a real application), so the node resumes after it and hands back no
//! // entry twice.
//! let storage = nodes.remove(0).into_storage();
//! let mut restarted = config(1);
//! restarted.applied = apps[0].applied;
//! let mut node = Node::new(restarted, storage)?;
//! while let Some(ready) = node.ready()? {
//!     assert!(ready.committed_entries().is_empty());
//!     node.advance(ready)?;
//! }
//! assert_eq!(node.applied_index(), apps[0].applied);
//! # Ok(())
//! # }
//! ```
//!
//! Reads need no log entry: [`Node::read_index`] (confirmed by a heartbeat
//! round) and [`Node::read_lease`] (with [`Config::check_quorum`], under a
//! documented clock-drift bound) report [`ReadState`]s in the `Ready`; serve
//! each once the applied index reaches it. [`Config::pre_vote`] keeps
//! rejoining nodes from disrupting a leader, and
//! [`Node::transfer_leadership`] hands leadership over.
//!
//! Log compaction: once your state machine has applied up to some index,
//! serialize it and record it as the snapshot that replaces the log up to
//! there ([`MemStorage::compact`], or your [`Storage`]'s equivalent; on a
//! restart, restore the state machine from [`Storage::snapshot`]). A leader
//! sends its snapshot to followers that need compacted entries, in chunks of
//! at most [`Config::max_snapshot_chunk_bytes`] that resume from the offset
//! the follower reports (InstallSnapshot, thesis §5.3); the follower hands
//! it to you in a `Ready` and acknowledges it once you `advance`.
//!
//! Membership: [`Node::add_voter`] brings a new server in the safe order
//! of thesis §4.2.1 (a learner first, promoted once a replication round
//! to it lasts less than an election timeout; the outcome comes out of
//! [`Node::poll_promotion`] as a [`Promotion`]); [`Node::remove_member`]
//! and [`Node::add_learner`] take one step. [`Node::propose_configuration`]
//! moves to any configuration, in one step when a single voter changes
//! (§4.1) and by joint consensus otherwise (§4.3), or as a
//! [`ChangeMethod`] says. One change at a time, and only once the leader
//! has committed an entry of its term (the 2015 single-server errata).
//!
//! Witnesses ([`Configuration::with_witnesses`], [`Node::add_witness`]) are
//! voters that never lead and keep no state-machine data, for 2+1
//! deployments: the leader sends them entries without payloads and
//! snapshots without data. A witness runs the same event loop; its `Ready`s
//! hold no command to apply and no state to restore (check
//! `node.configuration().is_witness(node.id())` to skip building a state
//! machine). The [`witness`] module gives the safety argument and the
//! availability trade-off.
//!
//! Proposals are capped: [`Config::max_entry_bytes`] per command and
//! [`Config::max_uncommitted_bytes`] of a leader's uncommitted commands
//! ([`Error::EntryTooLarge`], [`Error::UncommittedLimit`]); during a
//! leadership transfer they fail with [`Error::TransferInProgress`] until
//! the transfer ends, times out (an election timeout) or is abandoned
//! ([`Node::abort_transfer`]).
//!
//! Proposals made to a follower fail with [`Error::NotLeader`] and a hint;
//! forwarding is the application's choice. A proposal may be lost when
//! leadership changes before it commits: clients retry with a request id
//! that the state machine deduplicates (see the `sim` module's key-value
//! store).
#![cfg_attr(docsrs, feature(doc_cfg))]

// First: the event macros are used by the modules below.
#[macro_use]
mod trace;
#[cfg(feature = "codec")]
#[cfg_attr(docsrs, doc(cfg(feature = "codec")))]
pub mod codec;
mod config;
mod error;
mod log;
mod membership;
mod message;
pub mod multi;
mod node;
mod progress;
mod ready;
#[cfg(feature = "sim")]
#[cfg_attr(docsrs, doc(cfg(feature = "sim")))]
pub mod sim;
pub mod storage;
mod types;
pub mod witness;

pub use config::{CONFIGURATION_TAG, Config, Configuration, DEFAULT_MAX_SNAPSHOT_BYTES};
pub use error::{DropReason, Error, FatalError, StorageError};
pub use membership::{ChangeMethod, Promotion};
pub use message::{AppendOutcome, Message, MessageBody};
pub use node::{Node, Proposed, SnapshotStatus, StepOutcome};
pub use progress::{Progress, ProgressState};
pub use ready::{ReadState, Ready, Role, SoftState};
pub use storage::{
    CrashStorage, InitialState, LogStorage, MemStorage, Persisted, Snapshot, SnapshotMeta, Storage,
};
pub use types::{Entry, HardState, LogIndex, NodeId, Term};
