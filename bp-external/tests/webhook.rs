//! Webhook authentication: a delivery signed with a secret we accept, within the tolerance and
//! not seen before, is read; a forged body or signature, a wrong secret, a stale or future
//! timestamp, a replay and malformed headers are refused; rotated secrets are accepted; and
//! no secret or signature leaks through `Debug` or an error.

mod common;

use bp_core::external::RailAnswer;
use bp_core::iso20022::pacs002::Status;
use bp_external::webhook::{TOLERANCE_S_DEFAULT, WebhookError, WebhookVerifier, signature_header};
use common::{at, key, report, secret, unix};

fn verifier(secrets: Vec<bp_external::WebhookSecret>) -> WebhookVerifier {
    WebhookVerifier::new(secrets, TOLERANCE_S_DEFAULT).expect("verifier")
}

#[test]
fn a_signed_report_is_authentic_and_read() {
    let now = unix(at());
    let body = report(&key(1), Status::Settled, None);
    let header = signature_header(now, &[&secret(1)], body.as_bytes());
    let read = verifier(vec![secret(1)]).status_report(Some(&header), body.as_bytes(), now).expect("authentic");
    assert_eq!(read.answer_for(&key(1)), Some(RailAnswer::Settled));
}

#[test]
fn forged_bodies_and_signatures_and_wrong_secrets_are_refused() {
    let now = unix(at());
    let body = report(&key(1), Status::Settled, None);
    let header = signature_header(now, &[&secret(1)], body.as_bytes());
    let v = verifier(vec![secret(1)]);
    let forged_body = report(&key(1), Status::Rejected, Some("AC04"));
    assert_eq!(v.verify(Some(&header), forged_body.as_bytes(), now), Err(WebhookError::BadSignature));
    let mut forged_sig = header.clone();
    let last = forged_sig.pop().expect("a digit");
    forged_sig.push(if last == '0' { '1' } else { '0' });
    assert_eq!(v.verify(Some(&forged_sig), body.as_bytes(), now), Err(WebhookError::BadSignature));
    // Signed for another second: the timestamp is part of what is signed.
    let moved = header.replacen(&format!("t={now}"), &format!("t={}", now + 1), 1);
    assert_eq!(v.verify(Some(&moved), body.as_bytes(), now), Err(WebhookError::BadSignature));
    let other = signature_header(now, &[&secret(2)], body.as_bytes());
    assert_eq!(v.verify(Some(&other), body.as_bytes(), now), Err(WebhookError::BadSignature), "wrong secret");
    assert_eq!(v.verify(Some(&header), body.as_bytes(), now), Ok(()), "the genuine one still passes");
}

#[test]
fn stale_and_future_timestamps_are_refused_at_the_tolerance() {
    let now = unix(at());
    let body = b"<x/>";
    let tolerance = i64::try_from(TOLERANCE_S_DEFAULT).expect("fits");
    let v = verifier(vec![secret(1)]);
    let at_t = |t: i64| signature_header(t, &[&secret(1)], body);
    assert_eq!(v.verify(Some(&at_t(now - tolerance - 1)), body, now), Err(WebhookError::Stale));
    assert_eq!(v.verify(Some(&at_t(now + tolerance + 1)), body, now), Err(WebhookError::Future));
    assert_eq!(v.verify(Some(&at_t(now - tolerance)), body, now), Ok(()));
    assert_eq!(v.verify(Some(&at_t(now + tolerance)), body, now), Ok(()));
}

#[test]
fn a_replay_is_refused_and_a_re_signed_retry_passes() {
    let now = unix(at());
    let body = report(&key(1), Status::Accepted, None);
    let v = verifier(vec![secret(1)]);
    let header = signature_header(now, &[&secret(1)], body.as_bytes());
    assert!(v.status_report(Some(&header), body.as_bytes(), now).is_ok());
    assert_eq!(v.status_report(Some(&header), body.as_bytes(), now + 10).map(|_| ()), Err(WebhookError::Replayed));
    assert_eq!(v.verify(Some(&header), body.as_bytes(), now + 20), Err(WebhookError::Replayed));
    let retry = signature_header(now + 1, &[&secret(1)], body.as_bytes());
    assert_eq!(v.verify(Some(&retry), body.as_bytes(), now + 1), Ok(()), "the rail's retry, signed again");
}

#[test]
fn the_replay_cache_is_bounded_and_forgets_the_oldest_first() {
    let now = unix(at());
    let v = WebhookVerifier::with_seen_len_max(vec![secret(1)], TOLERANCE_S_DEFAULT, 2).expect("verifier");
    let headers: Vec<String> = (0..3).map(|i| signature_header(now + i, &[&secret(1)], b"<x/>")).collect();
    for h in &headers {
        assert_eq!(v.verify(Some(h), b"<x/>", now + 2), Ok(()));
    }
    assert_eq!(v.verify(Some(&headers[2]), b"<x/>", now + 2), Err(WebhookError::Replayed));
    assert_eq!(v.verify(Some(&headers[0]), b"<x/>", now + 2), Ok(()), "forgotten: the lifecycle absorbs it");
}

#[test]
fn rotated_secrets_are_accepted_during_the_rotation() {
    let now = unix(at());
    let body = b"<x/>";
    let (old, new) = (secret(1), secret(2));
    let rotating = verifier(vec![new.clone(), old.clone()]);
    for (i, signers) in [vec![&old], vec![&new], vec![&new, &old]].into_iter().enumerate() {
        let t = now + i64::try_from(i).expect("small");
        let header = signature_header(t, &signers, body);
        assert_eq!(rotating.verify(Some(&header), body, now), Ok(()), "signed by {} secret(s)", signers.len());
    }
    let after = verifier(vec![new.clone()]);
    let header = signature_header(now, &[&old], body);
    assert_eq!(after.verify(Some(&header), body, now), Err(WebhookError::BadSignature), "the old one is retired");
    let both = signature_header(now, &[&new, &old], body);
    assert_eq!(after.verify(Some(&both), body, now), Ok(()), "the rail signing with both");
}

#[test]
fn malformed_headers_and_bodies_are_refused() {
    let now = unix(at());
    let v = verifier(vec![secret(1)]);
    let sig = secret(1).sign(now, b"<x/>");
    assert_eq!(v.verify(None, b"<x/>", now), Err(WebhookError::MissingSignature));
    for bad in [
        String::new(),
        format!("v1={sig}"),
        format!("t={now}"),
        format!("t=soon,v1={sig}"),
        format!("t={now},v1=zz"),
        format!("t={now},v1={}", &sig[..10]),
        format!("t={now},t={now},v1={sig}"),
        format!("t={now},v1={sig},{}", "x".repeat(1_100)),
        format!("t={now};v1={sig}"),
    ] {
        assert_eq!(v.verify(Some(&bad), b"<x/>", now), Err(WebhookError::MalformedSignature), "{bad}");
    }
    assert_eq!(v.verify(Some(&format!("t={now},v0=abc,v1={sig}")), b"<x/>", now), Ok(()), "other schemes skipped");
    // Authentic but not a pacs.002: an error about the body.
    let header = signature_header(now + 1, &[&secret(1)], b"<x/>");
    assert!(matches!(v.status_report(Some(&header), b"<x/>", now), Err(WebhookError::Body(_))));
}

#[test]
fn secrets_and_signatures_never_show() {
    let s = secret(0xab);
    assert!(!format!("{s:?}").contains("ab"), "{s:?}");
    assert!(bp_external::WebhookSecret::new(vec![1; 31]).is_err(), "too short");
    let v = verifier(vec![s.clone()]);
    assert!(!format!("{v:?}").contains("171"), "{v:?}");
    let now = unix(at());
    let header = signature_header(now, &[&secret(2)], b"<x/>");
    let err = v.verify(Some(&header), b"<x/>", now).expect_err("wrong secret");
    let sig = &header[header.find("v1=").expect("v1") + 3..];
    assert!(!err.to_string().contains(sig) && !format!("{err:?}").contains(sig));
    assert!(WebhookVerifier::new(vec![], 300).is_err());
    assert!(WebhookVerifier::new(vec![s.clone(); 5], 300).is_err());
    assert!(WebhookVerifier::new(vec![s], 0).is_err());
}

#[test]
fn the_documented_test_vector_holds() {
    // docs/external-services.md, "Webhooks from the rail": what a rail implements against.
    let secret = bp_external::WebhookSecret::new(b"bp-example-webhook-secret-0123456789".to_vec()).expect("secret");
    let expected = "97c43abd278342df240e6767694fe25915780bda05e078a3d3cb44a17edea878";
    assert_eq!(secret.sign(1_772_357_401, b"<Document/>"), expected);
    assert_eq!(signature_header(1_772_357_401, &[&secret], b"<Document/>"), format!("t=1772357401,v1={expected}"));
}
