//! Euro equivalents for the SCA limits. RTS art. 16 states the low-value limits in euro (€30 a
//! payment, €100 in total), and so are the TOTP limit's units here; a payment in another currency
//! is compared through the bank's configured rate of that currency, an exact decimal (never a
//! float), rounding the equivalent **up**, so that a payment is never undercounted. A currency
//! without a configured rate gets no exemption that a limit bounds, and no TOTP answer.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::{Currency, Money};

/// Decimal places a rate may have at most.
pub const RATE_SCALE_MAX: u32 = 12;

/// Units of a currency per euro, as an exact decimal: `1.0850` US dollars per euro.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EurRate {
    /// The digits, without the decimal point.
    mantissa: i64,
    /// How many of them are decimals.
    scale: u32,
}

impl EurRate {
    /// The rate `mantissa / 10^scale`, if positive with at most [`RATE_SCALE_MAX`] decimals.
    pub const fn from_parts(mantissa: i64, scale: u32) -> Option<Self> {
        if mantissa > 0 && scale <= RATE_SCALE_MAX { Some(Self { mantissa, scale }) } else { None }
    }

    /// The rate written `s` (`"1.0850"`, `"160"`): positive, at most [`RATE_SCALE_MAX`] decimals.
    pub fn parse(s: &str) -> Result<Self, String> {
        let invalid = || format!("a rate is a positive decimal with at most {RATE_SCALE_MAX} decimals, not {s:?}");
        let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || (s.contains('.') && fraction.is_empty()) {
            return Err(invalid());
        }
        let scale = u32::try_from(fraction.len()).map_err(|_| invalid())?;
        if scale > RATE_SCALE_MAX {
            return Err(invalid());
        }
        let mantissa: i64 = format!("{whole}{fraction}").parse().map_err(|_| invalid())?;
        if mantissa <= 0 {
            return Err(invalid());
        }
        Ok(Self { mantissa, scale })
    }
}

impl fmt::Display for EurRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = format!("{:0>width$}", self.mantissa, width = usize::try_from(self.scale).unwrap_or(0) + 1);
        let (whole, fraction) = digits.split_at(digits.len() - usize::try_from(self.scale).unwrap_or(0));
        if fraction.is_empty() { f.write_str(whole) } else { write!(f, "{whole}.{fraction}") }
    }
}

impl Serialize for EurRate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EurRate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RateVisitor)
    }
}

/// Takes a rate written as a string (`"1.10"`) or a whole number (`160`); refuses a float,
/// whose binary value is not the decimal the bank wrote.
struct RateVisitor;

impl serde::de::Visitor<'_> for RateVisitor {
    type Value = EurRate;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a rate written as a string, e.g. \"1.10\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EurRate, E> {
        EurRate::parse(v).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<EurRate, E> {
        EurRate::parse(&v.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<EurRate, E> {
        EurRate::parse(&v.to_string()).map_err(E::custom)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<EurRate, E> {
        Err(E::custom("write the rate as a string, e.g. \"1.10\" (a float would not be exactly the decimal written)"))
    }
}

/// Reads a map of rates by currency code, in any letter case (configuration sources such as
/// environment variables may lower-case their keys).
pub fn deserialize_rates<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<Currency, EurRate>, D::Error> {
    let by_code = std::collections::BTreeMap::<String, EurRate>::deserialize(deserializer)?;
    by_code
        .into_iter()
        .map(|(code, rate)| {
            Ok((Currency::from_code(&code.to_ascii_uppercase()).map_err(serde::de::Error::custom)?, rate))
        })
        .collect()
}

/// `10^e` as an i128.
fn pow10(e: u32) -> i128 {
    10i128.pow(e)
}

/// The euro equivalent of `amount` in euro cents, rounded up, by `rate` of its currency (units
/// per euro); `None` for a currency without a rate. Saturates at `i64::MAX` (beyond any limit).
pub fn eur_minor(amount: &Money, rate: Option<EurRate>) -> Option<i64> {
    let currency = amount.currency();
    if currency == Currency::EUR {
        return Some(amount.amount_minor());
    }
    let rate = rate?;
    // EUR minor = amount_minor / 10^exp(cur) / (m / 10^s) × 10^exp(EUR), rounded up.
    let numerator = i128::from(amount.amount_minor()) * pow10(rate.scale) * pow10(u32::from(Currency::EUR.exponent()));
    let denominator = i128::from(rate.mantissa) * pow10(u32::from(currency.exponent()));
    let quotient = numerator / denominator;
    let rounded = if numerator % denominator > 0 { quotient + 1 } else { quotient };
    Some(i64::try_from(rounded).unwrap_or(i64::MAX))
}

/// `units` whole euro, in euro cents (saturating).
pub fn eur_units_minor(units: i64) -> i64 {
    10i64.checked_pow(u32::from(Currency::EUR.exponent())).and_then(|f| f.checked_mul(units)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Option<EurRate> {
        Some(EurRate::parse(s).expect("a rate"))
    }

    #[test]
    fn rates_are_exact_decimals_and_round_trip() {
        for s in ["1.10", "160", "0.8563", "1.000000000001"] {
            assert_eq!(EurRate::parse(s).expect("valid").to_string(), s);
        }
        for bad in ["", "0", "0.00", "-1", "1.", ".5", "1,10", "1e3", "1.0000000000001", "abc"] {
            assert!(EurRate::parse(bad).is_err(), "{bad:?}");
        }
        let json = serde_json::to_string(&EurRate::parse("1.0850").expect("rate")).expect("json");
        assert_eq!(json, "\"1.0850\"");
        assert_eq!(serde_json::from_str::<EurRate>(&json).expect("back"), EurRate::parse("1.0850").expect("rate"));
        assert!(serde_json::from_str::<EurRate>("\"-2\"").is_err());
        assert_eq!(
            serde_json::from_str::<EurRate>("160").expect("a whole number"),
            EurRate::parse("160").expect("rate")
        );
        assert!(serde_json::from_str::<EurRate>("1.10").is_err(), "a float is refused");
    }

    #[test]
    fn equivalents_round_up_across_exponents() {
        let usd = |minor| Money::new(minor, Currency::USD);
        assert_eq!(eur_minor(&Money::new(2_999, Currency::EUR), None), Some(2_999), "euro is itself");
        assert_eq!(eur_minor(&usd(3_300), rate("1.10")), Some(3_000), "33.00 USD at 1.10 is 30.00 EUR");
        assert_eq!(eur_minor(&usd(3_299), rate("1.10")), Some(3_000), "32.99 / 1.10 = 29.9909…: up to 30.00");
        assert_eq!(eur_minor(&usd(3_298), rate("1.10")), Some(2_999), "32.98 / 1.10 = 29.9818…: up to 29.99");
        assert_eq!(eur_minor(&usd(1), rate("1.10")), Some(1), "a cent is at least a cent");
        assert_eq!(eur_minor(&usd(100), None), None, "no rate, no equivalent");
        // JPY has no minor unit: 4,800 yen at 160 per euro is 30.00 EUR.
        assert_eq!(eur_minor(&Money::new(4_800, Currency::JPY), rate("160")), Some(3_000));
        assert_eq!(eur_minor(&Money::new(4_799, Currency::JPY), rate("160")), Some(3_000), "29.99375: up to 30.00");
        assert_eq!(eur_minor(&Money::new(4_798, Currency::JPY), rate("160")), Some(2_999));
        // A tiny rate makes a huge equivalent: saturated, never wrapped.
        assert_eq!(eur_minor(&usd(i64::MAX), rate("0.000000000001")), Some(i64::MAX));
        assert_eq!(eur_units_minor(30), 3_000);
    }
}
