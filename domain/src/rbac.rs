//! Role-based access control as one table: which role holds which permission, which scope grants
//! which permission, and who may grant which role. The same table is printed in `docs/rbac.md`.

use crate::records::Role;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ClusterRead,
    ClusterManage,
    OrganizationsManage,
    OrganizationRead,
    /// The organisation's own data-handling settings (image storage opt-in).
    OrganizationSettings,
    UsersManage,
    UsersRead,
    ClientsManage,
    SigningKeysRotate,
    AnalysesCreate,
    ReportsRead,
    SubjectsErase,
    /// The organisation's audit trail (auditors; administrators of the organisation).
    AuditRead,
}

use Permission::*;

/// (role, permissions). Organisation scoping is separate: every role except `platform_admin`
/// acts only inside its own organisation.
pub const TABLE: &[(Role, &[Permission])] = &[
    (
        Role::PlatformAdmin,
        &[
            ClusterRead,
            ClusterManage,
            OrganizationsManage,
            OrganizationRead,
            OrganizationSettings,
            UsersManage,
            UsersRead,
            ClientsManage,
            SigningKeysRotate,
            AuditRead,
        ],
    ),
    (
        Role::OrgAdmin,
        &[
            OrganizationRead,
            OrganizationSettings,
            UsersManage,
            UsersRead,
            ClientsManage,
            ReportsRead,
            SubjectsErase,
            AnalysesCreate,
            AuditRead,
        ],
    ),
    (Role::Clinician, &[OrganizationRead, AnalysesCreate, ReportsRead]),
    (Role::Auditor, &[OrganizationRead, UsersRead, ReportsRead, AuditRead]),
];

pub fn role_has(role: Role, permission: Permission) -> bool {
    TABLE.iter().any(|(r, perms)| *r == role && perms.contains(&permission))
}

pub fn roles_have(roles: &[Role], permission: Permission) -> bool {
    roles.iter().any(|r| role_has(*r, permission))
}

/// Client keys carry scopes instead of roles; each scope grants exactly one permission.
pub const SCOPES: &[(&str, Permission)] =
    &[("analyses:write", AnalysesCreate), ("reports:read", ReportsRead), ("subjects:erase", SubjectsErase)];

pub fn scopes_have(scopes: &[String], permission: Permission) -> bool {
    SCOPES.iter().any(|(scope, p)| *p == permission && scopes.iter().any(|s| s == scope))
}

/// Which roles a caller may grant: a platform admin any, an org admin only non-admin roles of
/// its organisation. This is what makes mass-assignment of privileges impossible.
pub fn may_grant(granter: &[Role], role: Role) -> bool {
    if granter.contains(&Role::PlatformAdmin) {
        return true;
    }
    granter.contains(&Role::OrgAdmin) && matches!(role, Role::OrgAdmin | Role::Clinician | Role::Auditor)
}

#[cfg(test)]
mod tests {
    use super::*;

    // traces: FM-06
    #[test]
    fn only_platform_admin_manages_the_cluster_and_organisations() {
        for role in [Role::OrgAdmin, Role::Clinician, Role::Auditor] {
            assert!(!role_has(role, ClusterManage));
            assert!(!role_has(role, OrganizationsManage));
            assert!(!may_grant(&[role], Role::PlatformAdmin));
        }
        assert!(role_has(Role::PlatformAdmin, ClusterManage));
    }
}
