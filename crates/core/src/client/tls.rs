//! The rustls client configuration shared by every upstream client: the platform's
//! root store (read once per process), the ring provider, no OpenSSL anywhere.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::error::{ErrorCode, GatewayError};

/// The ALPN protocol id of HTTP/1.1.
pub(super) const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The crypto provider of every upstream connection: ring.
pub(super) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The platform's trusted roots, read once per process.
pub(super) fn platform_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            // Unreadable or missing certificates leave the store smaller, never fail
            // start-up: plain-HTTP upstreams need none of them.
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                let _ = store.add(cert);
            }
            Arc::new(store)
        })
        .clone()
}

/// A config builder on the ring provider with the safe default protocol versions.
pub(super) fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
}

/// The platform roots, no client certificate, no ALPN (the connector sets it).
pub(super) fn default_client_config() -> ClientConfig {
    builder()
        .with_root_certificates(platform_roots())
        .with_no_client_auth()
}

/// The TLS settings of an HTTP/1.1-only connection to `host` (a DNS name or an IP
/// address, IPv6 with or without brackets) without upstream TLS options: the platform
/// roots, no client certificate, ALPN `http/1.1` only. For protocols that need HTTP/1.1
/// on the wire, such as a WebSocket upgrade. `UpstreamTransport::http1_tls` is the same
/// under a route's `tls` options.
pub fn default_http1_tls(
    host: &str,
) -> Result<(Arc<ClientConfig>, ServerName<'static>), GatewayError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    let config = CONFIG
        .get_or_init(|| {
            let mut config = default_client_config();
            config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
            Arc::new(config)
        })
        .clone();
    Ok((config, server_name(host)?))
}

/// The name a TLS connection to `host` sends (SNI, for DNS names) and verifies.
pub(super) fn server_name(host: &str) -> Result<ServerName<'static>, GatewayError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_string()).map_err(|_| {
        GatewayError::new(
            ErrorCode::InvalidConfig,
            format!("{host:?} is not a DNS name or an IP address a TLS connection can verify"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_http1_tls_offers_only_http1() {
        let (config, name) = default_http1_tls("example.com").unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(name.to_str(), "example.com");
        let (_, ip) = default_http1_tls("[::1]").unwrap();
        assert!(matches!(ip, ServerName::IpAddress(_)));
        assert_eq!(
            default_http1_tls("not a name").unwrap_err().code(),
            ErrorCode::InvalidConfig
        );
    }
}
