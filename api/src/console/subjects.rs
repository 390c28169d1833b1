//! Subjects and reports in the console: find a subject, its series with the chart, a report's
//! detail (each image's quality verdict and failed checks, the conclusions), the same JSON and
//! FHIR exports as the API, erasure with an explicit confirmation, and an analysis submitted
//! from the browser (the API's own `submit`: admission, fair slots, the engine, the store).
//! Another organisation's subject or report is not found, as in the API.

use std::time::Duration;

use axum::extract::{Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use dermagate_domain::rbac::{roles_have, Permission};
use dermagate_inference::UploadedImage;
use futures::future::BoxFuture;
use maud::html;
use serde::Deserialize;

use super::chart;
use super::error::PageError;
use super::session::Console;
use super::views::{self, csrf, percent, when};
use crate::error::ApiError;
use crate::extract::Caller;
use crate::routes::analyses::input::{self, AnalysisInput, InputLimits};
use crate::routes::analyses::subjects::{export_document, series_page, Page};
use crate::routes::catalog::BODY_SITES;
use crate::state::AppState;

/// A subject id from a path: a malformed one names no subject.
fn checked(raw: &str) -> Result<String, PageError> {
    Ok(input::subject_id(Some(raw)).map_err(|_| ApiError::not_found("subject"))?)
}

#[derive(Deserialize)]
pub struct FindQuery {
    subject: Option<String>,
}

pub async fn find(console: Console, Query(q): Query<FindQuery>) -> Result<Response, PageError> {
    console.principal.require(Permission::ReportsRead)?;
    if let Some(subject) = q.subject.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let subject = checked(subject)?;
        return Ok(Redirect::to(&format!("/console/subjects/{subject}")).into_response());
    }
    Ok(views::page(
        &console,
        "Subjects",
        html! {
            h1 { "Find a subject" }
            form.card method="get" action="/console/subjects" {
                label for="subject" { "Subject identifier (pseudonymous)" }
                input #subject name="subject" type="text" required maxlength="64" pattern="[A-Za-z0-9][A-Za-z0-9._:\\-]{0,63}";
                button type="submit" { "Find" }
            }
        },
    )
    .into_response())
}

pub async fn subject(
    State(state): State<AppState>,
    console: Console,
    Path(subject): Path<String>,
) -> Result<Response, PageError> {
    let subject = checked(&subject)?;
    let p = &console.principal;
    let series = state.analyses.series(p, &subject).await?;
    if series.is_empty() {
        return Err(ApiError::not_found("subject").into());
    }
    let erase = roles_have(&p.roles, Permission::SubjectsErase);
    let analyse = roles_have(&p.roles, Permission::AnalysesCreate);
    let last = series.last().map(|r| r.report.id);
    Ok(views::page(
        &console,
        "Subject",
        html! {
            h1 { "Subject " code { (subject) } }
            p { (series.len()) " report(s). Select a point of the chart or a row to open its report." }
            figure {
                (chart::series_chart(&series))
                figcaption { "Probability of the leading conclusions and the mean image-quality score over time (solid: conclusions, dashed: quality)." }
            }
            table {
                caption { "Reports in time order" }
                thead { tr { th scope="col" { "Issued" } th scope="col" { "Body site" } th scope="col" { "Outcome" } th scope="col" { "Leading conclusion" } th scope="col" { "Quality" } } }
                tbody {
                    @for r in &series {
                        tr {
                            td { a href=(format!("/console/reports/{}", r.report.id)) { (r.report.issued) } }
                            td { (r.report.body_site.display) }
                            td { (r.report.outcome) }
                            td { @if let Some(c) = r.report.conclusions.first() { (c.display) " (" (percent(c.probability)) ")" } @else { "none" } }
                            td { @if let Some(q) = chart::quality(r) { (format!("{q:.0}")) } @else { "n/a" } }
                        }
                    }
                }
            }
            h2 { "Export" }
            ul {
                li { a href=(format!("/console/subjects/{subject}/export.json")) download { "Export as JSON (reports and stored images)" } }
                li { a href=(format!("/console/subjects/{subject}/export.fhir.json")) download { "Export as FHIR R4 Bundle" } }
            }
            @if analyse {
                h2 { "Follow-up" }
                p { a href=(format!("/console/analyses/new?subject={subject}&previous={}", last.map(|l| l.to_string()).unwrap_or_default())) { "Submit a follow-up analysis" } }
            }
            @if erase {
                h2 { "Erase this subject" }
                form.card.danger method="post" action=(format!("/console/subjects/{subject}/erase")) {
                    (csrf(&console))
                    p { "Erasure removes every report and stored image of this subject on every node. It cannot be undone." }
                    label for="confirm" { "Type the subject identifier to confirm" }
                    input #confirm name="confirm" type="text" required autocomplete="off";
                    button type="submit" { "Erase subject" }
                }
            }
        },
    )
    .into_response())
}

/// A download of a document the API would answer.
fn attachment(mut resp: Response, name: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

pub async fn export_json(
    State(state): State<AppState>,
    console: Console,
    Path(subject): Path<String>,
) -> Result<Response, PageError> {
    let subject = checked(&subject)?;
    let resp = export_document(&state, &console.principal, &subject).await?;
    Ok(attachment(resp, &format!("{subject}-export.json")))
}

pub async fn export_fhir(
    State(state): State<AppState>,
    console: Console,
    Path(subject): Path<String>,
) -> Result<Response, PageError> {
    let subject = checked(&subject)?;
    let caller = Caller(console.principal.clone());
    let page = Page { limit: Some(200), cursor: None, offset: None };
    let resp = series_page(&state, &caller, &subject, &page, true).await?;
    Ok(attachment(resp, &format!("{subject}-fhir.json")))
}

#[derive(Deserialize)]
pub struct EraseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub async fn erase(
    State(state): State<AppState>,
    console: Console,
    Path(subject): Path<String>,
    Form(form): Form<EraseForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let subject = checked(&subject)?;
    if form.confirm.trim() != subject {
        return Err(ApiError::validation("confirm", "matches", "type the subject identifier exactly to confirm").into());
    }
    let p = &console.principal;
    let erased = state.analyses.erase(p, &subject).await?;
    tracing::info!(org_id = %p.org_id, by = %p.id, audit_seq = erased.audit_seq, erased = erased.reports, "subject erased from the console");
    Ok(views::page(
        &console,
        "Subject erased",
        html! {
            h1 { "Subject erased" }
            p.notice role="status" { (erased.reports) " report(s) and their images were erased on every node (audit record " (erased.audit_seq) ")." }
            p { a href="/console/subjects" { "Find another subject" } }
        },
    )
    .into_response())
}

pub async fn report(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id = input::canonical_uuid(&id).ok_or_else(|| ApiError::not_found("report"))?;
    let stored = state.analyses.report(&console.principal, id).await?;
    let r = &stored.report;
    Ok(views::page(
        &console,
        "Report",
        html! {
            h1 { "Report" }
            @if let Some(notice) = &r.notice { p.notice role="note" { (notice) } }
            dl.card {
                dt { "Report id" } dd { code #report-id { (r.id) } }
                dt { "Subject" } dd { a href=(format!("/console/subjects/{}", r.subject)) { (r.subject) } }
                dt { "Issued" } dd { (r.issued) }
                dt { "Body site" } dd { (r.body_site.display) " (" (r.body_site.code) ")" }
                dt { "Outcome" } dd #outcome { (r.outcome) }
                dt { "Model" } dd { (r.model.name) " " (r.model.version) }
                @if let Some(prev) = r.previous_report_id { dt { "Previous report" } dd { a href=(format!("/console/reports/{prev}")) { (prev) } } }
                @if let Some(next) = r.next_report_id { dt { "Next report" } dd { a href=(format!("/console/reports/{next}")) { (next) } } }
                @if let Some(ci) = &r.clinical_indicators {
                    dt { "Malignancy" } dd { (percent(ci.malignancy)) }
                    dt { "Urgent referral" } dd { (percent(ci.urgent_referral)) }
                }
            }
            h2 { "Images" }
            table {
                caption { "Quality verdict of each image" }
                thead { tr { th scope="col" { "#" } th scope="col" { "Size" } th scope="col" { "Verdict" } th scope="col" { "Score" } th scope="col" { "Failed checks" } th scope="col" { "Used for the diagnosis" } } }
                tbody {
                    @for img in &r.imaging_study_series {
                        tr {
                            td { (img.index) }
                            td { (img.width) "×" (img.height) }
                            td { @if img.quality.is_valid { "valid" } @else { "rejected" } " (" (img.quality.category) ")" }
                            td { (img.quality.score) }
                            td { @if img.quality.failed_checks.is_empty() { "none" } @else { (img.quality.failed_checks.join(", ")) } }
                            td { @if img.used_for_diagnosis { "yes" } @else { "no" } }
                        }
                    }
                }
            }
            h2 { "Conclusions" }
            @if r.conclusions.is_empty() {
                p { "No conclusion: no image passed the quality gate." }
            } @else {
                table {
                    caption { "Ranked conclusions (ICD-11)" }
                    thead { tr { th scope="col" { "Code" } th scope="col" { "Conclusion" } th scope="col" { "Probability" } th scope="col" { "Malignant" } th scope="col" { "Urgent referral" } } }
                    tbody {
                        @for c in &r.conclusions {
                            tr {
                                td { code { (c.code) } }
                                td { (c.display) }
                                td { (percent(c.probability)) }
                                td { @if c.malignant { "yes" } @else { "no" } }
                                td { @if c.urgent_referral { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
            p { "Issued " (when(stored.issued_ms)) "." }
        },
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct NewAnalysisQuery {
    subject: Option<String>,
    previous: Option<String>,
}

pub async fn analysis_form(console: Console, Query(q): Query<NewAnalysisQuery>) -> Result<Response, PageError> {
    console.principal.require(Permission::AnalysesCreate)?;
    Ok(analysis_page(&console, q.subject.as_deref().unwrap_or(""), q.previous.as_deref().unwrap_or(""), None)
        .into_response())
}

fn analysis_page(
    console: &Console,
    subject: &str,
    previous: &str,
    error: Option<&str>,
) -> axum::response::Html<String> {
    views::page(
        console,
        "New analysis",
        html! {
            h1 { "Submit an analysis" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form.card method="post" action="/console/analyses" enctype="multipart/form-data" {
                (csrf(console))
                label for="subject" { "Subject identifier (pseudonymous)" }
                input #subject name="subject" type="text" required maxlength="64" value=(subject) pattern="[A-Za-z0-9][A-Za-z0-9._:\\-]{0,63}";
                label for="bodySite" { "Body site" }
                select #bodySite name="bodySite" required {
                    @for site in BODY_SITES { option value=(site.code) { (site.display) } }
                }
                @for i in 1..=3 {
                    label for=(format!("image{i}")) { "Image " (i) @if i == 1 { " (required)" } @else { " (optional)" } }
                    input id=(format!("image{i}")) name="images" type="file" accept="image/jpeg,image/png,image/webp" required[i == 1];
                }
                label for="previousReportId" { "Previous report of this lesion (optional)" }
                input #previousReportId name="previousReportId" type="text" value=(previous) maxlength="36";
                button type="submit" { "Analyse" }
            }
        },
    )
}

/// Reads the browser's form: the CSRF token first, then the same fields as the API's multipart
/// form (file inputs left empty are skipped), validated by the API's own `metadata`.
fn console_form(
    expected: Console,
) -> impl for<'a> FnOnce(Request, &'a AppState, &'a InputLimits, Duration) -> BoxFuture<'a, Result<AnalysisInput, ApiError>>
{
    move |req, state, limits, deadline| {
        Box::pin(input::within_deadline(deadline, async move {
            let mut form = <Multipart as axum::extract::FromRequest<AppState>>::from_request(req, state)
                .await
                .map_err(|e| ApiError::BadRequest(format!("malformed form: {}", e.body_text())))?;
            let (mut images, mut fields) = (Vec::new(), std::collections::HashMap::new());
            while let Some(field) =
                form.next_field().await.map_err(|e| ApiError::BadRequest(format!("malformed form: {e}")))?
            {
                let name = field.name().unwrap_or("").to_string();
                if name == "images" {
                    let content_type = field.content_type().unwrap_or("application/octet-stream").to_string();
                    let empty_input = field.file_name().is_some_and(str::is_empty);
                    let bytes =
                        field.bytes().await.map_err(|e| ApiError::BadRequest(format!("malformed form: {e}")))?;
                    if empty_input && bytes.is_empty() {
                        continue;
                    }
                    if bytes.len() > limits.max_image_bytes || images.len() >= limits.max_images {
                        return Err(ApiError::PayloadTooLarge(format!(
                            "at most {} images of {} bytes each",
                            limits.max_images, limits.max_image_bytes
                        )));
                    }
                    images.push(UploadedImage { bytes: bytes.to_vec(), content_type });
                } else {
                    let text = field.text().await.map_err(|e| ApiError::BadRequest(format!("malformed form: {e}")))?;
                    fields.insert(name, text);
                }
            }
            if !expected.csrf_matches(fields.get("csrf").map_or("", String::as_str)) {
                return Err(ApiError::Forbidden("the form's CSRF token is missing or wrong".into()));
            }
            if images.is_empty() {
                return Err(ApiError::validation("images", "required", "choose at least one image"));
            }
            let previous = fields.remove("previousReportId").filter(|p| !p.trim().is_empty());
            input::metadata(images, fields.remove("subject"), fields.remove("bodySite"), None, previous)
        }))
    }
}

pub async fn submit_analysis(
    State(state): State<AppState>,
    console: Console,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, PageError> {
    let caller = Ok(Caller(console.principal.clone()));
    let headers = strip_idempotency(headers);
    match crate::routes::analyses::submit(&state, caller, &headers, request, console_form(console.clone())).await {
        Ok((stored, _)) => Ok(Redirect::to(&format!("/console/reports/{}", stored.report.id)).into_response()),
        // What the user can fix is said on the form itself, with the status the API would answer.
        Err(
            e @ (ApiError::Validation { .. }
            | ApiError::BadRequest(_)
            | ApiError::PayloadTooLarge(_)
            | ApiError::UnsupportedMediaType(_)),
        ) => {
            let mut resp = analysis_page(&console, "", "", Some(&e.to_string())).into_response();
            *resp.status_mut() = e.status();
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

/// The browser sends no `Idempotency-Key`; one forged into the request is not honoured.
fn strip_idempotency(mut headers: HeaderMap) -> HeaderMap {
    headers.remove(crate::routes::analyses::IDEMPOTENCY_HEADER);
    headers
}
