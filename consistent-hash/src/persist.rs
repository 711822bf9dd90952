//! Serde support for the placement structures: they serialize as their
//! membership (the inputs that fully determine placement) and are rebuilt,
//! and re-validated, when deserialized. Derived tables never go on the wire.

use alloc::vec::Vec;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{KeyHasher, StableKey};
use crate::maglev::Maglev;
use crate::multi_probe::MultiProbe;
use crate::rendezvous::Rendezvous;
use crate::ring::Ring;

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
        let mut ring = Ring::with_hasher(owned.vnodes, H::default()).map_err(D::Error::custom)?;
        for (node, weight) in owned.nodes {
            ring.add_weighted(node, weight).map_err(D::Error::custom)?;
        }
        Ok(ring)
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
        let mut rendezvous = Rendezvous::with_hasher(H::default());
        for (node, weight) in owned.nodes {
            rendezvous
                .add_weighted(node, weight)
                .map_err(D::Error::custom)?;
        }
        Ok(rendezvous)
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
        let mut multi_probe =
            MultiProbe::with_hasher(owned.probes, H::default()).map_err(D::Error::custom)?;
        for node in owned.nodes {
            multi_probe.add(node).map_err(D::Error::custom)?;
        }
        Ok(multi_probe)
    }
}
