//! Errors cross the FFI as `Error` objects whose message starts with a stable code,
//! `VG_…: message`; the facade (`ts/errors.ts`) turns them into typed classes.

use velithon_core::{ErrorCode, GatewayError};

pub fn to_napi(err: GatewayError) -> napi::Error {
    coded(err.code(), &err.to_string_without_code())
}

pub fn coded(code: ErrorCode, message: &str) -> napi::Error {
    napi::Error::new(
        napi::Status::GenericFailure,
        format!("{}: {message}", code.as_str()),
    )
}

pub fn invalid(message: impl AsRef<str>) -> napi::Error {
    coded(ErrorCode::InvalidConfig, message.as_ref())
}

trait WithoutCode {
    fn to_string_without_code(&self) -> String;
}

impl WithoutCode for GatewayError {
    fn to_string_without_code(&self) -> String {
        let full = self.to_string();
        let prefix = format!("{}: ", self.code().as_str());
        full.strip_prefix(&prefix).unwrap_or(&full).to_string()
    }
}
