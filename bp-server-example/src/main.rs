//! The `bp-server-example` command: `serve` (the default), `create-customer`, `external stuck`,
//! `backup`, `healthcheck`, `print-config`, `totp`.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use bp_core::account::{AccountKind, NewAccount};
use bp_core::customer::{KycStatus, NewCustomer, Username};
use bp_core::ids::{AccountId, CustomerId};
use bp_core::money::Currency;
use bp_server_example::auth::crypto;
use bp_server_example::config::{Config, StorageKind};
use bp_server_example::state::Stores;
use bp_server_example::{demo, start};
use clap::{Parser, Subcommand};

// The server allocates many small buffers per request on several threads; mimalloc serves
// them with less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The bp reference server: banking API, OAuth2/OpenID provider and strong customer
/// authentication on an embedded SQLite database (or on MongoDB: `storage.kind`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (environment variables `BP_SECTION__KEY` override it).
    #[arg(long, short, global = true, env = "BP_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Print the effective configuration as TOML.
    PrintConfig,
    /// Open a customer (a person) with current accounts, and print their new credentials once.
    /// The password is read from standard input.
    CreateCustomer {
        /// Login name.
        #[arg(long)]
        username: String,
        /// Given name.
        #[arg(long)]
        given_name: String,
        /// Family name.
        #[arg(long)]
        family_name: String,
        /// Currencies of the current accounts to open (ISO 4217), e.g. `EUR,USD`.
        #[arg(long, value_delimiter = ',', default_value = "EUR")]
        currencies: Vec<String>,
    },
    /// External payments, for operators.
    External {
        #[command(subcommand)]
        command: ExternalCommand,
    },
    /// Print the current TOTP code of a base32 secret (for trying the demo without an app).
    Totp {
        /// The base32 secret.
        secret: String,
    },
    /// Copy a consistent snapshot of the SQLite database to a new file, while the server runs
    /// (SQLite's online backup), then open the copy as the server would (recovery, the ledger's
    /// check that every currency sums to zero) and print what it holds. Run it on the machine
    /// (or in the container) of the server, with its configuration.
    Backup {
        /// The new file; refused if it exists.
        destination: PathBuf,
    },
    /// Ask this server's own `/livez` (or `/readyz`) on its listen address and exit 0 if it
    /// answers 200, 1 otherwise: the container's health check, in an image without curl.
    Healthcheck {
        /// Which route to ask.
        #[arg(long, value_enum, default_value_t = Probe::Live)]
        probe: Probe,
        /// Longest wait for the answer (milliseconds).
        #[arg(long, default_value_t = 2_000)]
        timeout_ms: u64,
    },
}

/// The health routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Probe {
    /// `/livez`: the process serves HTTP.
    Live,
    /// `/readyz`: and its stores answer.
    Ready,
}

#[derive(Debug, Subcommand)]
enum ExternalCommand {
    /// List the external payments flagged stuck (undecided `external.sepa.stuck_after_s` after
    /// they were requested), longest stuck first. They keep their holds and their checks;
    /// nothing releases them by itself: an operator asks the rail and decides.
    Stuck {
        /// Most payments listed (1 to 500).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::PrintConfig => match toml::to_string_pretty(&config) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Totp { secret } => match totp_rs::Secret::Encoded(secret.trim().to_uppercase()).to_bytes() {
            Ok(bytes) => {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs());
                println!("{}", crypto::totp_code(&bytes, now.unwrap_or(0) / crypto::TOTP_STEP_S));
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("not a base32 secret");
                ExitCode::from(2)
            }
        },
        Command::Healthcheck { probe, timeout_ms } => healthcheck(&config, probe, timeout_ms),
        command => run(config, command),
    }
}

/// The URL of `probe` on the server that `config` describes: its listen address, with a
/// wildcard address (`0.0.0.0`, `::`) asked on the loopback address of its family.
fn probe_url(config: &Config, probe: Probe) -> String {
    let mut addr = config.server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if config.tls() { "https" } else { "http" };
    let path = match probe {
        Probe::Live => "/livez",
        Probe::Ready => "/readyz",
    };
    format!("{scheme}://{addr}{path}")
}

/// Asks the probe's route once and says the verdict on standard output (which Docker keeps in
/// the container's health log); 0 for 200, 1 for anything else or no answer in time.
fn healthcheck(config: &Config, probe: Probe, timeout_ms: u64) -> ExitCode {
    let url = probe_url(config, probe);
    let timeout = std::time::Duration::from_millis(timeout_ms.max(1));
    // The server's own certificate is not checked: the probe asks this host's own listener by
    // its IP address, which the certificate (made for the public name) does not name, and
    // sends nothing but the request line, so there is nothing to protect; Kubernetes' HTTPS
    // probes do the same.
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .danger_accept_invalid_certs(config.tls())
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let (client, runtime) = match (client, runtime) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) => return unhealthy(&url, &e.to_string()),
        (_, Err(e)) => return unhealthy(&url, &e.to_string()),
    };
    match runtime.block_on(async { client.get(&url).send().await.map(|r| r.status()) }) {
        Ok(status) if status == reqwest::StatusCode::OK => {
            println!("healthy: {url} answered {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => unhealthy(&url, &format!("answered {status}")),
        Err(e) => unhealthy(&url, &e.to_string()),
    }
}

fn unhealthy(url: &str, why: &str) -> ExitCode {
    println!("unhealthy: {url}: {why}");
    ExitCode::FAILURE
}

fn run(config: Config, command: Command) -> ExitCode {
    init_logs(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::CreateCustomer { username, given_name, family_name, currencies } => {
                create_customer(config, &username, &given_name, &family_name, &currencies).await
            }
            Command::External { command: ExternalCommand::Stuck { limit } } => list_stuck(&config, limit).await,
            Command::Backup { destination } => backup(&config, &destination).await,
            _ => serve(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.filter));
    bp_server_example::logs::init(filter, config.log.json, std::io::stdout);
}

async fn serve(config: Config) -> Result<(), String> {
    let started = start(config, true).await?;
    if let Some(demo) = &started.demo {
        // Credentials go to the terminal (standard error), never into the logs.
        let mut err = std::io::stderr().lock();
        let _ = writeln!(
            err,
            "\n{}",
            demo::credentials_text(
                demo,
                &started.state.auth.issuer,
                &started.state.config.data_path(std::path::Path::new(demo::CREDENTIALS_FILE)),
            )
        );
    }
    tracing::info!(address = %started.running.addr, issuer = %started.state.auth.issuer, "serving");
    started.running.wait().await.map_err(|e| e.to_string())
}

/// Backs the SQLite database up to `destination` (see `Command::Backup`), then opens the copy
/// as a store and prints its size and the ledger's totals per currency.
async fn backup(config: &Config, destination: &std::path::Path) -> Result<(), String> {
    if config.storage.kind != StorageKind::Sqlite {
        return Err("backup copies the SQLite store; back a MongoDB store up with mongodump \
                    (docs/operations.md, \"Backups and restores\")"
            .to_owned());
    }
    let source = config.data_path(&config.storage.sqlite_file);
    if !source.exists() {
        return Err(format!("no database at {}", source.display()));
    }
    let destination = destination.to_owned();
    let report = tokio::task::spawn_blocking(move || bp_storage::sqlite::backup(&source, &destination))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("backup failed: {e}"))?;
    // Opening the copy is what a restore does: recovery, and the refusal of a ledger whose
    // currencies do not sum to zero. It leaves the copy in WAL mode, closed cleanly.
    let copy = bp_storage::sqlite::SqliteStore::open(&report.path, bp_storage::sqlite::SqliteConfig::default())
        .map_err(|e| format!("the copy at {} does not open as a store: {e}", report.path.display()))?;
    let totals = bp_core::store::Store::totals(&copy).await.map_err(|e| e.to_string());
    copy.close().await.map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ =
        writeln!(out, "backup\t{}\t{} bytes\tschema {}", report.path.display(), report.bytes, report.schema_version);
    for total in totals? {
        let _ = writeln!(
            out,
            "currency\t{}\tposted_minor {}\taccounts {}",
            total.currency, total.posted_minor, total.accounts
        );
    }
    Ok(())
}

/// Prints the stuck external payments of the configured database, one a line.
async fn list_stuck(config: &Config, limit: u32) -> Result<(), String> {
    if config.storage.kind == StorageKind::Sqlite {
        let db = config.data_path(&config.storage.sqlite_file);
        if !db.exists() {
            return Err(format!("no database at {}", db.display()));
        }
    }
    let stores = Stores::open(config).await?;
    let stuck = stores.services.stuck(limit.clamp(1, bp_core::store::PAGE_LEN_MAX)).await.map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "service\tkind\tstatus\tamount\tcurrency\tstuck_since\trequested_at\tchecks\tcustomer\thold");
    for r in &stuck {
        let stuck_since = r.stuck_since.map(|t| t.to_rfc3339()).unwrap_or_default();
        let hold = r.transfers.first().map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(
            out,
            "{}\t{:?}\t{:?}\t{}\t{}\t{stuck_since}\t{}\t{}\t{}\t{hold}",
            r.id,
            r.kind,
            r.status,
            r.amount.to_decimal_string(),
            r.amount.currency(),
            r.created_at.to_rfc3339(),
            r.checks,
            r.customer_id,
        );
    }
    let _ = writeln!(std::io::stderr(), "{} stuck external payment(s)", stuck.len());
    Ok(())
}

async fn create_customer(
    config: Config,
    username: &str,
    given_name: &str,
    family_name: &str,
    currencies: &[String],
) -> Result<(), String> {
    let username = Username::parse(username).map_err(|e| e.to_string())?;
    let currencies: Vec<Currency> =
        currencies.iter().map(|c| c.trim().parse::<Currency>().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    if std::io::stdin().is_terminal() {
        eprint!("password for {}: ", username.as_str());
    }
    let mut password = String::new();
    std::io::stdin().lock().read_line(&mut password).map_err(|e| e.to_string())?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < 12 {
        return Err("the password must have at least 12 characters".to_owned());
    }
    let mut config = config;
    // The command must not serve: bind an ephemeral loopback port only to reuse `start`.
    config.server.listen = "127.0.0.1:0".parse().map_err(|_| "address".to_owned())?;
    let started = start(config, false).await?;
    let state = started.state.clone();
    if state.ledger.customer_by_username(&username).await.map_err(|e| e.to_string())?.is_some() {
        return Err("this username is taken".to_owned());
    }
    let id = CustomerId::new_v7();
    let request = NewCustomer::person(id, username.clone(), given_name, family_name, KycStatus::Verified);
    state.ledger.open_customer(request).await.map_err(|e| e.to_string())?;
    for currency in currencies {
        let account = NewAccount {
            id: AccountId::new_v7(),
            customer_id: id,
            kind: AccountKind::Current,
            currency,
            overdraft_limit_minor: 0,
        };
        state.ledger.open_account(account).await.map_err(|e| e.to_string())?;
    }
    let enrolled = demo::enrol(&state, id, username.as_str(), &password).await?;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "customer {} opened; TOTP secret (shown once): {}", username.as_str(), enrolled.totp_base32);
    let _ = writeln!(err, "  {}", enrolled.totp_uri);
    started.running.stop().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_asks_the_listen_address_and_a_wildcard_on_loopback() {
        let mut config = Config::default();
        for (listen, probe, tls, url) in [
            ("127.0.0.1:8080", Probe::Live, false, "http://127.0.0.1:8080/livez"),
            ("0.0.0.0:8443", Probe::Ready, true, "https://127.0.0.1:8443/readyz"),
            ("[::]:8443", Probe::Live, true, "https://[::1]:8443/livez"),
            ("10.1.2.3:9000", Probe::Ready, false, "http://10.1.2.3:9000/readyz"),
        ] {
            config.server.listen = listen.parse().expect("address");
            config.server.tls_cert_path = tls.then(|| PathBuf::from("cert.pem"));
            config.server.tls_key_path = tls.then(|| PathBuf::from("key.pem"));
            assert_eq!(probe_url(&config, probe), url, "{listen}");
        }
    }
}
