//! The bounds on what a customer registers: display names, device keys, passkeys and trusted
//! beneficiaries. Pure functions over the customer's current records; the messages are built
//! from the limits' constants, never from copies of their numbers.

use crate::account_number::AccountNumber;
use crate::security::{
    BENEFICIARIES_MAX, Beneficiary, CREDENTIAL_ID_BYTES_MAX, DEVICES_MAX, Device, NAME_CHARS_MAX, PASSKEYS_MAX, Passkey,
};

use super::ScaError;

/// A device's or beneficiary's display name, trimmed: 1 to [`NAME_CHARS_MAX`] characters,
/// none of them a control character.
pub fn display_name(name: &str) -> Result<String, ScaError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > NAME_CHARS_MAX || name.chars().any(char::is_control) {
        return Err(ScaError::Invalid(format!(
            "name must be 1 to {NAME_CHARS_MAX} characters, without control characters"
        )));
    }
    Ok(name.to_owned())
}

/// Whether a customer with `devices` (removed ones included) may register `key`: not twice,
/// and at most [`DEVICES_MAX`] at a time.
pub fn may_add_device(devices: &[Device], key: &[u8]) -> Result<(), ScaError> {
    let active: Vec<&Device> = devices.iter().filter(|d| d.revoked_at.is_none()).collect();
    if active.iter().any(|d| d.public_key == key) {
        return Err(ScaError::Duplicate("this key is already registered"));
    }
    if active.len() >= DEVICES_MAX {
        return Err(ScaError::TooMany(format!("too many devices (at most {DEVICES_MAX}); remove one first")));
    }
    Ok(())
}

/// Whether a customer with `passkeys` may begin registering another: at most [`PASSKEYS_MAX`].
pub fn passkey_room(passkeys: &[Passkey]) -> Result<(), ScaError> {
    if passkeys.len() >= PASSKEYS_MAX {
        return Err(ScaError::TooMany(format!("too many passkeys (at most {PASSKEYS_MAX}); remove one first")));
    }
    Ok(())
}

/// Whether a customer with `passkeys` may register the credential `credential_id`: 1 to
/// [`CREDENTIAL_ID_BYTES_MAX`] bytes, not twice, and at most [`PASSKEYS_MAX`].
pub fn may_add_passkey(passkeys: &[Passkey], credential_id: &[u8]) -> Result<(), ScaError> {
    if credential_id.is_empty() || credential_id.len() > CREDENTIAL_ID_BYTES_MAX {
        return Err(ScaError::Invalid(format!("a credential id has 1 to {CREDENTIAL_ID_BYTES_MAX} bytes")));
    }
    if passkeys.iter().any(|p| p.credential_id == credential_id) {
        return Err(ScaError::Duplicate("this passkey is already registered"));
    }
    passkey_room(passkeys)
}

/// Whether a customer with `beneficiaries` may add the payee `number`: not twice, and at most
/// [`BENEFICIARIES_MAX`].
pub fn may_add_beneficiary(beneficiaries: &[Beneficiary], number: AccountNumber) -> Result<(), ScaError> {
    if beneficiaries.iter().any(|b| b.account_number == number) {
        return Err(ScaError::Duplicate("this account is already a beneficiary"));
    }
    if beneficiaries.len() >= BENEFICIARIES_MAX {
        return Err(ScaError::TooMany(format!(
            "too many beneficiaries (at most {BENEFICIARIES_MAX}); remove some first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{BeneficiaryId, CustomerId, DeviceId};
    use crate::security::BeneficiaryState;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(display_name("  Pixel 9 ").expect("valid"), "Pixel 9");
        assert!(display_name("   ").is_err());
        assert!(display_name("a\u{7}b").is_err());
        assert!(display_name(&"é".repeat(NAME_CHARS_MAX)).is_ok(), "characters, not bytes");
        assert!(display_name(&"é".repeat(NAME_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn devices_are_unique_and_bounded_and_removed_ones_do_not_count() {
        let customer = CustomerId::new_v7();
        let device = |key: u8, removed: bool| Device {
            id: DeviceId::new_v7(),
            customer_id: customer,
            name: "phone".to_owned(),
            public_key: vec![key; 65],
            created_at: chrono::Utc::now(),
            revoked_at: removed.then(chrono::Utc::now),
        };
        let mut devices: Vec<Device> =
            (0..DEVICES_MAX - 1).map(|i| device(u8::try_from(i).unwrap_or(0), false)).collect();
        devices.push(device(200, true));
        assert!(may_add_device(&devices, &[200; 65]).is_ok(), "a removed key may come back");
        assert!(matches!(may_add_device(&devices, &[0; 65]), Err(ScaError::Duplicate(_))));
        devices.push(device(201, false));
        assert!(matches!(may_add_device(&devices, &[202; 65]), Err(ScaError::TooMany(_))));
    }

    #[test]
    fn passkeys_are_unique_bounded_and_their_ids_sized() {
        let customer = CustomerId::new_v7();
        let passkey = |n: u8| Passkey {
            id: crate::ids::PasskeyId::new_v7(),
            customer_id: customer,
            name: "laptop".to_owned(),
            credential_id: vec![n; 16],
            credential: serde_json::json!({}),
            created_at: chrono::Utc::now(),
            last_used_at: None,
        };
        let mut list: Vec<Passkey> = (0..PASSKEYS_MAX - 1).map(|i| passkey(u8::try_from(i).unwrap_or(0))).collect();
        assert!(passkey_room(&list).is_ok());
        assert!(may_add_passkey(&list, &[200; 16]).is_ok());
        assert!(matches!(may_add_passkey(&list, &[0; 16]), Err(ScaError::Duplicate(_))));
        assert!(matches!(may_add_passkey(&list, &[]), Err(ScaError::Invalid(_))));
        assert!(may_add_passkey(&list, &vec![7; CREDENTIAL_ID_BYTES_MAX]).is_ok());
        assert!(matches!(may_add_passkey(&list, &vec![7; CREDENTIAL_ID_BYTES_MAX + 1]), Err(ScaError::Invalid(_))));
        list.push(passkey(201));
        assert!(matches!(passkey_room(&list), Err(ScaError::TooMany(_))));
        assert!(matches!(may_add_passkey(&list, &[202; 16]), Err(ScaError::TooMany(_))));
    }

    #[test]
    fn beneficiaries_are_unique_and_bounded() {
        let customer = CustomerId::new_v7();
        let number = |n| AccountNumber::from_serial(n).expect("serial");
        let mut list: Vec<Beneficiary> = (1..u64::try_from(BENEFICIARIES_MAX).unwrap_or(0))
            .map(|n| Beneficiary {
                id: BeneficiaryId::new_v7(),
                customer_id: customer,
                name: "payee".to_owned(),
                account_number: number(n),
                state: BeneficiaryState::Trusted,
                trusted_by: Some(crate::security::ScaMethod::DeviceSignature),
                created_at: chrono::Utc::now(),
            })
            .collect();
        assert!(matches!(may_add_beneficiary(&list, number(1)), Err(ScaError::Duplicate(_))));
        assert!(may_add_beneficiary(&list, number(100_000)).is_ok());
        let mut last = list[0].clone();
        last.account_number = number(100_001);
        list.push(last);
        assert!(matches!(may_add_beneficiary(&list, number(100_002)), Err(ScaError::TooMany(_))));
    }
}
