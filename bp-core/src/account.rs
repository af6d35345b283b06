//! Accounts: customer accounts and the bank's own system accounts that close the ledger.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Timestamp;
use crate::account_number::AccountNumber;
use crate::ids::{AccountId, CustomerId};
use crate::money::{Currency, Money};

/// What an account is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A customer's current (checking) account.
    Current,
    /// A customer's savings account.
    Savings,
    /// A bank-owned account; see [`SystemAccount`].
    System,
}

/// The bank's own accounts, one of each per currency. Money enters and leaves the customers'
/// accounts only through them, which keeps every currency's balances summing to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SystemAccount {
    /// Cash and deposits entering the bank (the source of funding).
    Funding,
    /// Clearing account of the domestic interbank rail.
    InterbankClearing,
    /// Clearing account of international transfers.
    InternationalClearing,
    /// Source of loan disbursements and sink of repayments.
    LoanFunding,
    /// Fees earned by the bank.
    Fees,
    /// The bank's position in a currency from converting customers' money (FX): credited with
    /// what customers sell, debited with what they buy. Its balance is the bank's open position.
    FxPosition,
    /// Interest earned on loans.
    InterestIncome,
    /// What one loan's borrower owes the bank: one per loan, opened with an id derived from the
    /// loan (not [`SystemAccount::id`]'s fixed id), debited at disbursement, credited by every
    /// principal repayment; zero when the loan is repaid.
    LoanReceivable,
}

impl SystemAccount {
    /// Every system account kind with one fixed id per currency: all but
    /// [`SystemAccount::LoanReceivable`], of which each loan has its own.
    pub const ALL: [SystemAccount; 7] = [
        SystemAccount::Funding,
        SystemAccount::InterbankClearing,
        SystemAccount::InternationalClearing,
        SystemAccount::LoanFunding,
        SystemAccount::Fees,
        SystemAccount::FxPosition,
        SystemAccount::InterestIncome,
    ];

    fn code(self) -> u8 {
        match self {
            SystemAccount::Funding => 1,
            SystemAccount::InterbankClearing => 2,
            SystemAccount::InternationalClearing => 3,
            SystemAccount::LoanFunding => 4,
            SystemAccount::Fees => 5,
            SystemAccount::FxPosition => 6,
            SystemAccount::InterestIncome => 7,
            SystemAccount::LoanReceivable => 8,
        }
    }

    /// The fixed id of this system account in `currency`: every store and every process agrees
    /// on it without a lookup. [`SystemAccount::LoanReceivable`] has none (each loan has its
    /// own): [`SystemAccount::from_id`] does not recognise this id for it. It is an RFC 9562 version-8 (custom) UUID: `bpsyst`, the version
    /// byte, the kind, the variant byte, the currency code, then zeros.
    pub fn id(self, currency: Currency) -> AccountId {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(SYSTEM_ID_PREFIX);
        bytes[6] = 0x80;
        bytes[7] = self.code();
        bytes[8] = 0x80;
        bytes[9..12].copy_from_slice(currency.code().as_bytes());
        AccountId::from_uuid(Uuid::from_bytes(bytes))
    }

    /// The fixed account number of this system account in `currency` (serials from
    /// 9,900,000,000 up are reserved for the bank).
    pub fn number(self, currency: Currency) -> AccountNumber {
        let code = currency.code().as_bytes();
        let currency_part = code.iter().fold(0u64, |acc, b| acc * 26 + u64::from(b - b'A'));
        let serial = SYSTEM_SERIAL_BASE + u64::from(self.code()) * 100_000 + currency_part;
        AccountNumber::from_serial(serial).unwrap_or_else(|_| unreachable!("system serials stay below 10^10"))
    }

    /// Which system account `id` is, if it is one.
    pub fn from_id(id: AccountId) -> Option<(SystemAccount, Currency)> {
        let bytes = id.as_uuid().as_bytes();
        if &bytes[..6] != SYSTEM_ID_PREFIX || bytes[6] != 0x80 || bytes[8] != 0x80 || bytes[12..] != [0; 4] {
            return None;
        }
        // `ALL` leaves out the loans' receivables: each has its own id, never the fixed one.
        let kind = SystemAccount::ALL.into_iter().find(|k| k.code() == bytes[7])?;
        let code = std::str::from_utf8(&bytes[9..12]).ok()?;
        let currency = Currency::from_code(code).ok()?;
        Some((kind, currency))
    }
}

/// The first bytes of every system account id.
const SYSTEM_ID_PREFIX: &[u8; 6] = b"bpsyst";

/// First serial of the range reserved for system accounts.
pub const SYSTEM_SERIAL_BASE: u64 = 9_900_000_000;

/// Who owns an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AccountOwner {
    /// A customer of the bank.
    Customer {
        /// The owning customer.
        customer_id: CustomerId,
    },
    /// The bank itself.
    Bank {
        /// Which system account.
        system: SystemAccount,
    },
}

/// Whether an account can move money.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Debits and credits allowed.
    Active,
    /// No money moves in or out until it is unfrozen.
    Frozen,
    /// Closed for good; closing needs a zero balance and no holds.
    Closed,
}

/// The three balances of an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Balances {
    /// Sum of the account's postings.
    pub posted: Money,
    /// Funds held by pending transfers.
    pub held: Money,
    /// What the customer may still spend: posted − held (the overdraft limit is not included).
    pub available: Money,
}

/// An account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Id.
    pub id: AccountId,
    /// The bank's account number (with check digits).
    pub number: AccountNumber,
    /// Owner.
    pub owner: AccountOwner,
    /// Kind.
    pub kind: AccountKind,
    /// Currency of every amount on this account.
    pub currency: Currency,
    /// Status.
    pub status: AccountStatus,
    /// Sum of postings, in minor units.
    pub posted_minor: i64,
    /// Sum of holds of pending transfers, in minor units (never negative).
    pub held_minor: i64,
    /// How far below zero `posted − held` may go, in minor units (never negative; zero by default).
    /// System accounts have no limit.
    pub overdraft_limit_minor: i64,
    /// Sequence number of the account's latest event (events are numbered 1, 2, 3, … without gaps).
    pub last_event_seq: u64,
    /// Incremented on every change.
    pub version: u64,
    /// When the account was opened.
    pub opened_at: Timestamp,
}

impl Account {
    /// Posted, held and available balance as money.
    pub fn balances(&self) -> Balances {
        Balances {
            posted: Money::new(self.posted_minor, self.currency),
            held: Money::new(self.held_minor, self.currency),
            available: Money::new(self.available_minor(), self.currency),
        }
    }

    /// posted − held, saturating (the rules keep it far from the bounds).
    pub fn available_minor(&self) -> i64 {
        self.posted_minor.saturating_sub(self.held_minor)
    }

    /// Whether this is one of the bank's system accounts.
    pub fn is_system(&self) -> bool {
        matches!(self.owner, AccountOwner::Bank { .. })
    }

    /// The owning customer, if a customer owns it.
    pub fn customer_id(&self) -> Option<CustomerId> {
        match self.owner {
            AccountOwner::Customer { customer_id } => Some(customer_id),
            AccountOwner::Bank { .. } => None,
        }
    }
}

/// What the bank supplies to open a customer account. The id is made by the caller and makes the
/// request idempotent; the account number is assigned by the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Caller-made id.
    pub id: AccountId,
    /// The owning customer.
    pub customer_id: CustomerId,
    /// Current or savings (system accounts are opened by the ledger itself).
    pub kind: AccountKind,
    /// Currency.
    pub currency: Currency,
    /// Overdraft limit in minor units (zero for none).
    #[serde(default)]
    pub overdraft_limit_minor: i64,
}
