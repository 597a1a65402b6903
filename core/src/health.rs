//! `/healthz` answered by the core on the reader thread, from the status the session
//! layer publishes, so that a health check is answered while the control plane works
//! through a burst (behind the 9:00 meeting burst it waited up to ~0.9 s). A failed log
//! is known here and answered at once; until a status is published, the HTTP layer
//! answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::log::Durability;
use crate::sync::lock;

/// The published status and what the core answered with it.
#[derive(Debug)]
pub struct Health {
    published: Mutex<Option<(u16, String)>>,
    durability: Arc<Durability>,
    answered: AtomicU64,
}

impl Health {
    /// No status published yet; `durability` tells of a failed log.
    pub fn new(durability: Arc<Durability>) -> Self {
        Health {
            published: Mutex::new(None),
            durability,
            answered: AtomicU64::new(0),
        }
    }

    /// Sets the status code and JSON body of the next answers.
    pub fn publish(&self, status: u16, body: &str) {
        *lock(&self.published) = Some((status, body.to_owned()));
    }

    /// `/healthz` requests the core answered.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// The whole response to `head` when it is a `GET` or `HEAD` of `/healthz` the core
    /// answers (it then closes the connection).
    pub fn answer(&self, head: &[u8]) -> Option<Vec<u8>> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        request.parse(head).ok()?.is_complete().then_some(())?;
        let method = request.method?;
        let path = request.path?.split('?').next()?;
        if path != "/healthz" || !matches!(method, "GET" | "HEAD") {
            return None;
        }
        let (status, body) = match self.durability.failed() {
            Some(reason) => {
                let reason = format!("the log is not taking writes: {reason}");
                let reason = serde_json::to_string(&reason).ok()?;
                (503, format!(r#"{{"status":"degraded","reason":{reason}}}"#))
            }
            None => lock(&self.published).clone()?,
        };
        self.answered.fetch_add(1, Ordering::Relaxed);
        Some(response(status, &body, method == "HEAD"))
    }
}

fn response(status: u16, body: &str, head_only: bool) -> Vec<u8> {
    let reason = if status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         server: rushhour\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Vec<u8> {
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    }

    fn text(response: Option<Vec<u8>>) -> String {
        String::from_utf8(response.expect("answered")).unwrap()
    }

    #[test]
    fn answers_only_healthz_and_only_once_published() {
        let health = Health::new(Arc::default());
        assert_eq!(
            health.answer(&get("/healthz")),
            None,
            "the HTTP layer answers"
        );
        health.publish(503, r#"{"status":"overloaded","waiting":3}"#);
        let answer = text(health.answer(&get("/healthz?probe=1")));
        assert!(
            answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{answer}"
        );
        assert!(
            answer.contains("content-length: 35\r\n") && answer.contains("connection: close\r\n")
        );
        assert!(answer.ends_with("\r\n\r\n{\"status\":\"overloaded\",\"waiting\":3}"));
        health.publish(200, r#"{"status":"ok"}"#);
        let head = text(health.answer(b"HEAD /healthz HTTP/1.1\r\n\r\n"));
        assert!(
            head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        for other in [
            get("/metrics"),
            get("/healthzz"),
            b"POST /healthz HTTP/1.1\r\n\r\n".to_vec(),
            b"GET /healthz HTTP/1.1\r\nHost".to_vec(),
        ] {
            assert_eq!(
                health.answer(&other),
                None,
                "{:?}",
                String::from_utf8_lossy(&other)
            );
        }
        assert_eq!(health.answered(), 2);
    }

    #[test]
    fn a_failed_log_is_answered_without_the_session_layer() {
        let durability = Arc::new(Durability::default());
        let health = Health::new(durability.clone());
        durability.fail("disk \"full\"".into());
        let answer = text(health.answer(&get("/healthz")));
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["status"], "degraded");
        assert_eq!(
            body["reason"],
            "the log is not taking writes: disk \"full\""
        );
    }
}
