//! The customers of the run: opened, funded and given credentials by a server of this process
//! on the replicas' database (as the `create-customer` command opens one), stopped before the
//! load begins.

use bp_core::ids::{AccountId, CustomerId};
use bp_core::money::Currency;
use bp_server_example::config::Config;
use bp_server_example::testkit;

/// What each of a customer's two EUR accounts is funded with (minor units): far more than the
/// run can pay away, so that no payment is refused for want of money.
pub const FUNDS_MINOR: i64 = 100_000_000;

/// A customer of the run, with what signing in takes.
#[derive(Clone, Debug)]
pub struct Customer {
    pub id: CustomerId,
    pub username: String,
    pub password: String,
    pub totp: Vec<u8>,
    /// Two EUR accounts, each funded with [`FUNDS_MINOR`].
    pub accounts: [AccountId; 2],
}

/// Opens `count` customers through a server of this process on the database of `config`.
pub async fn open_customers(config: &Config, count: usize) -> Result<Vec<Customer>, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut config = config.clone();
    // It serves nothing: an ephemeral loopback port, no metrics listener, a data folder of its
    // own (the signing key is the replicas' file, named by its absolute path).
    config.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.metrics_listen = None;
    config.storage.data_dir = dir.path().to_owned();
    let started = bp_server_example::start(config, false).await.map_err(|e| format!("the setup server: {e}"))?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    let mut customers = Vec::with_capacity(count);
    for i in 0..count {
        // Unique across runs on one database, at most 32 characters.
        let username = format!("ha{i}-{}", &run[20..]);
        let password = format!("ha-test-password-{i}-{}", &run[..12]);
        let funds = [(Currency::EUR, FUNDS_MINOR), (Currency::EUR, FUNDS_MINOR)];
        let c = testkit::open_customer(&started.state, &username, &password, &funds).await;
        customers.push(Customer {
            id: c.id,
            username: c.username,
            password: c.password,
            totp: c.totp,
            accounts: [c.accounts[0], c.accounts[1]],
        });
    }
    started.running.stop().await.map_err(|e| format!("stopping the setup server: {e}"))?;
    Ok(customers)
}
