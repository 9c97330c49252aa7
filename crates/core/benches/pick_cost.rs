//! What one pick costs with each built-in strategy: ns per pick, best of 5 runs of
//! 2,000,000 picks after a warm-up, one thread, through `&dyn Strategy` as the balancer
//! calls it. Servers have weights 1, 2, 3, 1, 2, 3, … (only `weighted` and
//! `consistent_hash`'s ring size read them); `consistent_hash` hashes the path, cycling
//! through 1,024 distinct paths.
//!
//! `cargo bench -p velithon-core --bench pick_cost`

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use velithon_core::balancer::{
    Candidates, ConsistentHash, HashKey, LeastConnections, PickContext, PowerOfTwoChoices, Random,
    RoundRobin, Strategy, Upstream, Weighted,
};

const PICKS: usize = 2_000_000;
const RUNS: usize = 5;
const PATHS: usize = 1024;

fn servers(n: usize) -> Vec<Arc<Upstream>> {
    (0..n)
        .map(|i| {
            let url = format!("http://10.0.0.{i}:8080");
            Arc::new(Upstream::parse_weighted(&url, (i % 3) as u32 + 1).expect("url"))
        })
        .collect()
}

/// Best ns per pick over `RUNS` runs, with the servers whose index is in `down`
/// ineligible.
fn ns_per_pick(strategy: &dyn Strategy, servers: &[Arc<Upstream>], down: &[usize]) -> f64 {
    let headers = http::HeaderMap::new();
    let client: SocketAddr = "192.0.2.1:40000".parse().expect("addr");
    let paths: Vec<String> = (0..PATHS).map(|i| format!("/api/items/{i}")).collect();
    let contexts: Vec<PickContext<'_>> = paths
        .iter()
        .map(|path| PickContext {
            method: &http::Method::GET,
            path,
            headers: &headers,
            client: Some(client),
        })
        .collect();
    let down: Vec<&Upstream> = down.iter().map(|&i| &*servers[i]).collect();
    let available = |s: &Upstream| !down.iter().any(|&d| std::ptr::eq(d, s));
    let candidates = Candidates::new(servers, &[], &available);
    let run = |picks: usize| {
        let start = Instant::now();
        for k in 0..picks {
            let ctx = &contexts[k % PATHS];
            black_box(strategy.pick(black_box(&candidates), ctx));
        }
        start.elapsed().as_nanos() as f64 / picks as f64
    };
    run(PICKS / 4);
    (0..RUNS).map(|_| run(PICKS)).fold(f64::INFINITY, f64::min)
}

fn main() {
    let strategies: Vec<Box<dyn Strategy>> = vec![
        Box::<RoundRobin>::default(),
        Box::new(Random::new()),
        Box::new(Weighted::new()),
        Box::new(LeastConnections::new()),
        Box::new(PowerOfTwoChoices::new()),
        Box::new(ConsistentHash::new(HashKey::Path)),
    ];
    for (title, down) in [("all eligible", &[][..]), ("server 1 ineligible", &[1][..])] {
        println!("{title}: best of {RUNS} runs of {PICKS} picks");
        println!("{:<18} {:>7} {:>8}", "strategy", "servers", "ns/pick");
        for strategy in &strategies {
            for n in [3, 16] {
                let servers = servers(n);
                let ns = ns_per_pick(strategy.as_ref(), &servers, down);
                println!("{:<18} {:>7} {:>8.1}", strategy.name(), n, ns);
            }
        }
        println!();
    }
}
