//! How requests reach upstreams under TLS options or HTTP/2: a route's (or load
//! balancer's, or gateway's) `tls: { ca, cert, key, servername, rejectUnauthorized }`
//! and `http2`. Each `UpstreamTransport` owns its own pooled client, as Node keys its
//! agents' sockets by their TLS options: connections made under one set of options are
//! never used for another.
//!
//! - `ca` replaces the platform's root store (as Node's `ca` does): only the CAs given
//!   are trusted for these upstreams.
//! - `cert` + `key`: a client certificate, for upstreams that require mutual TLS.
//! - `servername`: the name sent as SNI and verified in the upstream's certificate,
//!   instead of the URL's host (an IP address is verified, but never sent as SNI).
//! - `reject_unauthorized: false`: any certificate is accepted (its handshake signature
//!   is still checked, so the connection is encrypted to whoever holds its key). Insecure.
//! - `http2`: HTTP/2 only — by prior knowledge on `http://` (h2c), and with ALPN offering
//!   only `h2` on `https://`. Without it, `https://` offers `h2` and `http/1.1` and uses
//!   what the upstream picks (an `h2` connection carries many requests at once), and
//!   `http://` stays on the gateway's inline HTTP/1.1 pool.

use std::fmt;
use std::sync::Arc;

use http::{Request, Response, Uri};
use hyper_rustls::FixedServerNameResolver;
use hyper_util::client::legacy::Client;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::alpn_gate::AlpnGate;
use super::connector::{self, Connector, H2_PING_INTERVAL};
use super::tls::{self, ALPN_HTTP1};
use super::{box_incoming, classify, ClientSettings};
use crate::body::ProxyBody;
use crate::error::{ErrorCode, GatewayError};

/// Upstream TLS options (the names of Node's `tls.connect`) and the HTTP version.
#[derive(Clone)]
pub struct TransportOptions {
    /// PEM: the CA certificates to trust instead of the platform's roots.
    pub ca: Option<Vec<u8>>,
    /// PEM: the client certificate (chain) for mutual TLS; needs `key`.
    pub cert: Option<Vec<u8>>,
    /// PEM: the client certificate's private key (PKCS#8, PKCS#1 or SEC1; unencrypted).
    pub key: Option<Vec<u8>>,
    /// The name sent as SNI and verified, instead of the URL's host.
    pub servername: Option<String>,
    /// Verify the upstream's certificate (default true). False accepts any. Insecure.
    pub reject_unauthorized: bool,
    /// HTTP/2 only (h2c by prior knowledge on `http://`, ALPN `h2` on `https://`).
    pub http2: bool,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            ca: None,
            cert: None,
            key: None,
            servername: None,
            reject_unauthorized: true,
            http2: false,
        }
    }
}

impl fmt::Debug for TransportOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a private key.
        f.debug_struct("TransportOptions")
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("cert", &self.cert.as_ref().map(Vec::len))
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("servername", &self.servername)
            .field("reject_unauthorized", &self.reject_unauthorized)
            .field("http2", &self.http2)
            .finish()
    }
}

/// A pooled client for upstreams reached under one set of `TransportOptions`.
pub struct UpstreamTransport {
    client: Client<Connector, ProxyBody>,
    /// The same trust and client certificate, ALPN `http/1.1` only (upgrades).
    http1: Arc<ClientConfig>,
    servername: Option<ServerName<'static>>,
    http2: bool,
    /// Without `http2`, ALPN decides: one connection first (see `alpn_gate`).
    alpn: Option<AlpnGate>,
}

impl fmt::Debug for UpstreamTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTransport")
            .field("servername", &self.servername)
            .field("http2", &self.http2)
            .finish()
    }
}

impl UpstreamTransport {
    /// Checks the options (bad PEM, a key without a certificate, a bad servername →
    /// `VG_INVALID_CONFIG` naming `tls.ca`, `tls.cert`, `tls.key` or `tls.servername`)
    /// and builds the client with the pool settings of `settings`. No runtime needed.
    pub fn new(options: TransportOptions, settings: &ClientSettings) -> Result<Self, GatewayError> {
        let (servername, config) = parse(&options)?;

        let mut http1 = config.clone();
        http1.alpn_protocols = vec![ALPN_HTTP1.to_vec()];

        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_or_http();
        let builder = match &servername {
            Some(name) => {
                builder.with_server_name_resolver(FixedServerNameResolver::new(name.clone()))
            }
            None => builder,
        };
        let http = connector::http_connector(settings);
        let https = if options.http2 {
            // ALPN: h2 only.
            builder.enable_http2().wrap_connector(http)
        } else {
            // ALPN: h2, http/1.1; the upstream picks.
            builder.enable_http1().enable_http2().wrap_connector(http)
        };
        let client = connector::client_builder(settings, H2_PING_INTERVAL)
            .http2_only(options.http2)
            .build(connector::timed(https, settings.connect_timeout));
        Ok(Self {
            client,
            http1: Arc::new(http1),
            servername,
            http2: options.http2,
            alpn: (!options.http2)
                .then(|| AlpnGate::new(settings.keep_alive_timeout, settings.connect_timeout)),
        })
    }

    /// Whether requests go as HTTP/2 only.
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// The TLS settings of an HTTP/1.1-only connection to `host` under these options
    /// (the CAs, client certificate, `servername` and `rejectUnauthorized` given), with
    /// ALPN `http/1.1` only: for protocols that need HTTP/1.1 on the wire, such as a
    /// WebSocket upgrade. The name is `servername` when set, else `host`.
    /// `tls::default_http1_tls` is the same without options.
    pub fn http1_tls(
        &self,
        host: &str,
    ) -> Result<(Arc<ClientConfig>, ServerName<'static>), GatewayError> {
        let name = match &self.servername {
            Some(name) => name.clone(),
            None => tls::server_name(host)?,
        };
        Ok((self.http1.clone(), name))
    }

    /// Whether this transport sends a request to `uri`: every `https://` one, and
    /// `http://` ones only for HTTP/2 (h2c); plain HTTP/1.1 keeps the inline pool.
    pub(super) fn handles(&self, uri: &Uri) -> bool {
        self.http2 || uri.scheme() != Some(&http::uri::Scheme::HTTP)
    }

    /// Sends `req` (absolute URI) and returns the response head, its body streaming.
    pub(super) async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, GatewayError> {
        let res = match &self.alpn {
            Some(gate) if req.uri().scheme() == Some(&http::uri::Scheme::HTTPS) => {
                gate.send(&self.client, req).await
            }
            _ => self.client.request(req).await,
        };
        Ok(res.map_err(classify)?.map(box_incoming))
    }
}

impl TransportOptions {
    /// The checks of `UpstreamTransport::new` alone (PEM parsed, the key matched to the
    /// certificate, the servername): `VG_INVALID_CONFIG` naming `tls.ca`, `tls.cert`,
    /// `tls.key` or `tls.servername`. Builds no client.
    pub fn validate(&self) -> Result<(), GatewayError> {
        parse(self).map(|_| ())
    }
}

/// The servername and the rustls configuration (no ALPN yet) of `options`.
fn parse(
    options: &TransportOptions,
) -> Result<(Option<ServerName<'static>>, ClientConfig), GatewayError> {
    let servername = options
        .servername
        .as_deref()
        .map(|name| {
            tls::server_name(name).map_err(|_| {
                invalid(format!(
                    "tls.servername {name:?} is not a DNS name or an IP address"
                ))
            })
        })
        .transpose()?;
    Ok((servername, client_config(options)?))
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(ErrorCode::InvalidConfig, message)
}

/// The rustls configuration of `options` (no ALPN yet).
fn client_config(options: &TransportOptions) -> Result<ClientConfig, GatewayError> {
    let builder = tls::builder();
    let builder = if !options.reject_unauthorized {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
    } else {
        let roots = match &options.ca {
            Some(pem) => Arc::new(roots_from_pem(pem)?),
            None => tls::platform_roots(),
        };
        builder.with_root_certificates(roots)
    };
    // A CA given with rejectUnauthorized: false is still checked for being PEM.
    if let (false, Some(pem)) = (options.reject_unauthorized, &options.ca) {
        roots_from_pem(pem)?;
    }
    match (&options.cert, &options.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(invalid(
            "tls.cert needs tls.key (the client certificate's private key)",
        )),
        (None, Some(_)) => Err(invalid(
            "tls.key needs tls.cert (the client certificate it belongs to)",
        )),
        (Some(cert), Some(key)) => {
            let chain = certs_from_pem(cert, "tls.cert")?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                invalid(format!(
                    "tls.key holds no usable PEM private key (PKCS#8, PKCS#1 or SEC1; \
                     encrypted keys are not supported): {e}"
                ))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| invalid(format!("tls.cert and tls.key cannot be used together: {e}")))
        }
    }
}

/// Every certificate of a PEM text; at least one, none malformed.
fn certs_from_pem(pem: &[u8], option: &str) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("{option} is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "{option} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, GatewayError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs_from_pem(pem, "tls.ca")?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            invalid(format!(
                "tls.ca: certificate {} cannot be used as a trusted CA: {e}",
                i + 1
            ))
        })?;
    }
    Ok(roots)
}

/// `rejectUnauthorized: false`: any certificate, for any name, from any issuer. The
/// handshake signature is still verified (with ring's algorithms), so the peer holds
/// the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new() -> Self {
        Self {
            algorithms: tls::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(options: TransportOptions) -> Result<UpstreamTransport, GatewayError> {
        UpstreamTransport::new(options, &ClientSettings::default())
    }

    fn message(options: TransportOptions) -> String {
        // `validate` (the binding's check at configuration time) says the same.
        let checked = options.validate().unwrap_err();
        let err = build(options).unwrap_err();
        assert_eq!(checked.code(), err.code());
        assert_eq!(checked.message(), err.message());
        assert_eq!(err.code(), ErrorCode::InvalidConfig);
        err.message().to_string()
    }

    /// A self-signed certificate and its key, made here (no key is committed).
    fn self_signed() -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn defaults_build() {
        let t = build(TransportOptions::default()).unwrap();
        assert!(!t.http2());
        let (config, name) = t.http1_tls("example.com").unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(name.to_str(), "example.com");
        assert!(t.handles(&"https://example.com/".parse().unwrap()));
        assert!(!t.handles(&"http://example.com/".parse().unwrap()));
    }

    #[test]
    fn http2_handles_plain_http_too() {
        let t = build(TransportOptions {
            http2: true,
            ..TransportOptions::default()
        })
        .unwrap();
        assert!(t.http2());
        assert!(t.handles(&"http://127.0.0.1:1/".parse().unwrap()));
    }

    #[test]
    fn pem_errors_name_the_option() {
        let bad = || Some(b"not pem at all".to_vec());
        assert!(message(TransportOptions {
            ca: bad(),
            ..TransportOptions::default()
        })
        .starts_with("tls.ca"));
        let (cert, key) = self_signed();
        assert!(message(TransportOptions {
            cert: bad(),
            key: Some(key.clone().into_bytes()),
            ..TransportOptions::default()
        })
        .starts_with("tls.cert"));
        assert!(message(TransportOptions {
            cert: Some(cert.clone().into_bytes()),
            key: bad(),
            ..TransportOptions::default()
        })
        .starts_with("tls.key"));
        assert!(message(TransportOptions {
            cert: Some(cert.clone().into_bytes()),
            ..TransportOptions::default()
        })
        .starts_with("tls.cert needs tls.key"));
        assert!(message(TransportOptions {
            key: Some(key.clone().into_bytes()),
            ..TransportOptions::default()
        })
        .starts_with("tls.key needs tls.cert"));
        assert!(message(TransportOptions {
            servername: Some("not a name!".into()),
            ..TransportOptions::default()
        })
        .starts_with("tls.servername"));
        // A key that is not the certificate's.
        let (_, other_key) = self_signed();
        assert!(message(TransportOptions {
            cert: Some(cert.clone().into_bytes()),
            key: Some(other_key.into_bytes()),
            ..TransportOptions::default()
        })
        .contains("tls.cert and tls.key"));
        // Good ones build; servername is what http1_tls verifies.
        let t = build(TransportOptions {
            ca: Some(cert.clone().into_bytes()),
            cert: Some(cert.into_bytes()),
            key: Some(key.into_bytes()),
            servername: Some("api.internal".into()),
            ..TransportOptions::default()
        })
        .unwrap();
        assert_eq!(t.http1_tls("127.0.0.1").unwrap().1.to_str(), "api.internal");
    }

    #[test]
    fn insecure_verifier_accepts_any_certificate() {
        let v = AcceptAnyCertificate::new();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = made.signing_key;
        let der = made.cert.der().clone();
        let name = ServerName::try_from("elsewhere.example").unwrap();
        assert!(v
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        // Handshake signatures are still checked, with ring's algorithms.
        let signed = |message: &[u8]| {
            let sig = rcgen::SigningKey::sign(&key, message).unwrap();
            let mut wire = 0x0403u16.to_be_bytes().to_vec(); // ecdsa_secp256r1_sha256
            wire.extend_from_slice(&(sig.len() as u16).to_be_bytes());
            wire.extend_from_slice(&sig);
            let mut reader = rustls::internal::msgs::codec::Reader::init(&wire);
            <DigitallySignedStruct as rustls::internal::msgs::codec::Codec>::read(&mut reader)
                .unwrap()
        };
        let good = signed(b"the handshake");
        assert!(v
            .verify_tls13_signature(b"the handshake", &der, &good)
            .is_ok());
        assert!(v
            .verify_tls12_signature(b"the handshake", &der, &good)
            .is_ok());
        assert!(v
            .verify_tls13_signature(b"another one", &der, &good)
            .is_err());
        assert!(v
            .verify_tls12_signature(b"another one", &der, &good)
            .is_err());
        assert_eq!(
            v.supported_verify_schemes(),
            tls::provider()
                .signature_verification_algorithms
                .supported_schemes()
        );
    }
}
