//! A database outage longer than every retry budget, through a proxy the
//! test cuts: no accepted run is lost, requests get fast 503s, and cached
//! versions are served stale rather than failing.

use std::time::Duration;

use registry_persistence::testing::Backend;
use serde_json::json;

use crate::faults::{prompt_with_version, stored_run, uuid};
use crate::helpers::spawn_app_with;
use crate::proxy::Proxy;

/// The database URL with its host and port replaced by the proxy's.
fn through(url: &str, port: u16) -> String {
    let at = url
        .rfind('@')
        .map_or(url.find("://").map_or(0, |i| i + 3), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    format!("{}127.0.0.1:{port}{}", &url[..at], &url[end..])
}

fn target_of(url: &str) -> std::net::SocketAddr {
    let at = url
        .rfind('@')
        .map_or(url.find("://").map_or(0, |i| i + 3), |i| i + 1);
    let end = url[at..].find('/').map_or(url.len(), |i| at + i);
    let host = &url[at..end];
    let host = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host)
        .ok()
        .and_then(|mut a| a.next())
        .expect("the PostgreSQL address resolves")
}

mod postgres {
    use super::*;

    /// PostgreSQL away for longer than any retry budget: every run answered
    /// 202 is stored when it returns, requests that need it get fast 503s,
    /// and a cached version is served past its TTL, marked stale.
    #[actix_web::test]
    #[cfg_attr(not(postgres_tests), ignore = "TEST_DATABASE_URL is not set")]
    async fn a_long_database_outage_loses_no_accepted_run_and_answers_503_not_500() {
        let backend = Backend::postgres();
        let Backend::Postgres(base) = &backend else {
            unreachable!("Backend::postgres is PostgreSQL");
        };
        let proxy = Proxy::start(target_of(base)).await;
        let port = proxy.port;
        let app = spawn_app_with(&backend, |s| {
            s.database.url = through(&s.database.url, port);
            s.database.acquire_timeout_ms = 300;
            s.database.connect_timeout_ms = 300;
            s.cache.ttl_secs = 1;
        })
        .await;
        prompt_with_version(&app, "p").await;
        assert_eq!(app.get("/v1/prompts/p/versions/active").await.status, 200);
        let run =
            |id: &str| json!({"id": id, "prompt": "p", "version": 1, "status": "success", "latency_ms": 3});
        let mut accepted = Vec::new();
        for _ in 0..10 {
            let id = uuid();
            assert_eq!(app.post_async("/v1/runs", &run(&id)).await.status, 202);
            accepted.push(id);
        }

        proxy.cut().await;
        for _ in 0..30 {
            let id = uuid();
            let res = app.post_async("/v1/runs", &run(&id)).await;
            assert_eq!(res.status, 202, "{}", res.text);
            accepted.push(id);
        }
        let sync = app.post("/v1/runs", &run(&uuid())).await;
        assert_eq!(sync.problem(503)["code"], "service_unavailable");
        assert!(sync.headers.contains_key("retry-after"));
        assert!(sync.text.contains("database"), "{}", sync.text);
        assert_eq!(app.get("/ready").await.status, 503);

        // Past the cache TTL: the version no write has superseded is served, marked.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let stale = app.get("/v1/prompts/p/versions/active").await;
        assert_eq!(stale.status, 200, "{}", stale.text);
        assert_eq!(
            stale
                .headers
                .get("x-stale")
                .map(awc::error::HeaderValue::as_bytes),
            Some(&b"stale-if-error"[..])
        );
        assert!(stale.headers.contains_key("age"));
        // What was never cached cannot be answered: a fast 503, not a 500.
        assert_eq!(
            app.get("/v1/prompts/p/versions/latest").await.problem(503)["code"],
            "service_unavailable"
        );

        // Longer than every retry budget the writer ever had.
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.restore();
        for id in &accepted {
            stored_run(&app, id).await;
        }
        let metrics = app.get("/metrics").await.text;
        assert!(metrics.contains("run_writer_refused_total 0"), "{metrics}");
        assert!(!metrics.contains("run_writer_retries_total 0\n"), "{metrics}");
        assert_eq!(
            app.get("/v1/prompts/p/versions/active")
                .await
                .headers
                .get("x-stale"),
            None
        );
    }
}
