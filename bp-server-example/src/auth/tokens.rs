//! Tokens: the EdDSA (Ed25519) signing key and its JWKS, issuing access and id tokens, and checking the
//! access tokens the API receives (our own, or an external issuer's by its JWKS). Verified
//! tokens are cached until they expire, so a busy client costs one signature check per token,
//! not per request; sessions revoked since are refused on every request.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bp_core::ids::{CustomerId, SessionId};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, spki::der::pem::LineEnding,
};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::crypto::{b64, sha256};

/// Most verified tokens kept in the cache.
const VERIFIED_CACHE_LEN_MAX: usize = 100_000;

/// A token that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Malformed, badly signed, expired, for another audience, or revoked.
    #[error("{0}")]
    Invalid(&'static str),
    /// The key file cannot be read or written.
    #[error("signing key: {0}")]
    Key(String),
}

/// An authentication context class (OpenID Connect `acr`) of our sign-ins, weakest first: what
/// `acr_values` asks for and the tokens tell. It follows from the sign-in's methods (`amr`), so
/// that refreshed tokens keep it without storing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Acr {
    /// Two factors: a password and a TOTP code or a device key's signature (RTS art. 4).
    TwoFactor,
    /// Two factors of which one is phishing-resistant: a passkey with user verification, whose
    /// authenticator signs only for this site's origin.
    PhishingResistant,
}

impl Acr {
    /// Every class, weakest first.
    pub const ALL: [Acr; 2] = [Acr::TwoFactor, Acr::PhishingResistant];

    /// Its URI, the value of `acr` and `acr_values`.
    pub const fn uri(self) -> &'static str {
        match self {
            Acr::TwoFactor => "urn:bp:acr:2fa",
            Acr::PhishingResistant => "urn:bp:acr:phr",
        }
    }

    /// The class of a URI we sign in at.
    pub fn parse(uri: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.uri() == uri)
    }

    /// The class a sign-in with methods `amr` (RFC 8176) reached, if two factors: a passkey with
    /// user verification (`hwk` and `mfa`), or a password (`pwd`) and a possession factor (`otp`,
    /// `hwk` or `swk`).
    pub fn of_amr(amr: &[String]) -> Option<Self> {
        let has = |m: &str| amr.iter().any(|a| a == m);
        if has("hwk") && has("mfa") {
            Some(Acr::PhishingResistant)
        } else if has("pwd") && (has("otp") || has("hwk") || has("swk")) {
            Some(Acr::TwoFactor)
        } else {
            None
        }
    }
}

/// The Ed25519 key that signs our tokens (JWS `EdDSA`): a signature costs microseconds, where
/// ES256 with a portable P-256 implementation costs a large part of a millisecond.
pub struct Keys {
    kid: String,
    encoding: EncodingKey,
    /// The keys tokens are checked with, by `kid`: the signing key's and the accepted ones.
    decoding: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    nonce_secret: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads the PKCS#8 PEM key at `path`, or, when `create` and there is none, makes one and
    /// writes it there (owner-readable only).
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, TokenError> {
        let key = if path.exists() {
            let pem = std::fs::read_to_string(path).map_err(|e| TokenError::Key(e.to_string()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| TokenError::Key(e.to_string()))?
        } else if create {
            let key = SigningKey::generate(&mut rand_core::OsRng);
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| TokenError::Key(e.to_string()))?;
            write_private(path, pem.as_bytes()).map_err(|e| TokenError::Key(e.to_string()))?;
            key
        } else {
            return Err(TokenError::Key(format!("no signing key at {}", path.display())));
        };
        Self::from_signing_key(&key)
    }

    /// Keys from an Ed25519 signing key.
    pub fn from_signing_key(key: &SigningKey) -> Result<Self, TokenError> {
        let der = key.to_pkcs8_der().map_err(|e| TokenError::Key(e.to_string()))?;
        let (kid, decoding, jwk) = public_key(&key.verifying_key())?;
        let jwks = serde_json::json!({ "keys": [jwk] });
        // The DPoP nonces' MAC key: derived from the signing key, so that every replica that
        // shares the key file accepts the others' nonces, and nothing more to keep secret.
        let nonce_secret = sha256(&[b"bp-dpop-nonce-secret-v1\n".as_slice(), key.to_bytes().as_slice()].concat());
        let decoding = HashMap::from([(kid.clone(), decoding)]);
        Ok(Self { kid, encoding: EncodingKey::from_ed_der(der.as_bytes()), decoding, jwks, nonce_secret })
    }

    /// These keys, also accepting the tokens of the keys in the PEM files `paths` (each a public
    /// key, or a PKCS#8 private key of which only the public half is kept) and listing them in
    /// the JWKS: the overlap of a rotation.
    pub fn accepting(mut self, paths: &[std::path::PathBuf]) -> Result<Self, TokenError> {
        for path in paths {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| TokenError::Key(format!("accepted key {}: {e}", path.display())))?;
            let public = match ed25519_dalek::VerifyingKey::from_public_key_pem(&pem) {
                Ok(public) => public,
                Err(_) => SigningKey::from_pkcs8_pem(&pem)
                    .map_err(|_| TokenError::Key(format!("accepted key {}: not an Ed25519 PEM key", path.display())))?
                    .verifying_key(),
            };
            let (kid, decoding, jwk) = public_key(&public)?;
            if self.decoding.insert(kid, decoding).is_none()
                && let Some(keys) = self.jwks.get_mut("keys").and_then(|k| k.as_array_mut())
            {
                keys.push(jwk);
            }
        }
        Ok(self)
    }

    /// The secret of the server's DPoP nonces.
    pub fn nonce_secret(&self) -> [u8; 32] {
        self.nonce_secret
    }

    /// The key id in our tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWKS document.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }

    /// Signs `claims` as a JWT.
    pub fn sign<T: Serialize>(&self, claims: &T, typ: &str) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| TokenError::Invalid("cannot sign"))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The claims of our access tokens (RFC 9068).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// The customer id.
    pub sub: String,
    /// The API.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// Unique id.
    pub jti: String,
    /// The OAuth2 client.
    pub client_id: String,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The sign-in session.
    pub sid: String,
    /// Authentication methods (RFC 8176).
    pub amr: Vec<String>,
    /// When the customer signed in.
    pub auth_time: u64,
    /// The sign-in's class ([`Acr::uri`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The key the token is bound to (DPoP), for a sender-constrained token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The confirmation claim of a DPoP-bound token (RFC 7800, RFC 9449 §6.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint (RFC 7638) of the key.
    pub jkt: String,
}

/// The claims of our id tokens (OpenID Connect Core §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    /// Issuer.
    pub iss: String,
    /// The customer id.
    pub sub: String,
    /// The client.
    pub aud: String,
    /// Expiry.
    pub exp: u64,
    /// Issued at.
    pub iat: u64,
    /// When the customer signed in.
    pub auth_time: u64,
    /// The client's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Authentication methods.
    pub amr: Vec<String>,
    /// The sign-in's class ([`Acr::uri`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// The session.
    pub sid: String,
}

/// Who is calling, as an access token proves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The customer.
    pub customer_id: CustomerId,
    /// Granted scopes.
    pub scopes: HashSet<String>,
    /// Authentication methods of the sign-in.
    pub amr: Vec<String>,
    /// Our session, for our own tokens.
    pub session: Option<SessionId>,
    /// The client.
    pub client_id: String,
    /// The token's expiry (seconds since the epoch).
    pub exp: u64,
    /// When the customer signed in (seconds since the epoch), for our own tokens: our session
    /// ends `auth.session_ttl_s` after it.
    pub auth_time: Option<u64>,
    /// The thumbprint of the key the token is bound to (`cnf.jkt`): it is only accepted with a
    /// DPoP proof of that key.
    pub dpop_jkt: Option<String>,
}

impl Caller {
    /// Whether the token carries `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    /// When the customer signed in here with both factors, for a session of this server (an
    /// external issuer's token has none): what a step-up checks.
    pub fn signed_in_at(&self) -> Option<bp_core::Timestamp> {
        let at = self.auth_time.filter(|_| self.session.is_some() && self.fully_authenticated())?;
        chrono::DateTime::from_timestamp(i64::try_from(at).ok()?, 0)
    }

    /// The authentication scheme the token is used with: `DPoP` for a token bound to a key.
    pub fn scheme(&self) -> crate::http::problem::AuthScheme {
        match self.dpop_jkt {
            Some(_) => crate::http::problem::AuthScheme::Dpop,
            None => crate::http::problem::AuthScheme::Bearer,
        }
    }

    /// Whether the sign-in used two factors (a password and a possession factor, or a passkey
    /// with user verification).
    pub fn fully_authenticated(&self) -> bool {
        self.acr().is_some()
    }

    /// The class of the sign-in, from its methods.
    pub fn acr(&self) -> Option<Acr> {
        Acr::of_amr(&self.amr)
    }
}

/// The least time between two fetches of an external issuer's JWKS, however many tokens with
/// unknown key ids arrive: anyone can make such a token, and each would otherwise cost a fetch.
pub const JWKS_FETCH_GAP_MIN_S: u64 = 30;

/// An external issuer's verification material.
pub struct External {
    /// Its configuration.
    pub config: crate::config::ExternalIssuerConfig,
    jwks: RwLock<Option<(Instant, JwkSet)>>,
    /// When the JWKS was last fetched or tried: the next fetch waits [`JWKS_FETCH_GAP_MIN_S`].
    fetched: Mutex<Option<Instant>>,
    http: reqwest::Client,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

impl External {
    /// For `config`.
    pub fn new(config: crate::config::ExternalIssuerConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { config, jwks: RwLock::new(None), fetched: Mutex::new(None), http }
    }

    /// The issuer's keys: the cached set while it is younger than `jwks_refresh_s` (unless
    /// `force`), otherwise fetched again, at most once per [`JWKS_FETCH_GAP_MIN_S`] (between
    /// fetches, the cached set, however old).
    async fn keys(&self, force: bool) -> Result<JwkSet, TokenError> {
        let max_age = Duration::from_secs(self.config.jwks_refresh_s);
        let cached = self.jwks.read().unwrap_or_else(PoisonError::into_inner).clone();
        if !force
            && let Some((at, set)) = &cached
            && at.elapsed() < max_age
        {
            return Ok(set.clone());
        }
        let may_fetch = {
            let mut fetched = self.fetched.lock().unwrap_or_else(PoisonError::into_inner);
            let due = fetched.is_none_or(|at| at.elapsed() >= Duration::from_secs(JWKS_FETCH_GAP_MIN_S));
            if due {
                *fetched = Some(Instant::now());
            }
            due
        };
        if !may_fetch {
            return cached.map(|(_, set)| set).ok_or(TokenError::Invalid("the external issuer's keys are unreachable"));
        }
        let response = self
            .http
            .get(&self.config.jwks_uri)
            .send()
            .await
            .map_err(|_| TokenError::Invalid("the external issuer's keys are unreachable"))?;
        let set: JwkSet =
            response.json().await.map_err(|_| TokenError::Invalid("the external issuer's keys are malformed"))?;
        *self.jwks.write().unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), set.clone()));
        Ok(set)
    }

    /// The verified claims of an external token.
    pub async fn verify(&self, token: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed token"))?;
        let typ = header.typ.as_deref().unwrap_or_default();
        let typ = typ
            .get(.."application/".len())
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |p| &typ[p.len()..]);
        if !self.config.token_types.iter().any(|t| t.eq_ignore_ascii_case(typ)) {
            return Err(TokenError::Invalid("not an access token of the external issuer (typ)"));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("token without kid"))?;
        let mut set = self.keys(false).await?;
        if set.find(&kid).is_none() {
            // Perhaps a new key of the issuer: fetch once more (at most once per gap).
            set = self.keys(true).await?;
        }
        let jwk = set.find(&kid).ok_or(TokenError::Invalid("unknown signing key"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| TokenError::Invalid("unusable signing key"))?;
        let alg = match jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
            Some(a) => a,
            None => header.alg,
        };
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(TokenError::Invalid("symmetric algorithms are not accepted"));
        }
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map(|d| d.claims)
            .map_err(|_| TokenError::Invalid("the token is not valid"))
    }
}

/// Whose session an access token is of, as revocation needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSession {
    /// The session.
    pub session: SessionId,
    /// Its customer.
    pub customer: Option<CustomerId>,
    /// The client the token was issued to.
    pub client_id: String,
}

/// The key id, the checking key and the JWK of an Ed25519 public key.
fn public_key(public: &ed25519_dalek::VerifyingKey) -> Result<(String, DecodingKey, serde_json::Value), TokenError> {
    let bytes = public.to_bytes();
    let x = b64(&bytes);
    let kid = b64(&sha256(&bytes)[..12]);
    let decoding = DecodingKey::from_ed_components(&x).map_err(|e| TokenError::Key(e.to_string()))?;
    let jwk = serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "use": "sig", "alg": "EdDSA" });
    Ok((kid, decoding, jwk))
}

/// The key that checks `token`: the one its header's `kid` names.
fn key_of<'a>(keys: &'a HashMap<String, DecodingKey>, token: &str) -> Option<&'a DecodingKey> {
    keys.get(&jsonwebtoken::decode_header(token).ok()?.kid?)
}

/// A token of the verifier's cache: its signed part, and its caller.
struct Verified {
    signed: Box<str>,
    caller: Caller,
}

/// A compact JWS's signed part (`header.claims`) and the SHA-256 of its signature: the token's
/// cache entry and key. None when it has no signature part.
fn cache_key(token: &str) -> Option<(&str, [u8; 32])> {
    let (signed, signature) = token.rsplit_once('.')?;
    Some((signed, sha256(signature.as_bytes())))
}

/// Checks access tokens and remembers revoked sessions.
pub struct Verifier {
    issuer: String,
    audience: String,
    decoding: HashMap<String, DecodingKey>,
    /// Tokens whose signature was checked, by the SHA-256 of their signature: with their signed
    /// part (header and claims, compared in full on a hit) and their caller. The signed part is
    /// no secret without the signature, which is kept only as its hash, so the cache holds no
    /// usable token. Hashing the 86-character signature, not the whole token of 500 to 700,
    /// saves about 25,000 instructions a request on a CPU without SHA extensions.
    cache: Mutex<HashMap<[u8; 32], Verified>>,
    revoked: RwLock<HashSet<SessionId>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

impl Verifier {
    /// For tokens of `keys` issued by `issuer` for `audience`.
    pub fn new(keys: &Keys, issuer: String, audience: String) -> Self {
        Self {
            issuer,
            audience,
            decoding: keys.decoding.clone(),
            cache: Mutex::new(HashMap::new()),
            revoked: RwLock::new(HashSet::new()),
        }
    }

    /// Refuses, from now on, every access token of `session`.
    pub fn revoke(&self, session: SessionId) {
        self.revoked.write().unwrap_or_else(PoisonError::into_inner).insert(session);
    }

    /// Whether `session` was revoked (within an access token's lifetime, or since this start).
    pub fn is_revoked(&self, session: Option<SessionId>) -> bool {
        session.is_some_and(|s| self.revoked.read().unwrap_or_else(PoisonError::into_inner).contains(&s))
    }

    /// The caller of one of our access tokens at `now_s`, when its signature was checked before
    /// (it is in the cache): expiry and revocation checked as [`Verifier::verify`] does. None
    /// for a token not seen yet, or not ours.
    pub fn verify_cached(&self, token: &str, now_s: u64) -> Option<Result<Caller, TokenError>> {
        let (signed, key) = cache_key(token)?;
        self.cached(signed, &key).map(|caller| self.usable(caller, now_s))
    }

    /// The caller of one of our access tokens at `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Caller, TokenError> {
        let (signed, key) = cache_key(token).ok_or(TokenError::Invalid("the access token is not valid"))?;
        let caller = match self.cached(signed, &key) {
            Some(c) => c,
            None => {
                let caller = self.verify_signature(token)?;
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= VERIFIED_CACHE_LEN_MAX {
                    cache.retain(|_, v| v.caller.exp > now_s);
                    if cache.len() >= VERIFIED_CACHE_LEN_MAX {
                        cache.clear();
                    }
                }
                cache.insert(key, Verified { signed: signed.into(), caller: caller.clone() });
                caller
            }
        };
        self.usable(caller, now_s)
    }

    /// The caller of the cached token whose signature hashes to `key`, if its signed part is
    /// `signed`: then the token is the very one that was checked.
    fn cached(&self, signed: &str, key: &[u8; 32]) -> Option<Caller> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(key).filter(|v| *v.signed == *signed).map(|v| v.caller.clone())
    }

    /// `caller`, unless its token has expired at `now_s` or its session was revoked.
    fn usable(&self, caller: Caller, now_s: u64) -> Result<Caller, TokenError> {
        if caller.exp <= now_s {
            return Err(TokenError::Invalid("the access token has expired"));
        }
        if self.is_revoked(caller.session) {
            return Err(TokenError::Invalid("the session was signed out"));
        }
        Ok(caller)
    }

    fn verify_signature(&self, token: &str) -> Result<Caller, TokenError> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 0;
        let invalid = || TokenError::Invalid("the access token is not valid");
        let key = key_of(&self.decoding, token).ok_or_else(invalid)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).map_err(|_| invalid())?;
        if data.header.typ.as_deref() != Some("at+jwt") {
            return Err(TokenError::Invalid("not an access token"));
        }
        let c = data.claims;
        let customer_id = c.sub.parse().map_err(|_| TokenError::Invalid("malformed subject"))?;
        let session = c.sid.parse().map_err(|_| TokenError::Invalid("malformed session"))?;
        Ok(Caller {
            customer_id,
            scopes: c.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            amr: c.amr,
            session: Some(session),
            client_id: c.client_id,
            exp: c.exp,
            auth_time: Some(c.auth_time),
            dpop_jkt: c.cnf.map(|c| c.jkt),
        })
    }

    /// The session of one of our access tokens whose signature is valid, expired or not (for
    /// revocation).
    pub fn session_of(&self, token: &str) -> Option<TokenSession> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.validate_exp = false;
        let key = key_of(&self.decoding, token)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &validation).ok()?.claims;
        Some(TokenSession {
            session: claims.sid.parse().ok()?,
            customer: claims.sub.parse().ok(),
            client_id: claims.client_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;

    use super::*;

    fn claims(exp: u64) -> AccessClaims {
        AccessClaims {
            iss: "http://issuer".into(),
            sub: CustomerId::new_v7().to_string(),
            aud: "bp-api".into(),
            exp,
            iat: exp - 300,
            jti: "j".into(),
            client_id: "bp-web".into(),
            scope: "openid accounts".into(),
            sid: SessionId::new_v7().to_string(),
            amr: vec!["pwd".into(), "otp".into()],
            auth_time: exp - 300,
            acr: Some(Acr::TwoFactor.uri().to_owned()),
            cnf: None,
        }
    }

    #[test]
    fn the_class_of_a_sign_in_follows_from_its_methods() {
        let amr = |m: &[&str]| m.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(Acr::of_amr(&amr(&["pwd", "otp"])), Some(Acr::TwoFactor));
        assert_eq!(Acr::of_amr(&amr(&["pwd", "hwk"])), Some(Acr::TwoFactor));
        assert_eq!(Acr::of_amr(&amr(&["hwk", "mfa"])), Some(Acr::PhishingResistant));
        for one_factor in [&["pwd"][..], &["otp"], &["hwk"], &["mfa"], &["pwd", "mfa"], &[]] {
            assert_eq!(Acr::of_amr(&amr(one_factor)), None, "{one_factor:?}");
        }
        for acr in Acr::ALL {
            assert_eq!(Acr::parse(acr.uri()), Some(acr));
        }
        assert_eq!(Acr::parse("urn:bp:acr:1fa"), None);
        assert!(Acr::TwoFactor < Acr::PhishingResistant, "weakest first");
    }

    #[test]
    fn tokens_verify_until_expiry_and_revocation() {
        let keys = Keys::from_signing_key(&SigningKey::generate(&mut rand_core::OsRng)).expect("keys");
        let verifier = Verifier::new(&keys, "http://issuer".into(), "bp-api".into());
        let now = 2_000_000_000;
        let c = claims(now + 300);
        let token = keys.sign(&c, "at+jwt").expect("sign");
        let caller = verifier.verify(&token, now).expect("valid");
        assert!(caller.has_scope("accounts") && !caller.has_scope("payments"));
        assert!(caller.fully_authenticated());
        assert!(verifier.verify(&token, now + 300).is_err(), "expired");
        verifier.revoke(caller.session.expect("session"));
        assert!(verifier.verify(&token, now).is_err(), "revoked");

        let id_typed = keys.sign(&claims(now + 300), "JWT").expect("sign");
        assert!(verifier.verify(&id_typed, now).is_err(), "only at+jwt tokens are access tokens");
        let mut tampered = token.clone();
        tampered.replace_range(token.len() - 3.., "AAA");
        assert!(Verifier::new(&keys, "http://issuer".into(), "bp-api".into()).verify(&tampered, now).is_err());
        let other = Verifier::new(&keys, "http://other".into(), "bp-api".into());
        assert!(other.verify(&token, now).is_err(), "another issuer");
    }

    /// The cache answers only for the very token that was checked: another token's claims under
    /// a cached token's signature, or a cached token's claims under another signature, are
    /// checked again, and refused.
    #[test]
    fn the_cache_knows_a_token_by_its_claims_and_its_signature() {
        let keys = Keys::from_signing_key(&SigningKey::generate(&mut rand_core::OsRng)).expect("keys");
        let verifier = Verifier::new(&keys, "http://issuer".into(), "bp-api".into());
        let now = 2_000_000_000;
        let token = keys.sign(&claims(now + 300), "at+jwt").expect("sign");
        let other = keys.sign(&claims(now + 300), "at+jwt").expect("sign");
        verifier.verify(&token, now).expect("valid");
        assert!(verifier.verify_cached(&token, now).is_some_and(|c| c.is_ok()), "cached");

        let (signed, _) = token.rsplit_once('.').expect("jws");
        let (other_signed, other_signature) = other.rsplit_once('.').expect("jws");
        assert_ne!(signed, other_signed);
        let (_, signature) = token.rsplit_once('.').expect("jws");
        let forged = format!("{other_signed}.{signature}");
        assert!(verifier.verify_cached(&forged, now).is_none(), "not the cached token");
        assert!(verifier.verify(&forged, now).is_err(), "a cached signature under other claims");
        let resigned = format!("{signed}.{other_signature}");
        assert!(verifier.verify(&resigned, now).is_err(), "cached claims under another signature");
        assert!(verifier.verify(&token, now).is_ok(), "the cached token still verifies");
        assert!(verifier.verify("no-signature-part", now).is_err());
    }

    /// A rotation with overlap: the next key accepted before it signs, the former one after.
    #[test]
    fn accepted_keys_verify_and_are_listed_until_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (former, next) = (SigningKey::generate(&mut rand_core::OsRng), SigningKey::generate(&mut rand_core::OsRng));
        let former_public = dir.path().join("former.pub.pem");
        let pem = former.verifying_key().to_public_key_pem(LineEnding::LF).expect("pem");
        std::fs::write(&former_public, pem).expect("write");
        let next_private = dir.path().join("next.pem");
        std::fs::write(&next_private, next.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes()).expect("write");
        let now = 2_000_000_000;
        let by_former =
            Keys::from_signing_key(&former).expect("keys").sign(&claims(now + 300), "at+jwt").expect("sign");

        // Phase 1: the former key signs and accepts the next one's tokens.
        let phase1 = Keys::from_signing_key(&former).expect("keys").accepting(&[next_private]).expect("accepting");
        let by_next = Keys::from_signing_key(&next).expect("keys").sign(&claims(now + 300), "at+jwt").expect("sign");
        let kids = |k: &Keys| k.jwks()["keys"].as_array().expect("keys").len();
        assert_eq!(kids(&phase1), 2);
        let v = Verifier::new(&phase1, "http://issuer".into(), "bp-api".into());
        assert!(v.verify(&by_former, now).is_ok() && v.verify(&by_next, now).is_ok());

        // Phase 2: the next key signs, the former one's tokens are still accepted.
        let phase2 = Keys::from_signing_key(&next)
            .expect("keys")
            .accepting(std::slice::from_ref(&former_public))
            .expect("accepting");
        assert_eq!(kids(&phase2), 2);
        let v = Verifier::new(&phase2, "http://issuer".into(), "bp-api".into());
        assert!(v.verify(&by_former, now).is_ok() && v.verify(&by_next, now).is_ok());

        // Phase 3: the former key removed: its tokens are refused, and the JWKS lists one key.
        let phase3 = Keys::from_signing_key(&next).expect("keys");
        assert_eq!(kids(&phase3), 1);
        let v = Verifier::new(&phase3, "http://issuer".into(), "bp-api".into());
        assert!(v.verify(&by_former, now).is_err() && v.verify(&by_next, now).is_ok());

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a key").expect("write");
        let e = Keys::from_signing_key(&next).expect("keys").accepting(&[junk]).expect_err("junk");
        assert!(e.to_string().contains("not an Ed25519 PEM key"), "{e}");
        assert!(Keys::from_signing_key(&next).expect("keys").accepting(&[dir.path().join("none.pem")]).is_err());
    }
}
