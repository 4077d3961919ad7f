//! The API key repository on SeaORM.

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use registry_domain::audit::{Action, AuditEvent, Context};
use registry_domain::auth::ports::{ApiKeyRepository, KeyError};
use registry_domain::auth::{ApiKey, KeyHash, KeyName, Scopes};
use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, Func, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::append;
use crate::db::{Db, is_unique_violation};
use crate::schema::{ApiKeys, ColumnAlias, StoredRow, decode, decode_one, get};

/// API keys stored with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmApiKeyRepository {
    db: Db,
}

impl SeaOrmApiKeyRepository {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn db_error(err: DbErr) -> KeyError {
    crate::db::classify(err, KeyError::Unavailable, KeyError::Unknown)
}

/// A key as [`select`] reads it.
#[derive(Debug, FromQueryResult)]
pub(crate) struct KeyRow {
    id: Uuid,
    name: String,
    prefix: String,
    key_hash: String,
    scopes: Value,
    created_at: OffsetDateTime,
    last_used_at: Option<OffsetDateTime>,
    revoked_at: Option<OffsetDateTime>,
}

impl StoredRow for KeyRow {
    type Domain = (ApiKey, KeyHash);

    fn into_domain(self) -> anyhow::Result<(ApiKey, KeyHash)> {
        let names: Vec<String> = serde_json::from_value(self.scopes).context("stored scopes")?;
        Ok((
            ApiKey {
                id: self.id,
                name: KeyName::new(&self.name).map_err(|e| anyhow!("stored key name: {e}"))?,
                prefix: self.prefix,
                scopes: Scopes::parse(&names).map_err(|e| anyhow!("stored scopes: {e}"))?,
                created_at: self.created_at,
                last_used_at: self.last_used_at,
                revoked_at: self.revoked_at,
            },
            KeyHash(self.key_hash),
        ))
    }
}

pub(crate) fn select() -> SelectStatement {
    Query::select()
        .columns([
            ApiKeys::Id,
            ApiKeys::Name,
            ApiKeys::Prefix,
            ApiKeys::KeyHash,
            ApiKeys::Scopes,
            ApiKeys::CreatedAt,
            ApiKeys::LastUsedAt,
            ApiKeys::RevokedAt,
        ])
        .from(ApiKeys::Table)
        .to_owned()
}

#[async_trait]
impl ApiKeyRepository for SeaOrmApiKeyRepository {
    async fn insert(&self, key: &ApiKey, hash: &KeyHash, ctx: &Context) -> Result<(), KeyError> {
        let scopes: Vec<&str> = key.scopes.as_slice().iter().map(|s| s.as_str()).collect();
        let q = Query::insert()
            .into_table(ApiKeys::Table)
            .columns([
                ApiKeys::Id,
                ApiKeys::Name,
                ApiKeys::Prefix,
                ApiKeys::KeyHash,
                ApiKeys::Scopes,
                ApiKeys::CreatedAt,
            ])
            .values_panic([
                key.id.into(),
                key.name.as_str().into(),
                key.prefix.as_str().into(),
                hash.0.as_str().into(),
                Value::from(scopes.clone()).into(),
                self.db.time(key.created_at).into(),
            ])
            .to_owned();
        let event = AuditEvent::new(
            ctx,
            Action::KeyCreated,
            format!("key:{}", key.id),
            None,
            Some(json!({"name": key.name.as_str(), "prefix": key.prefix, "scopes": scopes})),
        );
        self.db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                txn.execute(&q).await?;
                append(&txn, &self.db, &event).await?;
                txn.commit().await
            })
            .await
            .map_err(|e| {
                if is_unique_violation(&e) {
                    // 32 random bits of prefix: a collision is rare, and the caller can simply try again.
                    KeyError::Unknown(anyhow!("key prefix collision; create the key again"))
                } else {
                    db_error(e)
                }
            })?;
        Ok(())
    }

    async fn find_by_prefix(&self, prefix: &str) -> Result<Option<(ApiKey, KeyHash)>, KeyError> {
        let q = select()
            .and_where(Expr::col(ApiKeys::Prefix).eq(prefix))
            .to_owned();
        let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
        row.map(|row| decode_one::<KeyRow, _>(&row, db_error)).transpose()
    }

    async fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        let q = select()
            .order_by(ApiKeys::CreatedAt, Order::Asc)
            .order_by(ApiKeys::Id, Order::Asc)
            .to_owned();
        let found = self.db.conn().query_all(&q).await.map_err(db_error)?;
        let keys = decode::<KeyRow, _>(&found, db_error)?;
        Ok(keys.into_iter().map(|(key, _)| key).collect())
    }

    async fn revoke(&self, id: Uuid, at: OffsetDateTime, ctx: &Context) -> Result<(), KeyError> {
        let q = Query::update()
            .table(ApiKeys::Table)
            .value(ApiKeys::RevokedAt, self.db.time(at))
            .and_where(Expr::col(ApiKeys::Id).eq(id))
            .and_where(Expr::col(ApiKeys::RevokedAt).is_null())
            .to_owned();
        let event = AuditEvent::new(ctx, Action::KeyRevoked, format!("key:{id}"), None, None);
        self.db
            .write(|| async {
                let txn = self.db.conn().begin().await?;
                // Revoking again changes nothing, and records nothing.
                if txn.execute(&q).await?.rows_affected() > 0 {
                    append(&txn, &self.db, &event).await?;
                }
                txn.commit().await
            })
            .await
            .map_err(db_error)?;
        let exists = Query::select()
            .expr(Expr::val(1))
            .from(ApiKeys::Table)
            .and_where(Expr::col(ApiKeys::Id).eq(id))
            .to_owned();
        match self.db.conn().query_one(&exists).await.map_err(db_error)? {
            Some(_) => Ok(()),
            None => Err(KeyError::NotFound(id)),
        }
    }

    async fn touch(&self, id: Uuid, at: OffsetDateTime) -> Result<(), KeyError> {
        let q = Query::update()
            .table(ApiKeys::Table)
            .value(ApiKeys::LastUsedAt, self.db.time(at))
            .and_where(Expr::col(ApiKeys::Id).eq(id))
            .to_owned();
        self.db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn count_active(&self) -> Result<u64, KeyError> {
        let q = Query::select()
            .expr_as(Func::count(Expr::col(Asterisk)), ColumnAlias::Count)
            .from(ApiKeys::Table)
            .and_where(Expr::col(ApiKeys::RevokedAt).is_null())
            .to_owned();
        let row = self
            .db
            .conn()
            .query_one(&q)
            .await
            .map_err(db_error)?
            .ok_or_else(|| KeyError::Unknown(anyhow!("no count")))?;
        let n: i64 = get(&row, ColumnAlias::Count).map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
