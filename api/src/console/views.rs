//! The console's page frame and shared pieces. No script and no inline style anywhere (the CSP
//! forbids both): layout comes from `/console/static/console.css`, and every control is a
//! labelled form element reachable by keyboard.

use axum::response::Html;
use dermagate_domain::rbac::{roles_have, Permission};
use maud::{html, Markup, DOCTYPE};

use super::session::Console;

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · dermagate console" }
                    link rel="stylesheet" href="/console/static/console.css";
                }
                body {
                    header.top { span.brand { "dermagate" } }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page of a signed-in user: navigation by what the user's roles allow.
pub fn page(console: &Console, title: &str, body: Markup) -> Html<String> {
    page_with_head(console, title, html! {}, body)
}

/// Like [`page`], with extra `<head>` elements (the cluster page's refresh).
pub fn page_with_head(console: &Console, title: &str, head: Markup, body: Markup) -> Html<String> {
    let roles = &console.principal.roles;
    let can = |p| roles_have(roles, p);
    let role_names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    (head)
                    title { (title) " · dermagate console" }
                    link rel="stylesheet" href="/console/static/console.css";
                }
                body {
                    header.top {
                        a.brand href="/console/" { "dermagate" }
                        nav aria-label="Console" {
                            ul {
                                @if can(Permission::UsersRead) { li { a href="/console/users" { "Users" } } }
                                @if can(Permission::ClientsManage) && !can(Permission::OrganizationsManage) {
                                    li { a href="/console/clients" { "Client keys" } }
                                }
                                @if can(Permission::OrganizationSettings) && !can(Permission::OrganizationsManage) {
                                    li { a href="/console/organization" { "Organisation" } }
                                }
                                @if can(Permission::ReportsRead) { li { a href="/console/subjects" { "Subjects" } } }
                                @if can(Permission::AnalysesCreate) { li { a href="/console/analyses/new" { "New analysis" } } }
                                @if can(Permission::AuditRead) { li { a href="/console/audit" { "Audit trail" } } }
                                @if can(Permission::OrganizationsManage) { li { a href="/console/organizations" { "Organisations" } } }
                                @if can(Permission::ClusterRead) { li { a href="/console/cluster" { "Cluster" } } }
                            }
                        }
                        form.signout method="post" action="/console/logout" {
                            (csrf(console))
                            span.who { (role_names.join(", ")) }
                            button type="submit" { "Sign out" }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// The hidden CSRF field every state-changing form carries.
pub fn csrf(console: &Console) -> Markup {
    html! { input type="hidden" name="csrf" value=(console.csrf_token()); }
}

/// A one-button form that posts to `action` (with the CSRF token).
pub fn action_button(console: &Console, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(console))
            button type="submit" { (label) }
        }
    }
}

/// A short date and time (UTC) of unix milliseconds.
pub fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(String::new, |d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
}

/// A percentage (given in percent) with one decimal.
pub fn percent(p: f64) -> String {
    format!("{p:.1} %")
}
