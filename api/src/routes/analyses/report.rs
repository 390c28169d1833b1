//! Building the device's output from an analysis: a DiagnosticReport-like envelope with
//! `conclusions[]` and `imagingStudySeries[]`, shaped like the public Legit.Health medical-device
//! API so integrators who know it feel at home. The record type is the domain's
//! ([`dermagate_domain::records::Report`]). **A report produced by a demonstration model says so
//! in every copy.**

use dermagate_domain::records::report::{
    BodySiteRef, ClinicalIndicators, Conclusion, DomainCheck, ImageReport, ModelRef, Quality, QualityMeasures, Report,
    DEMONSTRATION_NOTICE,
};
use dermagate_inference::engine::{Analysis, ImageResult};
use dermagate_inference::quality::QualityVerdict;
use dermagate_inference::Manifest;
use uuid::Uuid;

use super::input::AnalysisInput;
use crate::routes::catalog::ICD11_MMS;
use crate::state::rfc3339;

fn quality(v: &QualityVerdict) -> Quality {
    let m = &v.measures;
    Quality {
        is_valid: v.is_valid,
        score: v.score,
        category: v.category.to_string(),
        failed_checks: v.failed_checks.iter().map(|c| c.to_string()).collect(),
        measures: QualityMeasures {
            sharpness: m.sharpness,
            dark_fraction: m.dark_fraction,
            bright_fraction: m.bright_fraction,
            contrast: m.contrast,
            width: m.width,
            height: m.height,
        },
        domain: DomainCheck {
            is_dermatological: v.domain.is_dermatological,
            score: v.domain.score,
            skin_fraction: v.domain.skin_fraction,
            texture_correlation: v.domain.texture_correlation,
            thresholds_version: v.domain.thresholds_version.clone(),
        },
        thresholds_version: v.thresholds_version.clone(),
    }
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
        next_report_id: None,
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
        quality: quality(&r.quality),
        used_for_diagnosis: r.prediction.is_some(),
        stored: ctx.stored,
        url: ctx.stored.then(|| format!("/v1/analyses/{}/images/{index}", ctx.id)),
    }
}
