//! Tells the tests which real services are configured: `postgres_tests` when
//! `TEST_DATABASE_URL` is set, `redis_tests` when `TEST_REDIS_URL` is. A test
//! that needs one that is not configured is then reported as *ignored*, with
//! the reason, in the summary line, instead of passing without running.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    println!("cargo::rustc-check-cfg=cfg(redis_tests)");
    for (var, cfg) in [
        ("TEST_DATABASE_URL", "postgres_tests"),
        ("TEST_REDIS_URL", "redis_tests"),
    ] {
        println!("cargo::rerun-if-env-changed={var}");
        if std::env::var(var).is_ok_and(|v| !v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
