//! The customer's accounts, an account's history (FR2), filtered and paged, and its pending
//! payments.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bp_core::Timestamp;
use bp_core::account::Account;
use bp_core::api::{AccountList, AccountView, PendingTransferList, TransactionPage, TransactionView, TransferView};
use bp_core::ids::{AccountId, CustomerId};
use bp_core::money::Money;
use bp_core::store::{HistoryQuery, PAGE_LEN_MAX};
use bp_core::transfer::{Direction, TransferKind};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::auth::Auth;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::problem::{ApiError, ApiResult, bad_cursor, bad_filter};
use crate::state::AppState;

/// The caller's account `id`, or 404.
pub(super) async fn own_account(state: &AppState, customer: CustomerId, id: AccountId) -> ApiResult<Account> {
    Ok(state.payments.own_account(customer, id).await?)
}

pub(super) async fn accounts(State(state): State<Arc<AppState>>, auth: Auth) -> ApiResult<Json<AccountList>> {
    auth.require("accounts")?;
    let mut accounts = state.ledger.accounts_of(auth.0.customer_id).await?;
    // Opening order: the order of the accounts in an event stream's cursor.
    accounts.sort_by_key(|a| (a.opened_at, a.id));
    Ok(Json(AccountList { accounts: accounts.iter().map(AccountView::from).collect() }))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub(super) struct AccountPath {
    account_id: AccountId,
}

pub(super) async fn account(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<AccountPath>,
) -> ApiResult<Json<AccountView>> {
    auth.require("accounts")?;
    Ok(Json(AccountView::from(&own_account(&state, auth.0.customer_id, p.account_id).await?)))
}

/// Filters of an account's history.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TransactionQuery {
    /// Only lines posted at or after this time (RFC 3339).
    from: Option<Timestamp>,
    /// Only lines posted before this time (RFC 3339).
    to: Option<Timestamp>,
    /// Only debits or only credits.
    direction: Option<Direction>,
    /// Only lines of this kind.
    kind: Option<TransferKind>,
    /// Only lines of at least this amount (a decimal string in the account's currency).
    #[schemars(regex(pattern = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"))]
    amount_min: Option<String>,
    /// Only lines of at most this amount.
    #[schemars(regex(pattern = r"^[0-9]{1,15}(\.[0-9]{1,4})?$"))]
    amount_max: Option<String>,
    /// The `next_cursor` of the previous page.
    #[schemars(regex(pattern = r"^[0-9]{1,19}$"))]
    cursor: Option<String>,
    /// Page length, 1 to 500 (default 50).
    #[schemars(range(min = 1, max = 500))]
    limit: Option<u32>,
}

impl TransactionQuery {
    /// The names of the query's parameters, as a problem names them.
    const PARAMETERS: &[&str] = &["from", "to", "direction", "kind", "amount_min", "amount_max", "cursor", "limit"];
}

pub(super) async fn transactions(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<AccountPath>,
    ApiQuery(q): ApiQuery<TransactionQuery>,
) -> ApiResult<Json<TransactionPage>> {
    auth.require("accounts")?;
    let account = own_account(&state, auth.0.customer_id, p.account_id).await?;
    let amount = |s: &Option<String>, field: &str| -> ApiResult<Option<i64>> {
        s.as_deref()
            .map(|s| {
                Money::parse(s, account.currency)
                    .map(|m| m.amount_minor())
                    .map_err(|e| ApiError::Unprocessable(format!("{field}: {e}")).at_parameter(field))
            })
            .transpose()
    };
    let before_seq = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<u64>().map_err(|_| bad_cursor())?),
    };
    let query = HistoryQuery {
        from: q.from,
        to: q.to,
        direction: q.direction,
        kind: q.kind,
        amount_min_minor: amount(&q.amount_min, "amount_min")?,
        amount_max_minor: amount(&q.amount_max, "amount_max")?,
        before_seq,
        limit: q.limit,
    };
    // An empty range (from ≥ to, or min > max) is a question with an empty answer; every other
    // parameter is checked all the same.
    if query.validate_unless_empty().map_err(|e| bad_filter(e, TransactionQuery::PARAMETERS))? {
        return Ok(Json(TransactionPage { items: Vec::new(), next_cursor: None }));
    }
    let page = state.ledger.history(account.id, &query).await?;
    Ok(Json(TransactionPage {
        items: page.items.iter().map(TransactionView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

pub(super) async fn pending(
    State(state): State<Arc<AppState>>,
    auth: Auth,
    ApiPath(p): ApiPath<AccountPath>,
) -> ApiResult<Json<PendingTransferList>> {
    auth.require("accounts")?;
    let account = own_account(&state, auth.0.customer_id, p.account_id).await?;
    // Only the payer's side: the store lists the transfers the account pays, none it receives.
    let transfers = state.ledger.store().pending_of(account.id, PAGE_LEN_MAX).await?;
    Ok(Json(PendingTransferList { transfers: transfers.iter().map(TransferView::from).collect() }))
}
