//! Configuration: defaults, then a TOML file, then `BP_`-prefixed environment variables
//! (`BP_SERVER__LISTEN=0.0.0.0:8443` sets `server.listen`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bp_core::sca::{LockoutRules, ScaRules};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Whether the server runs for a developer's laptop or for real customers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Demo data on first start; refuses a non-loopback address without TLS.
    Development,
    /// No demo data; a configured signing key is required.
    Production,
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Development or production.
    pub mode: Mode,
    /// Seed the demo customers on the first start (development mode only).
    pub demo: bool,
    /// HTTP listener.
    pub server: ServerConfig,
    /// Where the data lives.
    pub storage: StorageConfig,
    /// The authorization server and token checks.
    pub auth: AuthConfig,
    /// Strong customer authentication and its exemptions.
    pub sca: ScaRules,
    /// Lockout after failed authentication.
    pub lockout: LockoutRules,
    /// Logs.
    pub log: LogConfig,
    /// The event bus between the outbox relay and the event streams.
    #[serde(default)]
    pub bus: BusConfig,
    /// The outside parties (FR6): the payment rails.
    #[serde(default)]
    pub external: ExternalConfig,
}

/// The outside parties the bank pays through.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalConfig {
    /// The SEPA credit-transfer rail.
    pub sepa: SepaConfig,
    /// Payments abroad: the FX provider and the correspondent rail (with the SEPA rail's
    /// timeouts, retries, breaker and webhook secrets). In development mode with
    /// `sepa.simulate`, the simulator answers both when these are not set.
    pub abroad: AbroadConfig,
    /// Loans: the loan provider (with the SEPA rail's timeouts, retries and breaker). In
    /// development mode with `sepa.simulate`, the simulator answers when this is not set.
    pub loans: LoansConfig,
}

/// Where loan applications are decided (`[external.loans]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoansConfig {
    /// The loan provider's base URL.
    pub base_url: Option<String>,
}

impl LoansConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.base_url {
            let parsed = url::Url::parse(url).map_err(|e| format!("external.loans.base_url: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("external.loans.base_url must be an http or https URL".to_owned());
            }
        }
        Ok(())
    }
}

/// Where payments abroad go (`[external.abroad]`): both or neither.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbroadConfig {
    /// The FX provider's base URL.
    pub fx_base_url: Option<String>,
    /// The correspondent rail's base URL.
    pub correspondent_base_url: Option<String>,
}

impl AbroadConfig {
    fn validate(&self) -> Result<(), String> {
        for (name, url) in
            [("fx_base_url", &self.fx_base_url), ("correspondent_base_url", &self.correspondent_base_url)]
        {
            if let Some(url) = url {
                let parsed = url::Url::parse(url).map_err(|e| format!("external.abroad.{name}: {e}"))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(format!("external.abroad.{name} must be an http or https URL"));
                }
            }
        }
        if self.fx_base_url.is_some() != self.correspondent_base_url.is_some() {
            return Err("external.abroad: set both fx_base_url and correspondent_base_url, or neither".to_owned());
        }
        Ok(())
    }
}

/// A secret from the configuration: its `Debug` and its serialisation (`print-config`) never
/// show it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The shown form of every secret.
    pub const REDACTED: &'static str = "(redacted)";

    /// A secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Its bytes, for the one place that uses it.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(Self::REDACTED)
    }
}

/// The SEPA credit-transfer rail: where it is, how patiently it is called, how its webhooks are
/// authenticated, and how this bank's accounts are written as IBANs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SepaConfig {
    /// The rail's base URL (`https://rail.example/v1/`). Unset: in development mode with
    /// `simulate`, the simulator of the outside parties on a loopback port of its own; in
    /// production, external payments are off.
    pub base_url: Option<String>,
    /// In development mode without `base_url`, run the simulator (never in production).
    pub simulate: bool,
    /// The secrets the rail signs its webhooks with, each at least 32 bytes, 1 to 4 (new and
    /// old during a rotation). Required with `base_url`; the simulator makes its own when empty.
    pub webhook_secrets: Vec<Secret>,
    /// Webhooks signed further from our clock than this are refused (seconds).
    pub webhook_tolerance_s: u64,
    /// Longest wait for a connection to the rail (milliseconds).
    pub connect_timeout_ms: u64,
    /// Longest wait for a whole call (milliseconds).
    pub request_timeout_ms: u64,
    /// Attempts per call, the first included (1 to 10).
    pub attempts_max: u32,
    /// First delay between attempts of one call (milliseconds).
    pub retry_first_ms: u64,
    /// Longest delay between attempts of one call (milliseconds).
    pub retry_max_ms: u64,
    /// Consecutive failed attempts that open the circuit breaker.
    pub breaker_failures_max: u32,
    /// How long the open circuit waits before one probe (milliseconds).
    pub breaker_cool_down_ms: u64,
    /// First delay between the worker's checks of one payment (milliseconds).
    pub check_first_ms: u64,
    /// Longest delay between the worker's checks of one payment (milliseconds).
    pub check_max_ms: u64,
    /// An undecided payment this long after it was requested is flagged stuck (seconds).
    pub stuck_after_s: u64,
    /// Payments the worker calls the rail about at once.
    pub worker_concurrency_max: usize,
    /// The country of this bank's IBANs (two letters).
    pub iban_country: String,
    /// The bank code in this bank's IBANs (of the length the country needs).
    pub iban_bank_code: String,
    /// This bank's BIC (the debtor agent of its payments).
    pub bic: String,
    /// The simulator settles an accepted order this long after it received it (milliseconds).
    pub simulator_settle_after_ms: u64,
}

impl Default for SepaConfig {
    fn default() -> Self {
        Self {
            base_url: None,
            simulate: true,
            webhook_secrets: Vec::new(),
            webhook_tolerance_s: 300,
            connect_timeout_ms: 2_000,
            request_timeout_ms: 10_000,
            attempts_max: 3,
            retry_first_ms: 200,
            retry_max_ms: 2_000,
            breaker_failures_max: 5,
            breaker_cool_down_ms: 30_000,
            check_first_ms: 1_000,
            check_max_ms: 600_000,
            stuck_after_s: 3_600,
            worker_concurrency_max: 8,
            // Spain: a bank code of 8 digits, then the 12 of the account number.
            iban_country: "ES".to_owned(),
            iban_bank_code: "99990001".to_owned(),
            bic: "BPEXESMMXXX".to_owned(),
            simulator_settle_after_ms: 5_000,
        }
    }
}

impl SepaConfig {
    /// Checks the rules no type expresses.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.base_url {
            let parsed = url::Url::parse(url).map_err(|e| format!("external.sepa.base_url: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err("external.sepa.base_url must be an http or https URL".to_owned());
            }
            if self.webhook_secrets.is_empty() {
                return Err("external.sepa.webhook_secrets is required with external.sepa.base_url".to_owned());
            }
        }
        if self.webhook_secrets.len() > bp_external::webhook::SECRETS_MAX
            || self.webhook_secrets.iter().any(|s| s.expose().len() < bp_external::webhook::SECRET_BYTES_MIN)
        {
            return Err(format!(
                "external.sepa.webhook_secrets: at most {} secrets of at least {} bytes each",
                bp_external::webhook::SECRETS_MAX,
                bp_external::webhook::SECRET_BYTES_MIN
            ));
        }
        if self.webhook_tolerance_s == 0 || self.stuck_after_s == 0 || self.worker_concurrency_max == 0 {
            return Err("external.sepa.webhook_tolerance_s, stuck_after_s and worker_concurrency_max must be positive"
                .to_owned());
        }
        self.check_back_off().validate().map_err(|e| format!("external.sepa.check_*: {e}"))?;
        bp_core::external::BankIbans::new(&self.iban_country, &self.iban_bank_code)
            .map_err(|e| format!("external.sepa.iban_country / iban_bank_code: {e}"))?;
        bp_core::external::Bic::parse(&self.bic).map_err(|e| format!("external.sepa.bic: {e}"))?;
        Ok(())
    }

    /// The back-off between the worker's checks of a payment.
    pub fn check_back_off(&self) -> bp_core::external::BackOff {
        bp_core::external::BackOff { first_ms: self.check_first_ms, max_ms: self.check_max_ms }
    }
}

/// Which event bus carries committed events to the event streams.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `in_process` (one server; the default) or `kafka` (every replica gets every event).
    pub kind: BusKind,
    /// The brokers and topic, for `kind = "kafka"` (`BP_BUS__KAFKA__BOOTSTRAP_SERVERS`, …).
    pub kafka: bp_notify::kafka::KafkaConfig,
    /// Events of its customer an event stream may fall behind by before it is disconnected as
    /// too slow (it then resumes from its cursor): the ring of each customer with open streams,
    /// shared by that customer's streams (about 40 bytes an event).
    pub stream_buffer_events: usize,
    /// Seconds between the comments an idle event stream sends, so that proxies keep it open.
    pub stream_heartbeat_s: u64,
}

impl BusConfig {
    /// The name under which the relay records how far it has published: one per destination,
    /// so that a store moved to another bus (or topic) publishes its whole outbox there.
    pub fn relay_cursor_name(&self) -> String {
        match self.kind {
            BusKind::InProcess => "outbox-relay".to_owned(),
            BusKind::Kafka => format!("kafka.{}", self.kafka.topic.to_ascii_lowercase()),
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            kind: BusKind::default(),
            kafka: bp_notify::kafka::KafkaConfig::default(),
            stream_buffer_events: 256,
            stream_heartbeat_s: 15,
        }
    }
}

/// The kinds of event bus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    /// A broadcast channel inside this process.
    #[default]
    InProcess,
    /// Apache Kafka.
    Kafka,
}

/// HTTP listener settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address and port to bind.
    pub listen: SocketAddr,
    /// The URL clients reach the server at: the OAuth2 issuer. Defaults to `http(s)://listen`.
    pub public_url: Option<String>,
    /// PEM certificate chain; with `tls_key_path`, serves HTTPS.
    pub tls_cert_path: Option<PathBuf>,
    /// PEM private key.
    pub tls_key_path: Option<PathBuf>,
    /// Requests taking longer are answered 503.
    pub request_timeout_ms: u64,
    /// Larger request bodies are refused with 413.
    pub body_bytes_max: usize,
    /// Requests in flight at once, beyond which requests wait.
    pub concurrency_max: usize,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// How long a connection may take none of the bytes of an answer before it is closed (a
    /// client that stopped reading); event streams on connections of their own end a whole ring
    /// behind instead.
    pub send_timeout_ms: u64,
    /// Reverse proxies (addresses or networks, e.g. `10.0.0.0/8`) whose `Forwarded` or
    /// `X-Forwarded-For` names the client; from anyone else those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where `/metrics` is served, on a listener of its own (for the monitoring network only).
    /// Unset, it is served on the main listener in development mode (which listens on loopback)
    /// and not at all in production mode.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a lease on a background job lasts (the outbox relay, the hold sweeper, the
    /// worker of external payments and loans: one server process runs each at a time). A
    /// holder renews it every third of that; when the holder dies, another process takes the
    /// job over within about this long (`bp_core::lease`). 1,000 to 600,000.
    pub job_lease_ms: u32,
}

/// Storage settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Where the ledger, the service records and the security records live: `sqlite` (the
    /// embedded default) or `mongodb` (several servers on one database).
    #[serde(default)]
    pub kind: StorageKind,
    /// Folder for the SQLite database, the signing key and the demo credentials (with
    /// `kind = "mongodb"` too: the key and the credentials are files).
    pub data_dir: PathBuf,
    /// The SQLite database file; relative paths are inside `data_dir`.
    pub sqlite_file: PathBuf,
    /// The MongoDB deployment, for `kind = "mongodb"` (`BP_STORAGE__MONGODB__URI`, …).
    #[serde(default)]
    pub mongodb: MongoSettings,
}

/// The kinds of store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// The embedded SQLite store, one file in `data_dir`.
    #[default]
    Sqlite,
    /// The MongoDB store (bp-storage's feature `mongodb`), on a MongoDB-protocol server.
    Mongodb,
}

/// Where the MongoDB store is (`[storage.mongodb]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MongoSettings {
    /// The connection string, `mongodb://user:password@host:27017,host2:27017/?replicaSet=rs`
    /// (no `mongodb+srv://`). Its password is never printed nor logged. Required with
    /// `kind = "mongodb"`.
    pub uri: Option<MongoUri>,
    /// The database the store's collections are in; one database is one ledger.
    pub database: String,
    /// The bound of every operation on the server: server selection, connecting, the majority
    /// write concern's `wtimeout` (milliseconds). An unreachable server at start fails the
    /// start after this long.
    pub timeout_ms: u64,
}

impl Default for MongoSettings {
    fn default() -> Self {
        Self { uri: None, database: "bp".to_owned(), timeout_ms: 10_000 }
    }
}

impl MongoSettings {
    /// The longest database name MongoDB takes (bytes).
    pub const DATABASE_BYTES_MAX: usize = 63;

    fn validate(&self) -> Result<(), String> {
        let Some(uri) = &self.uri else {
            return Err("storage.mongodb.uri is required with storage.kind = \"mongodb\"".to_owned());
        };
        if !uri.0.starts_with("mongodb://") {
            return Err(format!("storage.mongodb.uri must start with mongodb:// (it is {uri})"));
        }
        let name = &self.database;
        if name.is_empty()
            || name.len() > Self::DATABASE_BYTES_MAX
            || name.chars().any(|c| matches!(c, '/' | '\\' | '.' | ' ' | '"' | '$' | '\0'))
        {
            return Err(format!(
                "storage.mongodb.database must be 1 to {} bytes without / \\ . space \" $",
                Self::DATABASE_BYTES_MAX
            ));
        }
        if self.timeout_ms == 0 {
            return Err("storage.mongodb.timeout_ms must be positive".to_owned());
        }
        Ok(())
    }
}

/// A MongoDB connection string from the configuration: its `Debug`, `Display` and serialisation
/// (`print-config`, logs, errors) show it with the password and every option naming a password
/// or a token redacted.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct MongoUri(String);

impl MongoUri {
    /// A connection string.
    pub fn new(uri: impl Into<String>) -> Self {
        Self(uri.into())
    }

    /// The whole string, for the one place that connects with it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the password (as written in the string, and decoded)
    /// replaced by [`Secret::REDACTED`]: for messages that might quote it.
    pub fn scrub(&self, text: &str) -> String {
        let (_, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let before_options = rest.split_once('?').map_or(rest, |(b, _)| b);
        let password = before_options.rsplit_once('@').and_then(|(user_info, _)| user_info.split_once(':'));
        let Some((_, password)) = password.filter(|(_, p)| !p.is_empty()) else { return text.to_owned() };
        let decoded = percent_decoded(password);
        let mut out = text.replace(password, Secret::REDACTED);
        if !decoded.is_empty() {
            out = out.replace(&decoded, Secret::REDACTED);
        }
        out
    }

    /// The string with its secrets replaced by [`Secret::REDACTED`]: the password between the
    /// user's `:` and the last `@` before the options (as the driver splits it), and the values
    /// of options whose names hold `password` or `token`.
    pub fn redacted(&self) -> String {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let (before_options, options) = match rest.split_once('?') {
            Some((b, o)) => (b, Some(o)),
            None => (rest, None),
        };
        let mut out = if scheme.is_empty() { String::new() } else { format!("{scheme}://") };
        match before_options.rsplit_once('@') {
            Some((user_info, hosts)) => {
                match user_info.split_once(':') {
                    Some((user, _)) => out.push_str(&format!("{user}:{}", Secret::REDACTED)),
                    None => out.push_str(user_info),
                }
                out.push('@');
                out.push_str(hosts);
            }
            None => out.push_str(before_options),
        }
        if let Some(options) = options {
            let shown: Vec<String> = options
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if ["password", "token"].iter().any(|s| name.to_ascii_lowercase().contains(s)) => {
                        format!("{name}={}", Secret::REDACTED)
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            out.push('?');
            out.push_str(&shown.join("&"));
        }
        out
    }
}

/// `%XX` sequences decoded (others kept as they are); invalid UTF-8 becomes U+FFFD.
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl std::fmt::Debug for MongoUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for MongoUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for MongoUri {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// A registered OAuth2 client (public: PKCE, no secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// `client_id`.
    pub id: String,
    /// Name shown on the login page.
    pub name: String,
    /// Redirect URIs, matched exactly.
    pub redirect_uris: Vec<String>,
    /// Whether its tokens must be bound to its key (DPoP, the default) or may be bearer tokens.
    #[serde(default)]
    pub token_binding: TokenBinding,
}

/// How a client's tokens are bound to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenBinding {
    /// Every token request carries a DPoP proof (RFC 9449), and the tokens are bound to its key:
    /// a stolen token is useless without the key.
    #[default]
    Dpop,
    /// Token requests may carry a DPoP proof (and its tokens are bound to its key then); without
    /// one, the access token is a bearer token, which whoever holds it can use. For tools that
    /// cannot make proofs (curl, schemathesis).
    Bearer,
}

/// An external OpenID provider whose access tokens the API accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalIssuerConfig {
    /// Its `iss`.
    pub issuer: String,
    /// Where its JWKS is served.
    pub jwks_uri: String,
    /// The `aud` its tokens must carry for this API.
    pub audience: String,
    /// The claim holding the bp username of the customer.
    pub username_claim: String,
    /// How long a fetched JWKS is trusted before it is fetched again.
    pub jwks_refresh_s: u64,
    /// The JOSE `typ` values its access tokens may carry, compared without case and without an
    /// `application/` prefix: `["at+jwt"]` (RFC 9068) unless set; some providers type theirs
    /// `JWT`. A token of another type (an id token, say) is refused.
    #[serde(default = "ExternalIssuerConfig::default_token_types")]
    pub token_types: Vec<String>,
}

impl ExternalIssuerConfig {
    fn default_token_types() -> Vec<String> {
        vec!["at+jwt".to_owned()]
    }
}

/// Authorization-server settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// PKCS#8 PEM file of the Ed25519 token-signing key; relative paths are inside `data_dir`.
    /// Generated on first start in development mode.
    pub signing_key_file: PathBuf,
    /// Further keys whose tokens are accepted and which the JWKS lists, PEM files (a public key,
    /// or a PKCS#8 private key of which only the public half is used); relative paths are inside
    /// `data_dir`. A rotation with overlap: first the next key here on every replica, then it
    /// signs and the former one is here, until the former one's tokens have expired
    /// (docs/operations.md, "Key rotation").
    #[serde(default)]
    pub accepted_key_files: Vec<PathBuf>,
    /// Access-token lifetime (at most 300).
    pub access_token_ttl_s: u64,
    /// Refresh-token lifetime (of each token; each use rotates it).
    pub refresh_token_ttl_s: u64,
    /// A session ends this long after sign-in, however often it is refreshed.
    pub session_ttl_s: u64,
    /// A session ends this long after its customer's last activity (PSD2 RTS art. 4(3)(d): five
    /// minutes): an API request the customer makes. Refreshing a token, the event stream and its
    /// tickets, and requests marked `BP-Activity: background` are not activity.
    pub idle_timeout_s: u64,
    /// Authorization-code lifetime (at most 60).
    pub code_ttl_s: u64,
    /// How long the login page may take from first view to second factor.
    pub login_ttl_s: u64,
    /// The `aud` of access tokens this server issues.
    pub audience: String,
    /// Registered clients.
    pub clients: Vec<ClientConfig>,
    /// Accept access tokens of this external provider as well.
    pub external: Option<ExternalIssuerConfig>,
    /// Password-hash cost: Argon2id memory in KiB (OWASP: 19456 with 2 passes, or 12288 with 3, …).
    pub argon2_memory_kib: u32,
    /// Argon2id passes.
    pub argon2_iterations: u32,
    /// Sign-in attempts per client source (an IPv4 address, an IPv6 /64) per minute.
    pub login_attempts_per_minute: u32,
    /// Password attempts per username per minute, from all sources together.
    pub login_attempts_per_username_per_minute: u32,
    /// Require DPoP proofs to carry a nonce of the server's (RFC 9449 §8): a proof can then not
    /// be made ahead of time, at the price of a retry when a client's nonce ages out (every one
    /// to two minutes).
    pub dpop_nonce: bool,
}

/// Log settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `tracing` filter directive, e.g. `info` or `bp_server_example=debug,info`.
    pub filter: String,
    /// JSON lines (default) or human-readable text.
    pub json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Development,
            demo: true,
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                public_url: None,
                tls_cert_path: None,
                tls_key_path: None,
                request_timeout_ms: 10_000,
                body_bytes_max: 64 * 1024,
                concurrency_max: 1024,
                shutdown_grace_ms: 10_000,
                send_timeout_ms: 60_000,
                trusted_proxies: Vec::new(),
                metrics_listen: None,
                job_lease_ms: 5_000,
            },
            storage: StorageConfig {
                kind: StorageKind::Sqlite,
                data_dir: PathBuf::from("./data"),
                sqlite_file: PathBuf::from("bp.sqlite"),
                mongodb: MongoSettings::default(),
            },
            auth: AuthConfig {
                signing_key_file: PathBuf::from("signing-key.pem"),
                accepted_key_files: Vec::new(),
                access_token_ttl_s: 300,
                refresh_token_ttl_s: 8 * 3600,
                session_ttl_s: 24 * 3600,
                idle_timeout_s: 300,
                code_ttl_s: 60,
                login_ttl_s: 600,
                audience: "bp-api".to_owned(),
                clients: vec![
                    ClientConfig {
                        id: "bp-web".to_owned(),
                        name: "bp web banking".to_owned(),
                        // localhost: the demo with passkeys (`server.public_url = "http://localhost:8080"`).
                        redirect_uris: vec![
                            "http://127.0.0.1:8080/callback".to_owned(),
                            "http://localhost:8080/callback".to_owned(),
                        ],
                        token_binding: TokenBinding::Dpop,
                    },
                    ClientConfig {
                        id: "bp-mobile".to_owned(),
                        name: "bp mobile banking".to_owned(),
                        redirect_uris: vec!["bp.mobile://oauth/callback".to_owned()],
                        token_binding: TokenBinding::Dpop,
                    },
                    // curl and scripts (scripts/demo-login.sh): a loopback redirect on any port,
                    // bearer tokens. A deployment for real customers leaves it out.
                    ClientConfig {
                        id: "bp-cli".to_owned(),
                        name: "bp command line (development)".to_owned(),
                        redirect_uris: vec!["http://127.0.0.1/callback".to_owned()],
                        token_binding: TokenBinding::Bearer,
                    },
                ],
                external: None,
                argon2_memory_kib: 19 * 1024,
                argon2_iterations: 2,
                login_attempts_per_minute: 30,
                login_attempts_per_username_per_minute: 10,
                dpop_nonce: false,
            },
            sca: ScaRules::default(),
            lockout: LockoutRules::default(),
            log: LogConfig { filter: "info".to_owned(), json: true },
            bus: BusConfig::default(),
            external: ExternalConfig::default(),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or variable does not parse.
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// Values parse but do not make sense together.
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (when given; it must exist), then `BP_…` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.is_file() {
                return Err(ConfigError::Invalid(format!("no configuration file at {}", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `BP_MODE`, `BP_DEMO` and `BP_SECTION__KEY` are configuration; other `BP_…`
        // variables belong to tools and tests (`BP_CONFIG`, `BP_CONFORMANCE_SEED`, …).
        let env = Env::prefixed("BP_").filter(|k| k == "mode" || k == "demo" || k.as_str().contains("__")).split("__");
        let config: Config = figment.merge(env).extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules no type expresses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.auth.access_token_ttl_s == 0 || self.auth.access_token_ttl_s > 300 {
            return bad("auth.access_token_ttl_s must be 1..=300");
        }
        if self.auth.code_ttl_s == 0 || self.auth.code_ttl_s > 60 {
            return bad("auth.code_ttl_s must be 1..=60");
        }
        if self.auth.refresh_token_ttl_s == 0 || self.auth.session_ttl_s < self.auth.refresh_token_ttl_s {
            return bad("auth.refresh_token_ttl_s must be positive and at most auth.session_ttl_s");
        }
        if self.auth.idle_timeout_s == 0 {
            return bad("auth.idle_timeout_s must be positive");
        }
        if self.auth.argon2_memory_kib < 8 * 1024 || self.auth.argon2_iterations == 0 {
            return bad("auth.argon2_memory_kib must be at least 8192 and auth.argon2_iterations positive");
        }
        if self.auth.clients.iter().any(|c| c.redirect_uris.is_empty()) {
            return bad("every client needs at least one redirect URI");
        }
        self.sca.validate().map_err(|e| ConfigError::Invalid(e.to_owned()))?;
        self.lockout.validate().map_err(|e| ConfigError::Invalid(e.to_owned()))?;
        if self.server.tls_cert_path.is_some() != self.server.tls_key_path.is_some() {
            return bad("server.tls_cert_path and server.tls_key_path go together");
        }
        if self.server.body_bytes_max == 0
            || self.server.request_timeout_ms == 0
            || self.server.concurrency_max == 0
            || self.server.send_timeout_ms == 0
        {
            return bad(
                "server.body_bytes_max, request_timeout_ms, concurrency_max and send_timeout_ms must be positive",
            );
        }
        if !(1_000..=bp_core::lease::LEASE_MS_MAX).contains(&self.server.job_lease_ms) {
            return bad("server.job_lease_ms is 1000 to 600000");
        }
        if self.bus.stream_buffer_events == 0 || self.bus.stream_heartbeat_s == 0 {
            return bad("bus.stream_buffer_events and bus.stream_heartbeat_s must be positive");
        }
        if self.bus.kind == BusKind::Kafka {
            let k = &self.bus.kafka;
            if k.bootstrap_servers.trim().is_empty() || k.topic.trim().is_empty() {
                return bad("bus.kafka.bootstrap_servers and bus.kafka.topic are required with bus.kind = \"kafka\"");
            }
            if bp_core::store::check_cursor_name(&self.bus.relay_cursor_name()).is_err() {
                return bad("bus.kafka.topic must be 1 to 58 characters of a-z, A-Z, 0-9, '.', '_' or '-'");
            }
            if k.partitions <= 0 || k.replication_factor <= 0 || k.message_timeout_ms == 0 {
                return bad("bus.kafka.partitions, replication_factor and message_timeout_ms must be positive");
            }
            if !cfg!(feature = "kafka") {
                return bad("bus.kind = \"kafka\" needs a server built with the `kafka` feature (the default)");
            }
        }
        if self.storage.kind == StorageKind::Mongodb {
            self.storage.mongodb.validate().map_err(ConfigError::Invalid)?;
            if !cfg!(feature = "mongodb") {
                return bad("storage.kind = \"mongodb\" needs a server built with the `mongodb` feature (the default)");
            }
        }
        self.external.sepa.validate().map_err(ConfigError::Invalid)?;
        self.external.abroad.validate().map_err(ConfigError::Invalid)?;
        self.external.loans.validate().map_err(ConfigError::Invalid)?;
        if self.mode == Mode::Development && !self.tls() && !self.server.listen.ip().is_loopback() {
            return bad("development mode serves plain HTTP on loopback addresses only: configure TLS \
                 (server.tls_cert_path, server.tls_key_path) or listen on 127.0.0.1");
        }
        if self.mode == Mode::Production && !self.tls() && !self.server.listen.ip().is_loopback() {
            return bad("production mode needs TLS on a non-loopback address (or a TLS-terminating proxy on loopback)");
        }
        Ok(())
    }

    /// Whether HTTPS is configured.
    pub fn tls(&self) -> bool {
        self.server.tls_cert_path.is_some()
    }

    /// Whether clients reach the server over HTTPS — this process's TLS, or a TLS-terminating
    /// proxy in front of it (the public URL's scheme): the sign-in cookie is `Secure` and HSTS
    /// is sent then.
    pub fn public_https(&self) -> bool {
        self.issuer().starts_with("https://")
    }

    /// Whether `/metrics` is served on the main listener: only in development mode without a
    /// listener of its own (`server.metrics_listen`).
    pub fn metrics_on_main_listener(&self) -> bool {
        self.mode == Mode::Development && self.server.metrics_listen.is_none()
    }

    /// The issuer URL (no trailing slash).
    pub fn issuer(&self) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("{}://{}", if self.tls() { "https" } else { "http" }, self.server.listen),
        }
    }

    /// A path inside the data folder unless absolute.
    pub fn data_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_owned() } else { self.storage.data_dir.join(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_and_metrics_follow_the_public_url_and_the_mode() {
        let mut c = Config::default();
        assert!(!c.public_https() && c.metrics_on_main_listener(), "development on loopback");
        c.server.public_url = Some("https://bank.example".to_owned());
        assert!(c.public_https(), "TLS terminated by a proxy in front: still HTTPS for the clients");
        c.server.metrics_listen = Some("127.0.0.1:9464".parse().expect("address"));
        assert!(!c.metrics_on_main_listener(), "a listener of its own");
        c.server.metrics_listen = None;
        c.mode = Mode::Production;
        assert!(!c.metrics_on_main_listener(), "never public in production");
    }

    #[test]
    fn defaults_are_valid_and_loopback() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert!(c.server.listen.ip().is_loopback());
        assert_eq!(c.issuer(), "http://127.0.0.1:8080");
    }

    #[test]
    fn development_mode_refuses_a_public_address_without_tls() {
        let mut c = Config::default();
        c.server.listen = "0.0.0.0:8080".parse().expect("address");
        let err = c.validate().expect_err("must refuse");
        assert!(err.to_string().contains("loopback"), "{err}");
        c.server.tls_cert_path = Some("cert.pem".into());
        c.server.tls_key_path = Some("key.pem".into());
        c.validate().expect("TLS makes it acceptable");
    }

    #[test]
    fn webhook_secrets_are_long_and_never_printed() {
        let mut c = Config::default();
        c.external.sepa.base_url = Some("https://rail.example/v1/".to_owned());
        assert!(c.validate().is_err(), "a rail without webhook secrets");
        c.external.sepa.webhook_secrets = vec![Secret::new("short")];
        assert!(c.validate().is_err(), "a secret under 32 bytes");
        let secret = "a-webhook-secret-of-at-least-32-bytes";
        c.external.sepa.webhook_secrets = vec![Secret::new(secret)];
        c.validate().expect("valid");
        let printed = toml::to_string_pretty(&c).expect("toml");
        assert!(!printed.contains(secret) && printed.contains(Secret::REDACTED), "{printed}");
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    // figment's Jail fixes the closure's error type; it is figment's, and large.
    #[allow(clippy::result_large_err)]
    fn the_mongodb_store_is_chosen_by_configuration_and_its_password_never_shown() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BP_STORAGE__KIND", "mongodb");
            let err = Config::load(None).expect_err("no URI");
            assert!(err.to_string().contains("storage.mongodb.uri is required"), "{err}");
            jail.set_env("BP_STORAGE__MONGODB__URI", "mongodb://bank:pa%3Ass@db1:27017,db2/?replicaSet=rs");
            jail.set_env("BP_STORAGE__MONGODB__DATABASE", "ledger");
            match Config::load(None) {
                Ok(c) if cfg!(feature = "mongodb") => {
                    assert_eq!(c.storage.kind, StorageKind::Mongodb);
                    assert_eq!(c.storage.mongodb.database, "ledger");
                    assert_eq!(c.storage.mongodb.timeout_ms, 10_000, "the default");
                    let uri = c.storage.mongodb.uri.as_ref().expect("uri");
                    assert_eq!(uri.expose(), "mongodb://bank:pa%3Ass@db1:27017,db2/?replicaSet=rs");
                    let printed = toml::to_string_pretty(&c).expect("toml");
                    for shown in [printed, format!("{c:?}"), uri.to_string()] {
                        assert!(!shown.contains("pa%3Ass"), "{shown}");
                        assert!(shown.contains("mongodb://bank:(redacted)@db1:27017,db2/?replicaSet=rs"), "{shown}");
                    }
                }
                Err(e) if !cfg!(feature = "mongodb") => {
                    assert!(e.to_string().contains("needs a server built with the `mongodb` feature"), "{e}");
                }
                other => panic!("feature mongodb: {}; loaded: {other:?}", cfg!(feature = "mongodb")),
            }
            jail.set_env("BP_STORAGE__MONGODB__DATABASE", "a.b");
            assert!(Config::load(None).expect_err("a dot").to_string().contains("storage.mongodb.database"));
            jail.set_env("BP_STORAGE__KIND", "sqlite");
            Config::load(None).expect("the MongoDB settings are not checked for SQLite");
            Ok(())
        });
    }

    #[test]
    fn a_mongodb_uri_shows_no_password_nor_secret_option() {
        let uri = MongoUri::new("mongodb://u:p@ss:w0rd@h:1/db?authSource=admin&proxyPassword=x&tlsCAFile=ca.pem");
        assert_eq!(
            uri.redacted(),
            "mongodb://u:(redacted)@h:1/db?authSource=admin&proxyPassword=(redacted)&tlsCAFile=ca.pem",
            "the password up to the last @, as the driver reads it"
        );
        assert_eq!(MongoUri::new("mongodb://h1,h2/?replicaSet=rs").redacted(), "mongodb://h1,h2/?replicaSet=rs");
        assert_eq!(MongoUri::new("mongodb://user@h").redacted(), "mongodb://user@h", "no password");
        let encoded = MongoUri::new("mongodb://u:s%40cret@h/");
        assert_eq!(
            encoded.scrub("bad s%40cret, decoded s@cret"),
            "bad (redacted), decoded (redacted)",
            "as written and as decoded"
        );
        assert_eq!(MongoUri::new("mongodb://h/").scrub("no password"), "no password");
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        let mut c = Config::default();
        c.auth.access_token_ttl_s = 301;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.auth.code_ttl_s = 61;
        assert!(c.validate().is_err());
    }

    #[test]
    // figment's Jail fixes the closure's error type; it is figment's, and large.
    #[allow(clippy::result_large_err)]
    fn file_and_environment_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bp.toml");
        std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:9999\"\n[sca]\nlow_value_count_max = 3\n")
            .expect("write");
        figment::Jail::expect_with(|jail| {
            jail.set_env("BP_SCA__LOW_VALUE_AMOUNT_MAX_UNITS", "20");
            jail.set_env("BP_SOME_TOOL_SETTING", "ignored");
            jail.set_env("BP_BUS__KIND", "kafka");
            jail.set_env("BP_BUS__KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092");
            let c = Config::load(Some(&file)).expect("loads");
            assert_eq!(c.server.listen.port(), 9999);
            assert_eq!(c.sca.low_value_count_max, 3);
            assert_eq!(c.sca.low_value_amount_max_units, 20);
            assert_eq!(c.bus.kind, BusKind::Kafka);
            assert_eq!(c.bus.kafka.bootstrap_servers, "127.0.0.1:19092");
            assert_eq!(c.bus.kafka.topic, "bp.events", "the rest keeps its defaults");
            Ok(())
        });
        let err = Config::load(Some(&dir.path().join("missing.toml"))).expect_err("missing file");
        assert!(err.to_string().contains("no configuration file"));
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn euro_rates_are_exact_decimals_from_the_file_or_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bp.toml");
        std::fs::write(&file, "[sca.eur_rates]\nJPY = \"160\"\nCHF = \"0.9412\"\n").expect("write");
        figment::Jail::expect_with(|jail| {
            jail.set_env("BP_SCA__EUR_RATES__GBP", "\"0.85\"");
            let c = Config::load(Some(&file)).expect("loads");
            let rate = |code: &str| c.sca.eur_rates.get(&code.parse().expect("currency")).map(ToString::to_string);
            assert_eq!(rate("JPY").as_deref(), Some("160"));
            assert_eq!(rate("CHF").as_deref(), Some("0.9412"));
            assert_eq!(rate("GBP").as_deref(), Some("0.85"));
            jail.set_env("BP_SCA__EUR_RATES__GBP", "0.85");
            let err = Config::load(Some(&file)).expect_err("an unquoted decimal is a float");
            assert!(err.to_string().contains("as a string"), "{err}");
            Ok(())
        });
    }
}
