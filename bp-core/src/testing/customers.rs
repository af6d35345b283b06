//! Cases for customers: opening, idempotency, validation, lookup by username, updates.

use super::StoreFactory;
use super::fixtures::{company, json_map, ok, person};
use super::harness::{Harness, invalid};
use crate::command::{Command, Executed, Outcome};
use crate::customer::{
    BiometricEnrolment, Contact, CustomerUpdate, DOCUMENTS_MAX, DocumentKind, EXTRA_BYTES_MAX, IdentityDocument,
    KycStatus, NewCustomer, Party, Username,
};
use crate::error::LedgerError;
use crate::ids::CustomerId;
use crate::store::Store;

/// Opens a person and a legal entity; replays, idempotency conflicts, taken usernames, lookups.
pub async fn customer_open<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;

    let req = person("ada.l");
    let ada = ok("open person", h.try_open_customer(req.clone()).await);
    assert_eq!(ada.id, req.id);
    assert_eq!(ada.username, req.username);
    assert_eq!(ada.party, req.party);
    assert_eq!(ada.documents, req.documents);
    assert_eq!(ada.contact, req.contact);
    assert_eq!(ada.photo_ref, req.photo_ref);
    assert_eq!(ada.kyc, req.kyc);
    assert_eq!(ada.extra, req.extra);
    assert_eq!(ada.biometric, BiometricEnrolment::NotEnrolled, "a new customer has no biometric enrolment");
    assert_eq!(ada.version, 1, "a new customer is at version 1");
    assert_eq!((ada.created_at, ada.updated_at), (h.now(), h.now()), "opened at the clock's time");
    assert_eq!(ok("read back", h.store().customer(ada.id).await).as_ref(), Some(&ada));
    assert_eq!(ok("by username", h.store().customer_by_username(&ada.username).await).as_ref(), Some(&ada));
    assert_eq!(ok("façade read", h.ledger.customer(ada.id).await), ada);

    let acme_req = company("acme-iberia");
    let acme = ok("open legal entity", h.try_open_customer(acme_req.clone()).await);
    assert_eq!(acme.party, acme_req.party);
    assert!(matches!(acme.party, Party::LegalEntity(_)));
    assert_eq!(acme.kyc, KycStatus::Pending);
    assert!(acme.documents.is_empty() && acme.extra.is_empty() && acme.photo_ref.is_none());
    assert_eq!(ok("by username", h.ledger.customer_by_username(&acme.username).await), Some(acme.clone()));

    // The same request again, later: the original customer, marked as a replay.
    h.advance_secs(60);
    let replay = h.unchanged("replay open", h.execute(Command::OpenCustomer(Box::new(req.clone())))).await;
    assert_eq!(replay, Executed { outcome: Outcome::Customer(Box::new(ada.clone())), replayed: true });
    let replay = h.unchanged("replay open through the façade", h.ledger.open_customer(req.clone())).await;
    assert_eq!(replay, ada, "a replay returns the original customer, with its original times");

    // The same id with another request.
    let conflict = LedgerError::IdempotencyConflict { id: req.id.to_string() };
    let other_name = NewCustomer { username: ok("username", Username::parse("ada.other")), ..req.clone() };
    h.rejects("same id, other username", h.ledger.open_customer(other_name), conflict.clone()).await;
    let other_party = NewCustomer { party: acme_req.party.clone(), ..req.clone() };
    h.rejects("same id, other party", h.ledger.open_customer(other_party), conflict.clone()).await;
    let taken_and_conflict = NewCustomer { username: acme.username.clone(), ..req.clone() };
    h.rejects("same id, another's username", h.ledger.open_customer(taken_and_conflict), conflict).await;

    // A new id with a username in use.
    let dup = NewCustomer { id: CustomerId::new_v7(), ..person("ada.l") };
    h.track_customer(dup.id);
    h.rejects("duplicate username", h.ledger.open_customer(dup), LedgerError::UsernameTaken).await;
    let dup = NewCustomer { id: CustomerId::new_v7(), ..company("acme-iberia") };
    h.track_customer(dup.id);
    h.rejects("duplicate company username", h.ledger.open_customer(dup), LedgerError::UsernameTaken).await;

    // Lookups of what does not exist.
    let nobody = ok("username", Username::parse("nobody"));
    assert_eq!(ok("unknown username", h.store().customer_by_username(&nobody).await), None);
    let unknown = CustomerId::new_v7();
    assert_eq!(ok("unknown id", h.store().customer(unknown).await), None);
    super::harness::expect_rule(
        "façade read of an unknown customer",
        h.ledger.customer(unknown).await,
        &LedgerError::CustomerNotFound(unknown),
    );
    assert!(ok("accounts of an unknown customer", h.store().accounts_of(unknown).await).is_empty());

    // Many customers stay apart.
    let mut ids = vec![ada.id, acme.id];
    for i in 0..20 {
        let c = h.customer(&format!("user{i:02}")).await;
        ids.push(c.id);
    }
    for id in ids {
        let c = ok("read", h.store().customer(id).await).unwrap_or_else(|| panic!("customer {id} missing"));
        assert_eq!(c.id, id);
    }
    h.check_invariants().await;
}

fn with_person(req: &NewCustomer, edit: impl FnOnce(&mut crate::customer::PersonProfile)) -> NewCustomer {
    let mut req = req.clone();
    let Party::Person(p) = &mut req.party else { panic!("not a person") };
    edit(p);
    req
}

fn with_company(req: &NewCustomer, edit: impl FnOnce(&mut crate::customer::LegalEntityProfile)) -> NewCustomer {
    let mut req = req.clone();
    let Party::LegalEntity(l) = &mut req.party else { panic!("not a legal entity") };
    edit(l);
    req
}

fn document(number: &str, country: &str) -> IdentityDocument {
    IdentityDocument {
        kind: DocumentKind::IdentityCard,
        number: number.to_owned(),
        issuing_country: country.to_owned(),
        expires_on: None,
    }
}

/// The `extra` map `{"k":"xxx…"}` serialised to exactly `len` bytes.
fn extra_of_len(len: usize) -> serde_json::Map<String, serde_json::Value> {
    let overhead = r#"{"k":""}"#.len();
    let map = json_map(serde_json::json!({ "k": "x".repeat(len - overhead) }));
    assert_eq!(serde_json::to_vec(&map).map(|v| v.len()).ok(), Some(len));
    map
}

/// Every invalid field of a new customer is rejected with `InvalidField` and leaves no trace.
pub async fn customer_validation<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let base = person("grace");
    h.track_customer(base.id);
    let legal = company("grace-co");
    h.track_customer(legal.id);

    let mut cases: Vec<(&str, NewCustomer, &'static str)> = vec![
        ("empty given name", with_person(&base, |p| p.given_name = String::new()), "given_name"),
        ("blank family name", with_person(&base, |p| p.family_name = "  ".to_owned()), "family_name"),
        ("control character in a name", with_person(&base, |p| p.given_name = "Ada\u{7}".to_owned()), "given_name"),
        ("name of 201 characters", with_person(&base, |p| p.family_name = "é".repeat(201)), "family_name"),
        ("empty legal name", with_company(&legal, |l| l.legal_name = String::new()), "legal_name"),
        ("empty tax id", with_company(&legal, |l| l.tax_id = " ".to_owned()), "tax_id"),
        (
            "empty representative",
            with_company(&legal, |l| l.legal_representative = String::new()),
            "legal_representative",
        ),
        (
            "lowercase country",
            with_company(&legal, |l| l.incorporation.country = "es".to_owned()),
            "incorporation.country",
        ),
        (
            "three-letter country",
            with_company(&legal, |l| l.incorporation.country = "ESP".to_owned()),
            "incorporation.country",
        ),
        (
            "empty registry number",
            with_company(&legal, |l| l.incorporation.registry_number = String::new()),
            "incorporation.registry_number",
        ),
    ];
    let mut more = |what, edit: &dyn Fn(&mut NewCustomer), field| {
        let mut req = base.clone();
        edit(&mut req);
        cases.push((what, req, field));
    };
    more("bad document country", &|r| r.documents = vec![document("123", "XXX")], "documents.issuing_country");
    more("empty document number", &|r| r.documents = vec![document("", "ES")], "documents.number");
    more(
        "17 documents",
        &|r| r.documents = (0..=DOCUMENTS_MAX).map(|i| document(&format!("D{i}"), "ES")).collect(),
        "documents",
    );
    more("phone without +", &|r| r.contact.phone = Some("34600123456".to_owned()), "contact.phone");
    more("phone with letters", &|r| r.contact.phone = Some("+34600ABC".to_owned()), "contact.phone");
    more("phone of one digit", &|r| r.contact.phone = Some("+3".to_owned()), "contact.phone");
    more("phone of 16 digits", &|r| r.contact.phone = Some("+1234567890123456".to_owned()), "contact.phone");
    more("email without @", &|r| r.contact.email = Some("grace.example.org".to_owned()), "contact.email");
    more("empty address", &|r| r.contact.address = Some(String::new()), "contact.address");
    more("empty photo reference", &|r| r.photo_ref = Some(String::new()), "photo_ref");
    more("extra over 16 KiB", &|r| r.extra = extra_of_len(EXTRA_BYTES_MAX + 1), "extra");

    for (what, req, field) in cases {
        h.rejects(what, h.ledger.open_customer(req), invalid(field)).await;
    }

    for bad in ["ab", "Grace", "-grace", "grace!", "gräce", &"g".repeat(33), ""] {
        let result = Username::parse(bad);
        assert!(
            matches!(result, Err(LedgerError::InvalidField { field: "username", .. })),
            "username {bad:?}: expected InvalidField(username), got {result:?}"
        );
    }
    for good in ["abc", "grace.hopper_1-x", "1abc", &"g".repeat(32)] {
        ok(good, Username::parse(good));
    }

    // The limits themselves are allowed, and the failed attempts left the ids and names free.
    let mut at_limits = base.clone();
    at_limits.documents = (0..DOCUMENTS_MAX).map(|i| document(&format!("D{i}"), "PT")).collect();
    at_limits.extra = extra_of_len(EXTRA_BYTES_MAX);
    at_limits.contact.phone = Some("+123456789012345".to_owned());
    let at_limits = with_person(&at_limits, |p| p.family_name = "é".repeat(200));
    let c = ok("customer at every limit", h.try_open_customer(at_limits.clone()).await);
    assert_eq!(c.documents.len(), DOCUMENTS_MAX);
    assert_eq!(c.extra, at_limits.extra);
    let l = ok("legal entity after rejections", h.try_open_customer(legal.clone()).await);
    assert_eq!(l.party, legal.party);
    h.check_invariants().await;
}

/// Updates of contact, photo, biometric enrolment, KYC, documents and extra fields, with
/// versions; version conflicts, unknown customers and invalid updates.
pub async fn customer_update<F: StoreFactory>(f: &F) {
    let h = Harness::new(f).await;
    let opened = h.customer("linus").await;
    let other = h.customer("other").await;
    let mut version = opened.version;
    let id = opened.id;

    let update = |what: &'static str, expected_version: Option<u64>, u: CustomerUpdate| {
        let h = &h;
        async move {
            h.advance_secs(30);
            let before = ok("read", h.store().customer(id).await).expect("exists");
            let c = ok(what, h.ledger.update_customer(id, expected_version, u).await);
            assert_eq!(c.version, before.version + 1, "{what}: every update increments the version");
            assert_eq!(c.updated_at, h.now(), "{what}: updated_at is the clock's time");
            assert_eq!(c.created_at, before.created_at, "{what}: created_at never changes");
            assert_eq!((c.id, &c.username, &c.party), (before.id, &before.username, &before.party));
            assert_eq!(ok("read back", h.store().customer(id).await).as_ref(), Some(&c), "{what}");
            c
        }
    };

    let contact =
        Contact { email: Some("linus@new.example".to_owned()), phone: None, address: Some("Helsinki".to_owned()) };
    let c = update("contact", None, CustomerUpdate { contact: Some(contact.clone()), ..Default::default() }).await;
    assert_eq!(c.contact, contact);
    assert_eq!(c.photo_ref, opened.photo_ref, "fields not in the update stay");
    version += 1;

    let c = update(
        "photo",
        Some(version),
        CustomerUpdate { photo_ref: Some(Some("photos/new.png".to_owned())), ..Default::default() },
    )
    .await;
    assert_eq!(c.photo_ref.as_deref(), Some("photos/new.png"));
    version += 1;
    let c =
        update("photo removed", Some(version), CustomerUpdate { photo_ref: Some(None), ..Default::default() }).await;
    assert_eq!(c.photo_ref, None);
    version += 1;

    let enrolled = BiometricEnrolment::Enrolled { device_id: "device-7f3a".to_owned(), enrolled_at: h.now() };
    let c = update("biometric", None, CustomerUpdate { biometric: Some(enrolled.clone()), ..Default::default() }).await;
    assert_eq!(c.biometric, enrolled);
    version += 1;

    let c = update("kyc", None, CustomerUpdate { kyc: Some(KycStatus::Rejected), ..Default::default() }).await;
    assert_eq!(c.kyc, KycStatus::Rejected);
    version += 1;

    let docs = vec![document("ID-1", "FI"), document("ID-2", "SE")];
    let c = update("documents", None, CustomerUpdate { documents: Some(docs.clone()), ..Default::default() }).await;
    assert_eq!(c.documents, docs);
    version += 1;

    // extra merges key by key; a JSON null removes a key.
    let extra = json_map(serde_json::json!({ "segment": null, "tier": "gold", "tags": [1, 2] }));
    let c = update("extra", None, CustomerUpdate { extra: Some(extra), ..Default::default() }).await;
    assert_eq!(
        c.extra,
        json_map(serde_json::json!({ "marketing": { "email": true }, "tier": "gold", "tags": [1, 2] }))
    );
    version += 1;

    let all = CustomerUpdate {
        contact: Some(Contact::default()),
        photo_ref: Some(Some("photos/all.png".to_owned())),
        biometric: Some(BiometricEnrolment::NotEnrolled),
        kyc: Some(KycStatus::Verified),
        documents: Some(Vec::new()),
        extra: Some(json_map(serde_json::json!({ "tier": null }))),
    };
    let c = update("every field at once", Some(version), all).await;
    assert_eq!(c.contact, Contact::default());
    assert_eq!(c.biometric, BiometricEnrolment::NotEnrolled);
    assert_eq!(c.kyc, KycStatus::Verified);
    assert!(c.documents.is_empty());
    assert_eq!(c.extra, json_map(serde_json::json!({ "marketing": { "email": true }, "tags": [1, 2] })));
    version += 1;
    assert_eq!(c.version, version);

    // Rejections change nothing.
    let kyc = CustomerUpdate { kyc: Some(KycStatus::Pending), ..Default::default() };
    h.rejects(
        "stale expected_version",
        h.ledger.update_customer(opened.id, Some(version - 1), kyc.clone()),
        LedgerError::VersionConflict { expected: version - 1, actual: version },
    )
    .await;
    h.rejects(
        "future expected_version",
        h.ledger.update_customer(opened.id, Some(version + 1), kyc.clone()),
        LedgerError::VersionConflict { expected: version + 1, actual: version },
    )
    .await;
    let unknown = CustomerId::new_v7();
    h.track_customer(unknown);
    h.rejects(
        "unknown customer",
        h.ledger.update_customer(unknown, None, kyc.clone()),
        LedgerError::CustomerNotFound(unknown),
    )
    .await;
    let invalid_updates: Vec<(&str, CustomerUpdate, &'static str)> = vec![
        (
            "bad phone",
            CustomerUpdate {
                contact: Some(Contact { phone: Some("0600".to_owned()), ..Contact::default() }),
                ..Default::default()
            },
            "contact.phone",
        ),
        ("empty photo", CustomerUpdate { photo_ref: Some(Some(String::new())), ..Default::default() }, "photo_ref"),
        (
            "empty device id",
            CustomerUpdate {
                biometric: Some(BiometricEnrolment::Enrolled { device_id: " ".to_owned(), enrolled_at: h.now() }),
                ..Default::default()
            },
            "biometric.device_id",
        ),
        (
            "17 documents",
            CustomerUpdate {
                documents: Some((0..=DOCUMENTS_MAX).map(|i| document(&format!("N{i}"), "FI")).collect()),
                ..Default::default()
            },
            "documents",
        ),
        (
            "extra grows over 16 KiB",
            CustomerUpdate { extra: Some(extra_of_len(EXTRA_BYTES_MAX)), ..Default::default() },
            "extra",
        ),
        (
            // The valid KYC change must not be applied when another field is invalid.
            "valid and invalid fields together",
            CustomerUpdate {
                kyc: Some(KycStatus::Pending),
                contact: Some(Contact { email: Some("no-at-sign".to_owned()), ..Contact::default() }),
                ..Default::default()
            },
            "contact.email",
        ),
    ];
    for (what, u, field) in invalid_updates {
        h.rejects(what, h.ledger.update_customer(opened.id, Some(version), u), invalid(field)).await;
    }

    // The other customer was never touched, and the username still finds the updated customer.
    assert_eq!(ok("other", h.store().customer(other.id).await), Some(other));
    let by_name = ok("by username", h.store().customer_by_username(&opened.username).await).expect("found");
    assert_eq!(by_name.version, version);
    assert_eq!(by_name.created_at, opened.created_at);
    assert!(by_name.updated_at > opened.updated_at);
    h.check_invariants().await;
}
