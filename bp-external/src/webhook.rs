//! The rail's webhooks (status reports it pushes, payments coming in), authenticated: a
//! signature over the timestamp and the body with a secret the bank and the rail share,
//! designed like Stripe's scheme.
//!
//! The rail sends the header `Rail-Signature: t=<unix seconds>,v1=<hex>` where
//! `<hex> = HMAC-SHA256(secret, "{t}.{body}")` in lower-case hex; while a secret is being
//! rotated it signs with each active secret (`t=…,v1=<new>,v1=<old>`). A delivery is
//! authentic when one `v1` matches under one of the secrets we accept (compared in constant
//! time), its `t` is within the tolerance of our clock (either way), and it was not seen before
//! (a bounded cache of accepted `(t, signature)` pairs within the tolerance window). A rail that
//! retries a delivery signs it again with a new `t`.
//!
//! This module only **authenticates and parses**. Accepting the same report any number of times
//! and in any order is the lifecycle's job (bp-core's `external::lifecycle::transition` with
//! `Input::Webhook`), and crediting an incoming payment once is the ledger's (the transfer id of
//! `external::incoming::incoming_transfer_id`): a report that passes here twice under two
//! signatures is applied idempotently there. Neither the secrets nor the signatures ever appear
//! in an error, a log or a `Debug`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use bp_core::iso20022::pacs002::{self, StatusReport};
use bp_core::iso20022::pacs008::{self, CreditTransfer};
use bp_core::iso20022::{Iso20022Error, MESSAGE_BYTES_MAX};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How far a webhook's timestamp may be from our clock, either way, by default (seconds).
pub const TOLERANCE_S_DEFAULT: u64 = 300;

/// How many accepted deliveries the replay cache holds by default.
pub const SEEN_LEN_MAX_DEFAULT: usize = 100_000;

/// Shortest secret, in bytes.
pub const SECRET_BYTES_MIN: usize = 32;

/// Most secrets accepted at once (a rotation needs two).
pub const SECRETS_MAX: usize = 4;

/// Longest signature header read, in bytes.
pub const HEADER_BYTES_MAX: usize = 1_024;

/// Most `v1` signatures read from one header.
const SIGNATURES_MAX: usize = 8;

/// A secret shared with the rail. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(redacted)")
    }
}

/// A secret shorter than [`SECRET_BYTES_MIN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret is at least {SECRET_BYTES_MIN} bytes")]
pub struct ShortSecret;

impl WebhookSecret {
    /// The secret `bytes`, if it has at least [`SECRET_BYTES_MIN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, ShortSecret> {
        let bytes = bytes.into();
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(ShortSecret);
        }
        Ok(Self(bytes))
    }

    fn mac(&self, t: i64, body: &[u8]) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1` signature of `body` sent at `t` (unix seconds): lower-case hex.
    pub fn sign(&self, t: i64, body: &[u8]) -> String {
        hex::encode(self.mac(t, body).finalize().into_bytes())
    }
}

/// The signature header's value for `body` sent at `t`, signed with each of `secrets` (the
/// rail's side; the simulator uses it).
pub fn signature_header(t: i64, secrets: &[&WebhookSecret], body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        header.push_str(",v1=");
        header.push_str(&secret.sign(t, body));
    }
    header
}

/// Why a webhook is not accepted. None of these carry the header, a signature or a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// No signature header.
    #[error("no signature header")]
    MissingSignature,
    /// The header is not `t=<unix seconds>,v1=<hex>…` (or is longer than [`HEADER_BYTES_MAX`]).
    #[error("malformed signature header")]
    MalformedSignature,
    /// No signature matches under any secret we accept.
    #[error("signature does not match")]
    BadSignature,
    /// Signed longer ago than the tolerance.
    #[error("timestamp too old")]
    Stale,
    /// Signed further in the future than the tolerance.
    #[error("timestamp in the future")]
    Future,
    /// This delivery was accepted before (a replay).
    #[error("delivery already accepted")]
    Replayed,
    /// Authentic, but the body is not the message expected.
    #[error("body: {0}")]
    Body(Iso20022Error),
}

/// A verifier's configuration error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a webhook verifier needs 1 to {SECRETS_MAX} secrets and a tolerance of at least 1 s")]
pub struct VerifierConfigError;

#[derive(Debug)]
struct Parsed {
    t: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse_header(header: &str) -> Result<Parsed, WebhookError> {
    if header.len() > HEADER_BYTES_MAX {
        return Err(WebhookError::MalformedSignature);
    }
    let mut t = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or(WebhookError::MalformedSignature)?;
        match name {
            "t" if t.is_none() => t = Some(value.parse::<i64>().map_err(|_| WebhookError::MalformedSignature)?),
            "t" => return Err(WebhookError::MalformedSignature),
            "v1" => {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(value, &mut bytes).map_err(|_| WebhookError::MalformedSignature)?;
                if signatures.len() == SIGNATURES_MAX {
                    return Err(WebhookError::MalformedSignature);
                }
                signatures.push(bytes);
            }
            // Other schemes (a future v2) are skipped, as Stripe's verifiers do.
            _ => {}
        }
    }
    let t = t.ok_or(WebhookError::MalformedSignature)?;
    if signatures.is_empty() {
        return Err(WebhookError::MalformedSignature);
    }
    Ok(Parsed { t, signatures })
}

/// Accepted deliveries, ordered by timestamp so that the oldest go first.
#[derive(Debug, Default)]
struct Seen {
    entries: BTreeSet<(i64, [u8; 32])>,
}

/// Authenticates the rail's webhooks; see the module documentation. One verifier is shared by
/// every request of a server (its replay cache is behind a lock).
#[derive(Debug)]
pub struct WebhookVerifier {
    secrets: Vec<WebhookSecret>,
    tolerance_s: u64,
    seen_len_max: usize,
    seen: Mutex<Seen>,
}

impl WebhookVerifier {
    /// A verifier accepting signatures under any of `secrets` (1 to [`SECRETS_MAX`]: the new and
    /// the old one during a rotation), `tolerance_s` either way of our clock, remembering up to
    /// [`SEEN_LEN_MAX_DEFAULT`] deliveries.
    pub fn new(secrets: Vec<WebhookSecret>, tolerance_s: u64) -> Result<Self, VerifierConfigError> {
        Self::with_seen_len_max(secrets, tolerance_s, SEEN_LEN_MAX_DEFAULT)
    }

    /// As [`WebhookVerifier::new`], remembering up to `seen_len_max` deliveries (at least 1).
    /// When more authentic deliveries than that come within the tolerance window, the oldest
    /// is forgotten: a replay of it would then pass here and be absorbed by the lifecycle,
    /// which applies a report any number of times.
    pub fn with_seen_len_max(
        secrets: Vec<WebhookSecret>,
        tolerance_s: u64,
        seen_len_max: usize,
    ) -> Result<Self, VerifierConfigError> {
        if secrets.is_empty() || secrets.len() > SECRETS_MAX || tolerance_s == 0 || seen_len_max == 0 {
            return Err(VerifierConfigError);
        }
        Ok(Self { secrets, tolerance_s, seen_len_max, seen: Mutex::new(Seen::default()) })
    }

    /// Authenticates a delivery of `body` with the signature header `header` (`None` when the
    /// request had none), at `now_unix_s` by our clock; a delivery accepted here is remembered
    /// and refused as [`WebhookError::Replayed`] if it comes again.
    pub fn verify(&self, header: Option<&str>, body: &[u8], now_unix_s: i64) -> Result<(), WebhookError> {
        let matched = self.authenticate(header, body, now_unix_s)?;
        self.remember(matched, now_unix_s)
    }

    /// Authenticates a status report (a pacs.002) and reads it.
    pub fn status_report(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_unix_s: i64,
    ) -> Result<StatusReport, WebhookError> {
        let matched = self.authenticate(header, body, now_unix_s)?;
        let report = pacs002::parse(text(body)?).map_err(WebhookError::Body)?;
        self.remember(matched, now_unix_s)?;
        Ok(report)
    }

    /// Authenticates an incoming payment (a pacs.008) and reads it.
    pub fn incoming(&self, header: Option<&str>, body: &[u8], now_unix_s: i64) -> Result<CreditTransfer, WebhookError> {
        let matched = self.authenticate(header, body, now_unix_s)?;
        let transfer = pacs008::parse(text(body)?).map_err(WebhookError::Body)?;
        self.remember(matched, now_unix_s)?;
        Ok(transfer)
    }

    /// The `(t, signature)` that authenticates the delivery.
    fn authenticate(
        &self,
        header: Option<&str>,
        body: &[u8],
        now_unix_s: i64,
    ) -> Result<(i64, [u8; 32]), WebhookError> {
        let parsed = parse_header(header.ok_or(WebhookError::MissingSignature)?)?;
        let tolerance = i64::try_from(self.tolerance_s).unwrap_or(i64::MAX);
        if parsed.t < now_unix_s.saturating_sub(tolerance) {
            return Err(WebhookError::Stale);
        }
        if parsed.t > now_unix_s.saturating_add(tolerance) {
            return Err(WebhookError::Future);
        }
        for secret in &self.secrets {
            for signature in &parsed.signatures {
                // `verify_slice` compares in constant time.
                if secret.mac(parsed.t, body).verify_slice(signature).is_ok() {
                    return Ok((parsed.t, *signature));
                }
            }
        }
        Err(WebhookError::BadSignature)
    }

    fn remember(&self, matched: (i64, [u8; 32]), now_unix_s: i64) -> Result<(), WebhookError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // What is older than the window is refused as stale anyway: forget it.
        let tolerance = i64::try_from(self.tolerance_s).unwrap_or(i64::MAX);
        let oldest_kept = now_unix_s.saturating_sub(tolerance);
        seen.entries = seen.entries.split_off(&(oldest_kept, [0u8; 32]));
        if seen.entries.contains(&matched) {
            return Err(WebhookError::Replayed);
        }
        while seen.entries.len() >= self.seen_len_max {
            seen.entries.pop_first();
        }
        seen.entries.insert(matched);
        Ok(())
    }
}

fn text(body: &[u8]) -> Result<&str, WebhookError> {
    if body.len() > MESSAGE_BYTES_MAX {
        return Err(WebhookError::Body(Iso20022Error::TooLarge));
    }
    std::str::from_utf8(body).map_err(|_| WebhookError::Body(Iso20022Error::Malformed("not UTF-8".to_owned())))
}
