//! The rustls client configuration shared by every upstream client: the platform's
//! root store (read once per process), no OpenSSL anywhere.

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};

pub(super) fn default_client_config() -> ClientConfig {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let mut store = RootCertStore::empty();
        // Unreadable or missing certificates leave the store smaller, never fail start-up:
        // plain-HTTP upstreams need none of them.
        let loaded = rustls_native_certs::load_native_certs();
        for cert in loaded.certs {
            let _ = store.add(cert);
        }
        Arc::new(store)
    });
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots.clone())
        .with_no_client_auth()
}
