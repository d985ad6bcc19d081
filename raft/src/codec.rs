//! bincode 2 encoding for everything this crate writes to disk or to the wire.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest value we will ever decode from the network or disk (a frame or a log entry).
pub const MAX_DECODE_BYTES: usize = 64 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, config())
}

/// The length of `encode(value)`, counted without building the bytes.
pub fn encoded_len<T: Serialize>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    match bincode::serde::encode_into_writer(value, &mut size, config()) {
        Ok(()) => size.bytes_written,
        // Encoding only fails on types bincode cannot write; such a value never fits anything.
        Err(_) => usize::MAX,
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, config())?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// A byte string that bincode writes as one length and a copy, not element by element
/// (blob chunks of the application channel).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bytes(pub Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_compactly() -> Result<(), Box<dyn std::error::Error>> {
        for len in [0usize, 1, 300, 70_000] {
            let b = Bytes((0..len).map(|i| (i % 251) as u8).collect());
            let enc = encode(&b)?;
            assert!(enc.len() <= len + 9, "{len} bytes encoded as {}", enc.len());
            assert_eq!(decode::<Bytes>(&enc)?, b);
            assert_eq!(encoded_len(&b), enc.len());
        }
        Ok(())
    }
}
