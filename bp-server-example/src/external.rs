//! The server's side of the outside parties (FR6): connecting the SEPA rail from the
//! configuration (the real `bp_external::HttpRail`, at the configured URL or at the simulator
//! this process starts on loopback in development mode), and applying what is learnt about a
//! payment (the worker's turn, the rail's answers, its webhooks) to the payment's record with
//! bp-core's `lifecycle::transition`, written by `ServiceStore::apply` in one atomic write.
//!
//! The worker that drives this is in `jobs`, the webhook receivers in `rail_webhooks`.

use std::sync::Arc;

use bp_core::clock::Clock;
use bp_core::error::{Error, LedgerError};
use bp_core::external::fx::{self, FxProvider};
use bp_core::external::lifecycle::{self, Effect, Input, InterbankDetails, Policy, TransitionError};
use bp_core::external::loan::{LoanPolicy, LoanProvider};
use bp_core::external::{BankIbans, Bic, CallKey, ExternalAccount, PayeeName, PaymentRail, RailId, RailOrder};
use bp_core::ids::{ServiceRecordId, TransferId};
use bp_core::service_record::ServiceRecord;
use bp_core::service_store::ServiceStore;
use bp_external::simulator::{OutcomeRules, Simulator, SimulatorConfig, SimulatorHandle};
use bp_external::{
    BreakerConfig, HttpFxProvider, HttpLoanProvider, HttpPartyConfig, HttpRail, HttpRailConfig, WebhookSecret,
    WebhookVerifier,
};
use rand::Rng as _;

use crate::config::{Config, Mode};

/// Where the simulator sends status reports, on this server.
pub const STATUS_WEBHOOK_PATH: &str = "/rail/sepa/webhooks/status";
/// Where the simulator sends incoming payments, on this server.
pub const INCOMING_WEBHOOK_PATH: &str = "/rail/sepa/webhooks/incoming";

/// Times a write is tried again after another writer changed the record first.
pub const APPLY_ATTEMPTS_MAX: u32 = 16;

/// The connected SEPA rail and what goes with it.
pub struct External {
    /// The rail (the real HTTP adapter).
    pub rail: Arc<dyn PaymentRail>,
    /// The correspondent rail that carries payments abroad, when connected.
    pub correspondent: Option<Arc<dyn PaymentRail>>,
    /// The FX provider that quotes payments abroad, when connected.
    pub fx: Option<Arc<dyn FxProvider>>,
    /// The loan provider that decides applications, when connected.
    pub loans: Option<Arc<dyn LoanProvider>>,
    /// Back-off, stuck bound, offer validity and arrears retries of every loan.
    pub loan_policy: LoanPolicy,
    /// Authenticates the rail's webhooks.
    pub verifier: WebhookVerifier,
    /// How this bank's accounts are written as IBANs.
    pub bank: BankIbans,
    /// This bank's BIC.
    pub bic: Bic,
    /// Back-off and stuck bound of every payment.
    pub policy: Policy,
    /// Payments the worker calls the rail about at once.
    pub concurrency_max: usize,
    /// The simulator of the outside parties, when this process runs it (development mode).
    pub simulator: Option<SimulatorHandle>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("rail", &self.rail.id())
            .field("simulator", &self.simulator.as_ref().map(SimulatorHandle::addr))
            .finish_non_exhaustive()
    }
}

impl External {
    /// The connected rail that carries `record`'s payment (`None`: its rail is not connected
    /// here, or the record is not a payment's).
    pub fn rail_of(&self, record: &ServiceRecord) -> Option<&Arc<dyn PaymentRail>> {
        match InterbankDetails::of(record)?.rail {
            RailId::SepaCreditTransfer => Some(&self.rail),
            RailId::Correspondent => self.correspondent.as_ref(),
            _ => None,
        }
    }
}

/// Connects the SEPA rail of `config` for a server reached at `public_base` (its webhooks'
/// target when it runs the simulator): `None` when external payments are off (production mode
/// without `external.sepa.base_url`, or `simulate = false`), which is logged.
pub async fn connect(config: &Config, public_base: &str) -> Result<Option<External>, String> {
    let sepa = &config.external.sepa;
    let bank = BankIbans::new(&sepa.iban_country, &sepa.iban_bank_code).map_err(|e| e.to_string())?;
    let bic = Bic::parse(&sepa.bic).map_err(|e| e.to_string())?;
    let mut secrets = sepa
        .webhook_secrets
        .iter()
        .map(|s| WebhookSecret::new(s.expose().to_vec()).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let (base_url, simulator) = match &sepa.base_url {
        Some(url) => (url::Url::parse(url).map_err(|e| format!("external.sepa.base_url: {e}"))?, None),
        None if config.mode == Mode::Development && sepa.simulate => {
            if secrets.is_empty() {
                // A secret of this run only, shared with the simulator in memory.
                let mut bytes = [0u8; 32];
                rand::rng().fill(&mut bytes[..]);
                secrets.push(WebhookSecret::new(bytes.to_vec()).map_err(|e| e.to_string())?);
            }
            let simulator = start_simulator(sepa, &secrets[0], public_base).await?;
            tracing::info!(
                address = %simulator.addr(),
                "rail simulator on {}: external payments go to it, its webhooks come back here",
                simulator.addr()
            );
            (simulator.base_url(), Some(simulator))
        }
        None => {
            tracing::info!(
                mode = ?config.mode,
                "external payments are off: no external.sepa.base_url (the simulator runs only in development mode)"
            );
            return Ok(None);
        }
    };
    let rail_config = HttpRailConfig {
        connect_timeout_ms: sepa.connect_timeout_ms,
        request_timeout_ms: sepa.request_timeout_ms,
        attempts_max: sepa.attempts_max,
        retry_back_off: bp_core::external::BackOff { first_ms: sepa.retry_first_ms, max_ms: sepa.retry_max_ms },
        breaker: BreakerConfig { failures_max: sepa.breaker_failures_max, cool_down_ms: sepa.breaker_cool_down_ms },
        ..HttpRailConfig::new(base_url.clone())
    };
    let rail = HttpRail::new(rail_config.clone()).map_err(|e| e.to_string())?;
    let abroad = &config.external.abroad;
    let abroad_urls = match (&abroad.fx_base_url, &abroad.correspondent_base_url, &simulator) {
        (Some(fx), Some(rail), _) => Some((
            url::Url::parse(fx).map_err(|e| format!("external.abroad.fx_base_url: {e}"))?,
            url::Url::parse(rail).map_err(|e| format!("external.abroad.correspondent_base_url: {e}"))?,
        )),
        (_, _, Some(sim)) => Some((sim.base_url(), sim.rail_base_url(RailId::Correspondent))),
        _ => None,
    };
    let abroad: Option<(Arc<dyn PaymentRail>, Arc<dyn FxProvider>)> = match abroad_urls {
        Some((fx_url, rail_url)) => {
            // The SEPA rail's timeouts, retries and breaker settings, each party with its own
            // breaker.
            let party = HttpPartyConfig {
                connect_timeout_ms: rail_config.connect_timeout_ms,
                request_timeout_ms: rail_config.request_timeout_ms,
                attempts_max: rail_config.attempts_max,
                retry_back_off: rail_config.retry_back_off,
                breaker: rail_config.breaker,
                ..HttpPartyConfig::new(fx_url)
            };
            let correspondent =
                HttpRailConfig { rail: RailId::Correspondent, base_url: rail_url, ..rail_config.clone() };
            Some((
                Arc::new(HttpRail::new(correspondent).map_err(|e| e.to_string())?),
                Arc::new(HttpFxProvider::new(party).map_err(|e| e.to_string())?),
            ))
        }
        None => {
            tracing::info!("payments abroad are off: no external.abroad URLs (nor the simulator)");
            None
        }
    };
    let (correspondent, fx) = abroad.unzip();
    let loans_url = match (&config.external.loans.base_url, &simulator) {
        (Some(url), _) => Some(url::Url::parse(url).map_err(|e| format!("external.loans.base_url: {e}"))?),
        (None, Some(sim)) => Some(sim.base_url()),
        (None, None) => None,
    };
    let loans: Option<Arc<dyn LoanProvider>> = match loans_url {
        Some(url) => {
            // The SEPA rail's timeouts, retries and breaker settings, with a breaker of its own.
            let party = HttpPartyConfig {
                connect_timeout_ms: rail_config.connect_timeout_ms,
                request_timeout_ms: rail_config.request_timeout_ms,
                attempts_max: rail_config.attempts_max,
                retry_back_off: rail_config.retry_back_off,
                breaker: rail_config.breaker,
                ..HttpPartyConfig::new(url)
            };
            Some(Arc::new(HttpLoanProvider::new(party).map_err(|e| e.to_string())?))
        }
        None => {
            tracing::info!("loans are off: no external.loans.base_url (nor the simulator)");
            None
        }
    };
    let verifier = WebhookVerifier::new(secrets, sepa.webhook_tolerance_s).map_err(|e| e.to_string())?;
    if simulator.is_none() {
        tracing::info!(rail = %base_url, "external payments through the SEPA rail");
    }
    Ok(Some(External {
        rail: Arc::new(rail),
        correspondent,
        fx,
        loans,
        // The payments' back-off; offers and arrears retries as bp-core sets them.
        loan_policy: LoanPolicy {
            back_off: sepa.check_back_off(),
            stuck_after_s: sepa.stuck_after_s,
            ..LoanPolicy::default()
        },
        verifier,
        bank,
        bic,
        policy: Policy { back_off: sepa.check_back_off(), stuck_after_s: sepa.stuck_after_s },
        concurrency_max: sepa.worker_concurrency_max,
        simulator,
    }))
}

async fn start_simulator(
    sepa: &crate::config::SepaConfig,
    secret: &WebhookSecret,
    public_base: &str,
) -> Result<SimulatorHandle, String> {
    let url = |path: &str| url::Url::parse(&format!("{}{path}", public_base.trim_end_matches('/')));
    // Seeded from the clock: a restart must not repeat the ids of incoming payments.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(0))
        .unwrap_or(0);
    let mut config = SimulatorConfig::new(secret.clone(), seed);
    config.webhook_url = Some(url(STATUS_WEBHOOK_PATH).map_err(|e| e.to_string())?);
    // One receiver for both rails' status reports: a report names our key, which names the
    // record, whatever the rail.
    config.correspondent_webhook_url = config.webhook_url.clone();
    config.incoming_url = Some(url(INCOMING_WEBHOOK_PATH).map_err(|e| e.to_string())?);
    config.rules = OutcomeRules { settle_after_ms: sepa.simulator_settle_after_ms, ..OutcomeRules::default() };
    Simulator::start(config).await.map_err(|e| format!("starting the rail simulator: {e}"))
}

/// The hold (and so the record) a rail key belongs to: our keys are the hold's transfer id.
pub fn record_of_key(key: &CallKey) -> Option<ServiceRecordId> {
    let uuid = uuid::Uuid::try_parse(key.as_str()).ok()?;
    let hold = TransferId::from_uuid(uuid);
    (CallKey::of_transfer(hold) == *key).then(|| lifecycle::record_id(hold))
}

/// What became of an input.
#[derive(Debug)]
pub enum Applied {
    /// Written: the record as stored, and the calls to make now (`Submit`, `QueryStatus`).
    Written(Box<ServiceRecord>, Vec<Effect>),
    /// Nothing to change (a repeated or stale report, a check not yet due).
    Unchanged,
    /// The input contradicts a decided outcome: not applied, logged and counted.
    Conflict(TransitionError),
    /// No such record.
    NotFound,
}

/// Applies `input` to record `id`: reads it, runs the lifecycle, writes the result atomically
/// (`ServiceStore::apply`); when another writer got there first (a stale version), reads it
/// again and applies the input to what is there now, so that no report is lost.
pub async fn apply_input(
    services: &dyn ServiceStore,
    clock: &dyn Clock,
    policy: &Policy,
    id: ServiceRecordId,
    input: &Input,
) -> Result<Applied, Error> {
    let mut stale = None;
    for _ in 0..APPLY_ATTEMPTS_MAX {
        let Some(record) = services.service_record(id).await? else { return Ok(Applied::NotFound) };
        let transition = match lifecycle::transition(&record, input, clock.now(), policy, rand::rng().random()) {
            Ok(t) => t,
            Err(e) => {
                metrics::counter!("bp_external_conflicts_total").increment(1);
                tracing::error!(service = %id, error = %e, "a report contradicts a decided payment: not applied");
                return Ok(Applied::Conflict(e));
            }
        };
        if transition.record == record && transition.effects.is_empty() {
            return Ok(Applied::Unchanged);
        }
        let calls: Vec<Effect> = transition
            .effects
            .iter()
            .filter(|e| matches!(e, Effect::Submit(_) | Effect::QueryStatus(_)))
            .cloned()
            .collect();
        match services.apply(id, record.version, transition).await {
            Ok(stored) => return Ok(Applied::Written(Box::new(stored), calls)),
            Err(e @ Error::Ledger(LedgerError::VersionConflict { .. })) => stale = Some(e),
            Err(e) => return Err(e),
        }
    }
    // Other writers won every time: the caller answers so that the input comes again (a 5xx to
    // a webhook; the worker's next check).
    Err(stale.unwrap_or_else(|| unreachable!("APPLY_ATTEMPTS_MAX is positive")))
}

/// The order of `record` as the rail receives it: our customer (name and IBAN, our BIC) pays
/// the record's creditor.
pub async fn order_of(
    services: &dyn ServiceStore,
    external: &External,
    record: &ServiceRecord,
) -> Result<RailOrder, String> {
    let details = InterbankDetails::of(record).ok_or("not an interbank payment's record")?;
    let account = services.account(record.account_id).await.map_err(|e| e.to_string())?.ok_or("no such account")?;
    let customer = services.customer(record.customer_id).await.map_err(|e| e.to_string())?.ok_or("no such customer")?;
    let name = PayeeName::parse(&customer.display_name()).map_err(|e| e.to_string())?;
    let debtor = ExternalAccount { iban: external.bank.iban_of(account.number), name, bic: Some(external.bic.clone()) };
    Ok(RailOrder {
        // An international payment's rail carries the converted amount.
        amount: fx::rail_amount(record),
        debtor,
        creditor: details.creditor,
        remittance: details.remittance,
        requested_at: record.created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn production_never_runs_the_simulator_and_development_does() {
        let mut config = Config { mode: Mode::Production, ..Config::default() };
        assert!(connect(&config, "http://127.0.0.1:1").await.expect("connect").is_none(), "off in production");
        config.mode = Mode::Development;
        config.external.sepa.simulate = false;
        assert!(connect(&config, "http://127.0.0.1:1").await.expect("connect").is_none(), "simulate = false");
        config.external.sepa.simulate = true;
        let external = connect(&config, "http://127.0.0.1:1").await.expect("connect").expect("connected");
        let simulator = external.simulator.expect("the simulator");
        assert!(simulator.addr().ip().is_loopback());
        simulator.stop().await;
    }

    #[test]
    fn a_rail_key_leads_back_to_its_record() {
        let hold = TransferId::new_v7();
        let key = CallKey::of_transfer(hold);
        assert_eq!(record_of_key(&key), Some(lifecycle::record_id(hold)));
        assert_eq!(record_of_key(&CallKey::parse("SIM0123").expect("key")), None);
    }
}
