// Test cases for bp-no-secret-in-logs (`semgrep --test .semgrep/`).

fn logs(e: Error, entry: AuditEntry, tx: LoginTx, req: Request) {
    // ruleid: bp-no-secret-in-logs
    tracing::info!(token = %access_token, "issued");
    // ruleid: bp-no-secret-in-logs
    tracing::debug!(%refresh_token, "rotated");
    // ruleid: bp-no-secret-in-logs
    tracing::warn!(?password, "failed");
    // ruleid: bp-no-secret-in-logs
    info!(customer = %entry.customer, code, "second factor");
    // ruleid: bp-no-secret-in-logs
    tracing::info!(hash = %hex(&tx.cookie_hash), "login");
    // ruleid: bp-no-secret-in-logs
    tracing::error!("answer {} refused", signature);
    // ruleid: bp-no-secret-in-logs
    tracing::error!("the ticket {ticket} was spent twice");
    // ruleid: bp-no-secret-in-logs
    tracing::warn!(
        error = %e,
        client_secret = ?client.secret,
        "client authentication failed"
    );
    // ruleid: bp-no-secret-in-logs
    let span = tracing::info_span!("request", authorization = ?req.headers().get("authorization"));
    // ruleid: bp-no-secret-in-logs
    tracing::event!(Level::INFO, totp_code = %answer, "checked");

    // ok: bp-no-secret-in-logs
    tracing::info!(audit = ?entry.kind, customer = %entry.customer, "security event");
    // ok: bp-no-secret-in-logs
    tracing::warn!(error = %e, "refresh token reuse: the session is revoked");
    // ok: bp-no-secret-in-logs
    tracing::info!(request_id = %id, method = %m, route = %r, status, "request");
    // ok: bp-no-secret-in-logs
    tracing::info!("a \"quoted\" token word {{password}} in the message only");
    // ok: bp-no-secret-in-logs
    let token = issue(&keys, claims);
    // ok: bp-no-secret-in-logs
    println!("{}", code);
}
