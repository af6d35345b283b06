//! A quote desk for the façade's conformance cases: an [`FxProvider`] that quotes from a fixed
//! table of rates, with a fee of 0.45% (at least 1.00) of the amount converted, valid for
//! [`QUOTE_TTL_S`] seconds on the case's clock. It keeps every quote it gives, so that
//! [`FxProvider::quote_by_id`] answers as a real provider would, and a retried call with the
//! same key gets the same quote.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::TimeDelta;

use crate::clock::Clock;
use crate::external::fx::{FxProvider, ProviderQuote, QuoteId, QuoteRequest};
use crate::external::{CallError, CallKey, Refusal};
use crate::money::{Currency, Money};
use crate::rate::Rate;

/// How long a quote of the desk lasts.
pub const QUOTE_TTL_S: i64 = 60;

/// The desk's rates from the euro.
pub const RATES: [(Currency, &str); 3] =
    [(Currency::USD, "1.0842"), (Currency::GBP, "0.8571"), (Currency::JPY, "161.235")];

/// A quote desk over a fixed table of rates (see the module documentation).
#[derive(Debug)]
pub struct QuoteDesk {
    clock: Arc<dyn Clock>,
    quotes: Mutex<Vec<(CallKey, ProviderQuote)>>,
}

impl QuoteDesk {
    /// A desk telling time by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self { clock, quotes: Mutex::default() }
    }

    /// The fee of converting `source`: 0.45%, rounded half-even, at least one major unit.
    pub fn fee(source: Money) -> Money {
        let rate = Rate::parse("0.0045").expect("a rate");
        let fee = rate.mul_money_half_even(source, 1, NonZeroU32::MIN).expect("no overflow");
        let floor = 10_i64.pow(u32::from(source.currency().exponent()));
        Money::new(fee.amount_minor().max(floor), source.currency())
    }
}

#[async_trait]
impl FxProvider for QuoteDesk {
    async fn quote(&self, request: &QuoteRequest, key: &CallKey) -> Result<ProviderQuote, CallError> {
        let refused = || CallError::Refused(Refusal { code: None });
        let rate = RATES
            .iter()
            .find(|(c, _)| request.source.currency() == Currency::EUR && *c == request.target_currency)
            .map(|(_, r)| Rate::parse(r).expect("a rate"))
            .ok_or_else(refused)?;
        let mut quotes = self.quotes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, q)) = quotes.iter().find(|(k, _)| k == key) {
            return Ok(q.clone());
        }
        let quote = ProviderQuote {
            id: QuoteId::parse(&format!("q-{}", quotes.len() + 1)).expect("an id"),
            source: request.source,
            target_currency: request.target_currency,
            rate,
            fee: Self::fee(request.source),
            expires_at: self.clock.now() + TimeDelta::seconds(QUOTE_TTL_S),
        };
        quotes.push((key.clone(), quote.clone()));
        Ok(quote)
    }

    async fn quote_by_id(&self, id: &QuoteId) -> Result<Option<ProviderQuote>, CallError> {
        let quotes = self.quotes.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(quotes.iter().find(|(_, q)| q.id == *id).map(|(_, q)| q.clone()))
    }
}
