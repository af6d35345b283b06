//! Identifiers of the domain: UUID newtypes made by the caller (time-ordered v7 is recommended).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// A new time-ordered (v7) identifier from the system clock and randomness.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identifies a customer (a natural person or a legal entity).
    CustomerId
);
uuid_id!(
    /// Identifies an account, customer-owned or bank-owned.
    AccountId
);
uuid_id!(
    /// Identifies a transfer. The client makes it, stores it before sending and reuses it on
    /// every retry: it is the transfer's idempotency key.
    TransferId
);
uuid_id!(
    /// Identifies an event. Derived from the account and the sequence number, so the same event
    /// always carries the same id, however often it is delivered.
    EventId
);
uuid_id!(
    /// Identifies a service record (interbank, international, loan).
    ServiceRecordId
);

uuid_id!(
    /// Identifies a registered device key of a customer (possession factor of SCA).
    DeviceId
);
uuid_id!(
    /// Identifies a strong-customer-authentication challenge.
    ChallengeId
);
uuid_id!(
    /// Identifies a trusted beneficiary (payee) of a customer.
    BeneficiaryId
);
uuid_id!(
    /// Identifies a sign-in session: the family of refresh tokens one login started.
    SessionId
);
uuid_id!(
    /// Identifies a passkey (a WebAuthn credential) a customer registered.
    PasskeyId
);

/// Namespace for the name-based event ids (a fixed random UUID).
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a0e_94b5_4c52_8f0e_5d3b_91a7_c2e4);

impl EventId {
    /// The id of the `seq`-th event of `account`: a name-based (v5) UUID, stable across replays.
    ///
    /// The same UUID as `Uuid::new_v5(namespace, account ‖ seq)`, computed with the RustCrypto
    /// SHA-1 (which uses the processor's SHA instructions where there are some). Computed when an
    /// event is read or written out ([`crate::event::Event::id`]), never by the ledger's writer.
    pub fn derive(account: AccountId, seq: u64) -> Self {
        use sha1::Digest;
        let mut hasher = sha1::Sha1::new();
        hasher.update(EVENT_NAMESPACE.as_bytes());
        hasher.update(account.as_uuid().as_bytes());
        hasher.update(seq.to_be_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Builder::from_sha1_bytes(bytes).into_uuid())
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::{AccountId, EVENT_NAMESPACE, EventId};

    #[test]
    fn event_ids_are_name_based_uuids_of_account_and_sequence() {
        let account = AccountId::from_uuid(Uuid::from_u128(0x0190_0000_0000_7000_8000_1234_5678_9abc));
        for seq in [0, 1, 2, 255, 256, u64::MAX] {
            let mut name = account.as_uuid().as_bytes().to_vec();
            name.extend_from_slice(&seq.to_be_bytes());
            assert_eq!(*EventId::derive(account, seq).as_uuid(), Uuid::new_v5(&EVENT_NAMESPACE, &name));
        }
        assert_ne!(EventId::derive(account, 1), EventId::derive(account, 2));
    }
}
