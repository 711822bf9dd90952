//! Deserializers trust nothing they read: documents that name huge rings,
//! Maglev tables or probe counts are refused with a typed error, and what
//! a deserializer allocates stays under a stated bound (every byte
//! allocated while it runs, counted by a global allocator in this test
//! binary, bounds what it held at once).
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::sync::Mutex;

use quorate_consistent_hash::{
    MAX_MAGLEV_TABLE, MAX_PROBES, MAX_RING_POINTS, Maglev, MultiProbe, Rendezvous, Ring,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One measurement at a time (tests run on several threads).
static MEASURING: Mutex<()> = Mutex::new(());

/// The error of a refused document (without printing what was accepted).
fn refused<T>(result: Result<T, serde_json::Error>) -> String {
    match result {
        Ok(_) => panic!("a hostile document was accepted"),
        Err(e) => e.to_string(),
    }
}

/// The bytes allocated while `f` runs, in all: a bound on the most it
/// held at once.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let region = Region::new(GLOBAL);
    let out = f();
    let change = region.change();
    (
        out,
        change.bytes_allocated + change.bytes_reallocated.max(0) as usize,
    )
}

const MIB: usize = 1024 * 1024;

#[test]
fn a_ring_naming_too_many_points_is_refused_without_building_it() {
    // 36 bytes asking for ten million points (80 MB of hashes).
    let doc = r#"{"vnodes":10000000,"nodes":[[1,1]]}"#;
    let (result, peak) = peak_during(|| serde_json::from_str::<Ring<u32>>(doc));
    let err = refused(result);
    assert!(
        err.contains("ring points") && err.contains(&MAX_RING_POINTS.to_string()),
        "{err}"
    );
    assert!(peak < MIB, "{peak} bytes");
    // Many nodes, each small, adding up past the cap.
    let nodes: Vec<String> = (0..2000).map(|n| format!("[{n},10]")).collect();
    let doc = format!(r#"{{"vnodes":100,"nodes":[{}]}}"#, nodes.join(","));
    let (result, peak) = peak_during(|| serde_json::from_str::<Ring<u32>>(&doc));
    refused(result);
    assert!(peak < MIB, "{peak} bytes");
}

#[test]
fn a_ring_at_the_cap_still_loads_and_costs_what_it_holds() {
    let weight = MAX_RING_POINTS / 64;
    let doc = format!(r#"{{"vnodes":64,"nodes":[[1,{weight}]]}}"#);
    let (ring, peak) = peak_during(|| serde_json::from_str::<Ring<u32>>(&doc).unwrap());
    assert_eq!(ring.get(&"k"), Some(&1));
    // 2^20 points of 8 bytes and owners of 4, built once as a sorted run
    // and once merged: about 24 MiB allocated in all.
    assert!(peak < 48 * MIB, "{peak} bytes");
}

#[test]
fn a_maglev_table_too_large_is_refused() {
    // 4294967291 is the largest prime below 2^32: a 17 GB table.
    let doc = r#"{"table_size":4294967291,"nodes":[1,2,3]}"#;
    let (result, peak) = peak_during(|| serde_json::from_str::<Maglev<u32>>(doc));
    let err = refused(result);
    assert!(
        err.contains("maglev table") && err.contains(&MAX_MAGLEV_TABLE.to_string()),
        "{err}"
    );
    assert!(peak < MIB, "{peak} bytes");
    // A legitimate one loads.
    let doc = r#"{"table_size":65537,"nodes":[1,2,3]}"#;
    let maglev = serde_json::from_str::<Maglev<u32>>(doc).unwrap();
    assert!(maglev.get(&"k").is_some());
}

#[test]
fn a_multi_probe_with_too_many_probes_is_refused() {
    let doc = format!(r#"{{"probes":{},"nodes":[1,2]}}"#, u32::MAX);
    let err = refused(serde_json::from_str::<MultiProbe<u32>>(&doc));
    assert!(err.contains(&MAX_PROBES.to_string()), "{err}");
    let doc = r#"{"probes":21,"nodes":[1,2]}"#;
    assert!(serde_json::from_str::<MultiProbe<u32>>(doc).is_ok());
}

/// A hasher with only 16 outputs, so that points of different nodes
/// collide and the tie-breaking order is exercised.
#[derive(Debug, Clone, Copy, Default)]
struct Coarse;

impl quorate_consistent_hash::KeyHasher for Coarse {
    fn hash(&self, bytes: &[u8], seed: u64) -> u64 {
        quorate_consistent_hash::Xxh3.hash(bytes, seed) >> 60 << 60
    }
}

#[test]
fn a_deserialized_ring_is_the_ring_built_node_by_node() {
    for (vnodes, nodes) in [
        (3u32, vec![(5u32, 2u32), (1, 1), (9, 3), (2, 1)]),
        (1, (0..40).rev().map(|n| (n, 1 + n % 3)).collect()),
        (7, vec![(4, 1)]),
        (2, vec![]),
    ] {
        let mut built = Ring::<u32, Coarse>::with_hasher(vnodes, Coarse).unwrap();
        for (node, weight) in &nodes {
            built.add_weighted(*node, *weight).unwrap();
        }
        let doc = serde_json::to_string(&built).unwrap();
        let read: Ring<u32, Coarse> = serde_json::from_str(&doc).unwrap();
        // Members, points, owners and the point index, field by field.
        assert_eq!(format!("{read:?}"), format!("{built:?}"), "{doc}");
        let mut probes = MultiProbe::<u32, Coarse>::with_hasher(3, Coarse).unwrap();
        for (node, _) in &nodes {
            probes.add(*node).unwrap();
        }
        let doc = serde_json::to_string(&probes).unwrap();
        let read: MultiProbe<u32, Coarse> = serde_json::from_str(&doc).unwrap();
        assert_eq!(format!("{read:?}"), format!("{probes:?}"), "{doc}");
        for scale in [1.0, 0.5] {
            let mut hrw = Rendezvous::<u32, Coarse>::with_hasher(Coarse);
            for (node, weight) in &nodes {
                hrw.add_weighted(*node, 1.0 + scale * f64::from(*weight))
                    .unwrap();
            }
            let doc = serde_json::to_string(&hrw).unwrap();
            let read: Rendezvous<u32, Coarse> = serde_json::from_str(&doc).unwrap();
            assert_eq!(format!("{read:?}"), format!("{hrw:?}"), "{doc}");
        }
    }
    // The same refusals as adding node by node.
    for doc in [
        r#"{"vnodes":2,"nodes":[[1,1],[2,0]]}"#,
        r#"{"vnodes":2,"nodes":[[1,1],[2,1],[1,3]]}"#,
        r#"{"vnodes":0,"nodes":[[1,1]]}"#,
    ] {
        let owned: serde_json::Value = serde_json::from_str(doc).unwrap();
        let vnodes = owned["vnodes"].as_u64().unwrap() as u32;
        let expected = Ring::<u32>::new(vnodes).and_then(|mut ring| {
            for pair in owned["nodes"].as_array().unwrap() {
                let (n, w) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
                ring.add_weighted(n as u32, w as u32)?;
            }
            Ok(ring)
        });
        let err = refused(serde_json::from_str::<Ring<u32>>(doc));
        assert!(err.contains(&expected.unwrap_err().to_string()), "{err}");
    }
    let err = refused(serde_json::from_str::<MultiProbe<u32>>(
        r#"{"probes":2,"nodes":[3,4,3]}"#,
    ));
    let duplicate = quorate_consistent_hash::Error::DuplicateNode.to_string();
    assert!(err.contains(&duplicate), "{err}");
    let err = refused(serde_json::from_str::<Rendezvous<u32>>(
        r#"{"nodes":[[3,1.0],[4,2.0],[3,1.0]]}"#,
    ));
    assert!(err.contains(&duplicate), "{err}");
    let err = refused(serde_json::from_str::<Rendezvous<u32>>(
        r#"{"nodes":[[3,1.0],[4,-2.0],[3,1.0]]}"#,
    ));
    let invalid = Rendezvous::<u32>::new().add_weighted(4, -2.0).unwrap_err();
    assert!(err.contains(&invalid.to_string()), "{err}");
}

#[test]
fn a_ring_of_many_nodes_costs_what_it_holds_not_the_square() {
    // A thousand nodes of 100 points: 100,000 points, 1.2 MB of points and
    // owners. Built node by node the circle was rebuilt a thousand times
    // (about 1 GB allocated in all, and as many copies).
    let nodes: Vec<String> = (0..1000).map(|n| format!("[{n},1]")).collect();
    let doc = format!(r#"{{"vnodes":100,"nodes":[{}]}}"#, nodes.join(","));
    let (ring, peak) = peak_during(|| serde_json::from_str::<Ring<u32>>(&doc).unwrap());
    assert_eq!(ring.point_count(), 100_000);
    assert!(peak < 16 * MIB, "{peak} bytes");
    // Multi-probe rings hold one point per node: 100,000 nodes.
    let nodes: Vec<String> = (0..100_000).map(|n| n.to_string()).collect();
    let doc = format!(r#"{{"probes":21,"nodes":[{}]}}"#, nodes.join(","));
    let (probes, peak) = peak_during(|| serde_json::from_str::<MultiProbe<u32>>(&doc).unwrap());
    assert_eq!(probes.len(), 100_000);
    assert!(peak < 16 * MIB, "{peak} bytes");
}
