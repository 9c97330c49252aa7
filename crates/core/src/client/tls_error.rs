//! TLS failures to an upstream, told apart: the `rustls::Error` is found in an error's
//! source chain (tokio-rustls wraps it in an `io::Error`, whose `source()` skips the
//! wrapped error, so `get_ref()` is followed too) and turned into `VG_UPSTREAM_TLS`
//! (502) with a reason a person can act on.

use std::error::Error as StdError;

use rustls::{AlertDescription, CertificateError};

use crate::error::{ErrorCode, GatewayError};

/// The `rustls::Error` somewhere in `err`'s chain, if any.
pub(crate) fn find_rustls_error<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a rustls::Error> {
    let mut cur: Option<&'a (dyn StdError + 'static)> = Some(err);
    // Chains are short; the bound only guards against a cycle.
    for _ in 0..32 {
        let e = cur?;
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                let inner: &'a (dyn StdError + 'static) = inner;
                if let Some(found) = find_rustls_error(inner) {
                    return Some(found);
                }
            }
        }
        cur = e.source();
    }
    None
}

/// `VG_UPSTREAM_TLS` for an error whose chain holds a TLS failure during the handshake;
/// `None` otherwise.
pub(crate) fn tls_failure(err: &(dyn StdError + 'static)) -> Option<GatewayError> {
    tls_failure_at(err, true)
}

/// `VG_UPSTREAM_TLS` for an error whose chain holds a TLS failure; `None` otherwise.
/// `connecting`: it happened while the connection was made (the handshake), else on a
/// connection already up (e.g. an alert or a corrupt record after the handshake).
pub(crate) fn tls_failure_at(
    err: &(dyn StdError + 'static),
    connecting: bool,
) -> Option<GatewayError> {
    let tls = find_rustls_error(err)?;
    Some(GatewayError::new(
        ErrorCode::UpstreamTls,
        reason(tls, connecting),
    ))
}

/// What went wrong, in words: "TLS handshake with the upstream failed: …" for a failure
/// while connecting (`handshake`), "a TLS error on the upstream connection: …" after.
pub(crate) fn reason(err: &rustls::Error, handshake: bool) -> String {
    let prefix = if handshake {
        "TLS handshake with the upstream failed"
    } else {
        "a TLS error on the upstream connection"
    };
    format!("{prefix}: {}", detail(err, handshake))
}

fn detail(err: &rustls::Error, handshake: bool) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                String::from("the upstream's certificate has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                String::from("the upstream's certificate is not valid yet")
            }
            CertificateError::UnknownIssuer => String::from(
                "the upstream's certificate is not signed by a trusted CA \
                 (unknown issuer); give the CA in tls.ca",
            ),
            CertificateError::NotValidForNameContext {
                expected,
                presented,
            } => {
                let names: Vec<String> = presented.iter().map(|p| bare_name(p)).collect();
                let has = if names.is_empty() {
                    String::from("it names no host")
                } else {
                    format!("it is for {}", names.join(", "))
                };
                format!(
                    "the upstream's certificate is not valid for the name {} ({has}); \
                     tls.servername sets the name to verify",
                    expected.to_str()
                )
            }
            CertificateError::NotValidForName => String::from(
                "the upstream's certificate is not valid for the name it was reached by; \
                 tls.servername sets the name to verify",
            ),
            CertificateError::Revoked => {
                String::from("the upstream's certificate has been revoked")
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                String::from("the upstream's certificate is not for TLS server use")
            }
            other => format!("the upstream's certificate is invalid ({other:?})"),
        },
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => String::from(
            "the upstream required a client certificate; give one in tls.cert and tls.key",
        ),
        rustls::Error::AlertReceived(
            alert @ (AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied),
        ) => format!("the upstream rejected the gateway's client certificate (alert {alert:?})"),
        rustls::Error::AlertReceived(alert) if handshake => {
            format!("handshake failure (alert {alert:?} from the upstream)")
        }
        rustls::Error::AlertReceived(alert) => format!("alert {alert:?} from the upstream"),
        other if handshake => format!("handshake failure ({other})"),
        other => other.to_string(),
    }
}

/// `DnsName("a.example")` (how the verifier lists a certificate's names) → `a.example`.
fn bare_name(presented: &str) -> String {
    match (presented.find('"'), presented.rfind('"')) {
        (Some(start), Some(end)) if end > start => presented[start + 1..end].to_string(),
        _ => presented.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    fn wrapped(err: rustls::Error) -> Box<dyn StdError + Send + Sync> {
        // As hyper-rustls and tokio-rustls wrap it: io(other(io(InvalidData, rustls))).
        let inner = std::io::Error::new(std::io::ErrorKind::InvalidData, err);
        Box::new(std::io::Error::other(inner))
    }

    fn message(err: rustls::Error) -> String {
        let boxed = wrapped(err);
        let gw = tls_failure(boxed.as_ref()).expect("a TLS failure");
        assert_eq!(gw.code(), ErrorCode::UpstreamTls);
        gw.message().to_string()
    }

    #[test]
    fn finds_the_rustls_error_behind_io_errors() {
        let boxed = wrapped(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        assert!(find_rustls_error(boxed.as_ref()).is_some());
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(find_rustls_error(&plain).is_none());
        assert!(tls_failure(&plain).is_none());
    }

    #[test]
    fn says_what_went_wrong() {
        assert!(
            message(rustls::Error::InvalidCertificate(CertificateError::Expired))
                .contains("expired")
        );
        assert!(message(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer
        ))
        .contains("unknown issuer"));
        let name = message(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap().to_owned(),
                presented: vec!["DnsName(\"other.example\")".into()],
            },
        ));
        assert!(name.contains("not valid for the name 127.0.0.1"), "{name}");
        assert!(name.contains("it is for other.example"), "{name}");
        assert!(message(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        ))
        .contains("required a client certificate"));
        assert!(
            message(rustls::Error::AlertReceived(AlertDescription::UnknownCA))
                .contains("rejected the gateway's client certificate")
        );
        assert!(message(rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
        ))
        .contains("handshake failure"));
    }

    #[test]
    fn handshake_only_while_connecting() {
        let boxed = wrapped(rustls::Error::DecryptError);
        let at_connect = tls_failure_at(boxed.as_ref(), true).unwrap();
        assert!(at_connect
            .message()
            .starts_with("TLS handshake with the upstream failed: handshake failure"));
        let later = tls_failure_at(boxed.as_ref(), false).unwrap();
        assert_eq!(later.code(), ErrorCode::UpstreamTls);
        assert!(
            later
                .message()
                .starts_with("a TLS error on the upstream connection: "),
            "{}",
            later.message()
        );
        assert!(
            !later.message().contains("handshake"),
            "{}",
            later.message()
        );
        let alert = wrapped(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        let later = tls_failure_at(alert.as_ref(), false).unwrap();
        assert_eq!(
            later.message(),
            "a TLS error on the upstream connection: the upstream required a client \
             certificate; give one in tls.cert and tls.key"
        );
    }

    #[test]
    fn tls_errors_are_upstream_failures() {
        assert_eq!(ErrorCode::UpstreamTls.as_str(), "VG_UPSTREAM_TLS");
        assert_eq!(
            ErrorCode::UpstreamTls.status(),
            http::StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ErrorCode::UpstreamTls.blame(),
            crate::error::Blame::Upstream
        );
    }
}
