//! How long the SDK takes to be useful in a fresh process: constructing `BpSdk` (the inner
//! `BpClient`: its two HTTPS clients with rustls and the compiled-in roots), then the first
//! call that reaches the server (`begin_sign_in`: the OpenID configuration over a new
//! connection). Prints `name value unit` lines (docs/benchmarks.md).
//!
//!     cargo run --release -p bp-ffi --example cold_start -- http://127.0.0.1:8080

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bp_ffi::{AppStore, BpSdk, ClientConfig, HostError, SoftwareSigner, TokenStore};

#[derive(Debug, Default)]
struct Memory(Mutex<Option<String>>);

impl TokenStore for Memory {
    fn load(&self) -> Result<Option<String>, HostError> {
        Ok(self.0.lock().expect("lock").clone())
    }
    fn save(&self, session: String) -> Result<(), HostError> {
        *self.0.lock().expect("lock") = Some(session);
        Ok(())
    }
    fn clear(&self) -> Result<(), HostError> {
        *self.0.lock().expect("lock") = None;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct NoStore;

impl AppStore for NoStore {
    fn get(&self, _key: String) -> Result<Option<String>, HostError> {
        Ok(None)
    }
    fn put(&self, _key: String, _value: String) -> Result<(), HostError> {
        Ok(())
    }
    fn remove(&self, _key: String) -> Result<(), HostError> {
        Ok(())
    }
    fn keys(&self, _prefix: String) -> Result<Vec<String>, HostError> {
        Ok(Vec::new())
    }
}

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
    let config = ClientConfig {
        base_url: base,
        client_id: "bp-mobile".to_owned(),
        redirect_uri: "bp.mobile://oauth/callback".to_owned(),
        scope: None,
    };
    let started = Instant::now();
    let sdk = BpSdk::new(
        config,
        Arc::new(Memory::default()),
        SoftwareSigner::generate(),
        SoftwareSigner::generate(),
        Arc::new(NoStore),
    )
    .expect("the SDK");
    let constructed = started.elapsed();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let reached = Instant::now();
    let url = runtime.block_on(sdk.begin_sign_in()).expect("the server's OpenID configuration");
    let first_call = reached.elapsed();
    assert!(url.contains("code_challenge_method=S256"));
    println!("ffi_cold_construct {} us", constructed.as_micros());
    println!("ffi_cold_first_call {} us", first_call.as_micros());
    println!("ffi_cold_total {} us", started.elapsed().as_micros());
}
