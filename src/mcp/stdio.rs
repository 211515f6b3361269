//! The stdio transport with a guard in front: each line from stdin is checked
//! before it reaches rmcp. A line that is not JSON gets a `-32700 Parse error`, and
//! JSON that is not a JSON-RPC 2.0 message gets `-32600 Invalid Request` (with its
//! id when it has one), so a client sending garbage gets errors back and the
//! server keeps serving. One task owns stdout, so replies never interleave.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

/// The (reader, writer) pair to give rmcp instead of raw stdin/stdout.
pub fn filtered() -> (DuplexStream, DuplexStream) {
    let (to_rmcp, rmcp_reads) = tokio::io::duplex(1 << 16);
    let (rmcp_writes, from_rmcp) = tokio::io::duplex(1 << 16);
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();

    // The only writer of stdout.
    tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(line) = out_rx.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                return;
            }
        }
    });

    // rmcp's replies and notifications, line by line.
    let tx = out_tx.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(from_rmcp).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                return;
            }
        }
    });

    // stdin, checked.
    tokio::spawn(async move {
        let mut to_rmcp = to_rmcp;
        let mut stdin = BufReader::new(tokio::io::stdin());
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut stdin)
                .take(KEEP as u64)
                .read_until(b'\n', &mut buf)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let complete = buf.ends_with(b"\n");
            if !complete && buf.len() >= KEEP {
                // Too long to even look at: skip the rest of the line.
                if skip_line(&mut stdin).await.is_err() {
                    break;
                }
            }
            let text_len = buf.len() - usize::from(complete);
            if text_len >= MAX_LINE {
                let id = if complete { id_of(&buf) } else { Value::Null };
                let _ = out_tx.send(error_line(
                    id,
                    -32600,
                    &format!(
                        "Invalid Request: the message is {}{text_len} bytes; the most cms accepts is {} bytes",
                        if complete { "" } else { "over " },
                        MAX_LINE - 1
                    ),
                ));
                continue;
            }
            let reply = match std::str::from_utf8(&buf) {
                Err(e) => Some(error_line(
                    Value::Null,
                    -32700,
                    &format!("Parse error: not UTF-8 ({e})"),
                )),
                Ok(text) => {
                    let trimmed = text.trim();
                    if trimmed.is_empty() {
                        continue;
                    }
                    match check(trimmed) {
                        Ok(()) => {
                            if to_rmcp.write_all(trimmed.as_bytes()).await.is_err()
                                || to_rmcp.write_all(b"\n").await.is_err()
                            {
                                break;
                            }
                            None
                        }
                        Err(reply) => Some(reply),
                    }
                }
            };
            if let Some(reply) = reply {
                let _ = out_tx.send(reply);
            }
        }
        // EOF: rmcp sees its input end and the server shuts down.
        let _ = to_rmcp.shutdown().await;
    });
    (rmcp_reads, rmcp_writes)
}

/// Longest line passed on (rmcp drops longer ones without a word): longer
/// requests get an error reply instead.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// Longest line read whole to find its id for the error reply; the rest of a
/// longer one is skipped unread.
const KEEP: usize = 4 * MAX_LINE;

/// Read and drop the rest of the current line.
async fn skip_line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<()> {
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = chunk.len();
                r.consume(n);
            }
        }
    }
}

/// The id of a message, read without building the rest of it.
fn id_of(line: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(default)]
        id: Value,
    }
    match serde_json::from_slice::<Id>(line) {
        Ok(Id {
            id: id @ (Value::String(_) | Value::Number(_)),
        }) => id,
        _ => Value::Null,
    }
}

/// Ok for a well-formed JSON-RPC 2.0 message; else the error reply to send.
pub fn check(line: &str) -> Result<(), String> {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return Err(error_line(
                Value::Null,
                -32700,
                &format!("Parse error: {e}"),
            ))
        }
    };
    let Value::Object(m) = &v else {
        let what = if v.is_array() {
            "batches are not supported"
        } else {
            "a message must be a JSON object"
        };
        return Err(error_line(
            Value::Null,
            -32600,
            &format!("Invalid Request: {what}"),
        ));
    };
    let id = m.get("id").cloned().unwrap_or(Value::Null);
    let id_ok = matches!(id, Value::Null | Value::String(_) | Value::Number(_));
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(error_line(
            if id_ok { id } else { Value::Null },
            -32600,
            "Invalid Request: \"jsonrpc\" must be \"2.0\"",
        ));
    }
    if !id_ok {
        return Err(error_line(
            Value::Null,
            -32600,
            "Invalid Request: id must be a string, a number or null",
        ));
    }
    match m.get("method") {
        Some(Value::String(method)) => {
            if let Some(p) = m.get("params") {
                if !p.is_object() && !p.is_array() {
                    return Err(error_line(
                        id,
                        -32602,
                        "Invalid params: params must be an object",
                    ));
                }
            }
            // rmcp answers a null id without any id: answer it here, with `"id": null`.
            if id.is_null() && m.contains_key("id") {
                return Err(error_line(
                    Value::Null,
                    -32600,
                    "Invalid Request: a request's id must be a string or a number, not null",
                ));
            }
            // A request rmcp does not know would be dropped silently: answer it here.
            if m.contains_key("id") && !KNOWN.contains(&method.as_str()) {
                return Err(error_line(
                    id,
                    -32601,
                    &format!("Method not found: {method}"),
                ));
            }
            if m.contains_key("id") && method == "tools/call" {
                let name_ok = m
                    .get("params")
                    .and_then(|p| p.get("name"))
                    .is_some_and(Value::is_string);
                let args_ok = m
                    .get("params")
                    .and_then(|p| p.get("arguments"))
                    .is_none_or(|a| a.is_object());
                if !name_ok || !args_ok {
                    return Err(error_line(
                        id,
                        -32602,
                        "Invalid params: tools/call needs a string name and object arguments",
                    ));
                }
            }
            Ok(())
        }
        Some(_) => Err(error_line(
            id,
            -32600,
            "Invalid Request: method must be a string",
        )),
        None if m.contains_key("result") || m.contains_key("error") => Ok(()),
        None => Err(error_line(id, -32600, "Invalid Request: no method")),
    }
}

/// The requests the server answers.
const KNOWN: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "logging/setLevel",
    "completion/complete",
    "prompts/list",
    "prompts/get",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "resources/subscribe",
    "resources/unsubscribe",
];

fn error_line(id: Value, code: i64, message: &str) -> String {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gets_the_right_error() {
        let code = |line: &str| -> i64 {
            let reply: Value = serde_json::from_str(&check(line).unwrap_err()).unwrap();
            reply["error"]["code"].as_i64().unwrap()
        };
        assert_eq!(code("not json"), -32700);
        assert_eq!(code("{\"jsonrpc\":\"2.0\""), -32700);
        assert_eq!(code("[1,2]"), -32600);
        assert_eq!(code("42"), -32600);
        assert_eq!(code(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#), -32600);
        assert_eq!(code(r#"{"jsonrpc":"2.0","id":1,"method":7}"#), -32600);
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"nope/nope"}"#),
            -32601
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#),
            -32602
        );
        assert_eq!(
            code(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":5}"#),
            -32602
        );
        assert!(check(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_ok());
        assert!(check(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok());
        let reply: Value = serde_json::from_str(
            &check(r#"{"jsonrpc":"2.0","id":"x","method":"bad"}"#).unwrap_err(),
        )
        .unwrap();
        assert_eq!(reply["id"], "x");
    }
}
