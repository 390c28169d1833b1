//! The device's output: a DiagnosticReport-like envelope with `conclusions[]` and
//! `imagingStudySeries[]`, shaped like the public Legit.Health medical-device API so integrators
//! who know it feel at home. **A report produced by a demonstration model says so in every copy.**

use dermagate_inference::engine::{Analysis, ImageResult};
use dermagate_inference::quality::QualityVerdict;
use dermagate_inference::Manifest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::catalog::ICD11_MMS;
use super::input::AnalysisInput;
use crate::organizations::rfc3339;

pub const DEMONSTRATION_NOTICE: &str = "Demonstration model, not for clinical use";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    pub organization_id: Uuid,
    /// The principal (user id or client id) that requested the analysis.
    pub requested_by: String,
    pub model: ModelRef,
    pub demonstration: bool,
    /// Present when the model is a demonstration model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notice: Option<String>,
    /// `diagnosis`, or `no_valid_image` when no image passed the quality gate.
    pub outcome: String,
    pub imaging_study_series: Vec<ImageReport>,
    /// Every class of the model, highest probability first; probabilities (percent) sum to 100.
    /// Empty when no image passed the quality gate.
    pub conclusions: Vec<Conclusion>,
    /// Clinical indicators derived from the distribution; null without a diagnosis.
    pub clinical_indicators: Option<ClinicalIndicators>,
    /// Shannon entropy of the class distribution, in bits (the model's uncertainty); null
    /// without a diagnosis.
    pub entropy: Option<f64>,
    /// Entropy over its maximum: 0 = one class certain, 1 = no preference at all.
    pub normalized_entropy: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BodySiteRef {
    pub code: String,
    pub display: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    pub name: String,
    pub version: String,
    pub demonstration: bool,
    pub intended_use: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// The image-quality verdict of one image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    pub is_valid: bool,
    /// 0-100: the margin of the worst check; below 50 means a check failed.
    pub score: u8,
    /// `good`, `acceptable` or `poor`.
    pub category: String,
    /// Names of the failed checks: sharpness, underexposure, overexposure, contrast, resolution.
    pub failed_checks: Vec<String>,
    pub measures: serde_json::Value,
    pub thresholds_version: String,
}

impl From<&QualityVerdict> for Quality {
    fn from(v: &QualityVerdict) -> Self {
        Quality {
            is_valid: v.is_valid,
            score: v.score,
            category: v.category.to_string(),
            failed_checks: v.failed_checks.iter().map(|c| c.to_string()).collect(),
            measures: serde_json::to_value(&v.measures).unwrap_or_default(),
            thresholds_version: v.thresholds_version.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
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

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClinicalIndicators {
    /// Percent of probability on malignant classes.
    pub malignancy: f64,
    /// Percent of probability on classes that call for urgent referral.
    pub urgent_referral: f64,
}

/// Everything a report is made of besides the analysis itself.
pub struct ReportContext<'a> {
    pub id: Uuid,
    pub issued_ms: i64,
    pub org_id: Uuid,
    pub requested_by: &'a str,
    pub manifest: &'a Manifest,
    pub input: &'a AnalysisInput,
    /// The declared type of each image (the image bytes themselves went to the engine).
    pub content_types: &'a [String],
    pub stored: bool,
}

pub fn build(ctx: &ReportContext<'_>, analysis: &Analysis) -> Report {
    let m = ctx.manifest;
    let series = analysis
        .images
        .iter()
        .enumerate()
        .map(|(i, r)| image_report(ctx, i, r, &ctx.input.sha256[i], &ctx.content_types[i]))
        .collect();
    let (conclusions, indicators, entropy) = match &analysis.summary {
        Some(s) => (
            s.ranked
                .iter()
                .map(|r| {
                    let l = &m.labels[r.label];
                    Conclusion {
                        code: l.code.clone(),
                        display: l.display.clone(),
                        system: ICD11_MMS.into(),
                        probability: r.percent,
                        malignant: l.malignant,
                        urgent_referral: l.urgent_referral,
                    }
                })
                .collect(),
            Some(ClinicalIndicators { malignancy: s.malignancy, urgent_referral: s.urgent_referral }),
            Some((s.entropy_bits, s.normalized_entropy)),
        ),
        None => (Vec::new(), None, None),
    };
    Report {
        id: ctx.id,
        status: "final".into(),
        issued: rfc3339(ctx.issued_ms),
        analysis_duration: (analysis.timings.total.as_secs_f64() * 1000.0).round() / 1000.0,
        subject: ctx.input.subject.clone(),
        body_site: BodySiteRef { code: ctx.input.body_site.code.into(), display: ctx.input.body_site.display.into() },
        known_condition: ctx.input.known_condition.clone(),
        previous_report_id: ctx.input.previous_report_id,
        organization_id: ctx.org_id,
        requested_by: ctx.requested_by.to_string(),
        model: ModelRef {
            name: m.name.clone(),
            version: m.version.clone(),
            demonstration: m.demonstration,
            intended_use: m.intended_use.clone(),
        },
        demonstration: m.demonstration,
        notice: m.demonstration.then(|| DEMONSTRATION_NOTICE.to_string()),
        outcome: if analysis.summary.is_some() { "diagnosis" } else { "no_valid_image" }.into(),
        imaging_study_series: series,
        conclusions,
        clinical_indicators: indicators,
        entropy: entropy.map(|(bits, _)| bits),
        normalized_entropy: entropy.map(|(_, normalized)| normalized),
    }
}

fn image_report(
    ctx: &ReportContext<'_>,
    index: usize,
    r: &ImageResult,
    sha256: &str,
    content_type: &str,
) -> ImageReport {
    ImageReport {
        index: index as u32,
        content_type: content_type.to_string(),
        width: r.width,
        height: r.height,
        sha256: sha256.to_string(),
        quality: Quality::from(&r.quality),
        used_for_diagnosis: r.prediction.is_some(),
        stored: ctx.stored,
        url: ctx.stored.then(|| format!("/v1/analyses/{}/images/{index}", ctx.id)),
    }
}
