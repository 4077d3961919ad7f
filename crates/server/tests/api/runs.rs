//! Run logging end to end: sync, async and batch paths, filters, sort
//! orders, pagination under concurrent inserts, stats, idempotency and bad input.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use registry_domain::run::Cost;
use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use serde_json::{Value, json};

use crate::helpers::{JSON_LIMIT, Response, TestApp, spawn_app, spawn_app_with};

/// What the test knows about each run it logged.
#[derive(Debug, Clone)]
struct Expected {
    id: String,
    version: u64,
    error: bool,
    model: &'static str,
    latency: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_nanos: i64,
}

fn run_body(i: u64, id: &str) -> (Value, Expected) {
    let version = i % 3 + 1;
    let error = i.is_multiple_of(7);
    let model = if i.is_multiple_of(2) { "model-a" } else { "model-b" };
    let latency = (i * 37) % 500 + version * 3;
    let cost_nanos = i64::try_from((i * 1_234_567) % 9_000_000).unwrap_or(0);
    let cost = Cost::from_nanos(cost_nanos).expect("valid").to_string();
    let mut body = json!({
        "id": id,
        "prompt": "sim",
        "version": version,
        "input": {"question": format!("q{i}")},
        "output": format!("answer {i}"),
        "status": if error { "error" } else { "success" },
        "model": model,
        "latency_ms": latency,
        "prompt_tokens": i % 50,
        "completion_tokens": i % 30,
        "cost_usd": cost,
        "metadata": {"i": i},
        "tags": ["sim"],
    });
    if error {
        body["error"] = json!("rate limited");
    }
    let expected = Expected {
        id: id.to_owned(),
        version,
        error,
        model,
        latency,
        prompt_tokens: i % 50,
        completion_tokens: i % 30,
        cost_nanos,
    };
    (body, expected)
}

fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn items(res: &Response) -> &Vec<Value> {
    res.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {}", res.text))
}

/// Walks every page of `path` (which has a `?`), returning every item.
async fn all_pages(app: &TestApp, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut url = path.to_owned();
    for _ in 0..1_000 {
        let res = app.get(&url).await;
        assert_eq!(res.status, 200, "{url}: {}", res.text);
        out.extend(items(&res).iter().cloned());
        match res.body["next_cursor"].as_str() {
            Some(c) => url = format!("{path}&cursor={c}"),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `percentile_cont`, written out again here so the server's answer is
/// checked against an independent computation.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "rank is in 0..len, non-negative and whole after floor/ceil"
)]
fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.len() == 1 {
        return sorted[0] as f64;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * (rank - lo as f64)
}

async fn setup_prompt(app: &TestApp) {
    app.create_prompt("sim").await;
    for t in ["one", "two", "three"] {
        app.create_version("sim", &json!({"template": t})).await;
    }
}

async fn logged_runs_can_be_filtered_sorted_paged_and_summarised(backend: Backend) {
    let app = spawn_app(&backend).await;
    setup_prompt(&app).await;
    let mut expected = Vec::new();
    let mut batch = Vec::new();
    for i in 0..300 {
        let (body, exp) = run_body(i, &uuid());
        match (i / 3) % 3 {
            0 => {
                let res = app.post("/v1/runs", &body).await;
                assert_eq!(res.status, 201, "{}", res.text);
                assert_eq!(res.body["cost_usd"], body["cost_usd"]);
            }
            1 => {
                let res = app.post_async("/v1/runs", &body).await;
                assert_eq!(res.status, 202, "{}", res.text);
                assert_eq!(res.body["id"], body["id"]);
            }
            _ => {
                batch.push(body);
                if batch.len() == 40 {
                    let res = app.post("/v1/runs/batch", &json!({"runs": batch})).await;
                    assert_eq!(res.status, 201, "{}", res.text);
                    assert_eq!(res.body["inserted"], 40);
                    batch.clear();
                }
            }
        }
        expected.push(exp);
    }
    let res = app.post("/v1/runs/batch", &json!({"runs": batch})).await;
    assert_eq!(res.status, 201, "{}", res.text);

    // The async runs land shortly.
    let mut landed = 0;
    for _ in 0..100 {
        let stats = app.get("/v1/prompts/sim/stats").await;
        landed = stats.body["items"]
            .as_array()
            .map_or(0, |a| a.iter().map(|s| s["count"].as_u64().unwrap_or(0)).sum());
        if landed == 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(landed, 300, "every accepted run is stored");

    // Stats, against figures computed here.
    let stats = app.get("/v1/prompts/sim/stats").await;
    let rows = items(&stats);
    assert_eq!(rows.len(), 3);
    for row in rows {
        let v = row["version"].as_u64().expect("version");
        let mine: Vec<_> = expected.iter().filter(|e| e.version == v).collect();
        let mut lat: Vec<u64> = mine.iter().map(|e| e.latency).collect();
        lat.sort_unstable();
        let errors = mine.iter().filter(|e| e.error).count() as u64;
        assert_eq!(row["count"], mine.len() as u64);
        assert_eq!(row["error_count"], errors);
        assert!(
            (row["error_rate"].as_f64().unwrap_or(-1.0) - errors as f64 / mine.len() as f64).abs() < 1e-9
        );
        for (key, p) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
            let got = row["latency_ms"][key].as_f64().expect("percentile");
            assert!(
                (got - percentile(&lat, p)).abs() < 1e-6,
                "v{v} {key}: {got} vs {}",
                percentile(&lat, p)
            );
        }
        #[allow(clippy::cast_precision_loss)]
        let max = *lat.last().expect("runs") as f64;
        assert_eq!(row["latency_ms"]["max"].as_f64(), Some(max));
        assert_eq!(
            row["prompt_tokens"],
            mine.iter().map(|e| e.prompt_tokens).sum::<u64>()
        );
        assert_eq!(
            row["completion_tokens"],
            mine.iter().map(|e| e.completion_tokens).sum::<u64>()
        );
        let total: i64 = mine.iter().map(|e| e.cost_nanos).sum();
        assert_eq!(
            row["cost_usd"]["total"],
            Cost::from_nanos(total).expect("valid").to_string()
        );
        let n = i64::try_from(mine.len()).expect("a handful of runs");
        assert_eq!(
            row["cost_usd"]["average"],
            Cost::from_nanos((total + n / 2) / n).expect("valid").to_string()
        );
    }
    let only_v2 = app.get("/v1/prompts/sim/stats?version=2").await;
    assert_eq!(items(&only_v2).len(), 1);
    let hourly = app.get("/v1/prompts/sim/stats?bucket=hour").await;
    let per_version: BTreeMap<u64, u64> = items(&hourly).iter().fold(BTreeMap::new(), |mut m, r| {
        assert!(
            r["bucket_start"].as_str().is_some_and(|b| b.ends_with(":00:00Z")),
            "{r}"
        );
        *m.entry(r["version"].as_u64().unwrap_or(0)).or_default() += r["count"].as_u64().unwrap_or(0);
        m
    });
    assert_eq!(per_version.values().sum::<u64>(), 300);

    // Filters.
    let count = |res: Vec<Value>| res.len();
    let errors = expected.iter().filter(|e| e.error).count();
    assert_eq!(
        count(all_pages(&app, "/v1/runs?prompt=sim&status=error&limit=1000").await),
        errors
    );
    assert_eq!(
        count(all_pages(&app, "/v1/prompts/sim/runs?status=success&limit=100").await),
        300 - errors
    );
    let v2 = expected.iter().filter(|e| e.version == 2).count();
    assert_eq!(
        count(all_pages(&app, "/v1/runs?prompt=sim&version=2&limit=1000").await),
        v2
    );
    let model_a = expected.iter().filter(|e| e.model == "model-a").count();
    assert_eq!(
        count(all_pages(&app, "/v1/prompts/sim/runs?model=model-a&limit=1000").await),
        model_a
    );
    let newest_first = all_pages(&app, "/v1/prompts/sim/runs?limit=1000").await;
    assert_eq!(newest_first.len(), 300);
    let middle = newest_first[150]["created_at"]
        .as_str()
        .expect("time")
        .replace(':', "%3A")
        .replace('+', "%2B");
    let at_or_after = newest_first
        .iter()
        .filter(|r| r["created_at"].as_str() >= newest_first[150]["created_at"].as_str())
        .count();
    assert_eq!(
        count(all_pages(&app, &format!("/v1/prompts/sim/runs?from={middle}&limit=1000")).await),
        at_or_after
    );
    assert_eq!(
        count(all_pages(&app, &format!("/v1/prompts/sim/runs?to={middle}&limit=1000")).await),
        300 - at_or_after
    );

    // Every sort order, paged, against the order computed here.
    let by_id: BTreeMap<String, &Expected> = expected.iter().map(|e| (e.id.clone(), e)).collect();
    let created: BTreeMap<String, String> = newest_first
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_owned(),
                r["created_at"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for sort in [
        "created_at",
        "-created_at",
        "latency_ms",
        "-latency_ms",
        "cost",
        "-cost",
    ] {
        let got = ids(&all_pages(&app, &format!("/v1/prompts/sim/runs?sort={sort}&limit=37")).await);
        let mut want: Vec<String> = by_id.keys().cloned().collect();
        let key = |id: &String| -> (String, i64, uuid::Uuid) {
            let e = by_id[id];
            let u = uuid::Uuid::parse_str(id).unwrap_or_default();
            match sort.trim_start_matches('-') {
                "created_at" => (created[id].clone(), 0, u),
                "latency_ms" => (String::new(), i64::try_from(e.latency).unwrap_or(0), u),
                _ => (String::new(), e.cost_nanos, u),
            }
        };
        want.sort_by_key(key);
        if sort.starts_with('-') {
            want.reverse();
        }
        if sort.ends_with("created_at") {
            // Timestamps print with trimmed fractions; compare the set and
            // check monotonic time instead of string order.
            assert_eq!(
                got.iter().collect::<HashSet<_>>(),
                want.iter().collect::<HashSet<_>>(),
                "{sort}"
            );
            let times: Vec<time::OffsetDateTime> = got
                .iter()
                .map(|id| {
                    time::OffsetDateTime::parse(&created[id], &time::format_description::well_known::Rfc3339)
                        .expect("time")
                })
                .collect();
            let ordered = times.windows(2).all(|w| {
                if sort.starts_with('-') {
                    w[0] >= w[1]
                } else {
                    w[0] <= w[1]
                }
            });
            assert!(ordered, "{sort} is not in time order");
        } else {
            assert_eq!(got, want, "{sort}");
        }
    }

    // Paging while new runs arrive: nothing skipped, nothing repeated.
    for sort in ["-created_at", "latency_ms"] {
        let before: HashSet<String> = ids(&all_pages(&app, "/v1/prompts/sim/runs?limit=1000").await)
            .into_iter()
            .collect();
        let mut seen = Vec::new();
        let mut url = format!("/v1/prompts/sim/runs?sort={sort}&limit=25");
        let mut extra = 1_000;
        loop {
            let res = app.get(&url).await;
            seen.extend(ids(items(&res)));
            for _ in 0..3 {
                extra += 1;
                let (body, _) = run_body(extra, &uuid());
                assert_eq!(app.post("/v1/runs", &body).await.status, 201);
            }
            match res.body["next_cursor"].as_str() {
                Some(c) => url = format!("/v1/prompts/sim/runs?sort={sort}&limit=25&cursor={c}"),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "{sort}: a run was repeated");
        assert!(
            before.iter().all(|id| unique.contains(id)),
            "{sort}: a run was skipped"
        );
    }
}

async fn a_retried_run_is_stored_once_and_a_changed_one_conflicts(backend: Backend) {
    let app = spawn_app(&backend).await;
    setup_prompt(&app).await;
    let id = uuid();
    let (body, _) = run_body(4, &id);
    let first = app.post("/v1/runs", &body).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(
        first.headers.get("location").map(|v| v.as_bytes().to_vec()),
        Some(format!("/v1/runs/{id}").into_bytes())
    );
    let again = app.post("/v1/runs", &body).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "the same run comes back");
    let mut changed = body.clone();
    changed["latency_ms"] = json!(9_999);
    assert_eq!(
        app.post("/v1/runs", &changed).await.problem(409)["code"],
        "already_exists"
    );
    // Without a version, a retry after a rollback is still the same run.
    let (mut unversioned, _) = run_body(5, &uuid());
    unversioned.as_object_mut().map(|o| o.remove("version"));
    assert_eq!(app.post("/v1/runs", &unversioned).await.body["version"], 3);
    app.post("/v1/prompts/sim/versions/1/activate", &json!({})).await;
    let retried = app.post("/v1/runs", &unversioned).await;
    assert_eq!(retried.status, 200, "{}", retried.text);
    assert_eq!(retried.body["version"], 3);
    // A batch reports runs that were already stored and changes nothing.
    let (other, _) = run_body(6, &uuid());
    let res = app.post("/v1/runs/batch", &json!({"runs": [body, other]})).await;
    assert_eq!(res.status, 201, "{}", res.text);
    assert_eq!(res.body["inserted"], 1);
    assert_eq!(res.body["existing"], json!([id]));
    assert_eq!(app.get(&format!("/v1/runs/{id}")).await.body, first.body);
    let page = all_pages(&app, "/v1/runs?limit=100").await;
    assert_eq!(page.len(), 3);
}

async fn bad_runs_are_rejected_field_by_field(backend: Backend) {
    let app = spawn_app(&backend).await;
    setup_prompt(&app).await;
    let base = || json!({"prompt": "sim", "status": "success", "latency_ms": 5});
    let with = |key: &str, value: Value| {
        let mut b = base();
        b[key] = value;
        b
    };
    let cases = [
        (with("latency_ms", json!(-1)), "latency_ms"),
        (with("latency_ms", json!(86_400_001)), "latency_ms"),
        (with("status", json!("ok")), "status"),
        (with("model", json!("gpt\u{0}")), "model"),
        (with("latency_ms", json!(0.5e9)), "latency_ms"),
        (with("error", json!("x")), "error"),
        (with("cost_usd", json!("-1")), "cost_usd"),
        (with("cost_usd", json!("0.0000000001")), "cost_usd"),
        (with("cost_usd", json!(true)), "cost_usd"),
        (with("prompt_tokens", json!(-2)), "prompt_tokens"),
        (with("started_at", json!("yesterday")), "started_at"),
        (with("prompt", json!("Bad Name")), "prompt"),
        (with("prompt", json!("ghost")), "prompt"),
        (with("version", json!(9)), "version"),
        (with("version", json!(0)), "version"),
        (with("tags", json!([""])), "tags[0]"),
        (with("model", json!("")), "model"),
    ];
    for (body, field) in cases {
        let res = app.post("/v1/runs", &body).await;
        res.problem(422);
        assert_eq!(res.error_fields(), vec![field], "{body}: {}", res.text);
        app.post_async("/v1/runs", &body).await.problem(422);
    }
    for body in [
        with("latency_ms", json!("fast")),
        with("input", json!([1])),
        with("surprise", json!(1)),
        with("id", json!("not-a-uuid")),
    ] {
        app.post("/v1/runs", &body).await.problem(422);
    }
    let huge = with("output", json!("x".repeat(JSON_LIMIT)));
    app.post("/v1/runs", &huge).await.problem(413);
    // A batch names each bad run by index and stores none.
    let res = app
        .post("/v1/runs/batch", &json!({"runs": [base(), with("latency_ms", json!(-5)), base(), with("prompt", json!("ghost")), 7]}))
        .await;
    res.problem(422);
    assert_eq!(res.error_fields(), vec!["runs[1].latency_ms", "runs[4]"]);
    let res = app
        .post(
            "/v1/runs/batch",
            &json!({"runs": [base(), with("prompt", json!("ghost"))]}),
        )
        .await;
    res.problem(422);
    assert_eq!(res.error_fields(), vec!["runs[1]"]);
    app.post("/v1/runs/batch", &json!({"runs": []}))
        .await
        .problem(422);
    assert!(
        all_pages(&app, "/v1/runs?limit=10").await.is_empty(),
        "nothing was stored"
    );
    // Listing parameters.
    for path in [
        "/v1/runs?limit=0",
        "/v1/runs?limit=1001",
        "/v1/runs?sort=name",
        "/v1/runs?status=maybe",
        "/v1/runs?version=1",
        "/v1/runs?from=soon",
        "/v1/runs?cursor=abc",
        "/v1/prompts/sim/runs?prompt=sim",
        "/v1/prompts/sim/stats?bucket=week",
        "/v1/prompts/sim/stats?version=0",
        "/v1/runs/not-a-uuid",
    ] {
        app.get(path).await.problem(400);
    }
    app.get(&format!("/v1/runs/{}", uuid())).await.problem(404);
    app.get("/v1/prompts/ghost/runs").await.problem(404);
    app.get("/v1/prompts/ghost/stats").await.problem(404);
}

async fn a_batch_larger_than_the_limit_is_rejected(backend: Backend) {
    let app = spawn_app_with(&backend, |s| s.runs.max_batch = 3).await;
    setup_prompt(&app).await;
    let runs: Vec<Value> = (0..4).map(|i| run_body(i, &uuid()).0).collect();
    let res = app.post("/v1/runs/batch", &json!({"runs": runs})).await;
    res.problem(422);
    assert_eq!(res.error_fields(), vec!["runs"]);
    let res = app.post("/v1/runs/batch", &json!({"runs": runs[..3]})).await;
    assert_eq!(res.status, 201, "{}", res.text);
}

async fn a_cursor_of_one_sort_order_is_refused_by_another(backend: Backend) {
    let app = spawn_app(&backend).await;
    setup_prompt(&app).await;
    for i in 0..3 {
        app.post("/v1/runs", &run_body(i, &uuid()).0).await;
    }
    let res = app.get("/v1/runs?sort=latency_ms&limit=1").await;
    let cursor = res.body["next_cursor"].as_str().expect("more");
    app.get(&format!("/v1/runs?sort=cost&limit=1&cursor={cursor}"))
        .await
        .problem(400);
    assert_eq!(
        app.get(&format!("/v1/runs?sort=latency_ms&limit=1&cursor={cursor}"))
            .await
            .status,
        200
    );
}

backend_tests!(
    #[actix_web::test]
    logged_runs_can_be_filtered_sorted_paged_and_summarised,
    a_retried_run_is_stored_once_and_a_changed_one_conflicts,
    bad_runs_are_rejected_field_by_field,
    a_batch_larger_than_the_limit_is_rejected,
    a_cursor_of_one_sort_order_is_refused_by_another,
);
