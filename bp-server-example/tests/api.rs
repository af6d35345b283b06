//! The v1 API over real HTTP: transfers with dynamic linking signed by a P-256 key made here,
//! tampered and replayed answers, every exemption, idempotent retries, beneficiaries, devices,
//! and the cross-customer matrix.

mod common;

use bp_core::api::device_registration_message;
use bp_server_example::auth::crypto::b64;
use common::{Api, Server, assert_parameter, assert_pointer, assert_problem, new_key, register_phone};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ALL: &str = "openid profile accounts payments offline_access";

async fn number(api: &Api, account: &bp_core::ids::AccountId) -> String {
    let (status, body) = api.get(&format!("/v1/accounts/{account}")).await;
    assert_eq!(status, StatusCode::OK);
    body["number"].as_str().expect("number").to_owned()
}

fn pay(from: &bp_core::ids::AccountId, to: &str, amount: &str) -> Value {
    json!({ "from_account": from, "to_account_number": to, "amount": { "amount": amount, "currency": "EUR" } })
}

async fn balance(api: &Api, account: &bp_core::ids::AccountId) -> String {
    let (_, body) = api.get(&format!("/v1/accounts/{account}")).await;
    body["balances"]["posted"]["amount"].as_str().expect("posted").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_are_dynamically_linked_to_amount_and_payee() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-t", 1_000_000, 0).await;
    let bob = server.customer("bob-t", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let phone = register_phone(&server, &api, &ada).await;
    let bob_eur = number(&bob_api, &bob.eur).await;

    // 150.00 to someone else: SCA needed; the transfer waits, pending, holding the money.
    let (status, created) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "150.00"), Some("p-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    assert_eq!(created["transfer"]["state"], "pending");
    let challenge = created["sca"].clone();
    let message = challenge["message"].as_str().expect("message");
    assert!(message.contains("amount:150.00") && message.contains("currency:EUR"));
    assert!(message.contains(&format!("payee:{bob_eur}")));
    assert!(message.contains(&format!("transfer:{}", created["transfer"]["id"].as_str().expect("id"))));
    assert_eq!(challenge["methods"], json!(["device_signature"]));
    let id = created["transfer"]["id"].as_str().expect("id").to_owned();
    let confirm = format!("/v1/transfers/{id}/confirm");

    // Signed with a changed amount: refused, and nothing moves.
    let tampered = message.replace("amount:150.00", "amount:1.50");
    let answer = json!({ "method": "device_signature", "challenge_id": challenge["id"], "device_id": phone.device_id, "signature": phone.sign(&tampered) });
    let (status, body) = api.post(&confirm, &answer, None).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "sca-failed");
    let tampered = message.replace(&bob_eur, "0000000000");
    let answer = json!({ "method": "device_signature", "challenge_id": challenge["id"], "device_id": phone.device_id, "signature": phone.sign(&tampered) });
    assert_eq!(api.post(&confirm, &answer, None).await.0, StatusCode::FORBIDDEN, "a changed payee is refused");
    assert_eq!(balance(&bob_api, &bob.eur).await, "0.00");
    // TOTP is not accepted once the customer has a device key.
    let (status, body) =
        api.post(&confirm, &json!({ "method": "totp", "challenge_id": challenge["id"], "code": "123456" }), None).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");

    // The right signature posts it.
    let good = phone.answer(&challenge);
    let (status, body) = api.post(&confirm, &good, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transfer"]["state"], "posted");
    assert_eq!(balance(&bob_api, &bob.eur).await, "150.00");
    assert_eq!(balance(&api, &ada.eur).await, "9850.00");
    // The same signature again: single-use.
    let (status, body) = api.post(&confirm, &good, None).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "challenge-closed");
    assert_eq!(balance(&bob_api, &bob.eur).await, "150.00");

    // A new payment: its challenge differs (nonce, transfer), so the old signature fails it.
    let (_, second) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "150.00"), Some("p-2")).await;
    let second_id = second["transfer"]["id"].as_str().expect("id");
    let replayed = json!({ "method": "device_signature", "challenge_id": second["sca"]["id"], "device_id": phone.device_id, "signature": good["signature"] });
    let (status, _) = api.post(&format!("/v1/transfers/{second_id}/confirm"), &replayed, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // After too many wrong answers the challenge fails for good.
    for _ in 0..2 {
        api.post(&format!("/v1/transfers/{second_id}/confirm"), &replayed, None).await;
    }
    let (status, body) =
        api.post(&format!("/v1/transfers/{second_id}/confirm"), &phone.answer(&second["sca"]), None).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "challenge-closed");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exemptions_own_accounts_low_value_and_trusted_beneficiaries() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-e", 1_000_000, 100_000).await;
    let bob = server.customer("bob-e", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let bob_eur = number(&bob_api, &bob.eur).await;
    // A second EUR account of Ada's, for an own-accounts transfer.
    let ada_eur2 = server.open_eur(ada.id).await;
    let own = number(&api, &ada_eur2).await;

    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &own, "5000.00"), Some("own-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["exemption"], "own_accounts");
    assert_eq!(body["transfer"]["state"], "posted");

    // Low value: below 30.00, at most 5 in a row and 100.00 in total since the last SCA.
    for i in 0..3 {
        let (status, body) =
            api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "29.99"), Some(&format!("lv-{i}"))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["exemption"], "low_value");
    }
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "29.99"), Some("lv-3")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the cumulative 100.00 would be passed: {body}");
    let (status, _) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "30.00"), Some("lv-4")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "30.00 is not below 30");

    // Without a device, a TOTP code answers a payment up to the configured amount.
    let challenge = body["sca"].clone();
    assert_eq!(challenge["methods"], json!(["totp"]));
    let id = body["transfer"]["id"].as_str().expect("id");
    let answer = json!({ "method": "totp", "challenge_id": challenge["id"], "code": server.totp(&ada).await });
    let (status, body) = api.post(&format!("/v1/transfers/{id}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transfer"]["state"], "posted");
    // The SCA reset the low-value counters.
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "29.99"), Some("lv-5")).await;
    assert_eq!((status, &body["exemption"]), (StatusCode::CREATED, &json!("low_value")));
    // Above the TOTP limit, a device key is required.
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "600.00"), Some("big")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["sca"]["methods"], json!([]));

    // Trusting Bob needs SCA; then payments to him need none.
    let (status, added) =
        api.post("/v1/beneficiaries", &json!({ "name": "Bob", "account_number": bob_eur }), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{added}");
    assert_eq!(added["beneficiary"]["state"], "pending");
    let (status, _) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "500.00"), Some("tb-0")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "not trusted yet");
    let bid = added["beneficiary"]["id"].as_str().expect("id");
    let answer = json!({ "method": "totp", "challenge_id": added["sca"]["id"], "code": server.totp(&ada).await });
    let (status, body) = api.post(&format!("/v1/beneficiaries/{bid}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["beneficiary"]["state"], "trusted");
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "500.00"), Some("tb-1")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["exemption"], "trusted_beneficiary");
    let (_, list) = api.get("/v1/beneficiaries").await;
    assert_eq!(list["beneficiaries"].as_array().expect("list").len(), 1);
    assert_eq!(api.delete(&format!("/v1/beneficiaries/{bid}")).await.0, StatusCode::NO_CONTENT);
    let (status, _) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "500.00"), Some("tb-2")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "removed: SCA again");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_the_same_key_move_money_once() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-i", 100_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let second = server.open_eur(ada.id).await;
    let to = number(&api, &second).await;
    let body = pay(&ada.eur, &to, "10.00");
    let (s1, first) = api.post("/v1/transfers", &body, Some("retry-me")).await;
    let (s2, again) = api.post("/v1/transfers", &body, Some("retry-me")).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first, again, "the same answer");
    assert_eq!(balance(&api, &second).await, "10.00", "moved once");
    // A UUIDv7 key (what clients are advised to use) behaves the same.
    let key = uuid::Uuid::now_v7().to_string();
    let (s1, first) = api.post("/v1/transfers", &pay(&ada.eur, &to, "0.50"), Some(&key)).await;
    let (s2, again) = api.post("/v1/transfers", &pay(&ada.eur, &to, "0.50"), Some(&key)).await;
    assert_eq!((s1, s2, &first), (StatusCode::CREATED, StatusCode::CREATED, &again));
    let (status, _) = api.post("/v1/transfers", &pay(&ada.eur, &to, "0.60"), Some(&key)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(balance(&api, &second).await, "10.50", "moved once");
    // Concurrent retries too.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let api = api.clone();
            let body = pay(&ada.eur, &to, "1.00");
            tokio::spawn(async move { api.post("/v1/transfers", &body, Some("burst")).await })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.insert(body["transfer"]["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(balance(&api, &second).await, "11.50");
    // The same key with another body: a conflict, nothing moves.
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &to, "10.01"), Some("retry-me")).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "idempotency-conflict");
    // No key: refused.
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &to, "1.00"), None).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "idempotency-key-missing");
    assert_parameter(&body, "Idempotency-Key");
    // Unknown fields of a payment are refused, not ignored.
    let mut extra = pay(&ada.eur, &to, "1.00");
    extra["amount_eur"] = json!("1000000");
    let (status, body) = api.post("/v1/transfers", &extra, Some("x")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_pointer(&body, "/amount_eur");
    // Floats are not amounts.
    let float =
        json!({ "from_account": ada.eur, "to_account_number": to, "amount": { "amount": 1.5, "currency": "EUR" } });
    let (status, body) = api.post("/v1/transfers", &float, Some("f")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_pointer(&body, "/amount/amount");
    // Amounts that are not this payment's: too many decimals, nothing, the payer's own account.
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &to, "1.001"), Some("decimals")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_pointer(&body, "/amount");
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &to, "0.00"), Some("zero")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_pointer(&body, "/amount");
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, "0000000000", "1.00"), Some("nobody")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_pointer(&body, "/to_account_number");
    // A missing member is the whole body's fault: no member is named.
    let mut missing = pay(&ada.eur, &to, "1.00");
    missing.as_object_mut().expect("object").remove("to_account_number");
    let (status, body) = api.post("/v1/transfers", &missing, Some("missing")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert!(body.get("errors").is_none(), "{body}");
    // Too much money, a wrong currency.
    let (status, body) = api.post("/v1/transfers", &pay(&ada.eur, &to, "5000.00"), Some("big")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "insufficient-funds");
    let usd =
        json!({ "from_account": ada.eur, "to_account_number": to, "amount": { "amount": "1.00", "currency": "USD" } });
    let (status, body) = api.post("/v1/transfers", &usd, Some("usd")).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "account-unusable");
    assert_pointer(&body, "/amount/currency");
    assert_eq!(balance(&api, &ada.eur).await, "988.50");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_customer_reaches_another_customers_data() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-x", 100_000, 0).await;
    let bob = server.customer("bob-x", 100_000, 0).await;
    let ada_api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let ada_eur = number(&ada_api, &ada.eur).await;
    let bob_eur = number(&bob_api, &bob.eur).await;
    // Bob's own things: a transfer, a beneficiary, a device.
    let bob_phone = register_phone(&server, &bob_api, &bob).await;
    let (_, t) = bob_api.post("/v1/transfers", &pay(&bob.eur, &ada_eur, "200.00"), Some("b1")).await;
    let bob_transfer = t["transfer"]["id"].as_str().expect("id").to_owned();
    let (_, b) = bob_api.post("/v1/beneficiaries", &json!({ "name": "Ada", "account_number": ada_eur }), None).await;
    let bob_beneficiary = b["beneficiary"]["id"].as_str().expect("id").to_owned();

    // Ada tries every route with Bob's ids: the same 404 as for ids that do not exist.
    let reads = [
        format!("/v1/accounts/{}", bob.eur),
        format!("/v1/accounts/{}/transactions", bob.eur),
        format!("/v1/accounts/{}/pending", bob.eur),
        format!("/v1/transfers/{bob_transfer}"),
    ];
    for path in &reads {
        let (status, body) = ada_api.get(path).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    let answer = bob_phone.answer(&t["sca"]);
    let writes = [
        (format!("/v1/transfers/{bob_transfer}/confirm"), answer.clone()),
        (
            format!("/v1/beneficiaries/{bob_beneficiary}/confirm"),
            json!({ "method": "totp", "challenge_id": b["sca"]["id"], "code": "000000" }),
        ),
    ];
    for (path, body) in &writes {
        let (status, problem) = ada_api.post(path, body, None).await;
        assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    }
    for path in [format!("/v1/beneficiaries/{bob_beneficiary}"), format!("/v1/devices/{}", bob_phone.device_id)] {
        let (status, problem) = ada_api.delete(&path).await;
        assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    }
    // Paying from Bob's account.
    let (status, body) = ada_api.post("/v1/transfers", &pay(&bob.eur, &ada_eur, "1.00"), Some("steal")).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    // Bob's interbank payment (requested through the store until the façade pays to IBANs).
    let payment = bp_core::external::lifecycle::NewExternalPayment {
        customer: bob.id,
        account: bob.eur,
        hold: bp_core::ids::TransferId::new_v7(),
        amount: bp_core::money::Money::new(1_000, bp_core::money::Currency::EUR),
        creditor: bp_core::external::ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", None)
            .expect("payee"),
        remittance: None,
        rail: bp_core::external::RailId::SepaCreditTransfer,
    };
    let requested = bp_core::external::lifecycle::request(&payment, server.state.now()).expect("request");
    let bob_service = server.state.services.request(requested).await.expect("stored").record.id;
    // Lists show only one's own.
    assert_eq!(ada_api.get("/v1/services").await.1["services"], json!([]));
    assert_eq!(bob_api.get("/v1/services").await.1["services"][0]["id"], json!(bob_service));
    let (_, accounts) = ada_api.get("/v1/accounts").await;
    assert!(accounts["accounts"].as_array().expect("list").iter().all(|a| a["id"] != json!(bob.eur)));
    assert_eq!(ada_api.get("/v1/beneficiaries").await.1["beneficiaries"], json!([]));
    assert_eq!(ada_api.get("/v1/devices").await.1["devices"], json!([]));
    // Bob's things are intact, and his payment still confirms.
    let (status, body) = bob_api.post(&format!("/v1/transfers/{bob_transfer}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(bob_api.get("/v1/devices").await.1["devices"].as_array().expect("list").len(), 1);
    // The payee sees the transfer too (it credits their account), the profile is one's own.
    assert_eq!(ada_api.get(&format!("/v1/transfers/{bob_transfer}")).await.0, StatusCode::OK);
    let (_, me) = ada_api.get("/v1/me").await;
    assert_eq!(me["username"], "ada-x");
    let _ = bob_eur;
    server.stop().await;
}

/// A payment waiting for SCA is on its payer's list of pending payments, and nobody else's: not
/// the payee's, and another customer cannot read the payer's list. Confirmed, it leaves the list
/// for the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_payments_are_listed_for_their_payer_only() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-p", 1_000_000, 0).await;
    let bob = server.customer("bob-p", 0, 0).await;
    let eve = server.customer("eve-p", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let eve_api = Api::new(&server, &server.login(&eve, ALL).await);
    let phone = register_phone(&server, &api, &ada).await;
    let bob_eur = number(&bob_api, &bob.eur).await;
    let ada_pending = format!("/v1/accounts/{}/pending", ada.eur);
    let bob_pending = format!("/v1/accounts/{}/pending", bob.eur);
    let none = json!({ "transfers": [] });
    assert_eq!(api.get(&ada_pending).await, (StatusCode::OK, none.clone()));

    // 150.00 to Bob is above every exemption: it waits for SCA, pending.
    let (status, created) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "150.00"), Some("pend-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{created}");
    let id = created["transfer"]["id"].as_str().expect("id").to_owned();
    let (status, list) = api.get(&ada_pending).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed = list["transfers"].as_array().expect("transfers");
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!((listed[0]["id"].as_str(), &listed[0]["state"]), (Some(id.as_str()), &json!("pending")));
    assert_eq!(listed[0]["amount"], json!({ "amount": "150.00", "currency": "EUR" }));
    assert_eq!((&listed[0]["from_account"], &listed[0]["to_account"]), (&json!(ada.eur), &json!(bob.eur)));
    assert_eq!(listed[0], created["transfer"], "the transfer as the payment answered it");
    // Not the payee's to see yet; not anyone else's to read.
    assert_eq!(bob_api.get(&bob_pending).await, (StatusCode::OK, none.clone()));
    for other in [&eve_api, &bob_api] {
        let (status, body) = other.get(&ada_pending).await;
        assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    }
    let (status, body) = api.get(&format!("/v1/accounts/{}/pending", uuid::Uuid::now_v7())).await;
    assert_problem(status, &body, StatusCode::NOT_FOUND, "not-found");
    let profile_only = Api::new(&server, &server.login(&ada, "openid profile").await);
    let (status, body) = profile_only.get(&ada_pending).await;
    assert_problem(status, &body, StatusCode::FORBIDDEN, "forbidden");

    // Confirmed: posted, off the list, in the history.
    let (status, body) = api.post(&format!("/v1/transfers/{id}/confirm"), &phone.answer(&created["sca"]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["transfer"]["state"], "posted");
    assert_eq!(api.get(&ada_pending).await, (StatusCode::OK, none));
    let (_, history) = api.get(&format!("/v1/accounts/{}/transactions?limit=1", ada.eur)).await;
    assert_eq!(history["items"][0]["transfer_id"].as_str(), Some(id.as_str()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_filters_and_pages_and_errors_are_problems() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-h", 100_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let second = server.open_eur(ada.id).await;
    let to = number(&api, &second).await;
    for i in 1..=5 {
        let (status, _) =
            api.post("/v1/transfers", &pay(&ada.eur, &to, &format!("{i}.00")), Some(&format!("h{i}"))).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let path = format!("/v1/accounts/{}/transactions", ada.eur);
    let (status, page) = api.get(&format!("{path}?limit=2&direction=debit")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["amount"]["amount"], "5.00", "newest first");
    let cursor = page["next_cursor"].as_str().expect("more");
    let (_, next) = api.get(&format!("{path}?limit=2&direction=debit&cursor={cursor}")).await;
    assert_eq!(next["items"][0]["amount"]["amount"], "3.00");
    let (_, ranged) = api.get(&format!("{path}?amount_min=2.00&amount_max=3.00")).await;
    assert_eq!(ranged["items"].as_array().expect("items").len(), 2);
    let (_, deposits) = api.get(&format!("{path}?kind=deposit")).await;
    assert_eq!(deposits["items"].as_array().expect("items").len(), 1);
    for (bad, parameter) in [
        ("?limit=0", "limit"),
        ("?cursor=zz", "cursor"),
        ("?direction=sideways", "direction"),
        ("?colour=red", "colour"),
        ("?from=yesterday", "from"),
        ("?kind=deposit&limit=x", "limit"),
    ] {
        let (status, body) = api.get(&format!("{path}{bad}")).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "bad-request");
        assert_parameter(&body, parameter);
    }
    // Amounts are read in the account's currency: EUR has two decimals.
    for (bad, parameter) in [("?amount_min=abc", "amount_min"), ("?amount_max=1.001", "amount_max")] {
        let (status, body) = api.get(&format!("{path}{bad}")).await;
        assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
        assert_parameter(&body, parameter);
    }
    // An empty range is an empty answer.
    let (status, empty) = api.get(&format!("{path}?amount_min=3.00&amount_max=2.00")).await;
    assert_eq!((status, empty["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    // ... whose other parameters are checked all the same (schemathesis found a limit out of
    // bounds accepted with an empty range), in an account's history and in the services.
    let backwards = "from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z";
    for bad in [
        format!("{path}?amount_min=3.00&amount_max=2.00&limit=501"),
        format!("{path}?{backwards}&limit=0"),
        format!("/v1/services?{backwards}&limit=16777217"),
    ] {
        let (status, body) = api.get(&bad).await;
        assert_problem(status, &body, StatusCode::BAD_REQUEST, "bad-request");
        assert_parameter(&body, "limit");
    }
    let (status, empty) = api.get(&format!("/v1/services?{backwards}&limit=5")).await;
    assert_eq!((status, empty["services"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    // Errors everywhere are problem documents.
    let r = reqwest::Client::new().get(server.url("/v1/nowhere")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = reqwest::Client::new().get(server.url("/v1/accounts")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers()["www-authenticate"].to_str().expect("ascii").starts_with("Bearer"));
    let r = api
        .request(reqwest::Method::POST, "/v1/transfers")
        .header("Idempotency-Key", "big")
        .header("content-type", "application/json")
        .body(vec![b' '; 100 * 1024])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = api
        .request(reqwest::Method::POST, "/v1/transfers")
        .header("Idempotency-Key", "txt")
        .body("hello")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The profile and photo.
    let (status, me) = api.get("/v1/me").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["party"]["type"], "person");
    assert!(me.get("password").is_none());
    let (_, services) = api.get("/v1/services").await;
    assert_eq!(services, json!({ "services": [], "external_services_connected": false }));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_registration_needs_proof_of_the_key() {
    let mut server = Server::start().await;
    let ada = server.customer("ada-d", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let key = SigningKey::random(&mut rand_core::OsRng);
    let public = b64(key.verifying_key().to_encoded_point(false).as_bytes());
    let other = SigningKey::random(&mut rand_core::OsRng);
    let wrong: Signature = other.sign(device_registration_message(ada.id, &public).as_bytes());
    let (status, body) = api
        .post("/v1/devices", &json!({ "name": "phone", "public_key": public, "proof": b64(&wrong.to_bytes()) }), None)
        .await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let (status, body) =
        api.post("/v1/devices", &json!({ "name": "phone", "public_key": "AAAA", "proof": "AAAA" }), None).await;
    assert_problem(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let phone = register_phone(&server, &api, &ada).await;
    let audit = server.state.security.audit_after(0, 1000).await.expect("audit");
    assert!(audit.iter().any(|e| e.kind == bp_core::security::AuditKind::DeviceAdded));
    assert_eq!(api.delete(&format!("/v1/devices/{}", phone.device_id)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v1/devices").await.1["devices"], json!([]));
    server.stop().await;
}

/// A session that signed in a while ago — a stolen access or refresh token — can neither register
/// a key (which would then sign payments and sign-ins) nor remove one: it must sign in again
/// (RFC 9470). A device the customer has can still approve a new one from any session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_need_a_recent_sign_in_or_an_existing_device() {
    let mut server = Server::start_with(|c| c.sca.recent_sign_in_max_age_s = 2).await;
    let ada = server.customer("ada-s", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let phone = register_phone(&server, &api, &ada).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;

    // The same session, now older than the limit: it cannot remove the phone.
    let r = api.request(reqwest::Method::DELETE, &format!("/v1/devices/{}", phone.device_id)).send().await;
    let r = r.expect("delete");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers()["www-authenticate"].to_str().expect("ascii").to_owned();
    assert!(
        challenge.starts_with("DPoP ")
            && challenge.contains("error=\"insufficient_user_authentication\"")
            && challenge.contains("max_age=2"),
        "{challenge}"
    );
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["type"], "urn:bp:problem:insufficient-user-authentication");

    // A second key from the old session: only the phone can approve it (no TOTP code).
    let (_, body) = new_key(ada.id);
    let (status, begun) = api.post("/v1/devices", &body, None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{begun}");
    assert_eq!(begun["sca"]["methods"], json!(["device_signature"]));
    let confirm = format!("/v1/devices/{}/confirm", begun["device"]["id"].as_str().expect("id"));
    let by_totp = json!({ "method": "totp", "challenge_id": begun["sca"]["id"], "code": "123456" });
    let (status, problem) = api.post(&confirm, &by_totp, None).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let (status, body) = api.post(&confirm, &phone.answer(&begun["sca"]), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // A fresh sign-in removes both; then a first device from a session grown old is refused.
    let fresh = Api::new(&server, &server.login(&ada, ALL).await);
    for device in [phone.device_id.as_str(), body["device"]["id"].as_str().expect("id")] {
        assert_eq!(fresh.delete(&format!("/v1/devices/{device}")).await.0, StatusCode::NO_CONTENT);
    }
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let (_, body) = new_key(ada.id);
    let (status, problem) = fresh.post("/v1/devices", &body, None).await;
    assert_problem(status, &problem, StatusCode::UNAUTHORIZED, "insufficient-user-authentication");
    assert_eq!(fresh.get("/v1/devices").await.1["devices"], json!([]), "no refused key was registered");
    let audit = server.state.security.audit_after(0, 1000).await.expect("audit");
    let count = |kind| audit.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(bp_core::security::AuditKind::DeviceAdded), 2);
    assert_eq!(count(bp_core::security::AuditKind::DeviceRemoved), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_challenge_expires_and_releases_the_money() {
    let mut server = Server::start_with(|c| c.sca.challenge_ttl_s = 1).await;
    let ada = server.customer("ada-x1", 100_000, 0).await;
    let bob = server.customer("bob-x1", 0, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let bob_eur = number(&bob_api, &bob.eur).await;
    let (status, created) = api.post("/v1/transfers", &pay(&ada.eur, &bob_eur, "400.00"), Some("slow")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, account) = api.get(&format!("/v1/accounts/{}", ada.eur)).await;
    assert_eq!(account["balances"]["held"]["amount"], "400.00", "held while waiting");
    let id = created["transfer"]["id"].as_str().expect("id").to_owned();
    // The sweeper voids it within a few seconds of its expiry.
    let mut state = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        state = api.get(&format!("/v1/transfers/{id}")).await.1["state"].clone();
        if state == "voided" {
            break;
        }
    }
    assert_eq!(state, "voided");
    let (_, account) = api.get(&format!("/v1/accounts/{}", ada.eur)).await;
    assert_eq!(account["balances"]["held"]["amount"], "0.00", "released");
    assert_eq!(account["balances"]["posted"]["amount"], "1000.00");
    let answer = json!({ "method": "totp", "challenge_id": created["sca"]["id"], "code": server.totp(&ada).await });
    let (status, body) = api.post(&format!("/v1/transfers/{id}/confirm"), &answer, None).await;
    assert_problem(status, &body, StatusCode::CONFLICT, "challenge-closed");
    assert_eq!(balance(&bob_api, &bob.eur).await, "0.00");
    server.stop().await;
}
