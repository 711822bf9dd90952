//! Why `hash(key) % n` fails and consistent hashing works.
//!
//! A fixed set of keys is placed on `n` nodes by six schemes; then a node
//! joins, and (separately) a node leaves, and we count the keys whose owner
//! changed. The best possible is the joiner's fair share, `1/(n+1)` of the
//! keys, all of them moving *to the joiner*; or the leaver's keys, `1/n`,
//! and nothing else. Modulo moves about `n/(n+1)` of everything.
//!
//! The second part sends a request stream with one hot key through a ring,
//! once plainly (the hot key's owner takes all its traffic) and once with
//! bounded loads (no node above `ceil((1 + epsilon) * average)`).
//!
//! Everything is deterministic: keys are `0..keys` as little-endian `u64`,
//! hashed by the crate's specified XXH3, and the request stream comes from a
//! seeded PRNG.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use quorate_consistent_hash::{
    BoundedLoads, Error, JumpHash, KeyHasher, Maglev, MultiProbe, Rendezvous, Ring, Xxh3,
};

/// A storage node, numbered `0..n`: the placement schemes' own node type
/// (`N`), not a Raft `NodeId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorageNode(pub u32);

impl fmt::Display for StorageNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// Parameters of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Nodes before the change.
    pub nodes: u32,
    /// Distinct keys placed.
    pub keys: u64,
    /// Virtual nodes per ring member.
    pub vnodes: u32,
    /// The node that leaves in the "leave" column (a middle one: a crash,
    /// not a planned shrink). Jump hash can only drop its last bucket.
    pub leaver: StorageNode,
    /// Requests in the hot-key stream.
    pub requests: u64,
    /// Fraction of requests that go to the one hot key.
    pub hot_fraction: f64,
    /// Bounded-load slack above the average.
    pub epsilon: f64,
    /// Seed of the request stream.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nodes: 10,
            keys: 100_000,
            vnodes: 160,
            leaver: StorageNode(3),
            requests: 50_000,
            hot_fraction: 0.2,
            epsilon: 0.25,
            seed: 7,
        }
    }
}

/// The placement schemes compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheme {
    /// `nodes[hash(key) % n]`.
    Modulo,
    /// Consistent-hash ring with virtual nodes.
    Ring,
    /// Jump consistent hash.
    Jump,
    /// Rendezvous (highest random weight).
    Rendezvous,
    /// Maglev lookup table.
    Maglev,
    /// Multi-probe consistent hashing.
    MultiProbe,
}

impl Scheme {
    /// Every scheme, in table order.
    pub const ALL: [Scheme; 6] = [
        Scheme::Modulo,
        Scheme::Ring,
        Scheme::Jump,
        Scheme::Rendezvous,
        Scheme::Maglev,
        Scheme::MultiProbe,
    ];

    /// Whether the scheme promises minimal disruption: on a join keys move
    /// only to the joiner, on a leave only the leaver's keys move. Maglev
    /// trades a little of that for perfect balance and one-read lookups.
    pub fn is_minimal(self) -> bool {
        !matches!(self, Scheme::Modulo | Scheme::Maglev)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Scheme::Modulo => "modulo",
            Scheme::Ring => "ring",
            Scheme::Jump => "jump",
            Scheme::Rendezvous => "rendezvous",
            Scheme::Maglev => "maglev",
            Scheme::MultiProbe => "multi-probe",
        })
    }
}

/// What one membership change did to the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    /// Keys whose owner changed.
    pub moved: u64,
    /// Moved keys that did not have to move: on a join, keys that went to a
    /// node other than the joiner; on a leave, keys that were not on the leaver.
    pub needless: u64,
    /// The node that joined or left.
    pub node: StorageNode,
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct SchemeReport {
    /// The scheme.
    pub scheme: Scheme,
    /// Most keys on one node divided by the mean, before the change.
    pub max_over_mean: f64,
    /// A node joins (`n -> n + 1`).
    pub join: Movement,
    /// A node leaves (`n -> n - 1`).
    pub leave: Movement,
}

/// How a request stream with a hot key spread over the nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct HotKeyReport {
    /// Requests per node with plain ring placement.
    pub plain: BTreeMap<StorageNode, u64>,
    /// Requests per node with bounded loads on the same ring.
    pub bounded: BTreeMap<StorageNode, u64>,
    /// Requests for the hot key.
    pub hot_requests: u64,
    /// Nodes that served the hot key under bounded loads.
    pub hot_spread: usize,
    /// The bounded-load cap, `ceil((1 + epsilon) * requests / nodes)`.
    pub capacity: u64,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The parameters.
    pub config: Config,
    /// One row per scheme, in [`Scheme::ALL`] order.
    pub schemes: Vec<SchemeReport>,
    /// The hot-key part.
    pub hot_key: HotKeyReport,
}

/// Anything that maps keys to nodes.
trait Placement {
    fn owner(&self, key: u64) -> Option<StorageNode>;
}

struct Modulo {
    nodes: Vec<StorageNode>,
}

impl Placement for Modulo {
    fn owner(&self, key: u64) -> Option<StorageNode> {
        let n = u64::try_from(self.nodes.len()).ok().filter(|&n| n > 0)?;
        let slot = usize::try_from(Xxh3.hash_key(&key, 0) % n).ok()?;
        self.nodes.get(slot).copied()
    }
}

impl Placement for Ring<u32> {
    fn owner(&self, key: u64) -> Option<StorageNode> {
        self.get(&key).copied().map(StorageNode)
    }
}

impl Placement for JumpHash {
    fn owner(&self, key: u64) -> Option<StorageNode> {
        Some(StorageNode(self.bucket(&key).0))
    }
}

impl Placement for Rendezvous<u32> {
    fn owner(&self, key: u64) -> Option<StorageNode> {
        self.get(&key).copied().map(StorageNode)
    }
}

impl Placement for Maglev<u32> {
    fn owner(&self, key: u64) -> Option<StorageNode> {
        self.get(&key).copied().map(StorageNode)
    }
}

impl Placement for MultiProbe<u32> {
    fn owner(&self, key: u64) -> Option<StorageNode> {
        self.get(&key).copied().map(StorageNode)
    }
}

/// Builds `scheme` over exactly `members`.
fn build(scheme: Scheme, members: &[u32], vnodes: u32) -> Result<Box<dyn Placement>, Error> {
    Ok(match scheme {
        Scheme::Modulo => Box::new(Modulo {
            nodes: members.iter().copied().map(StorageNode).collect(),
        }),
        Scheme::Ring => {
            let mut ring = Ring::new(vnodes)?;
            for &node in members {
                ring.add(node)?;
            }
            Box::new(ring)
        }
        Scheme::Jump => {
            // Buckets are numbered; a member list with a hole cannot be
            // represented, which is why jump's leave removes the last node.
            let buckets = u32::try_from(members.len()).map_err(|_| Error::NoNodes)?;
            Box::new(JumpHash::new(buckets)?)
        }
        Scheme::Rendezvous => {
            let mut rendezvous = Rendezvous::new();
            for &node in members {
                rendezvous.add(node)?;
            }
            Box::new(rendezvous)
        }
        Scheme::Maglev => Box::new(Maglev::new(members.iter().copied())?),
        Scheme::MultiProbe => {
            let mut probe = MultiProbe::new(quorate_consistent_hash::DEFAULT_PROBES)?;
            for &node in members {
                probe.add(node)?;
            }
            Box::new(probe)
        }
    })
}

fn owners(placement: &dyn Placement, keys: u64) -> Result<Vec<StorageNode>, Error> {
    (0..keys)
        .map(|key| placement.owner(key).ok_or(Error::NoNodes))
        .collect()
}

fn max_over_mean(owners: &[StorageNode], nodes: u32) -> f64 {
    let mut counts: BTreeMap<StorageNode, u64> = BTreeMap::new();
    for &owner in owners {
        *counts.entry(owner).or_insert(0) += 1;
    }
    let max = counts.values().copied().max().unwrap_or(0);
    let mean = owners.len() as f64 / f64::from(nodes.max(1));
    max as f64 / mean
}

fn scheme_report(scheme: Scheme, config: &Config) -> Result<SchemeReport, Error> {
    let before: Vec<u32> = (0..config.nodes).collect();
    let joiner = config.nodes;
    let mut joined = before.clone();
    joined.push(joiner);
    let leaver = if scheme == Scheme::Jump {
        config.nodes.saturating_sub(1)
    } else {
        config.leaver.0
    };
    let left: Vec<u32> = before.iter().copied().filter(|&n| n != leaver).collect();

    let old = owners(build(scheme, &before, config.vnodes)?.as_ref(), config.keys)?;
    let after_join = owners(build(scheme, &joined, config.vnodes)?.as_ref(), config.keys)?;
    let after_leave = owners(build(scheme, &left, config.vnodes)?.as_ref(), config.keys)?;

    let mut join = Movement {
        moved: 0,
        needless: 0,
        node: StorageNode(joiner),
    };
    let mut leave = Movement {
        moved: 0,
        needless: 0,
        node: StorageNode(leaver),
    };
    for ((&was, &now_join), &now_leave) in old.iter().zip(&after_join).zip(&after_leave) {
        if was != now_join {
            join.moved += 1;
            if now_join != join.node {
                join.needless += 1;
            }
        }
        if was != now_leave {
            leave.moved += 1;
            if was != leave.node {
                leave.needless += 1;
            }
        }
    }
    Ok(SchemeReport {
        scheme,
        max_over_mean: max_over_mean(&old, config.nodes),
        join,
        leave,
    })
}

/// The key each request asks for: the hot key (`u64::MAX`, outside the
/// cold range) with probability `hot_fraction`, else a uniform cold key.
fn request_stream(config: &Config) -> impl Iterator<Item = u64> + '_ {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    (0..config.requests).map(move |_| {
        if rng.f64() < config.hot_fraction {
            HOT_KEY
        } else {
            rng.u64(0..config.keys.max(1))
        }
    })
}

/// The hot key of the request stream.
pub const HOT_KEY: u64 = u64::MAX;

fn hot_key_report(config: &Config) -> Result<HotKeyReport, Error> {
    let mut ring = Ring::new(config.vnodes)?;
    for node in 0..config.nodes {
        ring.add(node)?;
    }
    let mut loads = BoundedLoads::new(config.epsilon)?;
    let mut plain = BTreeMap::new();
    let mut hot_nodes = BTreeMap::new();
    let mut hot_requests = 0;
    for key in request_stream(config) {
        let owner = ring.get(&key).copied().ok_or(Error::NoNodes)?;
        *plain.entry(StorageNode(owner)).or_insert(0) += 1;
        let placed = loads.place_on_ring(&ring, &key)?;
        if key == HOT_KEY {
            hot_requests += 1;
            *hot_nodes.entry(placed).or_insert(0u64) += 1;
        }
    }
    let bounded = (0..config.nodes)
        .map(|node| (StorageNode(node), loads.load(&node)))
        .collect();
    Ok(HotKeyReport {
        plain,
        bounded,
        hot_requests,
        hot_spread: hot_nodes.len(),
        capacity: loads.capacity_for(config.requests, config.nodes as usize),
    })
}

/// Runs both parts of the demonstration.
pub fn run(config: &Config) -> Result<Report, Error> {
    let schemes = Scheme::ALL
        .iter()
        .map(|&scheme| scheme_report(scheme, config))
        .collect::<Result<_, _>>()?;
    Ok(Report {
        config: config.clone(),
        schemes,
        hot_key: hot_key_report(config)?,
    })
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

impl Report {
    /// The ideal fraction of keys that move when a node joins: `1/(n+1)`.
    pub fn ideal_join(&self) -> f64 {
        1.0 / f64::from(self.config.nodes + 1)
    }

    /// The ideal fraction of keys that move when a node leaves: `1/n`.
    pub fn ideal_leave(&self) -> f64 {
        1.0 / f64::from(self.config.nodes.max(1))
    }

    /// The row for `scheme`.
    pub fn scheme(&self, scheme: Scheme) -> Option<&SchemeReport> {
        self.schemes.iter().find(|row| row.scheme == scheme)
    }

    /// The printed report.
    pub fn render(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} keys on {} nodes; node n{} joins, then (separately) node n{} leaves.",
            c.keys, c.nodes, c.nodes, c.leaver.0
        );
        let _ = writeln!(
            out,
            "Ideal: {:.1}% of keys move on a join (all to the joiner), {:.1}% on a leave (only the leaver's).\n",
            100.0 * self.ideal_join(),
            100.0 * self.ideal_leave()
        );
        let _ = writeln!(
            out,
            "{:<12} {:>9}   {:>8} {:>10}   {:>8} {:>10}",
            "scheme", "max/mean", "join", "needless", "leave", "needless"
        );
        for row in &self.schemes {
            let _ = writeln!(
                out,
                "{:<12} {:>9.3}   {:>7.1}% {:>9.1}%   {:>7.1}% {:>9.1}%{}",
                row.scheme,
                row.max_over_mean,
                percent(row.join.moved, c.keys),
                percent(row.join.needless, c.keys),
                percent(row.leave.moved, c.keys),
                percent(row.leave.needless, c.keys),
                if row.scheme == Scheme::Jump {
                    format!(
                        "   (jump can only drop its last bucket: n{})",
                        row.leave.node.0
                    )
                } else {
                    String::new()
                }
            );
        }
        let _ = writeln!(
            out,
            "\n(ring: {} virtual nodes per node; maglev: {}-slot table; \"needless\": keys moved between two nodes that both stayed)",
            c.vnodes,
            quorate_consistent_hash::DEFAULT_TABLE_SIZE
        );

        let h = &self.hot_key;
        let mean = c.requests as f64 / f64::from(c.nodes.max(1));
        let _ = writeln!(
            out,
            "\nHot key: {} requests, {} ({:.0}%) for one key, on a ring of {} nodes (mean {:.0} per node).",
            c.requests,
            h.hot_requests,
            percent(h.hot_requests, c.requests),
            c.nodes,
            mean
        );
        let _ = writeln!(out, "{:<6} {:>8} {:>14}", "node", "plain", "bounded(eps)");
        for node in (0..c.nodes).map(StorageNode) {
            let plain = h.plain.get(&node).copied().unwrap_or(0);
            let bounded = h.bounded.get(&node).copied().unwrap_or(0);
            let _ = writeln!(out, "{:<6} {:>8} {:>14}", node.to_string(), plain, bounded);
        }
        let max_plain = h.plain.values().copied().max().unwrap_or(0);
        let max_bounded = h.bounded.values().copied().max().unwrap_or(0);
        let _ = writeln!(
            out,
            "max/mean: plain {:.2}, bounded {:.2} (cap ceil({:.2} x mean) = {}); the hot key spread over {} nodes.",
            max_plain as f64 / mean,
            max_bounded as f64 / mean,
            1.0 + c.epsilon,
            h.capacity,
            h.hot_spread
        );
        out
    }
}
