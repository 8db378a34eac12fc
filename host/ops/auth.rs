//! Logging in to a daemon without a password crossing the wire, and a
//! store that does not let its thief log in (after SCRAM, RFC 5802, with
//! argon2id as the key derivation).
//!
//! A user's password P and a random salt give `K = argon2id(P, salt)`;
//! `ClientKey = HMAC(K, "Client Key")`, `StoredKey = SHA-256(ClientKey)`,
//! `ServerKey = HMAC(K, "Server Key")`. The store keeps salt, parameters,
//! StoredKey and ServerKey ([`Verifier`]): enough to check a login, not to
//! make one (that needs ClientKey).
//!
//! The exchange (no I/O here: each side is a value fed the other's message):
//!
//! 1. client -> [`Hello`] (user, client nonce);
//! 2. daemon -> [`Challenge`] (server nonce, salt, parameters); for an
//!    unknown user a decoy salt derived from a key of the daemon, so that
//!    answers do not tell which users exist;
//! 3. client -> [`Proof`]: `ClientKey XOR HMAC(StoredKey, AuthMessage)`,
//!    where AuthMessage binds user, both nonces, salt and parameters;
//! 4. daemon: recovers ClientKey, checks `SHA-256(ClientKey) == StoredKey`,
//!    answers with `HMAC(ServerKey, AuthMessage)`, which the client checks
//!    (the daemon proves it holds the user's verifier: both ends prove who
//!    they are).
//!
//! Both ends then know ClientKey, which an eavesdropper does not: every
//! later frame is sealed with ChaCha20-Poly1305 under keys derived from it
//! and the AuthMessage ([`Session`]), one per direction, with counter
//! nonces (a replayed, reordered or altered frame does not open).
//!
//! Daemons prove themselves to each other the same way, as the principal
//! `@daemon` whose "password" is the store's 32-byte secret (derived with
//! HMAC, [`Kdf::Secret`], as it is not guessable); the bootstrap token logs
//! in as `@bootstrap` with a verifier like a user's.

use hmac::{Hmac, Mac};
use ring::aead::{self, LessSafeKey, UnboundKey, CHACHA20_POLY1305};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::roles::Role;

type HmacSha256 = Hmac<Sha256>;

/// How a login key is derived from what the user knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kdf", rename_all = "lowercase")]
pub enum Kdf {
    /// argon2id with memory (KiB), passes and lanes.
    Argon2id {
        /// Memory in KiB.
        m: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// HMAC-SHA-256 keyed by a random secret (daemons among themselves).
    Secret,
}

impl Kdf {
    /// The parameters for new users: 19 MiB, 2 passes, 1 lane (OWASP's
    /// recommended minimum for argon2id).
    pub const DEFAULT: Kdf = Kdf::Argon2id {
        m: 19 * 1024,
        t: 2,
        p: 1,
    };

    /// Parameters a client accepts from a daemon (a hostile daemon must not
    /// make it spend gigabytes).
    fn reasonable(&self) -> bool {
        match *self {
            Kdf::Argon2id { m, t, p } => (8..=256 * 1024).contains(&m) && (1..=10).contains(&t) && (1..=8).contains(&p),
            Kdf::Secret => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Kdf::Argon2id { m, t, p } => format!("argon2id,m={m},t={t},p={p}"),
            Kdf::Secret => "secret".into(),
        }
    }
}

/// Why a login failed, or a sealed frame did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The proof does not match the user's verifier (or there is no such
    /// user: the two are not told apart).
    #[error("wrong user or password")]
    WrongPassword,
    /// The daemon's signature does not match: it does not hold this user's
    /// verifier (an impostor, or a store that is not the cluster's).
    #[error("the daemon could not prove it knows this user (not the cluster's daemon?)")]
    BadServer,
    /// A handshake message is malformed (base64, lengths).
    #[error("malformed login message: {0}")]
    Malformed(&'static str),
    /// The daemon asked for key-derivation parameters out of bounds.
    #[error("the daemon asked for unreasonable key-derivation parameters ({0})")]
    Unreasonable(String),
    /// argon2 refused the parameters.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// A sealed frame did not open (altered, replayed, reordered or not ours).
    #[error("a sealed frame failed authentication")]
    Unsealed,
    /// No randomness from the OS.
    #[error("no randomness from the OS: {0}")]
    Random(String),
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn enc(b: &[u8]) -> String {
    use base64::Engine;
    b64().encode(b)
}

fn dec(s: &str, what: &'static str) -> Result<Vec<u8>, AuthError> {
    use base64::Engine;
    b64().decode(s).map_err(|_| AuthError::Malformed(what))
}

fn dec32(s: &str, what: &'static str) -> Result<[u8; 32], AuthError> {
    dec(s, what)?.try_into().map_err(|_| AuthError::Malformed(what))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Equality in time independent of where the arrays differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Random bytes.
///
/// # Errors
/// [`AuthError::Random`].
pub fn random<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| AuthError::Random(e.to_string()))?;
    Ok(b)
}

/// `K` from what the user knows.
///
/// # Errors
/// [`AuthError::Kdf`] when argon2 refuses the parameters.
pub fn derive(kdf: Kdf, secret: &[u8], salt: &[u8]) -> Result<[u8; 32], AuthError> {
    match kdf {
        Kdf::Secret => Ok(hmac(secret, &[b"luahost ops daemon", salt])),
        Kdf::Argon2id { m, t, p } => {
            let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| AuthError::Kdf(e.to_string()))?;
            let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = [0u8; 32];
            a.hash_password_into(secret, salt, &mut out)
                .map_err(|e| AuthError::Kdf(e.to_string()))?;
            Ok(out)
        }
    }
}

/// What the store keeps to check a login (no password, no ClientKey).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    /// The salt (base64).
    pub salt: String,
    /// The key derivation.
    #[serde(flatten)]
    pub kdf: Kdf,
    /// `SHA-256(ClientKey)` (base64).
    pub stored_key: String,
    /// `ServerKey` (base64).
    pub server_key: String,
}

impl Verifier {
    /// The verifier of `password` with a fresh salt.
    ///
    /// # Errors
    /// [`AuthError::Kdf`] or [`AuthError::Random`].
    pub fn new(password: &[u8], kdf: Kdf) -> Result<Verifier, AuthError> {
        let salt = random::<16>()?;
        Ok(Verifier::from_key(&salt, kdf, &derive(kdf, password, &salt)?))
    }

    /// The verifier of key `k` derived with `kdf` from `salt`.
    pub fn from_key(salt: &[u8], kdf: Kdf, k: &[u8; 32]) -> Verifier {
        let client_key = hmac(k, &[b"Client Key"]);
        Verifier {
            salt: enc(salt),
            kdf,
            stored_key: enc(&Sha256::digest(client_key)),
            server_key: enc(&hmac(k, &[b"Server Key"])),
        }
    }

    /// The `@daemon` verifier of the store's secret.
    pub fn for_secret(secret: &[u8; 32]) -> Verifier {
        let salt = b"daemon";
        Verifier::from_key(salt, Kdf::Secret, &hmac(secret, &[b"luahost ops daemon", salt]))
    }
}

/// Step 1, client -> daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Who logs in: a user name, `@daemon` or `@bootstrap`.
    pub user: String,
    /// 16 random bytes (base64).
    pub nonce: String,
}

/// Step 2, daemon -> client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// 16 random bytes of the daemon (base64).
    pub nonce: String,
    /// The user's salt (base64).
    pub salt: String,
    /// The user's key derivation.
    #[serde(flatten)]
    pub kdf: Kdf,
}

/// Step 3, client -> daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// `ClientKey XOR HMAC(StoredKey, AuthMessage)` (base64).
    pub proof: String,
}

/// Step 4, daemon -> client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "lowercase")]
pub enum Verdict {
    /// Logged in.
    Welcome {
        /// `HMAC(ServerKey, AuthMessage)` (base64).
        signature: String,
        /// The user's role (none for `@daemon` and `@bootstrap`).
        role: Option<Role>,
    },
    /// Not logged in, and why.
    Refused {
        /// Said to the user.
        reason: String,
    },
}

fn auth_message(user: &str, cnonce: &str, ch: &Challenge) -> Vec<u8> {
    format!(
        "luahost-ops-1|{}|{user}|{cnonce}|{}|{}|{}",
        user.len(),
        ch.nonce,
        ch.salt,
        ch.kdf.describe()
    )
    .into_bytes()
}

/// The daemon's side after sending its challenge.
#[derive(Debug)]
pub struct ServerAuth {
    auth_msg: Vec<u8>,
    /// None: a decoy (unknown user), every proof fails.
    verifier: Option<Verifier>,
}

/// A login the daemon accepted.
#[derive(Debug)]
pub struct Accepted {
    /// Goes back in [`Verdict::Welcome`].
    pub signature: String,
    /// The sealed session, daemon side.
    pub session: Session,
}

/// The daemon's answer to a [`Hello`]: `verifier` is the user's (None when
/// unknown: a decoy salt derived with `decoy_key` keeps the answer the
/// same as for a real user).
///
/// # Errors
/// [`AuthError::Random`].
pub fn challenge(
    hello: &Hello,
    verifier: Option<Verifier>,
    decoy_key: &[u8; 32],
) -> Result<(Challenge, ServerAuth), AuthError> {
    let (salt, kdf) = match &verifier {
        Some(v) => (v.salt.clone(), v.kdf),
        None => (
            enc(&hmac(decoy_key, &[b"decoy salt", hello.user.as_bytes()])[..16]),
            Kdf::DEFAULT,
        ),
    };
    let ch = Challenge {
        nonce: enc(&random::<16>()?),
        salt,
        kdf,
    };
    let auth_msg = auth_message(&hello.user, &hello.nonce, &ch);
    Ok((ch, ServerAuth { auth_msg, verifier }))
}

impl ServerAuth {
    /// Checks the client's proof.
    ///
    /// # Errors
    /// [`AuthError::WrongPassword`] (also for an unknown user), or
    /// [`AuthError::Malformed`].
    pub fn verify(self, proof: &Proof) -> Result<Accepted, AuthError> {
        let p = dec32(&proof.proof, "proof")?;
        let Some(v) = self.verifier else {
            return Err(AuthError::WrongPassword);
        };
        let stored = dec32(&v.stored_key, "stored key")?;
        let server_key = dec32(&v.server_key, "server key")?;
        let sig = hmac(&stored, &[&self.auth_msg]);
        let mut client_key = [0u8; 32];
        for i in 0..32 {
            client_key[i] = p[i] ^ sig[i];
        }
        let check: [u8; 32] = Sha256::digest(client_key).into();
        if !same(&check, &stored) {
            return Err(AuthError::WrongPassword);
        }
        Ok(Accepted {
            signature: enc(&hmac(&server_key, &[&self.auth_msg])),
            session: Session::new(&client_key, &self.auth_msg, false),
        })
    }
}

/// The client's side of a login.
#[derive(Debug)]
pub struct ClientAuth {
    user: String,
    nonce: String,
}

/// The client after sending its proof.
#[derive(Debug)]
pub struct ClientPending {
    auth_msg: Vec<u8>,
    client_key: [u8; 32],
    server_key: [u8; 32],
}

impl ClientAuth {
    /// Starts a login as `user`.
    ///
    /// # Errors
    /// [`AuthError::Random`].
    pub fn new(user: &str) -> Result<(ClientAuth, Hello), AuthError> {
        let nonce = enc(&random::<16>()?);
        let hello = Hello {
            user: user.to_string(),
            nonce: nonce.clone(),
        };
        Ok((
            ClientAuth {
                user: user.to_string(),
                nonce,
            },
            hello,
        ))
    }

    /// The proof for `ch`, knowing `secret` (the password, token or
    /// daemons' secret).
    ///
    /// # Errors
    /// [`AuthError::Unreasonable`], [`AuthError::Malformed`] or [`AuthError::Kdf`].
    pub fn answer(self, ch: &Challenge, secret: &[u8]) -> Result<(Proof, ClientPending), AuthError> {
        if !ch.kdf.reasonable() {
            return Err(AuthError::Unreasonable(ch.kdf.describe()));
        }
        let salt = dec(&ch.salt, "salt")?;
        dec(&ch.nonce, "nonce")?;
        let k = derive(ch.kdf, secret, &salt)?;
        let client_key = hmac(&k, &[b"Client Key"]);
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        let auth_msg = auth_message(&self.user, &self.nonce, ch);
        let sig = hmac(&stored, &[&auth_msg]);
        let mut p = [0u8; 32];
        for i in 0..32 {
            p[i] = client_key[i] ^ sig[i];
        }
        Ok((
            Proof { proof: enc(&p) },
            ClientPending {
                auth_msg,
                client_key,
                server_key: hmac(&k, &[b"Server Key"]),
            },
        ))
    }
}

impl ClientPending {
    /// Checks the daemon's signature from [`Verdict::Welcome`].
    ///
    /// # Errors
    /// [`AuthError::BadServer`] or [`AuthError::Malformed`].
    pub fn finish(self, signature: &str) -> Result<Session, AuthError> {
        let got = dec32(signature, "signature")?;
        let want = hmac(&self.server_key, &[&self.auth_msg]);
        if !same(&got, &want) {
            return Err(AuthError::BadServer);
        }
        Ok(Session::new(&self.client_key, &self.auth_msg, true))
    }
}

/// One direction's key and next nonce.
struct Half {
    key: LessSafeKey,
    counter: u64,
}

impl Half {
    fn new(k: &[u8; 32]) -> Half {
        Half {
            key: LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, k).expect("a 32-byte key")),
            counter: 0,
        }
    }

    fn nonce(&mut self) -> aead::Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        aead::Nonce::assume_unique_for_key(n)
    }
}

/// A logged-in connection's sealing: frames out are sealed, frames in
/// opened, each direction with its own key and counter.
pub struct Session {
    out: Half,
    inn: Half,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session(out #{}, in #{})", self.out.counter, self.inn.counter)
    }
}

impl Session {
    fn new(client_key: &[u8; 32], auth_msg: &[u8], client: bool) -> Session {
        let base = hmac(client_key, &[b"luahost ops session", auth_msg]);
        let c2s = hmac(&base, &[b"client to daemon"]);
        let s2c = hmac(&base, &[b"daemon to client"]);
        let (o, i) = if client { (c2s, s2c) } else { (s2c, c2s) };
        Session {
            out: Half::new(&o),
            inn: Half::new(&i),
        }
    }

    /// Seals `plain` as the next frame out.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut buf = plain.to_vec();
        let nonce = self.out.nonce();
        self.out
            .key
            .seal_in_place_append_tag(nonce, aead::Aad::empty(), &mut buf)
            .expect("ChaCha20-Poly1305 seals any length we send");
        buf
    }

    /// Opens the next frame in.
    ///
    /// # Errors
    /// [`AuthError::Unsealed`].
    pub fn open(&mut self, sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        let mut buf = sealed.to_vec();
        let nonce = self.inn.nonce();
        let n = self
            .inn
            .key
            .open_in_place(nonce, aead::Aad::empty(), &mut buf)
            .map_err(|_| AuthError::Unsealed)?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters: these tests are about the exchange, not argon2.
    const FAST: Kdf = Kdf::Argon2id { m: 64, t: 1, p: 1 };

    fn login(v: Option<Verifier>, user: &str, pw: &[u8]) -> Result<(Session, Session), AuthError> {
        let (c, hello) = ClientAuth::new(user)?;
        let (ch, s) = challenge(&hello, v, &[7; 32])?;
        let (proof, pending) = c.answer(&ch, pw)?;
        let acc = s.verify(&proof)?;
        let client = pending.finish(&acc.signature)?;
        Ok((client, acc.session))
    }

    #[test]
    fn the_right_password_logs_in_and_seals() {
        let v = Verifier::new(b"hunter22", FAST).unwrap();
        let (mut c, mut s) = login(Some(v), "alice", b"hunter22").unwrap();
        let f = c.seal(b"list world");
        assert!(
            !f.windows(10).any(|w| w == b"list world"),
            "sealed frames are not clear text"
        );
        assert_eq!(s.open(&f).unwrap(), b"list world");
        let back = s.seal(b"ok");
        assert_eq!(c.open(&back).unwrap(), b"ok");
    }

    #[test]
    fn a_wrong_password_or_unknown_user_is_refused_alike() {
        let v = Verifier::new(b"hunter22", FAST).unwrap();
        assert_eq!(
            login(Some(v), "alice", b"hunter23").unwrap_err(),
            AuthError::WrongPassword
        );
        assert_eq!(
            login(None, "mallory", b"anything").unwrap_err(),
            AuthError::WrongPassword
        );
        // the decoy looks like a real user's challenge, the same each time
        let (_, h) = ClientAuth::new("mallory").unwrap();
        let (a, _) = challenge(&h, None, &[7; 32]).unwrap();
        let (b, _) = challenge(&h, None, &[7; 32]).unwrap();
        assert_eq!(a.salt, b.salt);
        assert_eq!(a.kdf, Kdf::DEFAULT);
    }

    #[test]
    fn the_stored_verifier_does_not_log_in() {
        // a thief of the store has StoredKey and ServerKey: using StoredKey
        // as if it were ClientKey gives a proof the daemon refuses
        let v = Verifier::new(b"pw", FAST).unwrap();
        let (c, hello) = ClientAuth::new("alice").unwrap();
        let (ch, s) = challenge(&hello, Some(v.clone()), &[7; 32]).unwrap();
        let stored = dec32(&v.stored_key, "").unwrap();
        let sig = hmac(&stored, &[&auth_message("alice", &hello.nonce, &ch)]);
        let mut p = [0u8; 32];
        for i in 0..32 {
            p[i] = stored[i] ^ sig[i];
        }
        drop(c);
        assert_eq!(
            s.verify(&Proof { proof: enc(&p) }).unwrap_err(),
            AuthError::WrongPassword
        );
    }

    #[test]
    fn an_impostor_daemon_is_caught() {
        let real = Verifier::new(b"pw", FAST).unwrap();
        let fake = Verifier::from_key(&dec(&real.salt, "").unwrap(), FAST, &[9; 32]);
        let (c, hello) = ClientAuth::new("alice").unwrap();
        let (ch, _) = challenge(&hello, Some(real.clone()), &[7; 32]).unwrap();
        let (_proof, pending) = c.answer(&ch, b"pw").unwrap();
        // the impostor cannot sign with the real ServerKey
        let msg = auth_message("alice", &hello.nonce, &ch);
        let forged = enc(&hmac(&dec32(&fake.server_key, "").unwrap(), &[&msg]));
        assert_eq!(pending.finish(&forged).unwrap_err(), AuthError::BadServer);
    }

    #[test]
    fn daemons_log_in_with_the_secret() {
        let v = Verifier::for_secret(&[3; 32]);
        assert!(login(Some(v.clone()), "@daemon", &[3; 32]).is_ok());
        assert_eq!(
            login(Some(v), "@daemon", &[4; 32]).unwrap_err(),
            AuthError::WrongPassword
        );
    }

    #[test]
    fn unreasonable_parameters_are_refused_by_the_client() {
        let (c, _) = ClientAuth::new("alice").unwrap();
        let ch = Challenge {
            nonce: enc(&[1; 16]),
            salt: enc(&[2; 16]),
            kdf: Kdf::Argon2id {
                m: 4 * 1024 * 1024,
                t: 1,
                p: 1,
            },
        };
        assert!(matches!(c.answer(&ch, b"pw").unwrap_err(), AuthError::Unreasonable(_)));
    }

    #[test]
    fn altered_replayed_or_reordered_frames_do_not_open() {
        let v = Verifier::new(b"pw", FAST).unwrap();
        let (mut c, mut s) = login(Some(v), "alice", b"pw").unwrap();
        let a = c.seal(b"one");
        let b = c.seal(b"two");
        let mut bad = a.clone();
        bad[0] ^= 1;
        assert_eq!(s.open(&bad).unwrap_err(), AuthError::Unsealed);
        // a failed open still used up the nonce: the session is broken, as it should be
        let (mut c, mut s) = login(Some(Verifier::new(b"pw", FAST).unwrap()), "alice", b"pw").unwrap();
        let a2 = c.seal(b"one");
        let b2 = c.seal(b"two");
        assert_eq!(s.open(&b2).unwrap_err(), AuthError::Unsealed, "reordered");
        drop((a, b, a2));
        // a frame of one direction does not open in the other
        let (mut c, mut s) = login(Some(Verifier::new(b"pw", FAST).unwrap()), "alice", b"pw").unwrap();
        let f = c.seal(b"x");
        assert_eq!(c.open(&f).unwrap_err(), AuthError::Unsealed);
        assert_eq!(s.open(&f).unwrap(), b"x");
        assert_eq!(s.open(&f).unwrap_err(), AuthError::Unsealed, "replayed");
    }

    #[test]
    fn the_default_parameters_work() {
        let v = Verifier::new(b"pw", Kdf::DEFAULT).unwrap();
        assert!(login(Some(v), "alice", b"pw").is_ok());
    }
}
