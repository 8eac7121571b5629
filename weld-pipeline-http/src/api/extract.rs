//! What the handlers take from a request's head: a stream's `{name}` from the path, and a query
//! string, each read and checked once, for every route, with its rejections answered in the
//! API's error shape. The path's type also describes the parameter in the OpenAPI document, so
//! the document and the check cannot differ.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::{ObjectBuilder, Required, Type};
use utoipa::IntoParams;
use weld_pipeline::StreamName;

use super::error::{cut, ApiError};

/// The `{name}` of a stream route, as written and checked. A name that is not a stream name is
/// a 422 on every route, also where it could only be unknown: the caller learns what is wrong.
/// The name as written is kept for the 404 of a stream that does not exist.
pub(crate) struct StreamPath(pub(crate) String, pub(crate) StreamName);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        let stream = StreamName::new(&name).map_err(|_| {
            ApiError::invalid(format!(
                "{:?} is not a stream name ({})",
                cut(&name),
                StreamName::PATTERN
            ))
        })?;
        Ok(StreamPath(name, stream))
    }
}

impl IntoParams for StreamPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(StreamName::PATTERN));
        vec![ParameterBuilder::new()
            .name("name")
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(format!("The stream: `{}`", StreamName::PATTERN)))
            .schema(Some(schema))
            .build()]
    }
}

/// A query string read into `T`, its rejections (a repeated key, bad percent-encoding) answered
/// in the API's shape.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(query) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
        Ok(ApiQuery(query))
    }
}
