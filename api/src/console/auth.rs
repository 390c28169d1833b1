//! Signing in and out of the console. Sign-in is `Identity`'s own (the same throttling, lockout
//! and second factor as `/v1/auth/login`); success opens a replicated session whose id goes only
//! into an `HttpOnly; Secure; SameSite=Strict` cookie scoped to `/console`. Signing out ends the
//! session on every node before the answer.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use dermagate_domain::rbac::{roles_have, Permission};
use dermagate_domain::services::identity::SignIn;
use dermagate_domain::ErrorCode;
use maud::html;
use serde::Deserialize;

use super::error::{clear_cookie, PageError};
use super::session::{Console, SESSION_COOKIE};
use super::views;
use crate::extract::ClientIp;
use crate::state::AppState;

/// How long a console session lasts at most (it ends earlier on sign-out, disabling, ...).
pub const SESSION_TTL_SECS: i64 = 8 * 3600;

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    otp: String,
}

fn login_page(message: Option<&str>) -> Response {
    views::bare(
        "Sign in",
        html! {
            h1 { "Sign in to the console" }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form.card method="post" action="/console/login" {
                label for="username" { "Username" }
                input #username name="username" type="text" autocomplete="username" required autofocus maxlength="256";
                label for="password" { "Password" }
                input #password name="password" type="password" autocomplete="current-password" required maxlength="1024";
                label for="otp" { "Second-factor code (if enrolled)" }
                input #otp name="otp" type="text" inputmode="numeric" autocomplete="one-time-code" maxlength="64";
                button type="submit" { "Sign in" }
            }
        },
    )
    .into_response()
}

pub async fn login_form() -> Response {
    login_page(None)
}

pub async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    Form(form): Form<LoginForm>,
) -> Result<Response, PageError> {
    state.rate_limits.check_sign_in(&ip)?;
    let source = ip.source();
    let otp = Some(form.otp.as_str()).filter(|o| !o.trim().is_empty());
    let attempt = SignIn { username: &form.username, password: form.password, otp, source: &source };
    let ttl_ms = SESSION_TTL_SECS * 1000;
    match state.identity.open_console_session(attempt, ttl_ms).await {
        Ok((id, _)) => {
            let cookie = format!(
                "{SESSION_COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/console; Max-Age={SESSION_TTL_SECS}"
            );
            let mut resp = Redirect::to("/console/").into_response();
            let value = HeaderValue::from_str(&cookie).map_err(crate::ApiError::internal)?;
            resp.headers_mut().insert(header::SET_COOKIE, value);
            Ok(resp)
        }
        Err(e) if e.code == ErrorCode::Unauthorized || e.code == ErrorCode::TooManyRequests => {
            let message = match (e.code, e.auth_error) {
                (ErrorCode::TooManyRequests, _) => "Too many attempts: wait a moment before trying again.",
                (_, Some("mfa_required")) => "This account needs its second-factor code.",
                _ => "The username, password or code is not correct.",
            };
            let mut resp = login_page(Some(message));
            *resp.status_mut() = if e.code == ErrorCode::TooManyRequests {
                axum::http::StatusCode::TOO_MANY_REQUESTS
            } else {
                axum::http::StatusCode::UNAUTHORIZED
            };
            Ok(resp)
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    state.identity.end_console_session(&console).await?;
    let mut resp = Redirect::to("/console/login").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    Ok(resp)
}

/// The start page: who is signed in and what they may do.
pub async fn home(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    let p = &console.principal;
    let can = |perm| roles_have(&p.roles, perm);
    let org = state.identity.organization(p, p.org_id).await?;
    Ok(views::page(
        &console,
        "Console",
        html! {
            h1 { "Welcome" }
            p { "Organisation: " strong { (org.name) } " · roles: " (p.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")) }
            ul.tiles {
                @if can(Permission::UsersManage) && !can(Permission::OrganizationsManage) { li { a href="/console/users" { "Manage users" } } }
                @if can(Permission::ClientsManage) && !can(Permission::OrganizationsManage) { li { a href="/console/clients" { "Manage client keys" } } }
                @if can(Permission::ReportsRead) { li { a href="/console/subjects" { "Find a subject" } } }
                @if can(Permission::AnalysesCreate) { li { a href="/console/analyses/new" { "Submit an analysis" } } }
                @if can(Permission::AuditRead) { li { a href="/console/audit" { "Audit trail" } } }
                @if can(Permission::OrganizationsManage) { li { a href="/console/organizations" { "Organisations" } } }
                @if can(Permission::ClusterRead) { li { a href="/console/cluster" { "Cluster" } } }
            }
        },
    )
    .into_response())
}
