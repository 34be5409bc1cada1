//! Encoding of everything persisted or sent between nodes: bincode 2 (standard configuration)
//! behind a one-byte format version, decoded with a size limit because peers and disks lie.

use serde::{de::DeserializeOwned, Serialize};

/// The format version written in front of every persisted value and RPC body.
pub const FORMAT_VERSION: u8 = 1;
/// No single value we decode may claim more than this (a snapshot is the largest).
pub const DECODE_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty input")]
    Empty,
    #[error("unknown format version {0}")]
    Version(u8),
    #[error("decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

/// # Errors
/// When the value cannot be encoded (never for our types; kept as an error, not a panic).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut bytes = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut bytes, config())?;
    Ok(bytes)
}

/// # Errors
/// On a wrong version byte, malformed or oversized input, or bytes left over.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version(version));
    }
    let (value, read) = bincode::serde::decode_from_slice(body, config())?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    //! The persisted format: a fixed value's exact bytes, and malformed input as an error.

    use super::*;
    use crate::ledger::{Command, TransferOutcome, TransferRecord, TransferSpec};
    use crate::typ::{Entry, Proposal};

    fn spec() -> TransferSpec {
        TransferSpec {
            id: "t-0001".into(),
            from: "alice".into(),
            to: "bob".into(),
            amount: 250,
            memo: Some("rent".into()),
        }
    }

    fn entry() -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 2), 42),
            payload: openraft::EntryPayload::Normal(Proposal {
                commands: vec![Command::Transfer(spec())],
            }),
        }
    }

    fn record() -> TransferRecord {
        TransferRecord {
            spec: spec(),
            outcome: TransferOutcome::Posted {
                seq: 7,
                currency: "CNY".into(),
            },
        }
    }

    #[test]
    fn golden_bytes_of_a_log_entry_and_a_transfer_record() {
        // Goal: pin the on-disk format. Method: encode a fixed log entry and a fixed transfer
        // record and compare with bytes recorded once. A change of these bytes is a change of
        // the on-disk and wire format: it must come with a FORMAT_VERSION bump (and a way to
        // read the old version), never by just updating the hex here.
        let entry_bytes = encode(&entry()).expect("encode entry");
        assert_eq!(
            hex::encode(&entry_bytes),
            "0103022a01010106742d3030303105616c69636503626f62fa010472656e74"
        );
        let record_bytes = encode(&record()).expect("encode record");
        assert_eq!(
            hex::encode(&record_bytes),
            "0106742d3030303105616c69636503626f62fa010472656e74000703434e59"
        );
        assert_eq!(
            decode::<Entry>(&entry_bytes).expect("decode entry"),
            entry()
        );
        assert_eq!(
            decode::<TransferRecord>(&record_bytes).expect("decode record"),
            record()
        );
    }

    #[test]
    fn a_wrong_version_byte_is_an_error() {
        // Goal: bytes of another format version are refused, not misread. Method: flip the
        // version byte of a valid encoding.
        let mut bytes = encode(&record()).expect("encode");
        for version in [0, FORMAT_VERSION + 1, u8::MAX] {
            bytes[0] = version;
            assert!(
                matches!(decode::<TransferRecord>(&bytes), Err(CodecError::Version(v)) if v == version),
                "version {version}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        // Goal: a value followed by anything is refused (a torn or concatenated write). Method:
        // append one and several bytes to a valid encoding.
        let bytes = encode(&entry()).expect("encode");
        for extra in [&[0u8][..], &[1, 2, 3]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(extra);
            assert!(
                matches!(decode::<Entry>(&longer), Err(CodecError::Trailing(n)) if n == extra.len()),
                "{} trailing bytes",
                extra.len()
            );
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        // Goal: input cut anywhere is an error, never a panic or a shorter value. Method: decode
        // every proper prefix of a valid entry and transfer record.
        let bytes = encode(&entry()).expect("encode");
        for len in 0..bytes.len() {
            assert!(
                decode::<Entry>(&bytes[..len]).is_err(),
                "entry cut at {len}"
            );
        }
        assert!(matches!(decode::<Entry>(&[]), Err(CodecError::Empty)));
        let bytes = encode(&record()).expect("encode");
        for len in 0..bytes.len() {
            assert!(
                decode::<TransferRecord>(&bytes[..len]).is_err(),
                "record cut at {len}"
            );
        }
    }

    #[test]
    fn a_huge_length_claim_is_an_error_without_allocating_it() {
        // Goal: a length prefix that claims more than the input holds (or than the decode limit)
        // fails fast. Method: a `Vec<u8>` whose varint length claims u64::MAX bytes, and one
        // that claims 512 MiB (under the limit) but carries 3.
        let beyond_limit = [&[FORMAT_VERSION, 253][..], &u64::MAX.to_le_bytes()].concat();
        assert!(decode::<Vec<u8>>(&beyond_limit).is_err());
        let under_limit = [
            &[FORMAT_VERSION, 252][..],
            &(512u32 << 20).to_le_bytes(),
            &[1, 2, 3],
        ]
        .concat();
        assert!(decode::<Vec<u8>>(&under_limit).is_err());
    }
}
