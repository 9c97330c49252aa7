//! Not a product: the least a tokio HTTP/1.1 reverse proxy can do per request, as a
//! floor for `npm run bench` (row `tokio-floor`). No hyper, no routing, no pool: each
//! client connection gets its own upstream connection; request heads are parsed with
//! httparse and rewritten as the gateway rewrites them (hop-by-hop headers dropped,
//! `Host` replaced, `X-Forwarded-For/-Proto/-Host` set); responses must carry a
//! `Content-Length` (the fixed upstream's do). Bodies on requests are not supported.
//! Usage: `floor-proxy <upstream host:port> [port]`; prints `listening on <url>`.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "transfer-encoding",
    "upgrade",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let upstream = args
        .next()
        .expect("usage: floor-proxy <upstream host:port> [port]");
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        println!(
            "listening on http://{}",
            listener.local_addr().expect("addr")
        );
        loop {
            let Ok((client, peer)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = serve(client, peer, &upstream).await;
            });
        }
    });
}

async fn serve(mut client: TcpStream, peer: SocketAddr, upstream: &str) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let peer_ip = peer.ip().to_string();
    let mut inbuf = Vec::with_capacity(8192);
    let mut upbuf = Vec::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    loop {
        // The request head.
        let head_len = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            if let httparse::Status::Complete(n) = req.parse(&inbuf).map_err(invalid)? {
                out.clear();
                out.extend_from_slice(req.method.unwrap_or("GET").as_bytes());
                out.push(b' ');
                out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
                out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
                out.extend_from_slice(upstream.as_bytes());
                out.extend_from_slice(b"\r\n");
                let mut host: &[u8] = b"";
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("host") {
                        host = h.value;
                        continue;
                    }
                    if HOP_BY_HOP.iter().any(|n| h.name.eq_ignore_ascii_case(n))
                        || h.name.eq_ignore_ascii_case("x-forwarded-for")
                        || h.name.eq_ignore_ascii_case("x-forwarded-proto")
                        || h.name.eq_ignore_ascii_case("x-forwarded-host")
                    {
                        continue;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"x-forwarded-for: ");
                out.extend_from_slice(peer_ip.as_bytes());
                out.extend_from_slice(b"\r\nx-forwarded-proto: http\r\nx-forwarded-host: ");
                out.extend_from_slice(host);
                out.extend_from_slice(b"\r\n\r\n");
                break n;
            }
            if read_more(&mut client, &mut inbuf).await? == 0 {
                return Ok(());
            }
        };
        inbuf.drain(..head_len);
        up.write_all(&out).await?;

        // The response head, then its Content-Length body.
        let (head_len, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut res = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = res.parse(&upbuf).map_err(invalid)? {
                out.clear();
                out.extend_from_slice(b"HTTP/1.1 ");
                out.extend_from_slice(res.code.unwrap_or(502).to_string().as_bytes());
                out.push(b' ');
                out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
                out.extend_from_slice(b"\r\n");
                let mut length = 0usize;
                for h in res.headers.iter() {
                    if HOP_BY_HOP
                        .iter()
                        .any(|name| h.name.eq_ignore_ascii_case(name))
                    {
                        continue;
                    }
                    if h.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(h.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .ok_or_else(|| invalid("content-length"))?;
                    }
                    out.extend_from_slice(h.name.as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(h.value);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"\r\n");
                break (n, length);
            }
            if read_more(&mut up, &mut upbuf).await? == 0 {
                return Ok(());
            }
        };
        while upbuf.len() < head_len + body_len {
            if read_more(&mut up, &mut upbuf).await? == 0 {
                return Ok(());
            }
        }
        out.extend_from_slice(&upbuf[head_len..head_len + body_len]);
        upbuf.drain(..head_len + body_len);
        client.write_all(&out).await?;
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(4096);
    stream.read_buf(buf).await
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}
