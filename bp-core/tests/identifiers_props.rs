//! Property tests for `bp_core::account_number` and `bp_core::iban`: round trips
//! and detection of typing errors by the MOD 97-10 check digits.

use bp_core::account_number::{AccountNumber, AccountNumberError};
use bp_core::iban::{Iban, IbanError, iban_countries};
use proptest::prelude::*;

const SERIAL_LIMIT: u64 = 10_000_000_000;

const KNOWN_VALID: [&str; 5] = [
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "CH9300762011623852957",
];

fn valid_account() -> impl Strategy<Value = AccountNumber> {
    (0..SERIAL_LIMIT).prop_map(|serial| AccountNumber::from_serial(serial).unwrap_or_else(|e| panic!("{serial}: {e}")))
}

/// Reference MOD 97 over the rearranged IBAN, written independently of the
/// crate: letters become two-digit numbers, then the decimal string is reduced
/// a few digits at a time.
fn reference_mod97(rearranged: &str) -> u64 {
    let digits: String = rearranged
        .chars()
        .map(|c| match c.to_digit(36) {
            Some(v) => v.to_string(),
            None => panic!("not alphanumeric: {c}"),
        })
        .collect();
    digits.as_bytes().chunks(7).fold(0u64, |rem, chunk| {
        let chunk = std::str::from_utf8(chunk).unwrap();
        let joined: u64 = format!("{rem}{chunk}").parse().unwrap();
        joined % 97
    })
}

/// Builds an electronic IBAN from a country and BBAN with the reference check digits.
fn make_iban(country: &str, bban: &str) -> String {
    let check = 98 - reference_mod97(&format!("{bban}{country}00"));
    format!("{country}{check:02}{bban}")
}

/// A random valid IBAN for a random registry country with an alphanumeric BBAN.
fn random_iban() -> impl Strategy<Value = String> {
    prop::sample::select(iban_countries().collect::<Vec<_>>()).prop_flat_map(|(country, len)| {
        prop::collection::vec(prop::sample::select(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ".to_vec()), len - 4)
            .prop_map(move |bytes| make_iban(country, &String::from_utf8(bytes).unwrap()))
    })
}

/// A random valid German IBAN: 18-digit BBAN.
fn random_de_iban() -> impl Strategy<Value = String> {
    "[0-9]{18}".prop_map(|bban| make_iban("DE", &bban))
}

fn any_valid_iban() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(KNOWN_VALID.to_vec()).prop_map(String::from), random_de_iban(), random_iban(),]
}

fn print_format(electronic: &str) -> String {
    electronic.as_bytes().chunks(4).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(" ")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn account_round_trip(n in valid_account()) {
        let plain = n.to_string();
        prop_assert_eq!(plain.len(), 12);
        prop_assert!(plain.bytes().all(|b| b.is_ascii_digit()));
        prop_assert_eq!(AccountNumber::parse(&plain), Ok(n));
        prop_assert_eq!(AccountNumber::parse(&n.formatted()), Ok(n));
        prop_assert_eq!(AccountNumber::parse(&n.formatted().replace(' ', "-")), Ok(n));
        prop_assert_eq!(plain.parse::<AccountNumber>(), Ok(n));
        let full: u64 = plain.parse().unwrap();
        prop_assert_eq!(full % 97, 1);
        prop_assert_eq!(full / 100, n.serial());
        let json = serde_json::to_string(&n).unwrap();
        prop_assert_eq!(&json, &format!("\"{plain}\""));
        prop_assert_eq!(serde_json::from_str::<AccountNumber>(&json).unwrap(), n);
    }

    #[test]
    fn account_serial_out_of_range(serial in SERIAL_LIMIT..=u64::MAX) {
        prop_assert_eq!(
            AccountNumber::from_serial(serial),
            Err(AccountNumberError::SerialOutOfRange { serial })
        );
    }

    #[test]
    fn account_single_digit_change_rejected(n in valid_account(), pos in 0usize..12, delta in 1u8..10) {
        let mut bytes = n.to_string().into_bytes();
        bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(AccountNumber::parse(&changed), Err(AccountNumberError::BadCheckDigits), "{}", changed);
    }

    #[test]
    fn account_adjacent_transposition_rejected(n in valid_account(), pos in 0usize..11) {
        let mut bytes = n.to_string().into_bytes();
        prop_assume!(bytes[pos] != bytes[pos + 1]);
        bytes.swap(pos, pos + 1);
        let changed = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(AccountNumber::parse(&changed), Err(AccountNumberError::BadCheckDigits), "{}", changed);
    }

    #[test]
    fn account_parse_never_panics(s in "[0-9 \\-x]{0,20}|\\PC{0,20}") {
        let _ = AccountNumber::parse(&s);
    }

    #[test]
    fn iban_round_trip(electronic in any_valid_iban()) {
        let iban = Iban::parse(&electronic).unwrap_or_else(|e| panic!("{electronic}: {e}"));
        prop_assert_eq!(iban.as_str(), electronic.as_str());
        prop_assert_eq!(iban.country(), &electronic[..2]);
        let printed = iban.to_string();
        prop_assert_eq!(&printed, &print_format(&electronic));
        prop_assert_eq!(Iban::parse(&printed), Ok(iban.clone()));
        prop_assert_eq!(Iban::parse(&printed.to_lowercase()), Ok(iban.clone()));
        prop_assert_eq!(Iban::from_bban(iban.country(), iban.bban()), Ok(iban.clone()));
        let json = serde_json::to_string(&iban).unwrap();
        prop_assert_eq!(&json, &format!("\"{electronic}\""));
        prop_assert_eq!(serde_json::from_str::<Iban>(&json).unwrap(), iban);
    }

    /// Substituting one character by another of the same class (digit for
    /// digit, letter for letter) is always caught. A digit-for-letter swap
    /// changes the length of the numeric string MOD 97 works on, so the
    /// scheme only catches it with probability 96/97 and it is not asserted.
    #[test]
    fn iban_single_substitution_rejected(
        electronic in any_valid_iban(),
        pos_seed in any::<prop::sample::Index>(),
        delta in 1u8..26,
    ) {
        let mut bytes = electronic.clone().into_bytes();
        let pos = pos_seed.index(bytes.len());
        let old = bytes[pos];
        bytes[pos] = if old.is_ascii_digit() {
            b'0' + (old - b'0' + delta % 9 + 1) % 10
        } else {
            b'A' + (old - b'A' + delta) % 26
        };
        prop_assert_ne!(bytes[pos], old);
        let changed = String::from_utf8(bytes).unwrap();
        let result = Iban::parse(&changed);
        prop_assert!(result.is_err(), "{} accepted (from {})", changed, electronic);
        if pos >= 2 {
            prop_assert_eq!(result, Err(IbanError::BadCheckDigits));
        }
    }

    #[test]
    fn iban_parse_never_panics(s in "[A-Za-z0-9 ]{0,40}|\\PC{0,80}") {
        if let Ok(iban) = Iban::parse(&s) {
            prop_assert_eq!(reference_mod97(&format!("{}{}", iban.bban(), &iban.as_str()[..4])), 1);
        }
    }
}
