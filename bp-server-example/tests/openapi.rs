//! The committed API description (`docs/api/openapi.json`) is the one the code generates.
//! `BP_BLESS=1 cargo test -p bp-server-example --test openapi` rewrites it.

use std::path::PathBuf;

#[test]
fn committed_openapi_matches_the_code() {
    // Every object's keys (and an operation's parameters) sorted, whatever order serde_json's
    // maps keep (`preserve_order`, which a dependency may switch on in a build of every feature,
    // keeps insertion order).
    let description = serde_json::to_value(bp_server_example::v1::api_description()).expect("serialise");
    let generated = serde_json::to_string_pretty(&sorted(description)).expect("serialise") + "\n";
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

fn sorted(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: std::collections::BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            // An operation's parameters come in the order of its query struct's schema
            // properties, which `preserve_order` changes too: listed by name.
            if let Some(serde_json::Value::Array(params)) = entries.get_mut("parameters") {
                params.sort_by_key(|p| (p["in"].to_string(), p["name"].to_string()));
            }
            serde_json::Value::Object(entries.into_iter().collect())
        }
        serde_json::Value::Array(items) => serde_json::Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
