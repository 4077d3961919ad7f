//! The prompt repository on SeaORM.

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use registry_domain::page::{Page, PageRequest, TimeCursor};
use registry_domain::prompt::ports::PromptRepository;
use registry_domain::prompt::{
    Description, NewPrompt, NewVersion, Prompt, PromptError, PromptFilter, PromptName, PromptPatch,
    PromptVersion, Tags, Template, TemplateKind, VariableSpec, Variables, VersionCursor, VersionNumber,
    VersionSelector,
};
use sea_orm::sea_query::{Cond, Expr, ExprTrait, JoinType, LikeExpr, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, FromQueryResult, TransactionTrait};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::{Db, is_unique_violation};
use crate::schema::{
    ColumnAlias, PromptVersions, Prompts, StoredRow, TableAlias, av, decode, decode_one, get, p, v,
};

/// Prompts and versions stored with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmPromptRepository {
    db: Db,
}

impl SeaOrmPromptRepository {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A prompt as [`prompt_select`] reads it.
#[derive(Debug, FromQueryResult)]
struct PromptRow {
    id: Uuid,
    name: String,
    description: Option<String>,
    tags: Value,
    latest_version: i32,
    active_version: Option<i32>,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

impl StoredRow for PromptRow {
    type Domain = Prompt;

    fn into_domain(self) -> anyhow::Result<Prompt> {
        let tags: Vec<String> =
            serde_json::from_value(self.tags).context("stored tags are not a list of strings")?;
        Ok(Prompt {
            id: self.id,
            name: PromptName::new(&self.name)
                .with_context(|| format!("stored prompt name {:?}", self.name))?,
            description: self
                .description
                .as_deref()
                .map(Description::new)
                .transpose()
                .map_err(|e| anyhow!("{e}"))?,
            tags: Tags::new(tags).map_err(|e| anyhow!("stored tags: {e:?}"))?,
            active_version: self.active_version.map(number).transpose()?,
            latest_version: (self.latest_version > 0)
                .then(|| number(self.latest_version))
                .transpose()?,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn number(n: i32) -> anyhow::Result<VersionNumber> {
    VersionNumber::new(i64::from(n)).with_context(|| format!("stored version number {n}"))
}

/// A version as [`version_select`] reads it.
#[derive(Debug, FromQueryResult)]
struct VersionRow {
    id: Uuid,
    prompt_id: Uuid,
    prompt_name: String,
    version: i32,
    kind: String,
    template: Value,
    variables: Value,
    config: Value,
    is_active: bool,
    commit_message: Option<String>,
    created_at: OffsetDateTime,
}

impl StoredRow for VersionRow {
    type Domain = PromptVersion;

    fn into_domain(self) -> anyhow::Result<PromptVersion> {
        let kind = TemplateKind::parse(&self.kind)
            .with_context(|| format!("stored template kind {:?}", self.kind))?;
        let specs: std::collections::BTreeMap<String, VariableSpec> =
            serde_json::from_value(self.variables).context("stored variables")?;
        let config = match self.config {
            Value::Object(map) => map,
            other => anyhow::bail!("stored config is not an object: {other}"),
        };
        Ok(PromptVersion {
            id: self.id,
            prompt_id: self.prompt_id,
            prompt_name: PromptName::new(&self.prompt_name).context("stored prompt name")?,
            version: number(self.version)?,
            template: Template::parse(Some(kind), &self.template)
                .map_err(|e| anyhow!("stored template: {e:?}"))?,
            variables: Variables::new(specs).map_err(|e| anyhow!("stored variables: {e:?}"))?,
            config,
            is_active: self.is_active,
            commit_message: self.commit_message,
            created_at: self.created_at,
        })
    }
}

fn db_error(err: DbErr) -> PromptError {
    crate::db::classify(err, PromptError::Unavailable, PromptError::Unknown)
}

/// The stored columns of a prompt, as selected and inserted.
const PROMPT_COLUMNS: [Prompts; 7] = [
    Prompts::Id,
    Prompts::Name,
    Prompts::Description,
    Prompts::Tags,
    Prompts::LatestVersion,
    Prompts::CreatedAt,
    Prompts::UpdatedAt,
];

/// `SELECT p.*, av.version AS active_version FROM prompts p LEFT JOIN prompt_versions av …`
fn prompt_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(PROMPT_COLUMNS.map(p))
        .expr_as(Expr::col(av(PromptVersions::Version)), ColumnAlias::ActiveVersion)
        .from_as(Prompts::Table, TableAlias::P)
        .join_as(
            JoinType::LeftJoin,
            PromptVersions::Table,
            TableAlias::Av,
            Cond::all()
                .add(Expr::col(av(PromptVersions::PromptId)).equals(p(Prompts::Id)))
                .add(Expr::col(av(PromptVersions::IsActive)).eq(true)),
        );
    q
}

/// The stored columns of a version, as selected and inserted.
const VERSION_COLUMNS: [PromptVersions; 10] = [
    PromptVersions::Id,
    PromptVersions::PromptId,
    PromptVersions::Version,
    PromptVersions::Kind,
    PromptVersions::Template,
    PromptVersions::Variables,
    PromptVersions::Config,
    PromptVersions::IsActive,
    PromptVersions::CommitMessage,
    PromptVersions::CreatedAt,
];

/// `SELECT v.*, p.name AS prompt_name FROM prompt_versions v JOIN prompts p …`
fn version_select() -> SelectStatement {
    let mut q = Query::select();
    q.columns(VERSION_COLUMNS.map(v))
        .expr_as(Expr::col(p(Prompts::Name)), ColumnAlias::PromptName)
        .from_as(PromptVersions::Table, TableAlias::V)
        .join_as(
            JoinType::InnerJoin,
            Prompts::Table,
            TableAlias::P,
            Expr::col(p(Prompts::Id)).equals(v(PromptVersions::PromptId)),
        );
    q
}

fn tag_condition(backend: DbBackend, tag: &str) -> Expr {
    match backend {
        DbBackend::Postgres => Expr::cust_with_values(
            "p.tags @> $1",
            [Value::Array(vec![Value::String(tag.to_owned())])],
        ),
        // SQLite stores JSON as text; json_each walks the array.
        _ => Expr::cust_with_values(
            "EXISTS (SELECT 1 FROM json_each(p.tags) WHERE json_each.value = ?)",
            [tag.to_owned()],
        ),
    }
}

fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl SeaOrmPromptRepository {
    async fn prompt_exists(&self, name: &PromptName) -> Result<bool, PromptError> {
        let q = Query::select()
            .expr(Expr::val(1))
            .from(Prompts::Table)
            .and_where(Expr::col(Prompts::Name).eq(name.as_str()))
            .to_owned();
        Ok(self.db.conn().query_one(&q).await.map_err(db_error)?.is_some())
    }

    async fn not_found(&self, name: &PromptName, selector: VersionSelector) -> PromptError {
        match self.prompt_exists(name).await {
            Ok(true) => PromptError::VersionNotFound {
                name: name.clone(),
                selector,
            },
            Ok(false) => PromptError::NotFound(name.clone()),
            Err(e) => e,
        }
    }

    /// Bumps the prompt row at the start of a write transaction: the update
    /// locks the row (PostgreSQL) or takes the write lock (SQLite), so every
    /// version change of one prompt is serialised. Returns the prompt's id and
    /// its new latest number, or `None` when there is no such prompt.
    async fn lock_prompt<C: ConnectionTrait>(
        conn: &C,
        name: &PromptName,
        bump_counter: bool,
        now: sea_orm::Value,
    ) -> Result<Option<(Uuid, i32)>, DbErr> {
        let mut q = Query::update();
        q.table(Prompts::Table).value(Prompts::UpdatedAt, now);
        if bump_counter {
            q.value(Prompts::LatestVersion, Expr::col(Prompts::LatestVersion).add(1));
        }
        q.and_where(Expr::col(Prompts::Name).eq(name.as_str()))
            .returning(Query::returning().columns([Prompts::Id, Prompts::LatestVersion]));
        let Some(row) = conn.query_one(&q).await? else {
            return Ok(None);
        };
        Ok(Some((
            get(&row, Prompts::Id)?,
            get(&row, Prompts::LatestVersion)?,
        )))
    }

    async fn deactivate_all<C: ConnectionTrait>(conn: &C, prompt_id: Uuid) -> Result<(), DbErr> {
        let q = Query::update()
            .table(PromptVersions::Table)
            .value(PromptVersions::IsActive, false)
            .and_where(Expr::col(PromptVersions::PromptId).eq(prompt_id))
            .and_where(Expr::col(PromptVersions::IsActive).eq(true))
            .to_owned();
        conn.execute(&q).await?;
        Ok(())
    }

    async fn try_create_version(
        &self,
        name: &PromptName,
        new: &NewVersion,
    ) -> Result<Option<PromptVersion>, DbErr> {
        let now = registry_domain::time::now_utc();
        let txn = self.db.conn().begin().await?;
        let Some((prompt_id, number)) = Self::lock_prompt(&txn, name, true, self.db.time(now)).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        if new.activate() {
            Self::deactivate_all(&txn, prompt_id).await?;
        }
        let id = Uuid::now_v7();
        let template = new.template().to_json();
        let variables = new.variables().to_json();
        let config = Value::Object(new.config().clone());
        let q = Query::insert()
            .into_table(PromptVersions::Table)
            .columns(VERSION_COLUMNS)
            .values_panic([
                id.into(),
                prompt_id.into(),
                number.into(),
                new.template().kind().as_str().into(),
                template.into(),
                variables.into(),
                config.into(),
                new.activate().into(),
                new.commit_message().map(str::to_owned).into(),
                self.db.time(now).into(),
            ])
            .to_owned();
        txn.execute(&q).await?;
        txn.commit().await?;
        let version = VersionNumber::new(i64::from(number)).map_err(|e| DbErr::Custom(e.to_string()))?;
        Ok(Some(PromptVersion {
            id,
            prompt_id,
            prompt_name: name.clone(),
            version,
            template: new.template().clone(),
            variables: new.variables().clone(),
            config: new.config().clone(),
            is_active: new.activate(),
            commit_message: new.commit_message().map(str::to_owned),
            created_at: now,
        }))
    }

    /// Activates `version`: `Ok(None)` when the prompt is missing,
    /// `Ok(Some(false))` when the version is.
    async fn try_activate(&self, name: &PromptName, version: VersionNumber) -> Result<Option<bool>, DbErr> {
        let now = registry_domain::time::now_utc();
        let txn = self.db.conn().begin().await?;
        let Some((prompt_id, _)) = Self::lock_prompt(&txn, name, false, self.db.time(now)).await? else {
            txn.rollback().await?;
            return Ok(None);
        };
        // Deactivate first: the partial unique index allows one active row.
        Self::deactivate_all(&txn, prompt_id).await?;
        let q = Query::update()
            .table(PromptVersions::Table)
            .value(PromptVersions::IsActive, true)
            .and_where(Expr::col(PromptVersions::PromptId).eq(prompt_id))
            .and_where(Expr::col(PromptVersions::Version).eq(version.as_i32()))
            .to_owned();
        if txn.execute(&q).await?.rows_affected() == 0 {
            txn.rollback().await?;
            return Ok(Some(false));
        }
        txn.commit().await?;
        Ok(Some(true))
    }
}

#[async_trait]
impl PromptRepository for SeaOrmPromptRepository {
    async fn create_prompt(&self, new: &NewPrompt) -> Result<Prompt, PromptError> {
        let now = registry_domain::time::now_utc();
        let id = Uuid::now_v7();
        let tags = Value::from(new.tags.as_slice().to_vec());
        let q = Query::insert()
            .into_table(Prompts::Table)
            .columns(PROMPT_COLUMNS)
            .values_panic([
                id.into(),
                new.name.as_str().into(),
                new.description.as_ref().map(|d| d.as_str().to_owned()).into(),
                tags.into(),
                0.into(),
                self.db.time(now).into(),
                self.db.time(now).into(),
            ])
            .to_owned();
        self.db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    PromptError::Duplicate(new.name.clone())
                } else {
                    db_error(e)
                }
            })?;
        Ok(Prompt {
            id,
            name: new.name.clone(),
            description: new.description.clone(),
            tags: new.tags.clone(),
            active_version: None,
            latest_version: None,
            created_at: now,
            updated_at: now,
        })
    }

    async fn list_prompts(
        &self,
        filter: &PromptFilter,
        page: &PageRequest<TimeCursor>,
    ) -> Result<Page<Prompt, TimeCursor>, PromptError> {
        let mut q = prompt_select();
        if let Some(after) = filter.created_after {
            q.and_where(Expr::col(p(Prompts::CreatedAt)).gt(self.db.time(after)));
        }
        if let Some(before) = filter.created_before {
            q.and_where(Expr::col(p(Prompts::CreatedAt)).lt(self.db.time(before)));
        }
        if let Some(prefix) = &filter.name_prefix {
            q.and_where(Expr::col(p(Prompts::Name)).like(LikeExpr::new(escape_like(prefix)).escape('\\')));
        }
        if let Some(tag) = &filter.tag {
            q.and_where(tag_condition(self.db.backend(), tag));
        }
        if let Some(c) = page.after {
            let at = self.db.time(c.created_at);
            q.and_where(
                Expr::tuple([Expr::col(p(Prompts::CreatedAt)), Expr::col(p(Prompts::Id))])
                    .gt(Expr::tuple([Expr::val(at), Expr::val(c.id)])),
            );
        }
        q.order_by(p(Prompts::CreatedAt), Order::Asc)
            .order_by(p(Prompts::Id), Order::Asc)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let prompts = decode::<PromptRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(prompts, page.limit, |p| TimeCursor {
            created_at: p.created_at,
            id: p.id,
        }))
    }

    async fn find_prompt(&self, name: &PromptName) -> Result<Prompt, PromptError> {
        let q = prompt_select()
            .and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        let row = row.ok_or_else(|| PromptError::NotFound(name.clone()))?;
        decode_one::<PromptRow, _>(&row, db_error)
    }

    async fn update_prompt(&self, name: &PromptName, patch: &PromptPatch) -> Result<Prompt, PromptError> {
        let mut q = Query::update();
        q.table(Prompts::Table)
            .value(Prompts::UpdatedAt, self.db.time(registry_domain::time::now_utc()))
            .and_where(Expr::col(Prompts::Name).eq(name.as_str()));
        if let Some(description) = &patch.description {
            q.value(
                Prompts::Description,
                description.as_ref().map(|d| d.as_str().to_owned()),
            );
        }
        if let Some(tags) = &patch.tags {
            q.value(Prompts::Tags, Value::from(tags.as_slice().to_vec()));
        }
        let result = self
            .db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        if result.rows_affected() == 0 {
            return Err(PromptError::NotFound(name.clone()));
        }
        self.find_prompt(name).await
    }

    async fn delete_prompt(&self, name: &PromptName) -> Result<(), PromptError> {
        let q = Query::delete()
            .from_table(Prompts::Table)
            .and_where(Expr::col(Prompts::Name).eq(name.as_str()))
            .to_owned();
        let result = self
            .db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        if result.rows_affected() == 0 {
            return Err(PromptError::NotFound(name.clone()));
        }
        Ok(())
    }

    async fn create_version(
        &self,
        name: &PromptName,
        new: &NewVersion,
    ) -> Result<PromptVersion, PromptError> {
        self.db
            .write(|| self.try_create_version(name, new))
            .await
            .map_err(db_error)?
            .ok_or_else(|| PromptError::NotFound(name.clone()))
    }

    async fn list_versions(
        &self,
        name: &PromptName,
        page: &PageRequest<VersionCursor>,
    ) -> Result<Page<PromptVersion, VersionCursor>, PromptError> {
        let mut q = version_select();
        q.and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()));
        if let Some(VersionCursor(after)) = page.after {
            q.and_where(Expr::col(v(PromptVersions::Version)).lt(after.as_i32()));
        }
        q.order_by(v(PromptVersions::Version), Order::Desc)
            .limit(u64::from(page.limit.get()) + 1);
        let rows = self.db.conn().query_all(&q).await.map_err(db_error)?;
        if rows.is_empty() && !self.prompt_exists(name).await? {
            return Err(PromptError::NotFound(name.clone()));
        }
        let versions = decode::<VersionRow, _>(&rows, db_error)?;
        Ok(Page::from_overfetch(versions, page.limit, |v| {
            VersionCursor(v.version)
        }))
    }

    async fn find_version(
        &self,
        name: &PromptName,
        selector: VersionSelector,
    ) -> Result<PromptVersion, PromptError> {
        let mut q = version_select();
        q.and_where(Expr::col(p(Prompts::Name)).eq(name.as_str()));
        match selector {
            VersionSelector::Active => q.and_where(Expr::col(v(PromptVersions::IsActive)).eq(true)),
            VersionSelector::Latest => {
                q.and_where(Expr::col(v(PromptVersions::Version)).equals(p(Prompts::LatestVersion)))
            }
            VersionSelector::Number(n) => q.and_where(Expr::col(v(PromptVersions::Version)).eq(n.as_i32())),
        };
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        match row {
            Some(row) => decode_one::<VersionRow, _>(&row, db_error),
            None => Err(self.not_found(name, selector).await),
        }
    }

    async fn activate_version(
        &self,
        name: &PromptName,
        version: VersionNumber,
    ) -> Result<PromptVersion, PromptError> {
        match self
            .db
            .write(|| self.try_activate(name, version))
            .await
            .map_err(db_error)?
        {
            None => Err(PromptError::NotFound(name.clone())),
            Some(false) => Err(PromptError::VersionNotFound {
                name: name.clone(),
                selector: VersionSelector::Number(version),
            }),
            Some(true) => self.find_version(name, VersionSelector::Number(version)).await,
        }
    }
}
