//! Keys and proofs: DPoP proofs (RFC 9449) signed by the app's key, the software signer for
//! tests and Python, and the small encodings they share (base64url, random tokens, PKCE).

#![forbid(unsafe_code)]

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::error::Error;
use crate::host::{DeviceSigner, HostError};

/// base64url without padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `len` random bytes, base64url: nonces, PKCE verifiers, `state`, proof ids.
pub(crate) fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    // The OS generator fails only on a broken system; a predictable nonce would be worse than
    // stopping, and UniFFI turns the panic into an error of the call.
    getrandom::fill(&mut bytes).expect("the OS random generator works");
    b64(&bytes)
}

/// A PKCE pair (RFC 7636): the verifier (43 characters) and its S256 challenge.
pub(crate) fn pkce() -> (String, String) {
    let verifier = random_token(32);
    let challenge = b64(&sha256(verifier.as_bytes()));
    (verifier, challenge)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A signature the app's key made (DER or `r ‖ s`) as 64 bytes `r ‖ s`, what JWS ES256 wants.
fn raw_signature(signature: &[u8]) -> Result<[u8; 64], Error> {
    let parsed = match signature.len() {
        64 => Signature::from_slice(signature),
        _ => Signature::from_der(signature),
    }
    .map_err(|_| Error::Corrupt("the device key's signature is neither DER nor r‖s".to_owned()))?;
    Ok(parsed.to_bytes().into())
}

/// The app's DPoP key and the proofs it signs.
#[derive(Debug)]
pub(crate) struct DpopKey {
    signer: Arc<dyn DeviceSigner>,
    /// The public key as a JWK, read once from the signer.
    jwk: std::sync::OnceLock<Value>,
}

impl DpopKey {
    pub(crate) fn new(signer: Arc<dyn DeviceSigner>) -> Self {
        Self { signer, jwk: std::sync::OnceLock::new() }
    }

    fn jwk(&self) -> Result<&Value, Error> {
        if let Some(jwk) = self.jwk.get() {
            return Ok(jwk);
        }
        let jwk = public_jwk(&self.signer.public_key()?)?;
        Ok(self.jwk.get_or_init(|| jwk))
    }

    /// A proof for `method` on `url` (its query dropped), for `access_token` when given, with
    /// the server's `nonce` when it asked for one.
    pub(crate) fn proof(
        &self,
        method: &str,
        url: &str,
        access_token: Option<&str>,
        nonce: Option<&str>,
    ) -> Result<String, Error> {
        let htu = url.split(['?', '#']).next().unwrap_or(url);
        let header = json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": self.jwk()? });
        let mut claims = json!({ "jti": random_token(16), "htm": method, "htu": htu, "iat": now_s() });
        if let Some(token) = access_token {
            claims["ath"] = b64(&sha256(token.as_bytes())).into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let signature = raw_signature(&self.signer.sign(input.as_bytes().to_vec())?)?;
        Ok(format!("{input}.{}", b64(&signature)))
    }
}

/// The JWK of a SEC1 uncompressed P-256 public key.
fn public_jwk(sec1: &[u8]) -> Result<Value, Error> {
    if sec1.len() != 65 || sec1[0] != 4 {
        return Err(Error::Corrupt("the device's public key is not SEC1 uncompressed P-256".to_owned()));
    }
    p256::PublicKey::from_sec1_bytes(sec1)
        .map_err(|_| Error::Corrupt("the device's public key is not on P-256".to_owned()))?;
    Ok(json!({ "kty": "EC", "crv": "P-256", "x": b64(&sec1[1..33]), "y": b64(&sec1[33..65]) }))
}

/// A P-256 key in the process's memory: for tests, the Python example and desktop tools. A phone
/// app uses a key of its keystore instead, which cannot be copied off the device.
#[derive(uniffi::Object)]
pub struct SoftwareSigner {
    key: SigningKey,
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoftwareSigner").finish_non_exhaustive()
    }
}

#[uniffi::export]
impl SoftwareSigner {
    /// A new random key.
    #[uniffi::constructor]
    pub fn generate() -> Arc<Self> {
        loop {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).expect("the OS random generator works");
            // A scalar of zero or past the group order is refused: draw again (p < 2^-127).
            if let Ok(key) = SigningKey::from_slice(&secret) {
                return Arc::new(Self { key });
            }
        }
    }

    /// The key of `secret` (32 bytes, as [`SoftwareSigner::secret`] gave it).
    #[uniffi::constructor]
    pub fn from_secret(secret: Vec<u8>) -> Result<Arc<Self>, HostError> {
        SigningKey::from_slice(&secret)
            .map(|key| Arc::new(Self { key }))
            .map_err(|_| HostError::Failed { reason: "not a P-256 private key".to_owned() })
    }

    /// The private key's 32 bytes, to keep it between runs of a test or a tool.
    pub fn secret(&self) -> Vec<u8> {
        self.key.to_bytes().to_vec()
    }
}

#[uniffi::export]
impl DeviceSigner for SoftwareSigner {
    fn public_key(&self) -> Result<Vec<u8>, HostError> {
        Ok(self.key.verifying_key().to_encoded_point(false).as_bytes().to_vec())
    }

    fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, HostError> {
        let signature: Signature = self.key.sign(&message);
        Ok(signature.to_der().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;

    #[test]
    fn a_proof_is_an_es256_jwt_of_the_key_and_request() {
        let signer = SoftwareSigner::generate();
        let key = DpopKey::new(signer.clone());
        let proof = key.proof("POST", "https://bank.example/v1/transfers?x=1", Some("token"), None).expect("proof");
        let parts: Vec<&str> = proof.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).expect("base64url");
        let header: Value = serde_json::from_slice(&decode(parts[0])).expect("header");
        let claims: Value = serde_json::from_slice(&decode(parts[1])).expect("claims");
        assert_eq!(header["typ"], "dpop+jwt");
        assert_eq!(header["jwk"]["crv"], "P-256");
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], "https://bank.example/v1/transfers", "the query is not part of htu");
        assert_eq!(claims["ath"], b64(&sha256(b"token")));
        let signature = Signature::from_slice(&decode(parts[2])).expect("r‖s");
        let input = format!("{}.{}", parts[0], parts[1]);
        signer.key.verifying_key().verify(input.as_bytes(), &signature).expect("signed by the key");
        let other = key.proof("POST", "https://bank.example/v1/transfers", Some("token"), None).expect("proof");
        assert_ne!(proof, other, "every proof has its own jti");
    }

    #[test]
    fn a_software_key_survives_its_secret() {
        let signer = SoftwareSigner::generate();
        let again = SoftwareSigner::from_secret(signer.secret()).expect("key");
        assert_eq!(signer.public_key().expect("pk"), again.public_key().expect("pk"));
        assert!(SoftwareSigner::from_secret(vec![0; 32]).is_err(), "zero is not a key");
    }

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        let (verifier, challenge) = pkce();
        assert_eq!(verifier.len(), 43);
        assert_eq!(challenge, b64(&sha256(verifier.as_bytes())));
    }
}
