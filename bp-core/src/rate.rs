//! Exact decimal rates (an FX rate such as `1.0842` USD per EUR, an annual interest rate such as
//! `0.0525`) and the money arithmetic that uses them, in integers only.
//!
//! A [`Rate`] is a count of 10^-[`Rate::SCALE`] units, from 0 to [`RATE_MAX_UNITS`] (one
//! million). Every product of money and a rate is computed exactly in `i128` and then rounded
//! **half-even** (banker's rounding: an exact half goes to the even neighbour, so 5.5 → 6,
//! 16.5 → 16, -2.5 → -2) to the minor unit of the result's currency. Overflow is an error,
//! never a wrap or a panic.
//!
//! Positivity: [`Rate::parse`] refuses zero, because an FX rate of zero is always a mistake;
//! [`Rate::parse_non_negative`] accepts it, for an interest rate of 0%. A `Rate` value itself
//! may be zero ([`Rate::ZERO`]); [`convert`] refuses a zero rate.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::money::{Currency, Money};

/// Most decimal places a rate may have.
const SCALE_DIGITS: u8 = 10;

/// 10^[`Rate::SCALE`]: the number of units in a rate of 1.
const UNITS_PER_ONE: u64 = 10_000_000_000;

/// Largest rate, as a whole number.
pub const RATE_MAX: u64 = 1_000_000;

/// Largest rate, in units of 10^-[`Rate::SCALE`].
pub const RATE_MAX_UNITS: u64 = RATE_MAX * UNITS_PER_ONE;

/// Why a rate could not be parsed or applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateError {
    /// The rate string is empty.
    #[error("a rate cannot be empty")]
    Empty,
    /// The rate string is not a plain decimal such as `1.0842`.
    #[error("a rate is a plain decimal such as 1.0842: {reason}")]
    NotDecimal {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The rate has more decimal places than [`Rate::SCALE`].
    #[error("a rate has at most {SCALE_DIGITS} decimal places")]
    TooManyDecimals,
    /// The rate is zero where a positive rate is required.
    #[error("the rate must be greater than zero")]
    Zero,
    /// The rate is above [`RATE_MAX`].
    #[error("a rate is at most {RATE_MAX}")]
    TooLarge,
    /// The result does not fit in a 64-bit count of minor units.
    #[error("the result overflows a 64-bit count of minor units")]
    Overflow,
}

/// An exact non-negative decimal rate with [`Rate::SCALE`] decimal places, at most [`RATE_MAX`].
///
/// Its text (and JSON) form is a plain decimal string: no sign, no exponent, no spaces, no
/// leading zeros, trailing zeros trimmed on display (`"1.0842"`, `"161.235"`, `"0"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rate {
    units: u64,
}

impl Rate {
    /// Decimal places kept: a rate is a whole number of 10^-10.
    pub const SCALE: u8 = SCALE_DIGITS;
    /// The rate 0, e.g. an interest-free loan.
    pub const ZERO: Rate = Rate { units: 0 };
    /// The rate 1, e.g. 100% a year, or a conversion between pegged units.
    pub const ONE: Rate = Rate { units: UNITS_PER_ONE };

    /// Parses a strictly positive rate such as `"1.0842"`: digits, optionally a `.` and 1 to
    /// [`Rate::SCALE`] more digits, no leading zeros, greater than 0 and at most [`RATE_MAX`].
    pub fn parse(s: &str) -> Result<Rate, RateError> {
        let rate = Rate::parse_non_negative(s)?;
        if rate.is_zero() { Err(RateError::Zero) } else { Ok(rate) }
    }

    /// Parses a rate as [`Rate::parse`] does, but also accepts zero (`"0"`, `"0.00"`), for an
    /// interest rate of 0%.
    pub fn parse_non_negative(s: &str) -> Result<Rate, RateError> {
        if s.is_empty() {
            return Err(RateError::Empty);
        }
        let (int_part, frac_part) = match s.split_once('.') {
            Some((int_part, frac_part)) => (int_part, Some(frac_part)),
            None => (s, None),
        };
        if let Some(bad) = int_part.bytes().chain(frac_part.unwrap_or("").bytes()).find(|b| !b.is_ascii_digit()) {
            let reason = match bad {
                b'.' => "more than one decimal point",
                b'+' | b'-' => "no sign allowed",
                b' ' | b'\t' | b'\n' | b'\r' => "no whitespace allowed",
                b'e' | b'E' => "no exponent notation allowed",
                _ => "unexpected character",
            };
            return Err(RateError::NotDecimal { reason });
        }
        if int_part.is_empty() {
            return Err(RateError::NotDecimal { reason: "missing digits before the decimal point" });
        }
        if int_part.len() > 1 && int_part.starts_with('0') {
            return Err(RateError::NotDecimal { reason: "no leading zeros allowed" });
        }
        let frac = match frac_part {
            Some("") => return Err(RateError::NotDecimal { reason: "missing digits after the decimal point" }),
            Some(frac) => frac,
            None => "",
        };
        if frac.len() > usize::from(Rate::SCALE) {
            return Err(RateError::TooManyDecimals);
        }
        // Each step stays below 10 × RATE_MAX_UNITS, far inside u64, because the value is
        // checked against the bound after every digit.
        let mut units: u64 = 0;
        let padding = std::iter::repeat_n(b'0', usize::from(Rate::SCALE) - frac.len());
        for digit in int_part.bytes().chain(frac.bytes()).chain(padding) {
            units = units * 10 + u64::from(digit - b'0');
            if units > RATE_MAX_UNITS {
                return Err(RateError::TooLarge);
            }
        }
        Ok(Rate { units })
    }

    /// The rate as a count of 10^-[`Rate::SCALE`] units: `1.0842` → `10_842_000_000`.
    pub fn units(&self) -> u64 {
        self.units
    }

    /// Whether the rate is zero.
    pub fn is_zero(&self) -> bool {
        self.units == 0
    }

    /// `amount × rate × numerator / denominator`, rounded half-even to the minor unit of
    /// `amount`'s currency: the interest on a balance for a fraction of a year, e.g.
    /// `(balance, 1, 12)` for one month of twelve equal months, or `(balance, days, 365)`.
    pub fn mul_money_half_even(
        &self,
        amount: Money,
        numerator: u32,
        denominator: NonZeroU32,
    ) -> Result<Money, RateError> {
        let product = i128::from(amount.amount_minor())
            .checked_mul(i128::from(self.units))
            .and_then(|p| p.checked_mul(i128::from(numerator)))
            .ok_or(RateError::Overflow)?;
        let divisor = i128::from(UNITS_PER_ONE) * i128::from(denominator.get());
        let minor = i64::try_from(div_half_even(product, divisor)).map_err(|_| RateError::Overflow)?;
        Ok(Money::new(minor, amount.currency()))
    }
}

/// `numerator / divisor` rounded half-even, for `divisor > 0`.
fn div_half_even(numerator: i128, divisor: i128) -> i128 {
    debug_assert!(divisor > 0);
    // Floor division leaves a remainder in [0, divisor) whatever the sign, so one rule rounds
    // negative and positive values alike.
    let quotient = numerator.div_euclid(divisor);
    let remainder = numerator.rem_euclid(divisor);
    let rest = divisor - remainder;
    if remainder > rest || (remainder == rest && quotient % 2 != 0) { quotient + 1 } else { quotient }
}

/// Converts `amount` into `to` at `rate` units of `to` per unit of `amount`'s currency.
///
/// The result is `amount × rate`, rescaled from the source currency's minor unit to the
/// target's and rounded **half-even** to the target's minor unit: 100.00 EUR at 1.0842 is
/// 108.42 USD, 1.00 EUR at 161.235 is 161 JPY, 0.15 EUR at 1.1 is 0.16 (16.5 cents → 16).
/// Fails on a zero rate ([`RateError::Zero`]) or when the result does not fit in an `i64` of
/// minor units ([`RateError::Overflow`]).
pub fn convert(amount: Money, rate: Rate, to: Currency) -> Result<Money, RateError> {
    if rate.is_zero() {
        return Err(RateError::Zero);
    }
    let from_exponent = u32::from(amount.currency().exponent());
    let to_exponent = u32::from(to.exponent());
    let scale = u32::from(Rate::SCALE);
    let product = i128::from(amount.amount_minor()) * i128::from(rate.units);
    // The product is in 10^-(from_exponent + scale) units of the target; bring it to
    // 10^-to_exponent by multiplying or dividing by the difference.
    let (numerator, divisor) = if to_exponent > from_exponent + scale {
        let factor = 10_i128.pow(to_exponent - from_exponent - scale);
        (product.checked_mul(factor).ok_or(RateError::Overflow)?, 1)
    } else {
        (product, 10_i128.pow(from_exponent + scale - to_exponent))
    };
    let minor = i64::try_from(div_half_even(numerator, divisor)).map_err(|_| RateError::Overflow)?;
    Ok(Money::new(minor, to))
}

impl fmt::Display for Rate {
    /// Writes the plain decimal, trailing zeros trimmed: `1.0842`, `161.235`, `0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.units / UNITS_PER_ONE;
        let frac = self.units % UNITS_PER_ONE;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:0width$}", width = usize::from(Rate::SCALE));
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl FromStr for Rate {
    type Err = RateError;

    /// Parses as [`Rate::parse_non_negative`]: the text form of any `Rate` reads back.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Rate::parse_non_negative(s)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    /// Reads the decimal string form; zero is accepted (as by [`Rate::parse_non_negative`]).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(deserializer)?;
        Rate::parse_non_negative(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "bp_core::rate::Rate".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An exact non-negative decimal rate, at most 1000000 with at most 10 decimals",
            "pattern": "^(0|[1-9][0-9]{0,6})(\\.[0-9]{1,10})?$",
            "examples": ["1.0842", "0.0525"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        Rate::parse(s).unwrap()
    }

    fn conv(minor: i64, from: Currency, r: &str, to: Currency) -> i64 {
        convert(Money::new(minor, from), rate(r), to).unwrap().amount_minor()
    }

    #[test]
    fn parses_and_displays_plain_decimals() {
        let cases = [
            ("1.0842", 10_842_000_000, "1.0842"),
            ("0.0525", 525_000_000, "0.0525"),
            ("161.235", 1_612_350_000_000, "161.235"),
            ("1.5000", 15_000_000_000, "1.5"),
            ("2", 20_000_000_000, "2"),
            ("0.0000000001", 1, "0.0000000001"),
            ("1000000", RATE_MAX_UNITS, "1000000"),
            ("1000000.0000000000", RATE_MAX_UNITS, "1000000"),
        ];
        for (text, units, shown) in cases {
            let r = rate(text);
            assert_eq!(r.units(), units, "{text}");
            assert_eq!(r.to_string(), shown, "{text}");
            assert_eq!(Rate::parse(shown), Ok(r), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_plain_positive_decimal() {
        let not_decimal = |s: &str| matches!(Rate::parse(s), Err(RateError::NotDecimal { .. }));
        assert_eq!(Rate::parse(""), Err(RateError::Empty));
        for bad in ["+1.5", "-1", "1e3", "1.2.3", " 1", "1 ", ".5", "5.", "01.5", "1,5", "abc", "1_000"] {
            assert!(not_decimal(bad), "{bad:?} gave {:?}", Rate::parse(bad));
        }
        assert_eq!(Rate::parse("1.00000000001"), Err(RateError::TooManyDecimals));
        assert_eq!(Rate::parse("0"), Err(RateError::Zero));
        assert_eq!(Rate::parse("0.0000000000"), Err(RateError::Zero));
        assert_eq!(Rate::parse("1000000.0000000001"), Err(RateError::TooLarge));
        assert_eq!(Rate::parse("99999999999999999999999999"), Err(RateError::TooLarge));
        assert_eq!(Rate::parse_non_negative("0.00"), Ok(Rate::ZERO));
        assert_eq!(Rate::ZERO.to_string(), "0");
        assert_eq!(Rate::ONE.to_string(), "1");
    }

    #[test]
    fn serde_is_a_json_string_and_round_trips() {
        for text in ["1.0842", "0", "161.235", "1000000", "0.0000000001"] {
            let r = Rate::parse_non_negative(text).unwrap();
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<Rate>(&json).unwrap(), r);
        }
        assert!(serde_json::from_str::<Rate>("1.0842").is_err(), "a JSON number is refused");
        assert!(serde_json::from_str::<Rate>("\"1e3\"").is_err());
    }

    #[test]
    fn schema_pattern_matches_the_parser_on_examples() {
        let schema = serde_json::to_value(schemars::schema_for!(Rate)).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], "^(0|[1-9][0-9]{0,6})(\\.[0-9]{1,10})?$");
    }

    #[test]
    fn converts_with_half_even_rounding() {
        let (eur, usd, jpy, kwd) = (Currency::EUR, Currency::USD, Currency::JPY, Currency::KWD);
        assert_eq!(conv(10_000, eur, "1.0842", usd), 10_842);
        assert_eq!(conv(100, eur, "161.235", jpy), 161);
        assert_eq!(conv(5, eur, "1.1", usd), 6, "5.5 → 6");
        assert_eq!(conv(25, eur, "1.1", usd), 28, "27.5 → 28");
        assert_eq!(conv(15, eur, "1.1", usd), 16, "16.5 → 16");
        assert_eq!(conv(-15, eur, "1.1", usd), -16, "-16.5 → -16");
        assert_eq!(conv(-25, eur, "1.1", usd), -28, "-27.5 → -28");
        assert_eq!(conv(1_000, jpy, "0.0061", eur), 610);
        // 1.000 KWD at 3.2595 USD per KWD: 3.2595 → 3.26 (not a tie).
        assert_eq!(conv(1_000, kwd, "3.2595", usd), 326);
        // 0.005 KWD at 1 → 0.005 EUR exactly half a cent: half-even to 0.00; 0.015 → 0.02.
        assert_eq!(conv(5, kwd, "1", eur), 0);
        assert_eq!(conv(15, kwd, "1", eur), 2);
        // 1.00 EUR at 0.3061 KWD per EUR: 0.3061 KWD exactly (3 decimals), rounded to 0.306.
        assert_eq!(conv(100, eur, "0.3061", kwd), 306);
        // 0.01 EUR at 0.30625 → 0.0030625 KWD → 0.003.
        assert_eq!(conv(1, eur, "0.30625", kwd), 3);
        // 1 JPY at 0.0065 KWD → 0.0065 KWD → 0.006 (tie to even); at 0.0075 → 0.008.
        assert_eq!(conv(1, jpy, "0.0065", kwd), 6);
        assert_eq!(conv(1, jpy, "0.0075", kwd), 8);
    }

    #[test]
    fn convert_refuses_zero_and_overflow() {
        let big = Money::new(i64::MAX, Currency::EUR);
        assert_eq!(convert(big, rate("2"), Currency::USD), Err(RateError::Overflow));
        assert_eq!(convert(big, rate("1000000"), Currency::KWD), Err(RateError::Overflow));
        assert_eq!(convert(Money::new(1, Currency::EUR), Rate::ZERO, Currency::USD), Err(RateError::Zero));
        assert_eq!(
            convert(Money::new(i64::MIN, Currency::JPY), rate("1"), Currency::JPY).unwrap().amount_minor(),
            i64::MIN
        );
    }

    #[test]
    fn interest_for_a_fraction_of_a_year() {
        let twelve = NonZeroU32::new(12).unwrap();
        let balance = Money::new(1_000_000, Currency::EUR);
        // 10,000.00 × 5% / 12 = 41.6666… → 41.67.
        assert_eq!(rate("0.05").mul_money_half_even(balance, 1, twelve).unwrap().amount_minor(), 4_167);
        // 10,000.00 × 5.25% × 30 / 360 = 43.75 exactly.
        let basis = NonZeroU32::new(360).unwrap();
        assert_eq!(rate("0.0525").mul_money_half_even(balance, 30, basis).unwrap().amount_minor(), 4_375);
        // 0.30 × 5% = 0.015 → 0.02; 0.50 × 5% = 0.025 → 0.02.
        let one = NonZeroU32::new(1).unwrap();
        assert_eq!(rate("0.05").mul_money_half_even(Money::new(30, Currency::EUR), 1, one).unwrap().amount_minor(), 2);
        assert_eq!(rate("0.05").mul_money_half_even(Money::new(50, Currency::EUR), 1, one).unwrap().amount_minor(), 2);
        assert_eq!(Rate::ZERO.mul_money_half_even(balance, 1, twelve).unwrap().amount_minor(), 0);
        let max = Money::new(i64::MAX, Currency::EUR);
        assert_eq!(rate("2").mul_money_half_even(max, 1, one), Err(RateError::Overflow));
    }

    #[test]
    fn div_half_even_rounds_ties_to_even() {
        let cases = [(11, 2, 6), (13, 2, 6), (15, 2, 8), (-11, 2, -6), (-13, 2, -6), (7, 3, 2), (8, 3, 3), (-7, 3, -2)];
        for (n, d, want) in cases {
            assert_eq!(div_half_even(n, d), want, "{n}/{d}");
        }
    }

    proptest::proptest! {
        #[test]
        fn convert_is_the_nearest_minor_unit(
            minor in -1_000_000_000_000_i64..=1_000_000_000_000,
            units in 1_u64..=RATE_MAX_UNITS / 1_000,
            to_kwd in proptest::bool::ANY,
        ) {
            let to = if to_kwd { Currency::KWD } else { Currency::JPY };
            let got = convert(Money::new(minor, Currency::EUR), Rate { units }, to).unwrap();
            // Exact value in 10^-(2 + SCALE) of a unit; the result must be within half a minor
            // unit of it, and the parity rule decides an exact half.
            let exact = i128::from(minor) * i128::from(units);
            let per_minor = 10_i128.pow(2 + u32::from(Rate::SCALE) - u32::from(to.exponent()));
            let gap = (i128::from(got.amount_minor()) * per_minor - exact).abs();
            proptest::prop_assert!(2 * gap <= per_minor);
            if 2 * gap == per_minor {
                proptest::prop_assert_eq!(got.amount_minor() % 2, 0);
            }
        }
    }
}
