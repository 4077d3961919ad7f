//! Webhook delivery: Standard Webhooks signatures, the HTTP attempt with
//! its safety rules, and the dispatcher every replica runs.
//!
//! The dispatcher claims due deliveries per endpoint (never more in flight
//! per endpoint than the configured limit), attempts each, and records the
//! outcome; the repository decides nothing about timing, the domain's
//! [`RetryPolicy`] does. It wakes when the event hub broadcasts (a change
//! committed, so deliveries were created; not while no endpoint is enabled,
//! when none were), when an attempt finishes, when an endpoint is changed or
//! a delivery retried on this replica, and every poll interval (for retries
//! falling due and for other replicas' changes).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt as _;
use hmac::{Hmac, KeyInit as _, Mac as _};
use registry_domain::webhook::{
    Attempt, Claim, EndpointUrl, Next, RetryPolicy, SigningSecret, WebhookError, WebhookRepository as _,
    is_internal,
};
use registry_persistence::SeaOrmWebhookRepository;
use sha2::Sha256;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::hub::EventHub;
use crate::settings::Settings;

/// How attempts are made.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    pub lease: Duration,
    pub poll: Duration,
    pub concurrency: usize,
    pub max_response_bytes: usize,
    pub allow_private: bool,
    pub policy: RetryPolicy,
}

impl DeliveryConfig {
    #[must_use]
    pub fn from_settings(settings: &Settings) -> Self {
        let w = &settings.webhooks;
        Self {
            timeout: Duration::from_millis(w.timeout_ms),
            lease: Duration::from_millis(w.lease_ms),
            poll: Duration::from_millis(w.poll_ms),
            concurrency: w.concurrency,
            max_response_bytes: w.max_response_bytes,
            allow_private: settings.allow_private_targets(),
            policy: RetryPolicy {
                base: Duration::from_millis(w.retry_base_ms),
                max: Duration::from_millis(w.retry_max_ms.max(w.retry_base_ms)),
                give_up_after: Duration::from_secs(w.give_up_after_secs),
                disable_after: Duration::from_secs(w.disable_after_secs),
            },
        }
    }
}

/// A new signing secret: `whsec_` and 24 random bytes in base64.
#[must_use]
pub fn new_secret() -> SigningSecret {
    let key = crate::routes::keys::random_key_bytes();
    SigningSecret::new(format!("whsec_{}", STANDARD.encode(key))).unwrap_or_else(|_| unreachable_secret())
}

#[allow(
    clippy::panic,
    reason = "32 base64 characters after whsec_ are always a valid secret"
)]
fn unreachable_secret() -> SigningSecret {
    panic!("a generated secret was refused")
}

/// The `webhook-signature` value for a message: `v1,` and the base64 of
/// HMAC-SHA256, keyed by the secret's bytes, over `id.timestamp.body`.
#[must_use]
pub fn sign(secret: &SigningSecret, message_id: &str, timestamp: i64, body: &[u8]) -> String {
    let encoded = secret.expose().trim_start_matches("whsec_");
    let key = STANDARD.decode(encoded).unwrap_or_default();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Refuses an endpoint whose host is, or resolves to, an internal address
/// (unless `allow_private`). Checked when an endpoint is saved and again
/// before every attempt, since what a name resolves to can change.
///
/// # Errors
/// `InternalTarget` naming the address, or `InvalidUrl` for a name that
/// does not resolve.
pub async fn check_target(url: &EndpointUrl, allow_private: bool) -> Result<(), WebhookError> {
    if allow_private {
        return Ok(());
    }
    let host = url.host();
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(WebhookError::InternalTarget {
            host: host.to_owned(),
            why: "loopback".into(),
        });
    }
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, url.port()))
            .await
            .map_err(|e| WebhookError::InvalidUrl(format!("`{url}`: the host does not resolve ({e})")))?
            .map(|a| a.ip())
            .collect(),
    };
    match addresses.into_iter().find(|ip| is_internal(*ip)) {
        Some(ip) => Err(WebhookError::InternalTarget {
            host: host.to_owned(),
            why: format!("an internal address ({ip})"),
        }),
        None => Ok(()),
    }
}

/// Makes one attempt: signs, posts, reads at most `max_response_bytes` of
/// the answer. Redirects are not followed (a 3xx is a failure).
pub async fn attempt(claim: &Claim, config: &DeliveryConfig) -> Attempt {
    let at = registry_domain::time::now_utc();
    let started = Instant::now();
    let outcome = send(claim, config).await;
    let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
    match outcome {
        Ok((status, body)) => {
            let error = (!(200..300).contains(&status)).then(|| {
                let text = String::from_utf8_lossy(&body);
                let text: String = text.chars().take(200).collect();
                if (300..400).contains(&status) {
                    format!("HTTP {status}: redirects are not followed")
                } else if text.trim().is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {}", text.trim())
                }
            });
            Attempt {
                at,
                status_code: Some(status),
                latency_ms,
                error,
            }
        }
        Err(error) => Attempt {
            at,
            status_code: None,
            latency_ms,
            error: Some(error),
        },
    }
}

async fn send(claim: &Claim, config: &DeliveryConfig) -> Result<(u16, Vec<u8>), String> {
    check_target(&claim.url, config.allow_private)
        .await
        .map_err(|e| e.to_string())?;
    let body = claim.body.to_string();
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let signature = sign(&claim.secret, &claim.message_id, timestamp, body.as_bytes());
    let client = awc::Client::builder()
        .disable_redirects()
        .timeout(config.timeout)
        .add_default_header((
            "user-agent",
            concat!("prompt-registry/", env!("CARGO_PKG_VERSION")),
        ))
        .finish();
    let exchange = async {
        let mut res = client
            .post(claim.url.as_str())
            .insert_header(("content-type", "application/json"))
            .insert_header(("webhook-id", claim.message_id.as_str()))
            .insert_header(("webhook-timestamp", timestamp.to_string()))
            .insert_header(("webhook-signature", signature))
            .send_body(body)
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = res.status().as_u16();
        let mut kept = Vec::new();
        while let Some(chunk) = res.next().await {
            let Ok(chunk) = chunk else { break };
            let room = config.max_response_bytes.saturating_sub(kept.len());
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if kept.len() >= config.max_response_bytes {
                break;
            }
        }
        Ok((status, kept))
    };
    tokio::time::timeout(config.timeout, exchange)
        .await
        .map_err(|_| format!("no answer within {} ms", config.timeout.as_millis()))?
}

/// A number in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let bits = Uuid::new_v4().as_u128() >> 75; // 53 random bits
    #[allow(clippy::cast_precision_loss, reason = "53 bits fit an f64 exactly")]
    let x = bits as f64 / (1u64 << 53) as f64;
    x
}

/// Attempts a claimed delivery and records what follows.
pub async fn deliver(
    repo: &SeaOrmWebhookRepository,
    owner: Uuid,
    claim: &Claim,
    config: &DeliveryConfig,
) -> Attempt {
    let attempt = attempt(claim, config).await;
    let next = if claim.is_ping() {
        // A test is one attempt: its answer is the point, not its delivery.
        if attempt.succeeded() {
            Next::Done
        } else {
            Next::GiveUp
        }
    } else {
        config
            .policy
            .next(&attempt, claim.attempts + 1, claim.created_at, jitter())
    };
    if let Err(e) = repo.record(claim, owner, &attempt, &next, &config.policy).await {
        // The lease runs out and another attempt follows: at least once.
        tracing::warn!(delivery = %claim.delivery_id, error = %e, "recording a webhook attempt failed");
    }
    match (&next, &attempt.error) {
        (Next::Done, _) => {
            tracing::debug!(delivery = %claim.delivery_id, latency_ms = attempt.latency_ms, "webhook delivered");
        }
        (_, error) => tracing::info!(
            delivery = %claim.delivery_id,
            webhook = %claim.webhook_id,
            error = error.as_deref().unwrap_or_default(),
            ?next,
            "webhook attempt failed"
        ),
    }
    attempt
}

/// The dispatcher of one replica.
#[derive(Debug)]
pub struct Dispatcher {
    repo: Arc<SeaOrmWebhookRepository>,
    config: DeliveryConfig,
    /// This replica's lease owner id.
    owner: Uuid,
}

impl Dispatcher {
    #[must_use]
    pub fn new(repo: Arc<SeaOrmWebhookRepository>, config: DeliveryConfig) -> Self {
        Self {
            repo,
            config,
            owner: Uuid::new_v4(),
        }
    }

    /// Delivers until the process ends. Runs on the current thread's local
    /// task set (the HTTP client is not `Send`): start it with
    /// `actix_web::rt::spawn`.
    pub async fn run(self, hub: Arc<EventHub>) {
        let this = Rc::new(self);
        let in_flight: Rc<RefCell<HashMap<Uuid, usize>>> = Rc::default();
        let finished = Rc::new(Notify::new());
        let mut events = hub.subscribe();
        let changed = this.repo.changed();
        tracing::info!(owner = %this.owner, "webhook dispatcher started");
        // Whether any endpoint is enabled, as last read: a change committed
        // queues deliveries only then, so without one a change is not worth
        // a query. Read again at every poll and after every change of an
        // endpoint made here; one made on another replica is seen here
        // within a poll (and that replica delivers at once meanwhile).
        let mut endpoints = this.endpoints_exist().await;
        let mut look = true;
        loop {
            if look && let Err(e) = this.dispatch_due(&in_flight, &finished).await {
                tracing::warn!(error = %e, "looking for due webhook deliveries failed");
            }
            look = tokio::select! {
                _ = events.recv() => endpoints,
                () = finished.notified() => true,
                () = changed.notified() => {
                    endpoints = this.endpoints_exist().await;
                    true
                }
                () = tokio::time::sleep(this.config.poll) => {
                    endpoints = this.endpoints_exist().await;
                    true
                }
            };
        }
    }

    /// Whether any endpoint is enabled; when that cannot be read, assumed so.
    async fn endpoints_exist(&self) -> bool {
        self.repo.any_enabled().await.unwrap_or(true)
    }

    async fn dispatch_due(
        self: &Rc<Self>,
        in_flight: &Rc<RefCell<HashMap<Uuid, usize>>>,
        finished: &Rc<Notify>,
    ) -> Result<(), WebhookError> {
        for webhook in self.repo.due().await? {
            let busy = in_flight.borrow().get(&webhook).copied().unwrap_or(0);
            let free = self.config.concurrency.saturating_sub(busy);
            if free == 0 {
                continue;
            }
            let limit = u32::try_from(free).unwrap_or(u32::MAX);
            let claims = self
                .repo
                .claim(webhook, self.owner, self.config.lease, limit)
                .await?;
            for claim in claims {
                *in_flight.borrow_mut().entry(webhook).or_default() += 1;
                let (this, in_flight, finished) =
                    (Rc::clone(self), Rc::clone(in_flight), Rc::clone(finished));
                actix_web::rt::spawn(async move {
                    deliver(&this.repo, this.owner, &claim, &this.config).await;
                    if let Some(n) = in_flight.borrow_mut().get_mut(&claim.webhook_id) {
                        *n = n.saturating_sub(1);
                    }
                    finished.notify_one();
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_reference() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = SigningSecret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()).expect("secret");
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn new_secrets_are_whsec_and_differ() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.expose().starts_with("whsec_"));
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(&a.expose()[6..]).expect("base64").len(), 24);
    }

    #[actix_web::test]
    async fn internal_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9/",
            "http://[::1]/",
            "http://10.0.0.8/",
            "http://localhost:8080/",
            "http://169.254.169.254/latest",
        ] {
            let url = EndpointUrl::parse(url).expect("url");
            assert!(
                matches!(
                    check_target(&url, false).await,
                    Err(WebhookError::InternalTarget { .. })
                ),
                "{url}"
            );
            assert!(check_target(&url, true).await.is_ok());
        }
        let public = EndpointUrl::parse("http://93.184.216.34/hook").expect("url");
        assert!(check_target(&public, false).await.is_ok());
    }
}
