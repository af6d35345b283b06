// Test cases for bp-handler-no-panic (`semgrep --test .semgrep/`).

async fn get_account(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Account>, ApiError> {
    // ruleid: bp-handler-no-panic
    let id = AccountId::parse(&id).unwrap();
    // ruleid: bp-handler-no-panic
    let account = state.ledger.account(id).await.expect("the store answers");
    // ruleid: bp-handler-no-panic
    let routes = state.hub.routes.read().unwrap();
    if account.closed {
        // ruleid: bp-handler-no-panic
        panic!("closed accounts are filtered");
    }
    // ok: bp-handler-no-panic
    let mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap_or_else(|_| unreachable!("any key length"));
    // ruleid: bp-handler-no-panic
    todo!("beneficiaries");
    // ok: bp-handler-no-panic
    let name = account.name.unwrap_or_default();
    // ok: bp-handler-no-panic
    let parsed = AccountId::parse(&id).map_err(|_| ApiError::not_found())?;
    // ok: bp-handler-no-panic
    let limit = query.limit.unwrap_or(50);
    Ok(Json(account))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses() {
        // ok: bp-handler-no-panic
        let id = AccountId::parse("x").expect("valid");
        // ok: bp-handler-no-panic
        assert!(AccountId::parse("").unwrap_err().to_string().contains("empty"));
    }
}
