//! A JSON extractor whose rejections are RFC 9457 problems instead of axum's plain text.

use axum::extract::FromRequest;

use crate::error::ApiError;

#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);
