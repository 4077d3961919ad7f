//! Two real server processes sharing one database and one Redis never serve
//! a stale active version, a label's old target or a removed label once the
//! request that changed it has returned; and they resolve a split label to
//! the same arm for the same subject.

use registry_persistence::backend_tests;
use registry_persistence::testing::{Backend, OwnRedis, TestDatabase};
use serde_json::{Value, json};

use crate::helpers::{Binary, redis_url, start_binary};

async fn send(client: &awc::Client, method: &str, url: String, body: Option<Value>) -> (u16, Value) {
    let req = match method {
        "POST" => client.post(url),
        "PUT" => client.put(url),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    let mut res = match body {
        Some(b) => req.send_json(&b).await,
        None => req.send().await,
    }
    .expect("request sent");
    let bytes = res.body().await.expect("body");
    (
        res.status().as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Two replicas on `redis` with `coherence` and the given extra settings,
/// sharing a fresh database, with the prompt `shared` at versions 1 and 2.
async fn two_replicas(
    backend: &Backend,
    redis: &str,
    extra: &[(&str, &str)],
) -> (TestDatabase, Binary, Binary) {
    let test_db = TestDatabase::migrated(backend).await.0;
    let prefix = format!("coherence:{}:", uuid::Uuid::new_v4().simple());
    let mut env = vec![
        ("APP__REDIS__URL", redis),
        ("APP__REDIS__PREFIX", prefix.as_str()),
    ];
    env.extend_from_slice(extra);
    let (a, b) = (
        start_binary(&test_db.url, &env).await,
        start_binary(&test_db.url, &env).await,
    );
    let client = crate::helpers::client();
    let created = send(
        &client,
        "POST",
        format!("{}/v1/prompts", a.base),
        Some(json!({"name": "shared"})),
    )
    .await;
    assert_eq!(created.0, 201, "{created:?}");
    for i in 1..=2 {
        let body = json!({"template": format!("v{i}")});
        let (status, _) = send(
            &client,
            "POST",
            format!("{}/v1/prompts/shared/versions", a.base),
            Some(body),
        )
        .await;
        assert_eq!(status, 201);
    }
    (test_db, a, b)
}

/// Activates `version` through `writer`; returns how long the write took.
async fn activate(client: &awc::Client, writer: &str, version: u32) -> std::time::Duration {
    let started = std::time::Instant::now();
    let (status, v) = send(
        client,
        "POST",
        format!("{writer}/v1/prompts/shared/versions/{version}/activate"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    started.elapsed()
}

/// The active version `server` answers.
async fn active(client: &awc::Client, server: &str) -> u64 {
    let (status, got) = send(
        client,
        "GET",
        format!("{server}/v1/prompts/shared/versions/active"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{got}");
    got["version"].as_u64().expect("a version number")
}

/// `rounds` writes through A, each followed by a read from B (and one from
/// A) once it has returned: the stale answers.
async fn stale_reads(client: &awc::Client, a: &str, b: &str, rounds: u32) -> u32 {
    let mut stale = 0;
    for round in 0..rounds {
        let expected = u64::from(round % 2 + 1);
        activate(client, a, round % 2 + 1).await;
        for server in [b, a] {
            if active(client, server).await != expected {
                stale += 1;
            }
        }
    }
    stale
}

async fn readiness(client: &awc::Client, server: &str) -> String {
    let (_, ready) = send(client, "GET", format!("{server}/ready"), None).await;
    ready["checks"]["cache"].as_str().unwrap_or_default().to_owned()
}

/// The lease mode (the default), 10,000 writes each read back at once
/// from the other replica.
async fn replicas_under_leases_never_serve_a_stale_active_version(backend: Backend) {
    let redis = redis_url();
    let (_db, a, b) = two_replicas(&backend, &redis, &[]).await;
    let client = crate::helpers::client();
    assert_eq!(readiness(&client, &b.base).await, "ok");
    let stale = stale_reads(&client, &a.base, &b.base, 10_000).await;
    assert_eq!(stale, 0, "stale reads in 10,000 rounds (20,000 reads)");
}

/// The per-read generation check (`redis.coherence = check`).
async fn replicas_checking_redis_per_read_never_serve_a_stale_active_version(backend: Backend) {
    let redis = redis_url();
    let (_db, a, b) = two_replicas(&backend, &redis, &[("APP__REDIS__COHERENCE", "check")]).await;
    let client = crate::helpers::client();
    assert_eq!(readiness(&client, &b.base).await, "ok");
    assert_eq!(stale_reads(&client, &a.base, &b.base, 200).await, 0);
}

async fn replicas_follow_label_moves_and_removals_and_agree_on_split_arms(backend: Backend) {
    let redis = redis_url();
    let test_db = TestDatabase::migrated(&backend).await.0;
    let prefix = format!("coherence:{}:", uuid::Uuid::new_v4().simple());
    let env = [
        ("APP__REDIS__URL", redis.as_str()),
        ("APP__REDIS__PREFIX", prefix.as_str()),
    ];
    let (a, b) = (
        start_binary(&test_db.url, &env).await,
        start_binary(&test_db.url, &env).await,
    );
    let client = crate::helpers::client();
    let url = |server: &str, path: &str| format!("{server}/v1/prompts/shared{path}");
    let (status, _) = send(
        &client,
        "POST",
        format!("{}/v1/prompts", a.base),
        Some(json!({"name": "shared"})),
    )
    .await;
    assert_eq!(status, 201);
    for i in 1..=3 {
        let body = json!({"template": format!("v{i}"), "activate": false});
        assert_eq!(
            send(&client, "POST", url(&a.base, "/versions"), Some(body))
                .await
                .0,
            201
        );
    }
    let canary = |server: &str| url(server, "/versions/canary");
    for round in 1..=9 {
        let target = round % 3 + 1;
        let (status, moved) = send(
            &client,
            "PUT",
            url(&a.base, "/labels/canary"),
            Some(json!({"version": target})),
        )
        .await;
        assert!(status == 200 || status == 201, "{moved}");
        for _ in 0..3 {
            let (status, got) = send(&client, "GET", canary(&b.base), None).await;
            assert_eq!(status, 200);
            assert_eq!(
                got["version"], target,
                "round {round}: replica B served the label's old target"
            );
        }
        if round % 3 == 0 {
            let (status, _) = send(&client, "DELETE", url(&a.base, "/labels/canary"), None).await;
            assert_eq!(status, 204);
            let (status, _) = send(&client, "GET", canary(&b.base), None).await;
            assert_eq!(status, 404, "round {round}: replica B served a removed label");
        }
    }

    // A split: both processes give each subject the same arm.
    let split = json!({"split": [{"version": 1, "weight": 50}, {"version": 2, "weight": 30}, {"version": 3, "weight": 20}]});
    assert_eq!(
        send(&client, "PUT", url(&b.base, "/labels/production"), Some(split))
            .await
            .0,
        201
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..200 {
        let path = format!("/versions/production?subject=customer-{i}");
        let (_, from_a) = send(&client, "GET", url(&a.base, &path), None).await;
        let (_, from_b) = send(&client, "GET", url(&b.base, &path), None).await;
        assert_eq!(
            from_a["version"], from_b["version"],
            "customer-{i} got different arms"
        );
        seen.insert(from_a["version"].to_string());
    }
    assert_eq!(seen.len(), 3, "every arm serves some subjects: {seen:?}");
}

backend_tests!(
    #[actix_web::test]
    #[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
    replicas_under_leases_never_serve_a_stale_active_version,
    replicas_checking_redis_per_read_never_serve_a_stale_active_version,
    replicas_follow_label_moves_and_removals_and_agree_on_split_arms,
);

fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name}");
}

/// Short leases, so the faults below play out in seconds.
const SHORT_LEASES: [(&str, &str); 2] = [
    ("APP__REDIS__LEASE_MS", "600"),
    ("APP__REDIS__ACK_TIMEOUT_MS", "50"),
];

/// B frozen (SIGSTOP) for longer than a lease while A writes: A's write
/// waits for B's lease at most, and B, resumed, serves nothing stale.
#[actix_web::test]
#[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
async fn a_frozen_replica_delays_a_write_by_a_lease_at_most_and_serves_nothing_stale_after() {
    let redis = redis_url();
    let (_db, a, b) = two_replicas(&Backend::Sqlite, &redis, &SHORT_LEASES).await;
    let client = crate::helpers::client();
    assert_eq!(active(&client, &b.base).await, 2, "B caches version 2");
    signal(&b.child, "STOP");
    let took = activate(&client, &a.base, 1).await;
    // B cannot acknowledge: its lease is revoked and waited out, which
    // is at most the lease (600 ms) with its margins, never forever.
    assert!(
        took >= std::time::Duration::from_millis(100) && took < std::time::Duration::from_secs(3),
        "the write waited {took:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // B's lease is gone: the next write does not wait for it.
    let second = activate(&client, &a.base, 1).await;
    signal(&b.child, "CONT");
    assert_eq!(
        active(&client, &b.base).await,
        1,
        "B, resumed, served its cached version 2"
    );
    assert!(
        second < took,
        "a write after B's lease was revoked waited {second:?}"
    );
    assert_eq!(stale_reads(&client, &a.base, &b.base, 200).await, 0);
}

/// Subscriptions cut and Redis restarted (empty) between writes: no
/// stale read, and both replicas serve under a lease again afterwards.
#[actix_web::test]
#[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
async fn dropped_subscriptions_and_a_redis_restart_cause_no_stale_read() {
    let _ = redis_url();
    let port = OwnRedis::free_port();
    let own = OwnRedis::start(port).await;
    let (_db, a, b) = two_replicas(&Backend::Sqlite, &own.url(), &SHORT_LEASES).await;
    let client = crate::helpers::client();
    let mut stale = stale_reads(&client, &a.base, &b.base, 100).await;
    own.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    stale += stale_reads(&client, &a.base, &b.base, 100).await;
    drop(own);
    stale += stale_reads(&client, &a.base, &b.base, 5).await;
    let _own = OwnRedis::start(port).await;
    stale += stale_reads(&client, &a.base, &b.base, 100).await;
    assert_eq!(stale, 0, "stale reads across the faults");
    let mut ok = false;
    for _ in 0..100 {
        if readiness(&client, &a.base).await == "ok" && readiness(&client, &b.base).await == "ok" {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "both replicas hold a lease again once Redis is back");
    assert_eq!(stale_reads(&client, &a.base, &b.base, 100).await, 0);
}
