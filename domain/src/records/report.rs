//! The device's output: a report in a subject's time series. **Reports are immutable**: a new
//! analysis of the same lesion adds a point linked by `previous_report_id`, it never overwrites
//! one. The report is typed end to end: the API renders it as JSON or as a FHIR Bundle from this
//! record, never from text stored "as the API returns it".

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A report as kept in the replicated state: the device output plus what the cluster needs to
/// place it (organisation, subject, request time, idempotency binding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredReport {
    pub report: Report,
    pub org_id: Uuid,
    /// The care provider's pseudonymous identifier of the subject (never a name).
    pub subject: String,
    pub issued_ms: i64,
    /// When the request that produced the report arrived (unix ms): an analysis requested
    /// before its subject's erasure is not stored, however long it ran.
    pub requested_ms: i64,
    /// The organisation-scoped idempotency key this report completes, if any, and the
    /// fingerprint of the request made under it.
    pub idempotency: Option<IdempotencyBinding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyBinding {
    pub scoped_key: String,
    pub fingerprint: String,
}

impl StoredReport {
    pub fn id(&self) -> Uuid {
        self.report.id
    }

    pub fn previous(&self) -> Option<Uuid> {
        self.report.previous_report_id
    }
}

/// The report as the device issues it (DiagnosticReport-like).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub id: Uuid,
    /// Always `final`: reports are immutable.
    pub status: String,
    /// When the device issued the report (RFC 3339, UTC).
    pub issued: String,
    /// Seconds the analysis took on the node (decode, quality, model).
    pub analysis_duration: f64,
    pub subject: String,
    pub body_site: BodySiteRef,
    pub known_condition: Option<String>,
    pub previous_report_id: Option<Uuid>,
    /// The report that follows this one in its series, once one exists.
    pub next_report_id: Option<Uuid>,
    pub organization_id: Uuid,
    /// The principal (user id or client id) that requested the analysis.
    pub requested_by: String,
    pub model: ModelRef,
    pub demonstration: bool,
    /// "Demonstration model, not for clinical use" when the model is a demonstration model.
    pub notice: Option<String>,
    /// `diagnosis`, or `no_valid_image` when no image passed the quality gate.
    pub outcome: String,
    pub imaging_study_series: Vec<ImageReport>,
    /// Every class of the model, highest probability first; probabilities (percent) sum to 100.
    /// Empty when no image passed the quality gate.
    pub conclusions: Vec<Conclusion>,
    /// Clinical indicators derived from the distribution; null without a diagnosis.
    pub clinical_indicators: Option<ClinicalIndicators>,
    /// Shannon entropy of the class distribution, in bits; null without a diagnosis.
    pub entropy: Option<f64>,
    /// Entropy over its maximum: 0 = one class certain, 1 = no preference at all.
    pub normalized_entropy: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BodySiteRef {
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    pub demonstration: bool,
    pub intended_use: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageReport {
    pub index: u32,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// SHA-256 of the uploaded bytes, so the integrator can match images to verdicts.
    pub sha256: String,
    pub quality: Quality,
    /// Whether the model's answer includes this image (only images that passed the gate).
    pub used_for_diagnosis: bool,
    /// Whether a copy (re-encoded, metadata stripped) is kept: organisations that opted in.
    pub stored: bool,
    /// Where the stored copy is served, when one is kept.
    pub url: Option<String>,
}

/// The image-quality verdict of one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    pub is_valid: bool,
    /// 0-100: the margin of the worst check; below 50 means a check failed.
    pub score: u8,
    /// `good`, `acceptable` or `poor`.
    pub category: String,
    /// Names of the failed checks.
    pub failed_checks: Vec<String>,
    pub measures: QualityMeasures,
    /// Whether the image is of skin at all (the device's intended use); an image out of the
    /// domain is never used for diagnosis and names `domain` in `failedChecks`.
    #[serde(default)]
    pub domain: DomainCheck,
    pub thresholds_version: String,
}

/// The dermatological-domain check of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DomainCheck {
    pub is_dermatological: bool,
    /// 0-100; below 50 means out of domain.
    pub score: u8,
    /// Share of skin-coloured pixels (YCbCr skin region).
    pub skin_fraction: f64,
    /// Lag-1 autocorrelation of luminance (near 0 for noise, high for photographs).
    pub texture_correlation: f64,
    pub thresholds_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QualityMeasures {
    pub sharpness: f64,
    pub dark_fraction: f64,
    pub bright_fraction: f64,
    pub contrast: f64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Conclusion {
    /// ICD-11 MMS code.
    #[schema(example = "EA90")]
    pub code: String,
    pub display: String,
    /// Always `http://id.who.int/icd/release/11/mms`.
    pub system: String,
    /// Percent, two decimals.
    pub probability: f64,
    pub malignant: bool,
    pub urgent_referral: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicalIndicators {
    /// Percent of probability on malignant classes.
    pub malignancy: f64,
    /// Percent of probability on classes that call for urgent referral.
    pub urgent_referral: f64,
}

/// An analysed image kept with its report (organisations that opted in); re-encoded, so it
/// carries no EXIF or other metadata. **Only its digest and size cross the Raft log**: the bytes
/// are a blob, stored on a quorum before the report is proposed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredImage {
    pub report_id: Uuid,
    pub index: u32,
    pub content_type: String,
    /// SHA-256 of the image bytes (lowercase hex): the blob's name.
    pub digest: String,
    pub size: u64,
}

pub const DEMONSTRATION_NOTICE: &str = "Demonstration model, not for clinical use";
