//! The vault's errors: Azure Key Vault's error shape (`{"error": {"code", "message"}}`, with
//! `WWW-Authenticate` on 401), and how store errors map to statuses.

use super::*;

/// An Azure-style error: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct VaultError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub(super) challenge: Option<String>,
    /// Already in the audit log (a release refusal): the route does not audit it again.
    pub(crate) audited: bool,
}

impl VaultError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        VaultError {
            status,
            code,
            message: message.into(),
            challenge: None,
            audited: false,
        }
    }
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }
    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "KeyNotFound",
            format!("{what} was not found in this vault"),
        )
    }
    pub(crate) fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("vault internal error: {e}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the vault could not complete the request; see its log",
        )
    }
}

impl From<crate::store::StoreError> for VaultError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // The database is down or restarting: say so, and that a retry may succeed.
            crate::store::StoreError::Unavailable(message) => VaultError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!(
                    "{message}: the request was not carried out, or not acknowledged; try again"
                ),
            ),
            crate::store::StoreError::Conflict(message) => {
                VaultError::new(StatusCode::CONFLICT, "Conflict", message)
            }
            e => VaultError::internal(e),
        }
    }
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        let body = api::AzureError {
            error: api::AzureErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(c) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        resp
    }
}

pub(crate) type VResult<T> = Result<T, VaultError>;
