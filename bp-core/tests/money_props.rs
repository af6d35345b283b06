//! Property tests for `bp_core::money`: decimal parsing/formatting round trips,
//! checked arithmetic against i128 reference arithmetic, and serde round trips.

use bp_core::money::{Currency, Money, MoneyError, format_amount_minor, parse_amount_minor};
use proptest::prelude::*;

fn any_currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(Currency::all().collect::<Vec<_>>())
}

fn any_money() -> impl Strategy<Value = Money> {
    (any::<i64>(), any_currency()).prop_map(|(amount, currency)| Money::new(amount, currency))
}

/// Amounts biased towards the i64 boundaries, where overflow happens.
fn edgy_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        (0i64..1000).prop_map(|d| i64::MAX - d),
        (0i64..1000).prop_map(|d| i64::MIN + d),
        -1000i64..1000,
    ]
}

/// Independent reference for the canonical form of a syntactically valid
/// decimal string with at most `exponent` decimals.
fn canonical(s: &str, exponent: u8) -> String {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac_part) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int_trimmed = int_part.trim_start_matches('0');
    let int_digits = if int_trimmed.is_empty() { "0" } else { int_trimmed };
    let mut frac = frac_part.to_string();
    while frac.len() < usize::from(exponent) {
        frac.push('0');
    }
    let is_zero = int_digits == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if negative && !is_zero { "-" } else { "" };
    if exponent == 0 { format!("{sign}{int_digits}") } else { format!("{sign}{int_digits}.{frac}") }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn helper_round_trip_every_exponent(amount in edgy_i64(), exponent in 0u8..=18) {
        let text = format_amount_minor(amount, exponent);
        prop_assert_eq!(parse_amount_minor(&text, exponent), Ok(amount), "text {}", text);
    }

    #[test]
    fn money_round_trip_every_currency(money in any_money()) {
        let text = money.to_decimal_string();
        prop_assert_eq!(&text, &money.to_string());
        prop_assert_eq!(Money::parse(&text, money.currency()), Ok(money));
        let decimals = text.split_once('.').map_or(0, |(_, f)| f.len());
        prop_assert_eq!(decimals, usize::from(money.currency().exponent()));
    }

    #[test]
    fn format_of_parse_is_canonical(
        negative in any::<bool>(),
        int_part in "[0-9]{1,19}",
        frac_part in prop::option::of("[0-9]{1,4}"),
        currency in any_currency(),
    ) {
        let mut s = String::new();
        if negative {
            s.push('-');
        }
        s.push_str(&int_part);
        if let Some(frac) = &frac_part {
            s.push('.');
            s.push_str(frac);
        }
        let exponent = currency.exponent();
        let frac_len = frac_part.as_ref().map_or(0, String::len);
        match Money::parse(&s, currency) {
            Ok(money) => {
                prop_assert!(frac_len <= usize::from(exponent));
                prop_assert_eq!(money.to_decimal_string(), canonical(&s, exponent));
                // Canonical text is a fixed point.
                prop_assert_eq!(Money::parse(&money.to_decimal_string(), currency), Ok(money));
            }
            Err(MoneyError::TooManyDecimals { exponent: e, currency: c }) => {
                prop_assert!(frac_len > usize::from(exponent));
                prop_assert_eq!(e, exponent);
                prop_assert_eq!(c, Some(currency));
            }
            Err(MoneyError::Overflow) => {
                // Must genuinely be out of range: check with i128 arithmetic.
                let canon = canonical(&s, exponent).replace('.', "");
                let value: i128 = canon.parse().unwrap_or(i128::MAX);
                prop_assert!(i64::try_from(value).is_err(), "{} overflowed", s);
            }
            Err(other) => prop_assert!(false, "unexpected error {other:?} for {s}"),
        }
    }

    #[test]
    fn too_many_decimals_rejected(
        int_part in "-?[0-9]{1,6}",
        extra in 1usize..6,
        currency in any_currency(),
    ) {
        let frac = "7".repeat(usize::from(currency.exponent()) + extra);
        let s = format!("{int_part}.{frac}");
        prop_assert_eq!(
            Money::parse(&s, currency),
            Err(MoneyError::TooManyDecimals { exponent: currency.exponent(), currency: Some(currency) })
        );
    }

    #[test]
    fn add_sub_agree_with_i128(a in edgy_i64(), b in edgy_i64(), currency in any_currency()) {
        let x = Money::new(a, currency);
        let y = Money::new(b, currency);
        let sum = i128::from(a) + i128::from(b);
        match i64::try_from(sum) {
            Ok(s) => prop_assert_eq!(x.checked_add(y), Ok(Money::new(s, currency))),
            Err(_) => prop_assert_eq!(x.checked_add(y), Err(MoneyError::Overflow)),
        }
        let diff = i128::from(a) - i128::from(b);
        match i64::try_from(diff) {
            Ok(d) => prop_assert_eq!(x.checked_sub(y), Ok(Money::new(d, currency))),
            Err(_) => prop_assert_eq!(x.checked_sub(y), Err(MoneyError::Overflow)),
        }
    }

    #[test]
    fn neg_and_mul_agree_with_i128(a in edgy_i64(), k in edgy_i64(), currency in any_currency()) {
        let x = Money::new(a, currency);
        match i64::try_from(-i128::from(a)) {
            Ok(n) => prop_assert_eq!(x.checked_neg(), Ok(Money::new(n, currency))),
            Err(_) => prop_assert_eq!(x.checked_neg(), Err(MoneyError::Overflow)),
        }
        match i64::try_from(i128::from(a) * i128::from(k)) {
            Ok(p) => prop_assert_eq!(x.checked_mul_int(k), Ok(Money::new(p, currency))),
            Err(_) => prop_assert_eq!(x.checked_mul_int(k), Err(MoneyError::Overflow)),
        }
    }

    #[test]
    fn add_commutes_and_sub_inverts(a in edgy_i64(), b in edgy_i64(), currency in any_currency()) {
        let x = Money::new(a, currency);
        let y = Money::new(b, currency);
        prop_assert_eq!(x.checked_add(y), y.checked_add(x));
        if let Ok(sum) = x.checked_add(y) {
            prop_assert_eq!(sum.checked_sub(y), Ok(x));
            prop_assert_eq!(sum.checked_sub(x), Ok(y));
        }
        if let Ok(diff) = x.checked_sub(y) {
            prop_assert_eq!(diff.checked_add(y), Ok(x));
        }
    }

    #[test]
    fn currency_mismatch_always_errors(a in any::<i64>(), b in any::<i64>(), c1 in any_currency(), c2 in any_currency()) {
        prop_assume!(c1 != c2);
        let x = Money::new(a, c1);
        let y = Money::new(b, c2);
        let expected = Err(MoneyError::CurrencyMismatch { left: c1, right: c2 });
        prop_assert_eq!(x.checked_add(y), expected.clone());
        prop_assert_eq!(x.checked_sub(y), expected);
    }

    #[test]
    fn money_serde_round_trip(money in any_money()) {
        let json = serde_json::to_string(&money).unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        prop_assert!(value["amount"].is_string());
        let text = money.to_decimal_string();
        prop_assert_eq!(value["amount"].as_str(), Some(text.as_str()));
        prop_assert_eq!(value["currency"].as_str(), Some(money.currency().code()));
        prop_assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        prop_assert_eq!(serde_json::from_value::<Money>(value).unwrap(), money);
    }

    #[test]
    fn currency_serde_round_trip(currency in any_currency()) {
        let json = serde_json::to_string(&currency).unwrap();
        prop_assert_eq!(&json, &format!("\"{}\"", currency.code()));
        prop_assert_eq!(serde_json::from_str::<Currency>(&json).unwrap(), currency);
        prop_assert_eq!(currency.code().parse::<Currency>(), Ok(currency));
    }

    #[test]
    fn unknown_currency_codes_are_rejected(code in "[A-Za-z]{0,5}") {
        let known = Currency::all().any(|c| c.code() == code);
        prop_assert_eq!(Currency::from_code(&code).is_ok(), known);
        if !known {
            let err = serde_json::from_str::<Currency>(&format!("\"{code}\"")).unwrap_err();
            prop_assert!(err.to_string().contains(&code), "{}", err);
        }
    }

    #[test]
    fn garbage_never_panics(s in "\\PC{0,40}", exponent in 0u8..=20, currency in any_currency()) {
        let _ = parse_amount_minor(&s, exponent);
        let _ = Money::parse(&s, currency);
        let _ = Currency::from_code(&s);
        let json = serde_json::json!({ "amount": s, "currency": currency.code() }).to_string();
        let _ = serde_json::from_str::<Money>(&json);
    }

    #[test]
    fn near_miss_garbage_never_panics(s in "[-+0-9.,e _]{0,30}", currency in any_currency()) {
        match Money::parse(&s, currency) {
            Ok(money) => {
                // Anything accepted must be in canonical-compatible form.
                prop_assert_eq!(money.to_decimal_string(), canonical(&s, currency.exponent()));
            }
            Err(err) => {
                // Messages never echo the input back.
                let msg = err.to_string();
                prop_assert!(msg.len() < 100, "{}", msg);
            }
        }
    }
}
