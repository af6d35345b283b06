//! The committed API description (`docs/api/openapi.json`) is the one the code generates.
//! `BP_BLESS=1 cargo test -p bp-server-example --test openapi` rewrites it.

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_the_code() {
    let generated = serde_json::to_string_pretty(&bp_server_example::v1::api_description()).expect("serialise") + "\n";
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api/openapi.json");
    if std::env::var_os("BP_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/api/openapi.json differs from the API the code serves; run BP_BLESS=1 cargo test -p bp-server-example --test openapi"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/me",
        "/v1/accounts",
        "/v1/accounts/{account_id}/transactions",
        "/v1/accounts/{account_id}/pending",
        "/v1/transfers",
        "/v1/transfers/{transfer_id}/confirm",
        "/v1/beneficiaries",
        "/v1/devices",
        "/v1/services",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is described");
    }
}
