//! Events: what happened to an account, numbered per account without gaps; the outbox rows that
//! the notification relay publishes. Versioned JSON with a JSON Schema in `docs/events/`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::account::{AccountStatus, Balances};
use crate::ids::{AccountId, EventId, ServiceRecordId, TransferId};
use crate::money::Money;
use crate::service_record::{ServiceKind, ServiceStatus};
use crate::transfer::{Direction, TransferKind, VoidReason};

/// The version of the event format that this code writes.
pub const EVENT_VERSION: u32 = 1;

/// One event of an account.
///
/// Its id is not a field: [`Event::id`] derives it from `account_id` and `seq` when asked. The
/// ledger's writer makes two events per posting and never needs their ids, so it does not
/// compute them; the JSON form carries the id as its first member all the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The account it concerns.
    pub account_id: AccountId,
    /// Position in the account's events: 1, 2, 3, … without gaps.
    pub seq: u64,
    /// Format version.
    pub version: u32,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    pub body: EventBody,
}

impl Event {
    /// Its stable id: a name-based UUID of `account_id` and `seq`, the same on every replay.
    pub fn id(&self) -> EventId {
        EventId::derive(self.account_id, self.seq)
    }
}

/// An [`Event`] as it is written: borrowed, with its id derived.
#[derive(Serialize)]
struct EventOut<'a> {
    id: EventId,
    account_id: AccountId,
    seq: u64,
    version: u32,
    #[serde(serialize_with = "crate::rfc3339::serialize")]
    at: &'a Timestamp,
    #[serde(flatten)]
    body: &'a EventBody,
}

impl Serialize for Event {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Event { account_id, seq, version, ref at, ref body } = *self;
        EventOut { id: self.id(), account_id, seq, version, at, body }.serialize(serializer)
    }
}

/// One event of an account.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Event")]
struct EventJson {
    /// Stable id, derived from `account_id` and `seq`.
    id: EventId,
    /// The account it concerns.
    account_id: AccountId,
    /// Position in the account's events: 1, 2, 3, … without gaps.
    seq: u64,
    /// Format version.
    version: u32,
    /// When it happened.
    at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    body: EventBody,
}

/// Reads the JSON form, refusing an id that `account_id` and `seq` do not derive: such an event
/// was not written by a bp ledger, or was changed since.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let EventJson { id, account_id, seq, version, at, body } = EventJson::deserialize(deserializer)?;
        let event = Event { account_id, seq, version, at, body };
        if event.id() != id {
            return Err(serde::de::Error::custom("the event's id is not the one its account_id and seq derive"));
        }
        Ok(event)
    }
}

/// The schema of the JSON form, which is [`EventJson`]'s.
impl JsonSchema for Event {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        EventJson::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        EventJson::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        EventJson::json_schema(generator)
    }
}

/// What happened, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum EventBody {
    /// The account was opened.
    #[serde(rename = "account.opened")]
    AccountOpened {
        /// Balances at opening.
        balances: Balances,
    },
    /// The account's status changed.
    #[serde(rename = "account.status_changed")]
    AccountStatusChanged {
        /// The new status.
        status: AccountStatus,
    },
    /// Money moved on this account.
    #[serde(rename = "transfer.posted")]
    TransferPosted {
        /// The transfer.
        transfer_id: TransferId,
        /// Its kind.
        kind: TransferKind,
        /// Which side this account was on.
        direction: Direction,
        /// The amount.
        amount: Money,
        /// The other account.
        counterparty: AccountId,
        /// Balances after it.
        balances: Balances,
    },
    /// A pending transfer now holds funds on this account.
    #[serde(rename = "transfer.pending")]
    TransferPending {
        /// The transfer.
        transfer_id: TransferId,
        /// Its kind.
        kind: TransferKind,
        /// The amount held.
        amount: Money,
        /// The account it would pay.
        counterparty: AccountId,
        /// Balances after the hold.
        balances: Balances,
    },
    /// A pending transfer was voided or failed; its hold is released.
    #[serde(rename = "transfer.voided")]
    TransferVoided {
        /// The transfer.
        transfer_id: TransferId,
        /// Why.
        reason: VoidReason,
        /// The amount released.
        amount: Money,
        /// Balances after the release.
        balances: Balances,
    },
    /// A service request of this account's owner (an interbank payment, …) changed: its
    /// status, or it became stuck. One type for every change, so that a consumer follows a
    /// request by its `service_id` and shows `status`, and a new status is a new value rather
    /// than a new event type. It names no counterparty: the record has those, for its owner.
    #[serde(rename = "service.updated")]
    ServiceUpdated {
        /// The service record.
        service_id: ServiceRecordId,
        /// What kind of service.
        kind: ServiceKind,
        /// Its status now.
        status: ServiceStatus,
        /// Its principal amount.
        amount: Money,
        /// The transfer holding (then moving) its funds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold: Option<TransferId>,
        /// Since when it has been stuck, if it is.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stuck_since: Option<Timestamp>,
    },
}

impl EventBody {
    /// The `type` string of this body, as on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::AccountOpened { .. } => "account.opened",
            EventBody::AccountStatusChanged { .. } => "account.status_changed",
            EventBody::TransferPosted { .. } => "transfer.posted",
            EventBody::TransferPending { .. } => "transfer.pending",
            EventBody::TransferVoided { .. } => "transfer.voided",
            EventBody::ServiceUpdated { .. } => "service.updated",
        }
    }

    /// The transfer this event is about, for the events of transfers.
    pub fn transfer_id(&self) -> Option<TransferId> {
        match self {
            EventBody::TransferPosted { transfer_id, .. }
            | EventBody::TransferPending { transfer_id, .. }
            | EventBody::TransferVoided { transfer_id, .. } => Some(*transfer_id),
            EventBody::AccountOpened { .. }
            | EventBody::AccountStatusChanged { .. }
            | EventBody::ServiceUpdated { .. } => None,
        }
    }
}
