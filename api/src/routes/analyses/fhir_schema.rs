//! The schema of the FHIR answers, for the OpenAPI document: a Bundle whose entries hold the
//! resource types the device uses, each told apart by its `resourceType`. The bundles themselves
//! are built in `fhir.rs`; these types describe them (they are never constructed), and a test
//! checks that what `fhir.rs` builds validates against what is described here.
#![allow(dead_code)]

use serde_json::Value;
use utoipa::ToSchema;

/// A FHIR R4 Bundle (`collection` for one report, `searchset` for a series page).
#[derive(ToSchema)]
#[schema(as = FhirBundle)]
pub struct FhirBundle {
    #[schema(rename = "resourceType", value_type = BundleType)]
    resource_type: String,
    id: String,
    #[schema(rename = "type", value_type = BundleKind)]
    kind: String,
    /// RFC 3339 (absent on an empty searchset).
    timestamp: Option<String>,
    /// Searchset: the number of matches in all pages.
    total: Option<u64>,
    /// Searchset: `self` and, unless this is the last page, `next`.
    link: Option<Vec<BundleLink>>,
    meta: Option<FhirMeta>,
    entry: Vec<BundleEntry>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct FhirMeta {
    tag: Vec<Coding>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct BundleLink {
    /// `self` or `next`.
    relation: String,
    url: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct BundleEntry {
    /// `urn:uuid:...`: what references inside the bundle point at.
    full_url: String,
    resource: FhirResource,
    /// Searchset only: `match` for a DiagnosticReport, `include` for what it refers to.
    search: Option<BundleSearch>,
}

#[derive(ToSchema)]
pub struct BundleSearch {
    #[schema(value_type = SearchMode)]
    mode: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum SearchMode {
    Match,
    Include,
}

#[derive(ToSchema)]
pub enum BundleType {
    Bundle,
}

#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum BundleKind {
    Collection,
    Searchset,
}

/// The resources of a dermagate bundle, told apart by `resourceType`.
#[derive(ToSchema)]
#[schema(discriminator(property_name = "resourceType"))]
#[serde(untagged)]
pub enum FhirResource {
    DiagnosticReport(DiagnosticReport),
    Observation(Observation),
    Patient(Patient),
    Media(Media),
    Device(Device),
}

#[derive(ToSchema)]
pub struct Coding {
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
}

#[derive(ToSchema)]
pub struct CodeableConcept {
    coding: Option<Vec<Coding>>,
    text: Option<String>,
}

#[derive(ToSchema)]
pub struct Reference {
    /// A literal reference (`urn:uuid:...`) to a resource of the bundle.
    reference: Option<String>,
    #[schema(rename = "type")]
    kind: Option<String>,
    identifier: Option<Identifier>,
}

#[derive(ToSchema)]
pub struct Identifier {
    system: Option<String>,
    value: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Extension {
    url: String,
    value_reference: Option<Reference>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct DiagnosticReport {
    #[schema(value_type = DiagnosticReportType)]
    resource_type: String,
    id: String,
    identifier: Vec<Identifier>,
    /// `preliminary`: the output supports a clinician's decision; it is not final.
    status: String,
    category: Option<Vec<CodeableConcept>>,
    /// LOINC-coded, with text.
    code: CodeableConcept,
    subject: Reference,
    issued: String,
    result: Vec<Reference>,
    #[schema(value_type = Vec<Object>)]
    media: Vec<Value>,
    conclusion: String,
    conclusion_code: Option<Vec<CodeableConcept>>,
    /// The series: the previous and the next report.
    extension: Option<Vec<Extension>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Observation {
    #[schema(value_type = ObservationType)]
    resource_type: String,
    id: String,
    status: String,
    code: CodeableConcept,
    subject: Reference,
    device: Reference,
    category: Option<Vec<CodeableConcept>>,
    derived_from: Option<Vec<Reference>>,
    #[schema(value_type = Option<Object>)]
    value_quantity: Option<Value>,
    value_boolean: Option<bool>,
    #[schema(value_type = Option<Vec<Object>>)]
    component: Option<Vec<Value>>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Patient {
    #[schema(value_type = PatientType)]
    resource_type: String,
    id: String,
    /// The care provider's pseudonymous subject identifier only.
    identifier: Vec<Identifier>,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Media {
    #[schema(value_type = MediaType)]
    resource_type: String,
    id: String,
    status: String,
    #[schema(rename = "type")]
    kind: Option<CodeableConcept>,
    identifier: Vec<Identifier>,
    subject: Reference,
    body_site: Option<CodeableConcept>,
    width: Option<u32>,
    height: Option<u32>,
    #[schema(value_type = Object)]
    content: Value,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
pub struct Device {
    #[schema(value_type = DeviceType)]
    resource_type: String,
    id: String,
    #[schema(value_type = Vec<Object>)]
    device_name: Vec<Value>,
    #[schema(value_type = Option<Vec<Object>>)]
    version: Option<Vec<Value>>,
    #[schema(value_type = Option<Vec<Object>>)]
    note: Option<Vec<Value>>,
}

#[derive(ToSchema)]
pub enum DiagnosticReportType {
    DiagnosticReport,
}
#[derive(ToSchema)]
pub enum ObservationType {
    Observation,
}
#[derive(ToSchema)]
pub enum PatientType {
    Patient,
}
#[derive(ToSchema)]
pub enum MediaType {
    Media,
}
#[derive(ToSchema)]
pub enum DeviceType {
    Device,
}
