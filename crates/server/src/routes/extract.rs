//! Extractors that turn bad input into the protocol's envelope instead of axum's plain text:
//! one rejection mapper per kind of input (body, path, query), so handlers never map errors.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::IntoResponse;
use keygate_auth::ApiError;
use keygate_core::{AccountId, ClientId};
use serde::de::DeserializeOwned;

/// A body that could not be read: 408 when the client stalled (the body read timeout), 413 when
/// over the configured limit, else 400.
pub fn body_rejection(rej: BytesRejection) -> ApiError {
    if keygate_auth::body::is_body_timeout(&rej) {
        return ApiError::RequestTimeout(rej.to_string());
    }
    if rej.into_response().status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge
    } else {
        ApiError::BadRequest("could not read the request body".into())
    }
}

/// A JSON body within the configured size limit; errors become 1003 (400, or 413 when too large)
/// and say what is wrong with the shape, never echoing values.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        parse(&bytes).map(JsonBody)
    }
}

/// Like [`JsonBody`], but an empty body (or only white space, or JSON `null`) is `T::default()`:
/// for actions whose fields are all optional (ban, rotate).
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_rejection)?;
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(Self(T::default()));
        }
        parse(&bytes).map(OptionalJson)
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

/// An identifier in the path, checked by its type: a malformed one answers 1003 with a message
/// saying what it must look like.
pub trait PathId: Sized + Send {
    fn parse_param(s: &str) -> Result<Self, ApiError>;
}

impl PathId for AccountId {
    fn parse_param(s: &str) -> Result<Self, ApiError> {
        Ok(keygate_ops::parse_account_id(s)?)
    }
}

impl PathId for ClientId {
    fn parse_param(s: &str) -> Result<Self, ApiError> {
        Ok(keygate_ops::parse_client_id(s)?)
    }
}

/// The route's one path parameter, as a typed id.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: PathId> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("the path parameter could not be read".into()))?;
        T::parse_param(&raw).map(Path)
    }
}

/// A query string; a malformed one answers 1003 naming the expected shape (`T::SHAPE`).
pub struct Query<T>(pub T);

/// The shape of a query string, for the message of a malformed one.
pub trait QueryShape {
    const SHAPE: &'static str;
}

impl<S: Send + Sync, T: DeserializeOwned + QueryShape> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|_: QueryRejection| ApiError::BadRequest(format!("query must be {}", T::SHAPE)))
    }
}
