//! Upgrade requests (WebSocket) go upstream on a connection of their own: once the
//! upstream switches protocols the connection belongs to the tunnel, so it can never
//! come from, or go back to, the pool.

use http::uri::Scheme;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

use super::h1_pool::{connect_tcp, host_port, origin_form, protocol_error};
use super::tls::default_http1_tls;
use super::tls_error::tls_failure;
use super::{UpstreamClient, UpstreamTransport};
use crate::body::ProxyBody;
use crate::error::{ErrorCode, GatewayError};

impl UpstreamClient {
    /// Sends an upgrade request (absolute URI, `Upgrade` and `Connection: upgrade` set)
    /// on a new HTTP/1.1 connection (TLS with ALPN `http/1.1` for `https://`, under the
    /// route's `transport` options when it has some) and returns the upstream's answer.
    /// On a `101` the upstream's side of the tunnel is `hyper::upgrade::on(&mut response)`.
    pub async fn send_upgrade(
        &self,
        req: Request<ProxyBody>,
        transport: Option<&UpstreamTransport>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let uri = req.uri().clone();
        let Some(authority) = uri.authority() else {
            return Err(GatewayError::new(
                ErrorCode::Internal,
                "upstream URI has no authority",
            ));
        };
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let authority = host_port(authority, if https { 443 } else { 80 });
        // One bound for the TCP connect and the TLS handshake together.
        let connect_timeout = self.settings.connect_timeout;
        let deadline = tokio::time::Instant::now() + connect_timeout;
        let tcp = connect_tcp(&authority, connect_timeout).await?;
        let mut req = req;
        *req.uri_mut() = origin_form(&uri);
        if !https {
            return exchange(tcp, req).await;
        }
        let host = uri.host().unwrap_or_default();
        let (config, name) = match transport {
            Some(t) => t.http1_tls(host)?,
            None => default_http1_tls(host)?,
        };
        let handshake = TlsConnector::from(config).connect(name, tcp);
        let tls = match tokio::time::timeout_at(deadline, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                return Err(tls_failure(&e).unwrap_or_else(|| {
                    GatewayError::new(
                        ErrorCode::UpstreamConnect,
                        "the TLS handshake with the upstream failed",
                    )
                    .with_cause(e)
                }))
            }
            Err(_) => {
                return Err(GatewayError::new(
                    ErrorCode::UpstreamTimeout,
                    "the TLS handshake with the upstream timed out",
                ))
            }
        };
        exchange(tls, req).await
    }
}

/// One request on a fresh connection whose driver hands the connection over on a 101.
async fn exchange<IO>(io: IO, req: Request<ProxyBody>) -> Result<Response<Incoming>, GatewayError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(protocol_error)?;
    tokio::spawn(async move {
        // Ends when the connection closes or after the switch (the IO then lives on
        // in the upgraded stream).
        let _ = conn.with_upgrades().await;
    });
    sender.send_request(req).await.map_err(protocol_error)
}
