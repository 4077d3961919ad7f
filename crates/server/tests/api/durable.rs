//! Durable acceptance: with Redis, a run answered 202 is in the Redis stream
//! before the answer, so killing the replica that took it loses nothing —
//! another replica's writer claims what the dead one left and stores it once.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use registry_persistence::backend_tests;
use registry_persistence::testing::{Backend, TestDatabase};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{client, redis_url, start_binary};

/// Posts runs to `base` asynchronously (singles and batches of ten) until a
/// request fails; returns the ids answered 202.
async fn burst(base: String, accepted: Rc<RefCell<Vec<String>>>, worker: usize) {
    let client = client();
    for i in 0.. {
        let ids: Vec<String> = (0..if i % 2 == 0 { 1 } else { 10 })
            .map(|_| Uuid::now_v7().to_string())
            .collect();
        let runs: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "prompt": "p", "status": "success", "latency_ms": worker, "input": {"i": i}}))
            .collect();
        let req = client.post(if ids.len() == 1 {
            format!("{base}/v1/runs")
        } else {
            format!("{base}/v1/runs/batch")
        });
        let body = if ids.len() == 1 {
            runs[0].clone()
        } else {
            json!({"runs": runs})
        };
        match req
            .insert_header(("prefer", "respond-async"))
            .send_json(&body)
            .await
        {
            Ok(res) if res.status() == 202 => accepted.borrow_mut().extend(ids),
            Ok(res) => panic!("a run was answered {} before the kill", res.status()),
            // The replica was killed: this request may or may not have been
            // taken, and was not answered 202.
            Err(_) => return,
        }
    }
}

async fn stored_ids(base: &str) -> Vec<String> {
    let client = client();
    let mut ids = Vec::new();
    let mut cursor = String::new();
    loop {
        let mut res = client
            .get(format!("{base}/v1/runs?prompt=p&limit=100{cursor}"))
            .send()
            .await
            .expect("listed");
        let page: Value = res.json().limit(16 << 20).await.expect("a page");
        for run in page["items"].as_array().expect("items") {
            ids.push(run["id"].as_str().expect("an id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return ids,
        }
    }
}

async fn runs_answered_202_survive_a_sigkill_and_are_stored_once(backend: Backend) {
    let redis = redis_url();
    let test_db = TestDatabase::migrated(&backend).await.0;
    let prefix = format!("durable:{}:", Uuid::new_v4().simple());
    let env = [
        ("APP__REDIS__URL", redis.as_str()),
        ("APP__REDIS__PREFIX", prefix.as_str()),
        ("APP__RUNS__CLAIM_AFTER_MS", "1000"),
        // Small writes, so the killed replica holds entries read but not yet
        // stored when it dies.
        ("APP__RUNS__WRITER_BATCH_SIZE", "8"),
    ];
    let mut a = start_binary(&test_db.url, &env).await;
    let b = start_binary(&test_db.url, &env).await;
    let client = client();
    let res = client
        .post(format!("{}/v1/prompts", a.base))
        .send_json(&json!({"name": "p"}))
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);
    let res = client
        .post(format!("{}/v1/prompts/p/versions", a.base))
        .send_json(&json!({"template": "x"}))
        .await
        .expect("sent");
    assert_eq!(res.status(), 201);

    let accepted = Rc::new(RefCell::new(Vec::new()));
    let bursts = (0..8).map(|w| burst(a.base.clone(), Rc::clone(&accepted), w));
    let killer = async {
        let started = Instant::now();
        while accepted.borrow().len() < 2_000 && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        a.child.kill().expect("SIGKILL sent");
        a.child.wait().expect("reaped");
    };
    futures::future::join(futures::future::join_all(bursts), killer).await;
    let accepted: HashSet<String> = accepted.borrow().iter().cloned().collect();
    assert!(
        accepted.len() >= 1_000,
        "only {} runs accepted before the kill",
        accepted.len()
    );

    // B claims what A read and never acknowledged, and reads what A never read.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (listed, missing) = loop {
        let listed = stored_ids(&b.base).await;
        let stored: HashSet<&String> = listed.iter().collect();
        let missing = accepted.iter().filter(|id| !stored.contains(id)).count();
        if missing == 0 || Instant::now() > deadline {
            break (listed, missing);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        missing,
        0,
        "{missing} of {} runs answered 202 were lost",
        accepted.len()
    );
    let distinct: HashSet<&String> = listed.iter().collect();
    assert_eq!(distinct.len(), listed.len(), "a run was stored twice");
    eprintln!(
        "durable: {} runs answered 202 before SIGKILL, all stored once ({} stored in all)",
        accepted.len(),
        listed.len()
    );
}

backend_tests!(
    #[actix_web::test]
    #[cfg_attr(not(redis_tests), ignore = "TEST_REDIS_URL is not set")]
    runs_answered_202_survive_a_sigkill_and_are_stored_once,
);
