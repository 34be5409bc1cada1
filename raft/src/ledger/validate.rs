//! Validation of commands before they are proposed: the `400 invalid_request` rules of the
//! contract. Pure; the same checks run again inside apply as a defence.

use raftpay_api::rules;

use super::types::{AccountSpec, Command, TransferSpec, BATCH_TRANSFERS_MAX, MEMO_BYTES_MAX};

/// A command that breaks a rule of the contract; the message says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

fn invalid(message: impl Into<String>) -> InvalidRequest {
    InvalidRequest(message.into())
}

/// # Errors
/// When `id` is empty, longer than 64 characters, or has a character outside `[A-Za-z0-9._:-]`.
pub fn validate_id(what: &str, id: &str) -> Result<(), InvalidRequest> {
    rules::id_check(what, id).map_err(InvalidRequest)
}

/// # Errors
/// When `currency` is not three upper-case ASCII letters.
pub fn validate_currency(currency: &str) -> Result<(), InvalidRequest> {
    rules::currency_check(currency).map_err(InvalidRequest)
}

/// # Errors
/// When the account id or currency is malformed.
pub fn validate_account(spec: &AccountSpec) -> Result<(), InvalidRequest> {
    validate_id("id", &spec.id)?;
    validate_currency(&spec.currency)
}

/// # Errors
/// When an id is malformed, `from == to`, the amount is outside `1..=2^63-1`, or the memo is over
/// 256 bytes.
pub fn validate_transfer(spec: &TransferSpec) -> Result<(), InvalidRequest> {
    validate_id("id", &spec.id)?;
    validate_id("from", &spec.from)?;
    validate_id("to", &spec.to)?;
    if spec.from == spec.to {
        return Err(invalid("from and to must be different accounts"));
    }
    rules::amount_check(spec.amount).map_err(InvalidRequest)?;
    if let Some(memo) = &spec.memo {
        if memo.len() > MEMO_BYTES_MAX {
            return Err(invalid(format!(
                "memo must be at most {MEMO_BYTES_MAX} bytes"
            )));
        }
    }
    Ok(())
}

/// # Errors
/// When the batch is empty or too large, or any item is malformed (the message names its index).
pub fn validate_batch(transfers: &[TransferSpec]) -> Result<(), InvalidRequest> {
    if transfers.is_empty() || transfers.len() > BATCH_TRANSFERS_MAX {
        return Err(invalid(format!(
            "a batch carries 1 to {BATCH_TRANSFERS_MAX} transfers"
        )));
    }
    for (index, spec) in transfers.iter().enumerate() {
        validate_transfer(spec)
            .map_err(|InvalidRequest(message)| invalid(format!("transfers[{index}]: {message}")))?;
    }
    Ok(())
}

/// # Errors
/// The first rule the command breaks.
pub fn validate_command(command: &Command) -> Result<(), InvalidRequest> {
    match command {
        Command::CreateAccount(spec) => validate_account(spec),
        Command::Transfer(spec) => validate_transfer(spec),
        Command::Batch { transfers, .. } => validate_batch(transfers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::AMOUNT_MAX;

    fn spec(id: &str, from: &str, to: &str, amount: u64) -> TransferSpec {
        TransferSpec {
            id: id.into(),
            from: from.into(),
            to: to.into(),
            amount,
            memo: None,
        }
    }

    #[test]
    fn ids_follow_the_contract() {
        assert!(validate_id("id", "a").is_ok());
        assert!(validate_id("id", "Az09._:-").is_ok());
        assert!(validate_id("id", &"x".repeat(64)).is_ok());
        assert!(validate_id("id", "").is_err());
        assert!(validate_id("id", &"x".repeat(65)).is_err());
        assert!(validate_id("id", "a b").is_err());
        assert!(validate_id("id", "a/b").is_err());
        assert!(validate_id("id", "é").is_err());
    }

    #[test]
    fn currencies_are_three_upper_case_letters() {
        assert!(validate_currency("CNY").is_ok());
        for bad in ["cny", "CN", "CNYY", "C1Y", "", "ÉUR"] {
            assert!(validate_currency(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn transfers_are_checked() {
        assert!(validate_transfer(&spec("t", "a", "b", 1)).is_ok());
        assert!(validate_transfer(&spec("t", "a", "b", AMOUNT_MAX)).is_ok());
        assert!(validate_transfer(&spec("t", "a", "b", 0)).is_err());
        assert!(validate_transfer(&spec("t", "a", "b", AMOUNT_MAX + 1)).is_err());
        assert!(validate_transfer(&spec("t", "a", "a", 1)).is_err());
        assert!(validate_transfer(&spec("t", "", "b", 1)).is_err());
        let mut long_memo = spec("t", "a", "b", 1);
        long_memo.memo = Some("m".repeat(MEMO_BYTES_MAX + 1));
        assert!(validate_transfer(&long_memo).is_err());
        long_memo.memo = Some("m".repeat(MEMO_BYTES_MAX));
        assert!(validate_transfer(&long_memo).is_ok());
    }

    #[test]
    fn batch_errors_name_the_item() {
        let batch = vec![spec("t1", "a", "b", 1), spec("t2", "a", "a", 1)];
        let error = validate_batch(&batch).unwrap_err();
        assert!(error.0.starts_with("transfers[1]:"), "{error}");
        assert!(validate_batch(&[]).is_err());
        let too_many = vec![spec("t", "a", "b", 1); BATCH_TRANSFERS_MAX + 1];
        assert!(validate_batch(&too_many).is_err());
    }
}
