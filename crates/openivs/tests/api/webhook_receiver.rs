//! A webhook event target in the test: an HTTP server taking openivs's signed event POSTs
//! (keep-alive, one request after another), which can be taken down (503 to everything). Shared
//! by the API suite and the cluster tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub(crate) const SECRET: &str = "whsec-test-secret";

/// A webhook request as received.
pub(crate) struct Delivery {
    pub(crate) timestamp: String,
    pub(crate) signature: String,
    pub(crate) body: String,
}

impl Delivery {
    pub(crate) fn envelope(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// An HTTP server taking webhook POSTs; while `down`, it answers 503 to everything.
pub(crate) struct Receiver {
    pub(crate) url: String,
    pub(crate) down: Arc<AtomicBool>,
    pub(crate) received: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub(crate) fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ivs-events", listener.local_addr().unwrap());
        let down = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (thread_down, thread_received) = (down.clone(), received.clone());
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let (down, received) = (thread_down.clone(), thread_received.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(connection.try_clone().unwrap());
                    let mut writer = connection;
                    // Keep-alive: one request after another on the connection.
                    loop {
                        let mut headers = Vec::new();
                        loop {
                            let mut line = String::new();
                            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end().to_owned();
                            if line.is_empty() {
                                break;
                            }
                            headers.push(line);
                        }
                        let header = |name: &str| {
                            headers
                                .iter()
                                .filter_map(|h| h.split_once(':'))
                                .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                                .map(|(_, v)| v.trim().to_owned())
                                .unwrap_or_default()
                        };
                        let length: usize = header("content-length").parse().unwrap_or(0);
                        let mut body = vec![0; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        let status = if down.load(Ordering::SeqCst) {
                            "503 Service Unavailable"
                        } else {
                            received.lock().unwrap().push(Delivery {
                                timestamp: header("x-openivs-timestamp"),
                                signature: header("x-openivs-signature"),
                                body: String::from_utf8(body).unwrap(),
                            });
                            "200 OK"
                        };
                        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        if writer.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { url, down, received }
    }

    /// The `detail`s received so far for the channel `arn`, in order of receipt.
    pub(crate) fn details_for(&self, arn: &str) -> Vec<(String, Value)> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .map(Delivery::envelope)
            .filter(|envelope| envelope["resources"][0] == arn)
            .map(|envelope| (envelope["detail-type"].as_str().unwrap().to_owned(), envelope["detail"].clone()))
            .collect()
    }

    /// Waits (at most `limit`) until `predicate` holds of the channel's events.
    pub(crate) fn wait_for(&self, arn: &str, limit: Duration, predicate: impl Fn(&[(String, Value)]) -> bool) {
        let deadline = Instant::now() + limit;
        while !predicate(&self.details_for(arn)) {
            assert!(Instant::now() < deadline, "events so far: {:#?}", self.details_for(arn));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The names of the stream and recording events among `events` (event_name or recording_status).
pub(crate) fn names(events: &[(String, Value)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, detail)| {
            detail["event_name"].as_str().or(detail["recording_status"].as_str()).unwrap_or_default().to_owned()
        })
        .collect()
}
