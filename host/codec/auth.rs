//! Mutual authentication of two nodes without the cluster secret ever
//! crossing the wire; no I/O here.
//!
//! Each side of a node-to-node connection sends who it is (name, sid, type,
//! RPC digest, incarnation) and a fresh random nonce. Each side then proves
//! that it knows the cluster secret with an HMAC-SHA256, keyed by the secret,
//! over the whole transcript: both identities and both nonces. The two proofs
//! carry different labels, so one side's proof can never be replayed as the
//! other's, and fresh nonces on both sides mean a recorded proof is worth
//! nothing on another connection. A party without the secret learns nothing
//! that helps it, and cannot make either side accept it.
//!
//! The exchange (see [`crate::codec::proto`] for the envelopes):
//!
//! ```text
//! connecting A                                  accepting B
//!   hello(A identity, nonce_a)            ->
//!                                         <-    challenge(B identity, nonce_b, proof_b)
//!   checks proof_b (refuses B if wrong)
//!   proof(proof_a)                        ->
//!                                               checks proof_a, digest
//!                                         <-    verify-ok | verify-failed(reason)
//! ```

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a nonce in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of a proof (an HMAC-SHA256) in bytes.
pub const PROOF_LEN: usize = 32;

const LABEL_ACCEPTING: &[u8] = b"luahost/1 accepting side";
const LABEL_CONNECTING: &[u8] = b"luahost/1 connecting side";

/// What one side of a handshake says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Node name.
    pub name: String,
    /// Server id.
    pub sid: u32,
    /// Server type name.
    pub stype: String,
    /// `rpcdef.Digi` of the node.
    pub digest: u32,
    /// Random number chosen when the node's process started: tells a
    /// restarted node from the one that was there before.
    pub incarnation: u64,
    /// Fresh random bytes for this handshake.
    pub nonce: [u8; NONCE_LEN],
}

/// A fresh random nonce.
///
/// # Panics
///
/// If the operating system has no random source (getrandom fails), which no
/// supported system does.
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).expect("the OS random source failed");
    n
}

/// An incarnation number for this process (never 0): the wall clock in
/// milliseconds above 20 random bits, so that a later start of a node has a
/// higher number (Routers tell a restart from a stale announcement by it,
/// `rpc::relay::RouterMembership`) and two starts in one millisecond still
/// differ.
pub fn incarnation() -> u64 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the OS random source failed");
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    ((ms << 20) | (u32::from_le_bytes(b) as u64 & 0xf_ffff)).max(1)
}

fn put_field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u32).to_be_bytes());
    mac.update(bytes);
}

fn put_identity(mac: &mut Hmac<Sha256>, id: &Identity) {
    put_field(mac, id.name.as_bytes());
    put_field(mac, &id.sid.to_be_bytes());
    put_field(mac, id.stype.as_bytes());
    put_field(mac, &id.digest.to_be_bytes());
    put_field(mac, &id.incarnation.to_be_bytes());
    put_field(mac, &id.nonce);
}

fn mac(secret: &[u8], label: &[u8], connecting: &Identity, accepting: &Identity) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    put_field(&mut m, label);
    put_identity(&mut m, connecting);
    put_identity(&mut m, accepting);
    m
}

/// Which side of the connection made a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The node that dialed.
    Connecting,
    /// The node that accepted.
    Accepting,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Connecting => LABEL_CONNECTING,
            Side::Accepting => LABEL_ACCEPTING,
        }
    }
}

/// The proof `side` sends: HMAC-SHA256(secret, label(side) | connecting | accepting).
pub fn prove(secret: &[u8], side: Side, connecting: &Identity, accepting: &Identity) -> [u8; PROOF_LEN] {
    mac(secret, side.label(), connecting, accepting)
        .finalize()
        .into_bytes()
        .into()
}

/// Checks a proof made by `side` (in constant time).
pub fn check(secret: &[u8], side: Side, connecting: &Identity, accepting: &Identity, proof: &[u8]) -> bool {
    mac(secret, side.label(), connecting, accepting)
        .verify_slice(proof)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, sid: u32) -> Identity {
        Identity {
            name: name.into(),
            sid,
            stype: "Hall".into(),
            digest: 0xabcd,
            incarnation: 7,
            nonce: nonce(),
        }
    }

    #[test]
    fn a_proof_checks_only_with_the_same_secret_side_and_transcript() {
        let (a, b) = (id("hall_1", 1), id("hall_2", 2));
        let p = prove(b"s3cret", Side::Accepting, &a, &b);
        assert!(check(b"s3cret", Side::Accepting, &a, &b, &p));
        assert!(!check(b"other", Side::Accepting, &a, &b, &p), "wrong secret");
        assert!(
            !check(b"s3cret", Side::Connecting, &a, &b, &p),
            "reflected as the other side's proof"
        );
        assert!(!check(b"s3cret", Side::Accepting, &b, &a, &p), "roles swapped");
        assert!(!check(b"s3cret", Side::Accepting, &a, &b, &p[..31]), "truncated");
        for field in 0..6 {
            let mut b2 = b.clone();
            match field {
                0 => b2.name.push('x'),
                1 => b2.sid += 1,
                2 => b2.stype.push('x'),
                3 => b2.digest ^= 1,
                4 => b2.incarnation += 1,
                _ => b2.nonce[0] ^= 1,
            }
            assert!(
                !check(b"s3cret", Side::Accepting, &a, &b2, &p),
                "field {field} not bound"
            );
        }
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        let mut a = id("ab", 1);
        let b = id("c", 2);
        let p = prove(b"k", Side::Connecting, &a, &b);
        a.name = "a".into();
        a.stype = format!("b{}", a.stype);
        assert!(!check(b"k", Side::Connecting, &a, &b, &p));
    }

    #[test]
    fn nonces_and_incarnations_are_fresh() {
        assert_ne!(nonce(), nonce());
        assert_ne!(incarnation(), incarnation());
        assert_ne!(incarnation(), 0);
    }
}
