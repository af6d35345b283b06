//! Errors in two tiers: [`Error`], what went wrong inside the SDK (with its source, for logs and
//! tests), and [`BpError`], the small enum an app acts on, mapped from it in one place
//! ([`From<Error> for BpError`]). A [`BpError`]'s message is fixed text per kind: it never
//! carries a server's detail, a token, an account number or anything the customer typed.

#![forbid(unsafe_code)]

use bp_core::api::Problem;

use crate::host::HostError;

/// The stable problem types (RFC 9457 `type`) the server answers with, by their slug.
const PROBLEM_PREFIX: &str = "urn:bp:problem:";

/// What went wrong inside the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request did not reach the server or its answer did not arrive.
    #[error("network: {0}")]
    Network(#[source] reqwest::Error),
    /// The server answered a problem (RFC 9457).
    #[error("the server answered {} {}", .problem.status, .problem.type_uri)]
    Problem {
        /// The problem document (boxed: with its `errors`, it is most of the error's size).
        problem: Box<Problem>,
        /// `Retry-After`, in seconds, when the server sent one.
        retry_after_s: Option<u64>,
    },
    /// The server answered an error status without a problem document.
    #[error("the server answered status {0} without a problem document")]
    Status(u16),
    /// The server's answer did not read as the API's wire type.
    #[error("the server's answer did not read: {0}")]
    Decode(String),
    /// No session: never signed in, signed out, or the server ended the session.
    #[error("not signed in")]
    SignedOut,
    /// The OAuth2 server refused a token request (`error` of RFC 6749 §5.2).
    #[error("the authorization server refused: {0}")]
    OAuth(String),
    /// The redirect back from the browser is not the answer to our request, or says the
    /// sign-in failed.
    #[error("sign-in refused: {0}")]
    SignIn(&'static str),
    /// The id token is not valid for this sign-in.
    #[error("the id token is not valid: {0}")]
    IdToken(String),
    /// The challenge's text does not name what the customer asked to pay: refused unsigned.
    #[error("the challenge does not match the payment: {0}")]
    ChallengeMismatch(&'static str),
    /// Input refused before anything was sent.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, by its name in the SDK's records.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An app's callback failed (keystore, biometric prompt, storage).
    #[error("the app's callback failed: {0}")]
    Host(#[from] HostError),
    /// A record the SDK stored does not read back, or a key or signature is malformed.
    #[error("corrupt: {0}")]
    Corrupt(String),
}

impl Error {
    /// The problem's slug (`insufficient-funds`), when the server answered one.
    pub fn problem_slug(&self) -> Option<&str> {
        match self {
            Error::Problem { problem, .. } => problem.type_uri.strip_prefix(PROBLEM_PREFIX),
            _ => None,
        }
    }

    /// Whether the server gave a final answer to a request: a retry with the same idempotency
    /// key would get the same answer. Network failures, server errors (5xx), rate limits and a
    /// lost session are not final, so a payment's key is kept for its retry.
    pub fn is_final_answer(&self) -> bool {
        match self {
            Error::Problem { problem, .. } => {
                (400..500).contains(&problem.status) && problem.status != 429 && problem.status != 401
            }
            Error::Status(status) => (400..500).contains(status) && *status != 429 && *status != 401,
            _ => false,
        }
    }
}

/// What an app can act on. Every variant's message is fixed text; none carries personal data.
#[derive(Debug, thiserror::Error, uniffi::Error)]
#[non_exhaustive]
pub enum BpError {
    /// The server could not be reached: retry later (payments keep their idempotency key).
    #[error("the bank could not be reached; check the connection and retry")]
    Network,
    /// Not signed in any more (or never): start the sign-in again.
    #[error("signed out; sign in again")]
    SignedOut,
    /// Strong customer authentication is needed or failed: sign in again with both factors,
    /// or answer the challenge again.
    #[error("strong customer authentication is required")]
    ScaRequired,
    /// The account's available balance is too low.
    #[error("insufficient funds")]
    InsufficientFunds,
    /// The request conflicts with the current state (an idempotency key used for another
    /// payment, a challenge no longer answerable, a stale quote): refresh and try again.
    #[error("the request conflicts with the current state")]
    Conflict,
    /// Input refused; `field` names the field when it is known (`request` otherwise): the
    /// SDK's own check, or the member the server's problem names in its `errors`.
    #[error("invalid input: {field}")]
    InvalidInput {
        /// The field of the SDK's record (`amount_minor`), the request member the server named
        /// (`amount`, `amount/currency`, `to_iban`, `term_months`, `limit`), or `request`.
        field: String,
    },
    /// Too many requests or attempts: wait `retry_after_s` seconds.
    #[error("too many attempts; retry after {retry_after_s} s")]
    RateLimited {
        /// Seconds to wait (60 when the server did not say).
        retry_after_s: u64,
    },
    /// The device's keystore, biometric prompt or storage failed (or the customer cancelled).
    #[error("the device could not complete this")]
    Device,
    /// The server failed or is unavailable, or answered something the SDK cannot read.
    #[error("the bank's server could not complete this; retry later")]
    Server,
}

/// Seconds to wait when a rate limit came without `Retry-After`.
const RETRY_AFTER_DEFAULT_S: u64 = 60;

impl From<Error> for BpError {
    fn from(e: Error) -> Self {
        match e {
            Error::Network(_) => BpError::Network,
            Error::SignedOut | Error::OAuth(_) | Error::SignIn(_) | Error::IdToken(_) => BpError::SignedOut,
            Error::ChallengeMismatch(_) => BpError::ScaRequired,
            Error::Invalid { field, .. } => BpError::InvalidInput { field: field.to_owned() },
            Error::Host(_) => BpError::Device,
            Error::Status(429) => BpError::RateLimited { retry_after_s: RETRY_AFTER_DEFAULT_S },
            Error::Status(401) => BpError::SignedOut,
            Error::Status(_) | Error::Decode(_) | Error::Corrupt(_) => BpError::Server,
            Error::Problem { ref problem, retry_after_s } => {
                let slug = problem.type_uri.strip_prefix(PROBLEM_PREFIX).unwrap_or("");
                match (of_problem(slug, problem.status, retry_after_s), member_at_fault(problem)) {
                    (BpError::InvalidInput { .. }, Some(field)) => BpError::InvalidInput { field },
                    (mapped, _) => mapped,
                }
            }
        }
    }
}

/// Longest member name the SDK passes on from a problem's `errors`.
const MEMBER_LEN_MAX: usize = 64;

/// The request member a problem names first in its `errors` (RFC 9457 §3): the JSON Pointer
/// without its leading `/` (`amount`, `contact/email`) or the parameter (`limit`,
/// `Idempotency-Key`). Only a name of the API's own shape passes (letters, digits, `_`, `-`,
/// `/`, at most [`MEMBER_LEN_MAX`]): a member the client made up, as a key of a free-form map,
/// could hold what the customer typed, and it would then show in the error's message.
fn member_at_fault(problem: &Problem) -> Option<String> {
    let member = problem.errors.first()?.member()?;
    let api_shaped = !member.is_empty()
        && member.len() <= MEMBER_LEN_MAX
        && member.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/'));
    api_shaped.then(|| member.to_owned())
}

/// The app's error for the server's problem `slug` (status `status`).
fn of_problem(slug: &str, status: u16, retry_after_s: Option<u64>) -> BpError {
    match slug {
        "unauthorized" | "session-inactive" | "invalid-dpop-proof" | "use-dpop-nonce" | "forbidden" => {
            BpError::SignedOut
        }
        "insufficient-user-authentication" | "sca-failed" => BpError::ScaRequired,
        "insufficient-funds" => BpError::InsufficientFunds,
        "idempotency-conflict" | "conflict" | "challenge-closed" | "fx-quote-stale" => BpError::Conflict,
        "rate-limited" | "locked-out" => {
            BpError::RateLimited { retry_after_s: retry_after_s.unwrap_or(RETRY_AFTER_DEFAULT_S) }
        }
        "not-found" => BpError::InvalidInput { field: "id".to_owned() },
        "account-unusable" => BpError::InvalidInput { field: "account".to_owned() },
        "fx-quote-unknown" => BpError::InvalidInput { field: "quote".to_owned() },
        _ if status == 401 => BpError::SignedOut,
        _ if status == 429 => BpError::RateLimited { retry_after_s: retry_after_s.unwrap_or(RETRY_AFTER_DEFAULT_S) },
        _ if (400..500).contains(&status) => BpError::InvalidInput { field: "request".to_owned() },
        _ => BpError::Server,
    }
}

#[cfg(test)]
mod tests {
    use bp_core::api::ProblemError;

    use super::*;

    fn problem(slug: &str, status: u16) -> Error {
        problem_at(slug, status, Vec::new())
    }

    fn problem_at(slug: &str, status: u16, errors: Vec<ProblemError>) -> Error {
        let problem = Problem {
            type_uri: format!("{PROBLEM_PREFIX}{slug}"),
            title: "t".to_owned(),
            status,
            detail: Some("Ada Lovelace's account 1234 was refused".to_owned()),
            instance: None,
            errors,
        };
        Error::Problem { problem: Box::new(problem), retry_after_s: Some(7) }
    }

    fn field_of(e: Error) -> Option<String> {
        match BpError::from(e) {
            BpError::InvalidInput { field } => Some(field),
            _ => None,
        }
    }

    #[test]
    fn invalid_input_names_the_member_the_server_names() {
        let detail = "Ada Lovelace's amount";
        let at = |pointer: &str| vec![ProblemError::at_pointer(pointer, detail)];
        let parameter = |name: &str| vec![ProblemError::at_parameter(name, detail)];
        let cases = [
            (problem_at("invalid-request", 422, at("/amount")), "amount"),
            (problem_at("invalid-request", 422, at("/contact/email")), "contact/email"),
            (problem_at("repayment-amount", 422, at("/amount")), "amount"),
            (problem_at("bad-request", 400, parameter("limit")), "limit"),
            (problem_at("bad-request", 400, parameter("Idempotency-Key")), "Idempotency-Key"),
            // The first member named, when there are more.
            (problem_at("invalid-request", 422, [at("/to_iban"), at("/amount")].concat()), "to_iban"),
            // Without `errors`, today's guesses.
            (problem("invalid-request", 422), "request"),
            (problem("account-unusable", 422), "account"),
            (problem("fx-quote-unknown", 422), "quote"),
            (problem_at("account-unusable", 422, at("/amount/currency")), "amount/currency"),
            // A member that is not of the API's shape (a key of free-form extra fields, say) is
            // not passed on.
            (problem_at("invalid-request", 422, at("/extra/Ada Lovelace")), "request"),
            (problem_at("invalid-request", 422, at(&format!("/{}", "a".repeat(MEMBER_LEN_MAX + 1)))), "request"),
            (problem_at("invalid-request", 422, at("")), "request"),
        ];
        for (error, field) in cases {
            let described = error.to_string();
            assert_eq!(field_of(error).as_deref(), Some(field), "{described}");
        }
        // A problem that is not about input stays what it is, whatever it names.
        let funds = problem_at("insufficient-funds", 422, at("/amount"));
        assert!(matches!(BpError::from(funds), BpError::InsufficientFunds));
        let conflict = problem_at("fx-quote-stale", 409, at("/quote"));
        assert!(matches!(BpError::from(conflict), BpError::Conflict));
        let text = BpError::from(problem_at("invalid-request", 422, at("/amount"))).to_string();
        assert_eq!(text, "invalid input: amount", "no detail of the server");
    }

    #[test]
    fn problems_map_to_what_an_app_acts_on() {
        let cases = [
            ("insufficient-funds", 422, "insufficient funds"),
            ("idempotency-conflict", 409, "the request conflicts with the current state"),
            ("insufficient-user-authentication", 401, "strong customer authentication is required"),
            ("unauthorized", 401, "signed out; sign in again"),
            ("rate-limited", 429, "too many attempts; retry after 7 s"),
            ("invalid-request", 422, "invalid input: request"),
            ("internal", 500, "the bank's server could not complete this; retry later"),
            ("a-type-added-later", 503, "the bank's server could not complete this; retry later"),
        ];
        for (slug, status, message) in cases {
            let mapped = BpError::from(problem(slug, status));
            assert_eq!(mapped.to_string(), message, "{slug}");
        }
    }

    #[test]
    fn no_detail_of_the_server_reaches_the_app() {
        for slug in ["insufficient-funds", "invalid-request", "internal", "conflict"] {
            let text = BpError::from(problem(slug, 422)).to_string();
            assert!(!text.contains("Ada") && !text.contains("1234"), "{text}");
        }
    }

    #[test]
    fn only_final_answers_end_a_payments_retries() {
        assert!(problem("insufficient-funds", 422).is_final_answer());
        assert!(problem("idempotency-conflict", 409).is_final_answer());
        assert!(!problem("unavailable", 503).is_final_answer());
        assert!(!problem("rate-limited", 429).is_final_answer());
        assert!(!problem("unauthorized", 401).is_final_answer());
        assert!(!Error::SignedOut.is_final_answer());
    }
}
