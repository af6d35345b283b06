//! Requests that must take effect once and have no challenge to confirm: a loan application
//! and a loan's early repayment. As with a payment, the SDK makes the idempotency key (a
//! UUIDv7) and stores it with the request in the app's `AppStore` before anything is sent;
//! every retry of the same request — after a lost answer, a crash or an app restart, from a new
//! `BpSdk` on the same store — sends the body first sent with that key, until the server gives
//! a final answer and the record goes. A request is the same when what the customer asked for
//! is (the application's fields; the loan and the amount, or "in full", of a repayment), so an
//! app retries by making the call again.

#![forbid(unsafe_code)]

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::client::BpClient;
use crate::error::Error;

/// The `AppStore` keys of these requests in flight start with this.
const REQUEST_PREFIX: &str = "bp.request.";

/// A request stored before it is sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KeyedRequest {
    /// The idempotency key (UUIDv7).
    pub key: String,
    /// The route it is sent to.
    pub path: String,
    /// The body, exactly as first sent.
    pub body: serde_json::Value,
}

/// The `AppStore` key of the request the customer described as `what`: a digest, so that no
/// text the customer typed (a loan's purpose) is in a key.
fn store_key(what: &str) -> String {
    let digest = Sha256::digest(what.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{REQUEST_PREFIX}{hex}")
}

impl BpClient {
    /// The request `what` stored earlier and not answered finally yet, if any.
    pub(crate) fn keyed_request(&self, what: &str) -> Result<Option<KeyedRequest>, Error> {
        match self.host.store.get(store_key(what))? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text).map(Some).map_err(|_| Error::Corrupt("a stored request".to_owned()))
            }
        }
    }

    /// Stores the request `what` (`body` to `path`) under a new idempotency key; nothing is sent.
    pub(crate) fn store_request(&self, what: &str, path: &str, body: serde_json::Value) -> Result<KeyedRequest, Error> {
        let request = KeyedRequest { key: uuid::Uuid::now_v7().to_string(), path: path.to_owned(), body };
        let text = serde_json::to_string(&request).map_err(|e| Error::Corrupt(e.to_string()))?;
        self.host.store.put(store_key(what), text)?;
        Ok(request)
    }

    /// Sends the request `what`: the stored one with its key if there is one, else `body` to
    /// `path` under a new key, stored first.
    pub(crate) async fn post_once<T: DeserializeOwned>(
        &self,
        what: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, Error> {
        let request = match self.keyed_request(what)? {
            Some(stored) => stored,
            None => self.store_request(what, path, body)?,
        };
        self.send_request(what, &request).await
    }

    /// Sends the stored request `what`; a final answer removes it, anything else keeps it for
    /// the next retry.
    pub(crate) async fn send_request<T: DeserializeOwned>(
        &self,
        what: &str,
        request: &KeyedRequest,
    ) -> Result<T, Error> {
        match self.post(&request.path, &request.body, Some(&request.key)).await {
            Ok(answer) => {
                self.host.store.remove(store_key(what))?;
                Ok(answer)
            }
            Err(e) if e.is_final_answer() => {
                self.host.store.remove(store_key(what))?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

/// What identifies a loan application: its body (the account, amount, term and purpose).
pub(crate) fn loan_application(body: &serde_json::Value) -> String {
    format!("loan-application\n{body}")
}

/// What identifies an early repayment of loan `loan_id`: the amount (`amount currency`), or
/// `full`.
pub(crate) fn loan_repayment(loan_id: &str, amount: Option<&bp_core::money::Money>) -> String {
    match amount {
        Some(m) => format!("loan-repayment\n{loan_id}\n{} {}", m.amount_minor(), m.currency()),
        None => format!("loan-repayment\n{loan_id}\nfull"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::client::ClientConfig;
    use crate::host::{AppStore, Host, HostError, TokenStore};
    use crate::keys::SoftwareSigner;

    /// An `AppStore` in memory, shared by the SDKs of one "phone".
    #[derive(Debug, Default)]
    struct Memory(Mutex<BTreeMap<String, String>>);

    impl AppStore for Memory {
        fn get(&self, key: String) -> Result<Option<String>, HostError> {
            Ok(self.0.lock().expect("store").get(&key).cloned())
        }
        fn put(&self, key: String, value: String) -> Result<(), HostError> {
            self.0.lock().expect("store").insert(key, value);
            Ok(())
        }
        fn remove(&self, key: String) -> Result<(), HostError> {
            self.0.lock().expect("store").remove(&key);
            Ok(())
        }
        fn keys(&self, prefix: String) -> Result<Vec<String>, HostError> {
            Ok(self.0.lock().expect("store").keys().filter(|k| k.starts_with(&prefix)).cloned().collect())
        }
    }

    /// No session saved.
    #[derive(Debug)]
    struct NoTokens;

    impl TokenStore for NoTokens {
        fn load(&self) -> Result<Option<String>, HostError> {
            Ok(None)
        }
        fn save(&self, _session: String) -> Result<(), HostError> {
            Ok(())
        }
        fn clear(&self) -> Result<(), HostError> {
            Ok(())
        }
    }

    /// A client, as a new `BpSdk` makes it, on the app's `store`.
    fn client_on(store: Arc<dyn AppStore>) -> BpClient {
        let config = ClientConfig {
            base_url: "https://bank.example".to_owned(),
            client_id: "bp-mobile".to_owned(),
            redirect_uri: "bp.mobile://oauth/callback".to_owned(),
            scope: None,
        };
        let host = Host {
            tokens: Arc::new(NoTokens),
            dpop_key: SoftwareSigner::generate(),
            sca_key: SoftwareSigner::generate(),
            store,
        };
        BpClient::new(config, host).expect("a client")
    }

    #[test]
    fn a_request_is_known_by_what_the_customer_asked_and_its_key_by_no_text_of_theirs() {
        let body = serde_json::json!({ "account": "a", "purpose": "Ada's new laptop" });
        let key = store_key(&loan_application(&body));
        assert!(key.starts_with(REQUEST_PREFIX) && !key.contains("laptop"), "{key}");
        assert_eq!(key, store_key(&loan_application(&body.clone())), "the same application");
        let other = serde_json::json!({ "account": "a", "purpose": "Ada's new bike" });
        assert_ne!(key, store_key(&loan_application(&other)));
        let eur = |minor| bp_core::money::Money::new(minor, bp_core::money::Currency::EUR);
        let partial = loan_repayment("l1", Some(&eur(100)));
        assert_ne!(partial, loan_repayment("l1", Some(&eur(101))));
        assert_ne!(partial, loan_repayment("l2", Some(&eur(100))));
        assert_ne!(partial, loan_repayment("l1", None));
    }

    #[test]
    fn a_stored_request_outlives_the_sdk_that_stored_it() {
        let store: Arc<dyn AppStore> = Arc::new(Memory::default());
        let what = loan_repayment("l1", None);
        let first = client_on(store.clone());
        assert_eq!(first.keyed_request(&what).expect("read"), None);
        let stored =
            first.store_request(&what, "/v1/loans/l1/repayments", serde_json::json!({ "n": 1 })).expect("store");
        assert!(uuid::Uuid::parse_str(&stored.key).is_ok_and(|u| u.get_version_num() == 7), "{}", stored.key);
        // The app restarts: a new client on the same store finds the request with its key.
        let restarted = client_on(store.clone());
        assert_eq!(restarted.keyed_request(&what).expect("read"), Some(stored.clone()));
        assert_eq!(restarted.keyed_request(&loan_repayment("l2", None)).expect("read"), None);
        store.put(store_key(&what), "not json".to_owned()).expect("put");
        assert!(matches!(restarted.keyed_request(&what), Err(Error::Corrupt(_))));
    }
}
