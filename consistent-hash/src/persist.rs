//! Serde support for the placement structures: they serialize as their
//! membership (the inputs that fully determine placement) and are rebuilt,
//! and re-validated, when deserialized. Derived tables never go on the wire.
//!
//! Deserialized input is untrusted: a few bytes could name a ring of
//! billions of points or a Maglev table of gigabytes. So what a
//! deserializer may build is capped — [`MAX_RING_POINTS`],
//! [`MAX_MAGLEV_TABLE`], [`MAX_PROBES`] — and checked before anything is
//! allocated for it; larger structures are built with the constructors,
//! from input the program trusts.

use alloc::vec::Vec;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{KeyHasher, StableKey};
use crate::maglev::Maglev;
use crate::multi_probe::MultiProbe;
use crate::rendezvous::Rendezvous;
use crate::ring::Ring;

/// The most points (virtual nodes times weight, over all nodes) a
/// deserialized [`Ring`] may have: 2^20, about 12 MiB of points and owners.
pub const MAX_RING_POINTS: u64 = 1 << 20;

/// The largest table a deserialized [`Maglev`] may have: 2^22 entries
/// (16 MiB), past the Maglev paper's largest.
pub const MAX_MAGLEV_TABLE: u32 = 1 << 22;

/// The most probes a deserialized [`MultiProbe`] may use per lookup.
pub const MAX_PROBES: u32 = 1024;

fn cap<E: serde::de::Error>(what: &'static str, requested: u64, max: u64) -> Result<(), E> {
    if requested > max {
        return Err(E::custom(crate::Error::DeserializeTooLarge {
            what,
            requested,
            max,
        }));
    }
    Ok(())
}

#[derive(Serialize)]
struct RingRef<'a, N> {
    vnodes: u32,
    nodes: Vec<(&'a N, u32)>,
}

#[derive(Deserialize)]
struct RingOwned<N> {
    vnodes: u32,
    nodes: Vec<(N, u32)>,
}

impl<N: Serialize + StableKey + Ord, H: KeyHasher> Serialize for Ring<N, H> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RingRef {
            vnodes: self.vnodes(),
            nodes: self.nodes().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de, N: Deserialize<'de> + StableKey + Ord, H: KeyHasher + Default> Deserialize<'de>
    for Ring<N, H>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let owned = RingOwned::<N>::deserialize(deserializer)?;
        let points = owned.nodes.iter().fold(0u64, |sum, (_, weight)| {
            sum.saturating_add(u64::from(owned.vnodes).saturating_mul(u64::from(*weight)))
        });
        cap("ring points", points, MAX_RING_POINTS)?;
        // In one sort: node by node would rebuild the circle per node.
        Ring::from_weighted(owned.vnodes, H::default(), owned.nodes).map_err(D::Error::custom)
    }
}

#[derive(Serialize)]
struct RendezvousRef<'a, N> {
    nodes: Vec<(&'a N, f64)>,
}

#[derive(Deserialize)]
struct RendezvousOwned<N> {
    nodes: Vec<(N, f64)>,
}

impl<N: Serialize + StableKey + Ord, H: KeyHasher> Serialize for Rendezvous<N, H> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        RendezvousRef {
            nodes: self.nodes().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de, N: Deserialize<'de> + StableKey + Ord, H: KeyHasher + Default> Deserialize<'de>
    for Rendezvous<N, H>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let owned = RendezvousOwned::<N>::deserialize(deserializer)?;
        // Node by node would compare each new node with every member.
        Rendezvous::from_weighted(H::default(), owned.nodes).map_err(D::Error::custom)
    }
}

#[derive(Serialize)]
struct MaglevRef<'a, N> {
    table_size: u32,
    nodes: &'a [N],
}

#[derive(Deserialize)]
struct MaglevOwned<N> {
    table_size: u32,
    nodes: Vec<N>,
}

impl<N: Serialize + StableKey + Ord, H: KeyHasher> Serialize for Maglev<N, H> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MaglevRef {
            table_size: self.table_size(),
            nodes: self.nodes(),
        }
        .serialize(serializer)
    }
}

impl<'de, N: Deserialize<'de> + StableKey + Ord, H: KeyHasher + Default> Deserialize<'de>
    for Maglev<N, H>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let owned = MaglevOwned::<N>::deserialize(deserializer)?;
        let table = u64::from(owned.table_size);
        cap("maglev table", table, u64::from(MAX_MAGLEV_TABLE))?;
        Maglev::with_table_size(owned.nodes, owned.table_size, H::default())
            .map_err(D::Error::custom)
    }
}

#[derive(Serialize)]
struct MultiProbeRef<'a, N> {
    probes: u32,
    nodes: Vec<&'a N>,
}

#[derive(Deserialize)]
struct MultiProbeOwned<N> {
    probes: u32,
    nodes: Vec<N>,
}

impl<N: Serialize + StableKey + Ord, H: KeyHasher> Serialize for MultiProbe<N, H> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MultiProbeRef {
            probes: self.probes(),
            nodes: self.nodes().collect(),
        }
        .serialize(serializer)
    }
}

impl<'de, N: Deserialize<'de> + StableKey + Ord, H: KeyHasher + Default> Deserialize<'de>
    for MultiProbe<N, H>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let owned = MultiProbeOwned::<N>::deserialize(deserializer)?;
        cap(
            "multi-probe probes",
            u64::from(owned.probes),
            u64::from(MAX_PROBES),
        )?;
        MultiProbe::from_nodes(owned.probes, H::default(), owned.nodes).map_err(D::Error::custom)
    }
}
