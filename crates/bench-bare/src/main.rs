//! The framework's own ceiling for scripts/bench_fetch.py: a single actix-web
//! route with no middleware, no logging and no state, answering
//! `GET /v1/prompts/{name}/versions/active` with the bytes of a file (one real
//! answer of the server, captured by the script). The gap between this and the
//! server's cached fetch is what the registry itself costs per request.
//!
//! Part of the benchmark's tooling, not of the product: built with the same
//! release profile, never deployed.
//!
//! ```sh
//! bench-bare 18599 /tmp/active.json
//! ```

use std::io;

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next() {
        Some(port) => port
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        None => 18599,
    };
    let path = args
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "usage: bench-bare PORT FILE"))?;
    let body = web::Bytes::from(std::fs::read(path)?);
    // Workers left at actix-web's default, one per core: the server's own
    // default (`server.workers = 0`), which the benchmark does not change.
    HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/v1/prompts/{name}/versions/active",
            web::get().to(move || {
                let body = body.clone();
                async move { HttpResponse::Ok().content_type("application/json").body(body) }
            }),
        )
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
