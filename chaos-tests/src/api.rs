//! The few HTTP calls the chaos workload makes, in one place: where to send them (the load
//! balancer or one node) and how an answer reads. Requests carry a short timeout so that a
//! request to a cut-off or frozen node ends as "unknown" instead of stalling a worker.

use std::time::Duration;

use serde_json::Value;

/// The load balancer's and every node's base URL, and one HTTPS client trusting the cluster CA.
#[derive(Clone)]
pub struct Targets {
    pub lb: Option<String>,
    pub nodes: Vec<(u64, String)>,
    pub client: reqwest::Client,
}

/// An answer: the HTTP status (`None` when no answer came) and the JSON body (or `Null`).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: Option<u16>,
    pub body: Value,
    pub retry_after: Option<Duration>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }

    pub fn str(&self, key: &str) -> Option<String> {
        self.body[key].as_str().map(String::from)
    }
}

impl Targets {
    /// The base URL of a target name: `lb` or `node<N>`.
    pub fn base(&self, target: &str) -> &str {
        if target == "lb" {
            if let Some(lb) = &self.lb {
                return lb;
            }
        }
        let id: u64 = target.trim_start_matches("node").parse().unwrap_or(1);
        self.nodes.iter().find(|(n, _)| *n == id).map_or(&self.nodes[0].1, |(_, url)| url)
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|(id, _)| format!("node{id}")).collect()
    }

    pub async fn send(&self, req: reqwest::RequestBuilder, timeout: Duration) -> Answer {
        match req.timeout(timeout).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = resp.json::<Value>().await.unwrap_or(Value::Null);
                Answer { status: Some(status), body, retry_after }
            }
            Err(_) => Answer { status: None, body: Value::Null, retry_after: None },
        }
    }

    pub fn get(&self, target: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.base(target)))
    }

    pub fn post(&self, target: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.base(target)))
    }

    pub fn patch(&self, target: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.patch(format!("{}{path}", self.base(target)))
    }

    pub fn delete(&self, target: &str, path: &str) -> reqwest::RequestBuilder {
        self.client.delete(format!("{}{path}", self.base(target)))
    }
}

/// A credential as a request sees it.
#[derive(Debug, Clone)]
pub enum Credential {
    Bearer(String),
    ApiKey(String),
}

impl Credential {
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::Bearer(t) => req.bearer_auth(t),
            Credential::ApiKey(k) => req.header("x-api-key", k),
        }
    }
}
