//! The outside parties' HTTP contracts, as constants and JSON bodies shared by the adapters and
//! the simulator so that they cannot drift: the rail's here (its bodies are ISO 20022, its one
//! JSON body the problem document of a refusal or a miss), the FX provider's in [`fx`] and the
//! loan provider's in [`loan`]. `docs/external-services.md` ("The rail's HTTP contract", "The
//! FX provider's HTTP contract", "The loan provider's HTTP contract") is the prose with
//! examples.

use serde::{Deserialize, Serialize};

pub mod fx;
pub mod loan;

/// The header carrying our idempotency key (`CallKey`) on every submission.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";

/// The header carrying a webhook's signature (`t=<unix seconds>,v1=<hex HMAC-SHA256>`).
pub const SIGNATURE_HEADER: &str = "Rail-Signature";

/// The media type of every ISO 20022 body.
pub const XML: &str = "application/xml";

/// The media type of the FX and loan providers' bodies.
pub const JSON: &str = "application/json";

/// The largest JSON answer the adapters read (a longer one is unreadable: `Unknown`). A quote
/// or a decision is a few hundred bytes.
pub const JSON_BYTES_MAX: usize = 16 * 1024;

/// The media type of a problem document (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The path of orders under the rail's base URL: `POST {base}/orders`, `GET {base}/orders/{key}`.
pub const ORDERS_PATH: &str = "orders";

/// The problem type of a 4xx that refuses the request: the order was not taken and never will
/// be under this request (our `CallError::Refused`).
pub const PROBLEM_REFUSED: &str = "urn:bp:rail:refused";

/// The problem type of a `GET {base}/orders/{key}` 404: no order was ever received under this
/// key (`RailStatus::NotFound`). A 404 without it (a wrong path) is not taken as a miss.
pub const PROBLEM_ORDER_NOT_FOUND: &str = "urn:bp:rail:order-not-found";

/// The problem type of a 409: the key was used before with another order.
pub const PROBLEM_KEY_CONFLICT: &str = "urn:bp:rail:key-conflict";

/// A problem document (RFC 9457) with the party's reason code, when it gives one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// One of the `PROBLEM_*` types.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short human-readable summary.
    #[serde(default)]
    pub title: String,
    /// A reason code (ISO 20022 style, 1 to 4 upper-case letters or digits: `FF01`, `AM12`,
    /// …), for a refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Problem {
    /// A problem of type `kind`.
    pub fn new(kind: &str, title: &str, reason: Option<&str>) -> Self {
        Self { kind: kind.to_owned(), title: title.to_owned(), reason: reason.map(str::to_owned) }
    }
}
