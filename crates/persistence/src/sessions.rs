//! Console sessions on SeaORM.

use async_trait::async_trait;
use registry_domain::auth::KeyHash;
use registry_domain::auth::session::{Session, SessionError, SessionRepository, StoredSession};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::db::Db;
use crate::keys::{KeyRow, select as select_key};
use crate::schema::{ApiKeys, ConsoleSessions, StoredRow, decode_one};

/// Console sessions stored with SeaORM.
#[derive(Debug, Clone)]
pub struct SeaOrmSessionRepository {
    db: Db,
}

impl SeaOrmSessionRepository {
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

fn db_error(err: DbErr) -> SessionError {
    crate::db::classify(err, SessionError::Unavailable, SessionError::Unknown)
}

#[derive(Debug, FromQueryResult)]
struct SessionRow {
    id: Uuid,
    key_id: Option<Uuid>,
    created_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    revoked_at: Option<OffsetDateTime>,
}

impl StoredRow for SessionRow {
    type Domain = Session;

    fn into_domain(self) -> anyhow::Result<Session> {
        Ok(Session {
            id: self.id,
            key_id: self.key_id,
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: self.revoked_at,
        })
    }
}

#[async_trait]
impl SessionRepository for SeaOrmSessionRepository {
    async fn insert(&self, session: &Session, token: &KeyHash) -> Result<(), SessionError> {
        let q = Query::insert()
            .into_table(ConsoleSessions::Table)
            .columns([
                ConsoleSessions::Id,
                ConsoleSessions::TokenHash,
                ConsoleSessions::KeyId,
                ConsoleSessions::CreatedAt,
                ConsoleSessions::ExpiresAt,
            ])
            .values_panic([
                session.id.into(),
                token.0.as_str().into(),
                session.key_id.into(),
                self.db.time(session.created_at).into(),
                self.db.time(session.expires_at).into(),
            ])
            .to_owned();
        self.db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn find(&self, token: &KeyHash) -> Result<Option<StoredSession>, SessionError> {
        let q = Query::select()
            .columns([
                ConsoleSessions::Id,
                ConsoleSessions::KeyId,
                ConsoleSessions::CreatedAt,
                ConsoleSessions::ExpiresAt,
                ConsoleSessions::RevokedAt,
            ])
            .from(ConsoleSessions::Table)
            .and_where(Expr::col(ConsoleSessions::TokenHash).eq(token.0.as_str()))
            .to_owned();
        let Some(row) = self.db.conn().query_one(&q).await.map_err(db_error)? else {
            return Ok(None);
        };
        let session = decode_one::<SessionRow, _>(&row, db_error)?;
        let key = match session.key_id {
            None => None,
            Some(id) => {
                let q = select_key().and_where(Expr::col(ApiKeys::Id).eq(id)).to_owned();
                let row = self.db.conn().query_one(&q).await.map_err(db_error)?;
                row.map(|row| decode_one::<KeyRow, _>(&row, db_error))
                    .transpose()?
                    .map(|(key, _)| key)
            }
        };
        Ok(Some(StoredSession { session, key }))
    }

    async fn revoke(&self, id: Uuid, at: OffsetDateTime) -> Result<(), SessionError> {
        let q = Query::update()
            .table(ConsoleSessions::Table)
            .value(ConsoleSessions::RevokedAt, self.db.time(at))
            .and_where(Expr::col(ConsoleSessions::Id).eq(id))
            .and_where(Expr::col(ConsoleSessions::RevokedAt).is_null())
            .to_owned();
        self.db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn delete_expired(&self, before: OffsetDateTime) -> Result<u64, SessionError> {
        let q = Query::delete()
            .from_table(ConsoleSessions::Table)
            .and_where(Expr::col(ConsoleSessions::ExpiresAt).lt(self.db.time(before)))
            .to_owned();
        let done = self
            .db
            .write(|| async { self.db.conn().execute(&q).await })
            .await
            .map_err(db_error)?;
        Ok(done.rows_affected())
    }
}
