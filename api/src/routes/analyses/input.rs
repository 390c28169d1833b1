//! Reading an analysis request, as JSON or as `multipart/form-data`, into one validated input.
//! Cheap rules (metadata, counts, base64, sizes) are checked here, before any image is decoded;
//! the rules that need the pixels run on the inference workers and name the image at fault.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use dermagate_inference::decode::DecodeError;
use dermagate_inference::UploadedImage;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::routes::catalog::{body_site, BodySite, BODY_SITES};
use crate::state::AppState;

/// The subject identifier rule, as the server enforces it.
pub const SUBJECT_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$";

/// The JSON form of `POST /v1/analyses`. Fields are optional to serde so that a missing one is
/// answered with its own name and rule; the schema marks what is required.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisRequest {
    /// One to the configured maximum (default 3) images of the same lesion.
    #[schema(required = true, nullable = false, min_items = 1, max_items = 3)]
    pub images: Option<Vec<ImageInput>>,
    /// The care provider's pseudonymous identifier of the subject: 1-64 characters of letters,
    /// digits and `. _ : -`, starting with a letter or digit. Never a name.
    #[schema(
        required = true,
        nullable = false,
        example = "subj-0042",
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    pub subject: Option<String>,
    /// A code from `GET /v1/body-sites`.
    #[schema(required = true, nullable = false, value_type = BodySiteCode, example = "ARM_LEFT")]
    pub body_site: Option<String>,
    /// What the clinician already knows or suspects (free text, at most 200 characters).
    #[schema(max_length = 200)]
    pub known_condition: Option<String>,
    /// The latest report of the same lesion: links the new point of the time series to it.
    #[schema(format = Uuid, pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    pub previous_report_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ImageInput {
    /// The image bytes in base64 (standard alphabet; a `data:` URL prefix is accepted).
    #[schema(required = true, nullable = false, min_length = 1, content_encoding = "base64")]
    pub data: Option<String>,
    /// Must match the bytes.
    #[schema(required = true, nullable = false, value_type = ImageContentType)]
    pub content_type: Option<String>,
}

/// The multipart form of `POST /v1/analyses` (documentation of the parts; it is read as a stream).
#[allow(dead_code)]
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct AnalysisForm {
    /// One to three image files (repeat the part), typed `image/jpeg`, `image/png` or `image/webp`.
    #[schema(value_type = Vec<String>, format = Binary, min_items = 1, max_items = 3)]
    pub images: Vec<Vec<u8>>,
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$", min_length = 1, max_length = 64)]
    pub subject: String,
    #[schema(value_type = BodySiteCode)]
    pub body_site: String,
    #[schema(max_length = 200)]
    pub known_condition: Option<String>,
    #[schema(format = Uuid)]
    pub previous_report_id: Option<String>,
}

/// The codes of `GET /v1/body-sites`, as an enum of the schema (one list: the catalogue's).
pub struct BodySiteCode;

impl utoipa::PartialSchema for BodySiteCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(BODY_SITES.iter().map(|s| s.code)))
            .description(Some("A body-site code (GET /v1/body-sites)"))
            .into()
    }
}

impl ToSchema for BodySiteCode {}

/// The image types the device reads, as an enum of the schema.
pub struct ImageContentType;

impl utoipa::PartialSchema for ImageContentType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .enum_values(Some(ACCEPTED_TYPES.iter().copied()))
            .into()
    }
}

impl ToSchema for ImageContentType {}

/// A validated analysis request.
#[derive(Debug)]
pub struct AnalysisInput {
    pub images: Vec<UploadedImage>,
    pub subject: String,
    pub body_site: &'static BodySite,
    pub known_condition: Option<String>,
    pub previous_report_id: Option<Uuid>,
    /// SHA-256 of each image, hex, in order (computed once, with the input).
    pub sha256: Vec<String>,
}

impl AnalysisInput {
    /// What makes two requests "the same request" for `Idempotency-Key`: the metadata and the
    /// image bytes, whichever encoding (JSON or multipart) carried them.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::json!({
            "subject": self.subject,
            "bodySite": self.body_site.code,
            "knownCondition": self.known_condition,
            "previousReportId": self.previous_report_id,
            "images": self.images.iter().zip(&self.sha256).map(|(i, h)| (i.content_type.as_str(), h)).collect::<Vec<_>>(),
        });
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// Limits of an analysis request, from the configuration.
#[derive(Debug, Clone)]
pub struct InputLimits {
    pub max_images: usize,
    pub max_image_bytes: usize,
    pub max_body_bytes: usize,
}

/// The image types the device reads (media types compare case-insensitively, RFC 9110).
pub const ACCEPTED_TYPES: &[&str] = &["image/jpeg", "image/png", "image/webp"];

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Reads the request body in the form its `Content-Type` announces, within `deadline`: an
/// upload that does not arrive in time is refused (408) and frees its slot.
pub fn read<'a>(
    req: Request,
    state: &'a AppState,
    limits: &'a InputLimits,
    deadline: std::time::Duration,
) -> futures::future::BoxFuture<'a, Result<AnalysisInput, ApiError>> {
    Box::pin(within_deadline(deadline, read_body(req, state, limits)))
}

/// Runs a body read under the body deadline.
pub async fn within_deadline(
    deadline: std::time::Duration,
    read: impl std::future::Future<Output = Result<AnalysisInput, ApiError>>,
) -> Result<AnalysisInput, ApiError> {
    match tokio::time::timeout(deadline, read).await {
        Ok(read) => read,
        Err(_) => {
            metrics::counter!("dermagate_http_body_timeouts_total").increment(1);
            Err(ApiError::RequestTimeout(format!("the request body did not arrive within {} s", deadline.as_secs())))
        }
    }
}

async fn read_body(req: Request, state: &AppState, limits: &InputLimits) -> Result<AnalysisInput, ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let declared_length = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared_length.is_some_and(|n| n > limits.max_body_bytes) {
        return Err(too_large(limits));
    }
    match content_type.as_str() {
        "application/json" => read_json(req, limits).await,
        "multipart/form-data" => read_multipart(req, state, limits).await,
        other => {
            let detail = match other {
                "" => "send Content-Type: application/json or multipart/form-data".to_string(),
                other => format!("{other} is not accepted: send application/json or multipart/form-data"),
            };
            super::discard(req.into_body(), limits.max_body_bytes).await;
            Err(ApiError::UnsupportedMediaType(detail))
        }
    }
}

pub(crate) fn too_large(limits: &InputLimits) -> ApiError {
    ApiError::PayloadTooLarge(format!("the request body exceeds {} bytes", limits.max_body_bytes))
}

pub(crate) fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

async fn read_json(req: Request, limits: &InputLimits) -> Result<AnalysisInput, ApiError> {
    let bytes = axum::body::to_bytes(req.into_body(), limits.max_body_bytes).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large(limits)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    let limits = limits.clone();
    off_runtime(move || parse_json(&bytes, &limits)).await
}

/// CPU work on megabytes (JSON parsing, base64, hashing) runs on the blocking pool, never on the
/// async runtime's threads.
pub(crate) async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(ApiError::internal)?
}

fn parse_json(bytes: &[u8], limits: &InputLimits) -> Result<AnalysisInput, ApiError> {
    let body: AnalysisRequest = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::validation("body", "schema", e.to_string()),
        _ => ApiError::BadRequest(format!("malformed JSON: {e}")),
    })?;
    let images = body.images.unwrap_or_default();
    check_count(images.len(), limits)?;
    let mut uploads = Vec::with_capacity(images.len());
    for (i, image) in images.into_iter().enumerate() {
        let content_type = image.content_type.ok_or_else(|| {
            ApiError::validation(format!("images[{i}].contentType"), "required", "every image needs its contentType")
        })?;
        let data = image.data.ok_or_else(|| {
            ApiError::validation(format!("images[{i}].data"), "required", "every image needs its base64 data")
        })?;
        uploads.push(UploadedImage { bytes: decode_base64(i, &data, &content_type, limits)?, content_type });
    }
    metadata(uploads, body.subject, body.body_site, body.known_condition, body.previous_report_id)
}

async fn read_multipart(req: Request, state: &AppState, limits: &InputLimits) -> Result<AnalysisInput, ApiError> {
    let mut form = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text())))?;
    let read = read_form(&mut form, limits).await;
    if let Err(e) = &read {
        if !matches!(e, ApiError::PayloadTooLarge(_)) {
            // Read the rest, so the client gets this answer rather than a closed connection.
            while let Ok(Some(field)) = form.next_field().await {
                let _ = field.bytes().await;
            }
        }
    }
    read
}

async fn read_form(form: &mut Multipart, limits: &InputLimits) -> Result<AnalysisInput, ApiError> {
    let (mut images, mut subject, mut site, mut condition, mut previous) = (Vec::new(), None, None, None, None);
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limits)),
        };
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "images" | "images[]" | "image" => {
                let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
                let index = images.len();
                if index >= limits.max_images {
                    check_count(index + 1, limits)?;
                }
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, limits))?;
                if bytes.len() > limits.max_image_bytes {
                    return Err(image_too_large(index, bytes.len(), limits));
                }
                images.push(UploadedImage { bytes: bytes.to_vec(), content_type });
            }
            "subject" | "bodySite" | "knownCondition" | "previousReportId" => {
                let bytes = field.bytes().await.map_err(|e| multipart_error(e, limits))?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    ApiError::validation(name.as_str(), "printable", format!("{name} is not valid UTF-8"))
                })?;
                let slot = match name.as_str() {
                    "subject" => &mut subject,
                    "bodySite" => &mut site,
                    "knownCondition" => &mut condition,
                    _ => &mut previous,
                };
                if slot.replace(text).is_some() {
                    return Err(ApiError::validation(
                        name.as_str(),
                        "schema",
                        format!("{name} is sent more than once"),
                    ));
                }
            }
            other => {
                return Err(ApiError::validation(
                    other,
                    "schema",
                    format!(
                    "unknown form field {other:?}: send images, subject, bodySite, knownCondition, previousReportId"
                ),
                ))
            }
        }
    }
    check_count(images.len(), limits)?;
    off_runtime(move || metadata(images, subject, site, condition, previous)).await
}

fn multipart_error(e: axum::extract::multipart::MultipartError, limits: &InputLimits) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limits)
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
    }
}

pub(crate) fn check_count(n: usize, limits: &InputLimits) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::validation("images", "required", "send at least one image"));
    }
    if n > limits.max_images {
        return Err(ApiError::validation(
            "images",
            "max_items",
            format!("at most {} images per analysis, got {n}", limits.max_images),
        ));
    }
    Ok(())
}

fn image_too_large(index: usize, bytes: usize, limits: &InputLimits) -> ApiError {
    let e = DecodeError::TooManyBytes(bytes, limits.max_image_bytes);
    ApiError::validation(format!("images[{index}].data"), e.rule(), e.to_string())
}

pub(crate) fn decode_base64(
    index: usize,
    data: &str,
    content_type: &str,
    limits: &InputLimits,
) -> Result<Vec<u8>, ApiError> {
    let payload = match data.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => {
            if !prefix["data:".len()..].eq_ignore_ascii_case(content_type) {
                return Err(ApiError::validation(
                    format!("images[{index}].contentType"),
                    "content_type",
                    format!(
                        "image {index}: the data URL says {:?} but contentType says {content_type:?}",
                        &prefix[5..]
                    ),
                ));
            }
            rest
        }
        _ => data,
    };
    // Refuse an oversized image before spending memory on decoding it.
    let approx = payload.len() / 4 * 3;
    if approx > limits.max_image_bytes + 3 {
        return Err(image_too_large(index, approx, limits));
    }
    // Line-wrapped (MIME) base64 is accepted too; the common unwrapped case is decoded in place.
    let decoded = match BASE64.decode(payload) {
        Ok(bytes) => Ok(bytes),
        Err(_) => BASE64.decode(payload.bytes().filter(|b| !b.is_ascii_whitespace()).collect::<Vec<u8>>()),
    };
    let bytes = decoded.map_err(|e| {
        ApiError::validation(
            format!("images[{index}].data"),
            "base64",
            format!("image {index} is not valid base64: {e}"),
        )
    })?;
    if bytes.len() > limits.max_image_bytes {
        return Err(image_too_large(index, bytes.len(), limits));
    }
    Ok(bytes)
}

pub(crate) fn metadata(
    images: Vec<UploadedImage>,
    subject: Option<String>,
    site: Option<String>,
    condition: Option<String>,
    previous: Option<String>,
) -> Result<AnalysisInput, ApiError> {
    let mut images = images;
    for (index, image) in images.iter_mut().enumerate() {
        let declared = image.content_type.to_ascii_lowercase();
        if !ACCEPTED_TYPES.contains(&declared.as_str()) {
            return Err(rejected_image(index, &DecodeError::UnsupportedType(image.content_type.clone())));
        }
        image.content_type = declared;
        if image.bytes.is_empty() {
            return Err(ApiError::validation(
                format!("images[{index}].data"),
                "required",
                format!("image {index} is empty"),
            ));
        }
    }
    let subject = subject_id(subject.as_deref())?;
    let site = site
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::validation("bodySite", "required", "bodySite is required (see GET /v1/body-sites)"))?;
    let body_site = body_site(&site).ok_or_else(|| {
        ApiError::validation(
            "bodySite",
            "known_body_site",
            format!("unknown body site {site:?}; GET /v1/body-sites lists the accepted codes"),
        )
    })?;
    let known_condition = match condition.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(c) if c.chars().count() > 200 => {
            return Err(ApiError::validation("knownCondition", "max_length", "knownCondition: at most 200 characters"))
        }
        Some(c) if c.chars().any(char::is_control) => {
            return Err(ApiError::validation("knownCondition", "printable", "knownCondition: no control characters"))
        }
        Some(c) => Some(c.to_string()),
    };
    let previous_report_id = match previous.as_deref() {
        None => None,
        Some(p) => Some(canonical_uuid(p).ok_or_else(|| {
            ApiError::validation("previousReportId", "uuid", "previousReportId must be the UUID of a report")
        })?),
    };
    let sha256 = images.iter().map(|i| hex::encode(Sha256::digest(&i.bytes))).collect();
    Ok(AnalysisInput { images, subject, body_site, known_condition, previous_report_id, sha256 })
}

/// A UUID in its canonical hyphenated form only (no braces, URNs or bare hex).
pub fn canonical_uuid(value: &str) -> Option<Uuid> {
    (value.len() == 36).then(|| value.parse::<Uuid>().ok()).flatten()
}

/// A subject identifier: pseudonymous by construction (no spaces, so no "First Last" names), and
/// starting with a letter or digit (so never `.` or `..`, which clients rewrite in URLs).
pub fn subject_id(value: Option<&str>) -> Result<String, ApiError> {
    let value = value.unwrap_or("");
    if value.is_empty() {
        return Err(ApiError::validation("subject", "required", "subject (a pseudonymous identifier) is required"));
    }
    let ok = value.len() <= 64
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if !ok {
        return Err(ApiError::validation(
            "subject",
            "pattern",
            "subject must be a pseudonymous identifier of 1-64 letters, digits and . _ : -, starting with a letter or digit (never a name)",
        ));
    }
    Ok(value.to_string())
}

/// The problem for an image refused by a rule that needs its pixels.
pub fn rejected_image(index: usize, e: &DecodeError) -> ApiError {
    let field = match e {
        DecodeError::UnsupportedType(_) => format!("images[{index}].contentType"),
        _ => format!("images[{index}].data"),
    };
    ApiError::validation(field, e.rule(), format!("image {index}: {e}"))
}

#[cfg(test)]
mod tests {
    //! Property-based fuzzing of request-body parsing (stable toolchain; `PROPTEST_CASES=100000`
    //! for a long run): whatever arrives, the answer is an input or a problem with a 4xx status,
    //! never a panic and never a 5xx.

    use super::*;
    use proptest::prelude::*;

    fn limits() -> InputLimits {
        InputLimits { max_images: 3, max_image_bytes: 64 << 10, max_body_bytes: 1 << 20 }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("iVBORw0KGgo=")),
            Just(serde_json::Value::from("image/png")),
            Just(serde_json::Value::from("ARM_LEFT")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            let keys = prop_oneof![
                Just("images".to_string()),
                Just("data".to_string()),
                Just("contentType".to_string()),
                Just("subject".to_string()),
                Just("bodySite".to_string()),
                Just("knownCondition".to_string()),
                Just("previousReportId".to_string()),
                "[a-z]{1,8}",
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(keys, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn is_client_error(e: &ApiError) -> bool {
        (400..500).contains(&e.status().as_u16())
    }
    proptest! {
        // traces: R-03, REQ-5.3
        #[test]
        fn fuzz_arbitrary_bytes_parse_to_an_input_or_a_client_error(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Err(e) = parse_json(&bytes, &limits()) {
                prop_assert!(is_client_error(&e), "{e:?}");
            }
        }

        // traces: R-03, REQ-5.3

        #[test]
        fn fuzz_arbitrary_json_parses_to_an_input_or_a_client_error(value in json_value()) {
            if let Err(e) = parse_json(value.to_string().as_bytes(), &limits()) {
                prop_assert!(is_client_error(&e), "{e:?}");
            }
        }
    }
}
