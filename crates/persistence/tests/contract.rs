//! The repository contract, run against every storage backend: SQLite
//! always, PostgreSQL when `TEST_DATABASE_URL` is set.

use std::collections::BTreeSet;
use std::sync::Arc;

use registry_domain::audit::Action;
use registry_domain::audit::Context;
use registry_domain::auth::ports::{ApiKeyRepository, KeyError};
use registry_domain::auth::{ApiKey, GeneratedKey, KeyHash, KeyName, Scopes};
use registry_domain::page::{Limit, PageRequest, TimeCursor};
use registry_domain::prompt::ports::{LabelMove, LabelPolicy, PromptRepository};
use registry_domain::prompt::{
    Expected, LabelName, LabelTarget, NewPrompt, NewVersion, PromptError, PromptFilter, PromptName,
    PromptPatch, PromptVersion, Resolution, Tags, Template, Variables, VersionCursor, VersionNumber,
    VersionSelector,
};
use registry_domain::run::ports::{Logged, RunError, RunRepository};
use registry_domain::run::stats::{Bucket, StatsQuery, VersionStats};
use registry_domain::run::{
    Latency, NewRunBuilder, Run, RunCursor, RunFields, RunFilter, RunSort, RunStatus,
};
use registry_persistence::testing::{Backend, TestDatabase};
use registry_persistence::{
    Db, DbOptions, SeaOrmApiKeyRepository, SeaOrmPromptRepository, SeaOrmRunRepository, backend_tests,
};
use sea_orm::{ConnectionTrait as _, DbBackend, Statement};
use serde_json::{Map, Value, json};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

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

fn ctx() -> Context {
    Context::system("contract test")
}

/// The reads and the activation the contract was first written with, in
/// terms of the repository's label operations.
trait Shorthand {
    fn find_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> impl Future<Output = Result<PromptVersion, PromptError>> + Send;

    fn activate_version(
        &self,
        name: &PromptName,
        version: VersionNumber,
    ) -> impl Future<Output = Result<PromptVersion, PromptError>> + Send;
}

impl Shorthand for SeaOrmPromptRepository {
    async fn find_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<PromptVersion, PromptError> {
        match self.resolve(name, selector).await? {
            Resolution::Version(v) => Ok(v.as_ref().clone()),
            Resolution::Split(_) => Err(PromptError::Unknown(anyhow::anyhow!("a split"))),
        }
    }

    async fn activate_version(
        &self,
        name: &PromptName,
        version: VersionNumber,
    ) -> Result<PromptVersion, PromptError> {
        let change = LabelMove {
            label: LabelName::PRODUCTION,
            target: Some(LabelTarget::Version(version)),
            expected: Expected::Anything,
            reason: None,
            action: Action::LabelMoved,
            allow_breaking: false,
        };
        match self
            .move_label(name, &change, &LabelPolicy::default(), &ctx())
            .await
        {
            Err(PromptError::Invalid(_)) => Err(PromptError::VersionNotFound {
                name: name.clone(),
                selector: VersionSelector::Number(version),
            }),
            other => other.map(drop),
        }?;
        self.find_version(name, VersionSelector::Number(version)).await
    }
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
        .create_prompt(&new_prompt("support/triage", &["a", "b"]), &ctx())
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
    repo.create_prompt(&new_prompt("dup", &[]), &ctx())
        .await
        .expect("created");
    let err = repo
        .create_prompt(&new_prompt("dup", &[]), &ctx())
        .await
        .expect_err("duplicate");
    assert!(
        matches!(err, PromptError::Duplicate(ref n) if n.as_str() == "dup"),
        "{err:?}"
    );
}

async fn versions_are_numbered_in_order_and_the_newest_becomes_active(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    let v1 = repo
        .create_version(
            &name("p"),
            &new_version("one", true),
            &LabelPolicy::default(),
            &ctx(),
        )
        .await
        .expect("v1");
    let v2 = repo
        .create_version(
            &name("p"),
            &new_version("two", true),
            &LabelPolicy::default(),
            &ctx(),
        )
        .await
        .expect("v2");
    assert_eq!((v1.version.get(), v2.version.get()), (1, 2));
    let active = repo
        .find_version(&name("p"), VersionSelector::ACTIVE)
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
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    repo.create_version(
        &name("p"),
        &new_version("one", true),
        &LabelPolicy::default(),
        &ctx(),
    )
    .await
    .expect("v1");
    let v2 = repo
        .create_version(
            &name("p"),
            &new_version("two", false),
            &LabelPolicy::default(),
            &ctx(),
        )
        .await
        .expect("v2");
    assert!(!v2.is_active);
    let active = repo
        .find_version(&name("p"), VersionSelector::ACTIVE)
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
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    for text in ["one", "two", "three"] {
        repo.create_version(
            &name("p"),
            &new_version(text, true),
            &LabelPolicy::default(),
            &ctx(),
        )
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
        .find_version(&name("p"), VersionSelector::ACTIVE)
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
        repo.find_version(&missing, VersionSelector::ACTIVE).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.create_version(&missing, &new_version("x", true), &LabelPolicy::default(), &ctx())
            .await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.activate_version(&missing, n(1)).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.delete_prompt(&missing, false, &ctx()).await,
        Err(PromptError::NotFound(_))
    ));
    assert!(matches!(
        repo.update_prompt(&missing, &PromptPatch::default(), &ctx())
            .await,
        Err(PromptError::NotFound(_))
    ));
    repo.create_prompt(&new_prompt("empty", &[]), &ctx())
        .await
        .expect("created");
    for selector in [
        VersionSelector::ACTIVE,
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
    repo.create_prompt(&new_prompt("hot", &[]), &ctx())
        .await
        .expect("created");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let repo = Arc::clone(&repo);
            tokio::spawn(async move {
                repo.create_version(
                    &name("hot"),
                    &new_version(&format!("v{i}"), true),
                    &LabelPolicy::default(),
                    &ctx(),
                )
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
    repo.create_prompt(&new_prompt("flip", &[]), &ctx())
        .await
        .expect("created");
    for i in 0..5 {
        repo.create_version(
            &name("flip"),
            &new_version(&format!("v{i}"), false),
            &LabelPolicy::default(),
            &ctx(),
        )
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

/// Concurrent moves of one label, each to a version of its own: every
/// move is recorded once, from where the move before it left the label, so
/// the history is one chain from creation to where the label points. A
/// move that read the label and lost the race to another must read again
/// rather than record a stale `from` (PostgreSQL moves a label by
/// compare-and-set, without a transaction).
async fn concurrent_moves_of_a_label_record_one_unbroken_chain(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let repo = Arc::new(repo);
    let policy = LabelPolicy::default();
    let count = 24;
    repo.create_prompt(&new_prompt("chain", &[]), &ctx())
        .await
        .expect("created");
    for i in 0..count {
        repo.create_version(
            &name("chain"),
            &new_version(&format!("v{i}"), false),
            &policy,
            &ctx(),
        )
        .await
        .expect("version");
    }
    let canary = LabelName::new("canary").expect("valid");
    let tasks: Vec<_> = (1..=count)
        .map(|i| {
            let repo = Arc::clone(&repo);
            let change = LabelMove {
                label: canary,
                ..move_to(i)
            };
            tokio::spawn(async move {
                repo.move_label(&name("chain"), &change, &LabelPolicy::default(), &ctx())
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task ran").expect("every move succeeds");
    }
    let history = repo
        .label_history(
            &name("chain"),
            canary,
            &PageRequest {
                limit: limit(100),
                after: None,
            },
        )
        .await
        .expect("history")
        .items;
    assert_eq!(history.len(), usize::try_from(count).expect("small"));
    let froms: BTreeSet<_> = history.iter().map(|c| format!("{:?}", c.from)).collect();
    assert_eq!(
        froms.len(),
        history.len(),
        "two moves recorded the same from: {history:?}"
    );
    // Walk the chain from the creation; every entry is visited once.
    let mut at = None;
    for _ in 0..history.len() {
        let next = history
            .iter()
            .find(|c| c.from == at)
            .unwrap_or_else(|| panic!("no move from {at:?}: {history:?}"));
        at.clone_from(&next.to);
    }
    let label = repo
        .find_label(&name("chain"), canary)
        .await
        .expect("read")
        .expect("the label");
    assert_eq!(label.target, at, "the chain ends where the label points");
    assert_eq!(label.revision, u32::try_from(count).expect("small"));
}

async fn prompts_are_listed_in_creation_order_across_pages(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let mut expected = Vec::new();
    for i in 0..7 {
        let p = repo
            .create_prompt(&new_prompt(&format!("p{i}"), &[]), &ctx())
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
        .create_prompt(&new_prompt("team_a/one", &["prod", "x"]), &ctx())
        .await
        .expect("created");
    repo.create_prompt(&new_prompt("teamxa/two", &["dev"]), &ctx())
        .await
        .expect("created");
    let c = repo
        .create_prompt(&new_prompt("team_a/three", &["dev", "prod"]), &ctx())
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
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    for i in 0..5 {
        repo.create_version(
            &name("p"),
            &new_version(&format!("v{i}"), true),
            &LabelPolicy::default(),
            &ctx(),
        )
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
        .create_prompt(&new_prompt("p", &["keep"]), &ctx())
        .await
        .expect("created");
    let patch = PromptPatch {
        description: Some(Some(
            registry_domain::prompt::Description::new("new").expect("valid"),
        )),
        tags: None,
    };
    let updated = repo
        .update_prompt(&name("p"), &patch, &ctx())
        .await
        .expect("updated");
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
            &ctx(),
        )
        .await
        .expect("cleared");
    assert_eq!(cleared.description, None);
    assert!(cleared.tags.as_slice().is_empty());
}

async fn deleting_a_prompt_deletes_its_versions(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    repo.create_version(
        &name("p"),
        &new_version("one", true),
        &LabelPolicy::default(),
        &ctx(),
    )
    .await
    .expect("version");
    repo.delete_prompt(&name("p"), false, &ctx())
        .await
        .expect("deleted");
    assert!(matches!(
        repo.find_prompt(&name("p")).await,
        Err(PromptError::NotFound(_))
    ));
    // A new prompt with the same name starts again at version 1.
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created again");
    let v = repo
        .create_version(
            &name("p"),
            &new_version("again", true),
            &LabelPolicy::default(),
            &ctx(),
        )
        .await
        .expect("version");
    assert_eq!(v.version.get(), 1);
}

/// Rolls back every migration from `name` on, so the schema is as it was
/// before `name`.
async fn down_to_before(db: &registry_persistence::Db, name: &str) {
    use migration::{Migrator, MigratorTrait};
    let all = Migrator::migrations();
    let at = all
        .iter()
        .position(|m| m.name() == name)
        .expect("a known migration");
    let steps = u32::try_from(all.len() - at).expect("few migrations");
    db.migrate_down(Some(steps)).await.expect("down");
}

/// The connection a query runs on: PostgreSQL's backend pid; 0 on SQLite
/// (one file, no pids).
async fn connection_pid(db: &Db) -> i64 {
    let sql = match db.backend() {
        DbBackend::Postgres => "SELECT pg_backend_pid()::bigint AS pid",
        _ => "SELECT 0 AS pid",
    };
    let row = db
        .conn()
        .query_one_raw(Statement::from_string(db.backend(), sql))
        .await
        .expect("query")
        .expect("a row");
    row.try_get::<i64>("", "pid").expect("pid")
}

/// HTTP workers query through pools of their own on PostgreSQL: a thread
/// bound to one (with a runtime of its own, as a worker has) never borrows
/// a connection of the shared pool, even an idle one, and two bound threads
/// never share a connection. On SQLite binding changes nothing.
async fn a_bound_thread_queries_through_a_pool_of_its_own(backend: Backend) {
    let test_db = TestDatabase::new(&backend).await;
    let options = DbOptions {
        thread_pools: 2,
        ..DbOptions::default()
    };
    let db = Db::connect(&test_db.url, &options).await.expect("connect");
    // Three queries; the connections go back to the pool (after sqlx's ping)
    // and sit idle there, ready to be borrowed by mistake.
    let mut shared = BTreeSet::new();
    for _ in 0..3 {
        shared.insert(connection_pid(&db).await);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let bound_thread = || {
        let db = db.clone();
        std::thread::spawn(move || {
            db.bind_thread();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut pids = BTreeSet::new();
                for _ in 0..3 {
                    pids.insert(connection_pid(&db).await);
                }
                pids
            })
        })
        .join()
        .expect("thread")
    };
    let first = bound_thread();
    let second = bound_thread();
    if db.backend() == DbBackend::Postgres {
        assert!(first.is_disjoint(&shared), "{first:?} borrowed from {shared:?}");
        assert!(second.is_disjoint(&shared), "{second:?} borrowed from {shared:?}");
        assert!(first.is_disjoint(&second), "{first:?} and {second:?} share");
    } else {
        assert_eq!(first, shared, "SQLite keeps one shared pool");
        return;
    }
    // Bound from inside its runtime, as an HTTP worker is, a thread's pool
    // opens its first connection before anything is asked of it.
    let db = Db::connect(&test_db.url, &options).await.expect("connect");
    let warmed = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            db.bind_thread();
            let pool = db.conn().get_postgres_connection_pool();
            let expected = registry_persistence::WARM_CONNECTIONS
                .min(usize::try_from(pool.options().get_max_connections()).expect("small"));
            for _ in 0..500 {
                if pool.size() as usize >= expected && pool.num_idle() >= expected {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            (expected, pool.size() as usize, pool.num_idle())
        })
    })
    .join()
    .expect("thread");
    let (expected, opened, idle) = warmed;
    assert!(expected >= 1, "{warmed:?}");
    assert_eq!(
        (opened, idle),
        (expected, expected),
        "opened and idle, none asked for"
    );
}

async fn migrations_go_all_the_way_down_and_up_again(backend: Backend) {
    use migration::{Migrator, MigratorTrait};
    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    assert!(db.pending_migrations().await.expect("status").is_empty());
    db.migrate_down(None).await.expect("down");
    assert_eq!(
        db.pending_migrations().await.expect("status").len(),
        Migrator::migrations().len()
    );
    db.migrate().await.expect("up again");
    let repo = SeaOrmPromptRepository::new(db);
    repo.create_prompt(&new_prompt("after", &[]), &ctx())
        .await
        .expect("schema works");
}

/// The latency migration keeps every stored run's latency, both ways.
async fn the_latency_migration_converts_stored_runs_down_and_up(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};

    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    let prompts = SeaOrmPromptRepository::new(db.clone());
    let prompt = prompts
        .create_prompt(&new_prompt("lat", &[]), &ctx())
        .await
        .expect("created");
    let version = prompts
        .create_version(
            &name("lat"),
            &new_version("t", true),
            &LabelPolicy::default(),
            &ctx(),
        )
        .await
        .expect("version");
    let run = |micros: u64| Run {
        id: Uuid::now_v7(),
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
            label: None,
            trace: None,
        },
        created_at: registry_domain::time::now_utc(),
    };
    let runs = SeaOrmRunRepository::new(db.clone());
    let (fast, slow) = (run(400), run(120_500));
    runs.insert_batch(&[fast.clone(), slow.clone()])
        .await
        .expect("stored");

    down_to_before(&db, "m20261129_000005_run_latency_micros").await;
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

// The run repository.

async fn run_repos(backend: &Backend) -> (TestDatabase, SeaOrmPromptRepository, SeaOrmRunRepository) {
    let (test_db, db) = TestDatabase::migrated(backend).await;
    (
        test_db,
        SeaOrmPromptRepository::new(db.clone()),
        SeaOrmRunRepository::new(db),
    )
}

/// A prompt named `prompt` with `count` versions, oldest first.
async fn versions_of(prompts: &SeaOrmPromptRepository, prompt: &str, count: usize) -> Vec<PromptVersion> {
    prompts
        .create_prompt(&new_prompt(prompt, &[]), &ctx())
        .await
        .expect("created");
    let mut versions = Vec::with_capacity(count);
    for i in 0..count {
        let version = prompts
            .create_version(
                &name(prompt),
                &new_version(&format!("{prompt} {i}"), true),
                &LabelPolicy::default(),
                &ctx(),
            )
            .await
            .expect("version");
        versions.push(version);
    }
    versions
}

/// `minutes` after 2026-05-06 12:00 UTC.
fn at(minutes: i64) -> OffsetDateTime {
    datetime!(2026-05-06 12:00 UTC) + Duration::minutes(minutes)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A successful call that took `latency_ms`.
fn success(latency_ms: f64) -> NewRunBuilder {
    NewRunBuilder {
        status: "success".into(),
        latency_ms,
        ..NewRunBuilder::default()
    }
}

/// A failed call that took `latency_ms`.
fn failure(latency_ms: f64) -> NewRunBuilder {
    NewRunBuilder {
        status: "error".into(),
        ..success(latency_ms)
    }
}

/// A run of `version` logged at `created_at`, as the run service would store it.
fn run(version: &PromptVersion, created_at: OffsetDateTime, reported: NewRunBuilder) -> Run {
    let new = NewRunBuilder {
        prompt: version.prompt_name.to_string(),
        ..reported
    }
    .build()
    .expect("valid run");
    Run {
        id: new.id(),
        prompt_id: version.prompt_id,
        prompt_name: version.prompt_name.clone(),
        version_id: version.id,
        version: version.version,
        fields: new.fields().clone(),
        created_at,
    }
}

/// `run` as a retry with other content would carry it.
fn changed(run: &Run) -> Run {
    Run {
        fields: RunFields {
            latency: Latency::from_micros(run.fields.latency.micros() + 1).expect("in range"),
            model: Some("another-model".into()),
            ..run.fields.clone()
        },
        created_at: run.created_at + Duration::minutes(1),
        ..run.clone()
    }
}

fn first_page(size: i64) -> PageRequest<RunCursor> {
    PageRequest {
        limit: limit(size),
        after: None,
    }
}

/// The ids of every run matching `filter`, newest first.
async fn listed(runs: &SeaOrmRunRepository, filter: RunFilter) -> Vec<Uuid> {
    runs.list(&filter, RunSort::default(), &first_page(100))
        .await
        .expect("listed")
        .items
        .iter()
        .map(|r| r.id)
        .collect()
}

async fn a_logged_run_is_found_with_every_field_as_logged(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let versions = versions_of(&prompts, "p", 1).await;
    let logged = run(
        &versions[0],
        at(0),
        NewRunBuilder {
            input: Some(object(
                json!({"question": "why?", "n": 2, "deep": {"list": [1, "two"]}}),
            )),
            output: Some(json!({"answer": "because", "scores": [0.5, 1]})),
            error: Some("rate limited".into()),
            model: Some("gpt-test".into()),
            prompt_tokens: Some(12),
            completion_tokens: Some(34),
            cost_usd: Some("0.000123456".into()),
            metadata: Some(object(json!({"user": "u-1", "attempt": 3}))),
            tags: Some(vec!["prod".into(), "eu".into()]),
            started_at: Some(at(0) - Duration::microseconds(120_501)),
            ..failure(120.501)
        },
    );
    let outcome = runs.insert(&logged).await.expect("stored");
    assert_eq!(outcome, Logged::Created(logged.clone()));
    let found = runs.find(logged.id).await.expect("found");
    assert_eq!(found, logged);
    assert_eq!(found.fields.latency.micros(), 120_501);
    assert_eq!(found.fields.cost.nanos(), 123_456);
    assert_eq!(found.prompt_name.as_str(), "p");
}

async fn a_repeated_run_id_is_reported_as_existing_and_changes_nothing(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let versions = versions_of(&prompts, "p", 1).await;
    let first = run(&versions[0], at(0), success(10.0));
    runs.insert(&first).await.expect("stored");
    let retry = changed(&first);
    let outcome = runs.insert(&retry).await.expect("answered");
    assert_eq!(outcome, Logged::Existing(first.clone()));
    assert_eq!(runs.find(first.id).await.expect("found"), first);
    assert_eq!(listed(&runs, RunFilter::default()).await, [first.id]);
}

async fn a_batch_stores_its_new_runs_and_reports_the_ids_already_stored(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let versions = versions_of(&prompts, "p", 1).await;
    let stored = run(&versions[0], at(0), success(1.0));
    runs.insert(&stored).await.expect("stored");
    let (a, b) = (
        run(&versions[0], at(1), success(2.0)),
        run(&versions[0], at(2), failure(3.0)),
    );
    let existing = runs
        .insert_batch(&[a.clone(), changed(&stored), b.clone()])
        .await
        .expect("stored");
    assert_eq!(existing, [stored.id]);
    for expected in [&stored, &a, &b] {
        assert_eq!(&runs.find(expected.id).await.expect("found"), expected);
    }
    assert_eq!(
        runs.insert_batch(&[b.clone(), a.clone()])
            .await
            .expect("answered"),
        [b.id, a.id]
    );
    assert!(runs.insert_batch(&[]).await.expect("nothing to do").is_empty());
    assert_eq!(listed(&runs, RunFilter::default()).await, [b.id, a.id, stored.id]);
}

/// The refused run comes after a full INSERT statement's worth of runs, so
/// the batch spans two statements: both must go.
async fn a_batch_with_one_refused_run_stores_none_of_its_runs(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let versions = versions_of(&prompts, "p", 1).await;
    let mut batch: Vec<Run> = (0..1_000)
        .map(|i| run(&versions[0], at(i), success(1.0)))
        .collect();
    batch.push(Run {
        prompt_id: Uuid::now_v7(),
        ..run(&versions[0], at(1_000), success(1.0))
    });
    let err = runs.insert_batch(&batch).await.expect_err("a run of no prompt");
    assert!(matches!(err, RunError::Unknown(_)), "{err:?}");
    assert!(listed(&runs, RunFilter::default()).await.is_empty());
    assert!(matches!(runs.find(batch[0].id).await, Err(RunError::NotFound(_))));
}

async fn a_missing_run_is_not_found(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let versions = versions_of(&prompts, "p", 1).await;
    runs.insert(&run(&versions[0], at(0), success(1.0)))
        .await
        .expect("stored");
    let missing = Uuid::now_v7();
    let err = runs.find(missing).await.expect_err("no such run");
    assert!(matches!(err, RunError::NotFound(id) if id == missing), "{err:?}");
}

async fn runs_are_listed_by_prompt_version_status_model_and_time(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let alpha = versions_of(&prompts, "alpha", 2).await;
    let beta = versions_of(&prompts, "beta", 1).await;
    let model = |m: &str, reported: NewRunBuilder| NewRunBuilder {
        model: Some(m.into()),
        ..reported
    };
    let a1 = run(&alpha[0], at(0), model("m1", success(1.0)));
    let a2 = run(&alpha[0], at(10), model("m2", failure(1.0)));
    let a3 = run(&alpha[1], at(20), model("m1", success(1.0)));
    let a4 = run(&alpha[1], at(30), failure(1.0));
    let b1 = run(&beta[0], at(15), model("m1", success(1.0)));
    runs.insert_batch(&[a1.clone(), a2.clone(), a3.clone(), a4.clone(), b1.clone()])
        .await
        .expect("stored");
    let of_alpha = RunFilter {
        prompt: Some(name("alpha")),
        ..RunFilter::default()
    };
    assert_eq!(
        listed(&runs, RunFilter::default()).await,
        [a4.id, a3.id, b1.id, a2.id, a1.id]
    );
    assert_eq!(
        listed(&runs, of_alpha.clone()).await,
        [a4.id, a3.id, a2.id, a1.id]
    );
    assert_eq!(
        listed(
            &runs,
            RunFilter {
                version: Some(n(2)),
                ..of_alpha.clone()
            }
        )
        .await,
        [a4.id, a3.id]
    );
    assert_eq!(
        listed(
            &runs,
            RunFilter {
                version: Some(n(1)),
                prompt: Some(name("beta")),
                ..RunFilter::default()
            }
        )
        .await,
        [b1.id]
    );
    assert_eq!(
        listed(
            &runs,
            RunFilter {
                status: Some(RunStatus::Error),
                ..RunFilter::default()
            }
        )
        .await,
        [a4.id, a2.id]
    );
    assert_eq!(
        listed(
            &runs,
            RunFilter {
                model: Some("m1".into()),
                ..RunFilter::default()
            }
        )
        .await,
        [a3.id, b1.id, a1.id]
    );
    assert_eq!(
        listed(
            &runs,
            RunFilter {
                status: Some(RunStatus::Success),
                model: Some("m1".into()),
                ..of_alpha
            }
        )
        .await,
        [a3.id, a1.id]
    );
    // `from` is inclusive, `to` exclusive.
    assert_eq!(
        listed(
            &runs,
            RunFilter {
                from: Some(at(10)),
                to: Some(at(20)),
                ..RunFilter::default()
            }
        )
        .await,
        [b1.id, a2.id]
    );
    assert!(
        listed(
            &runs,
            RunFilter {
                prompt: Some(name("gamma")),
                ..RunFilter::default()
            }
        )
        .await
        .is_empty()
    );
}

async fn every_sort_order_pages_through_the_runs_without_skipping_or_repeating(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let p = versions_of(&prompts, "p", 1).await;
    let q = versions_of(&prompts, "q", 1).await;
    // Pairs share a creation time, latencies and costs repeat: ties must be
    // broken by id, and a page boundary may fall inside a tie.
    let shape: [(i64, f64, &str); 11] = [
        (0, 5.0, "0.01"),
        (0, 1.0, "0.002"),
        (1, 3.0, "0.01"),
        (1, 1.0, "0"),
        (2, 5.0, "0.5"),
        (2, 2.5, "0.002"),
        (3, 3.0, "0"),
        (3, 1.0, "0.01"),
        (4, 1.0, "0.002"),
        (4, 7.25, "0"),
        (5, 0.001, "0.01"),
    ];
    let stored: Vec<Run> = shape
        .iter()
        .enumerate()
        .map(|(i, (minute, latency, cost))| {
            let version = if i % 3 == 2 { &q[0] } else { &p[0] };
            run(
                version,
                at(*minute),
                NewRunBuilder {
                    cost_usd: Some((*cost).into()),
                    ..success(*latency)
                },
            )
        })
        .collect();
    runs.insert_batch(&stored).await.expect("stored");
    for order in [
        "created_at",
        "-created_at",
        "latency_ms",
        "-latency_ms",
        "cost",
        "-cost",
    ] {
        let sort = RunSort::parse(order).expect("valid order");
        for prompt in [None, Some(name("p"))] {
            let mut expected: Vec<&Run> = stored
                .iter()
                .filter(|r| prompt.as_ref().is_none_or(|p| *p == r.prompt_name))
                .collect();
            expected.sort_by_key(|r| (sort.key(r), r.id));
            if sort.descending {
                expected.reverse();
            }
            let expected: Vec<Uuid> = expected.iter().map(|r| r.id).collect();
            let filter = RunFilter {
                prompt: prompt.clone(),
                ..RunFilter::default()
            };
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                assert!(seen.len() <= expected.len(), "{order}: pages repeat runs");
                let page = runs
                    .list(
                        &filter,
                        sort,
                        &PageRequest {
                            limit: limit(3),
                            after,
                        },
                    )
                    .await
                    .expect("page");
                assert!(page.items.len() <= 3);
                seen.extend(page.items.iter().map(|r| r.id));
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            assert_eq!(seen, expected, "{order} of {prompt:?}");
        }
    }
}

/// The figures of one version, its latencies rounded to the microsecond
/// so that both backends' floating point compare equal.
fn figures(s: &VersionStats) -> (u32, Option<OffsetDateTime>, u64, u64, [i64; 4], u64, u64, i64) {
    #[allow(clippy::cast_possible_truncation)]
    let us = |ms: f64| (ms * 1_000.0).round() as i64;
    (
        s.version.get(),
        s.bucket,
        s.count,
        s.error_count,
        [
            us(s.latency_p50),
            us(s.latency_p95),
            us(s.latency_p99),
            us(s.latency_max),
        ],
        s.prompt_tokens,
        s.completion_tokens,
        s.cost_total.nanos(),
    )
}

/// How many closed buckets have their figures kept.
async fn kept_buckets(db: &registry_persistence::Db) -> i64 {
    use sea_orm::ConnectionTrait as _;
    let row = db
        .conn()
        .query_one_raw(sea_orm::Statement::from_string(
            db.backend(),
            "SELECT count(*) AS n FROM run_stats_sealed",
        ))
        .await
        .expect("counted")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("n")
}

async fn kept_stats_of_closed_buckets_equal_those_computed_from_the_runs(backend: Backend) {
    let (test_db, prompts, runs) = run_repos(&backend).await;
    let db = test_db.connect().await;
    let p = versions_of(&prompts, "p", 2).await;
    let now = registry_domain::time::now_utc();
    let labelled = |i: i64| NewRunBuilder {
        label: ["production", "staging"]
            .get(usize::try_from(i % 3).expect("small"))
            .map(|l| (*l).to_owned()),
        cost_usd: Some(format!("0.00{}", i % 7)),
        prompt_tokens: Some(i % 50),
        ..if i % 11 == 0 {
            failure(f64::from(u32::try_from(i % 37).expect("small")) + 0.5)
        } else {
            success(f64::from(u32::try_from(i * 7 % 101).expect("small")))
        }
    };
    // Three days of runs, up to a minute ago: closed buckets and open ones.
    let batch: Vec<Run> = (1..400)
        .map(|i| {
            run(
                &p[usize::try_from(i % 2).expect("small")],
                now - Duration::minutes(i * 11),
                labelled(i),
            )
        })
        .collect();
    runs.insert_batch(&batch).await.expect("stored");
    let live = |query: &StatsQuery| {
        // An end makes the stats come from the runs alone.
        StatsQuery {
            to: Some(now + Duration::hours(1)),
            ..query.clone()
        }
    };
    let check = |query: StatsQuery, what: &'static str| {
        let runs = &runs;
        async move {
            let expected = runs.stats(&name("p"), &live(&query)).await.expect("live");
            assert!(!expected.is_empty(), "{what}");
            for pass in ["computed and kept", "from what was kept"] {
                let got = runs.stats(&name("p"), &query).await.expect("stats");
                assert_eq!(got, expected, "{what}, {pass}");
            }
        }
    };
    let queries = [
        (Bucket::Hour, false, "by hour"),
        (Bucket::Hour, true, "by hour and label"),
        (Bucket::Day, false, "by day"),
        (Bucket::Day, true, "by day and label"),
    ];
    // Every grouping over the last three days, from the start of a bucket.
    let check_all = || async {
        for (bucket, by_label, what) in queries {
            let query = StatsQuery {
                from: Some(bucket.start(now - Duration::days(3)).expect("a bucket")),
                to: None,
                bucket,
                version: None,
                label: None,
                by_label,
            };
            check(query, what).await;
        }
    };
    check_all().await;
    let all_kept = kept_buckets(&db).await;
    assert!(all_kept > 72, "the closed buckets are kept");

    // As when buckets close since the last request: the newest are not kept
    // yet; only they are computed, and kept.
    {
        use sea_orm::ConnectionTrait as _;
        use sea_orm::sea_query::ExprTrait as _;
        let newest = sea_orm::sea_query::Query::delete()
            .from_table(sea_orm::sea_query::Alias::new("run_stats_sealed"))
            .and_where(
                sea_orm::sea_query::Expr::col(sea_orm::sea_query::Alias::new("bucket_start"))
                    .gte(db.time(now - Duration::hours(20))),
            )
            .to_owned();
        db.conn().execute(&newest).await.expect("deleted");
    }
    assert!(kept_buckets(&db).await < all_kept);
    check_all().await;
    assert_eq!(kept_buckets(&db).await, all_kept, "kept again");

    // A run logged late into a closed bucket is counted at once.
    let late = run(&p[0], now - Duration::hours(30), success(5000.0));
    runs.insert(&late).await.expect("stored");
    check_all().await;

    // Expired runs deleted: their buckets' kept figures go with them.
    use registry_domain::run::ports::RunRetention as _;
    let deleted = runs
        .delete_expired(now - Duration::hours(36), 10_000)
        .await
        .expect("deleted");
    assert!(deleted > 0);
    check_all().await;
}

async fn stats_sum_up_each_version_of_the_prompt_in_range_and_bucket(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let p = versions_of(&prompts, "p", 2).await;
    let q = versions_of(&prompts, "q", 1).await;
    let day = 24 * 60;
    let counted = |reported: NewRunBuilder| NewRunBuilder {
        prompt_tokens: Some(10),
        completion_tokens: Some(20),
        cost_usd: Some("0.001".into()),
        ..reported
    };
    runs.insert_batch(&[
        run(&p[0], at(0), counted(failure(1.0))),
        run(&p[0], at(1), counted(success(2.0))),
        run(&p[0], at(day), counted(success(3.0))),
        run(&p[0], at(day + 1), counted(success(4.0))),
        run(&p[1], at(5), success(10.0)),
        run(&q[0], at(2), counted(failure(100.0))),
    ])
    .await
    .expect("stored");
    let stats = |query: StatsQuery| {
        let runs = &runs;
        async move {
            let stats = runs.stats(&name("p"), &query).await.expect("stats");
            stats.iter().map(figures).collect::<Vec<_>>()
        }
    };
    let everything = StatsQuery {
        from: None,
        to: None,
        bucket: Bucket::None,
        version: None,
        label: None,
        by_label: false,
    };
    assert_eq!(
        stats(everything.clone()).await,
        [
            (1, None, 4, 1, [2_500, 3_850, 3_970, 4_000], 40, 80, 4_000_000),
            (2, None, 1, 0, [10_000; 4], 0, 0, 0),
        ]
    );
    // `from` is inclusive, `to` exclusive.
    assert_eq!(
        stats(StatsQuery {
            from: Some(at(1)),
            to: Some(at(day + 1)),
            ..everything.clone()
        })
        .await,
        [
            (1, None, 2, 0, [2_500, 2_950, 2_990, 3_000], 20, 40, 2_000_000),
            (2, None, 1, 0, [10_000; 4], 0, 0, 0),
        ]
    );
    let (first_day, second_day) = (
        Some(datetime!(2026-05-06 00:00 UTC)),
        Some(datetime!(2026-05-07 00:00 UTC)),
    );
    assert_eq!(
        stats(StatsQuery {
            bucket: Bucket::Day,
            version: Some(n(1)),
            ..everything.clone()
        })
        .await,
        [
            (
                1,
                first_day,
                2,
                1,
                [1_500, 1_950, 1_990, 2_000],
                20,
                40,
                2_000_000
            ),
            (
                1,
                second_day,
                2,
                0,
                [3_500, 3_950, 3_990, 4_000],
                20,
                40,
                2_000_000
            ),
        ]
    );
    assert!(
        runs.stats(&name("nobody"), &everything)
            .await
            .expect("stats")
            .is_empty()
    );
}

async fn nul_characters_in_input_output_metadata_and_error_round_trip_unchanged(backend: Backend) {
    let (_db, prompts, runs) = run_repos(&backend).await;
    let versions = versions_of(&prompts, "p", 1).await;
    // U+E000 is the escape character: text that looks escaped must survive too.
    let tricky = "a\0b \u{E000}0 \u{E000}\u{E000} \u{E000}";
    let with_nul = |minute| {
        run(
            &versions[0],
            at(minute),
            NewRunBuilder {
                input: Some(object(
                    json!({"k\u{0}": tricky, "list": ["\u{0}", {"\u{E000}0": 1}]}),
                )),
                output: Some(json!(tricky)),
                error: Some(format!("failed: {tricky}")),
                metadata: Some(object(json!({"trace\u{0}": {"\u{0}": "\u{0}"}}))),
                ..failure(1.0)
            },
        )
    };
    let (single, batched) = (with_nul(0), with_nul(1));
    runs.insert(&single).await.expect("stored");
    runs.insert_batch(std::slice::from_ref(&batched))
        .await
        .expect("stored");
    assert_eq!(runs.find(single.id).await.expect("found"), single);
    let page = runs
        .list(&RunFilter::default(), RunSort::default(), &first_page(10))
        .await
        .expect("listed");
    assert_eq!(page.items, [batched, single]);
}

// The API key repository.

async fn key_repo(backend: &Backend) -> (TestDatabase, SeaOrmApiKeyRepository) {
    let (test_db, db) = TestDatabase::migrated(backend).await;
    (test_db, SeaOrmApiKeyRepository::new(db))
}

/// A key generated from `seed`, created at `created_at`, and its hash.
fn api_key(seed: u8, label: &str, created_at: OffsetDateTime) -> (ApiKey, KeyHash) {
    let generated = GeneratedKey::from_random([seed; 24]);
    let key = ApiKey {
        id: Uuid::now_v7(),
        name: KeyName::new(label).expect("valid name"),
        prefix: generated.prefix,
        scopes: Scopes::parse(&["write".into(), "read".into()]).expect("valid scopes"),
        created_at,
        last_used_at: None,
        revoked_at: None,
    };
    (key, generated.hash)
}

async fn sessions_are_found_by_token_hash_with_their_key_and_end_when_revoked_or_expired(backend: Backend) {
    use registry_domain::auth::session::{Session, SessionRepository as _};
    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    let keys = SeaOrmApiKeyRepository::new(db.clone());
    let sessions = registry_persistence::SeaOrmSessionRepository::new(db);
    let (key, hash) = api_key(3, "console", at(0));
    keys.insert(&key, &hash, &ctx()).await.expect("stored");
    let session = |key_id, expires_at| Session {
        id: Uuid::now_v7(),
        key_id,
        created_at: at(0),
        expires_at,
        revoked_at: None,
    };
    let keyed = session(Some(key.id), at(1_000_000_000));
    let admin = session(None, at(1_000_000_000));
    let expired = session(Some(key.id), at(10));
    for (s, token) in [(&keyed, "t1"), (&admin, "t2"), (&expired, "t3")] {
        sessions.insert(s, &KeyHash::of(token)).await.expect("stored");
    }
    let found = sessions
        .find(&KeyHash::of("t1"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(found.session, keyed);
    assert_eq!(found.key, Some(key.clone()));
    let found = sessions
        .find(&KeyHash::of("t2"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!((found.session, found.key), (admin, None));
    assert!(sessions.find(&KeyHash::of("t4")).await.expect("read").is_none());

    keys.revoke(key.id, at(5), &ctx()).await.expect("revoked");
    let found = sessions
        .find(&KeyHash::of("t1"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(
        found.key.and_then(|k| k.revoked_at),
        Some(at(5)),
        "the key's revocation is seen"
    );

    sessions.revoke(keyed.id, at(6)).await.expect("signed out");
    sessions.revoke(keyed.id, at(7)).await.expect("again is fine");
    let found = sessions
        .find(&KeyHash::of("t1"))
        .await
        .expect("read")
        .expect("found");
    assert_eq!(found.session.revoked_at, Some(at(6)));

    assert_eq!(sessions.delete_expired(at(11)).await.expect("deleted"), 1);
    assert!(sessions.find(&KeyHash::of("t3")).await.expect("read").is_none());
    assert!(sessions.find(&KeyHash::of("t1")).await.expect("read").is_some());
}

async fn a_stored_key_is_found_by_its_prefix_with_its_hash(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    let (key, hash) = api_key(1, "ci", at(0));
    let (other, other_hash) = api_key(2, "deploy", at(1));
    keys.insert(&key, &hash, &ctx()).await.expect("stored");
    keys.insert(&other, &other_hash, &ctx()).await.expect("stored");
    assert_eq!(
        keys.find_by_prefix(&key.prefix).await.expect("looked up"),
        Some((key.clone(), hash))
    );
    assert_eq!(
        keys.find_by_prefix(&other.prefix).await.expect("looked up"),
        Some((other, other_hash))
    );
    assert_eq!(keys.find_by_prefix("ffffffff").await.expect("looked up"), None);
}

async fn a_key_whose_prefix_is_taken_is_refused_and_the_first_is_kept(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    let (first, hash) = api_key(1, "first", at(0));
    keys.insert(&first, &hash, &ctx()).await.expect("stored");
    let (second, second_hash) = api_key(1, "second", at(1));
    let err = keys
        .insert(&second, &second_hash, &ctx())
        .await
        .expect_err("prefix taken");
    assert!(matches!(err, KeyError::Unknown(_)), "{err:?}");
    assert_eq!(keys.list().await.expect("listed"), [first]);
}

async fn keys_are_listed_oldest_first_revoked_ones_included(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    // Inserted out of order; two share a creation time and go by id.
    let (late, late_hash) = api_key(1, "late", at(5));
    let (early, early_hash) = api_key(2, "early", at(0));
    let (tied_a, tied_a_hash) = api_key(3, "tied a", at(2));
    let (tied_b, tied_b_hash) = api_key(4, "tied b", at(2));
    for (key, hash) in [
        (&late, &late_hash),
        (&tied_b, &tied_b_hash),
        (&early, &early_hash),
        (&tied_a, &tied_a_hash),
    ] {
        keys.insert(key, hash, &ctx()).await.expect("stored");
    }
    keys.revoke(early.id, at(10), &ctx()).await.expect("revoked");
    let mut expected = vec![early.id, tied_a.id, tied_b.id, late.id];
    expected[1..3].sort();
    let listed = keys.list().await.expect("listed");
    assert_eq!(listed.iter().map(|k| k.id).collect::<Vec<_>>(), expected);
    assert_eq!(listed[0].revoked_at, Some(at(10)));
    assert!(listed[1..].iter().all(|k| k.revoked_at.is_none()));
}

async fn revoking_an_unknown_key_is_not_found(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    let (key, hash) = api_key(1, "ci", at(0));
    keys.insert(&key, &hash, &ctx()).await.expect("stored");
    let missing = Uuid::now_v7();
    let err = keys
        .revoke(missing, at(1), &ctx())
        .await
        .expect_err("no such key");
    assert!(matches!(err, KeyError::NotFound(id) if id == missing), "{err:?}");
    assert_eq!(keys.count_active().await.expect("counted"), 1);
}

async fn revoking_a_key_again_succeeds_and_keeps_the_first_revocation_time(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    let (key, hash) = api_key(1, "ci", at(0));
    keys.insert(&key, &hash, &ctx()).await.expect("stored");
    keys.revoke(key.id, at(1), &ctx()).await.expect("revoked");
    keys.revoke(key.id, at(2), &ctx()).await.expect("revoked again");
    let (found, _) = keys
        .find_by_prefix(&key.prefix)
        .await
        .expect("looked up")
        .expect("still there");
    assert_eq!(found.revoked_at, Some(at(1)));
}

async fn touching_a_key_records_its_latest_use(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    let (key, hash) = api_key(1, "ci", at(0));
    let (other, other_hash) = api_key(2, "idle", at(0));
    keys.insert(&key, &hash, &ctx()).await.expect("stored");
    keys.insert(&other, &other_hash, &ctx()).await.expect("stored");
    let used = at(3) + Duration::microseconds(123_456);
    keys.touch(key.id, at(1)).await.expect("touched");
    keys.touch(key.id, used).await.expect("touched again");
    let last_used = |prefix: String| {
        let keys = &keys;
        async move {
            keys.find_by_prefix(&prefix)
                .await
                .expect("looked up")
                .expect("there")
                .0
                .last_used_at
        }
    };
    assert_eq!(last_used(key.prefix.clone()).await, Some(used));
    assert_eq!(last_used(other.prefix.clone()).await, None);
}

async fn only_keys_not_revoked_are_counted_as_active(backend: Backend) {
    let (_db, keys) = key_repo(&backend).await;
    assert_eq!(keys.count_active().await.expect("counted"), 0);
    let stored: Vec<_> = (1..=3)
        .map(|seed| api_key(seed, "k", at(i64::from(seed))))
        .collect();
    for (key, hash) in &stored {
        keys.insert(key, hash, &ctx()).await.expect("stored");
    }
    assert_eq!(keys.count_active().await.expect("counted"), 3);
    keys.revoke(stored[1].0.id, at(9), &ctx()).await.expect("revoked");
    assert_eq!(keys.count_active().await.expect("counted"), 2);
    keys.revoke(stored[1].0.id, at(10), &ctx())
        .await
        .expect("revoked again");
    assert_eq!(keys.count_active().await.expect("counted"), 2);
}

/// Creates a trigger that refuses every insert into `table`, or drops it.
async fn refuse_inserts(db: &registry_persistence::Db, table: &str, on: bool) {
    use sea_orm::ConnectionTrait;
    let conn = db.conn();
    let postgres = db.backend() == sea_orm::DbBackend::Postgres;
    let sql = match (on, postgres) {
        (true, true) => format!(
            "CREATE OR REPLACE FUNCTION refused_by_test() RETURNS trigger AS $$ \
             BEGIN RAISE EXCEPTION 'refused by the test'; END; $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refused_by_test()"
        ),
        (true, false) => format!(
            "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        ),
        (false, true) => format!("DROP TRIGGER refuse_{table} ON {table}"),
        (false, false) => format!("DROP TRIGGER refuse_{table}"),
    };
    conn.execute_unprepared(&sql).await.expect("trigger");
}

async fn audit_events(db: &registry_persistence::Db) -> Vec<registry_domain::audit::AuditEvent> {
    use registry_domain::audit::{AuditFilter, AuditLog};
    registry_persistence::SeaOrmAuditLog::new(db.clone())
        .list(
            &AuditFilter::default(),
            &PageRequest {
                limit: limit(1000),
                after: None,
            },
        )
        .await
        .expect("audit log")
        .items
}

fn move_to(version: i64) -> LabelMove {
    LabelMove {
        label: LabelName::PRODUCTION,
        target: Some(LabelTarget::Version(n(version))),
        expected: Expected::Anything,
        reason: Some("test".into()),
        action: Action::LabelMoved,
        allow_breaking: false,
    }
}

/// A change and its audit event (and a label move and its history entry)
/// are one transaction: when either insert fails, nothing is changed.
async fn the_labels_of_a_page_of_prompts_are_read_at_once(backend: Backend) {
    let (_db, repo) = repo(&backend).await;
    let policy = LabelPolicy::default();
    let mut ids = Vec::new();
    for (prompt, activate) in [("a", true), ("b", false), ("c", false)] {
        ids.push(
            repo.create_prompt(&new_prompt(prompt, &[]), &ctx())
                .await
                .expect("created")
                .id,
        );
        repo.create_version(&name(prompt), &new_version("t", activate), &policy, &ctx())
            .await
            .expect("v1");
    }
    let staging = LabelMove {
        label: LabelName::new("staging").expect("valid"),
        ..move_to(1)
    };
    repo.move_label(&name("b"), &staging, &policy, &ctx())
        .await
        .expect("moved");
    repo.move_label(&name("a"), &staging, &policy, &ctx())
        .await
        .expect("moved");
    let found = repo.labels_of(&ids).await.expect("read");
    let names = |id| {
        found.get(id).map(|labels: &Vec<registry_domain::prompt::Label>| {
            labels.iter().map(|l| l.name.to_string()).collect::<Vec<_>>()
        })
    };
    assert_eq!(
        names(&ids[0]),
        Some(vec!["production".to_owned(), "staging".to_owned()])
    );
    assert_eq!(names(&ids[1]), Some(vec!["staging".to_owned()]));
    assert_eq!(names(&ids[2]), None, "a prompt without labels is absent");
    assert_eq!(found[&ids[1]][0].target, Some(LabelTarget::Version(n(1))));
    assert!(repo.labels_of(&ids[2..]).await.expect("read").is_empty());
}

async fn a_change_and_its_records_commit_together_or_not_at_all(backend: Backend) {
    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    let repo = SeaOrmPromptRepository::new(db.clone());
    let policy = LabelPolicy::default();
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    repo.create_version(&name("p"), &new_version("one", true), &policy, &ctx())
        .await
        .expect("v1");
    repo.create_version(&name("p"), &new_version("two", false), &policy, &ctx())
        .await
        .expect("v2");
    let recorded = audit_events(&db).await.len();
    assert_eq!(
        recorded, 4,
        "prompt.created, label.moved, version.created, version.created"
    );
    let history = |repo: &SeaOrmPromptRepository| {
        let repo = repo.clone();
        async move {
            repo.label_history(
                &name("p"),
                LabelName::PRODUCTION,
                &PageRequest {
                    limit: limit(100),
                    after: None,
                },
            )
            .await
            .expect("history")
            .items
            .len()
        }
    };

    let events = || async {
        use registry_domain::events::EventLog as _;
        registry_persistence::SeaOrmEventLog::new(db.clone())
            .after(0, 1000)
            .await
            .expect("events")
            .len()
    };
    let published = events().await;
    assert_eq!(
        published, 4,
        "prompt.created, label.moved, version.created, version.created"
    );
    for table in ["audit_events", "label_history", "events"] {
        refuse_inserts(&db, table, true).await;
        let err = repo
            .move_label(&name("p"), &move_to(2), &policy, &ctx())
            .await
            .expect_err("the record cannot be written");
        assert!(matches!(err, PromptError::Unknown(_)), "{table}: {err:?}");
        let label = repo
            .find_label(&name("p"), LabelName::PRODUCTION)
            .await
            .expect("read")
            .expect("label");
        assert_eq!(
            label.target,
            Some(LabelTarget::Version(n(1))),
            "{table}: the move was rolled back"
        );
        assert_eq!(label.revision, 1);
        assert_eq!(
            history(&repo).await,
            1,
            "{table}: no history entry without the move"
        );
        let err = repo
            .create_version(&name("p"), &new_version("three", true), &policy, &ctx())
            .await
            .expect_err("the record cannot be written");
        assert!(matches!(err, PromptError::Unknown(_)));
        refuse_inserts(&db, table, false).await;
        assert_eq!(
            audit_events(&db).await.len(),
            recorded,
            "{table}: no event without its change"
        );
    }
    refuse_inserts(&db, "audit_events", true).await;
    repo.create_prompt(&new_prompt("q", &[]), &ctx())
        .await
        .expect_err("no prompt without its event");
    repo.delete_prompt(&name("p"), false, &ctx())
        .await
        .expect_err("no deletion without its event");
    refuse_inserts(&db, "audit_events", false).await;
    assert!(matches!(
        repo.find_prompt(&name("q")).await,
        Err(PromptError::NotFound(_))
    ));
    assert_eq!(
        repo.find_version(&name("p"), VersionSelector::Latest)
            .await
            .expect("kept")
            .version,
        n(2),
        "the refused version was not stored"
    );

    // With the records writable again, the move and its records land together.
    repo.move_label(&name("p"), &move_to(2), &policy, &ctx())
        .await
        .expect("moved");
    assert_eq!(history(&repo).await, 2);
    let recorded_now = audit_events(&db).await;
    assert_eq!(recorded_now.len(), recorded + 1);
    assert_eq!(recorded_now[0].action, Action::LabelMoved);
    assert_eq!(recorded_now[0].target, "prompt:p#production");
    assert_eq!(recorded_now[0].before, Some(json!({"version": 1})));
    assert_eq!(events().await, published + 1, "the move is published with it");
}

/// Neither log can be changed or emptied, whatever the client.
async fn the_history_and_the_audit_log_refuse_updates_and_deletes(backend: Backend) {
    use sea_orm::ConnectionTrait;
    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    let repo = SeaOrmPromptRepository::new(db.clone());
    repo.create_prompt(&new_prompt("p", &[]), &ctx())
        .await
        .expect("created");
    repo.create_version(
        &name("p"),
        &new_version("one", true),
        &LabelPolicy::default(),
        &ctx(),
    )
    .await
    .expect("v1");
    for sql in [
        "UPDATE label_history SET reason = 'rewritten'",
        "DELETE FROM label_history",
        "UPDATE audit_events SET actor_name = 'someone else'",
        "DELETE FROM audit_events",
    ] {
        let err = db.conn().execute_unprepared(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // Deleting the prompt keeps both.
    repo.delete_prompt(&name("p"), false, &ctx())
        .await
        .expect("deleted");
    assert_eq!(audit_events(&db).await.len(), 4);
}

/// Migration 6 turns each active flag into a `production` label, and back.
async fn the_labels_migration_turns_active_flags_into_production_labels_and_back(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};

    let (_test_db, db) = TestDatabase::migrated(&backend).await;
    let repo = SeaOrmPromptRepository::new(db.clone());
    let policy = LabelPolicy::default();
    for (prompt, versions, active) in [("a", 2, true), ("b", 3, true), ("c", 1, false)] {
        repo.create_prompt(&new_prompt(prompt, &[]), &ctx())
            .await
            .expect("created");
        for i in 1..=versions {
            repo.create_version(
                &name(prompt),
                &new_version(&format!("{i}"), active),
                &policy,
                &ctx(),
            )
            .await
            .expect("version");
        }
    }
    // b's production is a split: down keeps its heaviest arm.
    let split = registry_domain::prompt::Split::new(vec![(2, 70), (3, 30)], "split").expect("valid");
    let change = LabelMove {
        target: Some(LabelTarget::Split(split)),
        ..move_to(1)
    };
    repo.move_label(&name("b"), &change, &policy, &ctx())
        .await
        .expect("split");

    down_to_before(&db, "m20261130_000006_labels_and_audit").await;
    let rows = db
        .conn()
        .query_all_raw(Statement::from_string(
            db.backend(),
            "SELECT p.name, v.version FROM prompt_versions v JOIN prompts p ON p.id = v.prompt_id \
             WHERE v.is_active ORDER BY p.name",
        ))
        .await
        .expect("the active flags are back");
    let active: Vec<(String, i32)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "name").expect("name"),
                r.try_get("", "version").expect("version"),
            )
        })
        .collect();
    assert_eq!(active, [("a".to_owned(), 2), ("b".to_owned(), 2)]);

    db.migrate().await.expect("up again");
    for (prompt, expected) in [("a", Some(2)), ("b", Some(2)), ("c", None)] {
        let label = repo
            .find_label(&name(prompt), LabelName::PRODUCTION)
            .await
            .expect("read");
        assert_eq!(
            label.as_ref().and_then(|l| l.target.clone()),
            expected.map(|v| LabelTarget::Version(n(v))),
            "{prompt}"
        );
        assert!(
            label.is_none_or(|l| !l.protected && l.revision == 1),
            "{prompt}: migrated labels keep their old behaviour"
        );
    }
    assert_eq!(
        repo.find_prompt(&name("a")).await.expect("a").active_version,
        Some(n(2))
    );
    let served = repo
        .find_version(&name("a"), VersionSelector::ACTIVE)
        .await
        .expect("served");
    assert!(served.is_active);
}

/// A UUIDv7 of `t` with random bits, as the service makes run ids.
fn v7_at(t: OffsetDateTime) -> Uuid {
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("after 1970");
    let tail = Uuid::new_v4();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&tail.as_bytes()[6..]);
    uuid::Builder::from_unix_timestamp_millis(ms, &bytes).into_uuid()
}

/// Runs of `version`: three made and stored `days_ago`, one of them with a
/// client's UUIDv4 (the default partition on PostgreSQL), and two made now.
fn aged_runs(version: &PromptVersion, days_ago: i64) -> (Vec<Run>, Vec<Run>) {
    let now = registry_domain::time::now_utc();
    let then = now - Duration::days(days_ago);
    let with_id = |id: Uuid, at: OffsetDateTime| {
        run(
            version,
            at,
            NewRunBuilder {
                id: Some(id),
                ..success(5.0)
            },
        )
    };
    (
        vec![
            with_id(v7_at(then), then),
            with_id(v7_at(then), then),
            with_id(Uuid::new_v4(), then),
        ],
        vec![with_id(v7_at(now), now), with_id(Uuid::new_v4(), now)],
    )
}

async fn partition_count(db: &registry_persistence::Db) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    if db.backend() != sea_orm::DbBackend::Postgres {
        return 0;
    }
    db.conn()
        .query_one_raw(Statement::from_string(
            db.backend(),
            "SELECT count(*) AS n FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
             WHERE p.relname = 'prompt_runs'",
        ))
        .await
        .expect("counted")
        .expect("a row")
        .try_get::<i64>("", "n")
        .expect("a count")
}

async fn expired_runs_go_by_whole_partition_then_in_batches_and_the_rest_stay(backend: Backend) {
    use registry_domain::run::ports::RunRetention;
    use registry_domain::run::retention::Retention;

    let (test_db, prompts, runs) = run_repos(&backend).await;
    let db = test_db.connect().await;
    let version = versions_of(&prompts, "kept", 1).await.remove(0);
    let now = registry_domain::time::now_utc();
    // The months of runs 150 days old exist as partitions, as they would
    // have when those runs were stored.
    runs.prepare(now - Duration::days(150)).await.expect("prepared");
    runs.prepare(now).await.expect("prepared again, harmlessly");
    let before = partition_count(&db).await;
    let (old, new) = aged_runs(&version, 150);
    runs.insert_batch(&[old.clone(), new.clone()].concat())
        .await
        .expect("stored");

    let pruned = Retention::days(90)
        .expect("on")
        .prune(&runs, now)
        .await
        .expect("pruned");
    for r in &old {
        assert!(
            matches!(runs.find(r.id).await, Err(RunError::NotFound(_))),
            "{} expired",
            r.id
        );
    }
    for r in &new {
        assert_eq!(runs.find(r.id).await.expect("kept").id, r.id);
    }
    if db.backend() == sea_orm::DbBackend::Postgres {
        // The two v7 runs went with their month's partition (and the empty
        // months before the cutoff with theirs); the v4 one row by row.
        assert!(pruned.partitions >= 1, "{pruned:?}");
        assert_eq!(pruned.runs, 1, "{pruned:?}");
        assert_eq!(
            partition_count(&db).await,
            before - i64::try_from(pruned.partitions).expect("few")
        );
    } else {
        assert_eq!(pruned.partitions, 0);
        assert_eq!(pruned.runs, 3);
    }
    let again = Retention::days(90)
        .expect("on")
        .prune(&runs, now)
        .await
        .expect("pruned");
    assert_eq!((again.partitions, again.runs), (0, 0), "nothing left to remove");
}

async fn the_partition_migration_keeps_every_run_both_ways(backend: Backend) {
    use sea_orm::{ConnectionTrait, Statement};
    let (test_db, prompts, runs) = run_repos(&backend).await;
    let db = test_db.connect().await;
    let version = versions_of(&prompts, "moved", 1).await.remove(0);
    let (old, new) = aged_runs(&version, 70);
    let all = [old, new].concat();
    runs.insert_batch(&all).await.expect("stored");
    let shape = |db: registry_persistence::Db| async move {
        if db.backend() != sea_orm::DbBackend::Postgres {
            return String::from("sqlite");
        }
        db.conn()
            .query_one_raw(Statement::from_string(
                db.backend(),
                "SELECT relkind::text AS kind FROM pg_class WHERE relname = 'prompt_runs'",
            ))
            .await
            .expect("read")
            .expect("a row")
            .try_get::<String>("", "kind")
            .expect("a kind")
    };
    let partitioned = shape(db.clone()).await;
    down_to_before(&db, "m20261205_000011_partition_runs").await;
    assert_ne!(shape(db.clone()).await, "p", "a plain table again");
    for r in &all {
        assert_eq!(runs.find(r.id).await.expect("kept going down"), *r);
    }
    db.migrate().await.expect("up again");
    assert_eq!(shape(db.clone()).await, partitioned);
    if db.backend() == sea_orm::DbBackend::Postgres {
        assert_eq!(partitioned, "p");
    }
    for r in &all {
        assert_eq!(runs.find(r.id).await.expect("kept going up"), *r);
    }
    // Idempotency holds across partitions: the same ids again store nothing.
    let existing = runs.insert_batch(&all).await.expect("retried");
    assert_eq!(existing.len(), all.len());
}

backend_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    expired_runs_go_by_whole_partition_then_in_batches_and_the_rest_stay,
    the_partition_migration_keeps_every_run_both_ways,
    the_latency_migration_converts_stored_runs_down_and_up,
    the_labels_migration_turns_active_flags_into_production_labels_and_back,
    a_change_and_its_records_commit_together_or_not_at_all,
    the_labels_of_a_page_of_prompts_are_read_at_once,
    kept_stats_of_closed_buckets_equal_those_computed_from_the_runs,
    the_history_and_the_audit_log_refuse_updates_and_deletes,
    a_created_prompt_can_be_found_by_name,
    a_second_prompt_with_the_same_name_is_a_duplicate,
    versions_are_numbered_in_order_and_the_newest_becomes_active,
    a_version_created_without_activation_leaves_the_active_one,
    activating_an_older_version_rolls_back,
    missing_prompts_and_versions_are_told_apart,
    fifty_concurrent_creates_give_versions_one_to_fifty_with_one_active,
    concurrent_activations_leave_exactly_one_active_version,
    concurrent_moves_of_a_label_record_one_unbroken_chain,
    prompts_are_listed_in_creation_order_across_pages,
    prompt_listings_filter_by_prefix_tag_and_time,
    versions_are_listed_newest_first_across_pages,
    updating_a_prompt_changes_only_what_the_patch_names,
    deleting_a_prompt_deletes_its_versions,
    migrations_go_all_the_way_down_and_up_again,
    a_bound_thread_queries_through_a_pool_of_its_own,
    a_logged_run_is_found_with_every_field_as_logged,
    a_repeated_run_id_is_reported_as_existing_and_changes_nothing,
    a_batch_stores_its_new_runs_and_reports_the_ids_already_stored,
    a_batch_with_one_refused_run_stores_none_of_its_runs,
    a_missing_run_is_not_found,
    runs_are_listed_by_prompt_version_status_model_and_time,
    every_sort_order_pages_through_the_runs_without_skipping_or_repeating,
    stats_sum_up_each_version_of_the_prompt_in_range_and_bucket,
    nul_characters_in_input_output_metadata_and_error_round_trip_unchanged,
    a_stored_key_is_found_by_its_prefix_with_its_hash,
    a_key_whose_prefix_is_taken_is_refused_and_the_first_is_kept,
    keys_are_listed_oldest_first_revoked_ones_included,
    revoking_an_unknown_key_is_not_found,
    revoking_a_key_again_succeeds_and_keeps_the_first_revocation_time,
    touching_a_key_records_its_latest_use,
    only_keys_not_revoked_are_counted_as_active,
    sessions_are_found_by_token_hash_with_their_key_and_end_when_revoked_or_expired,
);
