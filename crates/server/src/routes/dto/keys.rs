//! API keys: creation and how a key is shown (never its secret, but once).

use registry_domain::auth::ApiKey;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    #[schema(example = "billing-service")]
    pub name: String,
    /// Any of `read`, `write`, `admin` (admin implies the others).
    #[schema(example = json!(["read", "write"]))]
    pub scopes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyResponse {
    pub id: Uuid,
    pub name: String,
    /// The key's public part, to tell keys apart.
    pub prefix: String,
    pub scopes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<ApiKey> for KeyResponse {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name.as_str().to_owned(),
            prefix: k.prefix,
            scopes: k
                .scopes
                .as_slice()
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: KeyResponse,
    /// The key itself. It is shown only now: store it safely.
    pub secret: String,
}
