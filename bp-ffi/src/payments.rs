//! Payments that move money exactly once: the SDK makes each payment's idempotency key (a
//! UUIDv7), stores the payment with it in the app's `AppStore` before anything is sent, and
//! sends that same key on every retry — after a lost answer, a crash or an app restart — until
//! the server gives a final answer, when the record is removed. A payment that needs strong
//! customer authentication returns its challenge's text; the SDK signs it with the device key
//! only when the app says the customer confirmed it, and only if the text names the amount,
//! currency and payee the customer asked to pay (dynamic linking, checked on the phone too).

#![forbid(unsafe_code)]

use bp_core::api::{ChallengeView, ScaAnswer, TransferResponse};
use bp_core::money::{Currency, Money};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::client::BpClient;
use crate::error::Error;
use crate::keys::b64;

/// The `AppStore` keys of payments in flight start with this.
const INTENT_PREFIX: &str = "bp.payment.";
/// Longest reference the server takes.
const REFERENCE_LEN_MAX: usize = 140;

/// A payment stored before it is sent: what to send, with its idempotency key, and what its
/// challenge must name.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Intent {
    /// The idempotency key (UUIDv7).
    pub id: String,
    /// The route it is sent to.
    pub path: String,
    /// The request body, exactly as first sent.
    pub body: serde_json::Value,
    /// The amount the customer pays.
    pub amount: Money,
    /// The payee as the customer knows it (an account number, or an IBAN and a name).
    pub payee: String,
    /// The `key:value` lines the challenge's text must hold.
    pub expect: Vec<(String, String)>,
    /// The server's transfer, once it answered.
    pub transfer_id: Option<String>,
    /// The challenge to answer, while the payment waits for SCA.
    pub challenge: Option<ChallengeView>,
}

/// The server's answer to sending a payment.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Final: posted (or handed to the rail, `service`).
    Done(TransferResponse),
    /// Waiting for the customer's confirmation of `challenge`.
    NeedsConfirmation(Intent),
}

fn key_of(id: &str) -> String {
    format!("{INTENT_PREFIX}{id}")
}

/// A decimal amount of `amount_minor` in `currency`, checked.
pub(crate) fn money(amount_minor: i64, currency: &str) -> Result<Money, Error> {
    let currency = Currency::from_code(currency)
        .map_err(|_| Error::Invalid { field: "currency", reason: "not an ISO 4217 code the bank uses".to_owned() })?;
    if amount_minor <= 0 {
        return Err(Error::Invalid { field: "amount_minor", reason: "must be positive".to_owned() });
    }
    Ok(Money::new(amount_minor, currency))
}

/// The reference, checked against the server's limit.
pub(crate) fn reference(reference: Option<String>) -> Result<Option<String>, Error> {
    match reference {
        Some(r) if r.chars().count() > REFERENCE_LEN_MAX => {
            Err(Error::Invalid { field: "reference", reason: format!("at most {REFERENCE_LEN_MAX} characters") })
        }
        other => Ok(other),
    }
}

impl BpClient {
    /// Stores a new payment under a fresh idempotency key; nothing is sent yet.
    pub(crate) fn store_intent(
        &self,
        path: &str,
        body: serde_json::Value,
        amount: Money,
        payee: String,
        expect: Vec<(String, String)>,
    ) -> Result<Intent, Error> {
        let intent = Intent {
            id: uuid::Uuid::now_v7().to_string(),
            path: path.to_owned(),
            body,
            amount,
            payee,
            expect,
            transfer_id: None,
            challenge: None,
        };
        self.put_intent(&intent)?;
        Ok(intent)
    }

    fn put_intent(&self, intent: &Intent) -> Result<(), Error> {
        let text = serde_json::to_string(intent).map_err(|e| Error::Corrupt(e.to_string()))?;
        Ok(self.host.store.put(key_of(&intent.id), text)?)
    }

    /// The stored payment `id`.
    pub(crate) fn intent(&self, id: &str) -> Result<Intent, Error> {
        let text = self
            .host
            .store
            .get(key_of(id))?
            .ok_or(Error::Invalid { field: "payment_id", reason: "no such payment in flight".to_owned() })?;
        serde_json::from_str(&text).map_err(|_| Error::Corrupt("a stored payment".to_owned()))
    }

    /// The payments in flight (sent without a final answer yet, or waiting for confirmation),
    /// oldest first: what an app resumes after a restart.
    pub(crate) fn intents(&self) -> Result<Vec<Intent>, Error> {
        let mut keys = self.host.store.keys(INTENT_PREFIX.to_owned())?;
        keys.sort();
        keys.iter().map(|k| self.intent(&k[INTENT_PREFIX.len()..])).collect()
    }

    /// Forgets the payment `id` (the app gives it up; a pending one is voided by the server when
    /// its challenge expires).
    pub(crate) fn forget_intent(&self, id: &str) -> Result<(), Error> {
        Ok(self.host.store.remove(key_of(id))?)
    }

    /// Sends the stored payment `id` with its idempotency key: the first time, or again after
    /// any failure (the server answers a retry with the first answer). A final answer removes
    /// the stored record; anything else keeps it for the next retry.
    pub(crate) async fn send_intent(&self, id: &str) -> Result<Sent, Error> {
        let mut intent = self.intent(id)?;
        let answer: Result<TransferResponse, Error> = self.post(&intent.path, &intent.body, Some(&intent.id)).await;
        match answer {
            Ok(response) => match response.sca.clone() {
                Some(challenge) => {
                    intent.transfer_id = Some(response.transfer.id.to_string());
                    intent.challenge = Some(challenge);
                    self.put_intent(&intent)?;
                    Ok(Sent::NeedsConfirmation(intent))
                }
                None => {
                    self.forget_intent(id)?;
                    Ok(Sent::Done(response))
                }
            },
            Err(e) if e.is_final_answer() => {
                self.forget_intent(id)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The customer confirmed the payment `id`'s text: checks that the challenge names what the
    /// customer asked to pay, signs it with the device key (the app's signer shows its
    /// biometric prompt), and sends the answer. The stored record goes on a final answer.
    pub(crate) async fn confirm_intent(&self, id: &str) -> Result<TransferResponse, Error> {
        let intent = self.intent(id)?;
        let (Some(transfer_id), Some(challenge)) = (&intent.transfer_id, &intent.challenge) else {
            return Err(Error::Invalid {
                field: "payment_id",
                reason: "this payment waits for no confirmation".to_owned(),
            });
        };
        let mut expect = intent.expect.clone();
        expect.push(("transfer".to_owned(), transfer_id.clone()));
        check_linked(&challenge.message, &expect)?;
        let answer = self.sign_challenge(challenge).await?;
        let body = serde_json::to_value(&answer).map_err(|e| Error::Corrupt(e.to_string()))?;
        let path = format!("/v1/transfers/{transfer_id}/confirm");
        match self.post::<TransferResponse>(&path, &body, None).await {
            Ok(view) => {
                self.forget_intent(id)?;
                Ok(view)
            }
            Err(e) if e.is_final_answer() => {
                self.forget_intent(id)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The registered device's answer to `challenge`: its signature of the exact text.
    pub(crate) async fn sign_challenge(&self, challenge: &ChallengeView) -> Result<ScaAnswer, Error> {
        let device_id = self.device_id()?.ok_or(Error::Invalid {
            field: "device",
            reason: "no device is registered on this phone: register one first".to_owned(),
        })?;
        let signer = self.host.sca_key.clone();
        let message = challenge.message.clone().into_bytes();
        // The signer may wait for the customer's biometric: off the async workers.
        let signature = tokio::task::spawn_blocking(move || signer.sign(message))
            .await
            .map_err(|_| Error::Corrupt("the signing task failed".to_owned()))??;
        Ok(ScaAnswer::DeviceSignature {
            challenge_id: challenge.id,
            device_id: device_id.parse().map_err(|_| Error::Corrupt("the stored device id".to_owned()))?,
            signature: b64(&signature),
        })
    }

    /// The device id registered on this phone, if any.
    pub(crate) fn device_id(&self) -> Result<Option<String>, Error> {
        Ok(self.host.store.get(DEVICE_KEY.to_owned())?)
    }
}

/// The `AppStore` key of this phone's registered device id.
pub(crate) const DEVICE_KEY: &str = "bp.device";

/// Refuses a challenge whose text lacks one of the `expect`ed `key:value` lines.
pub(crate) fn check_linked(message: &str, expect: &[(String, String)]) -> Result<(), Error> {
    for (key, value) in expect {
        let line = format!("{key}:{value}");
        if !message.lines().any(|l| l == line) {
            return Err(Error::ChallengeMismatch(match key.as_str() {
                "amount" => "another amount",
                "currency" => "another currency",
                "payee" | "iban" => "another payee",
                "transfer" => "another transfer",
                _ => "another payment",
            }));
        }
    }
    Ok(())
}

/// What the customer reads before confirming: the challenge's payment in words, drawn from the
/// very text that is signed.
pub(crate) fn summary(message: &str) -> String {
    let field = |key: &str| {
        message.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':'))).unwrap_or("").to_owned()
    };
    let amount = format!("{} {}", field("amount"), field("currency"));
    match field("purpose").as_str() {
        "payment" => format!("Pay {amount} to account {}", field("payee")),
        "external_payment" => format!("Pay {amount} to {} ({})", field("name"), field("iban")),
        "international_payment" => format!(
            "Pay {amount} (fee {}, total {}) to {} ({}): they receive {} {} at {}",
            field("fee"),
            field("total"),
            field("name"),
            field("iban"),
            field("receive"),
            field("receive_currency"),
            field("rate")
        ),
        "loan_acceptance" => format!(
            "Borrow {amount} over {} months at {}: instalment {}, total {}",
            field("term_months"),
            field("rate"),
            field("instalment"),
            field("total")
        ),
        "register_device" => format!("Register the device {}", field("name")),
        other => format!("Confirm {other}"),
    }
}

/// The body of an internal transfer.
pub(crate) fn transfer_body(
    from: &str,
    to_number: &str,
    amount: &Money,
    reference: &Option<String>,
) -> serde_json::Value {
    let mut body = json!({ "from_account": from, "to_account_number": to_number, "amount": amount });
    if let Some(r) = reference {
        body["reference"] = r.clone().into();
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "bp-sca-v1\nchallenge:c1\npurpose:payment\ntransfer:t1\namount:250.00\ncurrency:EUR\npayee:100000000012\nnonce:n";

    fn expect(amount: &str, payee: &str) -> Vec<(String, String)> {
        vec![
            ("amount".to_owned(), amount.to_owned()),
            ("currency".to_owned(), "EUR".to_owned()),
            ("payee".to_owned(), payee.to_owned()),
            ("transfer".to_owned(), "t1".to_owned()),
        ]
    }

    #[test]
    fn a_challenge_is_signed_only_for_what_the_customer_asked() {
        check_linked(MESSAGE, &expect("250.00", "100000000012")).expect("the same payment");
        let other_amount = check_linked(MESSAGE, &expect("2500.00", "100000000012"));
        assert!(matches!(other_amount, Err(Error::ChallengeMismatch("another amount"))), "{other_amount:?}");
        let other_payee = check_linked(MESSAGE, &expect("250.00", "100000000020"));
        assert!(matches!(other_payee, Err(Error::ChallengeMismatch("another payee"))), "{other_payee:?}");
        // A prefix of a line is not the line.
        assert!(check_linked(MESSAGE, &expect("250.0", "100000000012")).is_err());
    }

    #[test]
    fn the_summary_is_read_from_the_signed_text() {
        assert_eq!(summary(MESSAGE), "Pay 250.00 EUR to account 100000000012");
    }

    #[test]
    fn amounts_are_positive_integers_of_a_known_currency() {
        assert_eq!(money(1250, "EUR").expect("money").to_decimal_string(), "12.50");
        assert!(matches!(money(0, "EUR"), Err(Error::Invalid { field: "amount_minor", .. })));
        assert!(matches!(money(1, "XXX"), Err(Error::Invalid { field: "currency", .. })));
        assert!(reference(Some("x".repeat(REFERENCE_LEN_MAX + 1))).is_err());
    }
}
