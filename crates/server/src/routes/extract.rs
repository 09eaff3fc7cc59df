//! Extractors that turn bad input into the protocol's envelope instead of axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body within the configured size limit; errors become 1003 (400, or 413 when too large)
/// and say what is wrong with the shape, never echoing values.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest("could not read the request body".into())
            }
        })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Parses JSON; the message names the position and the kind of problem but not the input.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body keygate reads is a JSON object. Checked here because serde also fills a struct
    // from an array of its fields in order: `["<clientId>", "<secret>"]` would pass as getToken.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::BadRequest("request body must be a JSON object".into()));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => "is not valid JSON",
            Category::Data => "has a field of the wrong type or is missing one",
        };
        ApiError::BadRequest(format!("request body {what} (line {}, column {})", e.line(), e.column()))
    })
}
