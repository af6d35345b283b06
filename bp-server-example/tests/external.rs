//! External payments end to end: the worker, the rail (the real `HttpRail` against the real
//! simulator, or wiremock), the webhook receivers, `GET /v1/services`, the event stream and the
//! ledger, over real HTTP on loopback and a real SQLite file.

mod common;

use std::time::Duration;

use bp_core::external::lifecycle::{self, NewExternalPayment};
use bp_core::external::{CallKey, ExternalAccount, RailId};
use bp_core::ids::{AccountId, ServiceRecordId, TransferId};
use bp_core::iso20022::pacs002::{self, NewStatusReport, Reported, Status};
use bp_core::money::{Currency, Money};
use bp_core::service_record::{ServiceRecord, ServiceStatus};
use bp_external::WebhookSecret;
use bp_external::simulator::IncomingPayment;
use bp_external::webhook::signature_header;
use bp_server_example::config::{Config, Secret};
use common::sse::Stream;
use common::{Api, Phone, Server, assert_pointer, assert_problem, new_key, register_phone};
use reqwest::StatusCode;
use serde_json::Value;

const ALL: &str = "openid profile accounts payments offline_access";
const SECRET: &str = "bp-test-webhook-secret-0123456789abcdef";

/// A server whose worker checks often and whose simulator settles quickly.
fn simulated(c: &mut Config) {
    c.external.sepa.simulate = true;
    c.external.sepa.webhook_secrets = vec![Secret::new(SECRET)];
    c.external.sepa.simulator_settle_after_ms = 300;
    c.external.sepa.check_first_ms = 100;
    c.external.sepa.check_max_ms = 1_000;
}

/// A server with a rail at `url` (no simulator).
fn rail_at(url: &str) -> impl FnOnce(&mut Config) + use<> {
    let url = url.to_owned();
    move |c: &mut Config| {
        c.external.sepa.base_url = Some(url);
        c.external.sepa.webhook_secrets = vec![Secret::new(SECRET)];
        c.external.sepa.check_first_ms = 100;
        c.external.sepa.check_max_ms = 1_000;
        c.external.sepa.request_timeout_ms = 500;
        c.external.sepa.attempts_max = 1;
    }
}

/// Requests a payment of `minor` euro cents from `account` straight through the store (as the
/// payments façade will), and wakes the worker.
async fn request(server: &Server, customer: &common::Customer, minor: i64) -> ServiceRecord {
    let payment = NewExternalPayment {
        customer: customer.id,
        account: customer.eur,
        hold: TransferId::new_v7(),
        amount: Money::new(minor, Currency::EUR),
        creditor: ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", None).expect("payee"),
        remittance: Some("test".to_owned()),
        rail: RailId::SepaCreditTransfer,
    };
    let t = lifecycle::request(&payment, server.state.now()).expect("request");
    let receipt = server.state.services.request(t).await.expect("stored");
    server.state.external_wake.notify_one();
    receipt.record
}

async fn record(server: &Server, id: ServiceRecordId) -> ServiceRecord {
    server.state.services.service_record(id).await.expect("read").expect("record")
}

/// Waits (up to 15 s) until record `id` is in `status`.
async fn until_status(server: &Server, id: ServiceRecordId, status: ServiceStatus) -> ServiceRecord {
    for _ in 0..300 {
        let r = record(server, id).await;
        if r.status == status {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("record {id} never became {status:?}: {:?}", record(server, id).await);
}

async fn balances(server: &Server, id: AccountId) -> (i64, i64) {
    let a = server.state.ledger.store().account(id).await.expect("read").expect("account");
    (a.posted_minor, a.available_minor())
}

fn clearing() -> AccountId {
    RailId::SepaCreditTransfer.clearing_account(Currency::EUR)
}

fn status_report(key: &CallKey, status: Status, message_id: &str) -> String {
    let report =
        NewStatusReport::for_key(key, message_id.to_owned(), chrono::Utc::now(), Reported { status, reason: None });
    pacs002::build(&report).expect("pacs.002")
}

async fn deliver(server: &Server, path: &str, body: &str, secret: &str) -> (StatusCode, Value) {
    let secret = WebhookSecret::new(secret.as_bytes().to_vec()).expect("secret");
    let header = signature_header(chrono::Utc::now().timestamp(), &[&secret], body.as_bytes());
    deliver_signed(server, path, body, &header).await
}

async fn deliver_signed(server: &Server, path: &str, body: &str, header: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/xml")
        .header("Rail-Signature", header)
        .body(body.to_owned())
        .send()
        .await
        .expect("deliver");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_submitted_by_the_worker_and_settles_through_the_simulator() {
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-ext", 100_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let mut stream = Stream::open(&server, &api, None).await;
    let clearing_before = balances(&server, clearing()).await.0;

    let r = request(&server, &ada, 10_000).await;
    let settled = until_status(&server, r.id, ServiceStatus::Settled).await;
    assert_eq!(settled.amount, Money::new(10_000, Currency::EUR));
    // The hold is posted to the clearing account: the money left for the rail.
    assert_eq!(balances(&server, ada.eur).await, (90_000, 90_000));
    assert_eq!(balances(&server, clearing()).await.0, clearing_before + 10_000);
    let hold = server.state.ledger.store().transfer(r.transfers[0]).await.expect("read").expect("hold");
    assert_eq!(format!("{:?}", hold.state), "Posted");

    // The customer's stream saw the record move: requested … settled.
    let mut statuses = Vec::new();
    while statuses.last().map(String::as_str) != Some("settled") {
        for m in stream.next(1).await {
            if m.event == "service.updated" {
                statuses.push(m.data["data"]["status"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    assert_eq!(statuses.first().map(String::as_str), Some("requested"), "{statuses:?}");
    assert!(statuses.contains(&"submitted".to_owned()), "{statuses:?}");

    // And GET /v1/services shows it, settled, with the rail connected.
    let (status, list) = api.get("/v1/services").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["external_services_connected"], true);
    assert_eq!(list["services"][0]["id"], r.id.to_string());
    assert_eq!(list["services"][0]["status"], "settled");
    let (_, rejected) = api.get("/v1/services?status=rejected").await;
    assert_eq!(rejected["services"], serde_json::json!([]));
    let simulator = server.state.external.as_ref().and_then(|e| e.simulator.as_ref()).expect("simulator");
    assert_eq!(simulator.order_posts(), 1, "submitted once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_payment_releases_its_hold() {
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-rej", 100_000, 0).await;
    let clearing_before = balances(&server, clearing()).await.0;
    // The simulator rejects amounts ending in .13.
    let r = request(&server, &ada, 1_213).await;
    assert_eq!(balances(&server, ada.eur).await, (100_000, 100_000 - 1_213), "held");
    let rejected = until_status(&server, r.id, ServiceStatus::Rejected).await;
    assert_eq!(rejected.reason.as_ref().map(|r| r.as_str()), Some("AC04"));
    assert_eq!(balances(&server, ada.eur).await, (100_000, 100_000), "the hold is voided");
    assert_eq!(balances(&server, clearing()).await.0, clearing_before);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_webhooks_are_refused_and_repeated_ones_apply_once() {
    // A rail nobody listens on: the submission is not sent, so the record waits for news.
    let mut server = Server::start_with(|c| {
        rail_at("http://127.0.0.1:1/")(c);
        c.external.sepa.check_first_ms = 600_000;
        c.external.sepa.check_max_ms = 600_000;
    })
    .await;
    let ada = server.customer("ada-hook", 100_000, 0).await;
    let r = request(&server, &ada, 5_000).await;
    let key = CallKey::of_transfer(r.transfers[0]);
    // The worker's first turn: not sent, back to requested, next check in minutes.
    let mut waiting = record(&server, r.id).await;
    for _ in 0..200 {
        if waiting.checks > 0 && waiting.status == ServiceStatus::Requested {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        waiting = record(&server, r.id).await;
    }
    assert_eq!((waiting.status, waiting.checks), (ServiceStatus::Requested, 1));

    let settled = status_report(&key, Status::Settled, "RAIL-1");
    // Forged: signed with another secret; unsigned; malformed.
    let (status, body) =
        deliver(&server, "/rail/sepa/webhooks/status", &settled, "another-secret-of-at-least-32-bytes!!").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "bad-signature");
    let (status, body) = deliver_signed(&server, "/rail/sepa/webhooks/status", &settled, "").await;
    assert_problem(status, &body, StatusCode::UNAUTHORIZED, "bad-signature");
    let (status, body) = deliver(&server, "/rail/sepa/webhooks/status", "<Document/>", SECRET).await;
    assert_problem(status, &body, StatusCode::BAD_REQUEST, "malformed-message");
    assert_eq!(record(&server, r.id).await, waiting, "nothing changed");
    assert_eq!(balances(&server, ada.eur).await, (100_000, 95_000));

    // Authentic: applied; delivered again (signed anew, a new message id): applied once.
    let clearing_before = balances(&server, clearing()).await.0;
    let (status, _) = deliver(&server, "/rail/sepa/webhooks/status", &settled, SECRET).await;
    assert_eq!(status, StatusCode::OK);
    let done = record(&server, r.id).await;
    assert_eq!(done.status, ServiceStatus::Settled);
    let again = status_report(&key, Status::Settled, "RAIL-2");
    let secret = WebhookSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let header = signature_header(chrono::Utc::now().timestamp(), &[&secret], again.as_bytes());
    assert_eq!(deliver_signed(&server, "/rail/sepa/webhooks/status", &again, &header).await.0, StatusCode::OK);
    // A byte-for-byte replay is acknowledged without acting.
    assert_eq!(deliver_signed(&server, "/rail/sepa/webhooks/status", &again, &header).await.0, StatusCode::OK);
    // A late, contradicting report is not applied.
    let late = status_report(&key, Status::Rejected, "RAIL-3");
    assert_eq!(deliver(&server, "/rail/sepa/webhooks/status", &late, SECRET).await.0, StatusCode::OK);
    assert_eq!(record(&server, r.id).await, done, "applied once");
    assert_eq!(balances(&server, ada.eur).await, (95_000, 95_000));
    assert_eq!(balances(&server, clearing()).await.0, clearing_before + 5_000, "posted once");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_payment_is_credited_once_however_often_delivered() {
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-in", 0, 0).await;
    let external = server.state.external.clone().expect("connected");
    let simulator = external.simulator.as_ref().expect("simulator");
    let number = server.state.ledger.store().account(ada.eur).await.expect("read").expect("account").number;
    let name = bp_core::external::PayeeName::parse("Ada Lovelace").expect("name");
    let payee = ExternalAccount { iban: external.bank.iban_of(number), name, bic: None };
    let payment = IncomingPayment {
        amount: Money::new(4_200, Currency::EUR),
        payer: ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", Some("COBADEFFXXX"))
            .expect("payer"),
        payee: payee.clone(),
        remittance: Some("invoice 7".to_owned()),
    };
    let delivery = simulator.originate_incoming(payment.clone()).await.expect("delivered");
    assert_eq!(delivery.status, 200);
    assert_eq!(balances(&server, ada.eur).await, (4_200, 4_200));
    // The same payment delivered again (built and signed anew, as the rail redelivers).
    let order = bp_core::external::RailOrder {
        amount: payment.amount,
        debtor: payment.payer.clone(),
        creditor: payee.clone(),
        remittance: payment.remittance.clone(),
        requested_at: chrono::Utc::now(),
    };
    let again = bp_core::iso20022::pacs008::build(&order, &delivery.key, chrono::Utc::now()).expect("pacs.008");
    assert_eq!(deliver(&server, "/rail/sepa/webhooks/incoming", &again, SECRET).await.0, StatusCode::OK);
    assert_eq!(balances(&server, ada.eur).await, (4_200, 4_200), "credited once");
    // Not one of our IBANs: refused with its ISO reason.
    let other = bp_core::external::RailOrder {
        creditor: ExternalAccount::parse("DE89370400440532013000", "Somebody", None).expect("payee"),
        ..order
    };
    let body = bp_core::iso20022::pacs008::build(&other, &CallKey::parse("OTHER-1").expect("key"), chrono::Utc::now())
        .expect("pacs.008");
    let (status, problem) = deliver(&server, "/rail/sepa/webhooks/incoming", &body, SECRET).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "AC01");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_submission_is_reconciled_by_a_status_query_not_sent_again() {
    use wiremock::matchers::{method, path_regex};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let rail = MockServer::start().await;
    let mut server = Server::start_with(rail_at(&format!("{}/", rail.uri()))).await;
    let ada = server.customer("ada-slow", 100_000, 0).await;
    let hold = TransferId::new_v7();
    let key = CallKey::of_transfer(hold);
    // The order is taken, but the answer comes after our timeout (500 ms).
    let accepted = status_report(&key, Status::Accepted, "RAIL-A");
    Mock::given(method("POST"))
        .and(path_regex("^/orders$"))
        .respond_with(
            ResponseTemplate::new(202).set_body_raw(accepted, "application/xml").set_delay(Duration::from_secs(2)),
        )
        .expect(1)
        .mount(&rail)
        .await;
    let settled = status_report(&key, Status::Settled, "RAIL-S");
    Mock::given(method("GET"))
        .and(path_regex(format!("^/orders/{key}$")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(settled, "application/xml"))
        .expect(1..)
        .mount(&rail)
        .await;
    let payment = NewExternalPayment {
        customer: ada.id,
        account: ada.eur,
        hold,
        amount: Money::new(7_500, Currency::EUR),
        creditor: ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", None).expect("payee"),
        remittance: None,
        rail: RailId::SepaCreditTransfer,
    };
    let t = lifecycle::request(&payment, server.state.now()).expect("request");
    let r = server.state.services.request(t).await.expect("stored").record;
    server.state.external_wake.notify_one();
    until_status(&server, r.id, ServiceStatus::Settled).await;
    assert_eq!(balances(&server, ada.eur).await, (92_500, 92_500));
    let posts =
        rail.received_requests().await.expect("recorded").iter().filter(|r| r.method.as_str() == "POST").count();
    assert_eq!(posts, 1, "one submission; the outcome was asked for, never sent again");
    rail.verify().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_payments_are_flagged_kept_and_listed_for_operators() {
    let mut server = Server::start_with(|c| {
        rail_at("http://127.0.0.1:1/")(c);
        c.external.sepa.stuck_after_s = 1;
    })
    .await;
    let ada = server.customer("ada-stuck", 100_000, 0).await;
    let r = request(&server, &ada, 3_000).await;
    let mut stuck = record(&server, r.id).await;
    for _ in 0..200 {
        if stuck.stuck_since.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        stuck = record(&server, r.id).await;
    }
    assert!(stuck.stuck_since.is_some(), "flagged stuck: {stuck:?}");
    assert!(!stuck.status.money_decided(), "never released by itself");
    assert_eq!(balances(&server, ada.eur).await, (100_000, 97_000), "the hold stays");
    // The gauge (other tests' workers set it too: wait for this one's).
    let mut seen = false;
    for _ in 0..100 {
        let text = reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("text");
        if text.lines().any(|l| l.starts_with("bp_external_stuck ") && l != "bp_external_stuck 0") {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(seen, "bp_external_stuck counts it");
    server.stop().await;
    // The operators' command lists it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bp-server-example"))
        .args(["external", "stuck"])
        .env("BP_STORAGE__DATA_DIR", server.dir.path())
        .env("BP_EXTERNAL__SEPA__SIMULATE", "false")
        .env_remove("RUST_LOG")
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().any(|l| l.starts_with(&r.id.to_string()) && l.contains("30.00")), "{text}");
}

/// Opens `dir`'s database in this process (no server running on it).
async fn open_store(dir: &std::path::Path) -> std::sync::Arc<bp_storage::sqlite::SqliteStore> {
    let store = bp_storage::sqlite::SqliteStore::open(dir.join("bp.sqlite"), Default::default()).expect("open");
    std::sync::Arc::new(store)
}

async fn close_store(store: std::sync::Arc<bp_storage::sqlite::SqliteStore>) {
    std::sync::Arc::into_inner(store).expect("the only reference").close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_in_flight_when_the_server_is_killed_is_submitted_once_after_restart() {
    use bp_core::Store as _;
    use bp_core::account::{AccountKind, NewAccount};
    use bp_core::customer::{KycStatus, NewCustomer, Username};
    use bp_core::ids::CustomerId;
    use bp_core::service_store::ServiceStore as _;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let dir = tempfile::tempdir().expect("tempdir");
    // A customer and a payment requested (hold and record, the intent to submit), as the
    // payments façade will write them.
    let store = open_store(dir.path()).await;
    let ledger = bp_core::Ledger::new(store.clone() as std::sync::Arc<dyn bp_core::Store>);
    let (customer, account) = (CustomerId::new_v7(), AccountId::new_v7());
    let username = Username::parse("crash-ada").expect("username");
    ledger
        .open_customer(NewCustomer::person(customer, username, "Ada", "Lovelace", KycStatus::Verified))
        .await
        .expect("customer");
    let new = NewAccount {
        id: account,
        customer_id: customer,
        kind: AccountKind::Current,
        currency: Currency::EUR,
        overdraft_limit_minor: 0,
    };
    ledger.open_account(new).await.expect("account");
    ledger.fund(TransferId::new_v7(), account, Money::new(100_000, Currency::EUR)).await.expect("fund");
    let hold = TransferId::new_v7();
    let payment = NewExternalPayment {
        customer,
        account,
        hold,
        amount: Money::new(2_500, Currency::EUR),
        creditor: ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", None).expect("payee"),
        remittance: None,
        rail: RailId::SepaCreditTransfer,
    };
    let t = lifecycle::request(&payment, chrono::Utc::now()).expect("request");
    let id = store.request(t).await.expect("stored").record.id;
    drop(ledger);
    close_store(store).await;

    // The server runs with the rail unreachable (its worker is mid-way with the payment), and is
    // killed with SIGKILL.
    let env = [
        ("BP_DEMO", "false"),
        ("BP_EXTERNAL__SEPA__WEBHOOK_SECRETS", "[\"bp-test-webhook-secret-0123456789abcdef\"]"),
        ("BP_EXTERNAL__SEPA__CHECK_FIRST_MS", "50"),
        ("BP_EXTERNAL__SEPA__CHECK_MAX_MS", "200"),
        // The killed process's lease on the external worker ends within this after its last
        // renewal; the restarted one waits for that end before it runs the worker.
        ("BP_SERVER__JOB_LEASE_MS", "1000"),
    ];
    let unreachable = [env.as_slice(), &[("BP_EXTERNAL__SEPA__BASE_URL", "http://127.0.0.1:1/")]].concat();
    let (_, _, mut child) = common::spawn_binary(dir.path(), &unreachable);
    tokio::time::sleep(Duration::from_millis(700)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let store = open_store(dir.path()).await;
    let killed = store.service_record(id).await.expect("read").expect("record");
    assert!(!killed.status.money_decided(), "{killed:?}");
    close_store(store).await;

    // Restarted with the rail up: the payment is submitted exactly once, with its key.
    let rail = MockServer::start().await;
    let key = CallKey::of_transfer(hold);
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(202).set_body_raw(status_report(&key, Status::Settled, "RAIL-1"), "application/xml"),
        )
        .mount(&rail)
        .await;
    // A status query (the record may have been left `submitted`): never received.
    let not_found = serde_json::json!({ "type": "urn:bp:rail:order-not-found", "title": "no such order" });
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_raw(not_found.to_string(), "application/problem+json"))
        .mount(&rail)
        .await;
    let base = format!("{}/", rail.uri());
    let reachable = [env.as_slice(), &[("BP_EXTERNAL__SEPA__BASE_URL", base.as_str())]].concat();
    let (_, _, mut child) = common::spawn_binary(dir.path(), &reachable);
    let mut posts = 0;
    for _ in 0..200 {
        posts =
            rail.received_requests().await.expect("recorded").iter().filter(|r| r.method.as_str() == "POST").count();
        if posts > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a wrong second submission to show.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let requests = rail.received_requests().await.expect("recorded");
    let sent: Vec<_> = requests.iter().filter(|r| r.method.as_str() == "POST").collect();
    assert_eq!((posts, sent.len()), (1, 1), "submitted once");
    assert_eq!(sent[0].headers.get("Idempotency-Key").and_then(|v| v.to_str().ok()), Some(key.as_str()));
    let store = open_store(dir.path()).await;
    let stored = store.service_record(id).await.expect("read").expect("record");
    assert_eq!(stored.status, ServiceStatus::Settled);
    let account = store.account(account).await.expect("read").expect("account");
    assert_eq!((account.posted_minor, account.available_minor()), (97_500, 97_500));
    close_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_to_an_iban_through_the_facade_is_sent_by_the_worker() {
    use bp_core::payments::{Payee, Payment, PaymentRequest};

    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-iban", 100_000, 0).await;
    let request = PaymentRequest {
        from_account: ada.eur,
        payee: Payee::External(
            ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", None).expect("payee"),
        ),
        // Low value: exempt from SCA, so handed to the rail at once.
        amount: Money::new(1_500, Currency::EUR),
        reference: Some("books".to_owned()),
    };
    let key = bp_core::payments::rules::IdempotencyKey::parse("iban-1").expect("key");
    let receipt = server.state.payments.pay(ada.id, &key, &request).await.expect("pay");
    let Payment::Submitted { service, .. } = receipt.payment else { panic!("not submitted: {receipt:?}") };
    until_status(&server, service.id, ServiceStatus::Settled).await;
    assert_eq!(balances(&server, ada.eur).await, (98_500, 98_500));
    server.stop().await;
}

/// `POST /v1/interbank-transfers` over HTTP: a low-value payment to an IBAN is handed to the rail
/// at once (202 with its service record) and settles; one above the low-value limit waits for its
/// dynamically linked challenge (the text names IBAN and name), whose answer hands it over; a
/// retry answers the same; bad payees, another currency and a server without a rail are problems
/// that hold nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_to_an_iban_over_http_are_handed_to_the_rail_and_settle() {
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-iban-http", 100_000, 10_000).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let pay = |amount: &str, iban: &str| {
        serde_json::json!({
            "from_account": ada.eur, "to_iban": iban, "to_name": "Erika Mustermann",
            "amount": { "amount": amount, "currency": "EUR" }, "reference": "books",
        })
    };
    let iban = "DE89 3704 0044 0532 0130 00";

    // Low value: handed to the rail at once, then settled; a retry answers the same record.
    let (status, low) = api.post("/v1/interbank-transfers", &pay("15.00", iban), Some("iban-low")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{low}");
    assert!(low.get("sca").is_none(), "{low}");
    assert_eq!(low["exemption"], "low_value", "{low}");
    let service: ServiceRecordId = low["service"].as_str().expect("service").parse().expect("id");
    until_status(&server, service, ServiceStatus::Settled).await;
    let (status, again) = api.post("/v1/interbank-transfers", &pay("15.00", iban), Some("iban-low")).await;
    assert_eq!((status, &again["service"]), (StatusCode::ACCEPTED, &low["service"]), "{again}");
    assert_eq!(balances(&server, ada.eur).await, (98_500, 98_500));

    // Above the low-value limit: a challenge naming IBAN and name; its answer hands it over.
    let (status, big) = api.post("/v1/interbank-transfers", &pay("250.00", iban), Some("iban-big")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{big}");
    assert!(big.get("service").is_none(), "not handed over before the answer: {big}");
    let message = big["sca"]["message"].as_str().expect("message");
    assert!(message.contains("iban:DE89370400440532013000") && message.contains("name:Erika Mustermann"), "{message}");
    assert_eq!(balances(&server, ada.eur).await, (98_500, 73_500), "held meanwhile");
    let answer =
        serde_json::json!({ "method": "totp", "challenge_id": big["sca"]["id"], "code": server.totp(&ada).await });
    let id = big["transfer"]["id"].as_str().expect("id");
    let (status, confirmed) = api.post(&format!("/v1/transfers/{id}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    let service: ServiceRecordId = confirmed["service"].as_str().expect("service").parse().expect("id");
    until_status(&server, service, ServiceStatus::Settled).await;
    assert_eq!(balances(&server, ada.eur).await, (73_500, 73_500));
    let (_, list) = api.get("/v1/services").await;
    assert_eq!(list["services"].as_array().map(Vec::len), Some(2), "{list}");

    // Refused, nothing held: a malformed IBAN, an empty name, dollars, an IBAN of this bank.
    for (body, why, pointer) in [
        (pay("5.00", "DE00 3704 0044 0532 0130 00"), "check digits", "/to_iban"),
        (
            serde_json::json!({ "from_account": ada.eur, "to_iban": iban, "to_name": "", "amount": { "amount": "5.00", "currency": "EUR" } }),
            "no name",
            "/to_name",
        ),
        (
            serde_json::json!({ "from_account": ada.eur, "to_iban": iban, "to_name": "Erika", "to_bic": "NOT A BIC", "amount": { "amount": "5.00", "currency": "EUR" } }),
            "bad BIC",
            "/to_bic",
        ),
        (
            serde_json::json!({ "from_account": ada.usd, "to_iban": iban, "to_name": "Erika", "amount": { "amount": "5.00", "currency": "USD" } }),
            "USD",
            "/amount/currency",
        ),
    ] {
        let (status, problem) =
            api.post("/v1/interbank-transfers", &body, Some(&format!("bad-{}", why.replace(' ', "-")))).await;
        assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
        assert_pointer(&problem, pointer);
    }
    assert_eq!(balances(&server, ada.eur).await, (73_500, 73_500));
    let (_, list) = api.get("/v1/services").await;
    assert_eq!(list["services"].as_array().map(Vec::len), Some(2), "nothing recorded: {list}");
    // Paying from another customer's account: as if it did not exist.
    let bob = server.customer("bob-iban-http", 100_000, 0).await;
    let steal = serde_json::json!({ "from_account": bob.eur, "to_iban": iban, "to_name": "Mallory", "amount": { "amount": "5.00", "currency": "EUR" } });
    let (status, problem) = api.post("/v1/interbank-transfers", &steal, Some("steal")).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    assert_eq!(balances(&server, bob.eur).await, (100_000, 100_000));
    server.stop().await;

    // Without a rail, the route says so and holds nothing.
    let mut server = Server::start().await;
    let bob = server.customer("bob-no-rail", 100_000, 0).await;
    let api = Api::new(&server, &server.login(&bob, ALL).await);
    let body = serde_json::json!({ "from_account": bob.eur, "to_iban": iban, "to_name": "Erika", "amount": { "amount": "5.00", "currency": "EUR" } });
    let (status, problem) = api.post("/v1/interbank-transfers", &body, Some("no-rail")).await;
    assert_problem(status, &problem, StatusCode::SERVICE_UNAVAILABLE, "external-services-unavailable");
    assert_eq!(balances(&server, bob.eur).await, (100_000, 100_000));
    server.stop().await;
}

/// A payment abroad over HTTP (within the TOTP limit: 100.00 EUR, fee 1.00): a quote with exact
/// amounts; a changed quote, or one another payment took, refused (409) and an
/// unknown one (422) holding nothing; paying holds the amount and the fee and opens a challenge
/// whose text names both amounts, the fee and the rate; the answer hands it to the
/// correspondent rail (the real `HttpRail` against the simulator), which settles it in dollars:
/// every leg posted, every currency at zero; `GET /v1/services` shows the quote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_abroad_converts_at_its_quote_and_settles_in_the_target_currency() {
    use bp_core::account::SystemAccount;
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-abroad", 200_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let ask = serde_json::json!({
        "from_account": ada.eur, "amount": { "amount": "100.00", "currency": "EUR" }, "target_currency": "USD",
    });
    let (status, quote) = api.post("/v1/fx-quotes", &ask, None).await;
    assert_eq!(status, StatusCode::CREATED, "{quote}");
    assert_eq!(quote["rate"], "1.0842", "{quote}");
    assert_eq!(quote["target"], serde_json::json!({ "amount": "108.42", "currency": "USD" }), "{quote}");
    assert_eq!(quote["fee"], serde_json::json!({ "amount": "1.00", "currency": "EUR" }), "{quote}");
    assert_eq!(quote["debit"], serde_json::json!({ "amount": "101.00", "currency": "EUR" }), "{quote}");
    let pay = |quote: &Value| {
        serde_json::json!({
            "from_account": ada.eur, "quote": quote, "to_iban": "GB33 BUKB 2020 1555 5555 55", "to_name": "Jane Doe",
            "reference": "rent",
        })
    };

    // A better rate than quoted, or a quote the provider never gave: refused, nothing held.
    let mut better = quote.clone();
    better["rate"] = Value::from("1.2");
    let (status, problem) = api.post("/v1/international-transfers", &pay(&better), Some("abroad-tampered")).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "fx-quote-stale");
    let mut unknown = quote.clone();
    unknown["id"] = Value::from("no-such-quote");
    let (status, problem) = api.post("/v1/international-transfers", &pay(&unknown), Some("abroad-unknown")).await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "fx-quote-unknown");
    assert_pointer(&problem, "/quote");
    let (status, problem) = api
        .post(
            "/v1/fx-quotes",
            &serde_json::json!({
                "from_account": ada.eur, "amount": { "amount": "1.00", "currency": "EUR" }, "target_currency": "EUR",
            }),
            None,
        )
        .await;
    assert_problem(status, &problem, StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_pointer(&problem, "/target_currency");
    assert_eq!(balances(&server, ada.eur).await, (200_000, 200_000), "no refusal held anything");

    // Paid: the amount and the fee held, a challenge naming both amounts, the fee and the rate.
    let (status, paid) = api.post("/v1/international-transfers", &pay(&quote), Some("abroad-1")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
    let message = paid["sca"]["message"].as_str().expect("message");
    for line in ["amount:100.00", "fee:1.00", "total:101.00", "rate:1.0842", "receive:108.42", "receive_currency:USD"] {
        assert!(message.lines().any(|l| l == line), "the challenge names {line}: {message}");
    }
    assert_eq!(balances(&server, ada.eur).await, (200_000, 189_900), "amount and fee held");
    let answer =
        serde_json::json!({ "method": "totp", "challenge_id": paid["sca"]["id"], "code": server.totp(&ada).await });
    let id = paid["transfer"]["id"].as_str().expect("id");
    let (status, confirmed) = api.post(&format!("/v1/transfers/{id}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    let service: ServiceRecordId = confirmed["service"].as_str().expect("service").parse().expect("id");
    let settled = until_status(&server, service, ServiceStatus::Settled).await;
    assert_eq!(settled.transfers.len(), 3, "amount, fee and the dollar leg");
    assert_eq!(balances(&server, ada.eur).await, (189_900, 189_900));
    let usd = Currency::USD;
    assert_eq!(balances(&server, SystemAccount::InternationalClearing.id(usd)).await.0, 10_842);
    assert_eq!(balances(&server, SystemAccount::FxPosition.id(usd)).await.0, -10_842);
    for total in server.state.ledger.store().totals().await.expect("totals") {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    let (_, list) = api.get("/v1/services").await;
    let record = &list["services"][0];
    assert_eq!(
        (record["kind"].as_str(), record["details"]["quote"]["rate"].as_str()),
        (Some("international_transfer"), Some("1.0842")),
        "{list}"
    );
    // A retry answers the same record.
    let (status, again) = api.post("/v1/international-transfers", &pay(&quote), Some("abroad-1")).await;
    assert_eq!((status, &again["service"]), (StatusCode::ACCEPTED, &confirmed["service"]), "{again}");
    // The quote converted once: paying with it again, under another key, is refused.
    let (status, problem) = api.post("/v1/international-transfers", &pay(&quote), Some("abroad-2")).await;
    assert_problem(status, &problem, StatusCode::CONFLICT, "fx-quote-stale");
    assert_eq!(balances(&server, ada.eur).await, (189_900, 189_900), "nothing more held");
    server.stop().await;
}

/// The cross-customer matrix, abroad: Bob can neither quote nor pay from Ada's account, nor
/// confirm, read or list Ada's payment abroad (each a 404 like an unknown id, or absent from his
/// lists), and Ada's payment still confirms afterwards, untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customers_payment_abroad_is_not_found() {
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-abroad-x", 200_000, 0).await;
    let bob = server.customer("bob-abroad-x", 200_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let ask = |from: AccountId| {
        serde_json::json!({
            "from_account": from, "amount": { "amount": "100.00", "currency": "EUR" }, "target_currency": "USD",
        })
    };
    let pay = |from: AccountId, quote: &Value| {
        serde_json::json!({
            "from_account": from, "quote": quote, "to_iban": "GB33 BUKB 2020 1555 5555 55", "to_name": "Jane Doe",
        })
    };
    let (status, problem) = bob_api.post("/v1/fx-quotes", &ask(ada.eur), None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, quote) = api.post("/v1/fx-quotes", &ask(ada.eur), None).await;
    assert_eq!(status, StatusCode::CREATED, "{quote}");
    let (status, problem) = bob_api.post("/v1/international-transfers", &pay(ada.eur, &quote), Some("x-1")).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    assert_eq!(balances(&server, ada.eur).await, (200_000, 200_000), "nothing held from Ada's account");

    let (status, paid) = api.post("/v1/international-transfers", &pay(ada.eur, &quote), Some("abroad-x")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{paid}");
    let id = paid["transfer"]["id"].as_str().expect("id");
    let answer =
        serde_json::json!({ "method": "totp", "challenge_id": paid["sca"]["id"], "code": server.totp(&ada).await });
    // Bob cannot confirm it (even with Ada's right answer), read it, or see it anywhere.
    let (status, problem) = bob_api.post(&format!("/v1/transfers/{id}/confirm"), &answer, None).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, problem) = bob_api.get(&format!("/v1/transfers/{id}")).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, problem) = bob_api.get(&format!("/v1/accounts/{}/pending", ada.eur)).await;
    assert_problem(status, &problem, StatusCode::NOT_FOUND, "not-found");
    let (status, confirmed) = api.post(&format!("/v1/transfers/{id}/confirm"), &answer, None).await;
    assert_eq!(status, StatusCode::OK, "Ada's answer still confirms it: {confirmed}");
    let service = confirmed["service"].as_str().expect("service");
    let (_, bobs) = bob_api.get("/v1/services").await;
    assert_eq!(bobs["services"], serde_json::json!([]), "{bobs}");
    let (_, adas) = api.get("/v1/services").await;
    assert_eq!(adas["services"][0]["id"].as_str(), Some(service), "{adas}");
    assert_eq!(balances(&server, bob.eur).await, (200_000, 200_000), "Bob's account untouched");
    server.stop().await;
}

/// The worker sends a loan application to the loan provider (the real `HttpLoanProvider`
/// against the simulator) and applies its decision: an offer at the band's rate, with the fee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_application_is_decided_by_the_worker() {
    use bp_core::external::loan::{self, LoanDetails, NewLoan};
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-apply", 100_000, 0).await;
    let key = bp_core::payments::IdempotencyKey::parse("apply-1").expect("key");
    let new = NewLoan {
        id: loan::loan_id(ada.id, &key),
        customer: ada.id,
        account: ada.eur,
        amount: Money::new(300_000, Currency::EUR),
        term_months: 24,
        purpose: "a kitchen".to_owned(),
    };
    let t = loan::apply(&new, server.state.now()).expect("an application");
    server.state.services.request(t).await.expect("stored");
    server.state.external_wake.notify_one();
    let offered = until_status(&server, new.id, ServiceStatus::Offered).await;
    let offer = LoanDetails::of(&offered).and_then(|d| d.offer).expect("an offer");
    assert_eq!((offer.annual_rate.to_string(), offer.term_months), ("0.059".to_owned(), 24));
    assert_eq!(offer.fee, Money::new(3_000, Currency::EUR));
    let simulator = server.state.external.as_ref().and_then(|e| e.simulator.as_ref()).expect("simulator");
    assert_eq!(simulator.decisions_len(), 1, "decided once");
    assert_eq!(balances(&server, ada.eur).await, (100_000, 100_000), "nothing moves before acceptance");
    server.stop().await;
}

/// Applies for a loan over HTTP and waits until the loan provider (the simulator) decided it.
async fn loan_decided(server: &Server, api: &Api, body: &Value, key: &str, status: ServiceStatus) -> Value {
    let (code, applied) = api.post("/v1/loans", body, Some(key)).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{applied}");
    assert_eq!(applied["status"], "requested", "{applied}");
    let id: ServiceRecordId = applied["id"].as_str().expect("id").parse().expect("id");
    until_status(server, id, status).await;
    let (code, loan) = api.get(&format!("/v1/loans/{id}")).await;
    assert_eq!(code, StatusCode::OK, "{loan}");
    loan
}

fn sum_minor(loan: &Value, field: &str) -> i64 {
    let minor = |v: &Value| {
        let text = v["amount"].as_str().expect("an amount").replace('.', "");
        text.parse::<i64>().expect("minor units")
    };
    loan["loan"]["schedule"].as_array().expect("schedule").iter().map(|i| minor(&i[field])).sum()
}

/// Asks to accept loan `id` and answers the challenge with `phone`'s signature: the loan, active.
async fn accept(api: &Api, phone: &Phone, id: &str) -> Value {
    let (code, begun) = api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{begun}");
    assert_eq!(begun["loan"]["status"], "offered", "nothing moves before the answer: {begun}");
    let answer = phone.answer(&begun["sca"]);
    let (code, active) = api.post(&format!("/v1/loans/{id}/accept/confirm"), &answer, None).await;
    assert_eq!(code, StatusCode::OK, "{active}");
    assert_eq!(active["status"], "active", "{active}");
    active
}

/// A loan over HTTP, end to end with the simulated loan provider: applied for, decided by the
/// worker (offered: 4.9 % for 12 months, a 1 % fee), accepted (the principal paid in less the
/// fee, the receivable opened, a schedule that sums to the principal), the first instalment
/// collected by the worker's turn on its due date (run at a clock a month ahead), repaid early
/// in part (the rest recomputed) and in full (closed, the receivable at zero); every currency
/// sums to zero throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_is_decided_accepted_collected_and_repaid_early() {
    use bp_core::account::SystemAccount;
    use bp_core::clock::ManualClock;
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-loan", 100_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let ask = serde_json::json!({
        "account": ada.eur, "amount": { "amount": "1200.00", "currency": "EUR" }, "term_months": 12,
        "purpose": "a new bicycle",
    });
    let offered = loan_decided(&server, &api, &ask, "loan-1", ServiceStatus::Offered).await;
    let offer = &offered["loan"]["offer"];
    assert_eq!((offer["annual_rate"].as_str(), offer["term_months"].as_u64()), (Some("0.049"), Some(12)), "{offered}");
    assert_eq!(offer["fee"], serde_json::json!({ "amount": "12.00", "currency": "EUR" }), "{offered}");
    let id = offered["id"].as_str().expect("id").to_owned();
    // The same key answers the same application; another body under it is a conflict.
    let (code, again) = api.post("/v1/loans", &ask, Some("loan-1")).await;
    assert_eq!((code, again["id"].as_str()), (StatusCode::ACCEPTED, Some(id.as_str())), "{again}");
    let mut other = ask.clone();
    other["term_months"] = Value::from(24);
    let (code, problem) = api.post("/v1/loans", &other, Some("loan-1")).await;
    assert_problem(code, &problem, StatusCode::CONFLICT, "idempotency-conflict");
    // Not active yet: nothing to repay.
    let repay = |minor: &str| serde_json::json!({ "amount": { "amount": minor, "currency": "EUR" } });
    let (code, problem) = api.post(&format!("/v1/loans/{id}/repayments"), &repay("1.00"), Some("early-0")).await;
    assert_problem(code, &problem, StatusCode::CONFLICT, "loan-not-active");

    // Accepting takes SCA: the challenge's text shows the whole offer; a signature of anything
    // else, or a confirmation without the right answer, moves nothing.
    let phone = register_phone(&server, &api, &ada).await;
    let (code, begun) = api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{begun}");
    assert_eq!(begun["sca"]["methods"], serde_json::json!(["device_signature"]), "{begun}");
    let text = begun["sca"]["message"].as_str().expect("message");
    let number = server.state.ledger.account(ada.eur).await.expect("account").number;
    for line in [
        "bp-sca-v4".to_owned(),
        "purpose:loan_acceptance".to_owned(),
        format!("loan:{id}"),
        "amount:1200.00".to_owned(),
        "currency:EUR".to_owned(),
        format!("account:{number}"),
        "term_months:12".to_owned(),
        "rate:0.049".to_owned(),
        "instalment:102.67".to_owned(),
        "interest:32.09".to_owned(),
        "fee:12.00".to_owned(),
        "total:1244.09".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in {text}");
    }
    let mut forged = phone.answer(&begun["sca"]);
    forged["signature"] = Value::from(phone.sign(&text.replace("amount:1200.00", "amount:12.00")));
    let (code, problem) = api.post(&format!("/v1/loans/{id}/accept/confirm"), &forged, None).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(balances(&server, ada.eur).await, (100_000, 100_000), "a wrong answer moves nothing");
    let (code, active) = api.post(&format!("/v1/loans/{id}/accept/confirm"), &phone.answer(&begun["sca"]), None).await;
    assert_eq!(code, StatusCode::OK, "{active}");
    assert_eq!(active["status"], "active", "{active}");
    assert_eq!(balances(&server, ada.eur).await.0, 100_000 + 120_000 - 1_200, "paid in, less the fee");
    let receivable: AccountId = active["loan"]["receivable"].as_str().expect("receivable").parse().expect("id");
    assert_eq!(balances(&server, receivable).await.0, -120_000, "the principal owed");
    assert_eq!(balances(&server, SystemAccount::LoanFunding.id(Currency::EUR)).await.0, 0);
    assert_eq!(active["loan"]["schedule"].as_array().map(Vec::len), Some(12), "{active}");
    assert_eq!(sum_minor(&active, "principal"), 120_000, "the schedule repays the principal exactly");
    assert!(active["loan"]["schedule"].as_array().expect("schedule").iter().all(|i| i["state"] == "due"));
    let confirm = phone.answer(&begun["sca"]);
    let (code, same) = api.post(&format!("/v1/loans/{id}/accept/confirm"), &confirm, None).await;
    assert_eq!((code, &same["loan"]), (StatusCode::OK, &active["loan"]), "confirming again changes nothing");
    let (code, problem) = api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
    assert_problem(code, &problem, StatusCode::CONFLICT, "loan-not-offered");

    // The worker's turn on the first due date collects the first instalment.
    let first = active["loan"]["schedule"][0].clone();
    let due_on: chrono::NaiveDate = first["due_on"].as_str().expect("due_on").parse().expect("date");
    let clock = ManualClock::new(bp_core::external::loan::start_of(due_on) + chrono::TimeDelta::hours(1));
    let external = server.state.external.as_ref().expect("connected");
    let provider = external.loans.as_deref().expect("the loan provider");
    let loan_id: ServiceRecordId = id.parse().expect("id");
    let services = server.state.services.as_ref();
    let before = balances(&server, ada.eur).await.0;
    let next = bp_server_example::loans::turn(services, &clock, &external.loan_policy, provider, loan_id, &|| {}).await;
    let (_, collected) = api.get(&format!("/v1/loans/{id}")).await;
    assert_eq!(collected["loan"]["schedule"][0]["state"], "paid", "{collected}");
    assert_eq!(collected["loan"]["schedule"][1]["state"], "due", "{collected}");
    let total = first["total"]["amount"].as_str().expect("total").replace('.', "").parse::<i64>().expect("minor");
    assert_eq!(balances(&server, ada.eur).await.0, before - total, "one instalment collected");
    assert_eq!(collected["loan"]["outstanding"], first["outstanding_after"], "{collected}");
    let second_due: chrono::NaiveDate =
        collected["loan"]["schedule"][1]["due_on"].as_str().expect("d").parse().expect("d");
    assert_eq!(next, Some(bp_core::external::loan::start_of(second_due)), "looked at again on the next due date");

    // In part: the remaining 11 instalments are recomputed over what is left.
    let outstanding = collected["loan"]["outstanding"]["amount"].as_str().expect("o").replace('.', "");
    let outstanding: i64 = outstanding.parse().expect("minor");
    let (code, problem) = api.post(&format!("/v1/loans/{id}/repayments"), &repay("99999.00"), Some("early-x")).await;
    assert_problem(code, &problem, StatusCode::UNPROCESSABLE_ENTITY, "repayment-amount");
    assert_pointer(&problem, "/amount");
    let (code, partial) = api.post(&format!("/v1/loans/{id}/repayments"), &repay("200.00"), Some("early-1")).await;
    assert_eq!(code, StatusCode::OK, "{partial}");
    let schedule = partial["loan"]["schedule"].as_array().expect("schedule");
    assert_eq!(schedule.len(), 12, "{partial}");
    assert_eq!(sum_minor(&partial, "principal"), 120_000 - 20_000, "what is paid and what is left add up");
    let rest: i64 = schedule[1..]
        .iter()
        .map(|i| i["principal"]["amount"].as_str().expect("p").replace('.', "").parse::<i64>().expect("minor"))
        .sum();
    assert_eq!(rest, outstanding - 20_000, "the rest repays exactly what is left");
    assert!(schedule[1]["total"] != collected["loan"]["schedule"][1]["total"], "a lower instalment");
    let (code, replay) = api.post(&format!("/v1/loans/{id}/repayments"), &repay("200.00"), Some("early-1")).await;
    assert_eq!((code, &replay["loan"]), (StatusCode::OK, &partial["loan"]), "a retry repays once");

    // In full: closed, nothing owed.
    let left = format!("{}.{:02}", (outstanding - 20_000) / 100, (outstanding - 20_000) % 100);
    let (code, closed) = api.post(&format!("/v1/loans/{id}/repayments"), &repay(&left), Some("early-2")).await;
    assert_eq!(code, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "closed", "{closed}");
    assert_eq!(closed["loan"]["outstanding"]["amount"], "0.00", "{closed}");
    assert_eq!(balances(&server, receivable).await.0, 0, "nothing owed");
    let (code, problem) = api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
    assert_problem(code, &problem, StatusCode::CONFLICT, "loan-not-offered");
    for total in server.state.ledger.store().totals().await.expect("totals") {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    let (_, list) = api.get("/v1/services?kind=loan").await;
    assert_eq!(list["services"][0]["status"], "closed", "{list}");
    server.stop().await;
}

/// A declined application ends `rejected` with the provider's reason; refused steps answer
/// their problems; another customer's loan is not found, whatever is asked of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_loan_is_rejected_and_another_customers_loan_is_not_found() {
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-decl", 100_000, 0).await;
    let bob = server.customer("bob-decl", 100_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let ask = |purpose: &str, term: u32| {
        serde_json::json!({
            "account": ada.eur, "amount": { "amount": "500.00", "currency": "EUR" }, "term_months": term,
            "purpose": purpose,
        })
    };
    let declined = loan_decided(&server, &api, &ask("please decline me", 6), "decl-1", ServiceStatus::Rejected).await;
    assert_eq!(declined["reason"], "MS03", "{declined}");
    assert_eq!(declined["loan"]["rejection"], "declined", "{declined}");
    let id = declined["id"].as_str().expect("id");
    let (code, problem) = api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
    assert_problem(code, &problem, StatusCode::CONFLICT, "loan-not-offered");

    let (code, problem) = api.post("/v1/loans", &ask("a car", 0), Some("decl-2")).await;
    assert_problem(code, &problem, StatusCode::UNPROCESSABLE_ENTITY, "loan-application");
    assert_pointer(&problem, "/term_months");
    let (code, problem) = api.post("/v1/loans", &ask("", 12), Some("decl-3")).await;
    assert_problem(code, &problem, StatusCode::UNPROCESSABLE_ENTITY, "loan-application");
    assert_pointer(&problem, "/purpose");
    let mut nothing = ask("a car", 12);
    nothing["amount"]["amount"] = Value::from("0.00");
    let (code, problem) = api.post("/v1/loans", &nothing, Some("decl-0")).await;
    assert_problem(code, &problem, StatusCode::UNPROCESSABLE_ENTITY, "loan-application");
    assert_pointer(&problem, "/amount");
    let mut usd = ask("a car", 12);
    usd["amount"]["currency"] = Value::from("USD");
    let (code, problem) = api.post("/v1/loans", &usd, Some("decl-4")).await;
    assert_problem(code, &problem, StatusCode::UNPROCESSABLE_ENTITY, "account-unusable");
    assert_pointer(&problem, "/amount/currency");
    let mut bobs_account = ask("a car", 12);
    bobs_account["account"] = Value::from(bob.eur.to_string());
    let (code, problem) = api.post("/v1/loans", &bobs_account, Some("decl-5")).await;
    assert_problem(code, &problem, StatusCode::NOT_FOUND, "not-found");

    // Bob sees none of Ada's loan.
    let bob_api = Api::new(&server, &server.login(&bob, ALL).await);
    let (code, problem) = bob_api.get(&format!("/v1/loans/{id}")).await;
    assert_problem(code, &problem, StatusCode::NOT_FOUND, "not-found");
    let (code, problem) = bob_api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
    assert_problem(code, &problem, StatusCode::NOT_FOUND, "not-found");
    let answer = serde_json::json!({ "method": "totp", "challenge_id": ServiceRecordId::new_v7(), "code": "000000" });
    let (code, problem) = bob_api.post(&format!("/v1/loans/{id}/accept/confirm"), &answer, None).await;
    assert_problem(code, &problem, StatusCode::NOT_FOUND, "not-found");
    let repay = serde_json::json!({ "amount": { "amount": "1.00", "currency": "EUR" } });
    let (code, problem) = bob_api.post(&format!("/v1/loans/{id}/repayments"), &repay, Some("bob-1")).await;
    assert_problem(code, &problem, StatusCode::NOT_FOUND, "not-found");
    let (code, problem) = bob_api.get(&format!("/v1/loans/{}", ServiceRecordId::new_v7())).await;
    assert_problem(code, &problem, StatusCode::NOT_FOUND, "not-found");
    server.stop().await;
}

/// The demo data, with the simulator connected, gives each demo customer a running loan with its
/// first instalment collected, and the books still sum to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_customers_have_a_running_loan() {
    use bp_core::external::loan::LoanDetails;
    use bp_core::service_record::ServiceKind;
    use bp_core::service_store::ServiceQuery;
    let mut server = Server::start_with(simulated).await;
    let file = server.dir.path().join("demo-credentials.txt");
    let enrolled = bp_server_example::demo::seed(&server.state, &file).await.expect("seeded").expect("enrolled");
    assert!(!enrolled.is_empty());
    let query = ServiceQuery { kind: Some(ServiceKind::Loan), ..ServiceQuery::default() };
    let mut loans = 0;
    for e in &enrolled {
        let username = bp_core::customer::Username::parse(&e.username).expect("username");
        let customer = server.state.ledger.store().customer_by_username(&username).await.expect("read");
        let customer = customer.expect("a demo customer");
        let page = server.state.services.service_records_of(customer.id, &query).await.expect("loans");
        for record in page.items {
            assert_eq!(record.status, ServiceStatus::Active, "{record:?}");
            let details = LoanDetails::of(&record).expect("a loan");
            assert!(details.schedule[0].is_paid() && !details.schedule[1].is_paid(), "{details:?}");
            loans += 1;
        }
    }
    assert_eq!(loans, enrolled.len(), "one loan per demo customer");
    for total in server.state.ledger.store().totals().await.expect("totals") {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    server.stop().await;
}

/// The worker's turn on a due date finds a frozen account (available balance 0): the loan falls
/// into arrears, nothing is taken; once the account is usable again, the turn after the arrears
/// back-off collects the instalment and the loan is active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_in_arrears_recovers_when_the_account_can_pay() {
    use bp_core::account::AccountStatus;
    use bp_core::clock::ManualClock;
    let mut server = Server::start_with(simulated).await;
    let ada = server.customer("ada-arrears", 10_000, 0).await;
    let api = Api::new(&server, &server.login(&ada, ALL).await);
    let ask = serde_json::json!({
        "account": ada.eur, "amount": { "amount": "600.00", "currency": "EUR" }, "term_months": 6,
        "purpose": "a sofa",
    });
    let offered = loan_decided(&server, &api, &ask, "arrears-1", ServiceStatus::Offered).await;
    let id = offered["id"].as_str().expect("id").to_owned();
    let phone = register_phone(&server, &api, &ada).await;
    let active = accept(&api, &phone, &id).await;
    let due_on: chrono::NaiveDate = active["loan"]["schedule"][0]["due_on"].as_str().expect("d").parse().expect("d");
    let start = bp_core::external::loan::start_of(due_on);

    let external = server.state.external.as_ref().expect("connected");
    let provider = external.loans.as_deref().expect("the loan provider");
    let loan_id: ServiceRecordId = id.parse().expect("id");
    let services = server.state.services.as_ref();
    let turn = |at: bp_core::Timestamp| async move {
        let clock = ManualClock::new(at);
        bp_server_example::loans::turn(services, &clock, &external.loan_policy, provider, loan_id, &|| {}).await
    };
    server.state.ledger.set_account_status(ada.eur, AccountStatus::Frozen).await.expect("frozen");
    let before = balances(&server, ada.eur).await.0;
    turn(start + chrono::TimeDelta::hours(1)).await;
    let arrears = record(&server, loan_id).await;
    assert_eq!(arrears.status, ServiceStatus::InArrears);
    assert_eq!(balances(&server, ada.eur).await.0, before, "nothing taken from a frozen account");
    let (_, seen) = api.get(&format!("/v1/loans/{id}")).await;
    assert_eq!(seen["loan"]["arrears"]["attempts"], 1, "{seen}");
    // Repaying early waits until the instalment is collected.
    let repay = serde_json::json!({ "amount": { "amount": "1.00", "currency": "EUR" } });
    let (code, problem) = api.post(&format!("/v1/loans/{id}/repayments"), &repay, Some("arrears-early")).await;
    assert_problem(code, &problem, StatusCode::CONFLICT, "loan-not-active");

    server.state.ledger.set_account_status(ada.eur, AccountStatus::Active).await.expect("active");
    turn(start + chrono::TimeDelta::days(2)).await;
    let (_, recovered) = api.get(&format!("/v1/loans/{id}")).await;
    assert_eq!(recovered["status"], "active", "{recovered}");
    assert_eq!(recovered["loan"]["schedule"][0]["state"], "paid", "{recovered}");
    assert!(recovered["loan"].get("arrears").is_none(), "{recovered}");
    for total in server.state.ledger.store().totals().await.expect("totals") {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    server.stop().await;
}

/// A loan being disbursed when the server is killed: for each of a spread of moments after the
/// confirmation is sent (from at once to well after), the server is killed with SIGKILL and
/// started again, and the customer's app sends the same confirmation again. Whatever the
/// moment (before the answer was spent, between it and the disbursement, after), the loan ends
/// active, its principal paid in once, less its fee once, its receivable owing exactly the
/// principal, and every currency sums to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loan_disbursing_when_the_server_is_killed_is_disbursed_once_after_restart() {
    use bp_core::Store as _;
    use bp_core::external::loan::LoanDetails;
    use bp_core::service_store::ServiceStore as _;
    use bp_server_example::auth::crypto::{TOTP_STEP_S, totp_code};
    use bp_server_example::demo::read_credentials;

    let dir = tempfile::tempdir().expect("tempdir");
    // Each restart waits for the killed process's lease on the jobs to end: a short one.
    let (mut base, _, mut child) = common::spawn_binary(dir.path(), &[("BP_SERVER__JOB_LEASE_MS", "1000")]);
    let api = Api::bearer(&base, &common::demo_login(&base, dir.path(), "ada"));
    let credentials = read_credentials(&dir.path().join("demo-credentials.txt")).expect("credentials");
    let (_, _, secret) = credentials.iter().find(|(u, _, _)| u == "ada").expect("ada").clone();
    // A phone, registered with the next TOTP step's code (the sign-in spent this step's).
    let (_, me) = api.get("/v1/me").await;
    let customer: bp_core::ids::CustomerId = me["id"].as_str().expect("id").parse().expect("id");
    let (key, body) = new_key(customer);
    let (code, begun) = api.post("/v1/devices", &body, None).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{begun}");
    let totp = totp_code(&secret, common::now_s() / TOTP_STEP_S + 1);
    let answer = serde_json::json!({ "method": "totp", "challenge_id": begun["sca"]["id"], "code": totp });
    let device = begun["device"]["id"].as_str().expect("id").to_owned();
    let (code, body) = api.post(&format!("/v1/devices/{device}/confirm"), &answer, None).await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let phone = Phone { key, device_id: device };
    let (_, accounts) = api.get("/v1/accounts").await;
    let eur = accounts["accounts"].as_array().expect("accounts").iter().find(|a| a["currency"] == "EUR").expect("EUR");
    let eur: AccountId = eur["id"].as_str().expect("id").parse().expect("id");
    let posted = |api: Api| async move {
        let (_, account) = api.get(&format!("/v1/accounts/{eur}")).await;
        let text = account["balances"]["posted"]["amount"].as_str().expect("posted").replace('.', "");
        text.parse::<i64>().expect("minor")
    };

    let delays_ms = [0_u64, 1, 3, 6, 10, 20, 40];
    let mut loans = Vec::new();
    let mut outcomes = std::collections::BTreeMap::new();
    for (n, delay) in delays_ms.into_iter().enumerate() {
        let api = Api { base: base.clone(), ..api.clone() };
        let ask = serde_json::json!({
            "account": eur, "amount": { "amount": "1000.00", "currency": "EUR" }, "term_months": 12,
            "purpose": "a kitchen",
        });
        let (code, applied) = api.post("/v1/loans", &ask, Some(&format!("crash-loan-{n}"))).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{applied}");
        let id = applied["id"].as_str().expect("id").to_owned();
        let mut offered = Value::Null;
        for _ in 0..200 {
            offered = api.get(&format!("/v1/loans/{id}")).await.1;
            if offered["status"] == "offered" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(offered["status"], "offered", "{offered}");
        let fee = offered["loan"]["offer"]["fee"]["amount"].as_str().expect("fee").replace('.', "");
        let fee: i64 = fee.parse().expect("minor");
        let before = posted(api.clone()).await;
        let (code, begun) = api.post(&format!("/v1/loans/{id}/accept"), &Value::Null, None).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{begun}");
        let answer = phone.answer(&begun["sca"]);
        let confirm = format!("/v1/loans/{id}/accept/confirm");
        let in_flight = {
            let (api, answer, confirm) = (api.clone(), answer.clone(), confirm.clone());
            tokio::spawn(async move { api.request(reqwest::Method::POST, &confirm).json(&answer).send().await })
        };
        tokio::time::sleep(Duration::from_millis(delay)).await;
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let _ = in_flight.await;
        // On the same address: the issuer (and so the tokens) stay the same.
        let listen = base.trim_start_matches("http://").to_owned();
        let (restarted, _, again) = common::spawn_binary(
            dir.path(),
            &[("BP_SERVER__LISTEN", listen.as_str()), ("BP_SERVER__JOB_LEASE_MS", "1000")],
        );
        (base, child) = (restarted, again);
        let api = Api { base: base.clone(), ..api.clone() };
        let (_, found) = api.get(&format!("/v1/loans/{id}")).await;
        let found = found["status"].as_str().unwrap_or_default().to_owned();
        *outcomes.entry(found).or_insert(0_u32) += 1;
        let (code, active) = api.post(&confirm, &answer, None).await;
        assert_eq!(code, StatusCode::OK, "killed after {delay} ms, confirmed again: {active}");
        assert_eq!(active["status"], "active", "{active}");
        assert_eq!(posted(api.clone()).await, before + 100_000 - fee, "killed after {delay} ms: paid in once");
        let (code, same) = api.post(&confirm, &answer, None).await;
        assert_eq!((code, &same["loan"]), (StatusCode::OK, &active["loan"]), "a further retry changes nothing");
        loans.push(id.parse::<ServiceRecordId>().expect("id"));
    }
    child.kill().expect("SIGKILL");
    let _ = child.wait();

    let store = open_store(dir.path()).await;
    for id in &loans {
        let record = store.service_record(*id).await.expect("read").expect("the loan");
        let details = LoanDetails::of(&record).expect("a loan");
        assert_eq!(record.status, ServiceStatus::Active, "{record:?}");
        let receivable = store.account(details.receivable).await.expect("read").expect("receivable");
        assert_eq!(receivable.balances().posted.amount_minor(), -100_000, "the receivable owes the principal once");
    }
    for total in store.totals().await.expect("totals") {
        assert_eq!(total.posted_minor, 0, "{} sums to zero", total.currency);
    }
    println!(
        "disbursement crash test: {} kills, found after restart {outcomes:?}; each disbursed once",
        delays_ms.len()
    );
    close_store(store).await;
}
