//! DPoP (RFC 9449): the proofs of possession that bind a client's tokens to its key. A client
//! sends, with each token request and each use of a DPoP-bound access token, a `DPoP` header: a
//! JWT (`typ: dpop+jwt`) signed by its private key, its public key in the header (`jwk`), naming
//! the request (`htm`, `htu`), when it was made (`iat`), a unique id (`jti`), the access token it
//! goes with (`ath`) and, when the server asks for them, the server's nonce.
//!
//! [`Dpop::check`] checks one proof against its request as §4.3 lists it and answers the key's
//! thumbprint (RFC 7638), which tokens carry as `cnf.jkt`. Proofs are remembered by `jti` for as
//! long as they would be accepted ([`PROOF_AGE_MAX_S`] after their `iat`), in a cache of at most
//! [`REPLAY_LEN_MAX`] proofs: a proof is accepted once. The algorithms are ES256 (P-256, what
//! WebCrypto, Android Keystore and the Secure Enclave make) and EdDSA (Ed25519).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};

use hmac::{Hmac, Mac as _};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::auth::crypto::{b64, ct_eq, sha256, unb64};

/// The proof algorithms accepted (`dpop_signing_alg_values_supported`).
pub const DPOP_ALGS: [&str; 2] = ["ES256", "EdDSA"];
/// A proof is accepted until this long after its `iat`, and remembered as long.
pub const PROOF_AGE_MAX_S: i64 = 60;
/// A proof is accepted from this long before its `iat`: clients' clocks may run a little ahead.
pub const PROOF_AHEAD_MAX_S: i64 = 5;
/// Most proofs remembered at once (about 40 MB at most). Beyond, proofs are refused as busy until
/// older ones age out: a proof that cannot be remembered is never accepted.
pub const REPLAY_LEN_MAX: usize = 1 << 20;
/// The longest proof read.
pub const PROOF_BYTES_MAX: usize = 4096;
/// The longest `jti` accepted.
const JTI_CHARS_MAX: usize = 256;
/// A server nonce is made per period of this many seconds and accepted in its period and the
/// next: for 60 to 120 s.
pub const NONCE_PERIOD_S: i64 = 60;

/// Why a proof is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// Not a valid proof for this request: missing, malformed, badly signed, of another method,
    /// URL or access token, too old or too new, or used before.
    #[error("{0}")]
    Invalid(&'static str),
    /// A valid proof without the server's current nonce (the answer carries one, RFC 9449 §8).
    #[error("{0}")]
    NonceRequired(&'static str),
    /// [`REPLAY_LEN_MAX`] proofs are remembered: refused until older ones age out.
    #[error("too many proofs in flight; retry in a few seconds")]
    Busy,
}

/// What a checked proof proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proof {
    /// The JWK SHA-256 thumbprint of its key (RFC 7638), base64url: what tokens are bound to.
    pub jkt: String,
    /// The SHA-256 of its URL and `jti`: what says it was seen.
    pub seen_key: [u8; 32],
    /// Until when it would be accepted (seconds since the epoch): how long it must be
    /// remembered.
    pub accepted_until_s: i64,
}

/// The request a proof must name.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Its method.
    pub method: &'a str,
    /// Its URL as the client reaches it: the server's public base (the issuer) and the path.
    pub url: &'a str,
    /// The access token sent with it, if any: the proof must carry its hash (`ath`).
    pub access_token: Option<&'a str>,
}

/// The proof checker: the replay cache, and the server's nonces when they are required.
#[derive(Debug)]
pub struct Dpop {
    replay: Mutex<Replay>,
    nonces: Option<Nonces>,
}

impl Dpop {
    /// A checker; with `nonce_secret`, proofs must carry a nonce made with it (RFC 9449 §8).
    pub fn new(nonce_secret: Option<[u8; 32]>) -> Self {
        Self { replay: Mutex::new(Replay::default()), nonces: nonce_secret.map(|secret| Nonces { secret }) }
    }

    /// The nonce to hand out at `now_s`, when nonces are required.
    pub fn nonce(&self, now_s: i64) -> Option<String> {
        self.nonces.as_ref().map(|n| n.make(n.period(now_s)))
    }

    /// Checks the one proof `proof` (the `DPoP` header's value) for `target` at `now_s`, and
    /// remembers it. Cheap checks first; the signature before the proof is remembered, so that
    /// forgeries cannot fill the cache.
    pub fn check(&self, proof: &str, target: Target<'_>, now_s: i64) -> Result<Proof, ProofError> {
        let parsed = Parsed::parse(proof)?;
        let c = &parsed.claims;
        if c.htm != target.method {
            return Err(ProofError::Invalid("the proof names another method (htm)"));
        }
        let htu = normalized_url(&c.htu).ok_or(ProofError::Invalid("the proof's htu is not an http(s) URL"))?;
        if Some(&htu) != normalized_url(target.url).as_ref() {
            return Err(ProofError::Invalid("the proof names another URL (htu)"));
        }
        if c.iat < now_s - PROOF_AGE_MAX_S || c.iat > now_s + PROOF_AHEAD_MAX_S {
            return Err(ProofError::Invalid("the proof is too old or from the future (iat)"));
        }
        match (target.access_token, c.ath.as_deref()) {
            (Some(token), Some(ath)) if ct_eq(ath.as_bytes(), b64(&sha256(token.as_bytes())).as_bytes()) => {}
            (Some(_), _) => return Err(ProofError::Invalid("the proof is for another access token (ath)")),
            (None, _) => {}
        }
        if let Some(nonces) = &self.nonces
            && !c.nonce.as_deref().is_some_and(|n| nonces.accepts(n, now_s))
        {
            return Err(ProofError::NonceRequired("the proof must carry the server's current nonce"));
        }
        parsed.verify_signature()?;
        let seen_key = sha256(format!("{htu}\n{}", c.jti).as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&seen_key[..16]);
        self.replay.lock().unwrap_or_else(PoisonError::into_inner).remember(c.iat, key, now_s)?;
        Ok(Proof { jkt: parsed.key.thumbprint(), seen_key, accepted_until_s: c.iat + PROOF_AGE_MAX_S })
    }

    /// Proofs remembered now (for tests and metrics).
    pub fn remembered(&self) -> usize {
        self.replay.lock().unwrap_or_else(PoisonError::into_inner).len
    }
}

/// Proofs seen, by the second of their `iat`: whole seconds age out at once.
#[derive(Debug, Default)]
struct Replay {
    by_second: BTreeMap<i64, HashSet<[u8; 16]>>,
    len: usize,
}

impl Replay {
    /// Remembers the proof `key` of `iat`; refuses one seen before, or any while full.
    fn remember(&mut self, iat: i64, key: [u8; 16], now_s: i64) -> Result<(), ProofError> {
        while let Some(entry) = self.by_second.first_entry() {
            if *entry.key() >= now_s - PROOF_AGE_MAX_S {
                break;
            }
            self.len -= entry.remove().len();
        }
        if self.by_second.get(&iat).is_some_and(|s| s.contains(&key)) {
            return Err(ProofError::Invalid("the proof was used before (jti)"));
        }
        if self.len >= REPLAY_LEN_MAX {
            metrics::counter!("bp_dpop_replay_cache_full_total").increment(1);
            return Err(ProofError::Busy);
        }
        self.by_second.entry(iat).or_default().insert(key);
        self.len += 1;
        Ok(())
    }
}

/// Server nonces: the period's number and a MAC of it, so that any server with the secret (every
/// replica shares the signing key it is derived from) accepts them without storing them.
struct Nonces {
    secret: [u8; 32],
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").finish_non_exhaustive()
    }
}

impl Nonces {
    fn period(&self, now_s: i64) -> i64 {
        now_s.div_euclid(NONCE_PERIOD_S)
    }

    fn mac(&self, period: i64) -> [u8; 16] {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!("any key length"));
        mac.update(b"bp-dpop-nonce-v1");
        mac.update(&period.to_be_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&mac.finalize().into_bytes()[..16]);
        out
    }

    fn make(&self, period: i64) -> String {
        let mut bytes = period.to_be_bytes().to_vec();
        bytes.extend_from_slice(&self.mac(period));
        b64(&bytes)
    }

    fn accepts(&self, nonce: &str, now_s: i64) -> bool {
        let Some(bytes) = unb64(nonce).filter(|b| b.len() == 24) else { return false };
        let mut period = [0u8; 8];
        period.copy_from_slice(&bytes[..8]);
        let period = i64::from_be_bytes(period);
        let current = self.period(now_s);
        (period == current || period == current - 1) && ct_eq(&bytes[8..], &self.mac(period))
    }
}

/// A proof's claims (RFC 9449 §4.2).
#[derive(Debug, Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

/// A proof's public key. The signature is checked by `ring` (already in the tree for TLS), whose
/// P-256 arithmetic is hand-optimized: the portable `p256` crate took about 0.3 ms of CPU per
/// check, which held a DPoP client's requests to a fifth of a bearer client's
/// (docs/benchmarks.md).
#[derive(Debug)]
enum PublicKey {
    /// ES256: the SEC1 uncompressed point (0x04, x, y), a valid point of P-256.
    P256 { x: [u8; 32], y: [u8; 32], sec1: [u8; 65] },
    /// EdDSA.
    Ed25519 { x: [u8; 32] },
}

impl PublicKey {
    /// The key of a JWK header of algorithm `alg`: public members only, of the algorithm's key
    /// type, a valid point.
    fn from_jwk(jwk: &Map<String, Value>, alg: &str) -> Result<Self, ProofError> {
        const PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];
        if PRIVATE.iter().any(|m| jwk.contains_key(*m)) {
            return Err(ProofError::Invalid("the proof's jwk holds a private key"));
        }
        let text = |name: &str| jwk.get(name).and_then(Value::as_str);
        let coordinate = |name: &str| -> Result<[u8; 32], ProofError> {
            text(name)
                .and_then(unb64)
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or(ProofError::Invalid("the proof's jwk is malformed"))
        };
        let bad_key = ProofError::Invalid("the proof's jwk is not a key of its alg");
        match (alg, text("kty"), text("crv")) {
            ("ES256", Some("EC"), Some("P-256")) => {
                let (x, y) = (coordinate("x")?, coordinate("y")?);
                // Checked to be a point of the curve here (ring checks it again when it verifies),
                // so that a key that is none is refused as such.
                let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                p256::PublicKey::from_sec1_bytes(point.as_bytes()).map_err(|_| bad_key)?;
                let mut sec1 = [0u8; 65];
                sec1.copy_from_slice(point.as_bytes());
                Ok(Self::P256 { x, y, sec1 })
            }
            ("EdDSA", Some("OKP"), Some("Ed25519")) => {
                let x = coordinate("x")?;
                ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| bad_key)?;
                Ok(Self::Ed25519 { x })
            }
            _ => Err(bad_key),
        }
    }

    /// The JWK SHA-256 thumbprint (RFC 7638): the required members in lexicographic order,
    /// without whitespace.
    fn thumbprint(&self) -> String {
        let canonical = match self {
            Self::P256 { x, y, .. } => format!(r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#, b64(x), b64(y)),
            Self::Ed25519 { x, .. } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64(x)),
        };
        b64(&sha256(canonical.as_bytes()))
    }

    fn verify(&self, signed: &[u8], signature: &[u8]) -> bool {
        use ring::signature::{ECDSA_P256_SHA256_FIXED, ED25519, UnparsedPublicKey};
        match self {
            // JWS's ES256 signature is r‖s, 64 bytes: ring's "fixed" encoding.
            Self::P256 { sec1, .. } => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, sec1).verify(signed, signature).is_ok()
            }
            Self::Ed25519 { x } => UnparsedPublicKey::new(&ED25519, x).verify(signed, signature).is_ok(),
        }
    }
}

/// A proof taken apart, its signature not yet checked.
#[derive(Debug)]
struct Parsed<'a> {
    signed: &'a str,
    signature: Vec<u8>,
    key: PublicKey,
    claims: Claims,
}

impl<'a> Parsed<'a> {
    fn parse(proof: &'a str) -> Result<Self, ProofError> {
        let malformed = ProofError::Invalid("the DPoP proof is not a JWT");
        if proof.len() > PROOF_BYTES_MAX {
            return Err(ProofError::Invalid("the DPoP proof is too long"));
        }
        let (signed, signature) = proof.rsplit_once('.').ok_or(malformed.clone())?;
        let (header, payload) = signed.split_once('.').ok_or(malformed.clone())?;
        let json = |part: &str| unb64(part).and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let header = json(header).and_then(|v| v.as_object().cloned()).ok_or(malformed.clone())?;
        if !header.get("typ").and_then(Value::as_str).is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt")) {
            return Err(ProofError::Invalid("the proof's typ is not dpop+jwt"));
        }
        if header.contains_key("crit") {
            return Err(ProofError::Invalid("the proof has critical header parameters this server does not know"));
        }
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
        if !DPOP_ALGS.contains(&alg) {
            return Err(ProofError::Invalid("the proof's alg is not one of ES256, EdDSA"));
        }
        let jwk = header.get("jwk").and_then(Value::as_object).ok_or(ProofError::Invalid("the proof has no jwk"))?;
        let key = PublicKey::from_jwk(jwk, alg)?;
        let claims: Claims = json(payload)
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or(ProofError::Invalid("the proof lacks a claim (jti, htm, htu, iat) or has a malformed one"))?;
        if claims.jti.is_empty() || claims.jti.chars().count() > JTI_CHARS_MAX {
            return Err(ProofError::Invalid("the proof's jti is empty or too long"));
        }
        let signature = unb64(signature).ok_or(malformed)?;
        Ok(Self { signed, signature, key, claims })
    }

    fn verify_signature(&self) -> Result<(), ProofError> {
        if self.key.verify(self.signed.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err(ProofError::Invalid("the proof's signature does not verify with its jwk"))
        }
    }
}

/// `uri` without query and fragment, normalized as RFC 9449 §4.3 asks (RFC 3986 §6.2.2 and
/// §6.2.3): scheme and host in lower case, no default port, dot segments removed, an empty path
/// as `/`, percent-encoded unreserved characters decoded and other escapes in upper case. `None`
/// unless an http(s) URL without user information.
pub fn normalized_url(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
        return None;
    }
    let mut out = url.origin().ascii_serialization();
    let path = url.path().as_bytes();
    let mut i = 0;
    while i < path.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (path[i], path.get(i + 1).copied().and_then(hex), path.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                let byte = u8::try_from(hi * 16 + lo).unwrap_or(0);
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(char::from(byte));
                } else {
                    out.push_str(&format!("%{byte:02X}"));
                }
                i += 3;
            }
            (b, _, _) => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_after_normalization() {
        let n = |u: &str| normalized_url(u);
        assert_eq!(n("HTTP://Bank.Example:80/v1/./accounts?x=1#f"), n("http://bank.example/v1/accounts"));
        assert_eq!(n("https://bank.example:443"), n("https://bank.example/"));
        assert_eq!(n("http://127.0.0.1:8080/v1/%61ccounts"), n("http://127.0.0.1:8080/v1/accounts"));
        assert_eq!(n("http://h/a%2fb"), n("http://h/a%2Fb"));
        assert_ne!(n("http://h/a%2Fb"), n("http://h/a/b"));
        assert_ne!(n("http://h:8080/x"), n("http://h:8081/x"));
        assert_ne!(n("https://h/x"), n("http://h/x"));
        assert_eq!(n("ftp://h/x"), None);
        assert_eq!(n("http://user:pw@h/x"), None);
    }

    #[test]
    fn rfc_7638_thumbprint_of_an_ec_key() {
        // RFC 7638 has an RSA example only: this P-256 key was made by openssl, its thumbprint
        // computed with Python's hashlib over the canonical JSON (members sorted, no spaces).
        let jwk: Map<String, Value> = serde_json::from_str(
            r#"{"y":"z-24CPOyEOhw6GOY0texho7lHYmzyoMCEHaDWA3iHtk","kty":"EC","x":"XCTAVOKE8VufnWjTT4I3B8G42sR5LkDPSGs-hiJgD5I","crv":"P-256"}"#,
        )
        .expect("json");
        let key = PublicKey::from_jwk(&jwk, "ES256").expect("a P-256 key");
        assert_eq!(key.thumbprint(), "-8iA6s9YbMTqrEC4DcmskoofrHJ7eZUVuNaqLRtBsZc");
        let mut private = jwk.clone();
        private.insert("d".to_owned(), Value::from("AAAA"));
        assert!(PublicKey::from_jwk(&private, "ES256").is_err(), "a private key is refused");
        assert!(PublicKey::from_jwk(&jwk, "EdDSA").is_err(), "a key of another alg");
    }

    #[test]
    fn nonces_last_their_period_and_the_next() {
        let nonces = Nonces { secret: [7; 32] };
        let at = 1_800_000_000;
        let n = nonces.make(nonces.period(at));
        assert!(nonces.accepts(&n, at));
        assert!(nonces.accepts(&n, at + NONCE_PERIOD_S));
        assert!(!nonces.accepts(&n, at + 2 * NONCE_PERIOD_S));
        assert!(!nonces.accepts(&n, at - NONCE_PERIOD_S), "not before it was made");
        assert!(!Nonces { secret: [8; 32] }.accepts(&n, at), "another server's secret");
        assert!(!nonces.accepts("AAAA", at));
    }

    #[test]
    fn the_replay_cache_forgets_whole_seconds_and_refuses_when_full() {
        let mut replay = Replay::default();
        let now = 1_000;
        assert_eq!(replay.remember(now, [1; 16], now), Ok(()));
        assert!(replay.remember(now, [1; 16], now).is_err(), "once");
        assert_eq!(replay.remember(now - 1, [1; 16], now), Ok(()), "another proof (another iat)");
        assert_eq!(replay.len, 2);
        assert_eq!(replay.remember(now + 61, [2; 16], now + 61), Ok(()));
        assert_eq!(replay.len, 1, "what is older than the window is forgotten");
        replay.len = REPLAY_LEN_MAX;
        assert_eq!(replay.remember(now + 61, [3; 16], now + 61), Err(ProofError::Busy));
    }
}
