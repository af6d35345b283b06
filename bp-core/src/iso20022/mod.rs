//! ISO 20022 messages of the interbank rail (EPC SEPA Credit Transfer, 2019+ rulebooks):
//! [`pacs008`] builds the FI-to-FI customer credit transfer we send (pacs.008.001.08) and reads
//! the ones we receive; [`pacs002`] reads the payment status reports (pacs.002.001.10). The XML
//! is written and read by quick-xml through serde (escaping included), never by hand; inputs
//! are bounded ([`MESSAGE_BYTES_MAX`]) and a malformed one is an [`Iso20022Error`], never a
//! panic. Only what the rail needs is modelled; unknown elements of a message we read are
//! skipped. Elements must be in the default namespace (no prefixes), as the rail sends them.

pub mod pacs002;
pub mod pacs008;

use serde::{Deserialize, Serialize};

use crate::money::{Currency, Money};

/// Largest message read, in bytes.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024;

/// The XML declaration every message starts with.
const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

/// A message that cannot be built or read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Iso20022Error {
    /// Larger than [`MESSAGE_BYTES_MAX`].
    #[error("message larger than {MESSAGE_BYTES_MAX} bytes")]
    TooLarge,
    /// Not well-formed XML of the expected message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Another message or version (its namespace).
    #[error("unexpected message namespace {0:?}")]
    Namespace(String),
    /// A value the message holds is invalid (an IBAN, an amount, a code, …).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The element.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Iso20022Error {
    Iso20022Error::Invalid { field, reason: reason.to_string() }
}

/// Reads `xml` as `T`, bounded in size.
fn read<T: serde::de::DeserializeOwned>(xml: &str) -> Result<T, Iso20022Error> {
    if xml.len() > MESSAGE_BYTES_MAX {
        return Err(Iso20022Error::TooLarge);
    }
    quick_xml::de::from_str(xml).map_err(|e| Iso20022Error::Malformed(e.to_string()))
}

/// Writes `value` as a document with its XML declaration.
fn write<T: Serialize>(value: &T) -> Result<String, Iso20022Error> {
    let mut out = String::from(DECLARATION);
    quick_xml::se::to_writer(&mut out, value).map_err(|e| Iso20022Error::Malformed(e.to_string()))?;
    Ok(out)
}

/// An amount with its currency (`ActiveCurrencyAndAmount`): `<X Ccy="EUR">12.50</X>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Amount {
    #[serde(rename = "@Ccy")]
    ccy: String,
    #[serde(rename = "$text")]
    value: String,
}

impl Amount {
    fn of(money: Money) -> Self {
        Self { ccy: money.currency().code().to_owned(), value: money.to_decimal_string() }
    }

    fn money(&self, field: &'static str) -> Result<Money, Iso20022Error> {
        let currency = Currency::from_code(&self.ccy).map_err(|e| invalid(field, e))?;
        let money = Money::parse(self.value.trim(), currency).map_err(|e| invalid(field, e))?;
        if !money.is_positive() {
            return Err(invalid(field, "must be positive"));
        }
        Ok(money)
    }
}
