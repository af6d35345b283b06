//! The FX provider's HTTP contract: paths, problem types and the two JSON bodies (what we ask,
//! the quote it gives), shared by [`crate::fx_http::HttpFxProvider`] and the simulator.
//!
//! - `POST {base}/fx/quotes` with a [`QuoteAsk`] and our key in `Idempotency-Key` → `201` with
//!   a [`Quote`] (`200` with the very same quote when the key was seen with the same ask; `409`
//!   `urn:bp:fx:key-conflict` with another ask); `4xx` `urn:bp:fx:refused` when it will not
//!   quote (an unknown pair: reason `AM03`).
//! - `GET {base}/fx/quotes/{id}` → `200` with the [`Quote`] as it was given, or `404`
//!   `urn:bp:fx:quote-not-found`.
//!
//! Amounts travel as bp's money (`{"amount":"100.00","currency":"EUR"}`: a decimal string with
//! exactly the currency's minor digits), the rate as a decimal string, times in RFC 3339. Fields
//! we do not know are ignored, so that a provider may add some.

use bp_core::Timestamp;
use bp_core::external::fx::{ProviderQuote, QuoteId, QuoteRequest};
use bp_core::money::{Currency, Money};
use bp_core::rate::Rate;
use serde::{Deserialize, Serialize};

/// The path of quotes under the provider's base URL: `POST {base}/fx/quotes`,
/// `GET {base}/fx/quotes/{id}`.
pub const QUOTES_PATH: &str = "fx/quotes";

/// The problem type of a 4xx that refuses to quote (`CallError::Refused`).
pub const PROBLEM_REFUSED: &str = "urn:bp:fx:refused";

/// The problem type of a `GET {base}/fx/quotes/{id}` 404: the provider gave no quote with this
/// id. A 404 without it (a wrong path) is not taken as a miss.
pub const PROBLEM_QUOTE_NOT_FOUND: &str = "urn:bp:fx:quote-not-found";

/// The problem type of a 409: the key was used before for another ask.
pub const PROBLEM_KEY_CONFLICT: &str = "urn:bp:fx:key-conflict";

/// What we ask a quote for: converting `source` into `target_currency`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteAsk {
    /// The amount to convert, in the source currency.
    pub source: Money,
    /// The currency it is converted into.
    pub target_currency: Currency,
}

/// A quote as the provider gives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The provider's id of it: 1 to 64 letters, digits, `-`, `_` or `.`, not only dots (it
    /// is a path segment).
    pub id: QuoteId,
    /// The amount converted, in the source currency.
    pub source: Money,
    /// The currency it is converted into.
    pub target_currency: Currency,
    /// Units of the target currency per unit of the source, a decimal string (at most 10
    /// decimals).
    pub rate: Rate,
    /// The fee, in the source currency, on top of `source`.
    pub fee: Money,
    /// When the provider stops honouring it (RFC 3339).
    pub expires_at: Timestamp,
}

impl Quote {
    /// Whether this quote is for `ask`: the same amount and currencies.
    pub fn answers(&self, ask: &QuoteAsk) -> bool {
        self.source == ask.source && self.target_currency == ask.target_currency
    }
}

/// Whether `id` can be a path segment: an id of only dots (`.`, `..`) would name another path.
pub fn is_path_safe(id: &QuoteId) -> bool {
    !id.as_str().bytes().all(|b| b == b'.')
}

impl From<&QuoteRequest> for QuoteAsk {
    fn from(r: &QuoteRequest) -> Self {
        Self { source: r.source, target_currency: r.target_currency }
    }
}

impl From<Quote> for ProviderQuote {
    fn from(q: Quote) -> Self {
        Self {
            id: q.id,
            source: q.source,
            target_currency: q.target_currency,
            rate: q.rate,
            fee: q.fee,
            expires_at: q.expires_at,
        }
    }
}

impl From<ProviderQuote> for Quote {
    fn from(q: ProviderQuote) -> Self {
        Self {
            id: q.id,
            source: q.source,
            target_currency: q.target_currency,
            rate: q.rate,
            fee: q.fee,
            expires_at: q.expires_at,
        }
    }
}
