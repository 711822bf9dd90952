//! Turning typed messages into frame payloads and back.
//!
//! A [`Codec`] is the one place a transport learns the shape of your
//! messages. The default, [`BytesCodec`], passes [`Bytes`] through untouched;
//! implement [`Codec`] for a unit struct to carry your own enum without
//! serde, or (feature `serde`) use `SerdeCodec` with the serde format of
//! your choice.

use core::convert::Infallible;
#[cfg(feature = "serde")]
use core::fmt;

use bytes::{Bytes, BytesMut};

/// Encodes messages of one type into bytes and decodes them back.
///
/// `decode` gets bytes from the network: it must return an error, never
/// panic, on anything malformed.
///
/// ```
/// use bytes::{Buf, BufMut, Bytes, BytesMut};
/// use quorate_transport::codec::Codec;
///
/// /// A hand-written, serde-free codec for a tiny protocol.
/// #[derive(Debug, Clone, Copy)]
/// struct HeartbeatCodec;
///
/// #[derive(Debug, PartialEq)]
/// struct Heartbeat { term: u64 }
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("heartbeat must be 8 bytes, got {0}")]
/// struct BadLength(usize);
///
/// impl Codec for HeartbeatCodec {
///     type Message = Heartbeat;
///     type Error = BadLength;
///     fn encode(&self, msg: &Heartbeat, dst: &mut BytesMut) -> Result<(), BadLength> {
///         dst.put_u64(msg.term);
///         Ok(())
///     }
///     fn decode(&self, mut src: Bytes) -> Result<Heartbeat, BadLength> {
///         if src.len() != 8 { return Err(BadLength(src.len())); }
///         Ok(Heartbeat { term: src.get_u64() })
///     }
/// }
///
/// let mut buf = BytesMut::new();
/// HeartbeatCodec.encode(&Heartbeat { term: 9 }, &mut buf).unwrap();
/// assert_eq!(HeartbeatCodec.decode(buf.freeze()).unwrap(), Heartbeat { term: 9 });
/// assert!(HeartbeatCodec.decode(Bytes::from_static(b"short")).is_err());
/// ```
pub trait Codec: Send + Sync + 'static {
    /// The message type.
    type Message: Send + 'static;
    /// What can go wrong; decoding errors describe the bad input.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Appends the encoding of `msg` to `dst`.
    fn encode(&self, msg: &Self::Message, dst: &mut BytesMut) -> Result<(), Self::Error>;

    /// Decodes one whole message from `src`.
    fn decode(&self, src: Bytes) -> Result<Self::Message, Self::Error>;
}

/// The default codec: messages are raw [`Bytes`], passed through as is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Message = Bytes;
    type Error = Infallible;

    fn encode(&self, msg: &Bytes, dst: &mut BytesMut) -> Result<(), Infallible> {
        dst.extend_from_slice(msg);
        Ok(())
    }

    fn decode(&self, src: Bytes) -> Result<Bytes, Infallible> {
        Ok(src)
    }
}

/// A serde data format that [`SerdeCodec`] can use: adapt your binary format
/// (postcard, bincode, CBOR, ...) in a few lines.
///
/// The workspace has no binary serde format among its dependencies, so this
/// crate does not pick one for you; see [`SerdeCodec`] for an adapter.
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub trait SerdeFormat: Send + Sync + 'static {
    /// The format's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Appends the serialization of `value` to `dst`.
    fn serialize<T: serde::Serialize>(
        &self,
        value: &T,
        dst: &mut BytesMut,
    ) -> Result<(), Self::Error>;

    /// Deserializes one value from the whole of `src`.
    fn deserialize<T: serde::de::DeserializeOwned>(&self, src: &[u8]) -> Result<T, Self::Error>;
}

/// A [`Codec`] for any serde type `M`, in the [`SerdeFormat`] `F`.
///
/// ```
/// use bytes::{BufMut, BytesMut};
/// use quorate_transport::codec::{Codec, SerdeCodec, SerdeFormat};
///
/// /// JSON as a format (a binary format such as postcard adapts the same way).
/// #[derive(Debug, Default)]
/// struct Json;
/// impl SerdeFormat for Json {
///     type Error = serde_json::Error;
///     fn serialize<T: serde::Serialize>(&self, v: &T, dst: &mut BytesMut) -> Result<(), Self::Error> {
///         serde_json::to_writer(dst.writer(), v)
///     }
///     fn deserialize<T: serde::de::DeserializeOwned>(&self, src: &[u8]) -> Result<T, Self::Error> {
///         serde_json::from_slice(src)
///     }
/// }
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Msg { Vote { term: u64 } }
///
/// let codec: SerdeCodec<Msg, Json> = SerdeCodec::new(Json);
/// let mut buf = BytesMut::new();
/// codec.encode(&Msg::Vote { term: 3 }, &mut buf).unwrap();
/// assert_eq!(codec.decode(buf.freeze()).unwrap(), Msg::Vote { term: 3 });
/// ```
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub struct SerdeCodec<M, F> {
    format: F,
    _message: core::marker::PhantomData<fn() -> M>,
}

#[cfg(feature = "serde")]
impl<M, F> SerdeCodec<M, F> {
    /// A codec for `M` in `format`.
    pub fn new(format: F) -> Self {
        SerdeCodec {
            format,
            _message: core::marker::PhantomData,
        }
    }
}

#[cfg(feature = "serde")]
impl<M, F: fmt::Debug> fmt::Debug for SerdeCodec<M, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerdeCodec")
            .field("format", &self.format)
            .field("message", &core::any::type_name::<M>())
            .finish()
    }
}

#[cfg(feature = "serde")]
impl<M, F> Codec for SerdeCodec<M, F>
where
    M: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    F: SerdeFormat,
{
    type Message = M;
    type Error = F::Error;

    fn encode(&self, msg: &M, dst: &mut BytesMut) -> Result<(), F::Error> {
        self.format.serialize(msg, dst)
    }

    fn decode(&self, src: Bytes) -> Result<M, F::Error> {
        self.format.deserialize(&src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_codec_is_the_identity() {
        let mut buf = BytesMut::from(&b"x"[..]);
        BytesCodec
            .encode(&Bytes::from_static(b"abc"), &mut buf)
            .unwrap();
        assert_eq!(&buf[..], b"xabc");
        assert_eq!(
            BytesCodec.decode(Bytes::from_static(b"q")).unwrap(),
            Bytes::from_static(b"q")
        );
    }
}
