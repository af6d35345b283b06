//! International Bank Account Numbers (ISO 13616), validated against the SWIFT
//! IBAN registry's country lengths and the ISO 7064 MOD 97-10 check digits.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Inputs longer than this (in bytes, before removing spaces) are rejected
/// before any other work.
pub const MAX_INPUT_LEN: usize = 64;

/// Shortest possible electronic IBAN prefix plus one BBAN character.
const MIN_LEN: usize = 5;

/// Countries of the SWIFT IBAN registry and their IBAN lengths, sorted by
/// country code. Territories that use another country's IBAN format (e.g.
/// the French overseas departments, Åland, Jersey) use that country's code
/// and are therefore not listed separately.
static COUNTRIES: [(&str, usize); 89] = [
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

/// The IBAN length for a registry country, or `None` if it has no IBAN.
pub fn country_iban_length(country: &str) -> Option<usize> {
    COUNTRIES
        .binary_search_by(|(code, _)| (*code).cmp(country))
        .ok()
        .and_then(|i| COUNTRIES.get(i))
        .map(|(_, len)| *len)
}

/// Every registry country code with its IBAN length, sorted by code.
pub fn iban_countries() -> impl Iterator<Item = (&'static str, usize)> {
    COUNTRIES.iter().copied()
}

/// Errors produced when parsing an [`Iban`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IbanError {
    /// The input is longer than [`MAX_INPUT_LEN`] bytes.
    #[error("IBAN input too long: at most {max} characters", max = MAX_INPUT_LEN)]
    TooLong,
    /// Too few characters to hold a country code, check digits and an account.
    #[error("IBAN too short")]
    TooShort,
    /// Not a letter/digit where one is required (country code: letters; check
    /// digits: digits; account part: letters or digits).
    #[error("IBAN contains an invalid character")]
    InvalidCharacter,
    /// The country code has no IBAN format in the registry.
    #[error("unknown IBAN country {country:?}")]
    UnknownCountry {
        /// The two-letter country code.
        country: String,
    },
    /// The length does not match the country's IBAN length.
    #[error("IBAN for {country} must have {expected} characters, found {actual}")]
    WrongLength {
        /// The two-letter country code.
        country: String,
        /// The registry length for that country.
        expected: usize,
        /// The length of the input without spaces.
        actual: usize,
    },
    /// The MOD 97-10 check digits do not match.
    #[error("IBAN check digits are wrong")]
    BadCheckDigits,
}

/// A validated IBAN, stored in electronic format (uppercase, no spaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iban(String);

/// Value of an uppercase alphanumeric character in the MOD 97 computation
/// (`0`–`9` → 0–9, `A`–`Z` → 10–35).
fn char_value(b: u8) -> u32 {
    if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 }
}

/// Remainder modulo 97 of the rearranged IBAN (`bban + country + check`),
/// computed digit by digit so that no big integer is needed. All bytes must be
/// ASCII digits or uppercase letters.
fn mod97(country: &[u8], check: &[u8], bban: &[u8]) -> u32 {
    bban.iter().chain(country).chain(check).fold(0u32, |rem, &b| {
        let v = char_value(b);
        if v < 10 { (rem * 10 + v) % 97 } else { (rem * 100 + v) % 97 }
    })
}

impl Iban {
    /// Parses an IBAN in electronic or print format (spaces are ignored,
    /// lowercase is accepted).
    pub fn parse(s: &str) -> Result<Iban, IbanError> {
        if s.len() > MAX_INPUT_LEN {
            return Err(IbanError::TooLong);
        }
        let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').map(|b| b.to_ascii_uppercase()).collect();
        if compact.len() < MIN_LEN {
            return Err(IbanError::TooShort);
        }
        let (country, rest) = compact.split_at(2);
        let (check, bban) = rest.split_at(2);
        if !country.iter().all(u8::is_ascii_uppercase)
            || !check.iter().all(u8::is_ascii_digit)
            || !bban.iter().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            return Err(IbanError::InvalidCharacter);
        }
        // Only ASCII letters/digits remain, so this is valid UTF-8 and the
        // country slice is exactly two ASCII letters.
        let country_str = String::from_utf8_lossy(country).into_owned();
        let expected = country_iban_length(&country_str)
            .ok_or_else(|| IbanError::UnknownCountry { country: country_str.clone() })?;
        if compact.len() != expected {
            return Err(IbanError::WrongLength { country: country_str, expected, actual: compact.len() });
        }
        // ISO 13616 check digits are 02..=98; 00, 01 and 99 are never issued
        // even though 01/99 can satisfy the congruence.
        let check_value = char_value(check[0]) * 10 + char_value(check[1]);
        if !(2..=98).contains(&check_value) || mod97(country, check, bban) != 1 {
            return Err(IbanError::BadCheckDigits);
        }
        Ok(Iban(String::from_utf8_lossy(&compact).into_owned()))
    }

    /// Builds the IBAN for a country and BBAN (account part) by computing the
    /// check digits. The BBAN may be lowercase and contain spaces.
    pub fn from_bban(country: &str, bban: &str) -> Result<Iban, IbanError> {
        if country.len() + 2 + bban.len() > MAX_INPUT_LEN {
            return Err(IbanError::TooLong);
        }
        let country_up = country.to_ascii_uppercase();
        let bban_up: Vec<u8> = bban.bytes().filter(|b| *b != b' ').map(|b| b.to_ascii_uppercase()).collect();
        if country_up.len() != 2 || bban_up.is_empty() {
            return Err(IbanError::TooShort);
        }
        if !country_up.bytes().all(|b| b.is_ascii_uppercase())
            || !bban_up.iter().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            return Err(IbanError::InvalidCharacter);
        }
        let check = 98 - mod97(country_up.as_bytes(), b"00", &bban_up);
        let mut candidate = format!("{country_up}{check:02}");
        candidate.push_str(&String::from_utf8_lossy(&bban_up));
        Iban::parse(&candidate)
    }

    /// The two-letter country code, e.g. `"DE"`.
    pub fn country(&self) -> &str {
        &self.0[..2]
    }

    /// The two check digits, e.g. `"89"`.
    pub fn check_digits(&self) -> &str {
        &self.0[2..4]
    }

    /// The country-specific account part (BBAN), after the check digits.
    pub fn bban(&self) -> &str {
        &self.0[4..]
    }

    /// The electronic format: uppercase, no spaces, e.g. `DE89370400440532013000`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The print format in groups of four, e.g. `DE89 3704 0044 0532 0130 00`
    /// (the same as `Display`).
    pub fn to_print_format(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Iban {
    /// Writes the print format: groups of four characters separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            // The stored form is ASCII, so every chunk is valid UTF-8.
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl FromStr for Iban {
    type Err = IbanError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Iban::parse(s)
    }
}

impl AsRef<str> for Iban {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Iban {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Iban {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        Iban::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Iban {
    fn schema_name() -> Cow<'static, str> {
        "Iban".into()
    }

    fn schema_id() -> Cow<'static, str> {
        "bp_core::iban::Iban".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$",
            "description": "IBAN in electronic format (uppercase, no spaces)",
            "examples": ["DE89370400440532013000"],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: [(&str, &str); 5] = [
        ("DE89 3704 0044 0532 0130 00", "DE89370400440532013000"),
        ("GB82 WEST 1234 5698 7654 32", "GB82WEST12345698765432"),
        ("FR14 2004 1010 0505 0001 3M02 606", "FR1420041010050500013M02606"),
        ("NL91ABNA0417164300", "NL91ABNA0417164300"),
        ("CH9300762011623852957", "CH9300762011623852957"),
    ];

    #[test]
    fn registry_table_is_sorted_and_sane() {
        for pair in COUNTRIES.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} !< {}", pair[0].0, pair[1].0);
        }
        for (code, len) in COUNTRIES {
            assert!(code.bytes().all(|b| b.is_ascii_uppercase()));
            assert!((15..=34).contains(&len), "{code}");
        }
        let expected = [
            ("DE", 22),
            ("FR", 27),
            ("GB", 22),
            ("ES", 24),
            ("IT", 27),
            ("NL", 18),
            ("BE", 16),
            ("CH", 21),
            ("AT", 20),
            ("PL", 28),
            ("SE", 24),
            ("NO", 15),
        ];
        for (code, len) in expected {
            assert_eq!(country_iban_length(code), Some(len), "{code}");
        }
        assert_eq!(country_iban_length("US"), None);
        assert_eq!(iban_countries().count(), COUNTRIES.len());
    }

    #[test]
    fn parses_known_valid_ibans() {
        for (print, electronic) in VALID {
            for input in [print.to_string(), electronic.to_string(), print.to_lowercase()] {
                let iban = Iban::parse(&input).unwrap();
                assert_eq!(iban.as_str(), electronic);
                assert_eq!(
                    iban.to_string(),
                    print
                        .replace(' ', "")
                        .as_bytes()
                        .chunks(4)
                        .map(|c| std::str::from_utf8(c).unwrap())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                assert_eq!(input.parse::<Iban>().unwrap(), iban);
            }
        }
        let de = Iban::parse("DE89 3704 0044 0532 0130 00").unwrap();
        assert_eq!(de.to_string(), "DE89 3704 0044 0532 0130 00");
        assert_eq!(de.to_print_format(), "DE89 3704 0044 0532 0130 00");
        assert_eq!(de.country(), "DE");
        assert_eq!(de.check_digits(), "89");
        assert_eq!(de.bban(), "370400440532013000");
        assert_eq!(de.as_ref(), "DE89370400440532013000");
    }

    #[test]
    fn from_bban_computes_check_digits() {
        for (_, electronic) in VALID {
            let iban = Iban::from_bban(&electronic[..2], &electronic[4..]).unwrap();
            assert_eq!(iban.as_str(), electronic);
        }
        assert_eq!(Iban::from_bban("US", "123456789012345"), Err(IbanError::UnknownCountry { country: "US".into() }));
    }

    #[test]
    fn error_variants() {
        use IbanError::*;
        let long = "DE89".repeat(20);
        let cases: Vec<(&str, IbanError)> = vec![
            (&long, TooLong),
            ("", TooShort),
            ("DE89", TooShort),
            ("   DE  8 ", TooShort),
            ("D189370400440532013000", InvalidCharacter),
            ("DEX9370400440532013000", InvalidCharacter),
            ("DE89-3704-0044-0532-0130-00", InvalidCharacter),
            ("DE89 3704 0044 0532 0130 0ä", InvalidCharacter),
            ("DE89\t370400440532013000", InvalidCharacter),
            ("US64SVBKUS6S3300958879", UnknownCountry { country: "US".into() }),
            ("DE89 3704 0044 0532 0130 000", WrongLength { country: "DE".into(), expected: 22, actual: 23 }),
            ("NL91ABNA041716430", WrongLength { country: "NL".into(), expected: 18, actual: 17 }),
            ("DE88 3704 0044 0532 0130 00", BadCheckDigits),
            ("DE89 3704 0044 0532 0130 01", BadCheckDigits),
            ("GB82 WEST 1234 5698 7654 23", BadCheckDigits),
            ("FR14 2004 1010 0505 0001 3M02 607", BadCheckDigits),
            ("NL91ABNB0417164300", BadCheckDigits),
            ("CH9300762011623852958", BadCheckDigits),
            ("CH3900762011623852957", BadCheckDigits),
        ];
        for (input, expected) in cases {
            assert_eq!(Iban::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn rejects_out_of_range_check_digits_even_if_congruent() {
        // For check digits 98, "01" also satisfies mod 97 == 1 but is never issued.
        let mut exercised = false;
        for n in 0u32..2000 {
            let iban = Iban::from_bban("DE", &format!("{n:018}")).unwrap();
            if iban.check_digits() == "98" {
                let forged = format!("DE01{}", iban.bban());
                assert_eq!(Iban::parse(&forged), Err(IbanError::BadCheckDigits));
                exercised = true;
                break;
            }
        }
        assert!(exercised);
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            IbanError::WrongLength { country: "DE".into(), expected: 22, actual: 21 }.to_string(),
            "IBAN for DE must have 22 characters, found 21"
        );
        assert_eq!(IbanError::UnknownCountry { country: "US".into() }.to_string(), "unknown IBAN country \"US\"");
        assert_eq!(IbanError::TooLong.to_string(), "IBAN input too long: at most 64 characters");
    }

    #[test]
    fn serde_and_schema() {
        let iban = Iban::parse("DE89 3704 0044 0532 0130 00").unwrap();
        let json = serde_json::to_string(&iban).unwrap();
        assert_eq!(json, "\"DE89370400440532013000\"");
        assert_eq!(serde_json::from_str::<Iban>(&json).unwrap(), iban);
        assert!(serde_json::from_str::<Iban>("\"DE88370400440532013000\"").is_err());
        let err = serde_json::from_str::<Iban>("\"XX00\"").unwrap_err();
        assert!(err.to_string().contains("too short"), "{err}");
        let schema = serde_json::to_value(schemars::schema_for!(Iban)).unwrap();
        assert_eq!(schema["type"], "string");
    }
}
