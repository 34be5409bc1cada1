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
