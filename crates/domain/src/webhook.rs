//! Webhooks: endpoints that receive the change events, signed as the
//! Standard Webhooks specification says, at least once, retried with
//! backoff, and switched off when they have failed for too long.
//!
//! A delivery is one event for one endpoint. It is created in the same
//! transaction as its event (so an event committed is an event delivered),
//! claimed by one replica at a time under a lease, and attempted until it
//! succeeds or is given up. Every attempt is kept, with its status code,
//! latency and error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::audit::Context;
use crate::events::{ChangeEvent, EventKind};
use crate::prompt::PromptName;

/// The type of the test event sent by `POST /v1/webhooks/{id}/test`.
pub const PING: &str = "webhook.ping";

/// An endpoint URL: `http` or `https`, with a host, at most 2,048 bytes.
/// Whether the host may be a private address is decided where addresses
/// are resolved (see [`is_internal`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    url: String,
    https: bool,
    host: String,
    port: u16,
}

impl EndpointUrl {
    /// # Errors
    /// A URL that is not absolute `http(s)://host[:port][/path]`, carries
    /// credentials or a fragment, or is too long.
    pub fn parse(url: &str) -> Result<Self, WebhookError> {
        let bad = |why: &str| WebhookError::InvalidUrl(format!("`{url}`: {why}"));
        if url.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        if url.contains('#') {
            return Err(bad("must not have a fragment"));
        }
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(bad("must not carry credentials"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("has no valid host and port"))?;
        let port = port.unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err(bad("port 0"));
        }
        Ok(Self {
            url: url.to_owned(),
            https,
            host,
            port,
        })
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The host as written: a name, an IPv4 address, or an IPv6 address
    /// without its brackets.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    #[must_use]
    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !valid_name {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Whether an address is one a registry must not be made to call unless
/// its operator allows it: loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast or documentation ranges, also when
/// written as an IPv4-mapped IPv6 address.
#[must_use]
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
        || a == 0
        || a >= 240
}

/// Which events an endpoint wants: every kind when `kinds` is empty, and
/// only prompts whose name starts with `prompt_prefix` when it is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub kinds: Vec<EventKind>,
    pub prompt_prefix: Option<String>,
}

impl Subscription {
    #[must_use]
    pub fn wants(&self, kind: EventKind, prompt: &PromptName) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && self
                .prompt_prefix
                .as_deref()
                .is_none_or(|p| prompt.as_str().starts_with(p))
    }
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: Uuid,
    pub url: EndpointUrl,
    pub description: Option<String>,
    pub subscription: Subscription,
    pub enabled: bool,
    /// Set when the dispatcher switched the endpoint off, with why.
    pub disabled: Option<Disabled>,
    /// Since when every attempt has failed (none since the last success).
    pub failing_since: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// Why and when the dispatcher disabled an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disabled {
    pub at: OffsetDateTime,
    pub reason: String,
}

/// A signing secret, `whsec_` and the base64 of its key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(String);

impl SigningSecret {
    /// # Errors
    /// A secret that is not `whsec_` followed by base64.
    pub fn new(secret: String) -> Result<Self, WebhookError> {
        let body = secret.strip_prefix("whsec_").unwrap_or_default();
        let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
        if body.len() < 24 || !body.bytes().all(base64) {
            return Err(WebhookError::Unknown(anyhow::anyhow!("malformed signing secret")));
        }
        Ok(Self(secret))
    }

    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

/// A new endpoint, as a caller asks for it.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: EndpointUrl,
    pub description: Option<String>,
    pub subscription: Subscription,
    pub enabled: bool,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    pub url: Option<EndpointUrl>,
    pub description: Option<Option<String>>,
    pub kinds: Option<Vec<EventKind>>,
    pub prompt_prefix: Option<Option<String>>,
    /// Enabling clears the dispatcher's `disabled` record and the failure streak.
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its first or next attempt.
    Pending,
    Succeeded,
    /// Given up after failing for `give_up_after`.
    Failed,
}

impl DeliveryStatus {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Succeeded, Self::Failed]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

/// One try at delivering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub at: OffsetDateTime,
    /// The endpoint's status code, when it answered.
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    /// Why it failed: a non-2xx answer (with the start of its body), a
    /// timeout, a refused or unresolvable address.
    pub error: Option<String>,
}

impl Attempt {
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.error.is_none() && self.status_code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// One event for one endpoint, with its attempts so far (oldest first).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// The event's type (`webhook.ping` for a test).
    pub kind: String,
    /// The event's sequence number; none for a test.
    pub event_seq: Option<i64>,
    pub status: DeliveryStatus,
    pub next_attempt_at: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    pub delivered_at: Option<OffsetDateTime>,
    pub attempts: Vec<Attempt>,
}

/// A delivery a replica holds the lease on, with what it needs to send it.
#[derive(Debug, Clone)]
pub struct Claim {
    pub delivery_id: Uuid,
    pub webhook_id: Uuid,
    pub url: EndpointUrl,
    pub secret: SigningSecret,
    /// The message id receivers deduplicate on: the same for every attempt.
    pub message_id: String,
    pub body: Value,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at: OffsetDateTime,
}

impl Claim {
    /// Whether this is a test delivery (`POST /v1/webhooks/{id}/test`):
    /// one attempt, outside the endpoint's failure streak.
    #[must_use]
    pub fn is_ping(&self) -> bool {
        self.body["type"] == PING
    }
}

/// The body of a delivery: the Standard Webhooks payload shape.
#[must_use]
pub fn payload(event: &ChangeEvent) -> Value {
    let mut data = json!({
        "seq": event.seq,
        "id": event.id,
        "prompt": event.prompt.as_str(),
    });
    if let (Some(obj), Value::Object(extra)) = (data.as_object_mut(), &event.data) {
        for (k, v) in extra {
            obj.insert(k.clone(), v.clone());
        }
    }
    json!({
        "type": event.kind.as_str(),
        "timestamp": crate::time::rfc3339(event.at),
        "data": data,
    })
}

/// The body of a test delivery.
#[must_use]
pub fn ping_payload(webhook_id: Uuid, at: OffsetDateTime) -> Value {
    json!({
        "type": PING,
        "timestamp": crate::time::rfc3339(at),
        "data": {"webhook_id": webhook_id},
    })
}

/// When to try again, when to give up, when to switch an endpoint off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub give_up_after: Duration,
    pub disable_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            max: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 86_400),
            disable_after: Duration::from_secs(86_400),
        }
    }
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Done,
    RetryAt(OffsetDateTime),
    GiveUp,
}

impl RetryPolicy {
    /// The delay before attempt `attempts + 1` after `attempts` failures:
    /// `base · 2^(attempts−1)`, capped at `max`, then scaled by `jitter` in
    /// [0, 1) to between half and all of it, so endpoints that failed
    /// together are not retried together.
    #[must_use]
    pub fn delay(&self, attempts: u32, jitter: f64) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1 << exp).min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }

    /// What follows an attempt on a delivery created at `created_at`, made
    /// `now`, the `attempts`-th in all.
    #[must_use]
    pub fn next(&self, attempt: &Attempt, attempts: u32, created_at: OffsetDateTime, jitter: f64) -> Next {
        if attempt.succeeded() {
            return Next::Done;
        }
        let at = attempt.at + self.delay(attempts, jitter);
        if at - created_at > self.give_up_after {
            Next::GiveUp
        } else {
            Next::RetryAt(at)
        }
    }

    /// Whether an endpoint failing since `since` should be switched off `now`.
    #[must_use]
    pub fn should_disable(&self, since: OffsetDateTime, now: OffsetDateTime) -> bool {
        now - since >= self.disable_after
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid webhook URL {0}")]
    InvalidUrl(String),
    #[error(
        "the URL's host {host} is {why}: endpoints on internal addresses are refused (webhooks.allow_private_targets)"
    )]
    InternalTarget { host: String, why: String },
    #[error("no webhook {0}")]
    NotFound(Uuid),
    #[error("no delivery {1} for webhook {0}")]
    DeliveryNotFound(Uuid, Uuid),
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// Where webhooks and their deliveries are kept. Deliveries of events are
/// created by the outbox writer, in the transactions of the changes.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait WebhookRepository: Send + Sync + 'static {
    /// # Errors
    /// Storage failures.
    async fn create(
        &self,
        new: &NewWebhook,
        secret: &SigningSecret,
        ctx: &Context,
    ) -> Result<Webhook, WebhookError>;

    /// Every endpoint, oldest first.
    ///
    /// # Errors
    /// Storage failures.
    async fn list(&self) -> Result<Vec<Webhook>, WebhookError>;

    /// # Errors
    /// `NotFound`, or storage failures.
    async fn get(&self, id: Uuid) -> Result<Webhook, WebhookError>;

    /// # Errors
    /// `NotFound`, or storage failures.
    async fn update(&self, id: Uuid, patch: &WebhookPatch, ctx: &Context) -> Result<Webhook, WebhookError>;

    /// Removes the endpoint and its deliveries.
    ///
    /// # Errors
    /// `NotFound`, or storage failures.
    async fn delete(&self, id: Uuid, ctx: &Context) -> Result<(), WebhookError>;

    /// The endpoint's deliveries, newest first, before `before` (a delivery
    /// id), at most `limit`, optionally of one status.
    ///
    /// # Errors
    /// `NotFound`, or storage failures.
    async fn deliveries(
        &self,
        id: Uuid,
        status: Option<DeliveryStatus>,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Delivery>, WebhookError>;

    /// Makes a delivery due now again, whatever its state.
    ///
    /// # Errors
    /// `DeliveryNotFound`, or storage failures.
    async fn retry(&self, id: Uuid, delivery: Uuid) -> Result<Delivery, WebhookError>;

    /// A test delivery for the endpoint, already claimed by `owner`.
    ///
    /// # Errors
    /// `NotFound`, or storage failures.
    async fn ping(&self, id: Uuid, owner: Uuid, lease: Duration) -> Result<Claim, WebhookError>;

    /// Enabled endpoints with deliveries due now.
    ///
    /// # Errors
    /// Storage failures.
    async fn due(&self) -> Result<Vec<Uuid>, WebhookError>;

    /// Claims up to `limit` due deliveries of one endpoint for `owner`,
    /// oldest first, for `lease`; rows another replica is claiming at the
    /// same moment are skipped, never taken twice.
    ///
    /// # Errors
    /// Storage failures.
    async fn claim(
        &self,
        webhook: Uuid,
        owner: Uuid,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Claim>, WebhookError>;

    /// Records an attempt and what follows it. The delivery's state changes
    /// only while `owner` still holds its lease (the attempt is kept
    /// either way). Success clears the endpoint's failure streak; failure
    /// starts it, and disables the endpoint when `policy` says so.
    ///
    /// # Errors
    /// Storage failures.
    async fn record(
        &self,
        claim: &Claim,
        owner: Uuid,
        attempt: &Attempt,
        next: &Next,
        policy: &RetryPolicy,
    ) -> Result<(), WebhookError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        let ok = EndpointUrl::parse("https://hooks.example.com/x?y=1").expect("valid");
        assert_eq!(
            (ok.host(), ok.port(), ok.is_https()),
            ("hooks.example.com", 443, true)
        );
        let v6 = EndpointUrl::parse("http://[::1]:8080/h").expect("valid");
        assert_eq!((v6.host(), v6.port()), ("::1", 8080));
        for bad in [
            "ftp://x/",
            "http://",
            "http:///path",
            "https://user:pw@host/",
            "http://host:99999/",
            "http://host:0/",
            "http://ho st/",
            "http://host/#frag",
            "//host/",
        ] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_internal(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn subscriptions_filter_by_kind_and_prefix() {
        let name = |s: &str| PromptName::new(s).expect("name");
        let all = Subscription::default();
        assert!(all.wants(EventKind::LabelMoved, &name("a")));
        let some = Subscription {
            kinds: vec![EventKind::LabelMoved],
            prompt_prefix: Some("support/".into()),
        };
        assert!(some.wants(EventKind::LabelMoved, &name("support/triage")));
        assert!(!some.wants(EventKind::VersionCreated, &name("support/triage")));
        assert!(!some.wants(EventKind::LabelMoved, &name("sales/triage")));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_gives_up_after_the_limit() {
        let p = RetryPolicy::default();
        assert_eq!(p.delay(1, 1.0), Duration::from_secs(5));
        assert_eq!(p.delay(2, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(3, 0.0), Duration::from_secs(10));
        assert_eq!(p.delay(40, 1.0), Duration::from_secs(3600));
        let created = OffsetDateTime::UNIX_EPOCH;
        let failed = |secs: i64| Attempt {
            at: created + time::Duration::seconds(secs),
            status_code: Some(500),
            latency_ms: 3,
            error: Some("HTTP 500".into()),
        };
        assert!(matches!(p.next(&failed(0), 1, created, 0.5), Next::RetryAt(_)));
        assert_eq!(p.next(&failed(3 * 86_400), 60, created, 0.5), Next::GiveUp);
        let ok = Attempt {
            status_code: Some(204),
            error: None,
            ..failed(1)
        };
        assert_eq!(p.next(&ok, 2, created, 0.5), Next::Done);
        // Retries cover at least a day before giving up.
        let mut at = created;
        let mut n = 0;
        while let Next::RetryAt(next) = p.next(&failed((at - created).whole_seconds()), n + 1, created, 0.0) {
            at = next;
            n += 1;
        }
        assert!(
            at - created >= time::Duration::days(1),
            "gave up after {n} attempts at {at}"
        );
    }

    #[test]
    fn the_payload_carries_the_event_and_its_data() {
        let e = ChangeEvent {
            seq: 7,
            ..ChangeEvent::prompt(EventKind::PromptCreated, &PromptName::new("p").expect("name"))
        };
        let body = payload(&e);
        assert_eq!(body["type"], "prompt.created");
        assert_eq!(body["data"]["seq"], 7);
        assert_eq!(body["data"]["prompt"], "p");
    }
}
