//! Transient database failures are retried around the whole transaction:
//! a real PostgreSQL deadlock aborts the request's transaction, and the
//! request still succeeds.

use registry_persistence::backend_tests;
use registry_persistence::testing::Backend;
use sea_orm::{ConnectionTrait, Database, TransactionTrait};
use serde_json::json;

use crate::helpers::spawn_app;

async fn a_request_whose_transaction_deadlocks_is_retried_and_succeeds(backend: Backend) {
    if backend == Backend::Sqlite {
        // SQLite has one writer at a time and no deadlocks to provoke; its
        // busy/locked errors go through the same retry (unit-tested).
        return;
    }
    let app = spawn_app(&backend).await;
    app.create_prompt("deadlock").await;
    app.create_version("deadlock", &json!({"template": "one"})).await;
    let raw = Database::connect(app.database_url.as_str())
        .await
        .expect("a second connection");
    let deadlocks = || async {
        let row = raw
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
            ))
            .await
            .expect("stats")
            .expect("a row");
        row.try_get::<i64>("", "deadlocks").expect("count")
    };
    let before = deadlocks().await;

    // Hold the `production` label's row, which creating an active version moves.
    let txn = raw.begin().await.expect("begin");
    txn.execute_unprepared("UPDATE prompt_labels SET updated_at = updated_at WHERE name = 'production'")
        .await
        .expect("lock the production label");
    // The request locks the prompt row, then waits for the label row.
    let request = {
        let (client, url) = (
            crate::helpers::client(),
            format!("{}/v1/prompts/deadlock/versions", app.address),
        );
        actix_web::rt::spawn(async move {
            let mut res = client
                .post(url)
                .send_json(&json!({"template": "two"}))
                .await
                .expect("sent");
            let body = res.body().await.expect("body");
            (
                res.status().as_u16(),
                serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
            )
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Now wait for the prompt row the request holds: a cycle. PostgreSQL
    // aborts the transaction that waited first (the request's) with 40P01.
    txn.execute_unprepared("UPDATE prompts SET updated_at = now() WHERE name = 'deadlock'")
        .await
        .expect("our side of the cycle proceeds once the request's transaction is aborted");
    txn.commit().await.expect("commit");

    let (status, body) = request.await.expect("the request task");
    assert_eq!(status, 201, "the retried transaction succeeds: {body}");
    assert_eq!(body["version"], 2);
    // The statistics collector may lag a moment behind.
    let mut after = deadlocks().await;
    for _ in 0..20 {
        if after > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = deadlocks().await;
    }
    assert!(after > before, "a real deadlock happened ({before} → {after})");
    let versions = app.get("/v1/prompts/deadlock/versions").await;
    let items = versions.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "the retry stored the version once");
    assert_eq!(items.iter().filter(|v| v["is_active"] == true).count(), 1);
}

backend_tests!(
    #[actix_web::test]
    a_request_whose_transaction_deadlocks_is_retried_and_succeeds,
);
