//! Payments with strong customer authentication, as an integrator links them: the payment
//! façade over the memory stores. A phone registers its key (confirmed with a TOTP code after a
//! sign-in). A small payment is exempt (low value); a larger one waits,
//! holding its amount, for the payer's phone to sign a text naming amount, payee and transfer
//! (dynamic linking); a tampered signature is refused; the right one posts it, once; a retry of
//! the request is answered as the first.
//!
//! `cargo run -p bp-core --example payments`
//!
//! Over SQLite, give `Ledger::new` and `Sca::new` one `bp_storage::sqlite::SqliteStore` (it is
//! both stores).

use std::error::Error as StdError;
use std::sync::Arc;

use bp_core::clock::SystemClock;
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::memory::MemoryStore;
use bp_core::payments::{IdempotencyKey, Payee, Payment, PaymentRequest, Payments};
use bp_core::sca::factors::{TOTP_STEP_S, b64, totp_code};
use bp_core::sca::{LockoutRules, Sca, ScaAnswer, ScaRules, device_registration_message, signing_message};
use bp_core::security::{Credentials, MemorySecurityStore};
use bp_core::service::current_account;
use bp_core::{AccountId, Currency, CustomerId, Ledger, Money, Store, TransferId};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};

#[tokio::main]
async fn main() -> Result<(), Box<dyn StdError>> {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let ledger = Ledger::new(store);
    let sca = Sca::new(
        Arc::new(MemorySecurityStore::new()),
        Arc::new(SystemClock),
        ScaRules::default(),
        LockoutRules::default(),
    );
    let payments = Payments::new(ledger.clone(), sca);

    let person = |name: &str| -> Result<NewCustomer, Box<dyn StdError>> {
        Ok(NewCustomer::person(CustomerId::new_v7(), Username::parse(name)?, name, "Example", KycStatus::Verified))
    };
    let alice = ledger.open_customer(person("alice")?).await?;
    let bob = ledger.open_customer(person("bob")?).await?;
    let alice_eur = ledger.open_account(current_account(AccountId::new_v7(), alice.id, Currency::EUR)).await?;
    let bob_eur = ledger.open_account(current_account(AccountId::new_v7(), bob.id, Currency::EUR)).await?;
    ledger.fund(TransferId::new_v7(), alice_eur.id, Money::parse("1000.00", Currency::EUR)?).await?;

    // The client makes each payment's key before the first attempt and reuses it on retries.
    let pay = |amount: &str| -> Result<PaymentRequest, Box<dyn StdError>> {
        Ok(PaymentRequest {
            from_account: alice_eur.id,
            payee: Payee::Account(bob_eur.number),
            amount: Money::parse(amount, Currency::EUR)?,
            reference: None,
        })
    };
    let coffee = payments.pay(alice.id, &IdempotencyKey::parse("coffee-1")?, &pay("3.20")?).await?;
    if let Payment::Posted { exemption, .. } = &coffee.payment {
        println!("3.20 EUR posted at once: exempt from SCA ({exemption:?})");
    }

    // Alice has an authenticator app (her TOTP secret is kept by the security store), and her
    // phone registers its key (the private half stays in its keystore), proving it holds the key
    // by signing the registration text. A first device is confirmed with a TOTP code, from a
    // session that has just signed in with both factors.
    let totp_secret = b"alice's shared TOTP secret".to_vec();
    let credentials = Credentials {
        customer_id: alice.id,
        password_hash: "her password's Argon2id hash, kept by the integrator".to_owned(),
        totp_secret: Some(totp_secret.clone()),
        updated_at: chrono::Utc::now(),
    };
    payments.sca().store().put_credentials(credentials).await?;
    let phone = SigningKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let public_key = b64(phone.verifying_key().to_encoded_point(false).as_bytes());
    let proof: Signature = phone.sign(device_registration_message(alice.id, &public_key).as_bytes());
    let signed_in_at = Some(chrono::Utc::now());
    let sca = payments.sca();
    let begun = sca
        .begin_device_registration(alice.id, "Alice's phone", &public_key, &b64(&proof.to_bytes()), signed_in_at)
        .await?;
    let code = totp_code(&totp_secret, u64::try_from(chrono::Utc::now().timestamp())? / TOTP_STEP_S);
    let device = sca
        .confirm_device(alice.id, begun.device_id, &ScaAnswer::Totp { challenge_id: begun.challenge.id, code })
        .await?;
    println!("Alice's phone is registered (a TOTP code confirmed it)");

    let rent = IdempotencyKey::parse("rent-2026-12")?;
    let receipt = payments.pay(alice.id, &rent, &pay("250.00")?).await?;
    let Payment::Challenged { transfer, challenge, methods } = receipt.payment else {
        return Err("a 250.00 payment to someone else needs SCA".into());
    };
    let text = signing_message(&challenge);
    println!("250.00 EUR waits for SCA ({methods:?}); the phone shows and signs:\n{text}");
    println!("Alice's available balance meanwhile: {}", ledger.account(alice_eur.id).await?.balances().available);

    let sign = |text: &str| -> String {
        let signature: Signature = phone.sign(text.as_bytes());
        b64(signature.to_der().as_bytes())
    };
    let answer =
        |signature: String| ScaAnswer::DeviceSignature { challenge_id: challenge.id, device_id: device.id, signature };
    let tampered = payments.confirm(alice.id, transfer.id, &answer(sign(&text.replace("250.00", "2.50")))).await;
    println!("a signature of 2.50 instead: refused ({})", tampered.err().map(|e| e.to_string()).unwrap_or_default());
    let confirmed = payments.confirm(alice.id, transfer.id, &answer(sign(&text))).await?;
    println!("the right signature: {:?}", confirmed.transfer.state);

    let retry = payments.pay(alice.id, &rent, &pay("250.00")?).await?;
    println!("the same request again: replayed = {}, nothing moves", retry.replayed);
    for (name, id) in [("Alice", alice_eur.id), ("Bob", bob_eur.id)] {
        println!("{name}: {}", ledger.account(id).await?.balances().posted);
    }
    Ok(())
}
