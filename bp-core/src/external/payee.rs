//! External payees: an account at another bank, named by its IBAN, its holder's name and, where
//! needed, its bank's BIC; and the IBANs of this bank's own accounts.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::account_number::AccountNumber;
use crate::iban::{Iban, IbanError, country_iban_length};

/// Longest payee name, in characters: ISO 20022's name limit as the EPC SEPA rulebooks use it
/// (`Max70Text`).
pub const PAYEE_NAME_CHARS_MAX: usize = 70;

/// Why an external payee or the bank's IBAN scheme is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayeeError {
    /// The IBAN is not valid.
    #[error(transparent)]
    Iban(#[from] IbanError),
    /// The name is empty, too long or has a control character.
    #[error("a payee name is 1 to {PAYEE_NAME_CHARS_MAX} characters, without control characters")]
    Name,
    /// The BIC is not 8 or 11 characters of the ISO 9362 form.
    #[error(
        "a BIC is 8 or 11 characters: 4 letters or digits, a 2-letter country, 2 letters or digits, and an optional 3-character branch"
    )]
    Bic,
    /// The bank code does not make IBANs of the country's length with a 12-digit account number.
    #[error("the bank code for {country} must be {expected} letters or digits")]
    BankCode {
        /// The country.
        country: String,
        /// How many characters the bank code must have.
        expected: usize,
    },
}

/// An account holder's name as it travels to another bank: trimmed, 1 to
/// [`PAYEE_NAME_CHARS_MAX`] characters, no control character (so it is one line of a signed
/// text and cannot forge another). Any other Unicode character is kept; a rail that allows
/// only the SEPA Latin set transliterates in its adapter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PayeeName(String);

impl PayeeName {
    /// The name `name`, trimmed, if it is valid.
    pub fn parse(name: &str) -> Result<Self, PayeeError> {
        let name = name.trim();
        let count = name.chars().count();
        if count == 0 || count > PAYEE_NAME_CHARS_MAX || name.chars().any(char::is_control) {
            return Err(PayeeError::Name);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PayeeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bank's business identifier code (ISO 9362), upper case: 4 letters or digits (the
/// institution), 2 letters (the country), 2 letters or digits (the location) and an optional
/// 3-character branch — the `BICFIIdentifier` pattern of ISO 20022.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bic(String);

impl Bic {
    /// The BIC `bic` (surrounding spaces are trimmed, lower case is accepted).
    pub fn parse(bic: &str) -> Result<Self, PayeeError> {
        let bic = bic.trim().to_ascii_uppercase();
        let b = bic.as_bytes();
        let alnum = |s: &[u8]| s.iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let ok = (b.len() == 8 || b.len() == 11)
            && alnum(&b[..4])
            && b[4..6].iter().all(u8::is_ascii_uppercase)
            && alnum(&b[6..]);
        if ok { Ok(Self(bic)) } else { Err(PayeeError::Bic) }
    }

    /// The BIC.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Bic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_serde {
    ($ty:ident, $name:literal, $schema:tt) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = Cow::<'de, str>::deserialize(deserializer)?;
                $ty::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

string_serde!(PayeeName, "PayeeName", {
    "type": "string",
    "minLength": 1,
    "maxLength": PAYEE_NAME_CHARS_MAX,
    "description": "An account holder's name: 1 to 70 characters, no control characters",
});
string_serde!(Bic, "Bic", {
    "type": "string",
    "pattern": "^[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}([A-Z0-9]{3})?$",
    "description": "A bank's business identifier code (ISO 9362)",
});

/// An account at another bank: where an interbank payment goes, or where one came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalAccount {
    /// The account.
    pub iban: Iban,
    /// Its holder's name.
    pub name: PayeeName,
    /// Its bank, when known (SEPA routes by IBAN alone; other rails need it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bic: Option<Bic>,
}

impl ExternalAccount {
    /// Validates an IBAN (electronic or print form), a name and an optional BIC.
    pub fn parse(iban: &str, name: &str, bic: Option<&str>) -> Result<Self, PayeeError> {
        Ok(Self { iban: Iban::parse(iban)?, name: PayeeName::parse(name)?, bic: bic.map(Bic::parse).transpose()? })
    }
}

/// Digits of an account number of this bank in its IBAN.
const ACCOUNT_DIGITS: usize = 12;

/// How this bank's accounts are written as IBANs: the configured country and bank code, then
/// the 12 digits of the account number (check digits included), with the IBAN's check digits
/// computed. The bank code's length is whatever makes the country's IBAN length (Italy: 11, a
/// check letter, ABI and CAB; Switzerland: 5); a national check digit inside the bank code (as
/// Italy's CIN) is the configuration's business, since it does not depend on the account here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankIbans {
    country: String,
    bank_code: String,
}

impl BankIbans {
    /// The scheme of `country` (two letters) and `bank_code` (letters or digits, of the length
    /// the country's IBAN needs).
    pub fn new(country: &str, bank_code: &str) -> Result<Self, PayeeError> {
        let country = country.to_ascii_uppercase();
        let bank_code = bank_code.to_ascii_uppercase();
        let length =
            country_iban_length(&country).ok_or_else(|| IbanError::UnknownCountry { country: country.clone() })?;
        let expected = length.saturating_sub(4 + ACCOUNT_DIGITS);
        if bank_code.len() != expected || !bank_code.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) {
            return Err(PayeeError::BankCode { country, expected });
        }
        // The scheme must give valid IBANs: try it once on the first account number.
        let scheme = Self { country, bank_code };
        let first = AccountNumber::from_serial(0).map_err(|_| PayeeError::Name)?;
        Iban::from_bban(&scheme.country, &format!("{}{first}", scheme.bank_code))?;
        Ok(scheme)
    }

    /// The IBAN of this bank's account `number`.
    pub fn iban_of(&self, number: AccountNumber) -> Iban {
        // `new` checked the country and the length, and an account number is 12 digits, so
        // every number gives a valid IBAN.
        Iban::from_bban(&self.country, &format!("{}{number}", self.bank_code))
            .unwrap_or_else(|e| unreachable!("a checked IBAN scheme gives valid IBANs: {e}"))
    }

    /// The account number of `iban`, when it is one of this bank's IBANs.
    pub fn account_number_of(&self, iban: &Iban) -> Option<AccountNumber> {
        if iban.country() != self.country {
            return None;
        }
        let digits = iban.bban().strip_prefix(&self.bank_code)?;
        AccountNumber::parse(digits).ok().filter(|_| digits.len() == ACCOUNT_DIGITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_1_to_70_characters_without_control_characters() {
        assert_eq!(PayeeName::parse("  Zoë O'Brien & Co <Ltd>  ").expect("name").as_str(), "Zoë O'Brien & Co <Ltd>");
        assert!(PayeeName::parse(&"é".repeat(PAYEE_NAME_CHARS_MAX)).is_ok(), "characters, not bytes");
        for bad in [
            String::new(),
            "   ".to_owned(),
            "é".repeat(PAYEE_NAME_CHARS_MAX + 1),
            "a\nnonce:x".to_owned(),
            "a\u{7}".to_owned(),
            "a\u{85}b".to_owned(),
        ] {
            assert_eq!(PayeeName::parse(&bad), Err(PayeeError::Name), "{bad:?}");
        }
    }

    #[test]
    fn bics_are_8_or_11_characters_of_the_iso_9362_form() {
        assert_eq!(Bic::parse("deutdeff").expect("bic").as_str(), "DEUTDEFF");
        assert_eq!(Bic::parse(" DEUTDEFF500 ").expect("bic").as_str(), "DEUTDEFF500");
        assert!(Bic::parse("1234DEFF").is_ok(), "ISO 9362:2014 allows digits in the institution code");
        for bad in ["", "DEUTDEF", "DEUTDEFF5", "DEUTDEFF50", "DEUTDEFF5000", "DEUT1EFF", "DEUTDEF-", "DEUTDEFFé"] {
            assert_eq!(Bic::parse(bad), Err(PayeeError::Bic), "{bad:?}");
        }
    }

    #[test]
    fn external_accounts_validate_each_part() {
        let a = ExternalAccount::parse("de89 3704 0044 0532 0130 00", " Ada ", Some("COBADEFFXXX")).expect("valid");
        assert_eq!(a.iban.as_str(), "DE89370400440532013000");
        assert_eq!(a.name.as_str(), "Ada");
        assert!(matches!(ExternalAccount::parse("DE88370400440532013000", "Ada", None), Err(PayeeError::Iban(_))));
        assert_eq!(ExternalAccount::parse("DE89370400440532013000", "", None), Err(PayeeError::Name));
        assert_eq!(ExternalAccount::parse("DE89370400440532013000", "Ada", Some("X")), Err(PayeeError::Bic));
        let json = serde_json::to_value(&a).expect("json");
        assert_eq!(json["iban"], "DE89370400440532013000");
        assert_eq!(serde_json::from_value::<ExternalAccount>(json).expect("back"), a);
        let bad = serde_json::json!({ "iban": "DE89370400440532013000", "name": "a\nb" });
        assert!(serde_json::from_value::<ExternalAccount>(bad).is_err());
    }

    #[test]
    fn the_banks_ibans_are_its_account_numbers_with_check_digits() {
        let it = BankIbans::new("IT", "X0542811101").expect("scheme");
        let number = AccountNumber::from_serial(1_234_567).expect("number");
        let iban = it.iban_of(number);
        assert_eq!(iban.as_str().len(), 27);
        assert_eq!(iban.bban(), format!("X0542811101{number}"));
        assert_eq!(Iban::parse(iban.as_str()), Ok(iban.clone()), "valid check digits");
        assert_eq!(it.account_number_of(&iban), Some(number));
        // Another bank's IBAN, or ours with a number whose check digits are wrong, is not ours.
        assert_eq!(it.account_number_of(&Iban::parse("DE89370400440532013000").expect("iban")), None);
        let other_bank = Iban::from_bban("IT", &format!("X0542811102{number}")).expect("iban");
        assert_eq!(it.account_number_of(&other_bank), None);
        let bad_digits = Iban::from_bban("IT", "X0542811101000123456700").expect("iban");
        assert_eq!(it.account_number_of(&bad_digits), None);
        // The bank code must make the country's length: DE IBANs have 22 characters.
        assert_eq!(BankIbans::new("DE", "3704"), Err(PayeeError::BankCode { country: "DE".into(), expected: 6 }));
        assert!(BankIbans::new("DE", "370400").is_ok());
        assert!(matches!(BankIbans::new("US", "1"), Err(PayeeError::Iban(IbanError::UnknownCountry { .. }))));
        assert!(BankIbans::new("BE", "").is_ok(), "Belgium's 16 characters leave no bank code");
    }
}
