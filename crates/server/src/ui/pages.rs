//! The console's pages. Each reads through the same services as the API
//! and shapes what it gets into a [`super::view`] struct.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, web};
use registry_domain::auth::Scope;
use registry_domain::auth::service::Principal;
use registry_domain::page::{Cursor as _, PageRequest, TimeCursor};
use registry_domain::prompt::label::check_reason;
use registry_domain::prompt::template::Rendered;
use registry_domain::prompt::{
    Expected, LabelName, LabelTarget, PromptFilter, PromptName, PromptVersion, VersionCursor, VersionNumber,
    VersionSelector,
};
use registry_domain::run::stats::{Bucket, StatsQuery};
use registry_domain::run::{RunCursor, RunFilter, RunListing, RunSort, RunStatus};
use serde::Deserialize;
use serde_json::{Value, json};

use super::view::{self, Chrome, encode, when};
use super::{PageError, Signed, assets, html};
use crate::routes::dto::runs::RunResponse;
use crate::routes::dto::versions::{DiffResponse, VersionResponse};
use crate::state::AppState;

type Page = Result<HttpResponse, PageError>;

/// The signed-in viewer of a page, as the gate admitted them.
struct Viewer {
    principal: Principal,
    signed: Signed,
}

impl Viewer {
    fn of(req: &HttpRequest) -> Result<Self, PageError> {
        let ext = req.extensions();
        match (ext.get::<Principal>(), ext.get::<Signed>()) {
            (Some(p), Some(s)) => Ok(Self {
                principal: p.clone(),
                signed: s.clone(),
            }),
            _ => Err(PageError::new(StatusCode::UNAUTHORIZED, "Sign in first.")),
        }
    }

    fn may(&self, scope: Scope) -> bool {
        self.principal.allows(scope)
    }

    fn chrome(&self, title: impl Into<String>) -> Chrome {
        Chrome {
            title: title.into(),
            who: match &self.principal {
                Principal::Bootstrap => "admin key (configuration)".to_owned(),
                Principal::Key(k) => format!("{} ({})", k.name.as_str(), k.prefix),
            },
            csrf: self.signed.token.csrf(),
            is_admin: self.may(Scope::Admin),
            assets: assets::urls(),
        }
    }

    /// Refuses a form without this session's CSRF token.
    fn check_csrf(&self, presented: &str) -> Result<(), PageError> {
        if self.signed.token.csrf_matches(presented) {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this session; reload the page and try again.",
            ))
        }
    }
}

fn prompt_name(raw: &str) -> Result<PromptName, PageError> {
    PromptName::new(raw).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, format!("prompt name: {e}")))
}

fn label_name(raw: &str) -> Result<LabelName, PageError> {
    LabelName::new(raw).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, format!("label: {e}")))
}

fn version_number(field: &str, raw: i64) -> Result<VersionNumber, PageError> {
    VersionNumber::new(raw).map_err(|e| PageError::new(StatusCode::BAD_REQUEST, format!("{field}: {e}")))
}

fn prompt_href(name: &str) -> String {
    format!("/ui/prompts/{}", encode(name))
}

/// A page of `limit` items after `after`.
fn page<C>(limit: i64, after: Option<C>) -> Result<PageRequest<C>, PageError> {
    let limit = registry_domain::page::Limit::new(limit, crate::routes::params::MAX_LIMIT)
        .map_err(crate::problem::ApiError::from)?;
    Ok(PageRequest { limit, after })
}

fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.to_owned()))
        .finish()
}

/// A blank text field counts as not given.
fn given(s: Option<&String>) -> Option<&str> {
    s.map(|s| s.trim()).filter(|s| !s.is_empty())
}

pub async fn home() -> HttpResponse {
    see_other("/ui/prompts")
}

pub async fn not_found(req: HttpRequest) -> HttpResponse {
    super::page_error(
        StatusCode::NOT_FOUND,
        &format!("There is no console page at {}.", req.path()),
    )
}

// Signing in and out.

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only a console path may be gone back to after signing in.
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/ui/prompts")
        .to_owned()
}

pub async fn sign_in_form(query: web::Query<NextQuery>) -> HttpResponse {
    let page = view::SignInPage {
        next: safe_next(query.next.as_deref()),
        error: None,
        assets: assets::urls(),
    };
    html(StatusCode::OK, &page)
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    key: String,
    next: Option<String>,
}

pub async fn sign_in(state: web::Data<AppState>, form: web::Form<SignInForm>) -> Page {
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref());
    let refuse = |status: StatusCode, message: &str| {
        let page = view::SignInPage {
            next: next.clone(),
            error: Some(message.to_owned()),
            assets: assets::urls(),
        };
        html(status, &page)
    };
    let principal = match state.auth.authenticate(form.key.trim()).await {
        Ok(p) => p,
        Err(registry_domain::auth::service::AuthError::Unavailable(_)) => {
            return Ok(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Keys cannot be checked now; try again shortly.",
            ));
        }
        Err(e) => return Ok(refuse(StatusCode::UNAUTHORIZED, &format!("{e}."))),
    };
    if !principal.allows(Scope::Read) {
        return Ok(refuse(
            StatusCode::FORBIDDEN,
            "This key lacks the `read` scope the console needs.",
        ));
    }
    let mut random = [0u8; 32];
    random[..24].copy_from_slice(&crate::routes::keys::random_key_bytes());
    random[24..].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
    let (_, token) = state.sessions.open(&principal, random).await.map_err(|e| {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Could not start a session: {e}"),
        )
    })?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .cookie(super::session_cookie(&state, &token, state.sessions.lifetime()))
        .finish())
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(req: HttpRequest, state: web::Data<AppState>, form: web::Form<CsrfForm>) -> Page {
    let viewer = Viewer::of(&req)?;
    viewer.check_csrf(&form.csrf)?;
    state.sessions.close(&viewer.signed.session).await.map_err(|e| {
        PageError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Could not end the session: {e}"),
        )
    })?;
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/ui/sign-in"))
        .cookie(super::expired_cookie(&state))
        .finish())
}

// The prompt list.

#[derive(Debug, Deserialize)]
pub struct PromptsQuery {
    q: Option<String>,
    tag: Option<String>,
    cursor: Option<String>,
}

const PROMPTS_PER_PAGE: i64 = 50;

pub async fn prompts(req: HttpRequest, state: web::Data<AppState>, query: web::Query<PromptsQuery>) -> Page {
    let viewer = Viewer::of(&req)?;
    let q = given(query.q.as_ref()).unwrap_or_default().to_owned();
    let tag = given(query.tag.as_ref()).unwrap_or_default().to_owned();
    let filter = PromptFilter {
        name_prefix: (!q.is_empty()).then(|| q.clone()),
        tag: (!tag.is_empty()).then(|| tag.clone()),
        ..PromptFilter::default()
    };
    let page = page(
        PROMPTS_PER_PAGE,
        given(query.cursor.as_ref()).map(TimeCursor::decode).transpose()?,
    )?;
    let found = state.prompts.list_prompts(filter, page).await?;
    let count = found.items.len();
    let mut labels_of = state.prompts.labels_of(&found.items).await?;
    let mut folders: BTreeMap<String, Vec<view::PromptRow>> = BTreeMap::new();
    for prompt in found.items {
        let labels = labels_of.remove(&prompt.id).unwrap_or_default();
        let name = prompt.name.as_str().to_owned();
        let folder = name
            .rsplit_once('/')
            .map(|(f, _)| f.to_owned())
            .unwrap_or_default();
        folders.entry(folder).or_default().push(view::PromptRow {
            href: prompt_href(&name),
            tags: prompt.tags.as_slice().to_vec(),
            labels: labels
                .iter()
                .filter_map(|l| l.target.as_ref().map(|t| (l.name.to_string(), short_target(t))))
                .collect(),
            updated: when(prompt.updated_at),
            latest: prompt
                .latest_version
                .map(|v| format!("v{v}"))
                .unwrap_or_else(|| "none".into()),
            name,
        });
    }
    let folder_links = folders
        .keys()
        .filter(|f| !f.is_empty())
        .map(|f| (f.clone(), format!("/ui/prompts?q={}", encode(&format!("{f}/")))))
        .collect();
    let next = found.next.map(|c| {
        format!(
            "/ui/prompts?q={}&tag={}&cursor={}",
            encode(&q),
            encode(&tag),
            encode(&c.encode())
        )
    });
    let page = view::PromptsPage {
        chrome: viewer.chrome("Prompts"),
        q,
        tag,
        count,
        next,
        folder_links,
        folders: folders
            .into_iter()
            .map(|(name, prompts)| view::Folder { name, prompts })
            .collect(),
    };
    Ok(html(StatusCode::OK, &page))
}

fn short_target(t: &LabelTarget) -> String {
    match t {
        LabelTarget::Version(v) => format!("v{v}"),
        LabelTarget::Split(_) => t.to_string(),
    }
}

// One prompt.

#[derive(Debug, Deserialize)]
pub struct PromptQuery {
    version: Option<i64>,
    notice: Option<String>,
}

pub async fn prompt(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<PromptQuery>,
) -> Page {
    let viewer = Viewer::of(&req)?;
    let name = prompt_name(&name)?;
    let selected = query.version.map(|v| version_number("version", v)).transpose()?;
    let page = prompt_page(&state, &viewer, &name, selected, view::TryResult::default(), None).await?;
    let notice = query.notice.as_deref().map(|n| match n {
        "promoted" => "The label was moved.".to_owned(),
        "rolled-back" => "The label was rolled back.".to_owned(),
        _ => String::new(),
    });
    Ok(html(
        StatusCode::OK,
        &view::PromptPage {
            notice: notice.filter(|n| !n.is_empty()),
            ..page
        },
    ))
}

async fn prompt_page(
    state: &AppState,
    viewer: &Viewer,
    name: &PromptName,
    selected: Option<VersionNumber>,
    result: view::TryResult,
    variables_json: Option<String>,
) -> Result<view::PromptPage, PageError> {
    let prompt = state.prompts.get_prompt(name).await?;
    let versions = state
        .prompts
        .list_versions(name, page(100, None::<VersionCursor>)?)
        .await?;
    let labels = state.prompts.list_labels(name).await?;
    let mut label_views = Vec::with_capacity(labels.len());
    for label in &labels {
        let history = state
            .prompts
            .label_history(name, label.name, page(10, None)?)
            .await?;
        let may_move = viewer.may(Scope::Write) && (!label.protected || viewer.may(Scope::Release));
        label_views.push(view::LabelView {
            name: label.name.to_string(),
            target: label
                .target
                .as_ref()
                .map_or_else(|| "nowhere".to_owned(), ToString::to_string),
            protected: label.protected,
            revision: label.revision,
            updated: when(label.updated_at),
            may_roll_back: may_move && history.items.first().is_some_and(|c| c.from.is_some()),
            options: versions
                .items
                .iter()
                .map(|v| {
                    (
                        v.version.get(),
                        matches!(&label.target, Some(LabelTarget::Version(n)) if *n == v.version),
                    )
                })
                .collect(),
            may_move,
            history: history
                .items
                .iter()
                .map(|c| view::HistoryRow {
                    at: when(c.at),
                    who: c.actor.name.clone(),
                    from: c
                        .from
                        .as_ref()
                        .map_or_else(|| "nowhere".into(), ToString::to_string),
                    to: c
                        .to
                        .as_ref()
                        .map_or_else(|| "nowhere".into(), ToString::to_string),
                    reason: c.reason.clone().unwrap_or_default(),
                })
                .collect(),
        });
    }
    let shown = selected
        .or_else(|| {
            labels
                .iter()
                .find(|l| l.name == LabelName::PRODUCTION)
                .and_then(|l| match &l.target {
                    Some(LabelTarget::Version(v)) => Some(*v),
                    _ => None,
                })
        })
        .or(prompt.latest_version);
    let version = match shown {
        Some(v) => Some(
            state
                .prompts
                .get_version(name, VersionSelector::Number(v))
                .await?,
        ),
        None => None,
    };
    let version_view = version.as_deref().map(version_view);
    let variables_json = variables_json.unwrap_or_else(|| {
        version
            .as_deref()
            .map(|v| {
                let values: serde_json::Map<String, Value> = v
                    .variables
                    .as_map()
                    .iter()
                    .map(|(k, spec)| (k.clone(), spec.default.clone().unwrap_or_else(|| json!(""))))
                    .collect();
                serde_json::to_string_pretty(&values).unwrap_or_default()
            })
            .unwrap_or_else(|| "{}".into())
    });
    let numbers: Vec<u32> = versions.items.iter().map(|v| v.version.get()).collect();
    let shown_number = shown.map_or(0, VersionNumber::get);
    Ok(view::PromptPage {
        chrome: viewer.chrome(name.as_str()),
        href: prompt_href(name.as_str()),
        name: name.as_str().to_owned(),
        description: prompt
            .description
            .map(|d| d.as_str().to_owned())
            .unwrap_or_default(),
        tags: prompt.tags.as_slice().to_vec(),
        versions: versions
            .items
            .iter()
            .map(|v| view::VersionRow {
                number: v.version.get(),
                message: v.commit_message.clone().unwrap_or_default(),
                created: when(v.created_at),
                labels: labels
                    .iter()
                    .filter(|l| {
                        l.target
                            .as_ref()
                            .is_some_and(|t| t.versions().any(|n| n == v.version))
                    })
                    .map(|l| l.name.to_string())
                    .collect(),
                selected: v.version.get() == shown_number,
            })
            .collect(),
        more_versions: versions.next.is_some(),
        labels: label_views,
        version: version_view,
        variables_json,
        result,
        may_write: viewer.may(Scope::Write),
        notice: None,
        diff_from: numbers.get(1).copied().unwrap_or(shown_number),
        diff_to: numbers.first().copied().unwrap_or(shown_number),
    })
}

fn version_view(v: &PromptVersion) -> view::VersionView {
    let body = serde_json::to_value(VersionResponse::from(v)).unwrap_or(Value::Null);
    let (text, messages) = match &body["template"] {
        Value::String(s) => (Some(s.clone()), Vec::new()),
        Value::Array(items) => (
            None,
            items
                .iter()
                .map(|m| view::MessageView {
                    role: m["role"].as_str().unwrap_or_default().to_owned(),
                    content: m["content"].as_str().unwrap_or_default().to_owned(),
                })
                .collect(),
        ),
        other => (Some(other.to_string()), Vec::new()),
    };
    let variables = body["variables"]
        .as_object()
        .map(|vars| {
            vars.iter()
                .map(|(name, spec)| view::VariableView {
                    name: name.clone(),
                    ty: spec["type"].as_str().unwrap_or("string").to_owned(),
                    required: spec["required"].as_bool().unwrap_or(true),
                    default: spec.get("default").map(compact).unwrap_or_default(),
                    description: spec["description"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    view::VersionView {
        number: v.version.get(),
        kind: if text.is_some() { "text" } else { "chat" },
        text,
        messages,
        variables,
        config: serde_json::to_string_pretty(&v.config).unwrap_or_default(),
        message: v.commit_message.clone().unwrap_or_default(),
        created: when(v.created_at),
        includes: v
            .includes
            .iter()
            .map(|i| format!("{}@{}", i.prompt, i.version))
            .collect(),
    }
}

fn compact(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// Try it.

#[derive(Debug, Deserialize)]
pub struct TryForm {
    #[serde(default)]
    csrf: String,
    version: i64,
    variables: String,
}

pub async fn try_it(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    form: web::Form<TryForm>,
) -> Page {
    let viewer = Viewer::of(&req)?;
    viewer.check_csrf(&form.csrf)?;
    let name = prompt_name(&name)?;
    let number = version_number("version", form.version)?;
    let mut result = view::TryResult {
        tried: true,
        ..view::TryResult::default()
    };
    match serde_json::from_str::<serde_json::Map<String, Value>>(&form.variables) {
        Err(e) => result.errors.push(format!("variables: not a JSON object ({e})")),
        Ok(values) => match state
            .prompts
            .render(&name, VersionSelector::Number(number), None, &values)
            .await
        {
            Ok((_, Rendered::Text(text))) => result.text = Some(text),
            Ok((_, Rendered::Chat(messages))) => {
                result.messages = messages
                    .into_iter()
                    .map(|m| view::MessageView {
                        role: m.role,
                        content: m.content,
                    })
                    .collect();
            }
            Err(e) => {
                let e = crate::problem::ApiError::from(e);
                if e.code.status().is_server_error() {
                    return Err(e.into());
                }
                result.errors.push(e.detail.clone());
                result
                    .errors
                    .extend(e.errors.iter().map(|f| format!("{}: {}", f.field, f.message)));
            }
        },
    }
    let status = if result.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    // htmx swaps the result in place; without it, the whole page comes back.
    if req.headers().contains_key("hx-request") {
        return Ok(html(status, &view::TryFragment { result: &result }));
    }
    let page = prompt_page(
        &state,
        &viewer,
        &name,
        Some(number),
        result,
        Some(form.variables.clone()),
    )
    .await?;
    Ok(html(status, &page))
}

// Diffs.

#[derive(Debug, Deserialize)]
pub struct DiffQuery {
    from: i64,
    to: i64,
    view: Option<String>,
}

pub async fn diff(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<DiffQuery>,
) -> Page {
    let viewer = Viewer::of(&req)?;
    let name = prompt_name(&name)?;
    let from = version_number("from", query.from)?;
    let to = version_number("to", query.to)?;
    let diff = diff_view(&state, &name, from, to).await?;
    let versions = state
        .prompts
        .list_versions(&name, page(100, None::<VersionCursor>)?)
        .await?;
    let page = view::DiffPage {
        chrome: viewer.chrome(format!("{name}: v{from} → v{to}")),
        href: prompt_href(name.as_str()),
        name: name.as_str().to_owned(),
        diff,
        side_by_side: query.view.as_deref() != Some("unified"),
        numbers: versions.items.iter().map(|v| v.version.get()).collect(),
    };
    Ok(html(StatusCode::OK, &page))
}

async fn diff_view(
    state: &AppState,
    name: &PromptName,
    from: VersionNumber,
    to: VersionNumber,
) -> Result<view::DiffView, PageError> {
    let diff = state
        .prompts
        .diff(name, VersionSelector::Number(from), VersionSelector::Number(to))
        .await?;
    let body = serde_json::to_value(DiffResponse::from(&diff)).unwrap_or(Value::Null);
    let mut blocks = Vec::new();
    if let Some(unified) = body["template_diff"].as_str() {
        let (unified, side) = view::diff_lines(unified);
        blocks.push(view::DiffBlock {
            title: "Template".into(),
            unified,
            side,
        });
    }
    for m in body["messages"].as_array().into_iter().flatten() {
        let (unified, side) = view::diff_lines(m["diff"].as_str().unwrap_or_default());
        let index = m["to_index"]
            .as_u64()
            .or_else(|| m["from_index"].as_u64())
            .unwrap_or(0);
        blocks.push(view::DiffBlock {
            title: format!(
                "Message {} ({}), {}",
                index + 1,
                m["role"].as_str().unwrap_or_default(),
                m["change"].as_str().unwrap_or_default()
            ),
            unified,
            side,
        });
    }
    let variables: Vec<view::VariableChangeView> = body["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| view::VariableChangeView {
            name: v["name"].as_str().unwrap_or_default().to_owned(),
            change: v["change"].as_str().unwrap_or_default().to_owned(),
            from: if v["from"].is_null() {
                String::new()
            } else {
                v["from"].to_string()
            },
            to: if v["to"].is_null() {
                String::new()
            } else {
                v["to"].to_string()
            },
        })
        .collect();
    let patch = body["config_patch"].as_array().map_or(0, Vec::len);
    let identical = blocks.iter().all(|b| b.unified.iter().all(|l| l.class == "ctx"))
        && variables.is_empty()
        && patch == 0
        && diff.kind_changed.is_none();
    Ok(view::DiffView {
        from: from.get(),
        to: to.get(),
        kind_changed: body["kind_changed"]
            .as_array()
            .map(|k| format!("{} → {}", compact(&k[0]), compact(&k[1]))),
        blocks,
        variables,
        config_patch: if patch == 0 {
            String::new()
        } else {
            serde_json::to_string_pretty(&body["config_patch"]).unwrap_or_default()
        },
        breaking: diff.breaking.clone(),
        identical,
    })
}

// Promote and roll back.

#[derive(Debug, Deserialize)]
pub struct PromoteQuery {
    to: i64,
}

pub async fn promote_confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    query: web::Query<PromoteQuery>,
) -> Page {
    let viewer = Viewer::of(&req)?;
    let (name, label) = path.into_inner();
    let name = prompt_name(&name)?;
    let label = label_name(&label)?;
    let to = version_number("to", query.to)?;
    let page = confirm_page(
        &state,
        &viewer,
        &name,
        label,
        "promote",
        Some(to),
        None,
        String::new(),
    )
    .await?;
    Ok(html(StatusCode::OK, &page))
}

#[allow(clippy::too_many_arguments)]
async fn confirm_page(
    state: &AppState,
    viewer: &Viewer,
    name: &PromptName,
    label: LabelName,
    action: &'static str,
    to: Option<VersionNumber>,
    error: Option<String>,
    reason: String,
) -> Result<view::ConfirmPage, PageError> {
    let found = match state.prompts.get_label(name, label).await {
        Ok(l) => Some(l),
        Err(registry_domain::prompt::PromptError::LabelNotFound { .. }) if action == "promote" => None,
        Err(e) => return Err(e.into()),
    };
    let current = found.as_ref().and_then(|l| l.target.clone());
    let target = match to {
        Some(to) => to,
        None => {
            // A rollback goes back to where the last change came from.
            let history = state.prompts.label_history(name, label, page(1, None)?).await?;
            match history.items.first().and_then(|c| c.from.clone()) {
                Some(LabelTarget::Version(v)) => v,
                Some(other) => {
                    return Err(PageError::new(
                        StatusCode::CONFLICT,
                        format!("This label was a {other} before; roll it back through the API."),
                    ));
                }
                None => {
                    return Err(PageError::new(
                        StatusCode::CONFLICT,
                        "This label has nothing to roll back to: its last change created it.",
                    ));
                }
            }
        }
    };
    let diff = match &current {
        Some(LabelTarget::Version(v)) => Some(diff_view(state, name, *v, target).await?),
        _ => None,
    };
    if diff.is_none() {
        // Still check the target exists, so the page never offers a move to nothing.
        state
            .prompts
            .get_version(name, VersionSelector::Number(target))
            .await?;
    }
    Ok(view::ConfirmPage {
        chrome: viewer.chrome(format!("{action} {label} of {name}")),
        href: prompt_href(name.as_str()),
        name: name.as_str().to_owned(),
        label: label.to_string(),
        action,
        current: current
            .as_ref()
            .map_or_else(|| "nowhere".into(), ToString::to_string),
        target: target.get(),
        revision: found.as_ref().map_or(0, |l| l.revision),
        protected: found.as_ref().is_some_and(|l| l.protected),
        diff,
        error,
        reason,
    })
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    #[serde(default)]
    csrf: String,
    to: Option<i64>,
    revision: Option<u32>,
    reason: Option<String>,
    allow_breaking: Option<String>,
}

pub async fn promote(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ChangeForm>,
) -> Page {
    change(req, state, path, form, "promote").await
}

pub async fn rollback_confirm(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Page {
    let viewer = Viewer::of(&req)?;
    let (name, label) = path.into_inner();
    let name = prompt_name(&name)?;
    let label = label_name(&label)?;
    let page = confirm_page(
        &state,
        &viewer,
        &name,
        label,
        "rollback",
        None,
        None,
        String::new(),
    )
    .await?;
    Ok(html(StatusCode::OK, &page))
}

pub async fn rollback(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ChangeForm>,
) -> Page {
    change(req, state, path, form, "rollback").await
}

async fn change(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    form: web::Form<ChangeForm>,
    action: &'static str,
) -> Page {
    let viewer = Viewer::of(&req)?;
    viewer.check_csrf(&form.csrf)?;
    let ctx = crate::routes::params::caller(&req)
        .ok_or_else(|| PageError::new(StatusCode::UNAUTHORIZED, "Sign in first."))?;
    let (name, label) = path.into_inner();
    let name = prompt_name(&name)?;
    let label = label_name(&label)?;
    let reason_text = form.reason.clone().unwrap_or_default();
    let reason = check_reason(given(form.reason.as_ref()).map(str::to_owned))
        .map_err(|e| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("reason: {}", e.message)))?;
    let allow_breaking = form.allow_breaking.is_some();
    let to = form.to.map(|v| version_number("to", v)).transpose()?;
    let result = if action == "promote" {
        let to = to.ok_or_else(|| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, "to: which version?"))?;
        let expected = match form.revision {
            Some(0) | None => Expected::Anything,
            Some(r) => Expected::Revision(r),
        };
        state
            .prompts
            .move_label(
                &name,
                label,
                LabelTarget::Version(to),
                expected,
                reason,
                allow_breaking,
                &ctx,
            )
            .await
    } else {
        state
            .prompts
            .rollback_label(&name, label, reason, allow_breaking, &ctx)
            .await
    };
    match result {
        Ok(_) => {
            let notice = if action == "promote" {
                "promoted"
            } else {
                "rolled-back"
            };
            Ok(see_other(&format!(
                "{}?notice={notice}",
                prompt_href(name.as_str())
            )))
        }
        Err(e) => {
            let e = crate::problem::ApiError::from(e);
            let status = e.code.status();
            if status.is_server_error() {
                return Err(e.into());
            }
            let mut message = e.detail.clone();
            for f in &e.errors {
                message.push_str(&format!("; {}: {}", f.field, f.message));
            }
            let page = confirm_page(
                &state,
                &viewer,
                &name,
                label,
                action,
                to,
                Some(message),
                reason_text,
            )
            .await?;
            Ok(html(status, &page))
        }
    }
}

// Runs.

#[derive(Debug, Deserialize)]
pub struct RunsQuery {
    range: Option<String>,
    by: Option<String>,
    version: Option<String>,
    label: Option<String>,
    status: Option<String>,
    model: Option<String>,
    cursor: Option<String>,
}

/// The time ranges the charts offer, with their bucket.
fn range_of(range: &str) -> Option<(time::Duration, Bucket)> {
    match range {
        "24h" => Some((time::Duration::hours(24), Bucket::Hour)),
        "7d" => Some((time::Duration::days(7), Bucket::Hour)),
        "30d" => Some((time::Duration::days(30), Bucket::Day)),
        "90d" => Some((time::Duration::days(90), Bucket::Day)),
        _ => None,
    }
}

pub async fn runs(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    query: web::Query<RunsQuery>,
) -> Page {
    let viewer = Viewer::of(&req)?;
    let name = prompt_name(&name)?;
    let range = given(query.range.as_ref()).unwrap_or("7d").to_owned();
    let (span, bucket) = range_of(&range)
        .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "range: one of 24h, 7d, 30d, 90d"))?;
    let by_label = match given(query.by.as_ref()).unwrap_or("version") {
        "version" => false,
        "label" => true,
        _ => return Err(PageError::new(StatusCode::BAD_REQUEST, "by: version or label")),
    };
    // The prompt must exist: an unknown one is a 404, not an empty chart.
    state.prompts.get_prompt(&name).await?;
    let now = registry_domain::time::now_utc();
    let from = bucket.start(now - span).unwrap_or(now - span);
    let version = given(query.version.as_ref())
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .and_then(|n| VersionNumber::new(n).ok())
                .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, "version: a version number"))
        })
        .transpose()?;
    let label = given(query.label.as_ref()).map(label_name).transpose()?;
    let status = given(query.status.as_ref())
        .map(|s| match s {
            "success" => Ok(RunStatus::Success),
            "error" => Ok(RunStatus::Error),
            _ => Err(PageError::new(
                StatusCode::BAD_REQUEST,
                "status: success or error",
            )),
        })
        .transpose()?;
    let model = given(query.model.as_ref()).map(str::to_owned);
    let filter = RunFilter {
        prompt: Some(name.clone()),
        version,
        label,
        status,
        model: model.clone(),
        from: None,
        to: None,
    };
    let page = page(
        50,
        given(query.cursor.as_ref()).map(RunCursor::decode).transpose()?,
    )?;
    let listing =
        RunListing::new(filter, RunSort::default(), page).map_err(crate::problem::ApiError::from)?;
    // The chart's figures and the run list are read at once.
    let (stats, found) = futures::join!(
        state.runs.stats(
            &name,
            StatsQuery {
                from: Some(from),
                to: None,
                bucket,
                version: None,
                label: None,
                by_label,
            },
        ),
        state.runs.list_for_prompt(listing),
    );
    let (stats, found) = (stats?, found?);
    let series_name = |s: &registry_domain::run::stats::VersionStats| {
        // By label, one series per label and version: the arms of a rollout
        // side by side, as the stats API groups them (percentiles of two
        // versions cannot be merged).
        if by_label {
            let label = s.label.map_or_else(|| "(no label)".to_owned(), |l| l.to_string());
            format!("{label} · v{}", s.version)
        } else {
            format!("v{}", s.version)
        }
    };
    // One point per bucket and series; buckets without runs are gaps.
    let mut buckets: Vec<i64> = stats
        .iter()
        .filter_map(|s| s.bucket.map(time::OffsetDateTime::unix_timestamp))
        .collect();
    buckets.sort_unstable();
    buckets.dedup();
    let mut series: BTreeMap<String, BTreeMap<i64, &registry_domain::run::stats::VersionStats>> =
        BTreeMap::new();
    for s in &stats {
        if let Some(b) = s.bucket {
            series
                .entry(series_name(s))
                .or_default()
                .insert(b.unix_timestamp(), s);
        }
    }
    let metric = |points: &BTreeMap<i64, &registry_domain::run::stats::VersionStats>,
                  f: &dyn Fn(&registry_domain::run::stats::VersionStats) -> f64| {
        buckets
            .iter()
            .map(|b| points.get(b).map(|s| f(s)))
            .collect::<Vec<Option<f64>>>()
    };
    #[allow(clippy::cast_precision_loss)]
    let chart = json!({
        "from": from.unix_timestamp(),
        "to": now.unix_timestamp(),
        "x": buckets,
        "series": series.iter().map(|(name, points)| json!({
            "name": name,
            "requests": metric(points, &|s| s.count as f64),
            "error_rate": metric(points, &|s| s.error_rate()),
            "p50": metric(points, &|s| s.latency_p50),
            "p95": metric(points, &|s| s.latency_p95),
            "p99": metric(points, &|s| s.latency_p99),
            "cost": metric(points, &|s| s.cost_total.nanos() as f64 / 1e9),
        })).collect::<Vec<_>>(),
    });
    let stats_rows = stats
        .iter()
        .map(|s| view::StatsRow {
            series: series_name(s),
            bucket: s.bucket.map(when).unwrap_or_default(),
            count: s.count,
            error_rate: format!("{:.1} %", s.error_rate() * 100.0),
            p50: format!("{:.1}", s.latency_p50),
            p95: format!("{:.1}", s.latency_p95),
            p99: format!("{:.1}", s.latency_p99),
            cost: s.cost_total.to_string(),
        })
        .collect();

    let filters = format!(
        "range={}&by={}&version={}&label={}&status={}&model={}",
        encode(&range),
        if by_label { "label" } else { "version" },
        version.map(|v| v.to_string()).unwrap_or_default(),
        label.map(|l| l.to_string()).unwrap_or_default(),
        status.map(RunStatus::as_str).unwrap_or_default(),
        encode(model.as_deref().unwrap_or_default()),
    );
    let href = prompt_href(name.as_str());
    let page = view::RunsPage {
        chrome: viewer.chrome(format!("{name}: runs")),
        next: found
            .next
            .map(|c| format!("{href}/runs?{filters}&cursor={}", encode(&c.encode()))),
        runs: found
            .items
            .iter()
            .map(|r| view::RunRow {
                id: r.id.to_string(),
                created: when(r.created_at),
                version: r.version.get(),
                label: r.fields.label.map(|l| l.to_string()).unwrap_or_default(),
                status: r.fields.status.as_str(),
                latency_ms: format!("{:.1}", r.fields.latency.millis()),
                cost: r.fields.cost.to_string(),
                model: r.fields.model.clone().unwrap_or_default(),
            })
            .collect(),
        href,
        name: name.as_str().to_owned(),
        ranges: ["24h", "7d", "30d", "90d"]
            .into_iter()
            .map(|r| (r, r == range))
            .collect(),
        range,
        by: if by_label { "label" } else { "version" }.to_owned(),
        chart_json: chart.to_string(),
        stats: stats_rows,
        filter_version: version.map(|v| v.to_string()).unwrap_or_default(),
        filter_label: label.map(|l| l.to_string()).unwrap_or_default(),
        filter_status: status.map(RunStatus::as_str).unwrap_or_default().to_owned(),
        filter_model: model.unwrap_or_default(),
    };
    Ok(html(StatusCode::OK, &page))
}

pub async fn run(req: HttpRequest, state: web::Data<AppState>, id: web::Path<String>) -> Page {
    let viewer = Viewer::of(&req)?;
    let id = uuid::Uuid::parse_str(&id)
        .map_err(|_| PageError::new(StatusCode::BAD_REQUEST, "run id: not a UUID"))?;
    let run = state.runs.get(id).await?;
    let body = serde_json::to_value(RunResponse::from(run.clone())).unwrap_or(Value::Null);
    let pretty = |v: &Value| {
        if v.is_null() {
            String::new()
        } else {
            serde_json::to_string_pretty(v).unwrap_or_default()
        }
    };
    let skip = [
        "input", "output", "metadata", "error", "id", "prompt", "version", "status",
    ];
    let fields = body
        .as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, v)| !skip.contains(&k.as_str()) && !v.is_null())
                .map(|(k, v)| (k.clone(), compact(v)))
                .collect()
        })
        .unwrap_or_default();
    let name = run.prompt_name.as_str().to_owned();
    let page = view::RunPage {
        chrome: viewer.chrome(format!("Run {id}")),
        id: id.to_string(),
        href: prompt_href(&name),
        name,
        version: run.version.get(),
        status: run.fields.status.as_str(),
        error: run.fields.error.clone().unwrap_or_default(),
        fields,
        input: pretty(&body["input"]),
        output: pretty(&body["output"]),
        metadata: pretty(&body["metadata"]),
    };
    Ok(html(StatusCode::OK, &page))
}

// Admin pages.

pub async fn keys(req: HttpRequest, state: web::Data<AppState>) -> Page {
    let viewer = Viewer::of(&req)?;
    let keys = state.auth.list().await?;
    let page = view::KeysPage {
        chrome: viewer.chrome("API keys"),
        keys: keys
            .iter()
            .map(|k| view::KeyRow {
                name: k.name.as_str().to_owned(),
                prefix: k.prefix.clone(),
                scopes: k
                    .scopes
                    .as_slice()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                created: when(k.created_at),
                last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                revoked: k.revoked_at.map(when).unwrap_or_default(),
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, &page))
}

pub async fn webhooks(req: HttpRequest, state: web::Data<AppState>) -> Page {
    use registry_domain::webhook::WebhookRepository as _;
    let viewer = Viewer::of(&req)?;
    let hooks = state.webhooks.list().await?;
    let page = view::WebhooksPage {
        chrome: viewer.chrome("Webhooks"),
        webhooks: hooks
            .into_iter()
            .map(|w| {
                let body = serde_json::to_value(crate::routes::webhooks::WebhookResponse::from(w.clone()))
                    .unwrap_or(Value::Null);
                view::WebhookRow {
                    url: w.url.to_string(),
                    description: w.description.clone().unwrap_or_default(),
                    events: body["event_types"]
                        .as_array()
                        .filter(|a| !a.is_empty())
                        .map_or_else(
                            || "every event".to_owned(),
                            |a| a.iter().map(compact).collect::<Vec<_>>().join(", "),
                        ),
                    state: match (&w.disabled, w.enabled, w.failing_since) {
                        (Some(d), _, _) => format!("disabled: {}", d.reason),
                        (None, false, _) => "paused".into(),
                        (None, true, Some(since)) => format!("failing since {}", when(since)),
                        (None, true, None) => "healthy".into(),
                    },
                    created: when(w.created_at),
                }
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    target: Option<String>,
    cursor: Option<String>,
}

pub async fn audit(req: HttpRequest, state: web::Data<AppState>, query: web::Query<AuditQuery>) -> Page {
    use registry_domain::audit::AuditLog as _;
    let viewer = Viewer::of(&req)?;
    let target = given(query.target.as_ref()).unwrap_or_default().to_owned();
    let filter = registry_domain::audit::AuditFilter {
        target: (!target.is_empty()).then(|| target.clone()),
        ..registry_domain::audit::AuditFilter::default()
    };
    let page = page(
        50,
        given(query.cursor.as_ref()).map(TimeCursor::decode).transpose()?,
    )?;
    let found = state.audit.list(&filter, &page).await?;
    let page = view::AuditPage {
        chrome: viewer.chrome("Audit log"),
        next: found.next.map(|c| {
            format!(
                "/ui/audit?target={}&cursor={}",
                encode(&target),
                encode(&c.encode())
            )
        }),
        target,
        events: found
            .items
            .iter()
            .map(|e| view::AuditRow {
                at: when(e.at),
                actor: e.actor.name.clone(),
                action: e.action.as_str().to_owned(),
                target: e.target.clone(),
                change: match (&e.before, &e.after) {
                    (None, None) => String::new(),
                    (b, a) => format!(
                        "{} → {}",
                        b.as_ref().map_or_else(|| "∅".to_owned(), Value::to_string),
                        a.as_ref().map_or_else(|| "∅".to_owned(), Value::to_string)
                    ),
                },
            })
            .collect(),
    };
    Ok(html(StatusCode::OK, &page))
}
