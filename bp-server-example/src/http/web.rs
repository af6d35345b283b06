//! The web app: a single-page application of plain ES modules (no build step), compiled into the
//! binary so that `cargo run` serves it at `/`. `/` and `/callback` (the OAuth2 redirect) answer
//! the page; `/app/<file>` answers its scripts and stylesheet. The app keeps its tokens in memory
//! and talks to the API of this origin; see `docs/web.md`.

use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::problem::ApiError;

/// One file of the app.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset { name: $name, content_type: $type, body: include_bytes!(concat!("../../web/", $name)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the app is made of; `index.html` is the page.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("js/main.js", JS),
    asset!("js/auth.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dpop.js", JS),
    asset!("js/live.js", JS),
    asset!("js/format.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/views.js", JS),
    asset!("js/webauthn.js", JS),
    asset!("js/signin-passkey.js", JS),
];

/// Each asset's entity tag, worked out once: a hash of its bytes.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.body.hash(&mut h);
                format!("\"{:016x}\"", h.finish())
            })
            .collect()
    })
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &etags()[index];
    // Revalidated on every use (`no-cache`), so a new binary's files are picked up at once; an
    // unchanged file costs a 304.
    let cache = HeaderValue::from_static("no-cache");
    let tag = HeaderValue::from_str(etag).unwrap_or_else(|_| HeaderValue::from_static("\"0\""));
    if request.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag), (header::CACHE_CONTROL, cache)]).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
            (header::ETAG, tag),
            (header::CACHE_CONTROL, cache),
        ],
        asset.body,
    )
        .into_response()
}

/// `GET /` and `GET /callback`: the page.
pub async fn page(request: HeaderMap) -> Response {
    let mut response = serve(0, &request);
    // The page itself is never stored: it is where the authorization code arrives.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /app/{*file}`: a script or the stylesheet.
pub async fn file(Path(name): Path<String>, request: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.name == name && a.name != "index.html") {
        Some(index) => serve(index, &request),
        None => ApiError::NotFound("file").into_response(),
    }
}
