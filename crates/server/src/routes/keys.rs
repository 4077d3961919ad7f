//! `/v1/api-keys`: creating, listing and revoking API keys (admin only).

use actix_web::http::header;
use actix_web::{HttpResponse, delete, get, post, web};
use registry_domain::auth::{KeyName, Scopes};
use utoipa_actix_web::service_config::ServiceConfig;
use uuid::Uuid;

use super::dto::keys::{CreateKeyRequest, CreatedKey, KeyResponse};
use super::params::Caller;
use crate::body::Body;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(create_key).service(list_keys).service(revoke_key);
}

/// 24 bytes from the operating system's CSPRNG (through two v4 UUIDs, whose
/// random bits come from it): 32 bits of public prefix, 160 of secret.
#[must_use]
pub fn random_key_bytes() -> [u8; 24] {
    let mut out = [0u8; 24];
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // Skip the version and variant nibbles: take bytes that are all random.
    out[..6].copy_from_slice(&a.as_bytes()[..6]);
    out[6..13].copy_from_slice(&a.as_bytes()[9..16]);
    out[13..19].copy_from_slice(&b.as_bytes()[..6]);
    out[19..24].copy_from_slice(&b.as_bytes()[9..14]);
    out
}

/// Creates a key. The response is the only time its secret is shown.
#[utoipa::path(
    tag = "api-keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = CreatedKey),
        (status = 422, description = "Invalid name or scopes", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/api-keys")]
async fn create_key(
    state: web::Data<AppState>,
    Caller(ctx): Caller,
    body: Body<CreateKeyRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let name = KeyName::new(&body.name);
    let scopes = Scopes::parse(&body.scopes);
    let (name, scopes) = match (name, scopes) {
        (Ok(n), Ok(s)) => (n, s),
        (n, s) => return Err(ApiError::validation(n.err().into_iter().chain(s.err()).collect())),
    };
    let (key, generated) = state.auth.create(name, scopes, random_key_bytes(), &ctx).await?;
    // The secret must not linger in any cache between here and the client.
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(CreatedKey {
            key: key.into(),
            secret: generated.secret,
        }))
}

/// Lists keys, revoked ones included; never their secrets.
#[utoipa::path(tag = "api-keys", responses((status = 200, description = "Every key", body = Vec<KeyResponse>)))]
#[get("/api-keys")]
async fn list_keys(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let keys: Vec<KeyResponse> = state.auth.list().await?.into_iter().map(Into::into).collect();
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(keys))
}

/// Revokes a key: it stops working at once on this replica, within 10 s on others.
#[utoipa::path(
    tag = "api-keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Not a UUID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/api-keys/{id}")]
async fn revoke_key(
    state: web::Data<AppState>,
    Caller(ctx): Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::parameter("id", format!("`{id}` is not a UUID")))?;
    state.auth.revoke(id, &ctx).await?;
    Ok(HttpResponse::NoContent().finish())
}
