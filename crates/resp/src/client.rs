//! A small async RESP client over a tokio `TcpStream`, for tests, benchmarks
//! and tools. One connection, one request at a time (or one pipeline);
//! no reconnects, no cluster awareness.
//!
//! Error replies (`-ERR ...`) are values, not errors: they come back as
//! `Ok(Value::Error(..))` so tests can inspect them. After a timeout, an I/O
//! error or a protocol error the connection is unusable (a reply may be half
//! read) and every later call fails with [`ClientError::Broken`].

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::{encode_command, ProtocolError, ReplyDecoder, ReplyLimits, Value};

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent bytes that are not valid RESP.
    #[error("bad reply from server: {0}")]
    Protocol(#[from] ProtocolError),
    /// No complete reply within the read timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The server closed the connection before replying in full.
    #[error("connection closed by server")]
    Closed,
    /// An earlier error left the connection in an unknown state.
    #[error("connection unusable after an earlier error")]
    Broken,
}

/// A connection to one RESP server.
#[derive(Debug)]
pub struct RespClient {
    stream: TcpStream,
    replies: ReplyDecoder,
    write_buf: BytesMut,
    read_timeout: Option<Duration>,
    broken: bool,
}

impl RespClient {
    /// Connects with no read timeout and the default [`ReplyLimits`].
    pub async fn connect(addr: impl ToSocketAddrs) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(RespClient {
            stream,
            replies: ReplyDecoder::default(),
            write_buf: BytesMut::with_capacity(1024),
            read_timeout: None,
            broken: false,
        })
    }

    /// [`RespClient::connect`], giving up after `timeout`.
    pub async fn connect_timeout(addr: impl ToSocketAddrs, timeout: Duration) -> std::io::Result<Self> {
        match tokio::time::timeout(timeout, Self::connect(addr)).await {
            Ok(result) => result,
            Err(_) => {
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")))
            }
        }
    }

    /// Sets how long to wait for each reply; `None` waits forever.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Builder form of [`RespClient::set_read_timeout`].
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = Some(timeout);
        self
    }

    /// Sets the limits replies are parsed with.
    pub fn set_reply_limits(&mut self, limits: ReplyLimits) {
        self.replies.set_limits(limits);
    }

    /// Sends one command and waits for its reply.
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Result<Value, ClientError> {
        self.check()?;
        self.write_buf.clear();
        encode_command(args, &mut self.write_buf);
        self.flush_and_read(1).await.map(|mut replies| replies.remove(0))
    }

    /// [`RespClient::cmd`] with text arguments: `c.cmd_str(&["SET", "k", "v"])`.
    pub async fn cmd_str(&mut self, args: &[&str]) -> Result<Value, ClientError> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&args).await
    }

    /// Reads the next frame the server sends without sending anything: the messages of a
    /// subscribed connection (pub/sub).
    pub async fn next_frame(&mut self) -> Result<Value, ClientError> {
        self.check()?;
        self.write_buf.clear();
        self.flush_and_read(1).await.map(|mut replies| replies.remove(0))
    }

    /// Sends all commands in one write, then reads one reply per command.
    pub async fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> Result<Vec<Value>, ClientError> {
        self.check()?;
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        self.write_buf.clear();
        for cmd in cmds {
            encode_command(cmd, &mut self.write_buf);
        }
        self.flush_and_read(cmds.len()).await
    }

    fn check(&self) -> Result<(), ClientError> {
        if self.broken {
            Err(ClientError::Broken)
        } else {
            Ok(())
        }
    }

    async fn flush_and_read(&mut self, count: usize) -> Result<Vec<Value>, ClientError> {
        let result = self.flush_and_read_inner(count).await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    async fn flush_and_read_inner(&mut self, count: usize) -> Result<Vec<Value>, ClientError> {
        self.stream.write_all(&self.write_buf).await?;
        let mut replies = Vec::with_capacity(count);
        while replies.len() < count {
            let reply = match self.read_timeout {
                None => self.read_reply().await?,
                Some(t) => tokio::time::timeout(t, self.read_reply()).await.map_err(|_| ClientError::Timeout(t))??,
            };
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn read_reply(&mut self) -> Result<Value, ClientError> {
        loop {
            if let Some(value) = self.replies.next_value()? {
                return Ok(value);
            }
            if self.replies.read_from(&mut self.stream).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Bounds every wait, so a bug fails a test instead of hanging it.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// A server that reads `expect_bytes` bytes, checks them, answers with
    /// `reply` and then holds the connection open until the client leaves.
    async fn canned_server(expect: &'static [u8], reply: &'static [u8]) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; expect.len()];
            sock.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expect);
            sock.write_all(reply).await.unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        addr
    }

    #[tokio::test]
    async fn cmd_round_trip() {
        let addr = canned_server(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"$1\r\nv\r\n").await;
        let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(TEST_TIMEOUT);
        assert_eq!(c.cmd_str(&["GET", "k"]).await.unwrap(), Value::bulk("v"));
    }

    #[tokio::test]
    async fn error_replies_are_values() {
        let addr = canned_server(b"*1\r\n$4\r\nNOPE\r\n", b"-ERR unknown command\r\n").await;
        let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(TEST_TIMEOUT);
        assert_eq!(c.cmd(&[b"NOPE"]).await.unwrap(), Value::error("ERR unknown command"));
    }

    #[tokio::test]
    async fn pipeline_reads_every_reply() {
        let addr = canned_server(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n", b"+PONG\r\n+PONG\r\n").await;
        let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(TEST_TIMEOUT);
        let cmds = vec![vec![b"PING".to_vec()], vec![b"PING".to_vec()]];
        let replies = c.pipeline(&cmds).await.unwrap();
        assert_eq!(replies, vec![Value::SimpleString("PONG".into()); 2]);
        assert!(c.pipeline(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn timeout_then_broken() {
        let addr = canned_server(b"*1\r\n$4\r\nPING\r\n", b"+PA").await;
        let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(Duration::from_millis(50));
        assert!(matches!(c.cmd_str(&["PING"]).await, Err(ClientError::Timeout(_))));
        assert!(matches!(c.cmd_str(&["PING"]).await, Err(ClientError::Broken)));
    }

    #[tokio::test]
    async fn large_reply_in_many_reads() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let n = 20_000;
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 14];
            sock.read_exact(&mut got).await.unwrap();
            let mut reply = BytesMut::new();
            let items: Vec<Value> = (0..n).map(|i| Value::bulk(format!("key:{i}"))).collect();
            crate::encode(&Value::Array(items), crate::Protocol::Resp2, &mut reply);
            // Dribble it out in small writes.
            for chunk in reply.chunks(1000) {
                sock.write_all(chunk).await.unwrap();
                sock.flush().await.unwrap();
            }
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        let mut c = RespClient::connect_timeout(addr, TEST_TIMEOUT).await.unwrap().with_read_timeout(TEST_TIMEOUT);
        match c.cmd_str(&["KEYS"]).await.unwrap() {
            Value::Array(items) => {
                assert_eq!(items.len(), n);
                assert_eq!(items[n - 1], Value::bulk(format!("key:{}", n - 1)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn closed_mid_reply() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut got = [0u8; 14];
            sock.read_exact(&mut got).await.unwrap();
            sock.write_all(b"$5\r\nab").await.unwrap();
        });
        let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(TEST_TIMEOUT);
        assert!(matches!(c.cmd_str(&["PING"]).await, Err(ClientError::Closed)));
    }

    #[tokio::test]
    async fn protocol_error() {
        let addr = canned_server(b"*1\r\n$4\r\nPING\r\n", b"?\r\n").await;
        let mut c = RespClient::connect(addr).await.unwrap().with_read_timeout(TEST_TIMEOUT);
        assert!(matches!(c.cmd_str(&["PING"]).await, Err(ClientError::Protocol(ProtocolError::UnknownType(_)))));
    }
}
