//! Customers: natural persons and legal entities, with the profile fields the apps show (FR1, FR4).

use std::fmt;

use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::error::LedgerError;
use crate::ids::CustomerId;

/// Upper bound of the serialised size of a customer's `extra` map, in bytes.
pub const EXTRA_BYTES_MAX: usize = 16 * 1024;
/// Upper bound of any free-text profile field, in characters.
pub const TEXT_CHARS_MAX: usize = 200;
/// Upper bound of the number of identity documents of one customer.
pub const DOCUMENTS_MAX: usize = 16;

/// A login name: 3 to 32 characters of `a-z`, `0-9`, `.`, `_`, `-`, starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct Username(String);

impl Username {
    /// Validates a username.
    pub fn parse(s: &str) -> Result<Self, LedgerError> {
        let ok_len = (3..=32).contains(&s.len());
        let ok_first = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let ok_chars =
            s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if ok_len && ok_first && ok_chars {
            Ok(Self(s.to_owned()))
        } else {
            Err(LedgerError::InvalidField {
                field: "username",
                reason: "3 to 32 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            })
        }
    }

    /// The username as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = LedgerError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Username> for String {
    fn from(u: Username) -> Self {
        u.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A natural person's identity fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PersonProfile {
    /// Given name(s).
    pub given_name: String,
    /// Family name(s).
    pub family_name: String,
    /// Date of birth, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<NaiveDate>,
}

/// How and where a company was incorporated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Incorporation {
    /// ISO 3166-1 alpha-2 country of incorporation.
    pub country: String,
    /// Date of incorporation.
    pub date: NaiveDate,
    /// Number in the commercial register.
    pub registry_number: String,
}

/// The fields a bank needs to open an account for a company.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LegalEntityProfile {
    /// Registered legal name.
    pub legal_name: String,
    /// Tax identification number.
    pub tax_id: String,
    /// Full name of the legal representative.
    pub legal_representative: String,
    /// Incorporation data.
    pub incorporation: Incorporation,
}

/// Whether the customer is a person or a company, with the fields of each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Party {
    /// A natural person.
    Person(PersonProfile),
    /// A legal entity (company, association, …).
    LegalEntity(LegalEntityProfile),
}

/// The kind of an identity document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// National identity card.
    IdentityCard,
    /// Passport.
    Passport,
    /// Driving licence.
    DrivingLicence,
    /// Residence permit.
    ResidencePermit,
}

/// An identity document of a customer. Its number is personal data: never log it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityDocument {
    /// Kind of document.
    pub kind: DocumentKind,
    /// Document number.
    pub number: String,
    /// ISO 3166-1 alpha-2 issuing country.
    pub issuing_country: String,
    /// Expiry date, when the document has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_on: Option<NaiveDate>,
}

impl IdentityDocument {
    /// The number with all but its last four characters masked, for display.
    pub fn masked_number(&self) -> String {
        let chars: Vec<char> = self.number.chars().collect();
        let keep = chars.len().min(4);
        let mut out: String = "•".repeat(chars.len() - keep);
        out.extend(&chars[chars.len() - keep..]);
        out
    }
}

impl fmt::Debug for IdentityDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityDocument")
            .field("kind", &self.kind)
            .field("number", &"<redacted>")
            .field("issuing_country", &self.issuing_country)
            .finish()
    }
}

/// Contact data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number in E.164 form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Postal address, free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Biometric enrolment of the customer's device. The bank never stores biometric data: the
/// device's biometric unlock of its key is the inherence factor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BiometricEnrolment {
    /// No device has enrolled biometric unlock.
    NotEnrolled,
    /// A device unlocks its key with the customer's biometric.
    Enrolled {
        /// Identifier of the enrolled device.
        device_id: String,
        /// When enrolment happened.
        enrolled_at: crate::Timestamp,
    },
}

/// Know-your-customer status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KycStatus {
    /// Checks not finished.
    Pending,
    /// Identity verified.
    Verified,
    /// Checks failed.
    Rejected,
}

/// What the bank supplies to open a customer. The id is made by the caller and makes the
/// request idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Caller-made id.
    pub id: CustomerId,
    /// Unique login name.
    pub username: Username,
    /// Person or legal entity.
    pub party: Party,
    /// Identity documents.
    #[serde(default)]
    pub documents: Vec<IdentityDocument>,
    /// Contact data.
    #[serde(default)]
    pub contact: Contact,
    /// Reference of the profile photo (a storage key or URL path), never the image itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_ref: Option<String>,
    /// KYC status at opening.
    pub kyc: KycStatus,
    /// Extra fields without schema migrations.
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl NewCustomer {
    /// A request to open a natural person known so far by name only: no documents, contact
    /// data, photo or extra fields yet (each can be added later by a profile update).
    pub fn person(id: CustomerId, username: Username, given_name: &str, family_name: &str, kyc: KycStatus) -> Self {
        Self {
            id,
            username,
            party: Party::Person(PersonProfile {
                given_name: given_name.to_owned(),
                family_name: family_name.to_owned(),
                date_of_birth: None,
            }),
            documents: Vec::new(),
            contact: Contact::default(),
            photo_ref: None,
            kyc,
            extra: serde_json::Map::new(),
        }
    }
}

/// A customer of the bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    /// Id.
    pub id: CustomerId,
    /// Unique login name.
    pub username: Username,
    /// Person or legal entity.
    pub party: Party,
    /// Identity documents.
    pub documents: Vec<IdentityDocument>,
    /// Contact data.
    pub contact: Contact,
    /// Reference of the profile photo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub photo_ref: Option<String>,
    /// Biometric enrolment status.
    pub biometric: BiometricEnrolment,
    /// KYC status.
    pub kyc: KycStatus,
    /// Extra fields without schema migrations.
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Incremented by every change; used for optimistic concurrency.
    pub version: u64,
    /// When the customer was opened.
    pub created_at: Timestamp,
    /// When the customer last changed.
    pub updated_at: Timestamp,
}

impl Customer {
    /// The customer that `req` opens at `at`: version 1, not enrolled for biometrics.
    pub fn opened(req: &NewCustomer, at: Timestamp) -> Self {
        Self {
            id: req.id,
            username: req.username.clone(),
            party: req.party.clone(),
            documents: req.documents.clone(),
            contact: req.contact.clone(),
            photo_ref: req.photo_ref.clone(),
            biometric: BiometricEnrolment::NotEnrolled,
            kyc: req.kyc,
            extra: req.extra.clone(),
            version: 1,
            created_at: at,
            updated_at: at,
        }
    }

    /// The display name: the person's full name or the company's legal name.
    pub fn display_name(&self) -> String {
        match &self.party {
            Party::Person(p) => format!("{} {}", p.given_name, p.family_name),
            Party::LegalEntity(l) => l.legal_name.clone(),
        }
    }

    /// Whether `req` is the request that opened this customer (its identity fields, which never
    /// change), so that a retried opening replays instead of conflicting.
    pub fn opening_request_matches(&self, req: &NewCustomer) -> bool {
        self.id == req.id && self.username == req.username && self.party == req.party
    }
}

/// A change to a customer's profile. `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerUpdate {
    /// New contact data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// New photo reference (`Some(None)`, on the wire `null`, removes it).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present_or_null")]
    pub photo_ref: Option<Option<String>>,
    /// New biometric enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub biometric: Option<BiometricEnrolment>,
    /// New KYC status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kyc: Option<KycStatus>,
    /// Replacement documents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<Vec<IdentityDocument>>,
    /// Keys to set in `extra` (a JSON null removes the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Reads a field that is absent (`None`, by `default`), `null` (`Some(None)`) or a value
/// (`Some(Some(v))`): JSON's way of saying "remove" apart from "leave as it is".
fn present_or_null<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
