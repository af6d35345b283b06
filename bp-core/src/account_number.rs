//! The bank's own 12-digit account numbers: a 10-digit serial followed by two
//! ISO 7064 MOD 97-10 check digits (the same scheme as IBAN check digits).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of serial digits.
const SERIAL_DIGITS: usize = 10;
/// Number of digits in the canonical (ungrouped) form.
const TOTAL_DIGITS: usize = 12;
/// Length of the grouped form `1234 5678 9012`.
const GROUPED_LEN: usize = 14;
/// Exclusive upper bound of the serial (10^10).
const SERIAL_LIMIT: u64 = 10_000_000_000;

/// Errors produced when building or parsing an [`AccountNumber`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountNumberError {
    /// The serial does not fit in 10 decimal digits.
    #[error("account serial {serial} out of range: must be below 10000000000")]
    SerialOutOfRange {
        /// The rejected serial.
        serial: u64,
    },
    /// The input was empty.
    #[error("account number is empty")]
    Empty,
    /// The input contains something other than digits, spaces and hyphens.
    #[error("account number contains an invalid character (only digits, spaces and hyphens)")]
    InvalidCharacter,
    /// The input does not hold exactly 12 digits.
    #[error("account number must have 12 digits, found {actual}")]
    WrongLength {
        /// How many digits the input held.
        actual: usize,
    },
    /// Separators are not in the `1234 5678 9012` / `1234-5678-9012` layout.
    #[error("account number grouping must be 4-4-4 with single spaces or single hyphens")]
    InvalidGrouping,
    /// The two check digits do not match the serial.
    #[error("account number check digits are wrong")]
    BadCheckDigits,
}

/// A bank account number: a 10-digit serial plus two MOD 97-10 check digits.
///
/// Stored as the serial; the check digits are always derived from it, so every
/// value is valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountNumber(u64);

/// ISO 7064 MOD 97-10 check digits of a serial: `98 - (serial * 100 mod 97)`,
/// always in `1..=98`.
fn check_digits_of(serial: u64) -> u64 {
    // serial < 10^10, so serial * 100 < 10^12 cannot overflow a u64.
    98 - (serial * 100) % 97
}

impl AccountNumber {
    /// Builds the account number for a serial, which must be below 10^10.
    pub fn from_serial(serial: u64) -> Result<AccountNumber, AccountNumberError> {
        if serial < SERIAL_LIMIT {
            Ok(AccountNumber(serial))
        } else {
            Err(AccountNumberError::SerialOutOfRange { serial })
        }
    }

    /// The 10-digit serial (without check digits).
    pub fn serial(&self) -> u64 {
        self.0
    }

    /// The two check digits, as a number in `1..=98`.
    pub fn check_digits(&self) -> u8 {
        // Always in 1..=98, so the conversion cannot fail; the fallback is unreachable.
        u8::try_from(check_digits_of(self.0)).unwrap_or(0)
    }

    /// Parses `123456789012`, `1234 5678 9012` or `1234-5678-9012`.
    pub fn parse(s: &str) -> Result<AccountNumber, AccountNumberError> {
        if s.is_empty() {
            return Err(AccountNumberError::Empty);
        }
        let bytes = s.as_bytes();
        if !bytes.iter().all(|b| b.is_ascii_digit() || *b == b' ' || *b == b'-') {
            return Err(AccountNumberError::InvalidCharacter);
        }
        let digit_count = bytes.iter().filter(|b| b.is_ascii_digit()).count();
        if digit_count != TOTAL_DIGITS {
            return Err(AccountNumberError::WrongLength { actual: digit_count });
        }
        if bytes.len() != TOTAL_DIGITS {
            let grouped = bytes.len() == GROUPED_LEN && (bytes[4] == b' ' || bytes[4] == b'-') && bytes[9] == bytes[4];
            if !grouped {
                return Err(AccountNumberError::InvalidGrouping);
            }
        }
        // Exactly 12 ASCII digits remain, so the values below fit easily.
        let (serial, check) =
            bytes.iter().filter(|b| b.is_ascii_digit()).map(|b| u64::from(b - b'0')).enumerate().fold(
                (0u64, 0u64),
                |(serial, check), (i, d)| {
                    if i < SERIAL_DIGITS { (serial * 10 + d, check) } else { (serial, check * 10 + d) }
                },
            );
        if check != check_digits_of(serial) {
            return Err(AccountNumberError::BadCheckDigits);
        }
        Ok(AccountNumber(serial))
    }

    /// The grouped form for people: `1234 5678 9012`.
    pub fn formatted(&self) -> String {
        let plain = self.to_string();
        format!("{} {} {}", &plain[0..4], &plain[4..8], &plain[8..12])
    }
}

impl fmt::Display for AccountNumber {
    /// Writes the 12 digits without grouping.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:010}{:02}", self.0, check_digits_of(self.0))
    }
}

impl FromStr for AccountNumber {
    type Err = AccountNumberError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountNumber::parse(s)
    }
}

impl Serialize for AccountNumber {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        AccountNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for AccountNumber {
    fn schema_name() -> Cow<'static, str> {
        "AccountNumber".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "bp_core::account_number::AccountNumber".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]{12}$",
            "description": "12-digit account number: 10-digit serial + 2 ISO 7064 MOD 97-10 check digits",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_digits_follow_mod_97_10() {
        for serial in [0, 1, 42, 1_234_567_890, SERIAL_LIMIT - 1] {
            let n = AccountNumber::from_serial(serial).unwrap();
            let full: u64 = n.to_string().parse().unwrap();
            assert_eq!(full % 97, 1, "{n}");
            assert!((1..=98).contains(&n.check_digits()));
        }
        // 1234567890 * 100 mod 97 = 6, so the check digits are 98 - 6 = 92.
        let n = AccountNumber::from_serial(1_234_567_890).unwrap();
        assert_eq!(n.check_digits(), 92);
        assert_eq!(n.to_string(), "123456789092");
    }

    #[test]
    fn display_and_formatted() {
        let n = AccountNumber::from_serial(42).unwrap();
        assert_eq!(n.serial(), 42);
        let s = n.to_string();
        assert_eq!(s.len(), 12);
        assert!(s.starts_with("0000000042"));
        assert_eq!(n.formatted(), format!("{} {} {}", &s[..4], &s[4..8], &s[8..]));
    }

    #[test]
    fn parse_accepts_plain_and_grouped() {
        let n = AccountNumber::from_serial(1_234_567_890).unwrap();
        for s in ["123456789092", "1234 5678 9092", "1234-5678-9092"] {
            assert_eq!(AccountNumber::parse(s), Ok(n), "{s}");
            assert_eq!(s.parse::<AccountNumber>(), Ok(n), "{s}");
        }
        assert_eq!(n.formatted(), "1234 5678 9092");
    }

    #[test]
    fn serial_out_of_range() {
        assert_eq!(
            AccountNumber::from_serial(SERIAL_LIMIT),
            Err(AccountNumberError::SerialOutOfRange { serial: SERIAL_LIMIT })
        );
        assert!(AccountNumber::from_serial(u64::MAX).is_err());
    }

    #[test]
    fn parse_errors() {
        use AccountNumberError::*;
        let cases: [(&str, AccountNumberError); 14] = [
            ("", Empty),
            ("12345678909x", InvalidCharacter),
            ("1234.5678.9092", InvalidCharacter),
            ("１２３４", InvalidCharacter),
            ("12345678909", WrongLength { actual: 11 }),
            ("1234567890921", WrongLength { actual: 13 }),
            ("    ", WrongLength { actual: 0 }),
            ("1234 5678-9092", InvalidGrouping),
            ("1234  5678 9092", InvalidGrouping),
            (" 123456789092", InvalidGrouping),
            ("123456789092 ", InvalidGrouping),
            ("12 3456 789092", InvalidGrouping),
            ("123456789093", BadCheckDigits),
            ("123456789091", BadCheckDigits),
        ];
        for (input, expected) in cases {
            assert_eq!(AccountNumber::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn full_number_congruence_is_not_enough() {
        // Serial 0 has check digits 98; "0000000000" + "01" is also ≡ 1 mod 97
        // but is not the canonical check, and must be rejected.
        assert_eq!(AccountNumber::from_serial(0).unwrap().to_string(), "000000000098");
        assert_eq!(AccountNumber::parse("000000000001"), Err(AccountNumberError::BadCheckDigits));
    }

    #[test]
    fn serde_and_schema() {
        let n = AccountNumber::from_serial(1_234_567_890).unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"123456789092\"");
        assert_eq!(serde_json::from_str::<AccountNumber>(&json).unwrap(), n);
        assert!(serde_json::from_str::<AccountNumber>("\"123456789093\"").is_err());
        assert!(serde_json::from_str::<AccountNumber>("123456789092").is_err());
        let schema = serde_json::to_value(schemars::schema_for!(AccountNumber)).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], "^[0-9]{12}$");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AccountNumberError::WrongLength { actual: 3 }.to_string(),
            "account number must have 12 digits, found 3"
        );
        assert_eq!(AccountNumberError::BadCheckDigits.to_string(), "account number check digits are wrong");
    }
}
