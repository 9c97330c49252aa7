//! Upgrade proxying end to end: a raw origin that switches protocols, a raw client, the
//! gateway between them; bytes both ways, half-closes passed on, idle tunnels closed.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;
use velithon_core::client::ClientSettings;

/// An origin that answers an upgrade with 101, then upper-cases what it reads; on the
/// client's half-close it writes `bye` and closes its side.
async fn switching_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                assert!(
                    head.to_ascii_lowercase().contains("upgrade: line-echo"),
                    "{head}"
                );
                stream
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: line-echo\r\nConnection: upgrade\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stream
                            .write_all(&buf[..n].to_ascii_uppercase())
                            .await
                            .unwrap(),
                    }
                }
                let _ = stream.write_all(b"bye").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

/// Reads up to the end of an HTTP head (byte by byte: nothing after it is consumed).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

async fn open_tunnel(gateway: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(gateway).await.unwrap();
    stream
        .write_all(
            b"GET /t/x HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Upgrade\r\nUpgrade: line-echo\r\n\r\n",
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    stream
}

#[tokio::test]
async fn bytes_flow_both_ways_and_a_half_close_is_passed_on() {
    bounded(async {
        let origin = switching_origin().await;
        let gw = simple_gateway("/t/{p:path}", &[format!("http://{origin}")]).await;
        let mut stream = open_tunnel(gw.local_addr()).await;
        stream.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HELLO");
        // Half-close: the origin sees the end, still answers, then closes.
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"bye");
    })
    .await;
}

#[tokio::test]
async fn a_tunnel_with_no_traffic_is_closed_after_the_idle_timeout() {
    bounded(async {
        let origin = switching_origin().await;
        let settings = ClientSettings {
            upgrade_idle_timeout: Duration::from_millis(200),
            ..client_settings()
        };
        let route = proxy_route(&[format!("http://{origin}")], settings);
        let gw = start_gateway(vec![("/t/{p:path}", None, route)]).await;
        let mut stream = open_tunnel(gw.local_addr()).await;
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        // The gateway closes the client's side: EOF (or a reset) without any data.
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
    })
    .await;
}

#[tokio::test]
async fn shutdown_gives_a_tunnel_the_grace_then_cuts_it() {
    bounded(async {
        let origin = switching_origin().await;
        let mut gw = simple_gateway("/t/{p:path}", &[format!("http://{origin}")]).await;
        let mut stream = open_tunnel(gw.local_addr()).await;
        let started = std::time::Instant::now();
        gw.shutdown(Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
    })
    .await;
}
