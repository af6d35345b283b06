// Test cases for bp-secret-constant-time-eq (`semgrep --test .semgrep/`).

fn check(tx: &LoginTx, cookie: &str, verifier: &str, challenge: &str, code: &str, secret: &[u8]) -> bool {
    // ruleid: bp-secret-constant-time-eq
    if sha256(cookie.as_bytes()) != tx.cookie_hash {
        return false;
    }
    // ruleid: bp-secret-constant-time-eq
    let pkce = b64(&sha256(verifier.as_bytes())) == challenge;
    // ruleid: bp-secret-constant-time-eq
    let totp = totp_code(secret, step) == code;
    // ruleid: bp-secret-constant-time-eq
    let same = stored.token_hash == presented;
    // ok: bp-secret-constant-time-eq
    let constant = ct_eq(&sha256(cookie.as_bytes()), &tx.cookie_hash);
    // ok: bp-secret-constant-time-eq
    let shape = code.len() != TOTP_DIGITS;
    // ok: bp-secret-constant-time-eq
    let raw = signature.len() == 64;
    // ok: bp-secret-constant-time-eq
    let s256 = tx.code_challenge_method == "S256";
    // ok: bp-secret-constant-time-eq
    let none = tx.nonce != None;
    // ok: bp-secret-constant-time-eq
    let kind = entry.kind == AuditKind::LoginSucceeded;
    // ok: bp-secret-constant-time-eq
    let used = t.state == RefreshTokenState::Used;
    // ok: bp-secret-constant-time-eq
    let flow = q.response_type.as_deref() != Some("code");
    // ok: bp-secret-constant-time-eq
    let off = config.code_ttl_s == 0;
    pkce && totp && same && constant && shape && raw && s256 && none && kind
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip() {
        // ok: bp-secret-constant-time-eq
        assert!(decode(&encode(token)) == token);
    }
}
