//! The HTTP endpoint every long-running sohoa process serves: `/metrics` for Prometheus,
//! `/healthz` and `/readyz` for the orchestrator.
//!
//! A deliberately small HTTP/1.1 responder: three GET routes do not justify a web
//! framework. It still has to survive what an open port meets: clients that connect and
//! send nothing (each held connection is a file descriptor), floods of connections, and
//! requests of other methods. So a request head must arrive within [`READ_TIMEOUT`] and
//! fit in [`MAX_HEAD`], at most [`MAX_CONNECTIONS`] are served at once (the rest are told
//! 503 and closed at once), and only GET and HEAD are answered.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a process exposes.
pub trait Exposition: Send + Sync + 'static {
    /// The metrics in Prometheus' text format.
    fn render(&self) -> String;
    /// Whether `/readyz` answers 200.
    fn is_ready(&self) -> bool;
}

/// Time for a client to send its request head. Prometheus and kubelet send theirs at once.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for a client to take the response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are answered 503 and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// The largest request head read. GET requests have no body.
pub const MAX_HEAD: usize = 8 * 1024;

/// Serve `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves.
pub async fn serve<E: Exposition>(
    listener: TcpListener,
    metrics: Arc<E>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (mut sock, _) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin on the error.
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(async move {
                let resp = response("503 Service Unavailable", "text/plain", "busy\n", true);
                let _ = tokio::time::timeout(WRITE_TIMEOUT, sock.write_all(resp.as_bytes())).await;
            });
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let Ok(Some(head)) = tokio::time::timeout(READ_TIMEOUT, read_head(&mut sock)).await
            else {
                return; // silent or oversized: dropping the socket closes it
            };
            let resp = answer(&head, &*metrics);
            let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                sock.write_all(resp.as_bytes()).await?;
                sock.shutdown().await
            })
            .await;
        });
    }
}

/// Read until the end of the request head; `None` if the client hung up or sent more
/// than [`MAX_HEAD`] without ending it.
async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut req = vec![0u8; MAX_HEAD];
    let mut len = 0;
    while len < req.len() {
        match sock.read(&mut req[len..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => len += n,
        }
        if req[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&req[..len]).into_owned());
        }
    }
    None
}

/// Anything but GET and HEAD.
const METHOD_NOT_ALLOWED: &str = "HTTP/1.1 405 Method Not Allowed\r\nallow: GET, HEAD\r\n\
    content-type: text/plain\r\ncontent-length: 19\r\nconnection: close\r\n\r\nmethod not allowed\n";

/// The response to a request head, whole.
fn answer<E: Exposition>(head: &str, metrics: &E) -> String {
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let with_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return METHOD_NOT_ALLOWED.to_owned(),
    };
    let (status, ctype, body) = match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" if metrics.is_ready() => ("200 OK", "text/plain", "ready\n".to_owned()),
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    response(status, ctype, &body, with_body)
}

fn response(status: &str, ctype: &str, body: &str, with_body: bool) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        body.len(),
        if with_body { body } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(bool);

    impl Exposition for Fixed {
        fn render(&self) -> String {
            "sohoa_up 1\n".into()
        }
        fn is_ready(&self) -> bool {
            self.0
        }
    }

    #[test]
    fn only_get_and_head_are_answered_and_head_has_no_body() {
        let get = answer("GET /metrics HTTP/1.1\r\n\r\n", &Fixed(true));
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(get.contains("content-length: 11\r\n") && get.ends_with("sohoa_up 1\n"));
        let head = answer("HEAD /metrics HTTP/1.1\r\n\r\n", &Fixed(true));
        assert!(head.contains("content-length: 11\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "no body: {head}");
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "BREW"] {
            let r = answer(&format!("{method} /metrics HTTP/1.1\r\n\r\n"), &Fixed(true));
            assert!(r.starts_with("HTTP/1.1 405 "), "{method}: {r}");
            assert!(r.contains("allow: GET, HEAD\r\n"), "{r}");
            let declared: usize = r
                .split("content-length: ")
                .nth(1)
                .and_then(|s| s.split("\r\n").next())
                .and_then(|n| n.parse().ok())
                .unwrap();
            assert_eq!(declared, r.split("\r\n\r\n").nth(1).unwrap().len());
        }
        let not_ready = answer("GET /readyz HTTP/1.1\r\n\r\n", &Fixed(false));
        assert!(not_ready.starts_with("HTTP/1.1 503 "), "{not_ready}");
    }
}
