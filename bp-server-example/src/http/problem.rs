//! Errors as RFC 9457 `application/problem+json`: one variant per kind of problem, each with a
//! stable `type` URI, a status, and a detail that never holds internals or personal data.

use aide::OperationOutput;
use aide::generate::GenContext;
use aide::openapi::{MediaType, Operation, Response, SchemaObject};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as AxumResponse};
use bp_core::api::{Problem, ProblemError, json_pointer};
use bp_core::external::CallError;
use bp_core::external::fx::QuoteError;
use bp_core::external::lifecycle::RequestError;
use bp_core::external::loan::{LoanRequestError, LoanTransitionError};
use bp_core::payments::{InvalidIdempotencyKey, PaymentError};
use bp_core::sca::ScaError;
use bp_core::{Error, LedgerError, StoreError, StoreErrorKind};

/// The media type of problems.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The authentication scheme a `WWW-Authenticate` challenge names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449).
    Dpop,
}

/// Why a request's credentials were refused, as RFC 6750 §3.1 and RFC 9449 §7.1 name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `invalid_token`: the access token cannot be used (so, with this scheme).
    InvalidToken,
    /// `invalid_dpop_proof`: the DPoP proof is missing or not valid for this request.
    InvalidDpopProof,
    /// `use_dpop_nonce`: the proof must carry the server's nonce (sent in `DPoP-Nonce`).
    UseDpopNonce,
}

impl Refusal {
    /// The `error` of the challenge.
    pub fn error(self) -> &'static str {
        match self {
            Refusal::InvalidToken => "invalid_token",
            Refusal::InvalidDpopProof => "invalid_dpop_proof",
            Refusal::UseDpopNonce => "use_dpop_nonce",
        }
    }
}

/// The algorithms a `DPoP` challenge offers (`algs`).
pub const DPOP_CHALLENGE_ALGS: &str = "ES256 EdDSA";

/// Every problem the API answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid access token.
    #[error("a valid access token is required")]
    Unauthorized(&'static str),
    /// The sign-in is too old for this: sign in again (RFC 9470 step-up).
    #[error("sign in again to do this: it needs a sign-in with both factors at most {max_age_s} s old")]
    StepUpRequired {
        /// The oldest sign-in accepted, in seconds.
        max_age_s: u64,
        /// The scheme of the caller's token, which the challenge names.
        scheme: AuthScheme,
    },
    /// Credentials refused, with the challenge to answer (the reason is the problem's detail).
    #[error("{reason}")]
    Refused {
        /// The scheme the challenge names.
        scheme: AuthScheme,
        /// Why.
        refusal: Refusal,
        /// In words.
        reason: &'static str,
        /// The server's DPoP nonce, to send in `DPoP-Nonce`.
        nonce: Option<String>,
    },
    /// The session ended after `auth.idle_timeout_s` without activity: sign in again.
    #[error("the session ended after {0} s without activity; sign in again")]
    SessionInactive(u64),
    /// The token lacks a scope or an authentication method.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No such resource for this customer (also what another customer's ids get).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request is well-formed but breaks a rule.
    #[error("{0}")]
    Unprocessable(String),
    /// Missing `Idempotency-Key`.
    #[error("the Idempotency-Key header is required: a unique value per payment, reused on every retry")]
    IdempotencyKeyMissing,
    /// The same key with another request.
    #[error("this Idempotency-Key was used for a different request")]
    IdempotencyConflict,
    /// Not enough money.
    #[error("the account's available balance is too low for this payment")]
    InsufficientFunds,
    /// Account or currency problem of a payment.
    #[error("{0}")]
    AccountUnusable(String),
    /// The state does not allow the operation.
    #[error("{0}")]
    Conflict(String),
    /// An SCA answer was wrong.
    #[error("the authentication answer is not valid for this challenge")]
    ScaFailed,
    /// The SCA challenge can no longer be answered.
    #[error("{0}")]
    ChallengeClosed(&'static str),
    /// Too many failures; locked for a while.
    #[error("too many failed attempts; try again later")]
    LockedOut {
        /// Seconds until it unlocks.
        retry_after_s: u64,
    },
    /// Too many requests.
    #[error("too many requests; slow down")]
    RateLimited {
        /// Seconds to wait.
        retry_after_s: u64,
    },
    /// The body is not JSON.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// The body is too large.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// Store overloaded or unreachable.
    #[error("the service is temporarily unavailable; retry with the same Idempotency-Key")]
    Unavailable,
    /// The store cannot take changes (its disk is full, or it is read-only): retrying at once
    /// will not help, an operator must act.
    #[error("changes cannot be stored at the moment; retrying at once will not help")]
    WritesUnavailable,
    /// A passkey's credential was refused (malformed, not made for this site or this ceremony,
    /// or without user verification); nothing was changed.
    #[error("{0}")]
    PasskeyRefused(&'static str),
    /// Passkeys are off on this server: why (its RP ID would be an IP address).
    #[error("{0}")]
    PasskeysUnavailable(String),
    /// The FX quote accepted is not the provider's any more, expired, or another payment took it:
    /// ask for a new one.
    #[error("{0}")]
    QuoteStale(String),
    /// The FX quote accepted is unknown to the provider.
    #[error("{0}")]
    QuoteUnknown(String),
    /// An outside party (the FX provider) did not answer or refused: nothing was held.
    #[error("the outside party did not answer; try again later")]
    PartyUnavailable,
    /// Payments to other banks need a payment rail, and this server has none configured.
    #[error("this server has no payment rail configured")]
    ExternalUnavailable,
    /// A loan's application or step refused by its rules; nothing was written.
    #[error("{1}")]
    Loan(LoanProblem, String),
    /// A bug or an unexpected failure; details are in the logs under the request id.
    #[error("an unexpected error occurred")]
    Internal,
    /// `error`, with the part of the request at fault, which the problem's `errors` names (its
    /// type, status and detail are `error`'s).
    #[error("{error}")]
    At {
        /// The problem.
        error: Box<ApiError>,
        /// The part of the request at fault.
        at: ProblemError,
    },
}

impl ApiError {
    /// A request body that breaks a rule (422 `invalid-request`) at its member `pointer` (an RFC
    /// 6901 JSON Pointer, `/amount`).
    pub fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
        ApiError::Unprocessable(detail.into()).at_pointer(pointer)
    }

    /// A malformed query parameter or header `name` (400 `bad-request`).
    pub fn bad_parameter(name: &str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest(detail.into()).at_parameter(name)
    }

    /// The same problem, naming the request body's member at `pointer` as the one at fault.
    pub fn at_pointer(self, pointer: &str) -> Self {
        let at = ProblemError::at_pointer(pointer, self.to_string());
        ApiError::At { error: Box::new(self), at }
    }

    /// The same problem, naming the request body's member at `pointer` when there is one.
    pub fn at_pointer_of(self, pointer: Option<&str>) -> Self {
        match pointer {
            Some(pointer) => self.at_pointer(pointer),
            None => self,
        }
    }

    /// The same problem, naming the query parameter or header `name` as the one at fault.
    pub fn at_parameter(self, name: &str) -> Self {
        let at = ProblemError::at_parameter(name, self.to_string());
        ApiError::At { error: Box::new(self), at }
    }

    /// The problem itself, without the parts at fault.
    fn kind(&self) -> &ApiError {
        match self {
            ApiError::At { error, .. } => error.kind(),
            other => other,
        }
    }

    /// The same problem, a step-up's challenge in `scheme`, the scheme of the caller's token.
    pub fn in_scheme(self, scheme: AuthScheme) -> Self {
        match self {
            ApiError::StepUpRequired { max_age_s, .. } => ApiError::StepUpRequired { max_age_s, scheme },
            other => other,
        }
    }

    /// Status, stable slug and title.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized(_) | ApiError::Refused { refusal: Refusal::InvalidToken, .. } => {
                (S::UNAUTHORIZED, "unauthorized", "Authentication required")
            }
            ApiError::StepUpRequired { .. } => {
                (S::UNAUTHORIZED, "insufficient-user-authentication", "A fresh sign-in is needed")
            }
            ApiError::SessionInactive(_) => (S::UNAUTHORIZED, "session-inactive", "Signed out after inactivity"),
            ApiError::Refused { refusal: Refusal::InvalidDpopProof, .. } => {
                (S::UNAUTHORIZED, "invalid-dpop-proof", "Proof of possession refused")
            }
            ApiError::Refused { refusal: Refusal::UseDpopNonce, .. } => {
                (S::UNAUTHORIZED, "use-dpop-nonce", "Proof of possession needs the server's nonce")
            }
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Not allowed"),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            ApiError::BadRequest(_) => (S::BAD_REQUEST, "bad-request", "Malformed request"),
            ApiError::Unprocessable(_) => (S::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid request"),
            ApiError::IdempotencyKeyMissing => {
                (S::BAD_REQUEST, "idempotency-key-missing", "Idempotency-Key header required")
            }
            ApiError::IdempotencyConflict => (S::CONFLICT, "idempotency-conflict", "Idempotency-Key reused"),
            ApiError::InsufficientFunds => (S::UNPROCESSABLE_ENTITY, "insufficient-funds", "Insufficient funds"),
            ApiError::AccountUnusable(_) => (S::UNPROCESSABLE_ENTITY, "account-unusable", "Account cannot be used"),
            ApiError::Conflict(_) => (S::CONFLICT, "conflict", "Conflict with the current state"),
            ApiError::ScaFailed => (S::FORBIDDEN, "sca-failed", "Strong customer authentication failed"),
            ApiError::ChallengeClosed(_) => (S::CONFLICT, "challenge-closed", "Challenge no longer answerable"),
            ApiError::LockedOut { .. } => (S::TOO_MANY_REQUESTS, "locked-out", "Temporarily locked"),
            ApiError::RateLimited { .. } => (S::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            ApiError::UnsupportedMediaType => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            ApiError::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large"),
            ApiError::Unavailable => (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable"),
            ApiError::WritesUnavailable => {
                (S::SERVICE_UNAVAILABLE, "writes-unavailable", "Storage cannot accept changes")
            }
            ApiError::PasskeyRefused(_) => (S::UNPROCESSABLE_ENTITY, "passkey-refused", "Passkey refused"),
            ApiError::PasskeysUnavailable(_) => {
                (S::NOT_IMPLEMENTED, "passkeys-unavailable", "Passkeys are not available on this server")
            }
            ApiError::QuoteStale(_) => (S::CONFLICT, "fx-quote-stale", "The quote changed, expired or was used"),
            ApiError::QuoteUnknown(_) => (S::UNPROCESSABLE_ENTITY, "fx-quote-unknown", "No such quote"),
            ApiError::PartyUnavailable => {
                (S::SERVICE_UNAVAILABLE, "external-party-unavailable", "An outside party did not answer")
            }
            ApiError::ExternalUnavailable => {
                (S::SERVICE_UNAVAILABLE, "external-services-unavailable", "External services are not connected")
            }
            ApiError::Loan(kind, _) => kind.parts(),
            ApiError::Internal => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
            ApiError::At { error, .. } => error.parts(),
        }
    }

    /// The problem document.
    pub fn problem(&self) -> Problem {
        let (status, slug, title) = self.parts();
        let mut errors = Vec::new();
        let mut next = self;
        while let ApiError::At { error, at } = next {
            errors.push(at.clone());
            next = error;
        }
        // The part named first (the innermost) first.
        errors.reverse();
        Problem {
            type_uri: type_uri(slug),
            title: title.to_owned(),
            status: status.as_u16(),
            detail: Some(self.to_string()),
            instance: None,
            errors,
        }
    }
}

/// The stable `type` URI of a problem slug.
pub fn type_uri(slug: &str) -> String {
    format!("urn:bp:problem:{slug}")
}

/// A problem response of any status and slug (used by the fallbacks and middleware).
pub fn problem_response(status: StatusCode, slug: &str, title: &str, detail: &str) -> AxumResponse {
    document_response(Problem {
        type_uri: type_uri(slug),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: Some(detail.to_owned()),
        instance: None,
        errors: Vec::new(),
    })
}

/// The response of `problem`, with its status.
fn document_response(problem: Problem) -> AxumResponse {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(problem)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> AxumResponse {
        let (status, slug, _) = self.parts();
        let mut response = document_response(self.problem());
        let headers = response.headers_mut();
        match self.kind() {
            ApiError::Unauthorized(reason) => {
                // Either scheme will do: a challenge for each (RFC 9449 §7.2).
                challenge(headers, AuthScheme::Bearer, Refusal::InvalidToken, reason);
                challenge(headers, AuthScheme::Dpop, Refusal::InvalidToken, reason);
            }
            ApiError::SessionInactive(_) => {
                let reason = "the session ended after a time without activity";
                challenge(headers, AuthScheme::Bearer, Refusal::InvalidToken, reason);
                challenge(headers, AuthScheme::Dpop, Refusal::InvalidToken, reason);
            }
            ApiError::Refused { scheme, refusal, reason, nonce } => {
                challenge(headers, *scheme, *refusal, reason);
                if let Some(v) = nonce.as_deref().and_then(|n| HeaderValue::from_str(n).ok()) {
                    headers.insert(&DPOP_NONCE, v);
                }
            }
            ApiError::StepUpRequired { max_age_s, scheme } => {
                // RFC 9470 §3: the client signs in again with `max_age` (our sign-ins are always
                // fresh, with both factors).
                let scheme = match scheme {
                    AuthScheme::Bearer => "Bearer",
                    AuthScheme::Dpop => "DPoP",
                };
                let value = format!(
                    "{scheme} error=\"insufficient_user_authentication\", error_description=\"a more recent sign-in is needed\", max_age={max_age_s}"
                );
                if let Ok(v) = HeaderValue::from_str(&value) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::LockedOut { retry_after_s } | ApiError::RateLimited { retry_after_s } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
            }
            ApiError::Unavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::PartyUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            _ => {}
        }
        if status.is_server_error() {
            // The cause is logged where it happened; the response says nothing more.
            tracing::warn!(problem = slug, "answered with a server error");
        }
        response
    }
}

/// The header that carries the server's DPoP nonce (RFC 9449 §8).
pub static DPOP_NONCE: header::HeaderName = header::HeaderName::from_static("dpop-nonce");

/// Appends a `WWW-Authenticate` challenge of `scheme` saying why (RFC 6750 §3, RFC 9449 §7.1).
fn challenge(headers: &mut axum::http::HeaderMap, scheme: AuthScheme, refusal: Refusal, reason: &str) {
    let value = match scheme {
        AuthScheme::Bearer => format!("Bearer error=\"{}\", error_description=\"{reason}\"", refusal.error()),
        AuthScheme::Dpop => {
            format!(
                "DPoP error=\"{}\", error_description=\"{reason}\", algs=\"{DPOP_CHALLENGE_ALGS}\"",
                refusal.error()
            )
        }
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(header::WWW_AUTHENTICATE, v);
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e.kind() {
            StoreErrorKind::Unavailable | StoreErrorKind::Overloaded | StoreErrorKind::Closed => {
                tracing::warn!(error = %e, "store unavailable");
                ApiError::Unavailable
            }
            StoreErrorKind::Conflict => {
                tracing::warn!(error = %e, "store conflict");
                ApiError::Conflict("the record conflicts with one that exists".to_owned())
            }
            StoreErrorKind::StorageFull | StoreErrorKind::ReadOnly => {
                tracing::error!(error = %e, "the store cannot accept changes");
                ApiError::WritesUnavailable
            }
            _ => {
                tracing::error!(error = %e, "store failure");
                ApiError::Internal
            }
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::Ledger(l) => l.into(),
            Error::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "unexpected ledger error");
                ApiError::Internal
            }
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientFunds { .. } => ApiError::InsufficientFunds,
            LedgerError::IdempotencyConflict { .. } => ApiError::IdempotencyConflict,
            LedgerError::CurrencyMismatch { expected, actual, .. } => {
                ApiError::AccountUnusable(format!("the account is in {expected}, the amount in {actual}"))
                    .at_pointer("/amount/currency")
            }
            LedgerError::AccountNotActive { status, .. } => {
                ApiError::AccountUnusable(format!("the account is {}", format!("{status:?}").to_lowercase()))
            }
            LedgerError::SameAccount => ApiError::Unprocessable("payer and payee accounts must differ".to_owned()),
            LedgerError::NonPositiveAmount => ApiError::invalid(AMOUNT, "the amount must be positive"),
            LedgerError::Money(m) => ApiError::invalid(AMOUNT, m.to_string()),
            LedgerError::InvalidField { field, reason } => {
                let error = ApiError::Unprocessable(format!("invalid {field}: {reason}"));
                if LEDGER_FIELDS.contains(&field) { error } else { error.at_pointer(&field_pointer(field)) }
            }
            LedgerError::BalanceOverflow { .. } => ApiError::invalid(AMOUNT, "the amount is too large for the account"),
            LedgerError::AccountNotFound(_) => ApiError::NotFound("account"),
            LedgerError::TransferNotFound(_) => ApiError::NotFound("transfer"),
            LedgerError::CustomerNotFound(_) => ApiError::NotFound("customer"),
            LedgerError::HoldExpired { .. } => ApiError::ChallengeClosed("the payment expired before it was confirmed"),
            LedgerError::InvalidTransition { to, .. } => {
                ApiError::Conflict(format!("the transfer can no longer become {}", format!("{to:?}").to_lowercase()))
            }
            other => {
                tracing::error!(error = %other, "unexpected rule violation");
                ApiError::Internal
            }
        }
    }
}

/// The member of every payment, quote, loan and repayment request that holds its amount.
const AMOUNT: &str = "/amount";

/// Fields of [`LedgerError::InvalidField`] that name the ledger's own records (a transition's
/// effects, a service record), never a member of a request: such a problem names no member.
const LEDGER_FIELDS: [&str; 4] = ["effects", "record", "account_id", "number"];

/// The JSON Pointer of a field of [`LedgerError::InvalidField`] (`contact.email` →
/// `/contact/email`).
fn field_pointer(field: &str) -> String {
    json_pointer(field.split('.'))
}

/// The problem of query filters that break a rule of the ledger: 400, naming the parameter when
/// the field is one of the query's `parameters` (a rule on two of them, as `amount` bounds that
/// must not be negative, names none).
pub fn bad_filter(e: LedgerError, parameters: &[&str]) -> ApiError {
    match e {
        LedgerError::InvalidField { field, reason } => {
            let error = ApiError::BadRequest(format!("{field}: {reason}"));
            if parameters.contains(&field) { error.at_parameter(field) } else { error }
        }
        other => ApiError::from(other),
    }
}

/// The problem of a `cursor` parameter that is not one this API gave.
pub fn bad_cursor() -> ApiError {
    ApiError::bad_parameter("cursor", "cursor: not a cursor of this API")
}

impl From<ScaError> for ApiError {
    fn from(e: ScaError) -> Self {
        match e {
            ScaError::Invalid(m) | ScaError::TooMany(m) => ApiError::Unprocessable(m),
            ScaError::Duplicate(m) => ApiError::Conflict(m.to_owned()),
            ScaError::NotFound(what) => ApiError::NotFound(what),
            ScaError::WrongChallenge | ScaError::MethodNotAccepted(_) => ApiError::Unprocessable(e.to_string()),
            ScaError::Failed => ApiError::ScaFailed,
            ScaError::Closed(why) => ApiError::ChallengeClosed(why.reason()),
            ScaError::LockedOut { retry_after_s } => ApiError::LockedOut { retry_after_s },
            ScaError::StepUp { max_age_s } => ApiError::StepUpRequired { max_age_s, scheme: AuthScheme::Bearer },
            ScaError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "unexpected SCA refusal");
                ApiError::Internal
            }
        }
    }
}

impl From<PaymentError> for ApiError {
    fn from(e: PaymentError) -> Self {
        match e {
            // Only a payment to an account of this bank can name the payer's own account.
            PaymentError::Ledger(LedgerError::SameAccount) => {
                ApiError::invalid("/to_account_number", "payer and payee accounts must differ")
            }
            PaymentError::Ledger(l) => l.into(),
            PaymentError::Sca(s) => s.into(),
            PaymentError::NotFound(what) => ApiError::NotFound(what),
            PaymentError::UnknownPayee => ApiError::invalid("/to_account_number", e.to_string()),
            PaymentError::ChallengeMismatch => ApiError::Conflict(e.to_string()),
            PaymentError::Rail(ref r) => {
                let pointer = match r {
                    RequestError::Remittance => Some("/reference"),
                    RequestError::Currency { .. } => Some("/amount/currency"),
                    RequestError::Amount => Some(AMOUNT),
                    _ => None,
                };
                ApiError::Unprocessable(e.to_string()).at_pointer_of(pointer)
            }
            PaymentError::OwnIban { .. } => ApiError::invalid("/to_iban", e.to_string()),
            PaymentError::NotSupported(_) => ApiError::ExternalUnavailable,
            PaymentError::Loan(l) => l.into(),
            PaymentError::Quote(q) => match q {
                QuoteError::Changed | QuoteError::Expired { .. } => {
                    ApiError::QuoteStale(q.to_string()).at_pointer("/quote")
                }
                // Taken by another payment: no member of this request is at fault.
                QuoteError::Used => ApiError::QuoteStale(q.to_string()),
                QuoteError::Unknown => ApiError::QuoteUnknown(q.to_string()).at_pointer("/quote"),
                QuoteError::Provider(_) => {
                    tracing::warn!(error = %q, "the FX provider gave a quote the bank does not offer");
                    ApiError::PartyUnavailable
                }
                QuoteError::SameCurrency => ApiError::invalid("/target_currency", q.to_string()),
                QuoteError::Amount | QuoteError::TooSmall(_) => ApiError::invalid(AMOUNT, q.to_string()),
                other => ApiError::Unprocessable(other.to_string()),
            },
            PaymentError::Provider(CallError::Refused(_)) => {
                ApiError::Unprocessable("the FX provider does not quote this conversion".to_owned())
            }
            PaymentError::Provider(call) => {
                tracing::warn!(error = %call, "the FX provider failed");
                ApiError::PartyUnavailable
            }
            PaymentError::Store(s) => s.into(),
            other => {
                tracing::error!(error = %other, "unexpected payment refusal");
                ApiError::Internal
            }
        }
    }
}

/// Why a loan's application or step was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoanProblem {
    /// The application's amount, term or purpose is out of bounds.
    Application,
    /// Only an offered loan can be accepted.
    NotOffered,
    /// The offer expired before it was accepted.
    OfferExpired,
    /// Only an active loan can be repaid early.
    NotActive,
    /// An instalment is due and not collected yet: it comes first.
    InstalmentDue,
    /// An early repayment is more than zero and at most the outstanding principal, in the
    /// loan's currency.
    RepaymentAmount,
    /// A partial repayment would leave too little for the remaining instalments.
    RemainderTooSmall,
    /// The schedule cannot be computed for this repayment.
    Schedule,
}

impl LoanProblem {
    fn parts(self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            LoanProblem::Application => (S::UNPROCESSABLE_ENTITY, "loan-application", "The application is not valid"),
            LoanProblem::NotOffered => (S::CONFLICT, "loan-not-offered", "The loan is not offered"),
            LoanProblem::OfferExpired => (S::CONFLICT, "loan-offer-expired", "The loan's offer expired"),
            LoanProblem::NotActive => (S::CONFLICT, "loan-not-active", "The loan is not being repaid"),
            LoanProblem::InstalmentDue => (S::CONFLICT, "loan-instalment-due", "An instalment is due first"),
            LoanProblem::RepaymentAmount => (S::UNPROCESSABLE_ENTITY, "repayment-amount", "Repayment amount refused"),
            LoanProblem::RemainderTooSmall => {
                (S::UNPROCESSABLE_ENTITY, "repayment-remainder-too-small", "Repay less, or in full")
            }
            LoanProblem::Schedule => (S::UNPROCESSABLE_ENTITY, "loan-schedule", "The schedule cannot be computed"),
        }
    }
}

impl From<LoanRequestError> for ApiError {
    fn from(e: LoanRequestError) -> Self {
        let pointer = match e {
            LoanRequestError::Amount => Some(AMOUNT),
            LoanRequestError::Term => Some("/term_months"),
            LoanRequestError::Purpose => Some("/purpose"),
            _ => None,
        };
        ApiError::Loan(LoanProblem::Application, e.to_string()).at_pointer_of(pointer)
    }
}

impl From<LoanTransitionError> for ApiError {
    fn from(e: LoanTransitionError) -> Self {
        use LoanTransitionError as E;
        let kind = match &e {
            E::NotOffered { .. } => LoanProblem::NotOffered,
            E::OfferExpired { .. } => LoanProblem::OfferExpired,
            E::NotActive { .. } => LoanProblem::NotActive,
            E::InstalmentDue { .. } => LoanProblem::InstalmentDue,
            E::RepaymentAmount { .. } => LoanProblem::RepaymentAmount,
            E::RemainderTooSmall => LoanProblem::RemainderTooSmall,
            E::Schedule(_) => LoanProblem::Schedule,
            E::RepaymentConflict { .. } => return ApiError::IdempotencyConflict,
            // A record that is not a loan's, a provider's report, a worker's input: never the
            // customer's doing.
            other => {
                tracing::error!(error = %other, "unexpected loan refusal");
                return ApiError::Internal;
            }
        };
        let error = ApiError::Loan(kind, e.to_string());
        match kind {
            // An early repayment's only member is its amount.
            LoanProblem::RepaymentAmount | LoanProblem::RemainderTooSmall => error.at_pointer(AMOUNT),
            _ => error,
        }
    }
}

/// The header that carries a payment's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

impl From<InvalidIdempotencyKey> for ApiError {
    fn from(e: InvalidIdempotencyKey) -> Self {
        ApiError::bad_parameter(IDEMPOTENCY_KEY, e.to_string())
    }
}

impl OperationOutput for ApiError {
    type Inner = Problem;

    fn operation_response(ctx: &mut GenContext, _operation: &mut Operation) -> Option<Response> {
        let schema = ctx.schema.subschema_for::<Problem>();
        Some(Response {
            description: "A problem (RFC 9457)".into(),
            content: [(
                PROBLEM_JSON.to_owned(),
                MediaType {
                    schema: Some(SchemaObject { json_schema: schema, example: None, external_docs: None }),
                    ..Default::default()
                },
            )]
            .into(),
            ..Default::default()
        })
    }

    fn inferred_responses(
        ctx: &mut GenContext,
        operation: &mut Operation,
    ) -> Vec<(Option<aide::openapi::StatusCode>, Response)> {
        // Document the default response as a problem; the specific statuses are listed per route.
        Self::operation_response(ctx, operation).map(|r| vec![(None, r)]).unwrap_or_default()
    }
}

/// The result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;
