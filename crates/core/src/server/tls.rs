//! TLS on the listener: the certificate and key it presents, swappable while it runs.
//!
//! The `rustls::ServerConfig` lives in an `ArcSwap`: every new connection loads the
//! current one, and `reload` stores a new one. A connection keeps the config it was
//! accepted with, so a reload never disturbs a connection that is already open.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::error::{ErrorCode, GatewayError};

/// ALPN protocols offered, most preferred first: clients that speak HTTP/2 get it.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The listener's TLS settings: a certificate chain and its private key.
pub struct ListenerTls {
    config: ArcSwap<ServerConfig>,
}

impl ListenerTls {
    /// From a PEM certificate chain (leaf first, then intermediates) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1). Errors name `tls.cert` or `tls.key`.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, GatewayError> {
        Ok(Self {
            config: ArcSwap::from_pointee(server_config(cert, key)?),
        })
    }

    /// Replaces the certificate and key for connections accepted from now on. On error
    /// the one in use stays.
    pub fn reload(&self, cert: &[u8], key: &[u8]) -> Result<(), GatewayError> {
        self.config.store(Arc::new(server_config(cert, key)?));
        Ok(())
    }

    /// An acceptor with the current certificate, for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }
}

impl fmt::Debug for ListenerTls {
    // Says nothing of the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerTls").finish_non_exhaustive()
    }
}

fn server_config(cert: &[u8], key: &[u8]) -> Result<ServerConfig, GatewayError> {
    let chain = certificate_chain(cert)?;
    let key = private_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", "no TLS version is usable", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(key_error)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn certificate_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, GatewayError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("tls.cert", "is not valid PEM", e))?;
    if chain.is_empty() {
        return Err(GatewayError::new(
            ErrorCode::InvalidConfig,
            "tls.cert has no certificate (expected PEM with -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(chain)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, GatewayError> {
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(GatewayError::new(
            ErrorCode::InvalidConfig,
            "tls.key is encrypted (a passphrase-protected PEM); give the key unencrypted",
        ));
    }
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => GatewayError::new(
            ErrorCode::InvalidConfig,
            "tls.key has no private key (expected PEM with -----BEGIN PRIVATE KEY-----, \
             -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)",
        ),
        e => invalid("tls.key", "is not valid PEM", e),
    })
}

/// rustls checks the key and the leaf certificate together; says which one is wrong.
fn key_error(e: rustls::Error) -> GatewayError {
    match e {
        rustls::Error::InconsistentKeys(_) => {
            invalid("tls.key", "does not match the certificate in tls.cert", e)
        }
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            invalid("tls.cert", "is not a certificate rustls can use", e)
        }
        e => invalid("tls.key", "is not a private key rustls can use", e),
    }
}

fn invalid(option: &str, what: &str, cause: impl std::fmt::Display) -> GatewayError {
    // The cause is in the message once (a `with_cause` would print it a second time).
    GatewayError::new(
        ErrorCode::InvalidConfig,
        format!("{option} {what}: {cause}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate and its key, made here (no private key is committed).
    fn self_signed(host: &str) -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn message(result: Result<ListenerTls, GatewayError>) -> String {
        let err = result.expect_err("should fail");
        assert_eq!(err.code(), ErrorCode::InvalidConfig);
        err.message().to_string()
    }

    #[test]
    fn an_encrypted_key_is_named_as_such() {
        let (cert, _) = self_signed("localhost");
        let key =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let msg = message(ListenerTls::from_pem(cert.as_bytes(), key.as_bytes()));
        assert!(msg.contains("tls.key is encrypted"), "{msg}");
    }

    #[test]
    fn a_mismatched_key_names_its_cause_once() {
        let (cert, _) = self_signed("localhost");
        let (_, other_key) = self_signed("localhost");
        let err = ListenerTls::from_pem(cert.as_bytes(), other_key.as_bytes()).unwrap_err();
        let shown = err.to_string();
        assert_eq!(shown.matches("KeyMismatch").count(), 1, "{shown}");
    }

    #[test]
    fn accepts_a_matching_pair_and_offers_h2_first() {
        let (cert, key) = self_signed("localhost");
        let tls = ListenerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let config = tls.config();
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn no_certificate_names_tls_cert() {
        let (_, key) = self_signed("localhost");
        let m = message(ListenerTls::from_pem(b"not a pem at all", key.as_bytes()));
        assert!(m.starts_with("tls.cert has no certificate"), "{m}");
        // A key where the certificate should be is not a certificate either.
        let m = message(ListenerTls::from_pem(key.as_bytes(), key.as_bytes()));
        assert!(m.starts_with("tls.cert"), "{m}");
    }

    #[test]
    fn broken_pem_names_the_option() {
        let (cert, key) = self_signed("localhost");
        let cut = &cert[..cert.len() / 2];
        let m = message(ListenerTls::from_pem(cut.as_bytes(), key.as_bytes()));
        assert!(m.starts_with("tls.cert is not valid PEM"), "{m}");
        let cut = &key[..key.len() / 2];
        let m = message(ListenerTls::from_pem(cert.as_bytes(), cut.as_bytes()));
        assert!(m.starts_with("tls.key is not valid PEM"), "{m}");
    }

    #[test]
    fn no_key_names_tls_key() {
        let (cert, _) = self_signed("localhost");
        let m = message(ListenerTls::from_pem(cert.as_bytes(), cert.as_bytes()));
        assert!(m.starts_with("tls.key has no private key"), "{m}");
        let m = message(ListenerTls::from_pem(cert.as_bytes(), b""));
        assert!(m.starts_with("tls.key has no private key"), "{m}");
    }

    #[test]
    fn garbage_inside_a_certificate_block_names_tls_cert() {
        let (_, key) = self_signed("localhost");
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let m = message(ListenerTls::from_pem(pem.as_bytes(), key.as_bytes()));
        assert!(m.starts_with("tls.cert"), "{m}");
    }

    #[test]
    fn a_key_of_another_certificate_names_tls_key() {
        let (cert, _) = self_signed("localhost");
        let (_, other_key) = self_signed("localhost");
        let m = message(ListenerTls::from_pem(cert.as_bytes(), other_key.as_bytes()));
        assert!(m.starts_with("tls.key does not match"), "{m}");
    }

    #[test]
    fn reload_swaps_and_a_bad_reload_keeps_the_old_one() {
        let (cert, key) = self_signed("one.test");
        let tls = ListenerTls::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
        let first = tls.config();
        let (cert2, key2) = self_signed("two.test");
        tls.reload(cert2.as_bytes(), key2.as_bytes()).unwrap();
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second));
        let err = tls.reload(cert.as_bytes(), key2.as_bytes()).unwrap_err();
        assert!(err.message().starts_with("tls.key"), "{}", err.message());
        assert!(Arc::ptr_eq(&second, &tls.config()));
    }
}
