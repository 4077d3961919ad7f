//! `/metrics` in the Prometheus text format, written by hand: a few counters
//! and one histogram do not need a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::dev::ServiceResponse;
use actix_web::{HttpResponse, get, web};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::state::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default, Clone)]
struct Series {
    count: u64,
    sum: f64,
    buckets: [u64; BUCKETS.len()],
}

impl Series {
    fn add(&mut self, other: &Self) {
        self.count += other.count;
        self.sum += other.sum;
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
    }
}

type SeriesMap = BTreeMap<(String, &'static str, u16), Series>;

/// One thread's series. Requests are recorded in the shard of the worker
/// thread that served them, so two workers never write the same memory (a
/// shared map would move its lock and counters between the cores on every
/// request); a scrape adds the shards up.
type Shard = Arc<Mutex<SeriesMap>>;

static NEXT_METRICS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's shard of each [`Metrics`] it has recorded into (one in
    /// a server; several when tests run servers side by side), by id.
    static SHARDS: std::cell::RefCell<Vec<(u64, Shard)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Request counts and latencies per (route pattern, method, status).
///
/// Every label comes from a bounded set, whatever clients send: the route is
/// a registered pattern or `unmatched`, the method one of the standard ones
/// or `other`, the status a three-digit code. Without that, a client
/// inventing methods or paths could grow the exposition without limit.
#[derive(Debug)]
pub struct Metrics {
    id: u64,
    /// Every thread's shard of the series.
    shards: Mutex<Vec<Shard>>,
    /// Requests that panicked or ran over their time limit: answered by the
    /// outermost layer, so not in `series`.
    panics: AtomicU64,
    timeouts: AtomicU64,
    /// What became of the spans received on `/v1/traces`.
    pub spans: SpanCounters,
}

/// Spans received on `/v1/traces`, by what became of them.
#[derive(Debug, Default)]
pub struct SpanCounters {
    /// LLM calls queued as runs.
    pub accepted: AtomicU64,
    /// Spans that are not LLM calls.
    pub ignored: AtomicU64,
    /// LLM calls that could not become runs (in `partialSuccess`).
    pub rejected: AtomicU64,
}

/// The method as a metric label: a standard method, else `other`.
#[must_use]
pub fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            id: NEXT_METRICS.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::default(),
            panics: AtomicU64::default(),
            timeouts: AtomicU64::default(),
            spans: SpanCounters::default(),
        }
    }
}

impl Metrics {
    pub fn count_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count_timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request under its route *pattern* (low cardinality), its
    /// method and status, and the time since `started`.
    pub fn observe_response<B>(&self, res: &ServiceResponse<B>, method: &'static str, started: Instant) {
        // After routing, the pattern is read from the matched resource, not
        // found by matching the path against the routes again.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        self.observe(
            route,
            method,
            res.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }

    fn observe(&self, route: String, method: &'static str, status: u16, seconds: f64) {
        self.in_shard(|series| {
            let s = series.entry((route, method, status)).or_default();
            s.count += 1;
            s.sum += seconds;
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    s.buckets[i] += 1;
                }
            }
        });
    }

    /// Runs `record` on this thread's shard, made and registered on the
    /// thread's first request. Its lock is only ever contended by a scrape.
    fn in_shard(&self, record: impl FnOnce(&mut SeriesMap)) {
        SHARDS.with_borrow_mut(|shards| {
            let shard = if let Some((_, shard)) = shards.iter().find(|(id, _)| *id == self.id) {
                shard
            } else {
                let shard = Shard::default();
                if let Ok(mut all) = self.shards.lock() {
                    all.push(Arc::clone(&shard));
                }
                shards.push((self.id, shard));
                &shards[shards.len() - 1].1
            };
            if let Ok(mut series) = shard.lock() {
                record(&mut series);
            }
        });
    }

    /// The shards added up.
    fn series(&self) -> SeriesMap {
        let mut total = SeriesMap::new();
        let Ok(shards) = self.shards.lock() else {
            return total;
        };
        for shard in shards.iter() {
            let Ok(series) = shard.lock() else { continue };
            for (labels, s) in series.iter() {
                total.entry(labels.clone()).or_default().add(s);
            }
        }
        total
    }

    fn render_requests(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP http_requests_total Requests by route pattern, method and status."
        );
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        let series = self.series();
        for ((route, method, status), s) in series.iter() {
            let _ = writeln!(
                out,
                "http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                s.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP http_request_duration_seconds Request latency by route pattern, method and status."
        );
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for ((route, method, status), s) in series.iter() {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            for (bound, n) in BUCKETS.iter().zip(s.buckets) {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "http_request_duration_seconds_count{{{labels}}} {}", s.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::Method;

    use super::*;

    #[test]
    fn requests_recorded_on_different_threads_are_added_up() {
        let metrics = Arc::new(Metrics::default());
        let other = Metrics::default();
        metrics.observe("/a".to_owned(), "GET", 200, 0.0001);
        other.observe("/a".to_owned(), "GET", 200, 0.0001);
        let on_another_thread = Arc::clone(&metrics);
        std::thread::spawn(move || {
            on_another_thread.observe("/a".to_owned(), "GET", 200, 0.002);
            on_another_thread.observe("/b".to_owned(), "POST", 201, 0.3);
        })
        .join()
        .expect("the thread ran");
        metrics.observe("/a".to_owned(), "GET", 200, 0.0002);
        let series = metrics.series();
        let a = &series[&("/a".to_owned(), "GET", 200)];
        assert_eq!(a.count, 3);
        assert!((a.sum - 0.0023).abs() < 1e-12, "{}", a.sum);
        assert_eq!(a.buckets[..3], [2, 2, 3]);
        assert_eq!(series[&("/b".to_owned(), "POST", 201)].count, 1);
        assert_eq!(series.len(), 2);
        // Another instance on the same threads keeps its own counts.
        assert_eq!(other.series()[&("/a".to_owned(), "GET", 200)].count, 1);
        let mut out = String::new();
        metrics.render_requests(&mut out);
        assert!(
            out.contains("http_requests_total{route=\"/a\",method=\"GET\",status=\"200\"} 3"),
            "{out}"
        );
    }

    #[test]
    fn invented_methods_share_one_label() {
        let invented = Method::from_bytes(b"QWERTYUIOPAS").expect("a token");
        assert_eq!(method_label(&invented), "other");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}

pub fn configure(cfg: &mut ServiceConfig) {
    cfg.service(prometheus);
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
}

/// Prometheus metrics: requests, database pool, run queue and cache.
#[utoipa::path(
    tag = "operations",
    security((), ("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"))
)]
#[get("/metrics")]
async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    let mut out = String::with_capacity(8 * 1024);
    state.metrics.render_requests(&mut out);
    counter(
        &mut out,
        "http_panics_total",
        "Requests whose handler panicked (answered 500).",
        state.metrics.panics.load(Ordering::Relaxed),
    );
    let spans = &state.metrics.spans;
    let _ = writeln!(
        out,
        "# HELP otlp_spans_total Spans received on /v1/traces: LLM calls accepted as runs, rejected, or other spans ignored.\n# TYPE otlp_spans_total counter"
    );
    for (outcome, n) in [
        ("accepted", &spans.accepted),
        ("ignored", &spans.ignored),
        ("rejected", &spans.rejected),
    ] {
        let _ = writeln!(
            out,
            "otlp_spans_total{{outcome=\"{outcome}\"}} {}",
            n.load(Ordering::Relaxed)
        );
    }
    counter(
        &mut out,
        "http_timeouts_total",
        "Requests over server.request_timeout_secs (answered 504).",
        state.metrics.timeouts.load(Ordering::Relaxed),
    );
    let (size, idle) = state.db.pool_usage();
    gauge(
        &mut out,
        "db_pool_connections_in_use",
        "Database connections in use.",
        (size as usize).saturating_sub(idle),
    );
    gauge(
        &mut out,
        "db_pool_connections_idle",
        "Idle database connections.",
        idle,
    );
    gauge(
        &mut out,
        "run_queue_depth",
        "Runs accepted with 202 and not yet written.",
        state.run_queue.depth(),
    );
    let cache = state.cache.counters();
    counter(
        &mut out,
        "cache_hits_total",
        "Version lookups answered by the cache.",
        cache.hits,
    );
    counter(
        &mut out,
        "cache_misses_total",
        "Version lookups that went to the database.",
        cache.misses,
    );
    counter(
        &mut out,
        "cache_redis_errors_total",
        "Cache operations that could not reach Redis.",
        cache.redis_errors,
    );
    counter(
        &mut out,
        "cache_redis_skipped_total",
        "Lookups that skipped Redis because its circuit was open.",
        cache.redis_skipped,
    );
    counter(
        &mut out,
        "cache_stale_served_total",
        "Versions served past their TTL because the database was unreachable.",
        cache.stale_served,
    );
    let writer = state.run_queue.counters();
    counter(
        &mut out,
        "run_writer_retries_total",
        "Background write attempts that found the database unreachable (runs kept and retried).",
        writer.retries.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "run_writer_refused_total",
        "Accepted runs the database refused (logged with their ids, not stored).",
        writer.refused.load(Ordering::Relaxed),
    );
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}
