//! HTTP.

use super::*;

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

/// Sends a request; returns its status and its body as JSON (`Null` when empty, a string when
/// not JSON, so a test can still show it).
///
/// # Panics
///
/// When the request gets no answer.
pub(crate) async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}"));
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("a {status} answer's body broke off: {e}"));
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

/// A client of data-streams' HTTP API.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    /// A client of the API at `base` (`http://127.0.0.1:PORT`), sending `token` as Bearer.
    pub(crate) fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.trim_end_matches('/').to_string(),
            token: token.map(str::to_string),
            http: http_client(),
        }
    }

    /// A request to `path` (`/streams/x`), with the token.
    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// `GET path`: status and body.
    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.request(Method::GET, path)).await
    }

    async fn expect(&self, request: RequestBuilder, want: StatusCode, what: &str) -> Value {
        let (status, body) = send(request).await;
        assert_eq!(status, want, "{what}: {body}");
        body
    }

    /// `GET /metrics`: Prometheus text.
    pub(crate) async fn metrics(&self) -> String {
        let response = self
            .request(Method::GET, "/metrics")
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.expect("the metrics' text")
    }

    /// `GET /health`.
    pub(crate) async fn health(&self) -> Value {
        self.expect(
            self.request(Method::GET, "/health"),
            StatusCode::OK,
            "health",
        )
        .await
    }

    /// Connected workers, as `/health` counts them (also while storage is degraded).
    pub(crate) async fn workers(&self) -> u64 {
        let (_, health) = self.get("/health").await;
        health["workers"]
            .as_u64()
            .unwrap_or_else(|| panic!("no worker count in {health}"))
    }

    /// Waits until `/health` counts `count` workers.
    pub(crate) async fn wait_workers(&self, count: u64) {
        wait_until(
            &format!("{count} connected worker(s)"),
            CONVERGE_WITHIN,
            || async { self.workers().await == count },
        )
        .await;
    }

    /// `POST /streams/{name}/start`: the stream's status.
    pub(crate) async fn start_stream(&self, name: &str, body: Value) -> Value {
        let request = self
            .request(Method::POST, &format!("/streams/{name}/start"))
            .json(&body);
        let (status, answer) = send(request).await;
        assert!(status.is_success(), "start {name}: {status} {answer}");
        answer
    }

    /// `POST /streams/{name}/stop`: the stream's status.
    pub(crate) async fn stop_stream(&self, name: &str) -> Value {
        let request = self.request(Method::POST, &format!("/streams/{name}/stop"));
        self.expect(request, StatusCode::OK, &format!("stop {name}"))
            .await
    }

    /// `POST /streams/{name}/resync`: status and body.
    pub(crate) async fn resync_stream(&self, name: &str) -> (StatusCode, Value) {
        send(self.request(Method::POST, &format!("/streams/{name}/resync"))).await
    }

    /// `DELETE /streams/{name}`: status and body.
    pub(crate) async fn delete_stream(&self, name: &str) -> (StatusCode, Value) {
        send(self.request(Method::DELETE, &format!("/streams/{name}"))).await
    }

    /// `GET /streams/{name}`.
    pub(crate) async fn status(&self, name: &str) -> Value {
        let request = self.request(Method::GET, &format!("/streams/{name}"));
        self.expect(request, StatusCode::OK, &format!("status of {name}"))
            .await
    }

    /// `GET /streams`: every stream's status.
    pub(crate) async fn list_streams(&self) -> Vec<Value> {
        let body = self
            .expect(
                self.request(Method::GET, "/streams"),
                StatusCode::OK,
                "streams",
            )
            .await;
        match &body["streams"] {
            Value::Array(streams) => streams.clone(),
            _ => panic!("no streams array in {body}"),
        }
    }

    /// `GET /streams/{name}/runs`: newest first.
    pub(crate) async fn runs(&self, name: &str) -> Vec<Value> {
        let request = self.request(Method::GET, &format!("/streams/{name}/runs"));
        let body = self
            .expect(request, StatusCode::OK, &format!("runs of {name}"))
            .await;
        match &body["runs"] {
            Value::Array(runs) => runs.clone(),
            _ => panic!("no runs array in {body}"),
        }
    }

    /// Every stored record, live (`archived=false`) or archived (`archived=true`), paged 1,000
    /// at a time through `next`.
    ///
    /// # Panics
    ///
    /// When a record shows up twice: paging must visit each exactly once.
    pub(crate) async fn all_records(&self, name: &str, archived: bool) -> Vec<Value> {
        const MAX_PAGES: usize = 10_000;
        let mut records = Vec::new();
        let mut ids = HashSet::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("limit", "1000".to_string()),
                ("archived", archived.to_string()),
            ];
            if let Some(after) = &after {
                query.push(("after", after.clone()));
            }
            let request = self
                .request(Method::GET, &format!("/streams/{name}/records"))
                .query(&query);
            let body = self
                .expect(request, StatusCode::OK, &format!("records of {name}"))
                .await;
            let Value::Array(page) = &body["records"] else {
                panic!("no records array in {body}");
            };
            for record in page {
                let id = record["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("a record without a string id: {record}"));
                assert!(
                    ids.insert(id.to_string()),
                    "record {id} appeared twice while paging {name}'s records (archived={archived})"
                );
                records.push(record.clone());
            }
            after = match &body["next"] {
                Value::Null => return records,
                Value::String(next) => Some(next.clone()),
                other => Some(other.to_string()),
            };
        }
        panic!("paging {name}'s records did not end after {MAX_PAGES} pages")
    }

    /// Waits until the stream is in `state` (`running`, `pending`, `stopped`); its status.
    pub(crate) async fn wait_state(&self, name: &str, state: &str) -> Value {
        wait_for(
            &format!("stream {name} to be {state}"),
            CONVERGE_WITHIN,
            || async {
                let status = self.status(name).await;
                let reached = status["state"] == state;
                reached.then_some(status)
            },
        )
        .await
    }
}

/// Asserts an answer is `want` with the API's error body: `{"error":{"code","message"}}`, the
/// code in snake_case, the message not empty.
pub(crate) fn assert_error(status: StatusCode, body: &Value, want: u16, context: &str) {
    assert_eq!(status.as_u16(), want, "{context}: {body}");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: no error.code in {body}"));
    assert!(
        !code.is_empty()
            && code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "{context}: the code {code:?} is not snake_case"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{context}: no error.message in {body}"
    );
}
