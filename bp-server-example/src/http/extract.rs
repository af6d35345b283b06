//! Request extractors whose rejections are RFC 9457 problems (axum's own answer in plain text),
//! documented in the OpenAPI description like axum's.

use aide::OperationInput;
use aide::generate::GenContext;
use aide::openapi::Operation;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bp_core::api::json_pointer;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::http::problem::ApiError;

/// A JSON body (`application/json`), unknown fields refused where the type says so.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &axum::extract::rejection::JsonRejection) -> ApiError {
    use axum::extract::rejection::JsonRejection as J;
    match rejection {
        J::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        J::BytesRejection(_) => ApiError::PayloadTooLarge,
        // serde's message names the field and what is wrong with it, never a value.
        J::JsonDataError(e) => {
            let error = ApiError::Unprocessable(clip(&e.body_text()));
            match data_error_path(e) {
                Some(path) => error.at_pointer(&path),
                None => error,
            }
        }
        J::JsonSyntaxError(e) => ApiError::BadRequest(clip(&e.body_text())),
        _ => ApiError::BadRequest("the body is not valid JSON".to_owned()),
    }
}

/// The JSON Pointer of the member a JSON body's data error is about, from the path axum's `Json`
/// tracked while reading it (serde_path_to_error, the version axum uses: the error is found by
/// its type, so another version's names none). None for an error of the whole body (a missing
/// field of it) or a path with a segment it could not follow.
fn data_error_path(e: &axum::extract::rejection::JsonDataError) -> Option<String> {
    use serde_path_to_error::Segment;
    let tracked = std::error::Error::source(e)?.source()?;
    let tracked = tracked.downcast_ref::<serde_path_to_error::Error<serde_json::Error>>()?;
    let keys = tracked
        .path()
        .iter()
        .map(|segment| match segment {
            Segment::Map { key } | Segment::Enum { variant: key } => Some(key.clone()),
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Unknown => None,
        })
        .collect::<Option<Vec<String>>>()?;
    (!keys.is_empty()).then(|| json_pointer(keys.iter().map(String::as_str)))
}

/// The query parameter a query string's error is about: the string read again with its path
/// tracked (axum's `Query` does not track it). None when it names no single parameter.
fn query_error_parameter<T: DeserializeOwned>(query: &str) -> Option<String> {
    let form = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    let tracked = serde_path_to_error::deserialize::<_, T>(form).err()?;
    match tracked.path().iter().collect::<Vec<_>>().as_slice() {
        [serde_path_to_error::Segment::Map { key }] => Some(key.clone()),
        _ => None,
    }
}

/// Keeps messages short; serde messages can quote long input.
fn clip(s: &str) -> String {
    let s = s.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(s);
    s.chars().take(300).collect()
}

impl<T: JsonSchema> OperationInput for ApiJson<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::Json::<T>::operation_input(ctx, operation);
    }
}

/// A query string.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => {
                let error = ApiError::BadRequest(clip(&e.body_text()));
                match query_error_parameter::<T>(parts.uri.query().unwrap_or_default()) {
                    Some(parameter) => Err(error.at_parameter(&parameter)),
                    None => Err(error),
                }
            }
        }
    }
}

impl<T: JsonSchema> OperationInput for ApiQuery<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Query::<T>::operation_input(ctx, operation);
    }
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            // Ids that do not parse name nothing that exists.
            Err(_) => Err(ApiError::NotFound("resource")),
        }
    }
}

impl<T: JsonSchema> OperationInput for ApiPath<T> {
    fn operation_input(ctx: &mut GenContext, operation: &mut Operation) {
        axum::extract::Path::<T>::operation_input(ctx, operation);
    }
}
