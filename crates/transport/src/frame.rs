//! Frames on the wire: `u32 length | u64 id | u8 kind | payload`, read in bounded chunks.
//!
//! A frame's header is untrusted: its length is checked against the frame limit, and the
//! buffer grows only as bytes actually arrive (at most [`FRAME_READ_CHUNK_BYTES`] ahead of
//! them), never to the length a header claims. A frame that has begun must be complete within
//! the frame read timeout; a stalled half frame closes the connection.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub(crate) const KIND_REQUEST: u8 = 0;
pub(crate) const KIND_RESPONSE: u8 = 1;
pub(crate) const KIND_ERROR: u8 = 2;
pub(crate) const HEADER_BYTES: usize = 4 + 8 + 1;

/// The most the read buffer grows ahead of the bytes that have arrived: a frame is read in
/// chunks of at most this many bytes, so a header that claims 64 MiB reserves 64 KiB, not
/// 64 MiB.
pub const FRAME_READ_CHUNK_BYTES: usize = 64 * 1024;

/// The length, id and kind that precede a payload of `payload_len` bytes
/// (callers keep payloads within the frame limit, far below u32::MAX).
pub(crate) fn frame_header(payload_len: usize, id: u64, kind: u8) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&((payload_len + 9) as u32).to_be_bytes());
    h[4..12].copy_from_slice(&id.to_be_bytes());
    h[12] = kind;
    h
}

#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) id: u64,
    pub(crate) kind: u8,
    pub(crate) payload: Bytes,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {1} bytes (frame_bytes_max)")]
    TooLarge(usize, usize),
    #[error("frame length {0} is shorter than its header")]
    TooShort(usize),
    #[error("connection closed in the middle of a frame")]
    Truncated,
    #[error("a frame stalled: it was not complete within {0} ms of its first byte (frame_read_timeout)")]
    Stalled(u64),
    #[error("no frame began within {0} ms ({1})")]
    Idle(u64, WaitKind),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which limit bounds the wait for a frame to begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// Between frames (`idle_timeout`).
    Idle,
    /// For the first frame of a connection without TLS (`handshake_timeout`).
    FirstFrame,
}

impl std::fmt::Display for WaitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitKind::Idle => "idle_timeout",
            WaitKind::FirstFrame => "handshake_timeout: the first frame",
        })
    }
}

/// How long [`read_frame`] waits for a frame to begin.
#[derive(Clone, Copy)]
pub(crate) struct Wait {
    pub(crate) limit: Option<Duration>,
    pub(crate) kind: WaitKind,
}

impl Wait {
    pub(crate) const FOREVER: Wait = Wait { limit: None, kind: WaitKind::Idle };
}

/// Reads one frame; `Ok(None)` on a clean end of stream between frames. The frame must begin
/// within `wait` and, once begun (some of it is in `buf` or has arrived), be complete within
/// `frame_timeout`.
pub(crate) async fn read_frame(
    read: &mut (impl AsyncRead + Unpin + ?Sized),
    buf: &mut BytesMut,
    limit: usize,
    wait: Wait,
    frame_timeout: Duration,
) -> Result<Option<Frame>, FrameError> {
    let mut deadline = (!buf.is_empty()).then(|| tokio::time::Instant::now() + frame_timeout);
    loop {
        let missing = if buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len + 4 > limit {
                return Err(FrameError::TooLarge(len + 4, limit));
            }
            if len < 9 {
                return Err(FrameError::TooShort(len));
            }
            if buf.len() >= 4 + len {
                buf.advance(4);
                let id = buf.get_u64();
                let kind = buf.get_u8();
                let payload = buf.split_to(len - 9).freeze();
                return Ok(Some(Frame { id, kind, payload }));
            }
            4 + len - buf.len()
        } else {
            4 - buf.len()
        };
        // Room for what the frame still needs, up to one chunk; the buffer never grows to the
        // claimed length before the bytes are there.
        buf.reserve(missing.min(FRAME_READ_CHUNK_BYTES));
        let read = match deadline {
            Some(d) => tokio::time::timeout_at(d, read.read_buf(buf))
                .await
                .map_err(|_| FrameError::Stalled(frame_timeout.as_millis() as u64))?,
            None => match wait.limit {
                Some(w) => tokio::time::timeout(w, read.read_buf(buf))
                    .await
                    .map_err(|_| FrameError::Idle(w.as_millis() as u64, wait.kind))?,
                None => read.read_buf(buf).await,
            },
        };
        let n = match read {
            Ok(n) => n,
            // A TLS peer that closed without close_notify (a killed process): the end of the
            // stream like any other. Frames carry their length, so a cut frame is still seen.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(FrameError::Truncated) };
        }
        if deadline.is_none() {
            deadline = Some(tokio::time::Instant::now() + frame_timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 64 << 20;

    #[tokio::test]
    async fn a_huge_claimed_length_reserves_one_chunk_not_the_claim() {
        // A header claiming 60 MiB, 100 bytes of it, then the end of the stream.
        let claimed = 60usize << 20;
        let mut wire = Vec::new();
        wire.extend_from_slice(&(claimed as u32).to_be_bytes());
        wire.extend_from_slice(&[7u8; 100]);
        let mut buf = BytesMut::new();
        let mut r = &wire[..];
        let e = read_frame(&mut r, &mut buf, LIMIT, Wait::FOREVER, Duration::from_secs(5)).await;
        assert!(matches!(e, Err(FrameError::Truncated)), "{e:?}");
        assert_eq!(buf.len(), 104);
        assert!(
            buf.capacity() <= 4 * FRAME_READ_CHUNK_BYTES,
            "the buffer grew to {} bytes for 104 that arrived",
            buf.capacity()
        );
    }

    #[tokio::test]
    async fn a_big_frame_arrives_whole_in_chunks_and_pipelined_frames_split() {
        let big = vec![9u8; 3 * FRAME_READ_CHUNK_BYTES + 17];
        let mut wire = Vec::new();
        wire.extend_from_slice(&frame_header(big.len(), 1, KIND_REQUEST));
        wire.extend_from_slice(&big);
        wire.extend_from_slice(&frame_header(2, 2, KIND_RESPONSE));
        wire.extend_from_slice(b"ok");
        let mut buf = BytesMut::new();
        let mut r = &wire[..];
        let t = Duration::from_secs(5);
        let f = read_frame(&mut r, &mut buf, LIMIT, Wait::FOREVER, t).await.unwrap().unwrap();
        assert_eq!((f.id, f.kind, f.payload.len()), (1, KIND_REQUEST, big.len()));
        let f = read_frame(&mut r, &mut buf, LIMIT, Wait::FOREVER, t).await.unwrap().unwrap();
        assert_eq!((f.id, f.kind, &f.payload[..]), (2, KIND_RESPONSE, &b"ok"[..]));
        assert!(read_frame(&mut r, &mut buf, LIMIT, Wait::FOREVER, t).await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_frame_times_out_and_so_does_a_frame_that_never_begins() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        use tokio::io::AsyncWriteExt;
        client.write_all(&frame_header(10, 1, KIND_REQUEST)).await.unwrap();
        client.write_all(b"half").await.unwrap();
        let mut buf = BytesMut::new();
        let e = read_frame(&mut server, &mut buf, LIMIT, Wait::FOREVER, Duration::from_secs(30)).await;
        assert!(matches!(e, Err(FrameError::Stalled(30_000))), "{e:?}");
        let (_client, mut server) = tokio::io::duplex(1024);
        let wait = Wait { limit: Some(Duration::from_secs(5)), kind: WaitKind::Idle };
        let e = read_frame(&mut server, &mut BytesMut::new(), LIMIT, wait, Duration::from_secs(30)).await;
        assert!(matches!(e, Err(FrameError::Idle(5000, WaitKind::Idle))), "{e:?}");
    }
}
