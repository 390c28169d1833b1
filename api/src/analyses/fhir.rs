//! The same report as a FHIR R4 `Bundle` (`Accept: application/fhir+json`): a DiagnosticReport
//! with one Observation per class and per indicator, the image-quality Observations, one Media
//! per image, the model as a Device and the subject as a Patient that carries only its
//! pseudonymous identifier. **Every reference resolves inside the bundle** (`urn:uuid:` full URLs).

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::catalog::ICD11_MMS;
use super::report::Report;

pub const FHIR_JSON: &str = "application/fhir+json";
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

pub fn bundle(r: &Report) -> Value {
    let patient = derived_id(&r.id, "patient");
    let device = derived_id(&r.id, "device");
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
    let report = diagnostic_report(r, &patient, &media, results);
    entries.insert(0, entry(&r.id, report));
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": derived_id(&r.id, "bundle").to_string(),
        "type": "collection",
        "timestamp": r.issued,
        "entry": entries,
    });
    if r.demonstration {
        bundle["meta"] = json!({ "tag": [{ "system": "https://dermagate.dev/fhir/tags", "code": "demonstration", "display": r.notice }] });
    }
    bundle
}

fn diagnostic_report(r: &Report, patient: &Uuid, media: &[Uuid], results: Vec<Value>) -> Value {
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
        "identifier": [{ "system": "https://dermagate.dev/reports", "value": r.id.to_string() }],
        "status": "final",
        "code": { "text": "Dermatology image analysis (AI diagnosis support)" },
        "subject": reference(patient),
        "issued": r.issued,
        "result": results,
        "media": r.imaging_study_series.iter().zip(media).map(|(i, id)| json!({
            "comment": format!("image {} ({})", i.index, if i.quality.is_valid { "passed the quality gate" } else { "failed the quality gate" }),
            "link": reference(id),
        })).collect::<Vec<_>>(),
        "conclusion": conclusion,
    });
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

fn media_resource(r: &Report, image: &super::report::ImageReport, id: &Uuid, patient: &Uuid) -> Value {
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

/// A FHIR `searchset` Bundle of a subject's reports (each report's bundle entries flattened).
pub fn searchset(reports: &[Report], total: usize) -> Value {
    let mut entries = Vec::new();
    for r in reports {
        if let Some(items) = bundle(r)["entry"].as_array() {
            entries.extend(items.iter().cloned());
        }
    }
    json!({ "resourceType": "Bundle", "type": "searchset", "total": total, "entry": entries })
}
