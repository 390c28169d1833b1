//! Pages of an organisation's administrator (and what auditors may read): users (create with
//! roles, disable, unlock, sign out everywhere), client keys (create with scopes — the secret is
//! shown once —, rotate, revoke), the organisation's image-storage setting, and the audit trail.
//! Each action is one call of the service the REST API calls.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use dermagate_domain::rbac::{roles_have, Permission};
use dermagate_domain::records::{Role, UserStatus};
use dermagate_domain::services::organizations::OrganizationChange;
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::CsrfOnly;
use super::error::PageError;
use super::session::Console;
use super::views::{self, action_button, csrf, when};
use crate::error::ApiError;
use crate::state::AppState;

pub async fn users(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    let p = &console.principal;
    let list = state.identity.list_users(p, p.org_id).await?;
    let manage = roles_have(&p.roles, Permission::UsersManage);
    Ok(views::page(
        &console,
        "Users",
        html! {
            h1 { "Users" }
            table {
                caption { "People of your organisation" }
                thead { tr { th scope="col" { "Username" } th scope="col" { "Roles" } th scope="col" { "Status" } th scope="col" { "Second factor" } th scope="col" { "Created" } @if manage { th scope="col" { "Actions" } } } }
                tbody {
                    @for u in &list {
                        tr {
                            td { (u.username) }
                            td { (u.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")) }
                            td { @if u.status == UserStatus::Active { "active" } @else { "disabled" } }
                            td { @if u.has_confirmed_totp() { "yes" } @else { "no" } }
                            td { (when(u.created_at_ms)) }
                            @if manage {
                                td.actions {
                                    @if u.id.to_string() != p.id {
                                        @if u.status == UserStatus::Active {
                                            (action_button(&console, &format!("/console/users/{}/disable", u.id), "Disable"))
                                        } @else {
                                            (action_button(&console, &format!("/console/users/{}/enable", u.id), "Enable"))
                                        }
                                        (action_button(&console, &format!("/console/users/{}/unlock", u.id), "Unlock"))
                                        (action_button(&console, &format!("/console/users/{}/signout", u.id), "Sign out everywhere"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if manage {
                h2 { "Create a user" }
                form.card method="post" action="/console/users" {
                    (csrf(&console))
                    label for="username" { "Username" }
                    input #username name="username" type="text" required minlength="3" maxlength="64" pattern="[A-Za-z0-9._@\\-]{3,64}" autocomplete="off";
                    label for="password" { "Initial password (at least 12 characters)" }
                    input #password name="password" type="password" required autocomplete="new-password" maxlength="1024";
                    fieldset {
                        legend { "Roles" }
                        @for role in [Role::OrgAdmin, Role::Clinician, Role::Auditor] {
                            label.check {
                                input type="checkbox" name=(format!("role_{}", role.name())) value="on";
                                " " (role.name())
                            }
                        }
                    }
                    button type="submit" { "Create user" }
                }
            }
        },
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    csrf: String,
    username: String,
    password: String,
    role_org_admin: Option<String>,
    role_clinician: Option<String>,
    role_auditor: Option<String>,
}

pub async fn create_user(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<NewUserForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let roles: Vec<Role> = [
        (form.role_org_admin.is_some(), Role::OrgAdmin),
        (form.role_clinician.is_some(), Role::Clinician),
        (form.role_auditor.is_some(), Role::Auditor),
    ]
    .into_iter()
    .filter_map(|(on, r)| on.then_some(r))
    .collect();
    let p = &console.principal;
    let user = state.identity.create_user(p, p.org_id, form.username, form.password, &roles).await?;
    tracing::info!(user_id = %user.id, by = %p.id, "user created from the console");
    Ok(Redirect::to("/console/users").into_response())
}

pub async fn user_action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found("user"))?;
    let p = &console.principal;
    match action.as_str() {
        "disable" => {
            state.identity.change_user(p, p.org_id, id, None, Some(UserStatus::Disabled)).await?;
        }
        // Enabling also clears the username's sign-in throttle: the administrator's unlock.
        "enable" | "unlock" => {
            state.identity.change_user(p, p.org_id, id, None, Some(UserStatus::Active)).await?;
        }
        "signout" => state.identity.sign_out_everywhere(p, id).await?,
        _ => return Err(ApiError::not_found("action").into()),
    }
    Ok(Redirect::to("/console/users").into_response())
}

const SCOPES: [(&str, &str); 3] = [
    ("analyses:write", "scope_analyses_write"),
    ("reports:read", "scope_reports_read"),
    ("subjects:erase", "scope_subjects_erase"),
];

pub async fn clients(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    let p = &console.principal;
    let list = state.identity.list_clients(p, p.org_id).await?;
    Ok(views::page(
        &console,
        "Client keys",
        html! {
            h1 { "Client keys" }
            table {
                caption { "Machine credentials of your organisation" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Client id" } th scope="col" { "Scopes" } th scope="col" { "Status" } th scope="col" { "Created" } th scope="col" { "Actions" } } }
                tbody {
                    @for c in &list {
                        tr {
                            td { (c.name) }
                            td { code { (c.client_id) } }
                            td { (c.scopes.join(" ")) }
                            td { @if c.revoked { "revoked" } @else { "active" } }
                            td { (when(c.created_at_ms)) }
                            td.actions {
                                @if !c.revoked {
                                    (action_button(&console, &format!("/console/clients/{}/rotate", c.client_id), "Rotate secret"))
                                    (action_button(&console, &format!("/console/clients/{}/revoke", c.client_id), "Revoke"))
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Create a client key" }
            form.card method="post" action="/console/clients" {
                (csrf(&console))
                label for="name" { "Name" }
                input #name name="name" type="text" required maxlength="200";
                fieldset {
                    legend { "Scopes" }
                    @for (scope, field) in SCOPES {
                        label.check {
                            input type="checkbox" name=(field) value="on" checked[scope != "subjects:erase"];
                            " " (scope)
                        }
                    }
                }
                button type="submit" { "Create client key" }
            }
        },
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct NewClientForm {
    #[serde(default)]
    csrf: String,
    name: String,
    scope_analyses_write: Option<String>,
    scope_reports_read: Option<String>,
    scope_subjects_erase: Option<String>,
}

/// The one page that shows a client secret: it is kept only as a hash.
fn secret_page(console: &Console, title: &str, client_id: &str, secret: &str) -> Response {
    views::page(
        console,
        title,
        html! {
            h1 { (title) }
            p.notice role="status" { "Copy the secret now: it is shown only once and cannot be recovered." }
            dl.card {
                dt { "Client id" } dd { code #client-id { (client_id) } }
                dt { "Client secret" } dd { code #client-secret { (secret) } }
            }
            p { a href="/console/clients" { "Back to client keys" } }
        },
    )
    .into_response()
}

pub async fn create_client(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<NewClientForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let scopes: Vec<String> = [
        (form.scope_analyses_write.is_some(), SCOPES[0].0),
        (form.scope_reports_read.is_some(), SCOPES[1].0),
        (form.scope_subjects_erase.is_some(), SCOPES[2].0),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, s)| s.to_string())
    .collect();
    if scopes.is_empty() {
        return Err(ApiError::validation("scopes", "required", "choose at least one scope").into());
    }
    let p = &console.principal;
    let new = state.identity.create_client(p, p.org_id, &form.name, Some(scopes), false).await?;
    let mut resp = secret_page(&console, "Client key created", &new.client.client_id, &new.secret);
    *resp.status_mut() = StatusCode::CREATED;
    Ok(resp)
}

pub async fn client_action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let p = &console.principal;
    match action.as_str() {
        "revoke" => {
            state.identity.revoke_client(p, p.org_id, &id).await?;
            Ok(Redirect::to("/console/clients").into_response())
        }
        "rotate" => {
            let overlap = state.settings.client_secret_overlap;
            let new = state.identity.rotate_client_secret(p, p.org_id, &id, overlap).await?;
            Ok(secret_page(&console, "Client secret rotated", &new.client.client_id, &new.secret))
        }
        _ => Err(ApiError::not_found("action").into()),
    }
}

pub async fn organization(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    let p = &console.principal;
    p.require(Permission::OrganizationSettings)?;
    let org = state.identity.organization(p, p.org_id).await?;
    Ok(views::page(
        &console,
        "Organisation",
        html! {
            h1 { "Organisation " (org.name) }
            dl.card {
                dt { "Id" } dd { code { (org.id) } }
                dt { "Contract reference" } dd { (org.attestation.contract_reference) }
                dt { "Attested by" } dd { (org.attestation.attested_by) }
                dt { "Stored images" } dd { @if org.store_images { "kept (re-encoded, no metadata)" } @else { "not kept" } }
            }
            h2 { "Image storage" }
            form.card method="post" action="/console/organization" {
                (csrf(&console))
                label.check {
                    input type="checkbox" name="store_images" value="on" checked[org.store_images];
                    " Keep a metadata-free copy of each analysed image"
                }
                button type="submit" { "Save" }
            }
        },
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct SettingsForm {
    #[serde(default)]
    csrf: String,
    store_images: Option<String>,
}

pub async fn organization_settings(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<SettingsForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let p = &console.principal;
    let change = OrganizationChange { name: None, status: None, store_images: Some(form.store_images.is_some()) };
    state.identity.change_organization(p, p.org_id, change).await?;
    Ok(Redirect::to("/console/organization").into_response())
}

pub async fn audit_trail(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    let p = &console.principal;
    let records = state.audit.trail(p, p.org_id, 0, 100_000).await?;
    let latest: Vec<_> = records.iter().rev().take(200).collect();
    Ok(views::page(
        &console,
        "Audit trail",
        html! {
            h1 { "Audit trail" }
            p { "The latest " (latest.len()) " of " (records.len()) " records of your organisation's hash chain, newest first." }
            table {
                caption { "Audit records" }
                thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "Actor" } th scope="col" { "Target" } th scope="col" { "Outcome" } } }
                tbody {
                    @for r in latest {
                        tr {
                            td { (r.seq) }
                            td { (when(r.at_ms)) }
                            td { (r.event.action) }
                            td { (r.event.actor) }
                            td { code { (r.event.target.chars().take(24).collect::<String>()) } }
                            td { (r.event.outcome) }
                        }
                    }
                }
            }
        },
    )
    .into_response())
}
