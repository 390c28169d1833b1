//! Small input rules shared by the services, each failing with the field and the rule it broke.

use super::ServiceError;

pub fn text(field: &str, value: &str, max: usize) -> Result<String, ServiceError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ServiceError::validation(field, "required", format!("{field} must not be empty")));
    }
    if trimmed.chars().count() > max {
        return Err(ServiceError::validation(field, "max_length", format!("{field} must be at most {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ServiceError::validation(
            field,
            "printable",
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(trimmed.to_string())
}

pub fn username(value: &str) -> Result<String, ServiceError> {
    let ok_len = (3..=64).contains(&value.len());
    let ok_chars = value.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if !ok_len || !ok_chars {
        return Err(ServiceError::validation(
            "username",
            "pattern",
            "username must be 3-64 characters of letters, digits and . _ @ -",
        ));
    }
    Ok(value.to_string())
}
