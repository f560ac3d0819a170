//! A fault-injecting HTTP proxy in front of LocalStack: the binary is pointed at it
//! (`AWS_ENDPOINT_URL`) and it answers S3 requests the way a bad day on the network
//! does: 503 SlowDown, a reset connection, a body that stalls or is cut short.
//!
//! It speaks just enough HTTP/1.1 for the SDK: one request at a time per connection,
//! each forwarded to LocalStack on a connection of its own (`Connection: close`, so the
//! whole answer is read by reading to the end) and relayed, or spoilt.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Which requests a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// ListObjectsV2.
    List,
    /// GetObject.
    Get,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// `503 Slow Down`, S3's throttling answer.
    SlowDown,
    /// The connection is reset before any answer.
    Reset,
    /// The answer's head and `after` bytes of its body, then the connection closes.
    Cut { after: usize },
    /// The answer's head and `after` bytes of its body, then nothing, for a long time.
    Stall { after: usize },
}

/// A fault on the first `times` requests of a kind (`None`: on every one).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub target: Target,
    pub fault: Fault,
    pub times: Option<usize>,
}

#[derive(Default)]
struct State {
    rules: Vec<(Rule, usize)>,
    /// Every request seen: its kind and the fault it got, if any.
    seen: Vec<(Option<Target>, Option<String>)>,
}

/// The proxy, listening on a port of its own until dropped.
pub struct FaultProxy {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

const UPSTREAM: &str = "127.0.0.1:4566";

impl FaultProxy {
    /// Starts a proxy applying `rules` (in order: the first that matches and has
    /// faults left applies).
    pub fn start(rules: &[Rule]) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(Mutex::new(State {
            rules: rules.iter().map(|r| (*r, 0)).collect(),
            seen: Vec::new(),
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = state.clone();
        // A runtime of its own: the test blocks its thread on the binary meanwhile.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = async {
                        loop {
                            let Ok((client, _)) = listener.accept().await else { continue };
                            tokio::spawn(serve(client, shared.clone()));
                        }
                    } => {}
                }
            });
            runtime.shutdown_background();
        });
        FaultProxy {
            port,
            state,
            stop: Some(stop),
        }
    }

    /// The endpoint to give the binary.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests of a kind arrived, and how many of them got a fault.
    pub fn count(&self, target: Target) -> (usize, usize) {
        let state = self.state.lock().expect("proxy state");
        let of_kind = state.seen.iter().filter(|(t, _)| *t == Some(target));
        let all = of_kind.clone().count();
        (all, of_kind.filter(|(_, f)| f.is_some()).count())
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One client connection: request after request until it closes.
async fn serve(mut client: TcpStream, state: Arc<Mutex<State>>) {
    let mut pending = Vec::new();
    loop {
        let Some(request) = read_request(&mut client, &mut pending).await else {
            return;
        };
        let target = target_of(&request);
        let fault = {
            let mut state = state.lock().expect("proxy state");
            let fault = state
                .rules
                .iter_mut()
                .find(|(rule, used)| {
                    Some(rule.target) == target && rule.times.is_none_or(|t| *used < t)
                })
                .map(|(rule, used)| {
                    *used += 1;
                    rule.fault
                });
            state.seen.push((target, fault.map(|f| format!("{f:?}"))));
            fault
        };
        match fault {
            Some(Fault::Reset) => {
                // A zero linger makes the close a reset (RST), and never blocks.
                #[allow(deprecated)]
                let _ = client.set_linger(Some(Duration::ZERO));
                return;
            }
            Some(Fault::SlowDown) => {
                let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
                    <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
                let answer = format!(
                    "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            _ => {}
        }
        let Some(answer) = forward(&request).await else {
            return;
        };
        let head_end = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(answer.len(), |i| i + 4);
        match fault {
            Some(Fault::Cut { after }) => {
                let end = (head_end + after).min(answer.len());
                let _ = client.write_all(&answer[..end]).await;
                return;
            }
            Some(Fault::Stall { after }) => {
                let end = (head_end + after).min(answer.len());
                let _ = client.write_all(&answer[..end]).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            _ => {
                if client.write_all(&answer).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads one request (head and `Content-Length` body); `None` when the client is gone.
async fn read_request(client: &mut TcpStream, pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(client, pending).await?;
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while pending.len() < head_end + length {
        read_more(client, pending).await?;
    }
    Some(pending.drain(..head_end + length).collect())
}

async fn read_more(stream: &mut (impl AsyncRead + Unpin), into: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            into.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// The kind of an S3 request, by its request line.
fn target_of(request: &[u8]) -> Option<Target> {
    let line = request.split(|b| *b == b'\r').next()?;
    let line = String::from_utf8_lossy(line);
    if !line.starts_with("GET ") {
        None
    } else if line.contains("list-type=2") {
        Some(Target::List)
    } else if line.contains("x-id=GetObject") {
        Some(Target::Get)
    } else {
        None
    }
}

/// Sends the request to LocalStack on a fresh connection and reads the whole answer.
async fn forward(request: &[u8]) -> Option<Vec<u8>> {
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n")? + 2;
    let head = String::from_utf8_lossy(&request[..head_end]);
    let mut rewritten = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            rewritten.push_str(line);
            rewritten.push_str("\r\n");
        }
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut upstream = TcpStream::connect(UPSTREAM).await.ok()?;
    upstream.write_all(rewritten.as_bytes()).await.ok()?;
    upstream.write_all(&request[head_end + 2..]).await.ok()?;
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer).await.ok()?;
    Some(answer)
}
