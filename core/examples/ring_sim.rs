//! Ring balance at scale: how evenly virtual-node tokens spread replicas over 10 to 1,000
//! nodes, and how much one node added or removed moves — with tokens derived from node ids
//! alone (random), and with the tokens pairdb allocates to joining nodes (`Ring::allocate`:
//! each token the best of 16 candidates at taking load from the nodes above their share).
//!
//!     cargo run --release -p pairdb-core --example ring_sim [-- VNODES RF]
//!
//! Prints, per cluster size: the largest and smallest node's replicated share over the mean, and
//! the replicas moved by adding one node and by removing one, as a multiple of the ideal 1/N.

use std::collections::BTreeMap;

use pairdb_core::balance::{movement, ownership, spread};
use pairdb_core::ring::Ring;

fn row(n: usize, ring: &Ring, grown: &Ring, shrunk: &Ring, rf: usize) {
    let (max, min) = spread(&ownership(ring, rf));
    let added = movement(ring, grown, rf);
    let removed = movement(ring, shrunk, rf);
    println!(
        "| {n} | {max:.3} | {min:.3} | {:.4} ({:.2}×) | {:.4} | {:.4} ({:.2}×) |",
        added.moved,
        added.moved * (n + 1) as f64,
        added.to_old_nodes,
        removed.moved,
        removed.moved * n as f64,
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let vnodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rf: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let sizes = [10usize, 30, 100, 300, 1000];
    let header = "| nodes | max/mean | min/mean | add one: moved (× 1/N) | to old nodes | remove one: moved (× 1/N) |\n|---|---|---|---|---|---|";

    println!(
        "{vnodes} vnodes per node, RF {rf}\n\nTokens from node ids alone (random):\n\n{header}"
    );
    for n in sizes {
        let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        let ring = Ring::new(&ids, vnodes);
        let mut grown = ids.clone();
        grown.push(format!("node-{n}"));
        row(
            n,
            &ring,
            &Ring::new(&grown, vnodes),
            &Ring::new(&ids[1..], vnodes),
            rf,
        );
    }

    println!(
        "\nAllocated (3 initial nodes from their ids, every later one allocated as it joins; the one removed is the last to join):\n\n{header}"
    );
    let mut ids: Vec<String> = (0..3).map(|i| format!("node-{i}")).collect();
    let mut assigned: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let largest = sizes.iter().copied().max().unwrap_or(0);
    for n in 3..=largest {
        if sizes.contains(&n) {
            let ring = Ring::with_tokens(&ids, vnodes, &assigned);
            let next = format!("node-{n}");
            let mut grown_assigned = assigned.clone();
            grown_assigned.insert(next.clone(), ring.allocate(&next, vnodes, rf));
            let mut grown = ids.clone();
            grown.push(next);
            let grown = Ring::with_tokens(&grown, vnodes, &grown_assigned);
            let shrunk = Ring::with_tokens(&ids[..n - 1], vnodes, &assigned);
            row(n, &ring, &grown, &shrunk, rf);
        }
        let ring = Ring::with_tokens(&ids, vnodes, &assigned);
        let next = format!("node-{n}");
        assigned.insert(next.clone(), ring.allocate(&next, vnodes, rf));
        ids.push(next);
    }
}
