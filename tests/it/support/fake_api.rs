//! A fake Anthropic Messages API on 127.0.0.1 for end-to-end tests with the real
//! Claude Code CLI. It answers `POST /v1/messages` with a Server-Sent-Events stream,
//! scripted by the last user text (the same words the simulator understands):
//!
//! - `USE_TOOL Name {json}`: a `tool_use` block, one per such line (after the tool results:
//!   `done: N tool results`);
//! - `SLOW ms [text]`: waits before the text (so a turn can be interrupted);
//! - `RECALL`: lists the earlier user texts of the conversation it was sent;
//! - anything else: `echo: <text>`.
//!
//! Usage is always 100 input / 20 output tokens; the CLI prices it.

use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone)]
pub struct FakeApi {
    pub port: u16,
    pub requests: Arc<Mutex<Vec<Value>>>,
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, log).await;
                });
            }
        });
        FakeApi { port, requests }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a real `claude` needs to run offline against this API, with
    /// its own `home` (its config and conversations live there).
    pub fn claude_env(&self, home: &std::path::Path) -> Vec<(String, String)> {
        [
            ("HOME", home.display().to_string()),
            ("ANTHROPIC_BASE_URL", self.base_url()),
            ("ANTHROPIC_API_KEY", "sk-test-dummy".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("DISABLE_TELEMETRY", "1".into()),
            ("DISABLE_AUTOUPDATER", "1".into()),
            ("DISABLE_ERROR_REPORTING", "1".into()),
            ("CLAUDE_CODE_MAX_RETRIES", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// How many Messages API calls were made.
    pub fn message_calls(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

async fn serve(mut stream: TcpStream, log: Arc<Mutex<Vec<Value>>>) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.lines();
        let request_line = lines.next().unwrap_or_default().to_string();
        let mut content_length = 0usize;
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let body_start = head_end + 4;
        while buf.len() < body_start + content_length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[body_start..body_start + content_length].to_vec();
        buf.drain(..body_start + content_length);
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        if method == "POST" && path.starts_with("/v1/messages") && !path.contains("count_tokens") {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            log.lock().unwrap().push(req.clone());
            return answer(&mut stream, &req).await;
        }
        let reply = if path.contains("count_tokens") {
            let b = r#"{"input_tokens":100}"#;
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b}", b.len())
        } else {
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_string()
        };
        stream.write_all(reply.as_bytes()).await?;
        if method != "HEAD" && method != "GET" && !path.contains("count_tokens") {
            return Ok(());
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The texts of user messages (skipping system reminders), oldest first.
fn user_texts(req: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        if m["role"] != "user" {
            continue;
        }
        match &m["content"] {
            Value::String(s) => out.push(s.clone()),
            Value::Array(blocks) => {
                for b in blocks {
                    if let Some(t) = b["text"].as_str() {
                        if !t.starts_with("<system-reminder>") && !t.trim().is_empty() {
                            out.push(t.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The last non-system message, and how many tool results it carries.
fn last_tool_results(req: &Value) -> usize {
    let msgs = req["messages"].as_array().cloned().unwrap_or_default();
    let Some(last) = msgs.iter().rev().find(|m| m["role"] != "system") else {
        return 0;
    };
    if last["role"] != "user" {
        return 0;
    }
    last["content"]
        .as_array()
        .map(|b| b.iter().filter(|b| b["type"] == "tool_result").count())
        .unwrap_or(0)
}

async fn answer(stream: &mut TcpStream, req: &Value) -> std::io::Result<()> {
    let model = req["model"].as_str().unwrap_or("claude-fake").to_string();
    let texts = user_texts(req);
    let last = texts.last().cloned().unwrap_or_default();
    let tool_results = last_tool_results(req);
    let mut delay = Duration::ZERO;
    let (blocks, stop_reason): (Vec<Value>, &str) = if tool_results > 0 {
        (
            vec![json!({"type":"text","text":format!("done: {tool_results} tool results")})],
            "end_turn",
        )
    } else if last.trim().starts_with("USE_TOOL ") {
        // One tool_use block per USE_TOOL line (parallel tool calls).
        let blocks = last
            .lines()
            .filter_map(|l| l.trim().strip_prefix("USE_TOOL "))
            .map(|rest| {
                let (name, input) = rest.split_once(' ').unwrap_or((rest, "{}"));
                let input: Value = serde_json::from_str(input.trim()).unwrap_or(json!({}));
                let id = format!("toolu_fake_{}", uuid::Uuid::new_v4().simple());
                json!({"type":"tool_use","id":id,"name":name.trim(),"input":input})
            })
            .collect();
        (blocks, "tool_use")
    } else if let Some(rest) = last.trim().strip_prefix("SLOW ") {
        let (ms, text) = rest.split_once(' ').unwrap_or((rest, ""));
        delay = Duration::from_millis(ms.parse().unwrap_or(1000));
        (
            vec![json!({"type":"text","text":format!("echo: {text}")})],
            "end_turn",
        )
    } else if last.trim() == "RECALL" {
        let earlier = &texts[..texts.len().saturating_sub(1)];
        (
            vec![json!({"type":"text","text":format!("recall: {}", earlier.join(" | "))})],
            "end_turn",
        )
    } else {
        (
            vec![json!({"type":"text","text":format!("echo: {last}")})],
            "end_turn",
        )
    };

    if req.get("stream").and_then(Value::as_bool) != Some(true) {
        let body = json!({"id":"msg_fake","type":"message","role":"assistant","model":model,"content":blocks,
            "stop_reason":stop_reason,"stop_sequence":null,"usage":{"input_tokens":100,"output_tokens":20}})
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        return stream.write_all(body.as_bytes()).await;
    }

    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n")
        .await?;
    let msg_id = format!("msg_fake_{}", uuid::Uuid::new_v4().simple());
    let mut events = vec![
        json!({"type":"message_start","message":{"id":msg_id,"type":"message","role":"assistant",
        "model":model,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":100,"output_tokens":1}}}),
    ];
    send_events(stream, &events).await?;
    events.clear();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    for (i, b) in blocks.iter().enumerate() {
        if b["type"] == "tool_use" {
            events.push(json!({"type":"content_block_start","index":i,"content_block":{"type":"tool_use","id":b["id"],"name":b["name"],"input":{}}}));
            events.push(json!({"type":"content_block_delta","index":i,"delta":{"type":"input_json_delta","partial_json":b["input"].to_string()}}));
        } else {
            events.push(json!({"type":"content_block_start","index":i,"content_block":{"type":"text","text":""}}));
            events.push(json!({"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":b["text"]}}));
        }
        events.push(json!({"type":"content_block_stop","index":i}));
    }
    events.push(json!({"type":"message_delta","delta":{"stop_reason":stop_reason,"stop_sequence":null},"usage":{"output_tokens":20}}));
    events.push(json!({"type":"message_stop"}));
    send_events(stream, &events).await?;
    stream.shutdown().await
}

async fn send_events(stream: &mut TcpStream, events: &[Value]) -> std::io::Result<()> {
    let mut out = String::new();
    for e in events {
        out.push_str(&format!(
            "event: {}\ndata: {}\n\n",
            e["type"].as_str().unwrap_or("message"),
            e
        ));
    }
    stream.write_all(out.as_bytes()).await?;
    stream.flush().await
}
