//! The fake HubSpot.

use super::*;

/// A running `fake-hubspot`, with its admin routes.
#[derive(Debug)]
pub(crate) struct Fake {
    pub(crate) process: Process,
    /// `http://127.0.0.1:PORT`, for `HUBSPOT_BASE_URL`.
    pub(crate) url: String,
    http: reqwest::Client,
}

/// Starts the fake with `contacts` contacts, on a free port. Its portal defines 12 custom
/// properties (a real one has hundreds: the source's own tests sync 300; here every stream reads
/// them all, and tens of thousands of contacts go through debug builds). Its legacy paths are
/// retired: the workers call the dated ones by default, and a call to a legacy one fails.
pub(crate) async fn start_fake(contacts: usize, extra_env: &[(&str, &str)]) -> Fake {
    let mut env = vec![
        ("FAKE_HUBSPOT_ADDR", "127.0.0.1:0".to_string()),
        ("FAKE_HUBSPOT_TOKEN", HUBSPOT_TOKEN.to_string()),
        ("FAKE_HUBSPOT_CONTACTS", contacts.to_string()),
        ("FAKE_HUBSPOT_CUSTOM_PROPERTIES", "12".to_string()),
        ("FAKE_HUBSPOT_LEGACY", "retired".to_string()),
    ];
    env.extend(
        extra_env
            .iter()
            .map(|(key, value)| (*key, value.to_string())),
    );
    let mut process = Process::spawn("fake-hubspot", &env);
    let line = process
        .wait_line("its listening line", READY_WITHIN, |line| {
            line.starts_with("fake HubSpot listening on ")
        })
        .await;
    let url = line
        .rsplit(' ')
        .next()
        .expect("a URL ends the line")
        .to_string();
    Fake {
        process,
        url,
        http: http_client(),
    }
}

impl Fake {
    async fn call(&self, request: RequestBuilder, what: &str) -> Value {
        let (status, body) = send(request).await;
        assert!(status.is_success(), "fake {what}: {status} {body}");
        body
    }

    /// Injects faults into the next matching requests: one plan
    /// (`{"kind":"status","status":503,"count":3}`) or an array of them, applied in order.
    pub(crate) async fn inject(&self, plans: Value) {
        let plans = if plans.is_array() {
            plans
        } else {
            Value::Array(vec![plans])
        };
        let request = self
            .http
            .post(format!("{}/_admin/faults", self.url))
            .json(&plans);
        self.call(request, "inject").await;
    }

    /// Changes the data set (`{"object":"contacts","modify":10,"create":5,"archive":3}`);
    /// returns the ids touched.
    pub(crate) async fn mutate(&self, mutation: Value) -> Value {
        let request = self
            .http
            .post(format!("{}/_admin/mutate", self.url))
            .json(&mutation);
        self.call(request, "mutate").await
    }

    /// What it served so far (`requests`, `searches`, `by_status`, ...).
    pub(crate) async fn stats(&self) -> Value {
        let request = self.http.get(format!("{}/_admin/stats", self.url));
        self.call(request, "stats").await
    }

    /// CRM requests received so far: counted on arrival, before any delay.
    pub(crate) async fn requests(&self) -> u64 {
        let stats = self.stats().await;
        stats["requests"]
            .as_u64()
            .unwrap_or_else(|| panic!("no request count in {stats}"))
    }

    /// Every contact it holds, live and archived: `{"id","updatedAt","archived","properties"}`.
    pub(crate) async fn dump_contacts(&self) -> Vec<Value> {
        let request = self
            .http
            .get(format!("{}/_admin/dump", self.url))
            .query(&[("object", "contacts")]);
        match self.call(request, "dump").await {
            Value::Array(records) => records,
            other => panic!("the fake's dump is not an array: {other}"),
        }
    }

    /// Its contacts as the set a stream must mirror.
    pub(crate) async fn contacts(&self) -> SourceSet {
        SourceSet::from_dump(self.dump_contacts().await)
    }
}
