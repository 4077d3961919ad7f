//! The web console under `/ui/`: the matrix of its pages × no session, an
//! ended session and each scope; CSRF and origin checks on every change;
//! sign-out and key revocation ending sessions; its security headers and
//! assets; and promoting through the breaking-change gate.

use actix_web::http::Method;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::json;

use crate::helpers::{ADMIN_KEY, Response, TestApp, spawn_app};

async fn create_key(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let res = app
        .post(
            "/v1/api-keys",
            &json!({"name": format!("console {scopes:?}"), "scopes": scopes}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    (
        res.body["id"].as_str().expect("id").to_owned(),
        res.body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// A browser session: its cookie, and the CSRF token of its forms.
struct Browser {
    cookie: String,
    csrf: String,
}

/// Sends a console request with no API key: only the session cookie (if
/// any), and this site as the origin of a change.
async fn ui(app: &TestApp, method: Method, path: &str, cookie: Option<&str>, form: &str) -> Response {
    ui_from(app, method, path, cookie, form, Some(&app.address)).await
}

async fn ui_from(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: &str,
    origin: Option<&str>,
) -> Response {
    let cookie = cookie.map(|c| format!("pr_session={c}")).unwrap_or_default();
    let mut headers = vec![("authorization", ""), ("cookie", cookie.as_str())];
    if let Some(origin) = origin {
        headers.push(("origin", origin));
    }
    let content_type = (method == Method::POST).then_some("application/x-www-form-urlencoded");
    app.raw_as(method, path, content_type, form.as_bytes().to_vec(), &headers)
        .await
}

async fn sign_in(app: &TestApp, key: &str) -> Browser {
    let res = ui(app, Method::POST, "/ui/sign-in", None, &format!("key={key}")).await;
    assert_eq!(res.status, 303, "{}", res.text);
    let set = res
        .headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(
        !set.contains(key),
        "the cookie holds a session token, not the key"
    );
    let cookie = set
        .split(';')
        .next()
        .and_then(|c| c.strip_prefix("pr_session="))
        .expect("pr_session")
        .to_owned();
    let page = ui(app, Method::GET, "/ui/prompts", Some(&cookie), "").await;
    assert_eq!(page.status, 200, "{}", page.text);
    Browser {
        csrf: csrf_of(&page.text),
        cookie,
    }
}

fn csrf_of(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[start..].split('"').next().expect("token").to_owned()
}

fn sent_to_sign_in(res: &Response) -> bool {
    res.status == 303
        && res
            .headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l.starts_with("/ui/sign-in"))
}

/// Two versions of `console`, the second adding a required variable
/// (breaking for callers), with `production` on v1.
async fn seed(app: &TestApp) {
    app.create_prompt("team/console").await;
    app.create_version(
        "team/console",
        &json!({"template": "Hello {{name}}", "variables": {"name": {"type": "string"}}}),
    )
    .await;
    app.create_version(
        "team/console",
        &json!({
            "template": "Hello {{name}} of {{team}}",
            "variables": {"name": {"type": "string"}, "team": {"type": "string"}},
            "activate": false,
        }),
    )
    .await;
}

const PROMPT: &str = "/ui/prompts/team%2Fconsole";

/// Every console route with the scope it needs (`None`: public) and, for
/// a change, the form it sends (its CSRF token is added).
fn routes() -> Vec<(Method, String, Option<&'static str>, &'static str)> {
    vec![
        (Method::GET, "/ui/sign-in".into(), None, ""),
        (Method::GET, "/ui/prompts".into(), Some("read"), ""),
        (Method::GET, PROMPT.into(), Some("read"), ""),
        (
            Method::GET,
            format!("{PROMPT}/diff?from=1&to=2"),
            Some("read"),
            "",
        ),
        (Method::GET, format!("{PROMPT}/runs?range=24h"), Some("read"), ""),
        (
            Method::POST,
            format!("{PROMPT}/try"),
            Some("read"),
            "version=1&variables=%7B%7D",
        ),
        (
            Method::GET,
            format!("{PROMPT}/labels/production/promote?to=1"),
            Some("write"),
            "",
        ),
        (
            Method::POST,
            format!("{PROMPT}/labels/staging/promote"),
            Some("write"),
            "to=1&revision=0",
        ),
        (Method::GET, "/ui/keys".into(), Some("admin"), ""),
        (Method::GET, "/ui/webhooks".into(), Some("admin"), ""),
        (Method::GET, "/ui/audit".into(), Some("admin"), ""),
        (Method::GET, "/ui/nowhere".into(), Some("read"), ""),
    ]
}

async fn every_console_page_needs_a_session_with_the_scope_it_needs(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let mut browsers = Vec::new();
    for scopes in [&["read"][..], &["read", "write"], &["admin"]] {
        let key = create_key(&app, scopes).await.1;
        browsers.push((scopes, sign_in(&app, &key).await));
    }
    let mut checked = 0;
    for (method, path, needed, form) in routes() {
        // Without a session (an API key header does not count), or with a
        // token no session has: sent to sign in, never served.
        for cookie in [
            None,
            Some("prs_0000000000000000000000000000000000000000000000000000000000000000"),
        ] {
            let res = app
                .raw_as(
                    method.clone(),
                    &path,
                    (method == Method::POST).then_some("application/x-www-form-urlencoded"),
                    form.as_bytes().to_vec(),
                    &[
                        ("authorization", &format!("Bearer {ADMIN_KEY}")),
                        (
                            "cookie",
                            &cookie.map(|c| format!("pr_session={c}")).unwrap_or_default(),
                        ),
                        ("origin", &app.address),
                    ],
                )
                .await;
            match needed {
                None => assert_eq!(res.status, 200, "{method} {path} is public"),
                Some(_) => assert!(
                    sent_to_sign_in(&res),
                    "{method} {path} without a session: {}",
                    res.status
                ),
            }
            checked += 1;
        }
        for (scopes, browser) in &browsers {
            let form = if form.is_empty() {
                String::new()
            } else {
                format!("csrf={}&{form}", browser.csrf)
            };
            let res = ui(&app, method.clone(), &path, Some(&browser.cookie), &form).await;
            // `admin` holds every scope.
            let allowed = needed.is_none_or(|n| scopes.contains(&n) || scopes.contains(&"admin"));
            if allowed {
                assert!(
                    ![401, 403].contains(&res.status.as_u16()) && !sent_to_sign_in(&res),
                    "{method} {path} with {scopes:?}: {} {}",
                    res.status,
                    res.text
                );
            } else {
                assert_eq!(res.status, 403, "{method} {path} with {scopes:?}");
            }
            if res.status != 303 {
                assert!(
                    res.content_type().starts_with("text/html"),
                    "{method} {path}: {}",
                    res.content_type()
                );
            }
            checked += 1;
        }
    }
    eprintln!("console matrix: {} routes, {checked} requests", routes().len());
}

async fn a_change_needs_the_sessions_csrf_token_and_this_origin(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let key = create_key(&app, &["read", "write"]).await.1;
    let browser = sign_in(&app, &key).await;
    let other = sign_in(&app, &key).await;
    let path = format!("{PROMPT}/labels/staging/promote");
    let label = "/v1/prompts/team%2Fconsole/labels/staging";
    for (what, form, origin) in [
        ("no token", "to=2".to_owned(), Some(app.address.as_str())),
        (
            "another session's token",
            format!("csrf={}&to=2", other.csrf),
            Some(app.address.as_str()),
        ),
        (
            "another site",
            format!("csrf={}&to=2", browser.csrf),
            Some("https://evil.example"),
        ),
    ] {
        let res = ui_from(&app, Method::POST, &path, Some(&browser.cookie), &form, origin).await;
        assert_eq!(res.status, 403, "{what}: {}", res.text);
        assert_eq!(app.get(label).await.status, 404, "{what}: nothing moved");
    }
    let res = ui(
        &app,
        Method::POST,
        &path,
        Some(&browser.cookie),
        &format!("csrf={}&to=2&reason=try+it", browser.csrf),
    )
    .await;
    assert_eq!(res.status, 303, "{}", res.text);
    assert_eq!(app.get(label).await.body["target"]["version"], 2);
    let history = app.get(&format!("{label}/history")).await;
    assert_eq!(history.body["items"][0]["reason"], "try it", "{}", history.text);
}

async fn signing_out_or_revoking_the_key_ends_the_session(backend: Backend) {
    let app = spawn_app(&backend).await;
    let (id, key) = create_key(&app, &["read"]).await;
    let a = sign_in(&app, &key).await;
    let b = sign_in(&app, &key).await;
    let res = ui(
        &app,
        Method::POST,
        "/ui/sign-out",
        Some(&a.cookie),
        &format!("csrf={}", a.csrf),
    )
    .await;
    assert_eq!(res.status, 303);
    assert!(sent_to_sign_in(
        &ui(&app, Method::GET, "/ui/prompts", Some(&a.cookie), "").await
    ));
    assert_eq!(
        ui(&app, Method::GET, "/ui/prompts", Some(&b.cookie), "")
            .await
            .status,
        200,
        "only that session ended"
    );
    assert_eq!(app.delete(&format!("/v1/api-keys/{id}")).await.status, 204);
    assert!(sent_to_sign_in(
        &ui(&app, Method::GET, "/ui/prompts", Some(&b.cookie), "").await
    ));
    let res = ui(&app, Method::POST, "/ui/sign-in", None, &format!("key={key}")).await;
    assert_eq!(res.status, 401, "a revoked key cannot sign in");
    assert!(res.text.contains("revoked"), "{}", res.text);
}

async fn pages_are_sent_with_a_strict_policy_and_assets_by_content_hash(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let browser = sign_in(&app, ADMIN_KEY).await;
    let page = ui(&app, Method::GET, PROMPT, Some(&browser.cookie), "").await;
    let header = |res: &Response, name: &str| {
        res.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let csp = header(&page, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&page, "x-frame-options"), "DENY");
    assert_eq!(header(&page, "cache-control"), "no-store");
    assert!(!page.text.contains(" style=\""), "no inline style");
    let mut scripts = 0;
    for tag in page.text.split("<script").skip(1) {
        assert!(
            tag.starts_with(" src=\"/ui/assets/"),
            "only scripts from the assets: <script{}",
            &tag[..40.min(tag.len())]
        );
        scripts += 1;
    }
    assert_eq!(scripts, 2, "htmx and the console's script");
    let start = page.text.find("/ui/assets/").expect("an asset");
    let url = page.text[start..].split('"').next().expect("url").to_owned();
    let asset = app
        .raw_as(
            Method::GET,
            &url,
            None,
            Vec::new(),
            &[("authorization", ""), ("accept-encoding", "gzip")],
        )
        .await;
    assert_eq!(asset.status, 200, "{url}");
    assert_eq!(
        header(&asset, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(header(&asset, "content-encoding"), "gzip");
    let stale = url.replacen("/ui/assets/", "/ui/assets/000000", 1);
    assert_eq!(
        app.raw_as(Method::GET, &stale, None, Vec::new(), &[("authorization", "")])
            .await
            .status,
        404
    );
}

async fn try_it_shows_strict_render_errors_inline(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let browser = sign_in(&app, ADMIN_KEY).await;
    let path = format!("{PROMPT}/try");
    let send = |variables: &str| {
        let form = format!("csrf={}&version=2&variables={variables}", browser.csrf);
        let (app, path, cookie) = (&app, path.clone(), browser.cookie.clone());
        async move { ui(app, Method::POST, &path, Some(&cookie), &form).await }
    };
    let ok = send("%7B%22name%22%3A%22Ada%22%2C%22team%22%3A%22ops%22%7D").await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert!(ok.text.contains("Hello Ada of ops"), "{}", ok.text);
    let missing = send("%7B%22name%22%3A%22Ada%22%7D").await;
    assert_eq!(missing.status, 422);
    assert!(
        missing.text.contains("role=\"alert\"") && missing.text.contains("team"),
        "{}",
        missing.text
    );
    let not_json = send("nope").await;
    assert_eq!(not_json.status, 422);
    assert!(not_json.text.contains("not a JSON object"), "{}", not_json.text);
    let huge = send(&"a".repeat(300 * 1024)).await;
    assert_eq!(huge.status, 413, "{}", huge.text);
    assert!(huge.content_type().starts_with("text/html"));
}

async fn promoting_a_protected_label_goes_through_the_breaking_change_gate(backend: Backend) {
    let app = spawn_app(&backend).await;
    seed(&app).await;
    let labels = "/v1/prompts/team%2Fconsole/labels/production";
    assert_eq!(app.patch(labels, &json!({"protected": true})).await.status, 200);
    let browser = sign_in(&app, ADMIN_KEY).await;
    let confirm = ui(
        &app,
        Method::GET,
        &format!("{PROMPT}/labels/production/promote?to=2"),
        Some(&browser.cookie),
        "",
    )
    .await;
    assert_eq!(confirm.status, 200);
    assert!(
        confirm.text.contains("class=\"breaking\"") && confirm.text.contains("allow_breaking"),
        "{}",
        confirm.text
    );
    let revision = app.get(labels).await.body["revision"].as_u64().expect("revision");
    let path = format!("{PROMPT}/labels/production/promote");
    let form = format!("csrf={}&to=2&revision={revision}&reason=ship", browser.csrf);
    let refused = ui(&app, Method::POST, &path, Some(&browser.cookie), &form).await;
    assert_eq!(refused.status, 409, "{}", refused.text);
    assert!(refused.text.contains("id=\"change-error\""));
    assert_eq!(app.get(labels).await.body["target"]["version"], 1);
    let stale = format!(
        "csrf={}&to=2&revision={}&allow_breaking=yes",
        browser.csrf,
        revision + 5
    );
    assert_eq!(
        ui(&app, Method::POST, &path, Some(&browser.cookie), &stale)
            .await
            .status,
        412,
        "compare-and-set"
    );
    let moved = ui(
        &app,
        Method::POST,
        &path,
        Some(&browser.cookie),
        &format!("{form}&allow_breaking=yes"),
    )
    .await;
    assert_eq!(moved.status, 303, "{}", moved.text);
    assert_eq!(app.get(labels).await.body["target"]["version"], 2);
    let back = format!("{PROMPT}/labels/production/rollback");
    let page = ui(&app, Method::GET, &back, Some(&browser.cookie), "").await;
    assert!(
        page.status == 200 && page.text.contains("Roll back production to v1"),
        "{}",
        page.text
    );
    let form = format!("csrf={}&reason=undo&allow_breaking=yes", browser.csrf);
    assert_eq!(
        ui(&app, Method::POST, &back, Some(&browser.cookie), &form)
            .await
            .status,
        303
    );
    assert_eq!(app.get(labels).await.body["target"]["version"], 1);
}

backend_tests!(
    #[actix_web::test]
    every_console_page_needs_a_session_with_the_scope_it_needs,
    a_change_needs_the_sessions_csrf_token_and_this_origin,
    signing_out_or_revoking_the_key_ends_the_session,
    pages_are_sent_with_a_strict_policy_and_assets_by_content_hash,
    try_it_shows_strict_render_errors_inline,
    promoting_a_protected_label_goes_through_the_breaking_change_gate,
);
