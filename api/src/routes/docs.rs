//! Documentation served by the product itself, with no CDN: the interactive API reference at
//! `/docs` (Swagger UI, vendored in `api/assets/swagger-ui`, built into the binary) and the
//! instructions for use at `/ifu` (`docs/ifu.md`, rendered to HTML once).

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(index))
        .routes(routes!(file))
        .routes(routes!(ifu))
        .routes(routes!(ifu_markdown))
        .routes(routes!(openapi_json))
}

/// Swagger UI may only load what this node serves; its icons are `data:` images.
const DOCS_CSP: &str =
    "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self' 'unsafe-inline'; object-src 'none'; frame-ancestors 'none'";
const IFU_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'";

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("index.html", "text/html; charset=utf-8", include_bytes!("../../assets/swagger-ui/index.html")),
    ("init.js", "text/javascript; charset=utf-8", include_bytes!("../../assets/swagger-ui/init.js")),
    (
        "swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/swagger-ui/swagger-ui-bundle.js"),
    ),
    ("swagger-ui.css", "text/css; charset=utf-8", include_bytes!("../../assets/swagger-ui/swagger-ui.css")),
    ("favicon-32x32.png", "image/png", include_bytes!("../../assets/swagger-ui/favicon-32x32.png")),
    ("LICENSE", "text/plain; charset=utf-8", include_bytes!("../../assets/swagger-ui/LICENSE")),
];

const IFU_MARKDOWN: &str = include_str!("../../../docs/ifu.md");

fn asset(name: &str) -> Result<Response, ApiError> {
    let (_, content_type, bytes) =
        ASSETS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| ApiError::not_found("document"))?;
    let mut resp = (*bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(DOCS_CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    Ok(resp)
}

/// The interactive reference of `/openapi.json`.
#[utoipa::path(get, path = "/docs", operation_id = "apiReference", tag = "documentation",
    responses((status = 200, description = "Swagger UI", content_type = "text/html", body = String)))]
pub async fn index() -> Result<Response, ApiError> {
    asset("index.html")
}

/// The reference's own assets.
#[utoipa::path(get, path = "/docs/{file}", operation_id = "apiReferenceAsset", tag = "documentation",
    params(("file" = String, Path, description = "Asset name")),
    responses((status = 200, description = "The asset", content_type = "application/octet-stream", body = inline(crate::openapi::Binary)),
        (status = 404, description = "No such asset", content_type = "application/problem+json", body = crate::error::Problem)))]
pub async fn file(Path(name): Path<String>) -> Result<Response, ApiError> {
    asset(&name)
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/openapi.json", operation_id = "openapi", tag = "documentation",
    responses((status = 200, description = "This document", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json())
}

fn ifu_html() -> &'static str {
    static HTML: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HTML.get_or_init(|| {
        let parser = pulldown_cmark::Parser::new_ext(IFU_MARKDOWN, pulldown_cmark::Options::ENABLE_TABLES);
        let mut body = String::new();
        pulldown_cmark::html::push_html(&mut body, parser);
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>dermagate: Instructions for Use</title><style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25rem .5rem;vertical-align:top}}code{{background:#f4f4f4}}pre{{background:#f4f4f4;padding:.5rem;overflow:auto}}</style>\
             </head><body>\n{body}</body></html>\n"
        )
    })
}

/// The instructions for use, as HTML.
#[utoipa::path(get, path = "/ifu", operation_id = "instructionsForUse", tag = "documentation",
    responses((status = 200, description = "The IFU", content_type = "text/html", body = String)))]
pub async fn ifu() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, IFU_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        ifu_html(),
    )
}

/// The instructions for use, as Markdown.
#[utoipa::path(get, path = "/ifu.md", operation_id = "instructionsForUseMarkdown", tag = "documentation",
    responses((status = 200, description = "The IFU", content_type = "text/markdown", body = String)))]
pub async fn ifu_markdown() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], IFU_MARKDOWN)
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces: R-11
    #[test]
    fn the_reference_loads_nothing_from_elsewhere() {
        for (name, _, bytes) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".html") || *n == "init.js") {
            let text = std::str::from_utf8(bytes).expect("text");
            assert!(!text.contains("http://") && !text.contains("https://"), "{name} references another origin");
        }
        let init = std::str::from_utf8(ASSETS[1].2).expect("text");
        assert!(init.contains("/openapi.json"));
    }

    // traces
    #[test]
    fn the_ifu_states_the_intended_purpose_input_requirements_and_errors() {
        let html = ifu_html();
        for needle in ["Intended purpose", "Input requirements", "Error catalogue", "not for clinical use"] {
            assert!(html.to_lowercase().contains(&needle.to_lowercase()), "the IFU lacks {needle:?}");
        }
    }
}
