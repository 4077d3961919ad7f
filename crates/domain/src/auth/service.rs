//! Creating, listing, revoking and checking keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::model::{ApiKey, GeneratedKey, KeyDigest, KeyHash, KeyName, Scope, Scopes, prefix_of, same_bytes};
use super::ports::{ApiKeyRepository, KeyError};

/// How long a verified key is trusted without reading it again. A key revoked
/// on another replica stops working there within this time; on this replica,
/// at once.
pub const VERIFIED_FOR: Duration = Duration::from_secs(10);
/// How long a verified key is accepted while the key store is down, unless
/// configured otherwise ([`AuthService::with_outage_grace`]).
pub const DEFAULT_OUTAGE_GRACE: Duration = Duration::from_secs(300);
/// `last_used_at` is written at most this often per key and replica.
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin key from the configuration.
    Bootstrap,
    Key(ApiKey),
}

impl Principal {
    /// Whether this caller may do what needs `needed`, without building
    /// its scopes: this runs on every request.
    #[must_use]
    pub fn allows(&self, needed: Scope) -> bool {
        match self {
            Self::Bootstrap => true,
            Self::Key(k) => k.scopes.allow(needed),
        }
    }

    #[must_use]
    pub fn scopes(&self) -> Scopes {
        match self {
            Self::Bootstrap => Scopes::admin(),
            Self::Key(k) => k.scopes.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this API key is not valid")]
    Invalid,
    #[error("this API key has been revoked")]
    Revoked,
    /// Keys cannot be read now and this one was not verified recently.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

#[derive(Debug, Default)]
struct Memo {
    /// By the key's digest.
    verified: HashMap<KeyDigest, (Instant, ApiKey)>,
    touched: HashMap<Uuid, Instant>,
}

#[derive(Debug)]
pub struct AuthService<R> {
    repo: Arc<R>,
    bootstrap: Option<KeyDigest>,
    memo: Mutex<Memo>,
    verified_for: Duration,
    outage_grace: Duration,
}

impl<R: ApiKeyRepository> AuthService<R> {
    /// `bootstrap_admin_key`: a key accepted with the admin scope as
    /// configured; only its hash is kept.
    pub fn new(repo: Arc<R>, bootstrap_admin_key: Option<&str>) -> Self {
        Self {
            repo,
            bootstrap: bootstrap_admin_key.map(KeyHash::digest),
            memo: Mutex::new(Memo::default()),
            verified_for: VERIFIED_FOR,
            outage_grace: DEFAULT_OUTAGE_GRACE,
        }
    }

    /// How long after its last verification a key is still accepted while
    /// the key store cannot be reached. No revocation can be committed while
    /// the store is down, so this only stretches the window in which a key
    /// revoked on another replica just before the outage still works.
    #[must_use]
    pub fn with_outage_grace(mut self, grace: Duration) -> Self {
        self.outage_grace = grace;
        self
    }

    /// Creates a key from 24 random bytes and returns it with its secret,
    /// which is not kept anywhere.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn create(
        &self,
        name: KeyName,
        scopes: Scopes,
        random: [u8; 24],
        ctx: &crate::audit::Context,
    ) -> Result<(ApiKey, GeneratedKey), KeyError> {
        let generated = GeneratedKey::from_random(random);
        let key = ApiKey {
            id: Uuid::now_v7(),
            name,
            prefix: generated.prefix.clone(),
            scopes,
            created_at: crate::time::now_utc(),
            last_used_at: None,
            revoked_at: None,
        };
        self.repo.insert(&key, &generated.hash, ctx).await?;
        Ok((key, generated))
    }

    /// # Errors
    /// Storage failures.
    pub async fn list(&self) -> Result<Vec<ApiKey>, KeyError> {
        self.repo.list().await
    }

    /// Revokes a key; on this replica it stops working at once.
    ///
    /// # Errors
    /// [`KeyError::NotFound`].
    pub async fn revoke(&self, id: Uuid, ctx: &crate::audit::Context) -> Result<(), KeyError> {
        self.repo.revoke(id, crate::time::now_utc(), ctx).await?;
        if let Ok(mut memo) = self.memo.lock() {
            memo.verified.retain(|_, (_, k)| k.id != id);
        }
        Ok(())
    }

    /// Whether any admin can get in: a configured admin key or a stored key.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn has_a_way_in(&self) -> Result<bool, KeyError> {
        Ok(self.bootstrap.is_some() || self.repo.count_active().await? > 0)
    }

    /// Checks a presented key.
    ///
    /// # Errors
    /// [`AuthError::Invalid`] for an unknown or malformed key,
    /// [`AuthError::Revoked`] for a revoked one.
    pub async fn authenticate(&self, presented: &str) -> Result<Principal, AuthError> {
        let digest = KeyHash::digest(presented);
        if self.bootstrap.as_ref().is_some_and(|b| same_bytes(b, &digest)) {
            return Ok(Principal::Bootstrap);
        }
        let prefix = prefix_of(presented).ok_or(AuthError::Invalid)?;
        let now = Instant::now();
        if let Some(key) = self.memo.lock().ok().and_then(|m| {
            m.verified
                .get(&digest)
                .filter(|(at, _)| now.duration_since(*at) < self.verified_for)
                .map(|(_, k)| k.clone())
        }) {
            self.touch(&key, now).await;
            return Ok(Principal::Key(key));
        }
        let found = match self.repo.find_by_prefix(prefix).await {
            Ok(found) => found,
            Err(KeyError::Unavailable(e)) => {
                // Stale-if-error: a key verified a moment before the outage.
                let grace = self.outage_grace;
                let recent = self.memo.lock().ok().and_then(|m| {
                    m.verified
                        .get(&digest)
                        .filter(|(at, _)| now.duration_since(*at) < grace)
                        .map(|(_, k)| k.clone())
                });
                return recent.map(Principal::Key).ok_or(AuthError::Unavailable(e));
            }
            Err(e) => return Err(AuthError::Unknown(anyhow::Error::new(e))),
        };
        let (key, stored) = found.ok_or(AuthError::Invalid)?;
        if !stored.matches(&KeyHash::from_digest(&digest)) {
            return Err(AuthError::Invalid);
        }
        if key.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if let Ok(mut memo) = self.memo.lock() {
            let keep = self.verified_for.max(self.outage_grace);
            memo.verified.retain(|_, (at, _)| now.duration_since(*at) < keep);
            memo.verified.insert(digest, (now, key.clone()));
        }
        self.touch(&key, now).await;
        Ok(Principal::Key(key))
    }

    /// Keeps `last_used_at` fresh without a write on every request.
    async fn touch(&self, key: &ApiKey, now: Instant) {
        let due = self.memo.lock().is_ok_and(|mut m| {
            let due = m
                .touched
                .get(&key.id)
                .is_none_or(|at| now.duration_since(*at) >= TOUCH_EVERY);
            if due {
                m.touched.insert(key.id, now);
            }
            due
        });
        if due && let Err(e) = self.repo.touch(key.id, crate::time::now_utc()).await {
            let error = format!("{:#}", anyhow::Error::new(e));
            tracing::warn!(key_id = %key.id, %error, "could not record the key's last use");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::model::Scope;
    use super::super::ports::MockApiKeyRepository;
    use super::*;

    fn stored(generated: &GeneratedKey, revoked: bool) -> ApiKey {
        ApiKey {
            id: Uuid::nil(),
            name: KeyName::new("ci").expect("valid"),
            prefix: generated.prefix.clone(),
            scopes: Scopes::parse(&["read".into()]).expect("valid"),
            created_at: crate::time::now_utc(),
            last_used_at: None,
            revoked_at: revoked.then(crate::time::now_utc),
        }
    }

    #[tokio::test]
    async fn the_configured_admin_key_is_accepted_without_storage() {
        let mut repo = MockApiKeyRepository::new();
        repo.expect_find_by_prefix().never();
        let svc = AuthService::new(Arc::new(repo), Some("bootstrap-secret"));
        let who = svc.authenticate("bootstrap-secret").await.expect("accepted");
        assert!(who.scopes().allow(Scope::Admin));
        for scope in [Scope::Read, Scope::Write, Scope::Release, Scope::Admin] {
            assert!(who.allows(scope), "{scope}");
        }
    }

    #[tokio::test]
    async fn a_stored_key_is_checked_once_then_remembered_and_touched_once() {
        let generated = GeneratedKey::from_random([3; 24]);
        let mut repo = MockApiKeyRepository::new();
        let record = (stored(&generated, false), generated.hash.clone());
        repo.expect_find_by_prefix()
            .times(1)
            .returning(move |_| Ok(Some(record.clone())));
        repo.expect_touch().times(1).returning(|_, _| Ok(()));
        let svc = AuthService::new(Arc::new(repo), None);
        for _ in 0..3 {
            let who = svc.authenticate(&generated.secret).await.expect("accepted");
            assert!(who.scopes().allow(Scope::Read));
            assert!(who.allows(Scope::Read));
            assert!(!who.allows(Scope::Write), "a read key cannot write");
        }
    }

    #[tokio::test]
    async fn a_recently_verified_key_is_accepted_while_the_store_is_down_and_others_get_unavailable() {
        let known = GeneratedKey::from_random([7; 24]);
        let unseen = GeneratedKey::from_random([8; 24]);
        let mut repo = MockApiKeyRepository::new();
        let record = (stored(&known, false), known.hash.clone());
        let mut seq = mockall::Sequence::new();
        repo.expect_find_by_prefix()
            .times(1)
            .in_sequence(&mut seq)
            .returning(move |_| Ok(Some(record.clone())));
        repo.expect_find_by_prefix()
            .returning(|_| Err(KeyError::Unavailable(anyhow::anyhow!("connection refused"))));
        repo.expect_touch().returning(|_, _| Ok(()));
        let mut svc = AuthService::new(Arc::new(repo), None);
        // Every lookup goes to the store, as after the memo's short trust.
        svc.verified_for = Duration::ZERO;
        svc.authenticate(&known.secret).await.expect("verified");
        svc.authenticate(&known.secret)
            .await
            .expect("accepted from memory during the outage");
        assert!(matches!(
            svc.authenticate(&unseen.secret).await,
            Err(AuthError::Unavailable(_))
        ));
        let strict = svc.with_outage_grace(Duration::ZERO);
        assert!(matches!(
            strict.authenticate(&known.secret).await,
            Err(AuthError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn wrong_secrets_revoked_keys_and_garbage_are_refused() {
        let generated = GeneratedKey::from_random([5; 24]);
        let other = GeneratedKey::from_random([
            5, 5, 5, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9,
        ]);
        let revoked = GeneratedKey::from_random([6; 24]);
        let mut repo = MockApiKeyRepository::new();
        let (g, r) = (generated.clone(), revoked.clone());
        repo.expect_find_by_prefix().returning(move |prefix| {
            Ok(if prefix == g.prefix {
                Some((stored(&g, false), g.hash.clone()))
            } else if prefix == r.prefix {
                Some((stored(&r, true), r.hash.clone()))
            } else {
                None
            })
        });
        let svc = AuthService::new(Arc::new(repo), None);
        assert!(
            matches!(svc.authenticate(&other.secret).await, Err(AuthError::Invalid)),
            "same prefix, other secret"
        );
        assert!(matches!(
            svc.authenticate(&revoked.secret).await,
            Err(AuthError::Revoked)
        ));
        assert!(matches!(
            svc.authenticate("garbage").await,
            Err(AuthError::Invalid)
        ));
        assert!(matches!(
            svc.authenticate(&GeneratedKey::from_random([1; 24]).secret).await,
            Err(AuthError::Invalid)
        ));
    }
}
