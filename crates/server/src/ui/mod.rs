//! The web console under `/ui/`: server-rendered pages over the same
//! services as the API, for people rather than programs.
//!
//! A browser signs in by pasting an API key and from then on carries a
//! session cookie (HttpOnly, SameSite=Strict, Secure outside dev) that
//! holds a session token, never the key. Every page needs a live session
//! whose key has the scope the page needs ([`required_scope`]); every form
//! that changes something carries the session's CSRF token and must come
//! from this origin. Pages are sent with a strict Content-Security-Policy:
//! scripts and styles only from `/ui/assets/`, none inline.

pub mod assets;
mod pages;
mod view;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, ResponseError, web};
use registry_domain::auth::Scope;
use registry_domain::auth::service::Principal;
use registry_domain::auth::session::{Session, SessionError, SessionToken};

use crate::problem::ApiError;
use crate::state::AppState;

/// The session cookie's name.
pub const COOKIE: &str = "pr_session";

/// Every page's security headers: no inline script or style, nothing from
/// elsewhere, not framed, no referrer sent elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui", web::get().to(pages::home)).service(
        web::scope("/ui")
            // The last `wrap` runs first: headers on every answer, the gate's too.
            .wrap(actix_web::middleware::from_fn(gate))
            .wrap(actix_web::middleware::from_fn(headers))
            .app_data(
                web::FormConfig::default()
                    .limit(256 * 1024)
                    .error_handler(|e, _| {
                        let status = match e {
                            actix_web::error::UrlencodedError::Overflow { .. } => {
                                StatusCode::PAYLOAD_TOO_LARGE
                            }
                            _ => StatusCode::BAD_REQUEST,
                        };
                        PageError::new(status, format!("The form could not be read: {e}.")).into()
                    }),
            )
            .app_data(web::QueryConfig::default().error_handler(|e, _| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    format!("The address has a bad parameter: {e}."),
                )
                .into()
            }))
            .app_data(web::PathConfig::default().error_handler(|e, _| {
                PageError::new(
                    StatusCode::BAD_REQUEST,
                    format!("The address is not understood: {e}."),
                )
                .into()
            }))
            .route("/", web::get().to(pages::home))
            .route("/assets/{hash}/{file}", web::get().to(assets::serve))
            .route("/sign-in", web::get().to(pages::sign_in_form))
            .route("/sign-in", web::post().to(pages::sign_in))
            .route("/sign-out", web::post().to(pages::sign_out))
            .route("/prompts", web::get().to(pages::prompts))
            .route("/prompts/{name}", web::get().to(pages::prompt))
            .route("/prompts/{name}/diff", web::get().to(pages::diff))
            .route("/prompts/{name}/try", web::post().to(pages::try_it))
            .route("/prompts/{name}/runs", web::get().to(pages::runs))
            .route(
                "/prompts/{name}/labels/{label}/promote",
                web::get().to(pages::promote_confirm),
            )
            .route(
                "/prompts/{name}/labels/{label}/promote",
                web::post().to(pages::promote),
            )
            .route(
                "/prompts/{name}/labels/{label}/rollback",
                web::get().to(pages::rollback_confirm),
            )
            .route(
                "/prompts/{name}/labels/{label}/rollback",
                web::post().to(pages::rollback),
            )
            .route("/runs/{id}", web::get().to(pages::run))
            .route("/keys", web::get().to(pages::keys))
            .route("/webhooks", web::get().to(pages::webhooks))
            .route("/audit", web::get().to(pages::audit))
            .default_service(web::to(pages::not_found)),
    );
}

/// Whether a path belongs to the console.
#[must_use]
pub fn is_console(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// The scope a console request needs, or `None` for the sign-in page and
/// the assets. Admin pages need `admin`; changes need `write` (a protected
/// label needs `release` too, which the domain checks); trying a render
/// and signing out only read.
#[must_use]
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    if path == "/ui/sign-in" || path.starts_with("/ui/assets/") {
        return None;
    }
    if ["/ui/keys", "/ui/webhooks", "/ui/audit"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
    {
        return Some(Scope::Admin);
    }
    // Reviewing a move is part of making it.
    if path.ends_with("/promote") || path.ends_with("/rollback") {
        return Some(Scope::Write);
    }
    let reads = *method == Method::GET
        || *method == Method::HEAD
        || path == "/ui/sign-out"
        || (path.starts_with("/ui/prompts/") && path.ends_with("/try"));
    Some(if reads { Scope::Read } else { Scope::Write })
}

/// The signed-in browser, as the gate admitted it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub session: Session,
    pub token: SessionToken,
}

/// Admits a console request: assets and the sign-in page as they are;
/// anything else with a live session whose key has the scope needed, and
/// for a change, from this origin. A browser without a session is sent to
/// sign in.
///
/// # Errors
/// What the inner service returns.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Err(ApiError::internal(anyhow::anyhow!("no application state")).into());
    };
    let refuse = |req: ServiceRequest, res: HttpResponse| Ok(req.into_response(res).map_into_right_body());
    let is_change = !matches!(*req.method(), Method::GET | Method::HEAD);
    if is_change && !same_origin(req.request()) {
        return refuse(
            req,
            page_error(StatusCode::FORBIDDEN, "This form was not sent from this site."),
        );
    }
    let Some(needed) = required_scope(req.method(), req.path()) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let token = req.cookie(COOKIE).and_then(|c| SessionToken::parse(c.value()));
    let found = match token {
        Some(token) => match state.sessions.principal(&token).await {
            Ok((session, principal)) => Some((Signed { session, token }, principal)),
            Err(SessionError::Ended) => None,
            Err(e) => {
                tracing::error!(error = %e, "could not read a console session");
                return refuse(
                    req,
                    page_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Sessions cannot be checked now; try again shortly.",
                    ),
                );
            }
        },
        None => None,
    };
    let Some((signed, principal)) = found else {
        let next_page = if is_change {
            "/ui/prompts".to_owned()
        } else {
            req.request().uri().to_string()
        };
        let location = format!("/ui/sign-in?next={}", view::encode(&next_page));
        let res = HttpResponse::SeeOther()
            .insert_header((header::LOCATION, location))
            .cookie(expired_cookie(&state))
            .finish();
        return refuse(req, res);
    };
    if !principal.allows(needed) {
        return refuse(
            req,
            page_error(
                StatusCode::FORBIDDEN,
                &format!("This key lacks the `{needed}` scope this page needs."),
            ),
        );
    }
    if let Principal::Key(k) = &principal {
        tracing::Span::current().record("key_id", tracing::field::display(k.id));
    }
    req.extensions_mut().insert(principal);
    req.extensions_mut().insert(signed);
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Whether a change came from a page of this site: the `Origin` header
/// (or, without one, `Sec-Fetch-Site`) must not name another site.
fn same_origin(req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = req.connection_info().host().to_owned();
        return origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host);
    }
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|site| matches!(site, "same-origin" | "none"))
}

/// The session cookie for `token`.
fn session_cookie(state: &AppState, token: &SessionToken, max_age: std::time::Duration) -> Cookie<'static> {
    let mut cookie = Cookie::build(COOKIE, token.as_str().to_owned())
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.console.secure_cookie)
        .finish();
    cookie.set_max_age(time::Duration::try_from(max_age).ok());
    cookie
}

fn expired_cookie(state: &AppState) -> Cookie<'static> {
    let mut cookie = Cookie::build(COOKIE, "")
        .path("/ui")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.console.secure_cookie)
        .finish();
    cookie.make_removal();
    cookie
}

/// How the console is served.
#[derive(Debug, Clone, Copy)]
pub struct ConsoleSettings {
    /// `Secure` on the session cookie: everywhere but a dev setup on plain HTTP.
    pub secure_cookie: bool,
}

/// Adds the console's security headers to every `/ui/` response.
///
/// # Errors
/// What the inner service returns.
pub async fn headers(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let console = is_console(req.path());
    let mut res = next.call(req).await?;
    if console {
        let h = res.headers_mut();
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
        h.insert(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
        h.insert(
            header::HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
        );
        if !h.contains_key(header::CACHE_CONTROL) {
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
    }
    Ok(res)
}

/// An error page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for PageError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        page_error(self.status, &self.message)
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        let status = e.code.status();
        if status.is_server_error()
            && let Some(source) = &e.source
        {
            tracing::error!(error = format!("{source:#}"), "console page failed");
        }
        let mut message = if status.is_server_error() && e.source.is_some() {
            "The server failed to make this page; it has been logged.".to_owned()
        } else {
            e.detail.clone()
        };
        for field in &e.errors {
            message.push_str(&format!("\n{}: {}", field.field, field.message));
        }
        Self { status, message }
    }
}

macro_rules! page_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for PageError {
            fn from(e: $t) -> Self {
                ApiError::from(e).into()
            }
        }
    )*};
}
page_error_from!(
    registry_domain::prompt::PromptError,
    registry_domain::prompt::error::RenderFailure,
    registry_domain::run::ports::RunError,
    registry_domain::auth::ports::KeyError,
    registry_domain::webhook::WebhookError,
    registry_domain::audit::AuditError,
    registry_domain::page::CursorError
);

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

fn page_error(status: StatusCode, message: &str) -> HttpResponse {
    let page = view::ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message,
        assets: assets::urls(),
    };
    html(status, &page)
}

/// An HTML answer from a template.
fn html(status: StatusCode, page: &impl askama::Template) -> HttpResponse {
    match page.render() {
        Ok(body) => HttpResponse::build(status)
            .content_type("text/html; charset=utf-8")
            .body(body),
        Err(e) => {
            tracing::error!(error = %e, "a console template failed");
            HttpResponse::InternalServerError()
                .content_type("text/plain; charset=utf-8")
                .body("The page could not be rendered; it has been logged.")
        }
    }
}
