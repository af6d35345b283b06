//! ISO 4217 currencies and exact monetary amounts held as integer minor units.
//!
//! Amounts are never floating point: a [`Money`] is an `i64` count of the
//! currency's minor unit (cents for EUR, yen for JPY, fils for KWD, ...), and
//! its textual form is a plain decimal string such as `"1234.50"`.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest piece of user input that an error message may quote.
const MAX_ECHO_CHARS: usize = 8;

/// Errors produced when parsing, converting or computing with money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// The currency code is not an active ISO 4217 code with a minor unit.
    #[error("unknown currency code {code:?}")]
    UnknownCurrency {
        /// The rejected code, shortened to a few characters if it was long.
        code: String,
    },
    /// The amount string is not a well-formed decimal number.
    #[error("invalid amount ({input_len} bytes): {reason}")]
    InvalidAmount {
        /// Length in bytes of the rejected input (the input itself is not echoed).
        input_len: usize,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// The amount has more decimal places than the currency's minor unit allows.
    #[error(
        "too many decimal places: {} allows at most {exponent}",
        .currency.map_or("the amount", |c| c.code())
    )]
    TooManyDecimals {
        /// The maximum number of decimal places allowed.
        exponent: u8,
        /// The currency, when known (the standalone helpers do not know it).
        currency: Option<Currency>,
    },
    /// The result does not fit in a signed 64-bit count of minor units.
    #[error("amount out of range: overflows a 64-bit count of minor units")]
    Overflow,
    /// An operation combined amounts in two different currencies.
    #[error("currency mismatch: {left} vs {right}")]
    CurrencyMismatch {
        /// Currency of the left operand.
        left: Currency,
        /// Currency of the right operand.
        right: Currency,
    },
}

impl MoneyError {
    fn invalid(input: &str, reason: &'static str) -> Self {
        MoneyError::InvalidAmount { input_len: input.len(), reason }
    }
}

/// Shortens user input before it is quoted in an error message.
fn echo(input: &str) -> String {
    let mut chars = input.chars();
    let head: String = chars.by_ref().take(MAX_ECHO_CHARS).collect();
    if chars.next().is_some() { format!("{head}…") } else { head }
}

// ---------------------------------------------------------------------------
// Currency
// ---------------------------------------------------------------------------

/// One row of the ISO 4217 table: alphabetic code and minor-unit exponent.
struct CurrencyInfo {
    code: &'static str,
    exponent: u8,
}

const fn c(code: &'static str, exponent: u8) -> CurrencyInfo {
    CurrencyInfo { code, exponent }
}

/// Active ISO 4217 alphabetic codes (list one) that have a minor unit,
/// sorted by code so that lookups can binary-search and so that `Currency`'s
/// derived ordering is alphabetical.
///
/// Left out on purpose: the codes whose minor unit ISO gives as "N.A."
/// (precious metals XAU/XAG/XPD/XPT, bond-market units XBA..XBD, XDR, XSU,
/// XUA, the test code XTS and XXX), which cannot be held as minor units.
/// ANG (replaced by XCG in 2025) and BGN (replaced by EUR in 2026) are kept
/// for their transition periods so that existing ledger entries still load.
static TABLE: [CurrencyInfo; 166] = [
    c("AED", 2),
    c("AFN", 2),
    c("ALL", 2),
    c("AMD", 2),
    c("ANG", 2),
    c("AOA", 2),
    c("ARS", 2),
    c("AUD", 2),
    c("AWG", 2),
    c("AZN", 2),
    c("BAM", 2),
    c("BBD", 2),
    c("BDT", 2),
    c("BGN", 2),
    c("BHD", 3),
    c("BIF", 0),
    c("BMD", 2),
    c("BND", 2),
    c("BOB", 2),
    c("BOV", 2),
    c("BRL", 2),
    c("BSD", 2),
    c("BTN", 2),
    c("BWP", 2),
    c("BYN", 2),
    c("BZD", 2),
    c("CAD", 2),
    c("CDF", 2),
    c("CHE", 2),
    c("CHF", 2),
    c("CHW", 2),
    c("CLF", 4),
    c("CLP", 0),
    c("CNY", 2),
    c("COP", 2),
    c("COU", 2),
    c("CRC", 2),
    c("CUP", 2),
    c("CVE", 2),
    c("CZK", 2),
    c("DJF", 0),
    c("DKK", 2),
    c("DOP", 2),
    c("DZD", 2),
    c("EGP", 2),
    c("ERN", 2),
    c("ETB", 2),
    c("EUR", 2),
    c("FJD", 2),
    c("FKP", 2),
    c("GBP", 2),
    c("GEL", 2),
    c("GHS", 2),
    c("GIP", 2),
    c("GMD", 2),
    c("GNF", 0),
    c("GTQ", 2),
    c("GYD", 2),
    c("HKD", 2),
    c("HNL", 2),
    c("HTG", 2),
    c("HUF", 2),
    c("IDR", 2),
    c("ILS", 2),
    c("INR", 2),
    c("IQD", 3),
    c("IRR", 2),
    c("ISK", 0),
    c("JMD", 2),
    c("JOD", 3),
    c("JPY", 0),
    c("KES", 2),
    c("KGS", 2),
    c("KHR", 2),
    c("KMF", 0),
    c("KPW", 2),
    c("KRW", 0),
    c("KWD", 3),
    c("KYD", 2),
    c("KZT", 2),
    c("LAK", 2),
    c("LBP", 2),
    c("LKR", 2),
    c("LRD", 2),
    c("LSL", 2),
    c("LYD", 3),
    c("MAD", 2),
    c("MDL", 2),
    c("MGA", 2),
    c("MKD", 2),
    c("MMK", 2),
    c("MNT", 2),
    c("MOP", 2),
    c("MRU", 2),
    c("MUR", 2),
    c("MVR", 2),
    c("MWK", 2),
    c("MXN", 2),
    c("MXV", 2),
    c("MYR", 2),
    c("MZN", 2),
    c("NAD", 2),
    c("NGN", 2),
    c("NIO", 2),
    c("NOK", 2),
    c("NPR", 2),
    c("NZD", 2),
    c("OMR", 3),
    c("PAB", 2),
    c("PEN", 2),
    c("PGK", 2),
    c("PHP", 2),
    c("PKR", 2),
    c("PLN", 2),
    c("PYG", 0),
    c("QAR", 2),
    c("RON", 2),
    c("RSD", 2),
    c("RUB", 2),
    c("RWF", 0),
    c("SAR", 2),
    c("SBD", 2),
    c("SCR", 2),
    c("SDG", 2),
    c("SEK", 2),
    c("SGD", 2),
    c("SHP", 2),
    c("SLE", 2),
    c("SOS", 2),
    c("SRD", 2),
    c("SSP", 2),
    c("STN", 2),
    c("SVC", 2),
    c("SYP", 2),
    c("SZL", 2),
    c("THB", 2),
    c("TJS", 2),
    c("TMT", 2),
    c("TND", 3),
    c("TOP", 2),
    c("TRY", 2),
    c("TTD", 2),
    c("TWD", 2),
    c("TZS", 2),
    c("UAH", 2),
    c("UGX", 0),
    c("USD", 2),
    c("USN", 2),
    c("UYI", 0),
    c("UYU", 2),
    c("UYW", 4),
    c("UZS", 2),
    c("VED", 2),
    c("VES", 2),
    c("VND", 0),
    c("VUV", 0),
    c("WST", 2),
    c("XAF", 0),
    c("XCD", 2),
    c("XCG", 2),
    c("XOF", 0),
    c("XPF", 0),
    c("YER", 2),
    c("ZAR", 2),
    c("ZMW", 2),
    c("ZWG", 2),
];

// `Currency` stores a `u8` index, so the table must stay addressable by one.
const _: () = assert!(TABLE.len() <= u8::MAX as usize);

/// An active ISO 4217 currency with a minor unit.
///
/// Internally an index into a static, alphabetically sorted table, so it is
/// one byte, `Copy`, and orders alphabetically by code.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency(u8);

/// Compile-time lookup used to define the associated constants; fails the
/// build (not the program) if the code is missing from the table.
const fn const_lookup(code: &str) -> Currency {
    let wanted = code.as_bytes();
    let mut i: u8 = 0;
    while (i as usize) < TABLE.len() {
        let have = TABLE[i as usize].code.as_bytes();
        if have[0] == wanted[0] && have[1] == wanted[1] && have[2] == wanted[2] {
            return Currency(i);
        }
        i += 1;
    }
    panic!("currency constant missing from the ISO 4217 table");
}

impl Currency {
    /// Euro (2 decimals).
    pub const EUR: Currency = const_lookup("EUR");
    /// US dollar (2 decimals).
    pub const USD: Currency = const_lookup("USD");
    /// Pound sterling (2 decimals).
    pub const GBP: Currency = const_lookup("GBP");
    /// Swiss franc (2 decimals).
    pub const CHF: Currency = const_lookup("CHF");
    /// Japanese yen (0 decimals).
    pub const JPY: Currency = const_lookup("JPY");
    /// Kuwaiti dinar (3 decimals).
    pub const KWD: Currency = const_lookup("KWD");

    fn info(self) -> &'static CurrencyInfo {
        // A `Currency` is only ever built from a valid table index
        // (`from_code`, `all`, `const_lookup`), so indexing cannot fail.
        &TABLE[usize::from(self.0)]
    }

    /// Looks up an exact, uppercase, three-letter ISO 4217 code such as `"EUR"`.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let unknown = || MoneyError::UnknownCurrency { code: echo(code) };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(unknown());
        }
        let index = TABLE.binary_search_by(|info| info.code.cmp(code)).map_err(|_| unknown())?;
        u8::try_from(index).map(Currency).map_err(|_| unknown())
    }

    /// The three-letter ISO 4217 code, e.g. `"EUR"`.
    pub fn code(&self) -> &'static str {
        self.info().code
    }

    /// The number of decimal places of the minor unit (0, 2, 3 or 4).
    pub fn exponent(&self) -> u8 {
        self.info().exponent
    }

    /// Every supported currency, in alphabetical order of code.
    pub fn all() -> impl Iterator<Item = Currency> + Clone {
        (0..TABLE.len()).filter_map(|i| u8::try_from(i).ok().map(Currency))
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = MoneyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CurrencyVisitor;

        impl serde::de::Visitor<'_> for CurrencyVisitor {
            type Value = Currency;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code such as \"EUR\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Currency, E> {
                Currency::from_code(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(CurrencyVisitor)
    }
}

impl JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "bp_core::money::Currency".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        let codes: Vec<&str> = Currency::all().map(|c| c.code()).collect();
        json_schema!({
            "type": "string",
            "enum": codes,
            "description": "ISO 4217 alphabetic currency code",
        })
    }
}

// ---------------------------------------------------------------------------
// Decimal amount helpers
// ---------------------------------------------------------------------------

/// Parses a decimal amount string into a count of minor units with the given
/// number of decimal places (`exponent`).
///
/// Accepted: an optional leading `-`, at least one digit, then optionally a
/// `.` followed by 1..=`exponent` digits (no `.` at all when `exponent` is 0).
/// Leading zeros are allowed; `-0` is zero. Rejected: `+`, whitespace,
/// exponent notation, separators, a leading or trailing `.`.
pub fn parse_amount_minor(s: &str, exponent: u8) -> Result<i64, MoneyError> {
    if s.is_empty() {
        return Err(MoneyError::invalid(s, "empty"));
    }
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((int_part, frac_part)) => (int_part, Some(frac_part)),
        None => (unsigned, None),
    };

    // Structure first, so that the reported reason is about the shape of the
    // input rather than about whichever limit happened to be hit first.
    if let Some(bad) = int_part.bytes().chain(frac_part.unwrap_or("").bytes()).find(|b| !b.is_ascii_digit()) {
        let reason = match bad {
            b'.' => "more than one decimal point",
            b'-' => "misplaced minus sign",
            b'+' => "plus sign not allowed",
            b' ' | b'\t' | b'\n' | b'\r' => "whitespace not allowed",
            b',' | b'_' | b'\'' => "digit group separators not allowed",
            b'e' | b'E' => "exponent notation not allowed",
            _ => "unexpected character",
        };
        return Err(MoneyError::invalid(s, reason));
    }
    if int_part.is_empty() {
        return Err(MoneyError::invalid(s, "missing integer digits"));
    }
    let frac = match frac_part {
        Some("") => return Err(MoneyError::invalid(s, "missing digits after decimal point")),
        Some(frac) => frac,
        None => "",
    };
    if frac.len() > usize::from(exponent) {
        return Err(MoneyError::TooManyDecimals { exponent, currency: None });
    }

    // Magnitude is accumulated in i128 and bounded by |i64::MIN| after every
    // step, so neither very long input nor a large exponent can overflow it.
    let limit = i128::from(i64::MAX) + 1;
    let mut magnitude: i128 = 0;
    let push = |magnitude: i128, digit: u8| -> Result<i128, MoneyError> {
        let next = magnitude * 10 + i128::from(digit - b'0');
        if next > limit { Err(MoneyError::Overflow) } else { Ok(next) }
    };
    for digit in int_part.bytes().chain(frac.bytes()) {
        magnitude = push(magnitude, digit)?;
    }
    for _ in frac.len()..usize::from(exponent) {
        magnitude = push(magnitude, b'0')?;
    }
    let signed = if negative { -magnitude } else { magnitude };
    i64::try_from(signed).map_err(|_| MoneyError::Overflow)
}

/// Formats a count of minor units as a canonical decimal string with exactly
/// `exponent` decimal places: `(123450, 2)` → `"1234.50"`, `(-5, 2)` →
/// `"-0.05"`, `(100, 0)` → `"100"`. Works for the whole `i64` range.
pub fn format_amount_minor(amount_minor: i64, exponent: u8) -> String {
    let digits = amount_minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    let mut out = String::with_capacity(digits.len() + exponent + 3);
    if amount_minor < 0 {
        out.push('-');
    }
    if exponent == 0 {
        out.push_str(&digits);
        return out;
    }
    if digits.len() > exponent {
        let (int_part, frac_part) = digits.split_at(digits.len() - exponent);
        out.push_str(int_part);
        out.push('.');
        out.push_str(frac_part);
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', exponent - digits.len()));
        out.push_str(&digits);
    }
    out
}

// ---------------------------------------------------------------------------
// Money
// ---------------------------------------------------------------------------

/// An exact amount of money: a signed count of minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// Builds an amount from a count of minor units (e.g. cents).
    pub fn new(amount_minor: i64, currency: Currency) -> Money {
        Money { amount_minor, currency }
    }

    /// Zero in the given currency.
    pub fn zero(currency: Currency) -> Money {
        Money::new(0, currency)
    }

    /// Parses a decimal string such as `"1234.50"` in the given currency; see
    /// [`parse_amount_minor`] for the accepted syntax. At most
    /// `currency.exponent()` decimal places are allowed.
    pub fn parse(s: &str, currency: Currency) -> Result<Money, MoneyError> {
        match parse_amount_minor(s, currency.exponent()) {
            Ok(amount_minor) => Ok(Money::new(amount_minor, currency)),
            Err(MoneyError::TooManyDecimals { exponent, .. }) => {
                Err(MoneyError::TooManyDecimals { exponent, currency: Some(currency) })
            }
            Err(other) => Err(other),
        }
    }

    /// The amount as a count of minor units.
    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.amount_minor == 0
    }

    /// Whether the amount is strictly greater than zero.
    pub fn is_positive(&self) -> bool {
        self.amount_minor > 0
    }

    /// Whether the amount is strictly less than zero.
    pub fn is_negative(&self) -> bool {
        self.amount_minor < 0
    }

    /// The canonical decimal string with exactly `exponent` decimals, without
    /// the currency: `"1234.50"`, `"-0.05"`, `"100"` (JPY), `"1.000"` (KWD).
    pub fn to_decimal_string(&self) -> String {
        format_amount_minor(self.amount_minor, self.currency.exponent())
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }

    /// `self + other`; fails on a currency mismatch or on overflow.
    pub fn checked_add(&self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        self.amount_minor
            .checked_add(other.amount_minor)
            .map(|sum| Money::new(sum, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// `self - other`; fails on a currency mismatch or on overflow.
    pub fn checked_sub(&self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(&other)?;
        self.amount_minor
            .checked_sub(other.amount_minor)
            .map(|diff| Money::new(diff, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// `-self`; fails only for the most negative amount.
    pub fn checked_neg(&self) -> Result<Money, MoneyError> {
        self.amount_minor.checked_neg().map(|neg| Money::new(neg, self.currency)).ok_or(MoneyError::Overflow)
    }

    /// `self * factor` for an integer factor; fails on overflow.
    pub fn checked_mul_int(&self, factor: i64) -> Result<Money, MoneyError> {
        self.amount_minor
            .checked_mul(factor)
            .map(|product| Money::new(product, self.currency))
            .ok_or(MoneyError::Overflow)
    }

    /// Compares two amounts of the same currency; `None` if the currencies differ.
    pub fn partial_cmp_amount(&self, other: &Money) -> Option<Ordering> {
        (self.currency == other.currency).then(|| self.amount_minor.cmp(&other.amount_minor))
    }
}

impl fmt::Display for Money {
    /// Writes the canonical decimal amount (no currency), as [`Money::to_decimal_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string())
    }
}

/// Wire form of [`Money`]: `{"amount":"1234.50","currency":"EUR"}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MoneyRepr<'a> {
    #[serde(borrow)]
    amount: Cow<'a, str>,
    currency: Currency,
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        MoneyRepr { amount: Cow::Owned(self.to_decimal_string()), currency: self.currency }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = MoneyRepr::deserialize(deserializer)?;
        Money::parse(&repr.amount, repr.currency).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Money {
    fn schema_name() -> Cow<'static, str> {
        "Money".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "bp_core::money::Money".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let currency = generator.subschema_for::<Currency>();
        json_schema!({
            "type": "object",
            "description": "An exact amount: a decimal string with at most the currency's number of decimals",
            "properties": {
                "amount": {
                    "type": "string",
                    "pattern": "^-?[0-9]+(\\.[0-9]{1,4})?$",
                    "examples": ["1234.50"],
                },
                "currency": currency,
            },
            "required": ["amount", "currency"],
            "additionalProperties": false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(s: &str) -> Result<Money, MoneyError> {
        Money::parse(s, Currency::EUR)
    }

    #[test]
    fn table_is_sorted_unique_and_well_formed() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].code < pair[1].code, "{} !< {}", pair[0].code, pair[1].code);
        }
        for info in &TABLE {
            assert_eq!(info.code.len(), 3);
            assert!(info.code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(matches!(info.exponent, 0 | 2 | 3 | 4), "{}", info.code);
        }
        assert_eq!(Currency::all().count(), TABLE.len());
        for cur in Currency::all() {
            assert_eq!(Currency::from_code(cur.code()), Ok(cur));
        }
    }

    #[test]
    fn currency_examples() {
        let cases = [("JPY", 0), ("EUR", 2), ("USD", 2), ("KWD", 3), ("BHD", 3), ("CLF", 4), ("UYW", 4)];
        for (code, exp) in cases {
            let cur = Currency::from_code(code).unwrap();
            assert_eq!(cur.code(), code);
            assert_eq!(cur.exponent(), exp, "{code}");
            assert_eq!(cur.to_string(), code);
            assert_eq!(code.parse::<Currency>().unwrap(), cur);
        }
        assert_eq!(Currency::EUR.code(), "EUR");
        assert_eq!(Currency::USD.code(), "USD");
        assert_eq!(Currency::GBP.code(), "GBP");
        assert_eq!(Currency::CHF.code(), "CHF");
        assert_eq!(Currency::JPY.code(), "JPY");
        assert_eq!(Currency::KWD.code(), "KWD");
        assert!(Currency::CHF < Currency::EUR && Currency::EUR < Currency::USD);
        assert_eq!(format!("{:?}", Currency::EUR), "EUR");
        assert_eq!(std::mem::size_of::<Currency>(), 1);
    }

    #[test]
    fn unknown_currency() {
        for code in ["eur", "EU", "EURO", "", "XXX", "XAU", "HRK", "E1R", "ÉUR"] {
            assert!(matches!(Currency::from_code(code), Err(MoneyError::UnknownCurrency { .. })), "{code}");
        }
        let err = Currency::from_code("ABC").unwrap_err();
        assert_eq!(err.to_string(), "unknown currency code \"ABC\"");
        let long = "X".repeat(10_000);
        let msg = Currency::from_code(&long).unwrap_err().to_string();
        assert!(msg.len() < 40, "{msg}");
    }

    #[test]
    fn currency_serde() {
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"EUR\"");
        let back: Currency = serde_json::from_str("\"KWD\"").unwrap();
        assert_eq!(back, Currency::KWD);
        let err = serde_json::from_str::<Currency>("\"QQQ\"").unwrap_err();
        assert!(err.to_string().contains("QQQ"), "{err}");
        assert!(serde_json::from_str::<Currency>("42").is_err());
        // Also from an owned (non-borrowed) string.
        let value = serde_json::Value::String("USD".into());
        assert_eq!(serde_json::from_value::<Currency>(value).unwrap(), Currency::USD);
    }

    #[test]
    fn parse_examples() {
        assert_eq!(eur("1234.50").unwrap().amount_minor(), 123_450);
        assert_eq!(eur("1234.5").unwrap().amount_minor(), 123_450);
        assert_eq!(eur("1234").unwrap().amount_minor(), 123_400);
        assert_eq!(eur("007.50").unwrap().amount_minor(), 750);
        assert_eq!(eur("-0.05").unwrap().amount_minor(), -5);
        assert_eq!(eur("-0").unwrap(), Money::zero(Currency::EUR));
        assert_eq!(eur("-0.00").unwrap(), Money::zero(Currency::EUR));
        assert_eq!(Money::parse("100", Currency::JPY).unwrap().amount_minor(), 100);
        assert_eq!(Money::parse("1.5", Currency::KWD).unwrap().amount_minor(), 1500);
        assert_eq!(Money::parse("0.0001", Currency::from_code("CLF").unwrap()).unwrap().amount_minor(), 1);
        assert_eq!(eur("92233720368547758.07").unwrap().amount_minor(), i64::MAX);
        assert_eq!(eur("-92233720368547758.08").unwrap().amount_minor(), i64::MIN);
    }

    fn reason(result: Result<Money, MoneyError>) -> &'static str {
        match result {
            Err(MoneyError::InvalidAmount { reason, .. }) => reason,
            other => panic!("expected InvalidAmount, got {other:?}"),
        }
    }

    #[test]
    fn parse_rejects_malformed() {
        assert_eq!(reason(eur("")), "empty");
        assert_eq!(reason(eur("-")), "missing integer digits");
        assert_eq!(reason(eur(".5")), "missing integer digits");
        assert_eq!(reason(eur("-.5")), "missing integer digits");
        assert_eq!(reason(eur("5.")), "missing digits after decimal point");
        assert_eq!(reason(eur("+5")), "plus sign not allowed");
        assert_eq!(reason(eur(" 5")), "whitespace not allowed");
        assert_eq!(reason(eur("5 ")), "whitespace not allowed");
        assert_eq!(reason(eur("1e3")), "exponent notation not allowed");
        assert_eq!(reason(eur("1,000.00")), "digit group separators not allowed");
        assert_eq!(reason(eur("1_000")), "digit group separators not allowed");
        assert_eq!(reason(eur("1.2.3")), "more than one decimal point");
        assert_eq!(reason(eur("--1")), "misplaced minus sign");
        assert_eq!(reason(eur("1-")), "misplaced minus sign");
        assert_eq!(reason(eur("abc")), "unexpected character");
        assert_eq!(reason(eur("١٢")), "unexpected character");
        let err = eur("12x").unwrap_err();
        assert_eq!(err, MoneyError::InvalidAmount { input_len: 3, reason: "unexpected character" });
        assert_eq!(err.to_string(), "invalid amount (3 bytes): unexpected character");
    }

    #[test]
    fn parse_rejects_too_many_decimals() {
        assert_eq!(eur("1.005"), Err(MoneyError::TooManyDecimals { exponent: 2, currency: Some(Currency::EUR) }));
        assert_eq!(eur("1.005").unwrap_err().to_string(), "too many decimal places: EUR allows at most 2");
        assert!(matches!(Money::parse("100.0", Currency::JPY), Err(MoneyError::TooManyDecimals { exponent: 0, .. })));
        assert!(matches!(Money::parse("1.0000", Currency::KWD), Err(MoneyError::TooManyDecimals { exponent: 3, .. })));
        assert_eq!(parse_amount_minor("1.005", 2), Err(MoneyError::TooManyDecimals { exponent: 2, currency: None }));
        assert_eq!(
            parse_amount_minor("1.005", 2).unwrap_err().to_string(),
            "too many decimal places: the amount allows at most 2"
        );
    }

    #[test]
    fn parse_rejects_overflow() {
        assert_eq!(eur("92233720368547758.08"), Err(MoneyError::Overflow));
        assert_eq!(eur("-92233720368547758.09"), Err(MoneyError::Overflow));
        assert_eq!(eur(&"9".repeat(10_000)), Err(MoneyError::Overflow));
        let long_zeros = format!("{}1.00", "0".repeat(10_000));
        assert_eq!(eur(&long_zeros).unwrap().amount_minor(), 100);
        assert_eq!(parse_amount_minor("1", 19), Err(MoneyError::Overflow));
        assert_eq!(parse_amount_minor("0", 255), Ok(0));
        assert_eq!(parse_amount_minor("1", 18), Ok(1_000_000_000_000_000_000));
    }

    #[test]
    fn error_messages_do_not_echo_long_input() {
        let long = format!("{}x", "1".repeat(5_000));
        let msg = eur(&long).unwrap_err().to_string();
        assert!(msg.len() < 80, "{msg}");
    }

    #[test]
    fn format_examples() {
        assert_eq!(Money::new(123_450, Currency::EUR).to_string(), "1234.50");
        assert_eq!(Money::new(-5, Currency::EUR).to_string(), "-0.05");
        assert_eq!(Money::new(0, Currency::EUR).to_string(), "0.00");
        assert_eq!(Money::new(100, Currency::JPY).to_string(), "100");
        assert_eq!(Money::new(-100, Currency::JPY).to_string(), "-100");
        assert_eq!(Money::new(1000, Currency::KWD).to_string(), "1.000");
        assert_eq!(Money::new(i64::MIN, Currency::EUR).to_decimal_string(), "-92233720368547758.08");
        assert_eq!(Money::new(i64::MAX, Currency::EUR).to_decimal_string(), "92233720368547758.07");
        assert_eq!(format_amount_minor(i64::MIN, 0), "-9223372036854775808");
        assert_eq!(format_amount_minor(7, 4), "0.0007");
        assert_eq!(format_amount_minor(-7, 25).len(), 28);
    }

    #[test]
    fn predicates() {
        assert!(Money::zero(Currency::USD).is_zero());
        assert!(Money::new(1, Currency::USD).is_positive());
        assert!(Money::new(-1, Currency::USD).is_negative());
        let m = Money::new(-1, Currency::USD);
        assert!(!m.is_zero() && !m.is_positive());
        assert_eq!(m.currency(), Currency::USD);
    }

    #[test]
    fn arithmetic() {
        let a = Money::new(150, Currency::EUR);
        let b = Money::new(-50, Currency::EUR);
        assert_eq!(a.checked_add(b), Ok(Money::new(100, Currency::EUR)));
        assert_eq!(a.checked_sub(b), Ok(Money::new(200, Currency::EUR)));
        assert_eq!(a.checked_neg(), Ok(Money::new(-150, Currency::EUR)));
        assert_eq!(a.checked_mul_int(-3), Ok(Money::new(-450, Currency::EUR)));
        let max = Money::new(i64::MAX, Currency::EUR);
        let min = Money::new(i64::MIN, Currency::EUR);
        assert_eq!(max.checked_add(a), Err(MoneyError::Overflow));
        assert_eq!(min.checked_sub(a), Err(MoneyError::Overflow));
        assert_eq!(min.checked_neg(), Err(MoneyError::Overflow));
        assert_eq!(max.checked_mul_int(2), Err(MoneyError::Overflow));
        let usd = Money::new(1, Currency::USD);
        let mismatch = MoneyError::CurrencyMismatch { left: Currency::EUR, right: Currency::USD };
        assert_eq!(a.checked_add(usd), Err(mismatch.clone()));
        assert_eq!(a.checked_sub(usd), Err(mismatch.clone()));
        assert_eq!(mismatch.to_string(), "currency mismatch: EUR vs USD");
        assert_eq!(a.partial_cmp_amount(&b), Some(Ordering::Greater));
        assert_eq!(a.partial_cmp_amount(&usd), None);
    }

    #[test]
    fn money_serde() {
        let m = Money::new(123_450, Currency::EUR);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"amount":"1234.50","currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        let jpy: Money = serde_json::from_str(r#"{"currency":"JPY","amount":"-7"}"#).unwrap();
        assert_eq!(jpy, Money::new(-7, Currency::JPY));
        // Escaped strings are not borrowable; they must still work.
        let escaped: Money = serde_json::from_str(r#"{"amount":"1\u002e5","currency":"EUR"}"#).unwrap();
        assert_eq!(escaped.amount_minor(), 150);
        for bad in [
            r#"{"amount":"1.005","currency":"EUR"}"#,
            r#"{"amount":"1.5","currency":"JPY"}"#,
            r#"{"amount":1.5,"currency":"EUR"}"#,
            r#"{"amount":"1.50","currency":"EUR","extra":1}"#,
            r#"{"amount":"1.50"}"#,
            r#"{"amount":"1.50","currency":"ZZZ"}"#,
            r#"{"amount":"","currency":"EUR"}"#,
        ] {
            assert!(serde_json::from_str::<Money>(bad).is_err(), "{bad}");
        }
        let err = serde_json::from_str::<Money>(r#"{"amount":"1.005","currency":"EUR"}"#).unwrap_err().to_string();
        assert!(err.contains("too many decimal places"), "{err}");
    }

    #[test]
    fn json_schema_shapes() {
        let currency = serde_json::to_value(schemars::schema_for!(Currency)).unwrap();
        assert_eq!(currency["type"], "string");
        // Exactly the codes the parser accepts, so that a schema-valid currency is never refused.
        let codes: Vec<&str> = currency["enum"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(codes.len(), Currency::all().count());
        assert!(codes.iter().all(|c| Currency::from_code(c).is_ok()));
        let money = serde_json::to_value(schemars::schema_for!(Money)).unwrap();
        assert_eq!(money["type"], "object");
        assert_eq!(money["properties"]["amount"]["type"], "string");
        assert_eq!(money["additionalProperties"], false);
        assert!(money["properties"]["currency"].is_object());
    }
}
