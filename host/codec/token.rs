//! Login tokens (`docs/protocol.md`, "Tokens"): bearer credentials a node
//! of the cluster issues for an account and a Gate checks without a round
//! trip. No I/O and no clock here: the nonce and the time are arguments.
//!
//! A token is `v1.<payload>.<mac>`:
//!
//! - `payload`: base64url without padding of the MessagePack array
//!   `[account, expiry_unix_secs, nonce]` (`account` a string, the expiry an
//!   unsigned integer, `nonce` 8 random bytes as bin);
//! - `mac`: base64url without padding of HMAC-SHA256 over the payload *text*
//!   (the base64url characters), keyed by the [`TokenKey`]:
//!   HMAC-SHA256(cluster secret, `"luahost gate token v1"`), so the secret
//!   itself keys nothing that travels.
//!
//! A token is good for its account until its expiry: [`check`] accepts it
//! while `now < expiry`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::codec::mpack::{self, Reader};

/// The label the token key is derived with.
const KEY_LABEL: &[u8] = b"luahost gate token v1";
/// What every token starts with.
const PREFIX: &str = "v1.";
/// Length of the nonce, in bytes.
pub const NONCE_LEN: usize = 8;

/// The key tokens are signed with, derived from the cluster secret.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// The key of a cluster: HMAC-SHA256(secret, "luahost gate token v1").
    pub fn from_secret(secret: &str) -> TokenKey {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
        m.update(KEY_LABEL);
        TokenKey(m.finalize().into_bytes().into())
    }

    /// An HMAC over `payload` keyed by this key, not finalized.
    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        m.update(payload);
        m
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format (prefix, parts, base64url, MessagePack).
    #[error("malformed token")]
    Malformed,
    /// The MAC does not match: forged, altered, or made with another
    /// cluster's secret.
    #[error("bad token signature")]
    BadSignature,
    /// A good token, but for another account.
    #[error("token for another account")]
    WrongAccount,
    /// A good token, past its expiry.
    #[error("token expired")]
    Expired,
}

/// A token for `account`, good until `expiry_unix` (seconds since the Unix
/// epoch; `now < expiry_unix`), with 8 fresh random bytes as `nonce`.
pub fn make(key: &TokenKey, account: &str, expiry_unix: u64, nonce: [u8; NONCE_LEN]) -> String {
    let mut p = BytesMut::new();
    mpack::put_array_len(&mut p, 3);
    mpack::put_str(&mut p, account.as_bytes());
    mpack::put_uint(&mut p, expiry_unix);
    mpack::put_bin(&mut p, &nonce);
    let payload = URL_SAFE_NO_PAD.encode(&p);
    let mac = key.mac(payload.as_bytes()).finalize().into_bytes();
    format!("{PREFIX}{payload}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// Checks `token` for `account` at `now_unix` (seconds since the Unix epoch)
/// and returns its expiry. The MAC is checked first, in constant time;
/// nothing of an unsigned payload is decoded.
///
/// # Errors
///
/// [`TokenError`]: the first of malformed, bad signature, wrong account,
/// expired that applies.
pub fn check(key: &TokenKey, token: &str, account: &str, now_unix: u64) -> Result<u64, TokenError> {
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (payload, mac) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() || mac.contains('.') {
        return Err(TokenError::Malformed);
    }
    let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Malformed)?;
    key.mac(payload.as_bytes())
        .verify_slice(&mac)
        .map_err(|_| TokenError::BadSignature)?;
    let raw = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let (who, expiry) = decode_payload(&raw).ok_or(TokenError::Malformed)?;
    if who != account.as_bytes() {
        return Err(TokenError::WrongAccount);
    }
    if now_unix >= expiry {
        return Err(TokenError::Expired);
    }
    Ok(expiry)
}

/// The account and expiry of a payload, if it has the exact form.
fn decode_payload(raw: &[u8]) -> Option<(&[u8], u64)> {
    let mut r = Reader::new(raw);
    if r.read_array_len().ok()? != 3 {
        return None;
    }
    let account = r.read_str().ok()?;
    let expiry = r.read_u64().ok()?;
    if r.read_bin().ok()?.len() != NONCE_LEN {
        return None;
    }
    r.finish().ok()?;
    Some((account, expiry))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;

    fn key() -> TokenKey {
        TokenKey::from_secret("s3cret")
    }

    /// The token's payload and mac, decoded.
    fn parts(t: &str) -> (Vec<u8>, Vec<u8>) {
        let (p, m) = t.strip_prefix("v1.").unwrap().split_once('.').unwrap();
        (URL_SAFE_NO_PAD.decode(p).unwrap(), URL_SAFE_NO_PAD.decode(m).unwrap())
    }

    /// A token with `payload` and `mac` as given.
    fn assemble(payload: &[u8], mac: &[u8]) -> String {
        format!("v1.{}.{}", URL_SAFE_NO_PAD.encode(payload), URL_SAFE_NO_PAD.encode(mac))
    }

    /// A token with `payload`, correctly signed by `key`.
    fn signed(key: &TokenKey, payload: &[u8]) -> String {
        let p = URL_SAFE_NO_PAD.encode(payload);
        let m = key.mac(p.as_bytes()).finalize().into_bytes();
        format!("v1.{p}.{}", URL_SAFE_NO_PAD.encode(m))
    }

    #[test]
    fn a_token_checks_for_its_account_until_its_expiry() {
        let t = make(&key(), "alice", NOW + 60, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(t.starts_with("v1."));
        assert!(!t.contains('='), "no padding");
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'));
        assert_eq!(check(&key(), &t, "alice", NOW), Ok(NOW + 60));
        assert_eq!(check(&key(), &t, "alice", 0), Ok(NOW + 60));
        let (payload, mac) = parts(&t);
        assert_eq!(mac.len(), 32);
        let mut r = Reader::new(&payload);
        assert_eq!(r.read_array_len().unwrap(), 3);
        assert_eq!(r.read_str().unwrap(), b"alice");
        assert_eq!(r.read_u64().unwrap(), NOW + 60);
        assert_eq!(r.read_bin().unwrap(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        r.finish().unwrap();
        // what the Lua side (rmp_serde, any MessagePack library) reads
        let (account, expiry): (String, u64) = {
            let v: (String, u64, serde::de::IgnoredAny) = rmp_serde::from_slice(&payload).unwrap();
            (v.0, v.1)
        };
        assert_eq!((account.as_str(), expiry), ("alice", NOW + 60));
        // another nonce, another token
        assert_ne!(make(&key(), "alice", NOW + 60, [0; 8]), t);
    }

    #[test]
    fn expiry_is_exclusive() {
        let t = make(&key(), "alice", NOW, [0; 8]);
        assert_eq!(check(&key(), &t, "alice", NOW - 1), Ok(NOW));
        assert_eq!(check(&key(), &t, "alice", NOW), Err(TokenError::Expired));
        assert_eq!(check(&key(), &t, "alice", NOW + 1), Err(TokenError::Expired));
        assert_eq!(check(&key(), &t, "alice", u64::MAX), Err(TokenError::Expired));
        let t = make(&key(), "alice", u64::MAX, [0; 8]);
        assert_eq!(check(&key(), &t, "alice", u64::MAX - 1), Ok(u64::MAX));
        let t = make(&key(), "alice", 0, [0; 8]);
        assert_eq!(check(&key(), &t, "alice", 0), Err(TokenError::Expired));
    }

    #[test]
    fn another_account_is_refused() {
        let t = make(&key(), "alice", NOW + 60, [0; 8]);
        assert_eq!(check(&key(), &t, "bob", NOW), Err(TokenError::WrongAccount));
        assert_eq!(check(&key(), &t, "alicex", NOW), Err(TokenError::WrongAccount));
        assert_eq!(check(&key(), &t, "Alice", NOW), Err(TokenError::WrongAccount));
        assert_eq!(check(&key(), &t, "", NOW), Err(TokenError::WrongAccount));
        // an expired token for another account says wrong account first
        assert_eq!(check(&key(), &t, "bob", u64::MAX), Err(TokenError::WrongAccount));
        let t = make(&key(), "ünï", NOW + 60, [0; 8]);
        assert_eq!(check(&key(), &t, "ünï", NOW), Ok(NOW + 60));
    }

    #[test]
    fn an_altered_payload_or_mac_is_refused() {
        let t = make(&key(), "alice", NOW + 60, [9; 8]);
        let (payload, mac) = parts(&t);
        // every bit of the payload matters
        for i in 0..payload.len() {
            for bit in 0..8 {
                let mut p = payload.clone();
                p[i] ^= 1 << bit;
                assert_eq!(
                    check(&key(), &assemble(&p, &mac), "alice", NOW),
                    Err(TokenError::BadSignature),
                    "byte {i} bit {bit}"
                );
            }
        }
        // a longer expiry, signed with the old mac
        let mut p = BytesMut::new();
        mpack::put_array_len(&mut p, 3);
        mpack::put_str(&mut p, b"alice");
        mpack::put_uint(&mut p, u64::MAX);
        mpack::put_bin(&mut p, &[9; 8]);
        assert_eq!(
            check(&key(), &assemble(&p, &mac), "alice", NOW),
            Err(TokenError::BadSignature)
        );
        // every bit of the mac matters, and its length
        for i in 0..mac.len() {
            let mut m = mac.clone();
            m[i] ^= 0x80;
            assert_eq!(
                check(&key(), &assemble(&payload, &m), "alice", NOW),
                Err(TokenError::BadSignature)
            );
        }
        assert_eq!(
            check(&key(), &assemble(&payload, &mac[..31]), "alice", NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            check(&key(), &assemble(&payload, &[]), "alice", NOW),
            Err(TokenError::BadSignature)
        );
        let mut long = mac.clone();
        long.push(0);
        assert_eq!(
            check(&key(), &assemble(&payload, &long), "alice", NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn another_key_is_refused() {
        let t = make(&key(), "alice", NOW + 60, [0; 8]);
        for other in ["s3cret ", "S3cret", "", "another secret"] {
            assert_eq!(
                check(&TokenKey::from_secret(other), &t, "alice", NOW),
                Err(TokenError::BadSignature),
                "{other:?}"
            );
        }
        // the key is derived: the secret itself as the HMAC key does not sign
        let mut k = [0u8; 32];
        k[..6].copy_from_slice(b"s3cret");
        let raw = TokenKey(k);
        assert_eq!(check(&raw, &t, "alice", NOW), Err(TokenError::BadSignature));
        assert_eq!(format!("{:?}", key()), "TokenKey(..)", "the key is not printed");
    }

    #[test]
    fn signed_payloads_of_another_shape_are_malformed() {
        let k = key();
        let bad: Vec<Vec<u8>> = vec![
            vec![],
            vec![0xc0],
            // [account, expiry] without the nonce
            vec![0x92, 0xa1, b'a', 0x01],
            // a nonce of 7 bytes
            vec![0x93, 0xa1, b'a', 0x01, 0xc4, 7, 0, 0, 0, 0, 0, 0, 0],
            // the account as bin
            vec![0x93, 0xc4, 1, b'a', 0x01, 0xc4, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            // a negative expiry
            vec![0x93, 0xa1, b'a', 0xff, 0xc4, 8, 0, 0, 0, 0, 0, 0, 0, 0],
            // a trailing byte
            vec![0x93, 0xa1, b'a', 0x01, 0xc4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0xc0],
        ];
        for p in bad {
            assert_eq!(
                check(&k, &signed(&k, &p), "a", 0),
                Err(TokenError::Malformed),
                "{p:02x?}"
            );
        }
        let good = vec![0x93, 0xa1, b'a', 0x01, 0xc4, 8, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(check(&k, &signed(&k, &good), "a", 0), Ok(1));
    }

    #[test]
    fn garbage_is_malformed_or_unsigned() {
        let k = key();
        let good = make(&k, "alice", NOW + 60, [0; 8]);
        let (p, m) = good.strip_prefix("v1.").unwrap().split_once('.').unwrap();
        let cases = [
            String::new(),
            "v1".into(),
            "v1.".into(),
            "v1..".into(),
            "v2.a.b".into(),
            format!("v2.{p}.{m}"),
            format!("V1.{p}.{m}"),
            format!(" v1.{p}.{m}"),
            format!("v1.{p}"),
            format!("v1.{p}.{m}.x"),
            format!("v1.{p}.{m}."),
            format!("v1.{p}.{m}="),
            format!("v1.{p}.{m}=="),
            format!("v1.{p}.{m}!"),
            format!("v1..{m}"),
            "v1.!!!.???".into(),
            "v1.\u{e9}\u{e9}.\u{e9}".into(),
            "x".repeat(5000),
        ];
        for c in &cases {
            let e = check(&k, c, "alice", NOW).unwrap_err();
            assert!(
                matches!(e, TokenError::Malformed | TokenError::BadSignature),
                "{c:?}: {e:?}"
            );
        }
        // with the real mac, the payload in standard base64 (padding,
        // '+', '/') is another text: refused
        let padded = format!("v1.{p}==.{m}");
        assert!(check(&k, &padded, "alice", NOW).is_err());
        // random strings never panic
        let mut x: u64 = 7;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let mut s = String::from("v1.");
            for _ in 0..next() % 90 {
                s.push(['A', 'Z', 'a', 'z', '0', '9', '-', '_', '.', '+', '/', '=', '\u{e9}'][(next() % 13) as usize]);
            }
            assert!(check(&k, &s, "alice", NOW).is_err());
        }
    }
}
