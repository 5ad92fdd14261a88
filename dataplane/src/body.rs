//! Response bodies shared by every front (Pingora and, later, HTTP/3).

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use streamgate_origin::OriginError;

/// A response body.
pub enum Body {
    /// No body (HEAD, 304, preflight).
    Empty,
    /// A complete body, usually a slice of a cached object.
    Full(Bytes),
    /// A body streamed from origin (objects too large to cache).
    Stream(BoxStream<'static, Result<Bytes, OriginError>>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty"),
            Self::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

/// Keeps bytes `start..start+len` of a chunk stream.
pub(crate) fn slice_stream(
    stream: BoxStream<'static, Result<Bytes, OriginError>>,
    start: u64,
    len: u64,
) -> BoxStream<'static, Result<Bytes, OriginError>> {
    let end = start.saturating_add(len);
    stream
        .scan(0u64, move |pos, chunk| {
            if *pos >= end {
                return futures::future::ready(None);
            }
            let out = chunk.map(|c| {
                let c_start = *pos;
                let c_end = c_start + c.len() as u64;
                *pos = c_end;
                let lo = start.max(c_start);
                let hi = end.min(c_end);
                (lo < hi).then(|| c.slice((lo - c_start) as usize..(hi - c_start) as usize))
            });
            futures::future::ready(Some(out.transpose()))
        })
        .filter_map(futures::future::ready)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn slices_across_chunks() {
        let chunks: Vec<Result<Bytes, OriginError>> = vec![
            Ok(Bytes::from_static(b"0123")),
            Ok(Bytes::from_static(b"4567")),
            Ok(Bytes::from_static(b"89")),
        ];
        let s = slice_stream(futures::stream::iter(chunks).boxed(), 3, 5);
        let got: Vec<Bytes> = s.map(|c| c.unwrap()).collect().await;
        assert_eq!(got.concat(), b"34567");
    }
}
