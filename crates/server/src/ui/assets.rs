//! The console's scripts and styles, compiled into the binary and served
//! under a content hash (`/ui/assets/<hash>/<file>`), so they can be cached
//! for a year and a new build is never served an old file. Each is also
//! kept gzip-compressed, for browsers that accept it.

use std::io::Write as _;
use std::sync::LazyLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest as _, Sha256};

struct Source {
    file: &'static str,
    mime: &'static str,
    bytes: &'static [u8],
}

/// Every asset. The vendored libraries keep their version in their name;
/// their licences are beside them in `assets/vendor/`.
const SOURCES: [Source; 5] = [
    Source {
        file: "console.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/console.css"),
    },
    Source {
        file: "console.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/console.js"),
    },
    Source {
        file: "htmx-4.0.1.min.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/vendor/htmx-4.0.1.min.js"),
    },
    Source {
        file: "uPlot-1.6.32.iife.min.js",
        mime: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../assets/vendor/uPlot-1.6.32.iife.min.js"),
    },
    Source {
        file: "uPlot-1.6.32.min.css",
        mime: "text/css; charset=utf-8",
        bytes: include_bytes!("../../assets/vendor/uPlot-1.6.32.min.css"),
    },
];

struct Asset {
    source: &'static Source,
    hash: String,
    gzip: Vec<u8>,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|source| {
            let digest = Sha256::digest(source.bytes);
            let hash = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let gzip = encoder
                .write_all(source.bytes)
                .and_then(|()| encoder.finish())
                .unwrap_or_default();
            Asset { source, hash, gzip }
        })
        .collect()
});

/// Where each asset is served, for the templates.
#[derive(Debug)]
pub struct AssetUrls {
    pub css: String,
    pub js: String,
    pub htmx: String,
    pub uplot_js: String,
    pub uplot_css: String,
}

static URLS: LazyLock<AssetUrls> = LazyLock::new(|| {
    let url = |file: &str| {
        ASSETS
            .iter()
            .find(|a| a.source.file == file)
            .map(|a| format!("/ui/assets/{}/{}", a.hash, a.source.file))
            .unwrap_or_default()
    };
    AssetUrls {
        css: url("console.css"),
        js: url("console.js"),
        htmx: url("htmx-4.0.1.min.js"),
        uplot_js: url("uPlot-1.6.32.iife.min.js"),
        uplot_css: url("uPlot-1.6.32.min.css"),
    }
});

#[must_use]
pub fn urls() -> &'static AssetUrls {
    &URLS
}

/// Every asset's size as served compressed, in bytes, by file.
#[must_use]
pub fn compressed_sizes() -> Vec<(&'static str, usize)> {
    ASSETS.iter().map(|a| (a.source.file, a.gzip.len())).collect()
}

/// `GET /ui/assets/{hash}/{file}`: the file, if the hash is its current one.
pub async fn serve(req: HttpRequest, path: web::Path<(String, String)>) -> HttpResponse {
    let (hash, file) = path.into_inner();
    let Some(asset) = ASSETS.iter().find(|a| a.source.file == file && a.hash == hash) else {
        return super::page_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "No such asset in this build of the console.",
        );
    };
    let gzip = !asset.gzip.is_empty()
        && req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut res = HttpResponse::Ok();
    res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(asset.source.mime)))
        .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
        .insert_header((header::VARY, "Accept-Encoding"));
    if gzip {
        res.insert_header((header::CONTENT_ENCODING, "gzip"));
        res.body(asset.gzip.clone())
    } else {
        res.body(asset.source.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_url_and_all_of_them_fit_the_budget_compressed() {
        let urls = urls();
        for url in [&urls.css, &urls.js, &urls.htmx, &urls.uplot_js, &urls.uplot_css] {
            assert!(url.starts_with("/ui/assets/"), "{url}");
        }
        let total: usize = compressed_sizes().iter().map(|(_, n)| n).sum();
        assert!(total > 0 && total <= 150 * 1024, "{total} bytes compressed");
    }
}
