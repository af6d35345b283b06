//! Demo data for development mode, and enrolling a customer's credentials (used by the demo
//! and by the `create-customer` command). Demo ids are derived from fixed names, so a seed that
//! stopped half-way simply runs again.

use std::fmt::Write as _;
use std::path::Path;

use bp_core::account::{AccountKind, NewAccount};
use bp_core::customer::{
    Contact, DocumentKind, IdentityDocument, Incorporation, KycStatus, LegalEntityProfile, NewCustomer, Party,
    PersonProfile, Username,
};
use bp_core::ids::{AccountId, CustomerId, TransferId};
use bp_core::money::{Currency, Money};
use bp_core::security::{AuditKind, Credentials, Photo};
use chrono::NaiveDate;
use uuid::Uuid;

use crate::auth::crypto::{random_bytes, random_token, totp_base32, totp_uri};
use crate::state::AppState;

/// Namespace of the demo's name-based ids.
const DEMO_NAMESPACE: Uuid = Uuid::from_u128(0x5b1f_7e0a_3c2d_4e9b_8a61_d4c3_b2a1_9f08);

fn demo_uuid(name: &str) -> Uuid {
    Uuid::new_v5(&DEMO_NAMESPACE, name.as_bytes())
}

/// A customer's freshly set credentials, to hand to them once.
#[derive(Clone)]
pub struct Enrolled {
    /// Username.
    pub username: String,
    /// The password.
    pub password: String,
    /// The TOTP secret, base32.
    pub totp_base32: String,
    /// The `otpauth://` URI.
    pub totp_uri: String,
    /// The raw TOTP secret.
    pub totp_secret: Vec<u8>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Sets `password` and a new TOTP secret for `customer`.
pub async fn enrol(state: &AppState, customer: CustomerId, username: &str, password: &str) -> Result<Enrolled, String> {
    let hasher = state.auth.hasher.clone();
    let pw = password.to_owned();
    let hash = tokio::task::spawn_blocking(move || hasher.hash(&pw)).await.map_err(|e| e.to_string())??;
    let secret = random_bytes(20);
    state
        .security
        .put_credentials(Credentials {
            customer_id: customer,
            password_hash: hash,
            totp_secret: Some(secret.clone()),
            updated_at: state.now(),
        })
        .await
        .map_err(|e| e.to_string())?;
    state
        .auth
        .audit(AuditKind::CredentialsChanged, Some(customer), serde_json::json!({}))
        .await
        .map_err(|e| e.to_string())?;
    Ok(Enrolled {
        username: username.to_owned(),
        password: password.to_owned(),
        totp_base32: totp_base32(&secret),
        totp_uri: totp_uri(&secret, "bp", username),
        totp_secret: secret,
    })
}

struct DemoCustomer {
    username: &'static str,
    party: Party,
    documents: Vec<IdentityDocument>,
    contact: Contact,
    initials: &'static str,
    funds: [(Currency, i64); 2],
}

fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

fn demo_customers() -> Vec<DemoCustomer> {
    let doc = |kind, number: &str, country: &str, expires| IdentityDocument {
        kind,
        number: number.to_owned(),
        issuing_country: country.to_owned(),
        expires_on: expires,
    };
    vec![
        DemoCustomer {
            username: "ada",
            party: Party::Person(PersonProfile {
                given_name: "Ada".into(),
                family_name: "Lovelace".into(),
                date_of_birth: date(1990, 12, 10),
            }),
            documents: vec![
                doc(DocumentKind::IdentityCard, "IDC7310528", "GB", date(2031, 5, 1)),
                doc(DocumentKind::Passport, "P5561842", "GB", date(2033, 9, 30)),
            ],
            contact: Contact {
                email: Some("ada@example.com".into()),
                phone: Some("+441632960001".into()),
                address: Some("12 Analytical Row, London".into()),
            },
            initials: "AL",
            funds: [(Currency::EUR, 250_000), (Currency::USD, 120_050)],
        },
        DemoCustomer {
            username: "bob",
            party: Party::Person(PersonProfile {
                given_name: "Bob".into(),
                family_name: "Marley".into(),
                date_of_birth: date(1985, 2, 6),
            }),
            documents: vec![doc(DocumentKind::IdentityCard, "IDC4402917", "JM", date(2030, 2, 6))],
            contact: Contact { email: Some("bob@example.com".into()), phone: None, address: None },
            initials: "BM",
            funds: [(Currency::EUR, 80_000), (Currency::USD, 15_000)],
        },
        DemoCustomer {
            username: "acme",
            party: Party::LegalEntity(LegalEntityProfile {
                legal_name: "Acme Trading Ltd".into(),
                tax_id: "GB123456789".into(),
                legal_representative: "Grace Hopper".into(),
                incorporation: Incorporation {
                    country: "GB".into(),
                    date: date(2012, 3, 14).unwrap_or_default(),
                    registry_number: "08012345".into(),
                },
            }),
            documents: Vec::new(),
            contact: Contact {
                email: Some("treasury@acme.example".into()),
                phone: Some("+441632960099".into()),
                address: Some("1 Commerce Way, Manchester".into()),
            },
            initials: "AT",
            funds: [(Currency::EUR, 5_000_000), (Currency::USD, 2_500_000)],
        },
    ]
}

fn avatar(initials: &str) -> Photo {
    let svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"128\" height=\"128\" viewBox=\"0 0 128 128\">\
         <rect width=\"128\" height=\"128\" rx=\"64\" fill=\"#0b5cad\"/>\
         <text x=\"64\" y=\"78\" font-family=\"sans-serif\" font-size=\"44\" fill=\"#fff\" text-anchor=\"middle\">{initials}</text></svg>"
    );
    Photo { content_type: "image/svg+xml".to_owned(), bytes: svg.into_bytes() }
}

/// Seeds the demo customers, their accounts and money, and sets new credentials, unless
/// `credentials_file` exists already (then the demo was seeded before). Returns what to print.
///
/// Run again on a database that has the demo (a seed that stopped half-way, or a second data
/// folder on one MongoDB database), it changes none of the demo's data (the same requests under
/// the same ids, or skipped when recorded) and only sets new credentials, written to this
/// `credentials_file`.
pub async fn seed(state: &AppState, credentials_file: &Path) -> Result<Option<Vec<Enrolled>>, String> {
    if credentials_file.exists() {
        return Ok(None);
    }
    let mut enrolled = Vec::new();
    for c in demo_customers() {
        let id = CustomerId::from_uuid(demo_uuid(c.username));
        let username = Username::parse(c.username).map_err(|e| e.to_string())?;
        let request = NewCustomer {
            id,
            username,
            party: c.party,
            documents: c.documents,
            contact: c.contact,
            photo_ref: Some("photo".to_owned()),
            kyc: KycStatus::Verified,
            extra: serde_json::Map::new(),
        };
        state.ledger.open_customer(request).await.map_err(|e| e.to_string())?;
        state.security.put_photo(id, avatar(c.initials)).await.map_err(|e| e.to_string())?;
        for (currency, amount_minor) in c.funds {
            let account_id = AccountId::from_uuid(demo_uuid(&format!("{}/{currency}", c.username)));
            let account = NewAccount {
                id: account_id,
                customer_id: id,
                kind: AccountKind::Current,
                currency,
                overdraft_limit_minor: 0,
            };
            state.ledger.open_account(account).await.map_err(|e| e.to_string())?;
            let funding = TransferId::from_uuid(demo_uuid(&format!("{}/{currency}/funding", c.username)));
            state
                .ledger
                .fund(funding, account_id, Money::new(amount_minor, currency))
                .await
                .map_err(|e| e.to_string())?;
        }
        let eur = AccountId::from_uuid(demo_uuid(&format!("{}/{}", c.username, Currency::EUR)));
        seed_interbank(state, c.username, id, eur).await?;
        seed_international(state, c.username, id, eur).await?;
        seed_loan(state, c.username, id, eur).await?;
        enrolled.push(enrol(state, id, c.username, &random_token(12)).await?);
    }
    write_credentials(credentials_file, &enrolled)
        .map_err(|e| format!("writing {}: {e}", credentials_file.display()))?;
    Ok(Some(enrolled))
}

/// Past interbank payments of a demo customer (FR3's Services view), through the real paths:
/// one coming in, credited by `credit_incoming` as the rail's webhook would; one going out,
/// requested (hold and record), submitted and settled by the store's commands, two days ago.
async fn seed_interbank(state: &AppState, username: &str, customer: CustomerId, eur: AccountId) -> Result<(), String> {
    use bp_core::external::incoming::IncomingCredit;
    use bp_core::external::lifecycle::{self, Input, NewExternalPayment};
    use bp_core::external::{BankIbans, Bic, ExternalAccount, RailAnswer, RailId};

    let err = |e: &dyn std::fmt::Display| e.to_string();
    let sepa = &state.config.external.sepa;
    let bank = BankIbans::new(&sepa.iban_country, &sepa.iban_bank_code).map_err(|e| err(&e))?;
    let account = state.ledger.store().account(eur).await.map_err(|e| err(&e))?.ok_or("no demo account")?;
    let rail = RailId::SepaCreditTransfer;
    let credit = IncomingCredit {
        end_to_end_id: format!("DEMO-{username}-IN"),
        tx_id: Some(format!("DEMO-{username}-IN")),
        debtor_agent: Some(Bic::parse("COBADEFFXXX").map_err(|e| err(&e))?),
        amount: Money::new(45_000, Currency::EUR),
        creditor_iban: bank.iban_of(account.number),
        debtor_name: Some("Erika Mustermann".to_owned()),
        remittance: Some("Invoice 2026-017".to_owned()),
    };
    state.services.credit_incoming(&bank, rail, &credit).await.map_err(|e| err(&e))?;
    let hold = TransferId::from_uuid(demo_uuid(&format!("{username}/interbank/out")));
    // Requested at another time, a seed run again would be another request with the same id.
    if state.services.service_record(lifecycle::record_id(hold)).await.map_err(|e| err(&e))?.is_some() {
        return Ok(());
    }
    let past = state.now() - chrono::Duration::days(2);
    let payment = NewExternalPayment {
        customer,
        account: eur,
        hold,
        amount: Money::new(12_000, Currency::EUR),
        creditor: ExternalAccount::parse("DE89370400440532013000", "Erika Mustermann", None).map_err(|e| err(&e))?,
        remittance: Some("Rent".to_owned()),
        rail,
    };
    let requested = lifecycle::request(&payment, past).map_err(|e| err(&e))?;
    let mut record = state.services.request(requested).await.map_err(|e| err(&e))?.record;
    let policy = lifecycle::Policy::default();
    for (input, at) in [(Input::Due, past), (Input::Answered(RailAnswer::Settled), past + chrono::Duration::seconds(2))]
    {
        let t = lifecycle::transition(&record, &input, at, &policy, 0).map_err(|e| err(&e))?;
        if t.record != record {
            record = state.services.apply(record.id, record.version, t).await.map_err(|e| err(&e))?;
        }
    }
    Ok(())
}

/// A payment abroad of a demo customer, when payments abroad are connected: 250.00 EUR to a
/// payee in the United Kingdom at a quote asked of the FX provider now, requested with all its
/// legs and handed to the worker, which sends it to the correspondent rail (in development
/// mode, the simulator, which settles it within seconds: the Services view shows it live).
async fn seed_international(
    state: &AppState,
    username: &str,
    customer: CustomerId,
    eur: AccountId,
) -> Result<(), String> {
    use bp_core::external::fx::{self, FxQuote, NewInternationalPayment, QuoteRequest};
    use bp_core::external::{CallKey, ExternalAccount};

    let Some(external) = &state.external else { return Ok(()) };
    let (Some(provider), Some(_)) = (&external.fx, &external.correspondent) else { return Ok(()) };
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let hold = TransferId::from_uuid(demo_uuid(&format!("{username}/international/out")));
    // At another quote, a seed run again would be another request with the same id.
    let recorded = bp_core::external::lifecycle::record_id(hold);
    if state.services.service_record(recorded).await.map_err(|e| err(&e))?.is_some() {
        return Ok(());
    }
    let ask = QuoteRequest { source: Money::new(25_000, Currency::EUR), target_currency: Currency::GBP };
    let quote = provider.quote(&ask, &CallKey::of_transfer(hold)).await.map_err(|e| err(&e))?;
    let payment = NewInternationalPayment {
        customer,
        account: eur,
        hold,
        quote: FxQuote::of(&quote).map_err(|e| err(&e))?,
        creditor: ExternalAccount::parse("GB33BUKB20201555555555", "Jane Doe", None).map_err(|e| err(&e))?,
        remittance: Some("Flat deposit".to_owned()),
    };
    let requested = fx::request(&payment, state.now()).map_err(|e| err(&e))?;
    state.services.request(requested).await.map_err(|e| err(&e))?;
    state.external_wake.notify_one();
    Ok(())
}

/// A running loan of a demo customer, when loans are connected: 3,000.00 EUR over 24 months,
/// applied for and accepted 40 days ago at the simulator's terms (5.9 %, a 1 % fee), its first
/// instalment collected from the account; the worker collects the next ones on their due dates.
/// Through the loan's own steps, each written with `ServiceStore::apply`; a seed run again
/// leaves a loan that exists to the worker.
async fn seed_loan(state: &AppState, username: &str, customer: CustomerId, eur: AccountId) -> Result<(), String> {
    use bp_core::external::loan::{self, LoanDecision, LoanInput, LoanPolicy, NewLoan};

    let Some(external) = &state.external else { return Ok(()) };
    if external.loans.is_none() {
        return Ok(());
    }
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let key = bp_core::payments::IdempotencyKey::parse(&format!("{username}-demo-loan")).map_err(|e| err(&e))?;
    let new = NewLoan {
        id: loan::loan_id(customer, &key),
        customer,
        account: eur,
        amount: Money::new(300_000, Currency::EUR),
        term_months: 24,
        purpose: "A new kitchen".to_owned(),
    };
    if state.services.service_record(new.id).await.map_err(|e| err(&e))?.is_some() {
        return Ok(());
    }
    let applied_at = state.now() - chrono::Duration::days(40);
    let requested = loan::apply(&new, applied_at).map_err(|e| err(&e))?;
    let mut record = state.services.request(requested).await.map_err(|e| err(&e))?.record;
    let decision = LoanDecision::Approved {
        annual_rate: bp_core::rate::Rate::parse("0.059").map_err(|e| err(&e))?,
        fee: Money::new(3_000, Currency::EUR),
        term_months: 24,
    };
    let account = state.ledger.store().account(eur).await.map_err(|e| err(&e))?.ok_or("no demo account")?;
    let steps = [
        (LoanInput::Due, applied_at),
        (LoanInput::Decided(decision), applied_at + chrono::Duration::seconds(2)),
        (LoanInput::Accept, applied_at + chrono::Duration::minutes(5)),
        // The principal came in, less the fee, at acceptance.
        (LoanInput::Collect { available_minor: account.available_minor() + 300_000 - 3_000 }, state.now()),
    ];
    let policy = LoanPolicy::default();
    // The external worker (of this process or another) may take a step of the loan between two
    // of ours (the record is due from its request on): on a version conflict the step is
    // computed again from the record as the worker left it, and a step the worker already took
    // (refused by the state machine, or changing nothing) is skipped.
    let mut raced = false;
    for (input, at) in steps {
        loop {
            let t = match loan::transition(&record, &input, at, &policy, 0) {
                Ok(t) => t,
                Err(_) if raced => break,
                Err(e) => return Err(err(&e)),
            };
            if t.record == record {
                break;
            }
            match state.services.apply(record.id, record.version, t).await {
                Ok(applied) => {
                    record = applied;
                    break;
                }
                Err(bp_core::Error::Ledger(bp_core::LedgerError::VersionConflict { .. })) => {
                    raced = true;
                    record = state.services.service_record(record.id).await.map_err(|e| err(&e))?.ok_or("no loan")?;
                }
                Err(e) => return Err(err(&e)),
            }
        }
    }
    state.external_wake.notify_one();
    Ok(())
}

/// The file, in the data folder, where the demo's credentials are written.
pub const CREDENTIALS_FILE: &str = "demo-credentials.txt";

/// The text of the demo credentials (for the console and the file), naming `file`.
pub fn credentials_text(enrolled: &[Enrolled], issuer: &str, file: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "bp demo customers (development mode) — shown once, also in {}", file.display());
    let _ =
        writeln!(out, "The API is at {issuer}/v1 (docs/api/README.md); `scripts/demo-login.sh` signs in with curl.");
    let _ = writeln!(out, "Add a TOTP secret to an authenticator app, or print its current code with");
    let _ = writeln!(out, "`cargo run -p bp-server-example -- totp <secret>`.");
    for e in enrolled {
        let _ = writeln!(out, "  username: {:<6} password: {}  totp secret: {}", e.username, e.password, e.totp_base32);
        let _ = writeln!(out, "    {}", e.totp_uri);
    }
    out
}

fn write_credentials(path: &Path, enrolled: &[Enrolled]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(credentials_text(enrolled, "", path).as_bytes())?;
    let json =
        serde_json::json!(enrolled
        .iter()
        .map(|e| serde_json::json!({ "username": e.username, "password": e.password, "totp_secret": e.totp_base32 }))
        .collect::<Vec<_>>());
    writeln!(file, "JSON {json}")?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

/// Reads the demo credentials back (for tests, benchmarks and tools): username, password and
/// raw TOTP secret of each demo customer.
pub fn read_credentials(path: &Path) -> std::io::Result<Vec<(String, String, Vec<u8>)>> {
    let text = std::fs::read_to_string(path)?;
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix("JSON "))
        .ok_or_else(|| std::io::Error::other("no JSON line in the credentials file"))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(json).map_err(std::io::Error::other)?;
    list.iter()
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned);
            let secret = s("totp_secret")
                .and_then(|b| totp_rs::Secret::Encoded(b).to_bytes().ok())
                .ok_or_else(|| std::io::Error::other("bad TOTP secret"))?;
            Ok((s("username").unwrap_or_default(), s("password").unwrap_or_default(), secret))
        })
        .collect()
}
