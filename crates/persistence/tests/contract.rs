//! The repository contract, run against every storage backend: SQLite
//! always, PostgreSQL when `TEST_DATABASE_URL` is set.

use std::collections::BTreeSet;
use std::sync::Arc;

use registry_domain::page::{Limit, PageRequest, TimeCursor};
use registry_domain::prompt::ports::PromptRepository;
use registry_domain::prompt::{
    NewPrompt, NewVersion, PromptError, PromptFilter, PromptName, PromptPatch, Tags, Template, Variables,
    VersionCursor, VersionNumber, VersionSelector,
};
use registry_persistence::testing::{Backend, TestDatabase};
use registry_persistence::{SeaOrmPromptRepository, backend_tests};
use serde_json::{Map, json};

async fn repo(backend: &Backend) -> (TestDatabase, SeaOrmPromptRepository) {
    let (test_db, db) = TestDatabase::migrated(backend).await;
    (test_db, SeaOrmPromptRepository::new(db))
}

fn name(s: &str) -> PromptName {
    PromptName::new(s).expect("valid name")
}

fn new_prompt(s: &str, tags: &[&str]) -> NewPrompt {
    NewPrompt {
        name: name(s),
        description: None,
        tags: Tags::new(tags.iter().map(|t| (*t).to_owned()).collect()).expect("valid tags"),
    }
}

fn new_version(text: &str, activate: bool) -> NewVersion {
    let template = Template::parse(None, &json!(text)).expect("valid template");
    NewVersion::new(
        template,
        Variables::default(),
        Map::new(),
        Some(format!("v: {text}")),
        activate,
    )
    .expect("valid version")
}

fn n(v: i64) -> VersionNumber {
    VersionNumber::new(v).expect("valid number")
}

fn limit(n: i64) -> Limit {
    Limit::new(n, 1000).expect("valid limit")
}

async fn a_created_prompt_can_be_found_by_name(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let created = repo
        .create_prompt(&new_prompt("support/triage", &["a", "b"]))
        .await
        .expect("created");
    let found = repo.find_prompt(&name("support/triage")).await.expect("found");
    assert_eq!(found, created);
    assert_eq!(found.tags.as_slice(), ["a", "b"]);
    assert_eq!(found.active_version, None);
    assert_eq!(found.latest_version, None);
}

async fn a_second_prompt_with_the_same_name_is_a_duplicate(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("dup", &[]))
        .await
        .expect("created");
    let err = repo
        .create_prompt(&new_prompt("dup", &[]))
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, PromptError::Duplicate(ref n) if n.as_str() == "dup"),
        "{err:?}"
    );
}

async fn versions_are_numbered_in_order_and_the_newest_becomes_active(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[])).await.expect("created");
    let v1 = repo
        .create_version(&name("p"), &new_version("one", true))
        .await
        .expect("v1");
    let v2 = repo
        .create_version(&name("p"), &new_version("two", true))
        .await
        .expect("v2");
    assert_eq!((v1.version.get(), v2.version.get()), (1, 2));
    let active = repo
        .find_version(&name("p"), VersionSelector::Active)
        .await
        .expect("active");
    assert_eq!(active.version.get(), 2);
    assert_eq!(active.template, v2.template);
    assert_eq!(active.commit_message.as_deref(), Some("v: two"));
    let first = repo
        .find_version(&name("p"), VersionSelector::Number(n(1)))
        .await
        .expect("v1");
    assert!(!first.is_active);
    let prompt = repo.find_prompt(&name("p")).await.expect("prompt");
    assert_eq!(
        (prompt.active_version, prompt.latest_version),
        (Some(n(2)), Some(n(2)))
    );
}

async fn a_version_created_without_activation_leaves_the_active_one(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[])).await.expect("created");
    repo.create_version(&name("p"), &new_version("one", true))
        .await
        .expect("v1");
    let v2 = repo
        .create_version(&name("p"), &new_version("two", false))
        .await
        .expect("v2");
    assert!(!v2.is_active);
    let active = repo
        .find_version(&name("p"), VersionSelector::Active)
        .await
        .expect("active");
    assert_eq!(active.version.get(), 1);
    let latest = repo
        .find_version(&name("p"), VersionSelector::Latest)
        .await
        .expect("latest");
    assert_eq!(latest.version.get(), 2);
}

async fn activating_an_older_version_rolls_back(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[])).await.expect("created");
    for text in ["one", "two", "three"] {
        repo.create_version(&name("p"), &new_version(text, true))
            .await
            .expect("version");
    }
    let active = repo.activate_version(&name("p"), n(1)).await.expect("activated");
    assert!(active.is_active);
    assert_eq!(active.version.get(), 1);
    let page = repo
        .list_versions(
            &name("p"),
            &PageRequest {
                limit: limit(10),
                after: None,
            },
        )
        .await
        .expect("versions");
    let flags: Vec<_> = page
        .items
        .iter()
        .map(|v| (v.version.get(), v.is_active))
        .collect();
    assert_eq!(flags, vec![(3, false), (2, false), (1, true)]);
    // Activating the already active version changes nothing.
    repo.activate_version(&name("p"), n(1)).await.expect("idempotent");
    let active = repo
        .find_version(&name("p"), VersionSelector::Active)
        .await
        .expect("active");
    assert_eq!(active.version.get(), 1);
}

async fn missing_prompts_and_versions_are_told_apart(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let missing = name("nope");
    assert!(matches!(
        repo.find_prompt(&missing).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.find_version(&missing, VersionSelector::Active).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.create_version(&missing, &new_version("x", true)).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.activate_version(&missing, n(1)).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.delete_prompt(&missing).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.update_prompt(&missing, &PromptPatch::default()).await,
        Err(PromptError::NotFound(_))
    ));
    repo.create_prompt(&new_prompt("empty", &[]))
        .await
        .expect("created");
    for selector in [
        VersionSelector::Active,
        VersionSelector::Latest,
        VersionSelector::Number(n(1)),
    ] {
        let err = repo
            .find_version(&name("empty"), selector)
            .await
            .expect_err("no versions");
        assert!(matches!(err, PromptError::VersionNotFound { .. }), "{err:?}");
    }
    let err = repo
        .activate_version(&name("empty"), n(3))
        .await
        .expect_err("no version 3");
    assert!(matches!(err, PromptError::VersionNotFound { .. }), "{err:?}");
}

async fn fifty_concurrent_creates_give_versions_one_to_fifty_with_one_active(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let repo = Arc::new(repo);
    repo.create_prompt(&new_prompt("hot", &[]))
        .await
        .expect("created");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move {
                repo.create_version(&name("hot"), &new_version(&format!("v{i}"), true))
                    .await
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    for task in tasks {
        let created = task.await.expect("task ran").expect("every create succeeds");
        numbers.insert(created.version.get());
    }
    assert_eq!(numbers, (1..=50).collect::<BTreeSet<u32>>());
    let page = repo
        .list_versions(
            &name("hot"),
            &PageRequest {
                limit: limit(100),
                after: None,
            },
        )
        .await
        .expect("versions");
    assert_eq!(page.items.len(), 50);
    assert_eq!(page.items.iter().filter(|v| v.is_active).count(), 1);
}

async fn concurrent_activations_leave_exactly_one_active_version(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let repo = Arc::new(repo);
    repo.create_prompt(&new_prompt("flip", &[]))
        .await
        .expect("created");
    for i in 0..5 {
        repo.create_version(&name("flip"), &new_version(&format!("v{i}"), false))
            .await
            .expect("version");
    }
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move { repo.activate_version(&name("flip"), n(i % 5 + 1)).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task ran").expect("every activation succeeds");
    }
    let page = repo
        .list_versions(
            &name("flip"),
            &PageRequest {
                limit: limit(10),
                after: None,
            },
        )
        .await
        .expect("versions");
    assert_eq!(page.items.iter().filter(|v| v.is_active).count(), 1);
}

async fn prompts_are_listed_in_creation_order_across_pages(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let p = repo
            .create_prompt(&new_prompt(&format!("p{i}"), &[]))
            .await
            .expect("created");
        expected.push(p.name.to_string());
    }
    let mut seen = Vec::new();
    let mut after: Option<TimeCursor> = None;
    loop {
        let page = repo
            .list_prompts(
                &PromptFilter::default(),
                &PageRequest {
                    limit: limit(3),
                    after,
                },
            )
            .await
            .expect("page");
        seen.extend(page.items.iter().map(|p| p.name.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

async fn prompt_listings_filter_by_prefix_tag_and_time(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let a = repo
        .create_prompt(&new_prompt("team_a/one", &["prod", "x"]))
        .await
        .expect("created");
    repo.create_prompt(&new_prompt("teamxa/two", &["dev"]))
        .await
        .expect("created");
    let c = repo
        .create_prompt(&new_prompt("team_a/three", &["dev", "prod"]))
        .await
        .expect("created");
    let list = |filter: PromptFilter| {
        let repo = &repo;
        async move {
            repo.list_prompts(
                &filter,
                &PageRequest {
                    limit: limit(100),
                    after: None,
                },
            )
            .await
            .expect("list")
            .items
            .into_iter()
            .map(|p| p.name.to_string())
            .collect::<Vec<_>>()
        }
    };
    // `_` is a literal here, not a LIKE wildcard.
    let by_prefix = list(PromptFilter {
        name_prefix: Some("team_a/".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_prefix, vec!["team_a/one", "team_a/three"]);
    let by_tag = list(PromptFilter {
        tag: Some("prod".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_tag, vec!["team_a/one", "team_a/three"]);
    let none = list(PromptFilter {
        tag: Some("pro".into()),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
    let after_a = list(PromptFilter {
        created_after: Some(a.created_at),
        ..Default::default()
    })
    .await;
    assert_eq!(after_a, vec!["teamxa/two", "team_a/three"]);
    let before_c = list(PromptFilter {
        created_before: Some(c.created_at),
        ..Default::default()
    })
    .await;
    assert_eq!(before_c, vec!["team_a/one", "teamxa/two"]);
}

async fn versions_are_listed_newest_first_across_pages(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[])).await.expect("created");
    for i in 0..5 {
        repo.create_version(&name("p"), &new_version(&format!("v{i}"), true))
            .await
            .expect("version");
    }
    let first = repo
        .list_versions(
            &name("p"),
            &PageRequest {
                limit: limit(2),
                after: None,
            },
        )
        .await
        .expect("page 1");
    assert_eq!(
        first.items.iter().map(|v| v.version.get()).collect::<Vec<_>>(),
        vec![5, 4]
    );
    assert_eq!(first.next, Some(VersionCursor(n(4))));
    let rest = repo
        .list_versions(
            &name("p"),
            &PageRequest {
                limit: limit(10),
                after: first.next,
            },
        )
        .await
        .expect("page 2");
    assert_eq!(
        rest.items.iter().map(|v| v.version.get()).collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    assert_eq!(rest.next, None);
}

async fn updating_a_prompt_changes_only_what_the_patch_names(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let created = repo
        .create_prompt(&new_prompt("p", &["keep"]))
        .await
        .expect("created");
    let patch = PromptPatch {
        description: Some(Some(
            registry_domain::prompt::Description::new("new").expect("valid"),
        )),
        tags: None,
    };
    let updated = repo.update_prompt(&name("p"), &patch).await.expect("updated");
    assert_eq!(
        updated
            .description
            .as_ref()
            .map(registry_domain::prompt::Description::as_str),
        Some("new")
    );
    assert_eq!(updated.tags.as_slice(), ["keep"]);
    assert!(updated.updated_at >= created.updated_at);
    let cleared = repo
        .update_prompt(
            &name("p"),
            &PromptPatch {
                description: Some(None),
                tags: Some(Tags::default()),
            },
        )
        .await
        .expect("cleared");
    assert_eq!(cleared.description, None);
    assert!(cleared.tags.as_slice().is_empty());
}

async fn deleting_a_prompt_deletes_its_versions(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[])).await.expect("created");
    repo.create_version(&name("p"), &new_version("one", true))
        .await
        .expect("version");
    repo.delete_prompt(&name("p")).await.expect("deleted");
    assert!(matches!(
        repo.find_prompt(&name("p")).await,
        Err(PromptError::NotFound(_))
    ));
    // A new prompt with the same name starts again at version 1.
    repo.create_prompt(&new_prompt("p", &[]))
        .await
        .expect("created again");
    let v = repo
        .create_version(&name("p"), &new_version("again", true))
        .await
        .expect("version");
    assert_eq!(v.version.get(), 1);
}

async fn migrations_go_all_the_way_down_and_up_again(backend: Backend) {
    use migration::{Migrator, MigratorTrait};
    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    assert!(db.pending_migrations().await.expect("status").is_empty());
    Migrator::down(db.conn(), None).await.expect("down");
    assert_eq!(
        db.pending_migrations().await.expect("status").len(),
        Migrator::migrations().len()
    );
    db.migrate().await.expect("up again");
    let repo = SeaOrmPromptRepository::new(db);
    repo.create_prompt(&new_prompt("after", &[]))
        .await
        .expect("schema works");
}

/// The latency migration keeps every stored run's latency, both ways.
async fn the_latency_migration_converts_stored_runs_down_and_up(backend: Backend) {
    use migration::{Migrator, MigratorTrait};
    use registry_domain::run::ports::RunRepository;
    use registry_domain::run::{Latency, Run, RunFields, RunStatus};
    use registry_persistence::SeaOrmRunRepository;
    use sea_orm::{ConnectionTrait, Statement};

    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    let prompts = SeaOrmPromptRepository::new(db.clone());
    let prompt = prompts
        .create_prompt(&new_prompt("lat", &[]))
        .await
        .expect("created");
    let version = prompts
        .create_version(&name("lat"), &new_version("t", true))
        .await
        .expect("version");
    let run = |micros: u64| Run {
        id: uuid::Uuid::now_v7(),
        prompt_id: prompt.id,
        prompt_name: name("lat"),
        version_id: version.id,
        version: version.version,
        fields: RunFields {
            input: Map::new(),
            output: None,
            status: RunStatus::Success,
            error: None,
            model: None,
            latency: Latency::from_micros(micros).expect("in range"),
            prompt_tokens: None,
            completion_tokens: None,
            cost: registry_domain::run::Cost::ZERO,
            metadata: Map::new(),
            tags: Tags::default(),
            started_at: None,
        },
        created_at: registry_domain::time::now_utc(),
    };
    let runs = SeaOrmRunRepository::new(db.clone());
    let (fast, slow) = (run(400), run(120_500));
    runs.insert_batch(&[fast.clone(), slow.clone()])
        .await
        .expect("stored");

    Migrator::down(db.conn(), Some(1)).await.expect("down one");
    let rows = db
        .conn()
        .query_all_raw(Statement::from_string(
            db.backend(),
            "SELECT latency_ms FROM prompt_runs ORDER BY latency_ms",
        ))
        .await
        .expect("old column");
    let ms: Vec<i32> = rows
        .iter()
        .map(|r| r.try_get::<i32>("", "latency_ms").expect("an integer"))
        .collect();
    assert_eq!(ms, [0, 121], "rounded to the nearest millisecond");

    db.migrate().await.expect("up again");
    let micros = |id| {
        let runs = runs.clone();
        async move { runs.find(id).await.expect("found").fields.latency.micros() }
    };
    assert_eq!(micros(slow.id).await, 121_000);
    assert_eq!(micros(fast.id).await, 0);
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    the_latency_migration_converts_stored_runs_down_and_up,
    a_created_prompt_can_be_found_by_name,
    a_second_prompt_with_the_same_name_is_a_duplicate,
    versions_are_numbered_in_order_and_the_newest_becomes_active,
    a_version_created_without_activation_leaves_the_active_one,
    activating_an_older_version_rolls_back,
    missing_prompts_and_versions_are_told_apart,
    fifty_concurrent_creates_give_versions_one_to_fifty_with_one_active,
    concurrent_activations_leave_exactly_one_active_version,
    prompts_are_listed_in_creation_order_across_pages,
    prompt_listings_filter_by_prefix_tag_and_time,
    versions_are_listed_newest_first_across_pages,
    updating_a_prompt_changes_only_what_the_patch_names,
    deleting_a_prompt_deletes_its_versions,
    migrations_go_all_the_way_down_and_up_again,
);
