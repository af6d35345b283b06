//! The REST API v1: one module per resource, every `/v1` route registered here, and the API
//! description generated from them. Every handler checks that the ids it is given belong to the
//! caller; another customer's ids get the same 404 as ids that do not exist.
//!
//! - [`profile`]: `/v1/me`, `/v1/me/photo`.
//! - [`accounts`]: `/v1/accounts`, one account, its history and its pending payments.
//! - [`transfers`]: `/v1/transfers`: payments with SCA, and their confirmation.
//! - [`beneficiaries`]: `/v1/beneficiaries`: trusted payees.
//! - [`devices`]: `/v1/devices`: device keys.
//! - [`passkeys`]: `/v1/passkeys`: passkeys (WebAuthn) that sign the customer in.
//! - [`loans`]: `/v1/loans`: applying for a loan, its schedule, accepting and repaying it.
//! - [`services`]: `/v1/services`: external services used.
//! - [`events`]: `/v1/events` and `/v1/events/ticket`: the event stream (not in the description:
//!   a stream is not a REST resource).

pub mod accounts;
pub mod beneficiaries;
pub mod devices;
pub mod events;
pub mod loans;
pub mod passkeys;
pub mod profile;
pub mod services;
pub mod transfers;

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::{delete_with, get_with, post_with};
use aide::openapi::{Components, Info, OpenApi, ReferenceOr, SecurityScheme, Server as ApiServer};
use axum::Json;
use axum::Router;
use axum::routing::{get, post};
use bp_core::api::{BeneficiaryResponse, DeviceResponse, PasskeyRegistration, PasskeyView, TransferResponse};

use crate::state::AppState;

/// The v1 routes, and the API description generated from them: every route but the event
/// stream's, which is not a REST resource and stays out of the description.
pub fn routes() -> (Router<Arc<AppState>>, OpenApi) {
    let mut api = base_description();
    let routes = documented()
        .finish_api(&mut api)
        .route(events::STREAM_PATH, get(events::stream))
        .route("/v1/events/ticket", post(events::ticket));
    (routes, api)
}

/// The API description, generated from the routes and the wire types.
pub fn api_description() -> OpenApi {
    routes().1
}

fn base_description() -> OpenApi {
    let mut components = Components::default();
    components.security_schemes.insert(
        "bearer".to_owned(),
        ReferenceOr::Item(SecurityScheme::Http {
            scheme: "bearer".to_owned(),
            bearer_format: Some("JWT".to_owned()),
            description: Some(
                "An access token of the built-in OAuth2 provider (see /.well-known/openid-configuration)".to_owned(),
            ),
            extensions: Default::default(),
        }),
    );
    components.security_schemes.insert(
        "dpop".to_owned(),
        ReferenceOr::Item(SecurityScheme::Http {
            scheme: "DPoP".to_owned(),
            bearer_format: Some("JWT".to_owned()),
            description: Some(
                "A DPoP-bound access token (RFC 9449): `Authorization: DPoP <token>` and a `DPoP` proof of the \
                 token's key for each request"
                    .to_owned(),
            ),
            extensions: Default::default(),
        }),
    );
    OpenApi {
        info: Info {
            title: "bp — Bank Payments API".to_owned(),
            version: "1".to_owned(),
            description: Some(
                "Accounts, history, transfers with strong customer authentication, beneficiaries and devices. \
                 Amounts are decimal strings. Errors are RFC 9457 problems."
                    .to_owned(),
            ),
            ..Info::default()
        },
        servers: vec![ApiServer { url: "/".to_owned(), ..ApiServer::default() }],
        components: Some(components),
        ..OpenApi::default()
    }
}

/// The routes the description documents.
fn documented() -> ApiRouter<Arc<AppState>> {
    aide::generate::extract_schemas(true);
    aide::generate::infer_responses(true);
    ApiRouter::new()
        .api_route("/v1/me", get_with(profile::me, |o| o.tag("profile").summary("The signed-in customer's profile (FR1, FR4)")))
        .api_route(
            "/v1/me/photo",
            get_with(profile::photo, |o| o.tag("profile").summary("The customer's photo").response::<200, Vec<u8>>()),
        )
        .api_route("/v1/accounts", get_with(accounts::accounts, |o| o.tag("accounts").summary("The customer's accounts")))
        .api_route("/v1/accounts/{account_id}", get_with(accounts::account, |o| o.tag("accounts").summary("One account")))
        .api_route(
            "/v1/accounts/{account_id}/transactions",
            get_with(accounts::transactions, |o| o.tag("accounts").summary("An account's history, newest first (FR2)")),
        )
        .api_route(
            "/v1/accounts/{account_id}/pending",
            get_with(accounts::pending, |o| {
                o.tag("accounts").summary("An account's pending payments, oldest first").description(
                    "Payments from this account waiting for SCA, holding their amount until confirmed or expired; at most 500. They are not in the history until posted.",
                )
            }),
        )
        .api_route(
            "/v1/transfers",
            post_with(transfers::create_transfer, |o| {
                o.tag("transfers")
                    .summary("Pay another account of this bank (FR5)")
                    .description("201: posted without SCA (see `exemption`). 202: pending; answer `sca` at /v1/transfers/{id}/confirm.")
                    .response::<201, Json<TransferResponse>>()
                    .response::<202, Json<TransferResponse>>()
            }),
        )
        .api_route(
            "/v1/interbank-transfers",
            post_with(transfers::create_interbank_transfer, |o| {
                o.tag("transfers")
                    .summary("Pay an account at another bank (SEPA credit transfer, EUR)")
                    .description(
                        "202: handed to the rail (see `service`; follow it at /v1/services), or pending: answer `sca` \
                         at /v1/transfers/{id}/confirm, whose answer then names the service. The funds are held until \
                         the rail settles (posted) or rejects (released) the payment.",
                    )
                    .response::<202, Json<TransferResponse>>()
            }),
        )
        .api_route(
            "/v1/fx-quotes",
            post_with(transfers::create_fx_quote, |o| {
                o.tag("transfers")
                    .summary("Quote a currency conversion for a payment abroad")
                    .description(
                        "201: the provider's rate and fee, with every amount computed exactly (target = amount × rate, \
                         rounded half-even to the target's minor unit; the fee in the source currency, on top). Nothing \
                         is held. Pay with it, unchanged, before `expires_at` at /v1/international-transfers.",
                    )
                    .response::<201, Json<bp_core::external::fx::FxQuote>>()
            }),
        )
        .api_route(
            "/v1/international-transfers",
            post_with(transfers::create_international_transfer, |o| {
                o.tag("transfers")
                    .summary("Pay an account abroad at an accepted FX quote")
                    .description(
                        "202: pending; answer `sca` (whose text names both amounts, the fee and the rate) at \
                         /v1/transfers/{id}/confirm before the quote expires, whose answer then names the service. \
                         409 fx-quote-stale: the quote changed, expired or was taken by another payment (a quote converts once; ask for a new one); 422 fx-quote-unknown. \
                         Every leg is held until the rail settles (posted) or rejects (released) the payment.",
                    )
                    .response::<202, Json<TransferResponse>>()
            }),
        )
        .api_route("/v1/transfers/{transfer_id}", get_with(transfers::get_transfer, |o| o.tag("transfers").summary("One transfer")))
        .api_route(
            "/v1/transfers/{transfer_id}/confirm",
            post_with(transfers::confirm_transfer, |o| o.tag("transfers").summary("Answer a transfer's SCA challenge")),
        )
        .api_route(
            "/v1/beneficiaries",
            get_with(beneficiaries::beneficiaries, |o| o.tag("beneficiaries").summary("Trusted payees")).post_with(
                beneficiaries::add_beneficiary,
                |o| o.tag("beneficiaries").summary("Add a payee (trusted once its SCA is answered)").response::<202, Json<BeneficiaryResponse>>(),
            ),
        )
        .api_route(
            "/v1/beneficiaries/{beneficiary_id}",
            delete_with(beneficiaries::delete_beneficiary, |o| o.tag("beneficiaries").summary("Remove a payee").response::<204, ()>()),
        )
        .api_route(
            "/v1/beneficiaries/{beneficiary_id}/confirm",
            post_with(beneficiaries::confirm_beneficiary, |o| o.tag("beneficiaries").summary("Answer a payee's SCA challenge")),
        )
        .api_route(
            "/v1/devices",
            get_with(devices::devices, |o| o.tag("devices").summary("Registered device keys")).post_with(devices::add_device, |o| {
                o.tag("devices")
                    .summary("Register a device key (registered once its SCA is answered)")
                    .description("202: answer `sca` at /v1/devices/{id}/confirm — with a device the customer has, or for a first device with a TOTP code from a sign-in at most `sca.recent_sign_in_max_age_s` old (else 401 insufficient-user-authentication).")
                    .response::<202, Json<DeviceResponse>>()
            }),
        )
        .api_route(
            "/v1/devices/{device_id}",
            delete_with(devices::delete_device, |o| {
                o.tag("devices").summary("Remove a device key (needs a recent sign-in)").response::<204, ()>()
            }),
        )
        .api_route(
            "/v1/devices/{device_id}/confirm",
            post_with(devices::confirm_device, |o| {
                o.tag("devices").summary("Answer a device registration's SCA challenge").response::<201, Json<DeviceResponse>>()
            }),
        )
        .api_route(
            "/v1/passkeys",
            get_with(passkeys::passkeys, |o| o.tag("passkeys").summary("Registered passkeys")).post_with(passkeys::add_passkey, |o| {
                o.tag("passkeys")
                    .summary("Begin registering a passkey (needs a recent sign-in)")
                    .description("202: WebAuthn creation options (user verification and a discoverable credential required); create the credential with them and send it to /v1/passkeys/{id}/confirm before `expires_at`, once. Needs a sign-in at most `sca.recent_sign_in_max_age_s` old (else 401 insufficient-user-authentication); 501 passkeys-unavailable when the server is reached by an IP address (WebAuthn needs a domain name).")
                    .response::<202, Json<PasskeyRegistration>>()
            }),
        )
        .api_route(
            "/v1/passkeys/{passkey_id}",
            delete_with(passkeys::delete_passkey, |o| {
                o.tag("passkeys").summary("Remove a passkey (needs a recent sign-in)").response::<204, ()>()
            }),
        )
        .api_route(
            "/v1/passkeys/{passkey_id}/confirm",
            post_with(passkeys::confirm_passkey, |o| {
                o.tag("passkeys")
                    .summary("Finish registering a passkey with the authenticator's credential")
                    .description("The registration is spent by this first answer, right or wrong. 422 passkey-refused: the credential is malformed, made for another site or ceremony, or without user verification; nothing is stored.")
                    .response::<201, Json<PasskeyView>>()
            }),
        )
        .api_route(
            "/v1/loans",
            post_with(loans::apply_for_loan, |o| {
                o.tag("loans")
                    .summary("Apply for a loan (FR6)")
                    .description(
                        "202: the application, `requested`; the loan provider decides it shortly (follow it at \
                         /v1/loans/{id} or /v1/services): `offered` with the offer, or `rejected`. The same \
                         Idempotency-Key answers the same application; with another body, 409 idempotency-conflict. \
                         422 loan-application: the amount, term (1 to 360 months) or purpose is out of bounds.",
                    )
                    .response::<202, Json<bp_core::api::LoanView>>()
            }),
        )
        .api_route(
            "/v1/loans/{loan_id}",
            get_with(loans::get_loan, |o| {
                o.tag("loans").summary("One loan, with its offer, its schedule (paid and due instalments) and what is owed")
            }),
        )
        .api_route(
            "/v1/loans/{loan_id}/accept",
            post_with(loans::accept_loan, |o| {
                o.tag("loans")
                    .summary("Ask to accept a loan's offer: the challenge that shows it")
                    .description(
                        "202: the loan, still offered, and the SCA challenge whose `bp-sca-v4` text names the \
                         principal, the account, the term, the annual rate, the instalment, the interest, the fee and \
                         the total; answerable until the offer expires at the latest. Nothing moves yet. Asking again \
                         renews the open challenge. 409 loan-not-offered (accepted already, declined, still being \
                         decided), 409 loan-offer-expired, 409 challenge-closed (answered: confirm again; failed: the \
                         offer can no longer be accepted).",
                    )
                    .response::<202, Json<bp_core::api::LoanAcceptance>>()
            }),
        )
        .api_route(
            "/v1/loans/{loan_id}/accept/confirm",
            post_with(loans::confirm_loan, |o| {
                o.tag("loans")
                    .summary("Accept a loan's offer with the answer to its challenge")
                    .description(
                        "The principal is paid into the account (less the fee, taken from it), the loan's receivable \
                         is opened and the schedule starts: the first instalment is due a month from today and \
                         collected from the account on its due date. The answer is a device signature of the \
                         challenge's text, or a TOTP code where `methods` allows it (up to the TOTP limit). 409 \
                         conflict when the offer changed since the challenge was opened. Confirming an \
                         accepted loan again answers it as it is.",
                    )
            }),
        )
        .api_route(
            "/v1/loans/{loan_id}/repayments",
            post_with(loans::repay_loan, |o| {
                o.tag("loans")
                    .summary("Repay a loan's principal early, in part or in full")
                    .description(
                        "In part: the remaining instalments are recomputed (same count, lower instalment); in full \
                         the loan closes. No interest is charged for the current period. 409 loan-not-active, 409 \
                         loan-instalment-due (collected first), 422 repayment-amount (more than zero, at most the \
                         outstanding principal, in the loan's currency), 422 repayment-remainder-too-small, 422 \
                         insufficient-funds. The same Idempotency-Key answers the same repayment.",
                    )
            }),
        )
        .api_route("/v1/services", get_with(services::services, |o| o.tag("services").summary("External services used (FR3)")))
}
