//! Consistent hashing on a ring of virtual nodes: the same key goes to the same server
//! while the server list stays, and a change moves only the keys it must.
//!
//! - Each server has `VIRTUAL_NODES × weight` points on the ring, hashed from its URL
//!   and the point's number, so its points do not depend on where it stands in the
//!   list. (When all servers' points would pass `MAX_POINTS`, every count is scaled
//!   down in proportion, at least one point each.)
//! - A key goes to the first point at or after its hash, clockwise (binary search). An
//!   ineligible server's points are walked past, so only its keys move (each to the
//!   next server on the ring, the one it would go to were the server removed) and they
//!   come back when it is eligible again. Removing one of N servers moves ≈ 1/N of the
//!   keys, all of them the removed server's; adding one moves ≈ 1/(N+1), all to it.
//! - Hashes are FNV-1a 64 with MurmurHash3's 64-bit finalizer: fixed, the same in every
//!   process and release (never `RandomState`), so every gateway instance agrees.
//! - The ring is built on the first pick that sees a server list and kept until a pick
//!   sees another (other servers, order or weights); picks meanwhile only read it.
//! - A request without the key (no such header or cookie, no client address) is sent
//!   round robin among the eligible servers, as `RoundRobin` would.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use arc_swap::ArcSwapOption;

use super::random::Bits;
use super::{Candidates, PickContext, Strategy};
use crate::balancer::Upstream;

/// Points on the ring per server and unit of weight.
const VIRTUAL_NODES: u32 = 160;
/// The most points a ring holds (12 bytes each: 3 MiB).
const MAX_POINTS: u64 = 1 << 18;

/// What a request is hashed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's IP address (the connection's peer; port ignored, an IPv4-mapped
    /// IPv6 address counts as the IPv4 one). Behind another proxy, hash its
    /// `X-Forwarded-For` header with `Header` instead.
    ClientIp,
    /// The first value of this request header, byte for byte.
    Header(http::HeaderName),
    /// The value of the first cookie of this name in the `Cookie` header(s).
    Cookie(String),
    /// The request path (without the query).
    Path,
}

pub struct ConsistentHash {
    key: HashKey,
    /// The ring of the server list last seen.
    ring: ArcSwapOption<Ring>,
    /// Held while a ring is built, so a list change builds it once, not once per pick.
    build: Mutex<()>,
    /// Round robin for requests without the key.
    turn: AtomicUsize,
}

impl ConsistentHash {
    pub fn new(key: HashKey) -> Self {
        Self {
            key,
            ring: ArcSwapOption::empty(),
            build: Mutex::new(()),
            turn: AtomicUsize::new(0),
        }
    }

    pub fn key(&self) -> &HashKey {
        &self.key
    }

    /// The hash of this request's key, if it has one.
    fn key_hash(&self, ctx: &PickContext<'_>) -> Option<u64> {
        match &self.key {
            HashKey::ClientIp => ctx.client.map(|addr| match addr.ip().to_canonical() {
                IpAddr::V4(ip) => stable_hash(&ip.octets()),
                IpAddr::V6(ip) => stable_hash(&ip.octets()),
            }),
            HashKey::Header(name) => ctx.headers.get(name).map(|v| stable_hash(v.as_bytes())),
            HashKey::Cookie(name) => cookie_value(ctx.headers, name).map(stable_hash),
            HashKey::Path => Some(stable_hash(ctx.path.as_bytes())),
        }
    }

    /// Round robin among the eligible, for requests without the key.
    fn without_key(&self, candidates: &Candidates<'_>) -> Option<usize> {
        let i = self.turn.fetch_add(1, Ordering::Relaxed) % candidates.len();
        if candidates.ok(i) {
            return Some(i);
        }
        candidates.first_ok_from(i + 1)
    }

    /// The ring for `servers`, built now if the one kept is for another list.
    fn rebuild(&self, servers: &[Arc<Upstream>]) -> Arc<Ring> {
        let _guard = self.build.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(ring) = self.ring.load_full().filter(|r| r.is_for(servers)) {
            return ring;
        }
        let ring = Arc::new(Ring::build(servers));
        self.ring.store(Some(ring.clone()));
        ring
    }
}

impl Strategy for ConsistentHash {
    fn pick(&self, candidates: &Candidates<'_>, ctx: &PickContext<'_>) -> Option<usize> {
        let servers = candidates.servers();
        if servers.is_empty() {
            return None;
        }
        let Some(hash) = self.key_hash(ctx) else {
            return self.without_key(candidates);
        };
        let kept = self.ring.load();
        if let Some(ring) = (*kept).as_ref().filter(|r| r.is_for(servers)) {
            return ring.lookup(hash, candidates);
        }
        drop(kept);
        self.rebuild(servers).lookup(hash, candidates)
    }

    fn name(&self) -> &'static str {
        "consistent_hash"
    }

    fn reads_headers(&self) -> bool {
        matches!(self.key, HashKey::Header(_) | HashKey::Cookie(_))
    }
}

struct Ring {
    /// The servers (and weights) the ring was built for, in list order. `Weak`, so the
    /// ring keeps no removed server alive, while its allocation (and so its address,
    /// which identifies it) is not reused as long as the ring exists.
    members: Vec<(Weak<Upstream>, u32)>,
    /// The points' hashes, ascending.
    hashes: Vec<u64>,
    /// The server index of each point.
    owners: Vec<u32>,
}

impl Ring {
    fn build(servers: &[Arc<Upstream>]) -> Self {
        let weights: Vec<u32> = servers.iter().map(|s| s.state.weight()).collect();
        let per_weight = u64::from(VIRTUAL_NODES);
        let wanted: u64 = weights.iter().map(|&w| u64::from(w) * per_weight).sum();
        let mut points: Vec<(u64, u32)> = Vec::with_capacity(wanted.min(MAX_POINTS) as usize);
        for (i, (server, &weight)) in servers.iter().zip(&weights).enumerate() {
            let mut count = u64::from(weight) * per_weight;
            if wanted > MAX_POINTS {
                count = (count * MAX_POINTS / wanted).max(1);
            }
            let base = fnv1a(FNV_OFFSET, server.url().as_bytes());
            for point in 0..count as u32 {
                let hash = fmix64(fnv1a(base, &point.to_le_bytes()));
                points.push((hash, i as u32));
            }
        }
        points.sort_unstable();
        Self {
            members: servers
                .iter()
                .zip(weights)
                .map(|(s, w)| (Arc::downgrade(s), w))
                .collect(),
            hashes: points.iter().map(|p| p.0).collect(),
            owners: points.iter().map(|p| p.1).collect(),
        }
    }

    /// Whether this ring was built for exactly these servers with these weights.
    fn is_for(&self, servers: &[Arc<Upstream>]) -> bool {
        self.members.len() == servers.len()
            && self
                .members
                .iter()
                .zip(servers)
                .all(|((member, weight), s)| {
                    Weak::as_ptr(member) == Arc::as_ptr(s) && *weight == s.state.weight()
                })
    }

    /// The first eligible server clockwise from `hash`.
    fn lookup(&self, hash: u64, candidates: &Candidates<'_>) -> Option<usize> {
        let len = self.hashes.len();
        let start = self.hashes.partition_point(|&h| h < hash);
        let n = candidates.len();
        // Servers found ineligible on this walk (made on the first one).
        let mut refused: Option<Bits> = None;
        let mut refused_count = 0;
        for step in 0..len {
            let mut p = start + step;
            if p >= len {
                p -= len;
            }
            let owner = self.owners[p] as usize;
            if refused.as_ref().is_some_and(|r| r.contains(owner)) {
                continue;
            }
            if candidates.ok(owner) {
                return Some(owner);
            }
            refused
                .get_or_insert_with(|| Bits::with_capacity(n))
                .insert(owner);
            refused_count += 1;
            if refused_count == n {
                return None;
            }
        }
        None
    }
}

/// The value of the first cookie named `name`: `Cookie` headers hold `name=value` pairs
/// separated by `;` (spaces around them ignored). The value is taken byte for byte
/// (quotes included).
fn cookie_value<'h>(headers: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64, continued from `hash` (`FNV_OFFSET` to start).
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// MurmurHash3's 64-bit finalizer: FNV's low-entropy high bits get mixed in everywhere.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The fixed hash of a key.
fn stable_hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(FNV_OFFSET, bytes))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::super::random::testing::{
        none_when_nothing_is_ok_and_one_server_works, servers, weighted,
    };
    use super::*;

    const KEYS: usize = 10_000;

    fn user_key() -> ConsistentHash {
        ConsistentHash::new(HashKey::Header(http::HeaderName::from_static("x-user")))
    }

    fn user(k: usize) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", format!("user-{k}").parse().unwrap());
        headers
    }

    fn ctx(headers: &http::HeaderMap) -> PickContext<'_> {
        super::super::random::testing::ctx(headers)
    }

    /// The URL each of `KEYS` users goes to, with the servers whose URL is in `down`
    /// ineligible.
    fn owners(s: &ConsistentHash, servers: &[Arc<Upstream>], down: &[&str]) -> Vec<String> {
        let available = |u: &Upstream| !down.contains(&u.url());
        let candidates = Candidates::new(servers, &[], &available);
        (0..KEYS)
            .map(|k| {
                let headers = user(k);
                let i = s.pick(&candidates, &ctx(&headers)).unwrap();
                servers[i].url().to_string()
            })
            .collect()
    }

    fn shares(owners: &[String]) -> HashMap<&str, f64> {
        let mut shares = HashMap::new();
        for url in owners {
            *shares.entry(url.as_str()).or_insert(0.0) += 1.0 / owners.len() as f64;
        }
        shares
    }

    fn moved(before: &[String], after: &[String]) -> Vec<usize> {
        (0..before.len())
            .filter(|&k| before[k] != after[k])
            .collect()
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a 64's published test vectors.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fmix64(0), 0);
        assert_eq!(stable_hash(b"user-1"), stable_hash(b"user-1"));
        assert_ne!(stable_hash(b"user-1"), stable_hash(b"user-2"));
    }

    #[test]
    fn the_same_key_goes_to_the_same_server_whatever_the_list_order() {
        let servers = servers(5);
        let first = owners(&user_key(), &servers, &[]);
        assert_eq!(owners(&user_key(), &servers, &[]), first);
        let reversed: Vec<_> = servers.iter().rev().cloned().collect();
        assert_eq!(owners(&user_key(), &reversed, &[]), first);
    }

    #[test]
    fn keys_spread_over_servers() {
        let servers = servers(5);
        let owners = owners(&user_key(), &servers, &[]);
        let shares = shares(&owners);
        assert_eq!(shares.len(), 5);
        for (url, share) in shares {
            assert!((share - 0.2).abs() < 0.05, "{url}: {share}");
        }
    }

    #[test]
    fn weights_give_more_points() {
        let servers = weighted(&[1, 1, 2]);
        let owners = owners(&user_key(), &servers, &[]);
        let shares = shares(&owners);
        for (i, want) in [(0, 0.25), (1, 0.25), (2, 0.5)] {
            let share = shares[servers[i].url()];
            assert!((share - want).abs() < 0.05, "server {i}: {share}");
        }
    }

    #[test]
    fn removing_a_server_moves_only_its_keys() {
        let s = user_key();
        let five = servers(5);
        let before = owners(&s, &five, &[]);
        let four: Vec<_> = five
            .iter()
            .filter(|u| u.url() != five[2].url())
            .cloned()
            .collect();
        let after = owners(&s, &four, &[]);
        let moved = moved(&before, &after);
        assert!(moved.iter().all(|&k| before[k] == five[2].url()));
        assert_eq!(
            moved.len(),
            before.iter().filter(|u| *u == five[2].url()).count()
        );
        let fraction = moved.len() as f64 / KEYS as f64;
        assert!((fraction - 0.2).abs() < 0.05, "{fraction}");
    }

    #[test]
    fn adding_a_server_moves_keys_only_to_it() {
        let s = user_key();
        let five = servers(5);
        let before = owners(&s, &five, &[]);
        // A new list with a sixth server in the middle (new Upstreams, same URLs).
        let six = servers(6);
        let six: Vec<_> = [&six[5], &six[0], &six[1], &six[2], &six[3], &six[4]]
            .into_iter()
            .cloned()
            .collect();
        let after = owners(&s, &six, &[]);
        let moved = moved(&before, &after);
        assert!(moved.iter().all(|&k| after[k] == six[0].url()));
        let fraction = moved.len() as f64 / KEYS as f64;
        assert!((fraction - 1.0 / 6.0).abs() < 0.05, "{fraction}");
    }

    #[test]
    fn an_ineligible_servers_keys_go_to_the_next_and_come_back() {
        let s = user_key();
        let five = servers(5);
        let down = five[3].url();
        let before = owners(&s, &five, &[]);
        let during = owners(&s, &five, &[down]);
        // Exactly where they would go were the server removed from the list.
        let four: Vec<_> = five.iter().filter(|u| u.url() != down).cloned().collect();
        assert_eq!(during, owners(&s, &four, &[]));
        let moved = moved(&before, &during);
        assert!(!moved.is_empty());
        assert!(moved.iter().all(|&k| before[k] == down));
        assert!(during.iter().all(|u| u != down));
        assert_eq!(owners(&s, &five, &[]), before);
    }

    #[test]
    fn an_excluded_server_is_walked_past_too() {
        let s = user_key();
        let three = servers(3);
        let all = |_: &Upstream| true;
        for k in 0..500 {
            let headers = user(k);
            let ctx = ctx(&headers);
            let first = s.pick(&Candidates::new(&three, &[], &all), &ctx).unwrap();
            let second = s
                .pick(&Candidates::new(&three, &[first], &all), &ctx)
                .unwrap();
            assert_ne!(first, second);
            let third = s
                .pick(&Candidates::new(&three, &[first, second], &all), &ctx)
                .unwrap();
            assert_eq!(first + second + third, 3);
        }
    }

    /// Varying only the key's source spreads requests; the same source (with all else
    /// changed) keeps its server.
    fn uses_its_key(
        key: HashKey,
        request: impl Fn(usize, usize) -> (http::HeaderMap, String, SocketAddr),
    ) {
        let s = ConsistentHash::new(key.clone());
        let servers = servers(4);
        let all = |_: &Upstream| true;
        let candidates = Candidates::new(&servers, &[], &all);
        let mut used = [false; 4];
        for k in 0..200 {
            let mut chosen = None;
            for other in 0..5 {
                let (headers, path, client) = request(k, other);
                let ctx = PickContext {
                    method: &http::Method::GET,
                    path: &path,
                    headers: &headers,
                    client: Some(client),
                };
                let i = s.pick(&candidates, &ctx).unwrap();
                assert!(chosen.is_none_or(|c| c == i), "{key:?}: key {k} moved");
                chosen = Some(i);
            }
            used[chosen.unwrap()] = true;
        }
        assert_eq!(used, [true; 4], "{key:?}");
    }

    #[test]
    fn each_kind_of_key_is_used() {
        let addr = |a: usize, port: usize| -> SocketAddr {
            format!("10.1.{}.{}:{}", a / 250, a % 250, 1000 + port)
                .parse()
                .unwrap()
        };
        let headers = |pairs: &[(&str, String)]| {
            let mut h = http::HeaderMap::new();
            for (name, value) in pairs {
                h.append(
                    http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            h
        };
        uses_its_key(HashKey::ClientIp, |k, o| {
            (
                headers(&[("x-user", format!("{o}"))]),
                format!("/{o}"),
                addr(k, o),
            )
        });
        uses_its_key(HashKey::Path, |k, o| {
            (
                headers(&[("x-user", format!("{o}"))]),
                format!("/p/{k}"),
                addr(o, o),
            )
        });
        uses_its_key(
            HashKey::Header(http::HeaderName::from_static("x-user")),
            |k, o| {
                (
                    headers(&[("x-user", format!("u{k}"))]),
                    format!("/{o}"),
                    addr(o, o),
                )
            },
        );
        uses_its_key(HashKey::Cookie("session".into()), |k, o| {
            let cookies = [
                ("cookie", format!("a={o}; session=s{k}; b=2")),
                ("cookie", format!("theme=dark{o}")),
            ];
            (headers(&cookies), format!("/{o}"), addr(o, o))
        });
    }

    #[test]
    fn the_ipv4_mapped_address_is_the_ipv4_one() {
        let s = ConsistentHash::new(HashKey::ClientIp);
        let headers = http::HeaderMap::new();
        let mut ctx = ctx(&headers);
        ctx.client = Some("192.0.2.7:1".parse().unwrap());
        assert_eq!(s.key_hash(&ctx), Some(stable_hash(&[192, 0, 2, 7])));
        ctx.client = Some("[::ffff:192.0.2.7]:2".parse().unwrap());
        assert_eq!(s.key_hash(&ctx), Some(stable_hash(&[192, 0, 2, 7])));
    }

    #[test]
    fn cookies_are_parsed_by_name() {
        let mut h = http::HeaderMap::new();
        assert_eq!(cookie_value(&h, "session"), None);
        h.append("cookie", "xsession=no; a=1".parse().unwrap());
        h.append("cookie", " session = yes ;session=second".parse().unwrap());
        assert_eq!(cookie_value(&h, "session"), Some(&b"yes"[..]));
        assert_eq!(cookie_value(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(&h, "xsession"), Some(&b"no"[..]));
        assert_eq!(cookie_value(&h, "sess"), None);
        let mut h = http::HeaderMap::new();
        h.insert("cookie", "flag; empty=; q=\"v\"".parse().unwrap());
        assert_eq!(cookie_value(&h, "flag"), None);
        assert_eq!(cookie_value(&h, "empty"), Some(&b""[..]));
        assert_eq!(cookie_value(&h, "q"), Some(&b"\"v\""[..]));
    }

    #[test]
    fn without_the_key_requests_go_round_robin_among_the_eligible() {
        let s = ConsistentHash::new(HashKey::Cookie("session".into()));
        let servers = servers(4);
        let headers = http::HeaderMap::new();
        let ctx = ctx(&headers);
        let available = |u: &Upstream| u.url() != servers[1].url();
        let candidates = Candidates::new(&servers, &[], &available);
        let picks: Vec<usize> = (0..8).map(|_| s.pick(&candidates, &ctx).unwrap()).collect();
        assert_eq!(picks, [0, 2, 2, 3, 0, 2, 2, 3]);
        let all = |_: &Upstream| true;
        let candidates = Candidates::new(&servers, &[], &all);
        let picks: Vec<usize> = (0..4).map(|_| s.pick(&candidates, &ctx).unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 3]);
    }

    #[test]
    fn the_ring_is_kept_until_the_list_or_a_weight_changes() {
        let s = user_key();
        let servers = servers(3);
        owners(&s, &servers, &[]);
        let ring = s.ring.load_full().unwrap();
        owners(&s, &servers, &[]);
        assert!(Arc::ptr_eq(&ring, &s.ring.load_full().unwrap()));
        // The same servers in a new list (another slice): still the same ring.
        let copy = servers.clone();
        owners(&s, &copy, &[]);
        assert!(Arc::ptr_eq(&ring, &s.ring.load_full().unwrap()));
        assert_eq!(ring.hashes.len(), 3 * VIRTUAL_NODES as usize);
        assert!(ring.hashes.windows(2).all(|w| w[0] <= w[1]));
        servers[0].state.weight.store(2, Ordering::Relaxed);
        owners(&s, &servers, &[]);
        let rebuilt = s.ring.load_full().unwrap();
        assert!(!Arc::ptr_eq(&ring, &rebuilt));
        assert_eq!(rebuilt.hashes.len(), 4 * VIRTUAL_NODES as usize);
    }

    #[test]
    fn huge_weights_are_scaled_to_the_point_cap() {
        let servers = weighted(&[u32::MAX, 1, u32::MAX / 2]);
        let ring = Ring::build(&servers);
        assert!(ring.hashes.len() as u64 <= MAX_POINTS);
        let count = |i: u32| ring.owners.iter().filter(|&&o| o == i).count();
        assert_eq!(count(1), 1);
        assert!(count(0).abs_diff(2 * count(2)) <= 2);
    }

    #[test]
    fn none_when_nothing_is_ok() {
        none_when_nothing_is_ok_and_one_server_works(&user_key());
        none_when_nothing_is_ok_and_one_server_works(&ConsistentHash::new(HashKey::Path));
        assert_eq!(user_key().name(), "consistent_hash");
        assert_eq!(
            user_key().key(),
            &HashKey::Header("x-user".parse().unwrap())
        );
    }
}
