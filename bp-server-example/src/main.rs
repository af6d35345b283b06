//! The `bp-server-example` command: `serve` (the default), `create-customer`, `external stuck`,
//! `print-config`, `totp`.

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
        command => run(config, command),
    }
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
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stdout);
    if config.log.json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
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
