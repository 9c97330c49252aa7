//! A fixed-response HTTP/1.1 upstream for `npm run bench`: every request gets the same
//! small body. Usage: `fixed-upstream [port] [worker-threads] [--tls cert.pem key.pem]`;
//! prints the bound address. With `--tls` it speaks HTTPS (rustls with ring, ALPN
//! `http/1.1` only), so a proxy's upstream TLS can be measured against the same answer.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn main() {
    let mut positional = Vec::new();
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--tls" {
            let (Some(cert), Some(key)) = (args.next(), args.next()) else {
                panic!("usage: fixed-upstream [port] [threads] [--tls cert.pem key.pem]");
            };
            tls = Some(acceptor(&cert, &key));
        } else {
            positional.push(arg);
        }
    }
    let port: u16 = positional.first().and_then(|a| a.parse().ok()).unwrap_or(0);
    let threads: usize = positional.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind");
        println!("listening on {}", listener.local_addr().expect("addr"));
        let body = Bytes::from_static(b"hello from the fixed upstream\n");
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            serve(stream, body).await;
                        }
                    }
                    None => serve(stream, body).await,
                }
            });
        }
    });
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key.
fn acceptor(cert: &str, key: &str) -> TlsAcceptor {
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("read the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read the private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// Serves one HTTP/1.1 connection: every request gets `body`.
async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(stream: S, body: Bytes) {
    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "text/plain")
                    .body(Full::new(body))
                    .expect("response"),
            )
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}
