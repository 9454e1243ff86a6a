//! A stand-in for Twilio that answers with scripted replies (429 with `Retry-After`, 5xx, slow answers,
//! garbage, Twilio error codes) and records every request, so tests can check both what we sent and how we
//! classified the answer. A raw TCP server, so it can also answer what no real framework would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    /// A Twilio error body with `code`.
    pub fn twilio_error(status: u16, code: u32) -> Self {
        Self::new(
            status,
            format!(
                r#"{{"code": {code}, "message": "Error {code} for +15005550001", "more_info": "https://www.twilio.com/docs/errors/{code}", "status": {status}}}"#
            ),
        )
    }

    /// A created resource with `sid`, as Twilio answers a successful POST.
    pub fn created(sid: &str) -> Self {
        Self::new(201, format!(r#"{{"sid": "{sid}", "status": "queued"}}"#))
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request as the stand-in received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decides the answer to each request; called once per request, in the order they arrive.
pub type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

/// The running stand-in; stops when dropped.
pub struct FaultyTwilio {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultyTwilio {
    /// Answers the scripted replies in order; once they are used up, the last one again.
    pub async fn start(replies: Vec<Reply>) -> FaultyTwilio {
        let script = Mutex::new(VecDeque::from(replies));
        Self::start_with(Arc::new(move |_: &Recorded| {
            let mut script = script.lock().expect("lock");
            if script.len() > 1 {
                script.pop_front()
            } else {
                script.front().cloned()
            }
            .unwrap_or_else(|| Reply::new(500, "no reply scripted"))
        }))
        .await
    }

    /// Answers each request with what `respond` returns for it (for randomised faults).
    pub async fn start_with(respond: Responder) -> FaultyTwilio {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let respond = respond.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, recorded, respond).await;
                });
            }
        });
        FaultyTwilio {
            url,
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for FaultyTwilio {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    respond: Responder,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = &buffer[header_end..buffer.len().min(header_end + length)];
    let form = url::form_urlencoded::parse(body).into_owned().collect();
    let request = Recorded {
        method,
        path,
        headers,
        form,
    };
    let reply = respond(&request);
    recorded.lock().expect("lock").push(request);
    tokio::time::sleep(reply.delay).await;
    let mut response = format!(
        "HTTP/1.1 {} Scripted\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.body.len()
    );
    for (name, value) in &reply.headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("\r\n");
    response.push_str(&reply.body);
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
