//! A Server-Sent Events client for the tests: opens `/v1/events` with a ticket and parses the
//! messages.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{Api, Server};

/// One parsed SSE message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub event: String,
    pub data: Value,
}

pub struct Stream {
    response: reqwest::Response,
    buffer: String,
}

impl Stream {
    /// Opens a stream after every security event so far (see [`Server::audit_settled`]).
    pub async fn open(server: &Server, api: &Api, last_event_id: Option<&str>) -> Self {
        server.audit_settled().await;
        let (status, ticket) = api.post("/v1/events/ticket", &json!({}), None).await;
        assert_eq!(status, StatusCode::OK, "{ticket}");
        let url = server.url(&format!("/v1/events?ticket={}", ticket["ticket"].as_str().expect("ticket")));
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.expect("stream");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self { response, buffer: String::new() }
    }

    /// A stream already opened (status checked by the caller).
    pub fn from_response(response: reqwest::Response) -> Self {
        Self { response, buffer: String::new() }
    }

    /// The next `n` messages (heartbeat comments skipped), failing after 10 s without one.
    pub async fn next(&mut self, n: usize) -> Vec<Message> {
        self.next_within(n, Duration::from_secs(10)).await
    }

    /// The next `n` messages, failing after `wait` without one.
    pub async fn next_within(&mut self, n: usize, wait: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if !data.is_empty() {
                    out.push(Message { id, event, data: serde_json::from_str(&data).expect("json data") });
                }
            }
            if out.len() >= n {
                break;
            }
            let chunk = tokio::time::timeout(wait, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {wait:?} after {} of {n}", out.len()))
                .expect("read")
                .expect("the stream ended");
            self.buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
        out
    }

    /// Whether the server ends the stream within `wait` (messages before the end are dropped).
    pub async fn closes_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => {}
                Ok(_) => return true,
            }
        }
    }

    /// Whether a heartbeat comment (`: heartbeat`) arrives within `wait`, before any event.
    pub async fn heartbeat_within(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.response.chunk()).await {
            Ok(Ok(Some(chunk))) => std::str::from_utf8(&chunk).expect("utf-8") == ": heartbeat\n\n",
            _ => false,
        }
    }

    /// Whether a message arrives within `wait`.
    pub async fn quiet_for(&mut self, wait: Duration) -> bool {
        match tokio::time::timeout(wait, self.response.chunk()).await {
            Err(_) => true,
            Ok(Ok(Some(chunk))) => std::str::from_utf8(&chunk).expect("utf-8").trim_start().starts_with(':'),
            Ok(_) => false,
        }
    }
}
