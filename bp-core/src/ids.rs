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

/// Namespace for the name-based event ids (a fixed random UUID).
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a0e_94b5_4c52_8f0e_5d3b_91a7_c2e4);

impl EventId {
    /// The id of the `seq`-th event of `account`: a name-based (v5) UUID, stable across replays.
    pub fn derive(account: AccountId, seq: u64) -> Self {
        let mut name = [0u8; 24];
        name[..16].copy_from_slice(account.as_uuid().as_bytes());
        name[16..].copy_from_slice(&seq.to_be_bytes());
        Self(Uuid::new_v5(&EVENT_NAMESPACE, &name))
    }
}
