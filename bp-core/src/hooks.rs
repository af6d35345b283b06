//! What the façades tell the application that hosts them, so that it can act at once: wake
//! its outbox relay after a commit, log and count security events, count payments. Every
//! method has a default that does nothing.

use std::fmt;

use crate::security::AuditEntry;

/// How a payment request ended, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Posted (exempt, or confirmed with SCA).
    Posted,
    /// Waiting for SCA.
    ScaRequired,
    /// Handed to a rail (a payment to another bank): its amount held and its record written,
    /// pending there.
    Submitted,
    /// Refused by a rule of the ledger (funds, account status, ...).
    Rejected,
}

/// Called by [`Payments`](crate::payments::Payments) and [`Sca`](crate::sca::Sca) after the
/// fact; a hook must not block (it runs on the caller's task).
pub trait Hooks: Send + Sync + fmt::Debug + 'static {
    /// The ledger committed a change: the outbox has new events.
    fn ledger_changed(&self) {}
    /// An entry was appended to the audit log.
    fn audited(&self, _entry: &AuditEntry) {}
    /// A payment request was decided.
    fn payment(&self, _outcome: PaymentOutcome) {}
}

/// Hooks that do nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}
