//! TLS on the listener: HTTP/1.1 and HTTP/2 by ALPN, a certificate reload seen by new
//! connections, and clients that handshake (or not) and then say nothing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::*;
use velithon_core::router::Router;
use velithon_core::server::{App, ListenerTls, RunningServer, ServerSettings};

/// A self-signed certificate for `localhost`: (cert PEM, key PEM, cert DER).
fn certificate() -> (String, String, CertificateDer<'static>) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (
        made.cert.pem(),
        made.signing_key.serialize_pem(),
        made.cert.der().clone(),
    )
}

/// A gateway with no routes (every request is a 404) serving TLS.
async fn tls_gateway(tls: Arc<ListenerTls>, header_timeout: Duration) -> RunningServer {
    let settings = ServerSettings {
        request_header_timeout: header_timeout,
        tls: Some(tls),
        ..ServerSettings::default()
    };
    RunningServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(App::new(Router::new())),
        settings,
    )
    .await
    .expect("bind gateway")
}

async fn connect(
    server: &RunningServer,
    trusted: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_http2_and_http1_as_alpn_says() {
    bounded(async {
        let (cert, key, der) = certificate();
        let tls = Arc::new(ListenerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        let gw = tls_gateway(tls, Duration::from_secs(5)).await;

        let stream = connect(&gw, &der, &[b"h2", b"http/1.1"]).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get("https://localhost/nothing-here")
            .body(empty())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(res.status(), 404);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("VG_NO_ROUTE"));

        let stream = connect(&gw, &der, &[b"http/1.1"]).await;
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/nothing-here")
            .header("host", "localhost")
            .body(empty())
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_11);
        assert_eq!(res.status(), 404);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn new_connections_get_the_reloaded_certificate() {
    bounded(async {
        let (cert, key, first) = certificate();
        let tls = Arc::new(ListenerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        let gw = tls_gateway(tls, Duration::from_secs(5)).await;
        let before = connect(&gw, &first, &[b"http/1.1"]).await;

        let (cert2, key2, second) = certificate();
        gw.tls()
            .expect("a TLS listener")
            .reload(cert2.as_bytes(), key2.as_bytes())
            .unwrap();
        let after = connect(&gw, &second, &[b"http/1.1"]).await;
        let presented =
            |s: &TlsStream<TcpStream>| s.get_ref().1.peer_certificates().unwrap()[0].clone();
        assert_eq!(presented(&before), first);
        assert_eq!(presented(&after), second);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_clients_are_dropped_after_the_header_timeout() {
    bounded(async {
        let (cert, key, der) = certificate();
        let tls = Arc::new(ListenerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap());
        let gw = tls_gateway(tls, Duration::from_millis(300)).await;

        // No ClientHello at all.
        let started = Instant::now();
        let mut tcp = TcpStream::connect(gw.local_addr()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() >= Duration::from_millis(250));

        // A handshake, then nothing: h2 (where nothing else would time out), HTTP/1.1,
        // and no ALPN (the protocol is told from the first bytes).
        for alpn in [&[&b"h2"[..]][..], &[b"http/1.1"], &[]] {
            let mut stream = connect(&gw, &der, alpn).await;
            let started = Instant::now();
            // Session tickets may come first; the stream ends when the gateway hangs up.
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            assert!(
                started.elapsed() >= Duration::from_millis(150),
                "closed after {:?} with ALPN {alpn:?}",
                started.elapsed()
            );
        }
    })
    .await;
}
