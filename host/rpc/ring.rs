//! Consistent-hash rings that `router.route` uses to pick a server by key.
//!
//! Each live server of a type owns [`VNODES`] points on a 64-bit circle; a key
//! goes to the first point at or after its hash. When a server comes or goes
//! only the keys that land on its points move, which is what keeps players on
//! the same Hall while other Halls restart.

use std::collections::{BTreeMap, BTreeSet};

/// Points per server on the ring.
pub const VNODES: u32 = 160;

/// SplitMix64 finaliser: a fast, well-mixed 64-bit hash of an integer.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a, 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// FNV-1a, 32-bit (used for the schema digests).
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A routing key: Lua integers and strings are both accepted (`luahost.core`
/// passes a string as `Int(fnv1a64(s))`, which routes exactly as `Bytes(s)`).
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    /// An integer key such as a role id.
    Int(i64),
    /// A string key such as an account name.
    #[allow(dead_code)] // see the type's doc
    Bytes(&'a [u8]),
}

impl Key<'_> {
    fn hash(&self) -> u64 {
        match self {
            Key::Int(i) => mix64(*i as u64),
            Key::Bytes(b) => mix64(fnv1a64(b)),
        }
    }
}

/// One ring over a set of server ids.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// A ring over `servers`.
    pub fn new(servers: impl IntoIterator<Item = u32>) -> Self {
        let mut points = Vec::new();
        for sid in servers {
            for r in 0..VNODES {
                points.push((mix64(((sid as u64) << 32) | r as u64), sid));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The server that owns `key`, or `None` on an empty ring.
    pub fn route(&self, key: Key<'_>) -> Option<u32> {
        if self.points.is_empty() {
            return None;
        }
        let h = key.hash();
        let i = self.points.partition_point(|(p, _)| *p < h);
        Some(self.points[i % self.points.len()].1)
    }
}

/// The live servers of every type, with one ring per type.
#[derive(Debug, Default)]
pub struct Rings {
    live: BTreeMap<u32, BTreeSet<u32>>,
    rings: BTreeMap<u32, Ring>,
}

impl Rings {
    /// Marks `sid` of type `stype` live; returns false if it already was.
    pub fn add(&mut self, stype: u32, sid: u32) -> bool {
        let set = self.live.entry(stype).or_default();
        if !set.insert(sid) {
            return false;
        }
        self.rings.insert(stype, Ring::new(set.iter().copied()));
        true
    }

    /// Marks `sid` of type `stype` gone; returns false if it was not live.
    pub fn remove(&mut self, stype: u32, sid: u32) -> bool {
        let Some(set) = self.live.get_mut(&stype) else {
            return false;
        };
        if !set.remove(&sid) {
            return false;
        }
        self.rings.insert(stype, Ring::new(set.iter().copied()));
        true
    }

    /// The live server of `stype` that owns `key`.
    pub fn route(&self, stype: u32, key: Key<'_>) -> Option<u32> {
        self.rings.get(&stype).and_then(|r| r.route(key))
    }

    /// Live servers of `stype`, in id order.
    pub fn list(&self, stype: u32) -> Vec<u32> {
        self.live
            .get(&stype)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every live server, in (type, id) order.
    pub fn all(&self) -> Vec<u32> {
        self.live.values().flat_map(|s| s.iter().copied()).collect()
    }

    /// True when `sid` of `stype` is live.
    pub fn is_live(&self, stype: u32, sid: u32) -> bool {
        self.live.get(&stype).is_some_and(|s| s.contains(&sid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(ring: &Ring, n: i64) -> Vec<u32> {
        (0..n).map(|k| ring.route(Key::Int(k)).unwrap()).collect()
    }

    #[test]
    fn only_the_changed_servers_keys_move() {
        let before = Ring::new([1, 2, 3, 4]);
        let after_remove = Ring::new([1, 2, 4]);
        let after_add = Ring::new([1, 2, 3, 4, 5]);
        let a = assign(&before, 20_000);
        let r = assign(&after_remove, 20_000);
        let d = assign(&after_add, 20_000);
        for k in 0..a.len() {
            if a[k] != 3 {
                assert_eq!(a[k], r[k], "key {k} moved although its server stayed");
            }
            if d[k] != 5 {
                assert_eq!(a[k], d[k], "key {k} moved to an old server");
            }
        }
        // The balance is fair enough: each of 4 servers holds 15%..35% of keys.
        for s in 1..=4 {
            let share = a.iter().filter(|x| **x == s).count() as f64 / a.len() as f64;
            assert!((0.15..0.35).contains(&share), "server {s} share {share}");
        }
        // The new server takes a fair share.
        let moved = d.iter().filter(|x| **x == 5).count() as f64 / d.len() as f64;
        assert!((0.1..0.3).contains(&moved), "new server share {moved}");
    }

    #[test]
    fn string_keys_and_empty_ring() {
        let ring = Ring::new([7]);
        assert_eq!(ring.route(Key::Bytes(b"alice")), Some(7));
        assert_eq!(Ring::new([]).route(Key::Int(1)), None);
        let mut rings = Rings::default();
        assert!(rings.add(4, 41));
        assert!(!rings.add(4, 41));
        assert!(rings.add(4, 42));
        assert_eq!(rings.list(4), vec![41, 42]);
        assert!(rings.remove(4, 41));
        assert_eq!(rings.route(4, Key::Int(99)), Some(42));
        assert_eq!(rings.route(5, Key::Int(99)), None);
    }
}
