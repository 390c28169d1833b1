//! The same report as a FHIR R4 `Bundle` (`Accept: application/fhir+json`, or the older
//! `application/json+fhir`): a `preliminary` DiagnosticReport (the output supports a
//! clinician's decision; it is not final) coded with LOINC, one Observation per class and per
//! indicator, the image-quality Observations, one Media per image, the model as a Device and the
//! subject as **one Patient per subject** that carries only its pseudonymous identifier. The
//! series is in FHIR too: an extension names the previous and the next report. **Every literal
//! reference resolves inside the bundle** (`urn:uuid:` full URLs); links to reports outside it
//! are logical (by identifier).

use dermagate_domain::records::report::{ImageReport, Report};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::routes::catalog::ICD11_MMS;

pub const FHIR_JSON: &str = "application/fhir+json";
/// The DSTU2-era spelling some clients still send; treated as [`FHIR_JSON`].
pub const FHIR_JSON_LEGACY: &str = "application/json+fhir";
const REPORT_SYSTEM: &str = "https://dermagate.dev/reports";
const PREVIOUS_EXTENSION: &str = "https://dermagate.dev/fhir/StructureDefinition/previous-report";
const NEXT_EXTENSION: &str = "https://dermagate.dev/fhir/StructureDefinition/next-report";
const LOINC: &str = "http://loinc.org";
/// LOINC 18748-4 "Diagnostic imaging study": the document class of an imaging report.
const REPORT_LOINC: (&str, &str) = ("18748-4", "Diagnostic imaging study");
const BODY_SITE_SYSTEM: &str = "https://dermagate.dev/fhir/CodeSystem/body-site";
const UCUM: &str = "http://unitsofmeasure.org";

/// A stable id for a resource derived from the report, so the same report always yields the
/// same bundle.
fn derived_id(report: &Uuid, what: &str) -> Uuid {
    let digest = Sha256::digest(format!("{report}/{what}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

fn urn(id: &Uuid) -> String {
    format!("urn:uuid:{id}")
}

fn reference(id: &Uuid) -> Value {
    json!({ "reference": urn(id) })
}

fn entry(id: &Uuid, resource: Value) -> Value {
    json!({ "fullUrl": urn(id), "resource": resource })
}

fn percent(value: f64) -> Value {
    json!({ "value": value, "unit": "%", "system": UCUM, "code": "%" })
}

/// What every Observation of one report shares: its subject and the device that made it.
struct ObservationContext {
    report: Uuid,
    patient: Uuid,
    device: Uuid,
}

impl ObservationContext {
    /// A final Observation with a stable id derived from `what`, plus its own `fields`.
    fn observation(&self, what: &str, fields: Value) -> (Uuid, Value) {
        let id = derived_id(&self.report, what);
        let mut resource = json!({
            "resourceType": "Observation",
            "id": id.to_string(),
            "status": "final",
            "subject": reference(&self.patient),
            "device": reference(&self.device),
        });
        if let (Some(target), Value::Object(extra)) = (resource.as_object_mut(), fields) {
            target.extend(extra);
        }
        (id, resource)
    }
}

/// The Patient of a subject: the same id for every report of the subject.
fn patient_id(r: &Report) -> Uuid {
    derived_id(&r.organization_id, &format!("patient/{}", r.subject))
}

/// A reference to another report: literal when it is in this bundle, logical otherwise.
fn report_reference(id: &Uuid, in_bundle: bool) -> Value {
    let mut reference =
        json!({ "type": "DiagnosticReport", "identifier": { "system": REPORT_SYSTEM, "value": id.to_string() } });
    if in_bundle {
        reference["reference"] = json!(urn(id));
    }
    reference
}

/// One report as a `collection` Bundle.
pub fn bundle(r: &Report) -> Value {
    let entries = entries(r, &|_| false);
    bundle_of("collection", &r.id, &r.issued, entries, r.demonstration.then_some(r.notice.as_deref()).flatten())
}

fn bundle_of(kind: &str, id: &Uuid, timestamp: &str, entries: Vec<Value>, notice: Option<&str>) -> Value {
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": derived_id(id, &format!("bundle/{kind}")).to_string(),
        "type": kind,
        "timestamp": timestamp,
        "entry": entries,
    });
    if let Some(notice) = notice {
        bundle["meta"] = json!({ "tag": [{ "system": "https://dermagate.dev/fhir/tags", "code": "demonstration", "display": notice }] });
    }
    bundle
}

/// The resources of one report, the DiagnosticReport first. `in_bundle` says whether another
/// report is in the same bundle (so the series link can be literal).
fn entries(r: &Report, in_bundle: &dyn Fn(&Uuid) -> bool) -> Vec<Value> {
    let patient = patient_id(r);
    // One Device per model version, shared by every report it made.
    let device = derived_id(&Uuid::nil(), &format!("device/{}/{}", r.model.name, r.model.version));
    let media: Vec<Uuid> =
        r.imaging_study_series.iter().map(|i| derived_id(&r.id, &format!("media/{}", i.index))).collect();
    let used: Vec<Value> = r
        .imaging_study_series
        .iter()
        .zip(&media)
        .filter(|(i, _)| i.used_for_diagnosis)
        .map(|(_, id)| reference(id))
        .collect();
    let mut entries = vec![
        entry(
            &patient,
            json!({
                "resourceType": "Patient",
                "id": patient.to_string(),
                "identifier": [{ "system": format!("urn:dermagate:organization:{}:subject", r.organization_id), "value": r.subject }],
            }),
        ),
        entry(&device, device_resource(r, &device)),
    ];
    let ctx = ObservationContext { report: r.id, patient, device };
    let mut results = Vec::new();
    let mut add = |entries: &mut Vec<Value>, what: String, fields: Value| {
        let (id, resource) = ctx.observation(&what, fields);
        entries.push(entry(&id, resource));
        results.push(reference(&id));
    };
    for (image, id) in r.imaging_study_series.iter().zip(&media) {
        entries.push(entry(id, media_resource(r, image, id, &patient)));
        let mut components =
            vec![json!({ "code": { "text": "quality score (0-100)" }, "valueInteger": image.quality.score })];
        for check in &image.quality.failed_checks {
            components.push(json!({ "code": { "text": "failed quality check" }, "valueString": check }));
        }
        let fields = json!({
            "code": { "text": "Image quality assessment" },
            "derivedFrom": [reference(id)],
            "valueBoolean": image.quality.is_valid,
            "component": components,
        });
        add(&mut entries, format!("quality/{}", image.index), fields);
    }
    for c in &r.conclusions {
        let fields = json!({
            "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging", "display": "Imaging" }] }],
            "code": { "coding": [{ "system": ICD11_MMS, "code": c.code, "display": c.display }], "text": c.display },
            "derivedFrom": used,
            "valueQuantity": percent(c.probability),
        });
        add(&mut entries, format!("class/{}", c.code), fields);
    }
    let mut indicators = Vec::new();
    if let Some(ind) = &r.clinical_indicators {
        indicators.push(("Malignancy indicator", percent(ind.malignancy)));
        indicators.push(("Urgent referral indicator", percent(ind.urgent_referral)));
    }
    if let Some(bits) = r.entropy {
        indicators.push((
            "Entropy of the class distribution",
            json!({ "value": bits, "unit": "bit", "system": UCUM, "code": "bit" }),
        ));
    }
    for (name, value) in indicators {
        let fields = json!({ "code": { "text": name }, "derivedFrom": used, "valueQuantity": value });
        add(&mut entries, name.to_string(), fields);
    }
    let report = diagnostic_report(r, &patient, &media, results, in_bundle);
    entries.insert(0, entry(&r.id, report));
    entries
}

fn diagnostic_report(
    r: &Report,
    patient: &Uuid,
    media: &[Uuid],
    results: Vec<Value>,
    in_bundle: &dyn Fn(&Uuid) -> bool,
) -> Value {
    let conclusion = match r.conclusions.first() {
        Some(top) => format!("Most probable class: {} ({}) at {:.2}%.", top.display, top.code, top.probability),
        None => "No diagnosis: no image met the quality requirements.".to_string(),
    };
    let conclusion = match &r.notice {
        Some(notice) => format!("{notice}. {conclusion}"),
        None => conclusion,
    };
    let mut report = json!({
        "resourceType": "DiagnosticReport",
        "id": r.id.to_string(),
        "identifier": [{ "system": REPORT_SYSTEM, "value": r.id.to_string() }],
        "status": "preliminary",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "IMG", "display": "Diagnostic Imaging" }] }],
        "code": {
            "coding": [{ "system": LOINC, "code": REPORT_LOINC.0, "display": REPORT_LOINC.1 }],
            "text": "Dermatology image analysis (AI diagnosis support)",
        },
        "subject": reference(patient),
        "issued": r.issued,
        "result": results,
        "media": r.imaging_study_series.iter().zip(media).map(|(i, id)| json!({
            "comment": format!("image {} ({})", i.index, if i.quality.is_valid { "passed the quality gate" } else { "failed the quality gate" }),
            "link": reference(id),
        })).collect::<Vec<_>>(),
        "conclusion": conclusion,
    });
    let mut series = Vec::new();
    if let Some(previous) = &r.previous_report_id {
        series.push(
            json!({ "url": PREVIOUS_EXTENSION, "valueReference": report_reference(previous, in_bundle(previous)) }),
        );
    }
    if let Some(next) = &r.next_report_id {
        series.push(json!({ "url": NEXT_EXTENSION, "valueReference": report_reference(next, in_bundle(next)) }));
    }
    if !series.is_empty() {
        report["extension"] = json!(series);
    }
    if let Some(top) = r.conclusions.first() {
        report["conclusionCode"] =
            json!([{ "coding": [{ "system": ICD11_MMS, "code": top.code, "display": top.display }] }]);
    }
    report
}

fn device_resource(r: &Report, id: &Uuid) -> Value {
    json!({
        "resourceType": "Device",
        "id": id.to_string(),
        "deviceName": [{ "name": r.model.name, "type": "model-name" }],
        "version": [{ "value": r.model.version }],
        "note": [{ "text": r.model.intended_use }],
    })
}

fn media_resource(r: &Report, image: &ImageReport, id: &Uuid, patient: &Uuid) -> Value {
    let mut content = json!({ "contentType": image.content_type, "title": format!("image {}", image.index) });
    if let Some(url) = &image.url {
        content["url"] = json!(url);
    }
    json!({
        "resourceType": "Media",
        "id": id.to_string(),
        "status": "completed",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/media-type", "code": "image", "display": "Image" }] },
        "identifier": [{ "system": "urn:dermagate:sha256", "value": image.sha256 }],
        "subject": reference(patient),
        "bodySite": { "coding": [{ "system": BODY_SITE_SYSTEM, "code": r.body_site.code, "display": r.body_site.display }] },
        "width": image.width,
        "height": image.height,
        "content": content,
    })
}

/// Links of a searchset page.
pub struct PageLinks {
    pub self_url: String,
    pub next_url: Option<String>,
}

/// A FHIR `searchset` Bundle of one page of a subject's reports: each DiagnosticReport a
/// `match`, everything it refers to an `include`, the subject's Patient once.
pub fn searchset(reports: &[Report], total: usize, links: &PageLinks) -> Value {
    let ids: std::collections::HashSet<Uuid> = reports.iter().map(|r| r.id).collect();
    let in_page = |id: &Uuid| ids.contains(id);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for r in reports {
        for (i, mut e) in entries(r, &in_page).into_iter().enumerate() {
            let Some(url) = e["fullUrl"].as_str().map(String::from) else { continue };
            if !seen.insert(url) {
                continue;
            }
            e["search"] = json!({ "mode": if i == 0 { "match" } else { "include" } });
            out.push(e);
        }
    }
    let mut link = vec![json!({ "relation": "self", "url": links.self_url })];
    if let Some(next) = &links.next_url {
        link.push(json!({ "relation": "next", "url": next }));
    }
    let anchor = reports.first().map_or_else(Uuid::nil, |r| r.id);
    let timestamp = reports.last().map_or_else(String::new, |r| r.issued.clone());
    let mut bundle = bundle_of("searchset", &anchor, &timestamp, out, None);
    bundle["total"] = json!(total);
    bundle["link"] = json!(link);
    if timestamp.is_empty() {
        bundle.as_object_mut().map(|b| b.remove("timestamp"));
    }
    bundle
}

#[cfg(test)]
mod tests {
    use super::*;
    use dermagate_domain::records::report::{BodySiteRef, ModelRef};

    fn report(id: u128, previous: Option<u128>, next: Option<u128>) -> Report {
        Report {
            id: Uuid::from_u128(id),
            status: "final".into(),
            issued: "2026-12-03T10:00:00.000Z".into(),
            analysis_duration: 0.1,
            subject: "subj-1".into(),
            body_site: BodySiteRef { code: "ARM_LEFT".into(), display: "Left arm".into() },
            known_condition: None,
            previous_report_id: previous.map(Uuid::from_u128),
            next_report_id: next.map(Uuid::from_u128),
            organization_id: Uuid::from_u128(7),
            requested_by: "dgc_x".into(),
            model: ModelRef { name: "m".into(), version: "1".into(), demonstration: false, intended_use: "x".into() },
            demonstration: false,
            notice: None,
            outcome: "no_valid_image".into(),
            imaging_study_series: Vec::new(),
            conclusions: Vec::new(),
            clinical_indicators: None,
            entropy: None,
            normalized_entropy: None,
        }
    }

    // traces
    #[test]
    fn a_series_has_one_patient_and_links_its_reports() {
        let reports = [report(1, None, Some(2)), report(2, Some(1), None)];
        let links = PageLinks { self_url: "https://lb/v1/subjects/subj-1/analyses".into(), next_url: None };
        let b = searchset(&reports, 2, &links);
        let entries = b["entry"].as_array().expect("entries");
        let patients = entries.iter().filter(|e| e["resource"]["resourceType"] == "Patient").count();
        assert_eq!(patients, 1);
        let second = entries.iter().find(|e| e["resource"]["id"] == Uuid::from_u128(2).to_string()).expect("report 2");
        assert_eq!(second["search"]["mode"], "match");
        assert_eq!(second["resource"]["status"], "preliminary");
        assert_eq!(second["resource"]["code"]["coding"][0]["system"], LOINC);
        let link = &second["resource"]["extension"][0];
        assert_eq!(link["url"], PREVIOUS_EXTENSION);
        assert_eq!(link["valueReference"]["reference"], urn(&Uuid::from_u128(1)));
        assert_eq!(b["link"][0]["relation"], "self");
    }

    // traces
    #[test]
    fn a_link_outside_the_bundle_is_logical() {
        let b = bundle(&report(2, Some(1), None));
        let link = &b["entry"][0]["resource"]["extension"][0]["valueReference"];
        assert!(link.get("reference").is_none());
        assert_eq!(link["identifier"]["value"], Uuid::from_u128(1).to_string());
    }
}
