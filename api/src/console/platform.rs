//! Pages of the platform administrator: organisations (create with the contract attestation,
//! suspend, reinstate), the cluster as this node sees it (refreshing itself every 5 s with a
//! `<meta>` refresh, no script), and signing-key rotation.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use dermagate_domain::rbac::Permission;
use dermagate_domain::records::{OrgStatus, PLATFORM_ORG_ID};
use dermagate_domain::services::organizations::{NewOrganization, OrganizationChange};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::CsrfOnly;
use super::error::PageError;
use super::session::Console;
use super::views::{self, action_button, csrf, when};
use crate::error::ApiError;
use crate::routes::cluster::cluster_view;
use crate::state::AppState;

pub async fn organizations(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    let p = &console.principal;
    p.require(Permission::OrganizationsManage)?;
    let list = state.identity.list_organizations(p).await?;
    Ok(views::page(
        &console,
        "Organisations",
        html! {
            h1 { "Organisations" }
            table {
                caption { "Tenants of the platform" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Status" } th scope="col" { "Contract" } th scope="col" { "Created" } th scope="col" { "Actions" } } }
                tbody {
                    @for o in &list {
                        tr {
                            td { (o.name) }
                            td { code { (o.id) } }
                            td { @if o.status == OrgStatus::Active { "active" } @else { "suspended" } }
                            td { (o.attestation.contract_reference) " (" (o.attestation.attested_by) ")" }
                            td { (when(o.created_at_ms)) }
                            td.actions {
                                @if o.id != PLATFORM_ORG_ID {
                                    @if o.status == OrgStatus::Active {
                                        (action_button(&console, &format!("/console/organizations/{}/suspend", o.id), "Suspend"))
                                    } @else {
                                        (action_button(&console, &format!("/console/organizations/{}/reinstate", o.id), "Reinstate"))
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Create an organisation" }
            form.card method="post" action="/console/organizations" {
                (csrf(&console))
                label for="name" { "Name" }
                input #name name="name" type="text" required maxlength="200";
                fieldset {
                    legend { "Attestation that it is a licensed healthcare provider" }
                    label for="contract_reference" { "Contract reference" }
                    input #contract_reference name="contract_reference" type="text" required maxlength="200";
                    label for="attested_by" { "Attested by" }
                    input #attested_by name="attested_by" type="text" required maxlength="200";
                }
                label.check {
                    input type="checkbox" name="store_images" value="on";
                    " Keep a metadata-free copy of analysed images"
                }
                fieldset {
                    legend { "First administrator (optional)" }
                    label for="admin_username" { "Username" }
                    input #admin_username name="admin_username" type="text" maxlength="64" autocomplete="off";
                    label for="admin_password" { "Initial password" }
                    input #admin_password name="admin_password" type="password" autocomplete="new-password" maxlength="1024";
                }
                button type="submit" { "Create organisation" }
            }
        },
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct NewOrganizationForm {
    #[serde(default)]
    csrf: String,
    name: String,
    #[serde(default)]
    contract_reference: String,
    #[serde(default)]
    attested_by: String,
    store_images: Option<String>,
    #[serde(default)]
    admin_username: String,
    #[serde(default)]
    admin_password: String,
}

pub async fn create_organization(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<NewOrganizationForm>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let p = &console.principal;
    let attestation = (!form.contract_reference.trim().is_empty() && !form.attested_by.trim().is_empty())
        .then(|| (form.contract_reference.clone(), form.attested_by.clone()));
    let new = NewOrganization { name: form.name, attestation, store_images: form.store_images.is_some() };
    let org = state.identity.create_organization(p, new).await?;
    if !form.admin_username.trim().is_empty() {
        // Recorded in the new organisation's trail as created by the platform (break-glass).
        let roles = [dermagate_domain::records::Role::OrgAdmin];
        state.identity.create_user(p, org.id, form.admin_username, form.admin_password, &roles).await?;
    }
    Ok(Redirect::to("/console/organizations").into_response())
}

pub async fn organization_action(
    State(state): State<AppState>,
    console: Console,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found("organization"))?;
    let status = match action.as_str() {
        "suspend" => OrgStatus::Suspended,
        "reinstate" => OrgStatus::Active,
        _ => return Err(ApiError::not_found("action").into()),
    };
    let change = OrganizationChange { name: None, status: Some(status), store_images: None };
    state.identity.change_organization(&console.principal, id, change).await?;
    Ok(Redirect::to("/console/organizations").into_response())
}

pub async fn cluster(State(state): State<AppState>, console: Console) -> Result<Response, PageError> {
    console.principal.require(Permission::ClusterRead)?;
    let view = cluster_view(&state).await;
    let ready = state.node.readiness().is_ok();
    Ok(views::page_with_head(
        &console,
        "Cluster",
        html! { meta http-equiv="refresh" content="5"; },
        html! {
            h1 { "Cluster" }
            dl.card {
                dt { "Leader" } dd #leader { @if let Some(l) = view.leader_id { "node " (l) } @else { "none" } }
                dt { "Term" } dd { (view.term) }
                dt { "Observed by" } dd { "node " (view.observed_by) @if ready { " (ready)" } @else { " (not ready)" } }
            }
            table {
                caption { "Members (this page refreshes every 5 seconds)" }
                thead { tr { th scope="col" { "Node" } th scope="col" { "API URL" } th scope="col" { "Voter" } th scope="col" { "Reachable" } th scope="col" { "Role" } th scope="col" { "Applied index" } th scope="col" { "Lag" } } }
                tbody {
                    @for n in &view.nodes {
                        tr {
                            td { (n.id) }
                            td { code { (n.api_url) } }
                            td { @if n.voter { "yes" } @else { "no" } }
                            td { @if n.reachable { "yes" } @else { "no" } }
                            td { (n.role.as_deref().unwrap_or("unknown")) }
                            td { (n.applied_index.map(|i| i.to_string()).unwrap_or_default()) }
                            td { (n.lag.map(|i| i.to_string()).unwrap_or_default()) }
                        }
                    }
                }
            }
            h2 { "Signing keys" }
            form.card method="post" action="/console/signing-keys/rotate" {
                (csrf(&console))
                p { "Rotation makes a new key active; the old one verifies the tokens it signed until they expire." }
                button type="submit" { "Rotate the signing key" }
            }
        },
    )
    .into_response())
}

pub async fn rotate_signing_key(
    State(state): State<AppState>,
    console: Console,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    console.check_csrf(&form.csrf)?;
    let p = &console.principal;
    p.require(Permission::SigningKeysRotate)?;
    let kid = dermagate_domain::services::maintenance::rotate_signing_key(&state.identity, &p.actor()).await?;
    Ok(views::page(
        &console,
        "Signing key rotated",
        html! {
            h1 { "Signing key rotated" }
            p.notice role="status" { "The new signing key is " code { (kid) } "." }
            p { a href="/console/cluster" { "Back to the cluster" } }
        },
    )
    .into_response())
}
