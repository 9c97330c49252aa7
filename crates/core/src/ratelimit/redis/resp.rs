//! A minimal RESP2 client connection: commands out, replies (scalars and flat arrays) in.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::RedisError;

/// Longest reply line / bulk string accepted (replies here are a few numbers).
const MAX_LINE: u64 = 64 * 1024;
const MAX_BULK: usize = 1024 * 1024;
const MAX_ARRAY: usize = 64 * 1024;

/// One RESP2 reply. Errors are values here: the connection is still in sync.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    pub(super) fn into_result(self) -> Result<Reply, RedisError> {
        match self {
            Reply::Error(e) => Err(RedisError::Server(e)),
            r => Ok(r),
        }
    }
}

pub(super) fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One connection, tagged with the generation of the pool it was opened in.
pub(super) struct Conn {
    pub(super) io: BufReader<TcpStream>,
    pub(super) generation: u64,
}

impl Conn {
    pub(super) async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RedisError> {
        self.io.get_mut().write_all(&encode(args)).await?;
        self.read_reply().await
    }

    pub(super) async fn read_line(&mut self) -> Result<Vec<u8>, RedisError> {
        let mut line = Vec::new();
        let n = (&mut self.io)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Redis closed the connection",
            )
            .into());
        }
        if !line.ends_with(b"\r\n") {
            return Err(RedisError::Protocol("truncated or overlong line".into()));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    /// A reply; arrays may hold scalars only (all this client ever asks for).
    pub(super) async fn read_reply(&mut self) -> Result<Reply, RedisError> {
        let line = self.read_line().await?;
        if let Some(count) = line.strip_prefix(b"*") {
            let count = parse_int(count)?;
            if count < 0 {
                return Ok(Reply::Array(None));
            }
            let count = usize::try_from(count)
                .ok()
                .filter(|&c| c <= MAX_ARRAY)
                .ok_or_else(|| RedisError::Protocol("array too long".into()))?;
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let line = self.read_line().await?;
                if line.starts_with(b"*") {
                    return Err(RedisError::Protocol("nested array".into()));
                }
                items.push(self.scalar(line).await?);
            }
            return Ok(Reply::Array(Some(items)));
        }
        self.scalar(line).await
    }

    pub(super) async fn scalar(&mut self, line: Vec<u8>) -> Result<Reply, RedisError> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match line.split_first() {
            Some((b'+', rest)) => Ok(Reply::Status(text(rest))),
            Some((b'-', rest)) => Ok(Reply::Error(text(rest))),
            Some((b':', rest)) => Ok(Reply::Int(parse_int(rest)?)),
            Some((b'$', rest)) => {
                let len = parse_int(rest)?;
                if len < 0 {
                    return Ok(Reply::Bulk(None));
                }
                let len = usize::try_from(len)
                    .ok()
                    .filter(|&l| l <= MAX_BULK)
                    .ok_or_else(|| RedisError::Protocol("bulk string too long".into()))?;
                let mut buf = vec![0; len + 2];
                self.io.read_exact(&mut buf).await?;
                if !buf.ends_with(b"\r\n") {
                    return Err(RedisError::Protocol("bulk string not terminated".into()));
                }
                buf.truncate(len);
                Ok(Reply::Bulk(Some(buf)))
            }
            _ => Err(RedisError::Protocol(format!(
                "unknown reply type: {}",
                text(&line)
            ))),
        }
    }
}

pub(super) fn parse_int(b: &[u8]) -> Result<i64, RedisError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RedisError::Protocol("bad integer".into()))
}
