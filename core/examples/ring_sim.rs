//! Ring balance at scale: how evenly deterministic virtual-node tokens spread replicas over
//! 10 to 1,000 nodes, and how much one node added or removed moves.
//!
//!     cargo run --release -p pairdb-core --example ring_sim [-- VNODES RF]
//!
//! Prints, per cluster size: the largest and smallest node's replicated share over the mean, and
//! the replicas moved by adding one node and by removing one, as a multiple of the ideal 1/N.

use pairdb_core::balance::{movement, ownership, spread};
use pairdb_core::ring::Ring;

fn main() {
    let mut args = std::env::args().skip(1);
    let vnodes: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let rf: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    println!("{vnodes} vnodes per node, RF {rf}, tokens from node ids alone\n");
    println!(
        "| nodes | max/mean | min/mean | add one: moved (× 1/N) | to old nodes | remove one: moved (× 1/N) |"
    );
    println!("|---|---|---|---|---|---|");
    for n in [10usize, 30, 100, 300, 1000] {
        let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        let ring = Ring::new(&ids, vnodes);
        let (max, min) = spread(&ownership(&ring, rf));
        let mut grown = ids.clone();
        grown.push(format!("node-{n}"));
        let added = movement(&ring, &Ring::new(&grown, vnodes), rf);
        let shrunk = Ring::new(&ids[1..], vnodes);
        let removed = movement(&ring, &shrunk, rf);
        println!(
            "| {n} | {max:.3} | {min:.3} | {:.4} ({:.2}×) | {:.4} | {:.4} ({:.2}×) |",
            added.moved,
            added.moved * (n + 1) as f64,
            added.to_old_nodes,
            removed.moved,
            removed.moved * n as f64,
        );
    }
}
