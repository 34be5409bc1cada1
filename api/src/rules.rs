//! The input rules of the contract (`400 invalid_request`), in one place: the server checks them
//! before anything is proposed (and the ledger again inside apply), the CLI and the bench check
//! their arguments with the same functions.

/// Ids of accounts and transfers: 1–64 characters of `[A-Za-z0-9._:-]`.
pub const ID_BYTES_MAX: usize = 64;
/// A transfer memo is at most this many bytes of UTF-8.
pub const MEMO_BYTES_MAX: usize = 256;
/// The largest amount, and the largest value a debit or credit total may reach, so that
/// `balance = credits - debits` always fits an `i64`.
pub const AMOUNT_MAX: u64 = i64::MAX as u64;
/// The most transfers one batch may carry.
pub const BATCH_TRANSFERS_MAX: usize = 8190;
/// History pages hold at most this many transfers (`limit`), 100 when not given.
pub const HISTORY_PAGE_MAX: usize = 1000;
pub const HISTORY_PAGE_DEFAULT: usize = 100;

/// # Errors
/// When `id` is empty, longer than 64 characters, or has a character outside `[A-Za-z0-9._:-]`;
/// the message names the field (`what`).
pub fn id_check(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(format!("{what} must be 1 to {ID_BYTES_MAX} characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if !id.chars().all(allowed) {
        return Err(format!("{what} may only contain [A-Za-z0-9._:-]"));
    }
    Ok(())
}

/// # Errors
/// When `currency` is not three upper-case ASCII letters.
pub fn currency_check(currency: &str) -> Result<(), String> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err("currency must be three upper-case letters, like CNY".to_owned())
    }
}

/// # Errors
/// When `amount` is outside `1..=AMOUNT_MAX`.
pub fn amount_check(amount: u64) -> Result<(), String> {
    if amount == 0 || amount > AMOUNT_MAX {
        return Err(format!("amount must be an integer from 1 to {AMOUNT_MAX}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_contract() {
        assert!(id_check("id", "a").is_ok());
        assert!(id_check("id", "Az09._:-").is_ok());
        assert!(id_check("id", &"x".repeat(ID_BYTES_MAX)).is_ok());
        assert!(id_check("id", "").is_err());
        assert!(id_check("id", &"x".repeat(ID_BYTES_MAX + 1)).is_err());
        assert!(id_check("id", "a/b").is_err());
        assert!(id_check("id", "é").is_err());
        assert_eq!(
            id_check("from", "a b"),
            Err("from may only contain [A-Za-z0-9._:-]".into())
        );
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert!(currency_check("CNY").is_ok());
        for bad in ["", "CN", "CNYY", "cny", "C1Y", "ÉUR"] {
            assert!(currency_check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn amounts_are_positive_and_fit_a_balance() {
        assert!(amount_check(1).is_ok());
        assert!(amount_check(AMOUNT_MAX).is_ok());
        assert!(amount_check(0).is_err());
        assert!(amount_check(AMOUNT_MAX + 1).is_err());
    }
}
