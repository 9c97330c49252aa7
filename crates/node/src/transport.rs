//! `NativeTransport`: upstream TLS options and HTTP/2 for the routes and
//! `forwardRequest` calls that use them, with a pool of its own (built with the pool
//! settings of the gateway's client). The facade makes one per distinct options (by
//! content), and checks options at configuration time with `validateTransportOptions`.

use std::sync::Arc;

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;
use velithon_core::client::{TransportOptions, UpstreamTransport};

use crate::client::NativeClient;
use crate::errors::to_napi;

#[napi(object)]
pub struct NativeTransportOptions {
    /// PEM: the CAs to trust instead of the platform's roots.
    pub ca: Option<Buffer>,
    /// PEM: the client certificate (chain), for mutual TLS.
    pub cert: Option<Buffer>,
    /// PEM: its private key.
    pub key: Option<Buffer>,
    pub servername: Option<String>,
    pub reject_unauthorized: bool,
    pub http2: bool,
}

/// The checks of `new NativeTransport` without building one (no client needed): PEM that
/// does not parse, a key that is not the certificate's, a bad servername throw
/// `VG_INVALID_CONFIG` naming `tls.ca`, `tls.cert`, `tls.key` or `tls.servername`. For a
/// `LoadBalancer`'s options, which reach a transport only when a gateway uses it.
#[napi(catch_unwind)]
#[cfg_attr(test, allow(dead_code))]
pub fn validate_transport_options(options: NativeTransportOptions) -> napi::Result<()> {
    transport_options(options).validate().map_err(to_napi)
}

/// The core's options (PEM copied out of the Buffers, on the JS thread).
pub(crate) fn transport_options(options: NativeTransportOptions) -> TransportOptions {
    TransportOptions {
        ca: options.ca.map(|b| b.to_vec()),
        cert: options.cert.map(|b| b.to_vec()),
        key: options.key.map(|b| b.to_vec()),
        servername: options.servername,
        reject_unauthorized: options.reject_unauthorized,
        http2: options.http2,
    }
}

#[napi]
pub struct NativeTransport {
    pub(crate) inner: Arc<UpstreamTransport>,
}

#[napi]
impl NativeTransport {
    /// Checks the options (`VG_INVALID_CONFIG` naming `tls.ca`, `tls.cert`, `tls.key` or
    /// `tls.servername`) and builds the transport with `client`'s pool settings.
    #[napi(constructor, catch_unwind)]
    pub fn new(client: &NativeClient, options: NativeTransportOptions) -> napi::Result<Self> {
        let transport = UpstreamTransport::new(transport_options(options), client.inner.settings())
            .map_err(to_napi)?;
        Ok(Self {
            inner: Arc::new(transport),
        })
    }
}
