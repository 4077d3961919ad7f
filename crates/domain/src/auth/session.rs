//! Console sessions: a browser signs in with an API key once and then
//! carries a session token, never the key.
//!
//! The token is 32 random bytes; only its SHA-256 is stored. A session is
//! good until it expires, is signed out, or its key is revoked: every use
//! reads the session together with its key, so revoking a key ends its
//! sessions on every replica at once. A form's CSRF token is derived from
//! the session token, so it needs no storage and cannot be guessed without
//! the cookie.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

use super::model::{ApiKey, KeyHash, hex};
use super::service::Principal;

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: Uuid,
    /// The key signed in with; `None` for the configured admin key.
    pub key_id: Option<Uuid>,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
}

/// A session as stored, with the key it was opened with (`None` for the
/// configured admin key, or when that key no longer exists).
#[derive(Debug, Clone)]
pub struct StoredSession {
    pub session: Session,
    pub key: Option<ApiKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session, or it expired, was signed out, or its key was revoked.
    #[error("the session has ended; sign in again")]
    Ended,
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait SessionRepository: Send + Sync + 'static {
    /// Stores a new session under the hash of its token.
    ///
    /// # Errors
    /// Storage failures.
    async fn insert(&self, session: &Session, token: &KeyHash) -> Result<(), SessionError>;
    /// The session whose token has this hash, with its key.
    ///
    /// # Errors
    /// Storage failures.
    async fn find(&self, token: &KeyHash) -> Result<Option<StoredSession>, SessionError>;
    /// Marks a session ended (again is fine).
    ///
    /// # Errors
    /// Storage failures.
    async fn revoke(&self, id: Uuid, at: OffsetDateTime) -> Result<(), SessionError>;
    /// Deletes sessions that expired before `before`; returns how many.
    ///
    /// # Errors
    /// Storage failures.
    async fn delete_expired(&self, before: OffsetDateTime) -> Result<u64, SessionError>;
}

/// A session's secret, as the cookie carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken(..)")
    }
}

impl SessionToken {
    /// A token from 32 random bytes.
    #[must_use]
    pub fn from_random(bytes: [u8; 32]) -> Self {
        Self(format!("prs_{}", hex(&bytes)))
    }

    /// A token as presented; `None` unless it has the token shape.
    #[must_use]
    pub fn parse(presented: &str) -> Option<Self> {
        let hex_part = presented.strip_prefix("prs_")?;
        (hex_part.len() == 64 && hex_part.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(presented.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }

    /// The CSRF token of this session's forms.
    #[must_use]
    pub fn csrf(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(b"prompt-registry console csrf\0");
        digest.update(self.0.as_bytes());
        hex(&digest.finalize())
    }

    /// Whether `presented` is this session's CSRF token (constant time).
    #[must_use]
    pub fn csrf_matches(&self, presented: &str) -> bool {
        KeyHash(self.csrf()).matches(&KeyHash(presented.to_owned()))
    }
}

/// Opening, checking and ending sessions.
#[derive(Debug)]
pub struct SessionService<S> {
    repo: Arc<S>,
    lifetime: Duration,
    /// Whether an admin key is configured: sessions opened with it end when
    /// it is taken out of the configuration.
    bootstrap: bool,
}

impl<S: SessionRepository> SessionService<S> {
    #[must_use]
    pub fn new(repo: Arc<S>, lifetime: Duration, bootstrap: bool) -> Self {
        Self {
            repo,
            lifetime,
            bootstrap,
        }
    }

    #[must_use]
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Opens a session for a principal that has just been authenticated.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn open(
        &self,
        who: &Principal,
        random: [u8; 32],
    ) -> Result<(Session, SessionToken), SessionError> {
        let now = crate::time::now_utc();
        // Expired sessions are of no use to anyone; sign-ins are rare
        // enough to tidy up after.
        if let Err(e) = self.repo.delete_expired(now).await {
            tracing::warn!(error = %e, "could not delete expired sessions");
        }
        let token = SessionToken::from_random(random);
        let session = Session {
            id: Uuid::now_v7(),
            key_id: match who {
                Principal::Bootstrap => None,
                Principal::Key(k) => Some(k.id),
            },
            created_at: now,
            expires_at: now + self.lifetime,
            revoked_at: None,
        };
        self.repo.insert(&session, &token.hash()).await?;
        Ok((session, token))
    }

    /// Who a session token stands for, if the session is still good.
    ///
    /// # Errors
    /// [`SessionError::Ended`] for an unknown, expired or signed-out session,
    /// or one whose key was revoked.
    pub async fn principal(&self, token: &SessionToken) -> Result<(Session, Principal), SessionError> {
        let stored = self.repo.find(&token.hash()).await?.ok_or(SessionError::Ended)?;
        let session = stored.session;
        if session.revoked_at.is_some() || session.expires_at <= crate::time::now_utc() {
            return Err(SessionError::Ended);
        }
        let principal = match (session.key_id, stored.key) {
            (None, _) if self.bootstrap => Principal::Bootstrap,
            (Some(_), Some(key)) if key.revoked_at.is_none() => Principal::Key(key),
            _ => return Err(SessionError::Ended),
        };
        Ok((session, principal))
    }

    /// Ends a session.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn close(&self, session: &Session) -> Result<(), SessionError> {
        self.repo.revoke(session.id, crate::time::now_utc()).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::{GeneratedKey, KeyName, Scopes};
    use super::*;

    fn key(revoked: bool) -> ApiKey {
        ApiKey {
            id: Uuid::from_u128(7),
            name: KeyName::new("console").expect("valid"),
            prefix: GeneratedKey::from_random([1; 24]).prefix,
            scopes: Scopes::parse(&["read".into()]).expect("valid"),
            created_at: crate::time::now_utc(),
            last_used_at: None,
            revoked_at: revoked.then(crate::time::now_utc),
        }
    }

    fn stored(session: &Session, key: Option<ApiKey>) -> StoredSession {
        StoredSession {
            session: session.clone(),
            key,
        }
    }

    #[test]
    fn tokens_have_one_shape_and_their_csrf_tokens_differ() {
        let a = SessionToken::from_random([1; 32]);
        let b = SessionToken::from_random([2; 32]);
        assert_eq!(SessionToken::parse(a.as_str()), Some(a.clone()));
        assert_eq!(SessionToken::parse("prs_zz"), None);
        assert_eq!(SessionToken::parse(&a.as_str().to_uppercase()), None);
        assert_ne!(a.csrf(), b.csrf());
        assert!(a.csrf_matches(&a.csrf()));
        assert!(!a.csrf_matches(&b.csrf()));
        assert!(!a.csrf_matches(""));
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[tokio::test]
    async fn a_session_stands_for_its_key_until_the_key_is_revoked() {
        let mut repo = MockSessionRepository::new();
        repo.expect_delete_expired().returning(|_| Ok(0));
        let inserted = Arc::new(std::sync::Mutex::new(None));
        let seen = Arc::clone(&inserted);
        repo.expect_insert().times(1).returning(move |s, h| {
            *seen.lock().expect("lock") = Some((s.clone(), h.clone()));
            Ok(())
        });
        let svc_repo = Arc::new(repo);
        let svc = SessionService::new(Arc::clone(&svc_repo), Duration::from_secs(60), false);
        let (session, token) = svc
            .open(&Principal::Key(key(false)), [9; 32])
            .await
            .expect("opened");
        let (stored_session, hash) = inserted.lock().expect("lock").clone().expect("inserted");
        assert_eq!(stored_session, session);
        assert!(
            hash.matches(&KeyHash::of(token.as_str())),
            "only the token's hash is stored"
        );
        assert_eq!(session.key_id, Some(Uuid::from_u128(7)));

        for (key, good) in [(Some(key(false)), true), (Some(key(true)), false), (None, false)] {
            let mut repo = MockSessionRepository::new();
            let record = stored(&session, key);
            repo.expect_find().returning(move |_| Ok(Some(record.clone())));
            let svc = SessionService::new(Arc::new(repo), Duration::from_secs(60), true);
            assert_eq!(svc.principal(&token).await.is_ok(), good);
        }
    }

    #[tokio::test]
    async fn expired_signed_out_and_unknown_sessions_have_ended() {
        let now = crate::time::now_utc();
        let live = Session {
            id: Uuid::from_u128(1),
            key_id: None,
            created_at: now,
            expires_at: now + Duration::from_secs(60),
            revoked_at: None,
        };
        let expired = Session {
            expires_at: now - Duration::from_secs(1),
            ..live.clone()
        };
        let signed_out = Session {
            revoked_at: Some(now),
            ..live.clone()
        };
        let token = SessionToken::from_random([3; 32]);
        let cases = [
            (Some(live.clone()), true, true),
            (Some(live), false, false),
            (Some(expired), true, false),
            (Some(signed_out), true, false),
            (None, true, false),
        ];
        for (session, bootstrap, good) in cases {
            let mut repo = MockSessionRepository::new();
            let record = session.map(|s| stored(&s, None));
            repo.expect_find().returning(move |_| Ok(record.clone()));
            let svc = SessionService::new(Arc::new(repo), Duration::from_secs(60), bootstrap);
            let got = svc.principal(&token).await;
            assert_eq!(got.is_ok(), good, "{got:?}");
            if let Ok((_, who)) = got {
                assert_eq!(who, Principal::Bootstrap);
            }
        }
    }
}
