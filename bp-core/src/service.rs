//! `Ledger`: the façade integrators call. It checks inputs that need no state, builds commands, and
//! hands them to a [`Store`], which decides them with the rules of [`crate::rules`].

use std::sync::Arc;

use crate::account::{Account, AccountKind, AccountStatus, NewAccount, SystemAccount};
use crate::command::{Command, Executed, Outcome};
use crate::customer::{Customer, CustomerUpdate, NewCustomer, Username};
use crate::error::{Error, LedgerError, StoreError, StoreErrorKind};
use crate::event::Event;
use crate::ids::{AccountId, CustomerId, TransferId};
use crate::money::Money;
use crate::store::{HistoryQuery, PAGE_LEN_MAX, Page, Store};
use crate::transfer::{Posting, Transfer, TransferKind, TransferRequest, VoidReason};

/// The ledger service over a store.
#[derive(Debug)]
pub struct Ledger<S: ?Sized> {
    store: Arc<S>,
}

impl<S: ?Sized> Clone for Ledger<S> {
    fn clone(&self) -> Self {
        Self { store: Arc::clone(&self.store) }
    }
}

/// A transfer as answered by the ledger, with whether it was a replay of an earlier request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferReceipt {
    /// The transfer.
    pub transfer: Transfer,
    /// True when the same request had been applied before.
    pub replayed: bool,
}

fn unexpected(what: &'static str) -> Error {
    Error::Store(StoreError::new(
        StoreErrorKind::Corrupt,
        format!("the store answered with the wrong record kind for {what}"),
    ))
}

fn into_customer(e: Executed) -> Result<Customer, Error> {
    match e.outcome {
        Outcome::Customer(c) => Ok(*c),
        _ => Err(unexpected("a customer command")),
    }
}

fn into_account(e: Executed) -> Result<Account, Error> {
    match e.outcome {
        Outcome::Account(a) => Ok(a),
        _ => Err(unexpected("an account command")),
    }
}

fn into_receipt(e: Executed) -> Result<TransferReceipt, Error> {
    match e.outcome {
        Outcome::Transfer(transfer) => Ok(TransferReceipt { transfer, replayed: e.replayed }),
        _ => Err(unexpected("a transfer command")),
    }
}

impl<S: Store + ?Sized> Ledger<S> {
    /// A ledger over `store`.
    pub fn new(store: Arc<S>) -> Self {
        Self { store }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// Opens a customer; retrying with the same id and request returns the same customer.
    pub async fn open_customer(&self, req: NewCustomer) -> Result<Customer, Error> {
        into_customer(self.store.execute(Command::OpenCustomer(Box::new(req))).await?)
    }

    /// A customer's profile.
    pub async fn customer(&self, id: CustomerId) -> Result<Customer, Error> {
        self.store.customer(id).await?.ok_or(Error::Ledger(LedgerError::CustomerNotFound(id)))
    }

    /// A customer by username, if one has it.
    pub async fn customer_by_username(&self, username: &Username) -> Result<Option<Customer>, Error> {
        Ok(self.store.customer_by_username(username).await?)
    }

    /// Changes a customer's profile; with `expected_version`, only if nobody changed it since.
    pub async fn update_customer(
        &self,
        id: CustomerId,
        expected_version: Option<u64>,
        update: CustomerUpdate,
    ) -> Result<Customer, Error> {
        into_customer(self.store.execute(Command::UpdateCustomer { id, expected_version, update }).await?)
    }

    /// Opens a customer account; retrying with the same id and request returns the same account.
    pub async fn open_account(&self, req: NewAccount) -> Result<Account, Error> {
        into_account(self.store.execute(Command::OpenAccount(req)).await?)
    }

    /// Freezes, unfreezes or closes an account.
    pub async fn set_account_status(&self, id: AccountId, status: AccountStatus) -> Result<Account, Error> {
        into_account(self.store.execute(Command::SetAccountStatus { id, status }).await?)
    }

    /// An account with its balances.
    pub async fn account(&self, id: AccountId) -> Result<Account, Error> {
        self.store.account(id).await?.ok_or(Error::Ledger(LedgerError::AccountNotFound(id)))
    }

    /// A customer's accounts.
    pub async fn accounts_of(&self, customer: CustomerId) -> Result<Vec<Account>, Error> {
        Ok(self.store.accounts_of(customer).await?)
    }

    /// Puts money on a customer account from the bank's funding account (cash or deposit).
    pub async fn fund(&self, id: TransferId, account: AccountId, amount: Money) -> Result<TransferReceipt, Error> {
        self.transfer(TransferRequest {
            id,
            kind: TransferKind::Deposit,
            debit_account: SystemAccount::Funding.id(amount.currency()),
            credit_account: account,
            amount,
            reference: None,
            hold_until: None,
        })
        .await
    }

    /// Moves money: posted at once, or pending when `hold_until` is set. Retrying with the same id
    /// and request returns the original transfer; the same id with another request is a conflict.
    pub async fn transfer(&self, req: TransferRequest) -> Result<TransferReceipt, Error> {
        into_receipt(self.store.execute(Command::Transfer(req)).await?)
    }

    /// Moves money between two customer accounts, at once.
    pub async fn internal_transfer(
        &self,
        id: TransferId,
        from: AccountId,
        to: AccountId,
        amount: Money,
        reference: Option<String>,
    ) -> Result<TransferReceipt, Error> {
        self.transfer(TransferRequest {
            id,
            kind: TransferKind::Internal,
            debit_account: from,
            credit_account: to,
            amount,
            reference,
            hold_until: None,
        })
        .await
    }

    /// Posts a pending transfer.
    pub async fn post_pending(&self, id: TransferId) -> Result<TransferReceipt, Error> {
        into_receipt(self.store.execute(Command::PostPending { id }).await?)
    }

    /// Voids (or, with [`VoidReason::Rejected`], fails) a pending transfer, releasing its hold.
    pub async fn void_pending(&self, id: TransferId, reason: VoidReason) -> Result<TransferReceipt, Error> {
        into_receipt(self.store.execute(Command::VoidPending { id, reason }).await?)
    }

    /// Voids every pending transfer whose hold has expired, at most `limit`; returns how many.
    pub async fn expire_holds(&self, now: crate::Timestamp, limit: u32) -> Result<usize, Error> {
        let due = self.store.pending_expired(now, limit).await?;
        let mut voided = 0;
        for id in due {
            match self.void_pending(id, VoidReason::Expired).await {
                Ok(_) => voided += 1,
                // Posted or voided meanwhile by someone else: nothing left to expire.
                Err(Error::Ledger(LedgerError::InvalidTransition { .. } | LedgerError::HoldNotExpired { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(voided)
    }

    /// A transfer.
    pub async fn transfer_by_id(&self, id: TransferId) -> Result<Transfer, Error> {
        self.store.transfer(id).await?.ok_or(Error::Ledger(LedgerError::TransferNotFound(id)))
    }

    /// A page of an account's history, newest first.
    pub async fn history(&self, account: AccountId, query: &HistoryQuery) -> Result<Page<Posting>, Error> {
        query.validate()?;
        self.account(account).await?;
        Ok(self.store.postings(account, query).await?)
    }

    /// An account's events after `after_seq`, oldest first, at most `limit` (bounded by
    /// [`PAGE_LEN_MAX`]).
    pub async fn events_after(&self, account: AccountId, after_seq: u64, limit: u32) -> Result<Vec<Event>, Error> {
        if limit == 0 || limit > PAGE_LEN_MAX {
            return Err(Error::Ledger(LedgerError::InvalidField {
                field: "limit",
                reason: "must be between 1 and 500",
            }));
        }
        self.account(account).await?;
        Ok(self.store.events_after(account, after_seq, limit).await?)
    }
}

/// Convenience for building a [`NewAccount`] of the common kind.
pub fn current_account(id: AccountId, customer_id: CustomerId, currency: crate::money::Currency) -> NewAccount {
    NewAccount { id, customer_id, kind: AccountKind::Current, currency, overdraft_limit_minor: 0 }
}
