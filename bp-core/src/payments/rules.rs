//! The payment flow's own rules, as pure functions: what an idempotency key may be, the
//! transfer id a customer's key stands for, and when a retry is the same payment.

use std::fmt;

use uuid::Uuid;

use crate::external::ExternalAccount;
use crate::iban::Iban;
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::money::Money;
use crate::sca::{PayeeRelation, Trust};
use crate::transfer::{Transfer, TransferKind};

/// Namespace of transfer ids derived from (customer, idempotency key).
const TRANSFER_NAMESPACE: Uuid = Uuid::from_u128(0x3d0c_93c1_5a2e_4b7f_9d61_0f4e_8a27_b5c9);

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;

/// The client's unique value for one payment, made before the first attempt and reused on
/// every retry of it: 1 to [`IDEMPOTENCY_KEY_LEN_MAX`] printable ASCII characters. A UUIDv7 is
/// best (the transfer ids then keep its time order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// An idempotency key that is empty, too long or not printable ASCII.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidIdempotencyKey;

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_LEN_MAX} printable ASCII characters")
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

impl IdempotencyKey {
    /// The key `key`, if it is 1 to [`IDEMPOTENCY_KEY_LEN_MAX`] printable ASCII characters.
    pub fn parse(key: &str) -> Result<Self, InvalidIdempotencyKey> {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_LEN_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(Self(key.to_owned()))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The transfer id of a customer's idempotency key: the same key of the same customer always
/// gives the same id, and different customers' keys never meet.
///
/// When the key is a UUIDv7 (what clients are advised to use), the id keeps its millisecond
/// timestamp in front (an RFC 9562 version-8 UUID: the key's 48-bit time, then 74 bits of a
/// SHA-1 of namespace, customer and key), so transfer ids are time-ordered and a store appends
/// to its index instead of writing a random page per payment. Any other key gives a name-based
/// (v5) UUID of namespace, customer and key.
pub fn transfer_id(customer: CustomerId, key: &IdempotencyKey) -> TransferId {
    let mut name = customer.as_uuid().as_bytes().to_vec();
    name.extend_from_slice(key.as_str().as_bytes());
    let named = Uuid::new_v5(&TRANSFER_NAMESPACE, &name);
    match Uuid::parse_str(key.as_str()) {
        Ok(k) if k.get_version_num() == 7 => {
            let mut bytes = *named.as_bytes();
            bytes[..6].copy_from_slice(&k.as_bytes()[..6]);
            TransferId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
        }
        _ => TransferId::from_uuid(named),
    }
}

/// Who an external payee is to its payer: a trusted beneficiary when one of `trusted` (the
/// IBANs of the payer's trusted beneficiaries at other banks, and how each was trusted) is its
/// IBAN; otherwise [`PayeeRelation::Other`], never an own account (an IBAN of this bank is paid
/// as [`super::Payee::Account`]). The IBAN alone decides: it is where the money goes, while
/// the name is the payer's spelling of its holder.
pub fn external_relation(payee: &ExternalAccount, trusted: &[(Iban, Trust)]) -> PayeeRelation {
    trusted
        .iter()
        .find(|(iban, _)| *iban == payee.iban)
        .map_or(PayeeRelation::Other, |(_, trust)| PayeeRelation::TrustedBeneficiary(*trust))
}

/// An internal payment as the ledger records it: what a retry must repeat exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InternalPayment {
    /// The payer's account.
    pub from: AccountId,
    /// The payee's account.
    pub to: AccountId,
    /// The amount.
    pub amount: Money,
    /// The reference.
    pub reference: Option<String>,
}

impl InternalPayment {
    /// Whether `existing`, the transfer an earlier attempt with the same key made, is this
    /// payment (its hold, decided by the exemption rules of that moment, may differ).
    pub fn is(&self, existing: &Transfer) -> bool {
        existing.kind == TransferKind::Internal
            && existing.debit_account == self.from
            && existing.credit_account == self.to
            && existing.amount == self.amount
            && existing.reference == self.reference
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn key(s: &str) -> IdempotencyKey {
        IdempotencyKey::parse(s).expect("a valid key")
    }

    #[test]
    fn transfer_ids_are_per_customer_and_time_ordered_for_uuid7_keys() {
        let (a, b) = (CustomerId::new_v7(), CustomerId::new_v7());
        assert_eq!(transfer_id(a, &key("k-1")), transfer_id(a, &key("k-1")));
        assert_ne!(transfer_id(a, &key("k-1")), transfer_id(b, &key("k-1")));
        assert_eq!(transfer_id(a, &key("k-1")).as_uuid().get_version_num(), 5);
        let earlier = key(&Uuid::now_v7().to_string());
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = key(&Uuid::now_v7().to_string());
        let (x, y) = (transfer_id(a, &earlier), transfer_id(a, &later));
        assert_eq!(x.as_uuid().get_version_num(), 8);
        assert_eq!(x, transfer_id(a, &earlier), "deterministic");
        assert_ne!(x, transfer_id(b, &earlier), "per customer");
        assert!(x < y, "time-ordered");
    }

    #[test]
    fn transfer_ids_stay_what_they_were() {
        // Ids already stored must keep meaning the same payment: the derivation is frozen. The
        // value is the RFC 9562 v5 UUID of the namespace and customer ‖ key, as Python's
        // `uuid` module computes it independently.
        let customer = CustomerId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001));
        assert_eq!(transfer_id(customer, &key("k-1")).to_string(), "00de65f3-5b57-54ba-a2e0-da09c1995749");
    }

    #[test]
    fn keys_are_1_to_255_printable_ascii_characters() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(IDEMPOTENCY_KEY_LEN_MAX)).is_ok());
        for bad in [String::new(), "k".repeat(IDEMPOTENCY_KEY_LEN_MAX + 1), "a b".to_owned(), "é".to_owned()] {
            assert_eq!(IdempotencyKey::parse(&bad), Err(InvalidIdempotencyKey), "{bad:?}");
        }
        assert_eq!(
            InvalidIdempotencyKey.to_string(),
            "Idempotency-Key must be 1 to 255 printable ASCII characters",
            "the message the API has always given"
        );
    }

    #[test]
    fn a_retry_is_the_same_payment_only_with_the_same_accounts_amount_and_reference() {
        let (from, to) = (AccountId::new_v7(), AccountId::new_v7());
        let payment =
            InternalPayment { from, to, amount: Money::new(1_000, Currency::EUR), reference: Some("rent".to_owned()) };
        let transfer = Transfer {
            id: TransferId::new_v7(),
            kind: TransferKind::Internal,
            debit_account: from,
            credit_account: to,
            amount: payment.amount,
            reference: payment.reference.clone(),
            state: crate::transfer::TransferState::Posted,
            void_reason: None,
            hold_until: None,
            created_at: chrono::Utc::now(),
            finished_at: None,
        };
        assert!(payment.is(&transfer));
        assert!(!InternalPayment { amount: Money::new(1_001, Currency::EUR), ..payment.clone() }.is(&transfer));
        assert!(!InternalPayment { reference: None, ..payment.clone() }.is(&transfer));
        assert!(!InternalPayment { to: from, ..payment.clone() }.is(&transfer));
        assert!(!payment.is(&Transfer { kind: TransferKind::Deposit, ..transfer }));
    }
}
