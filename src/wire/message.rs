//! Typed lines of the CLI's stream-json output.
//!
//! Parsing never fails on something merely unexpected: an unknown `type` becomes
//! [`Message::Unknown`], unknown fields are kept in each struct's `extra` map, and a
//! known type whose shape does not fit is kept as `Unknown` too. Only a line that is
//! not JSON at all is an error ([`ParseError`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A line that could not be read as JSON.
#[derive(Debug, thiserror::Error)]
#[error("not a JSON line ({source}): {preview}")]
pub struct ParseError {
    pub preview: String,
    #[source]
    pub source: serde_json::Error,
}

/// One line of `claude --output-format stream-json` output.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    System(SystemMessage),
    Assistant(AssistantMessage),
    User(UserMessage),
    Result(Box<ResultMessage>),
    ControlRequest(ControlRequest),
    ControlResponse(ControlResponse),
    /// `--include-partial-messages`: a raw API stream event.
    StreamEvent(StreamEvent),
    KeepAlive,
    /// Any other type (or a known type in a shape we do not understand), kept whole.
    Unknown(Value),
}

impl Message {
    /// Parse one stdout line.
    pub fn parse(line: &str) -> Result<Message, ParseError> {
        let value: Value = serde_json::from_str(line).map_err(|source| ParseError {
            preview: preview(line),
            source,
        })?;
        Ok(Message::from_value(value))
    }

    /// Classify an already parsed JSON value.
    pub fn from_value(value: Value) -> Message {
        let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
        fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
            T::deserialize(v).ok()
        }
        let parsed = match kind {
            "system" => typed(&value).map(Message::System),
            "assistant" => typed(&value).map(Message::Assistant),
            "user" => typed(&value).map(Message::User),
            "result" => typed(&value).map(|r| Message::Result(Box::new(r))),
            "control_request" => typed(&value).map(Message::ControlRequest),
            "control_response" => typed(&value).map(Message::ControlResponse),
            "stream_event" => typed(&value).map(Message::StreamEvent),
            "keep_alive" => Some(Message::KeepAlive),
            _ => None,
        };
        parsed.unwrap_or(Message::Unknown(value))
    }

    /// The `session_id` carried by the line, if any.
    pub fn session_id(&self) -> Option<&str> {
        match self {
            Message::System(m) => m.session_id.as_deref(),
            Message::Assistant(m) => m.session_id.as_deref(),
            Message::User(m) => m.session_id.as_deref(),
            Message::Result(m) => Some(m.session_id.as_str()),
            Message::StreamEvent(m) => m.session_id.as_deref(),
            Message::Unknown(v) => v.get("session_id").and_then(Value::as_str),
            _ => None,
        }
    }
}

pub(crate) fn preview(line: &str) -> String {
    const MAX: usize = 120;
    if line.len() <= MAX {
        line.to_string()
    } else {
        let mut end = MAX;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}… ({} bytes)", &line[..end], line.len())
    }
}

/// `type: "system"`: `init` (before every turn), `status`, `api_retry`, and many more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemMessage {
    pub subtype: String,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub uuid: Option<String>,
    /// Every other field, by subtype (see the accessors).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The fields of `system/init` cms uses.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InitInfo {
    pub cwd: Option<String>,
    pub model: Option<String>,
    pub permission_mode: Option<String>,
    pub tools: Vec<String>,
    pub claude_code_version: Option<String>,
}

/// The fields of `system/api_retry`.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ApiRetry {
    pub attempt: u32,
    pub max_retries: u32,
    pub retry_delay_ms: f64,
    pub error_status: Option<u16>,
    pub error: Option<String>,
}

impl SystemMessage {
    fn str_field(&self, key: &str) -> Option<String> {
        self.extra
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn init(&self) -> Option<InitInfo> {
        (self.subtype == "init").then(|| InitInfo {
            cwd: self.str_field("cwd"),
            model: self.str_field("model"),
            permission_mode: self.str_field("permissionMode"),
            tools: self
                .extra
                .get("tools")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            claude_code_version: self.str_field("claude_code_version"),
        })
    }

    pub fn api_retry(&self) -> Option<ApiRetry> {
        (self.subtype == "api_retry").then(|| {
            let num = |k: &str| self.extra.get(k).and_then(Value::as_f64);
            ApiRetry {
                attempt: num("attempt").unwrap_or(0.0) as u32,
                max_retries: num("max_retries").unwrap_or(0.0) as u32,
                retry_delay_ms: num("retry_delay_ms").unwrap_or(0.0),
                error_status: num("error_status").map(|s| s as u16),
                error: self.str_field("error"),
            }
        })
    }
}

/// A content block of an assistant or user message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ContentBlock {
    Known(KnownBlock),
    Other(Value),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KnownBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default)]
        content: Value,
        #[serde(default)]
        is_error: Option<bool>,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default)]
        signature: Option<String>,
    },
}

/// Message content: a plain string or a list of blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

impl Default for Content {
    fn default() -> Self {
        Content::Blocks(Vec::new())
    }
}

impl Content {
    /// The blocks, with a plain string seen as one text block.
    pub fn blocks(&self) -> Vec<KnownBlock> {
        match self {
            Content::Text(t) => vec![KnownBlock::Text { text: t.clone() }],
            Content::Blocks(b) => b
                .iter()
                .filter_map(|b| match b {
                    ContentBlock::Known(k) => Some(k.clone()),
                    ContentBlock::Other(_) => None,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiMessage {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub content: Content,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `type: "assistant"`: one line per content block (same `message.id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    pub message: ApiMessage,
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    /// Set on synthetic API-error messages (`authentication_failed`, `overloaded`, ...).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `type: "user"`: tool results, interrupts, replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMessage {
    pub message: ApiMessage,
    #[serde(default)]
    pub parent_tool_use_id: Option<String>,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub tool_use_result: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One refused tool call, as listed in `result.permission_denials`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermissionDenial {
    pub tool_name: String,
    #[serde(default)]
    pub tool_use_id: String,
    #[serde(default)]
    pub tool_input: Value,
}

/// `type: "result"`: the end of every turn.
///
/// Per turn: `usage`, `duration_ms`, `num_turns`. Per process (cumulative):
/// `total_cost_usd`, `modelUsage`, `duration_api_ms`. An API failure is
/// `subtype: "success"` with `is_error: true`: always test [`ResultMessage::is_error`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    pub subtype: String,
    #[serde(default)]
    pub is_error: bool,
    #[serde(default)]
    pub api_error_status: Option<i64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub duration_api_ms: Option<u64>,
    #[serde(default)]
    pub num_turns: Option<u32>,
    #[serde(default)]
    pub result: Option<String>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub session_id: String,
    #[serde(default)]
    pub total_cost_usd: Option<f64>,
    #[serde(default)]
    pub usage: Option<Value>,
    #[serde(default, rename = "modelUsage")]
    pub model_usage: Option<Value>,
    #[serde(default)]
    pub permission_denials: Vec<PermissionDenial>,
    #[serde(default)]
    pub terminal_reason: Option<String>,
    #[serde(default)]
    pub errors: Vec<String>,
    #[serde(default)]
    pub structured_output: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `type: "control_request"` from the CLI (it asks cms something and waits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRequest {
    pub request_id: String,
    pub request: Value,
}

/// What a control request asks.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequestBody {
    /// `can_use_tool`: may this tool run (with `--permission-prompt-tool stdio`)?
    CanUseTool(ToolPermissionRequest),
    /// Anything else (`hook_callback`, `mcp_message`, ...): cms answers with an error.
    Other { subtype: String },
}

/// The fields of a `can_use_tool` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolPermissionRequest {
    pub tool_name: String,
    #[serde(default)]
    pub input: Value,
    #[serde(default)]
    pub tool_use_id: Option<String>,
    #[serde(default)]
    pub permission_suggestions: Vec<Value>,
    #[serde(default)]
    pub blocked_path: Option<String>,
    #[serde(default)]
    pub decision_reason: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ControlRequest {
    pub fn body(&self) -> ControlRequestBody {
        let subtype = self
            .request
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if subtype == "can_use_tool" {
            if let Ok(req) = ToolPermissionRequest::deserialize(&self.request) {
                return ControlRequestBody::CanUseTool(req);
            }
        }
        ControlRequestBody::Other { subtype }
    }
}

/// `type: "control_response"`: the CLI's answer to a control request cms sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub response: ControlResponseBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponseBody {
    pub subtype: String,
    pub request_id: String,
    #[serde(default)]
    pub response: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
}

/// `type: "stream_event"` (with `--include-partial-messages`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    pub event: Value,
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StreamEvent {
    /// The text of a `content_block_delta` / `text_delta` event.
    pub fn text_delta(&self) -> Option<&str> {
        let delta = self.event.get("delta")?;
        (delta.get("type")?.as_str()? == "text_delta")
            .then(|| delta.get("text")?.as_str())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn transcripts() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transcripts")
    }

    fn all_stdout_lines() -> Vec<(String, String)> {
        let dir = transcripts();
        let mut out = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".stdout.ndjson"))
            .collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                if !line.trim().is_empty() {
                    out.push((name.clone(), line.to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_transcript_line_parses_into_a_known_type() {
        let lines = all_stdout_lines();
        assert!(
            lines.len() > 60,
            "expected the transcripts, got {}",
            lines.len()
        );
        for (file, line) in lines {
            let msg = Message::parse(&line).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(
                !matches!(msg, Message::Unknown(_)),
                "{file}: known line classified as unknown: {line}"
            );
            // Round trip: every field we do not model is kept.
            let original: Value = serde_json::from_str(&line).unwrap();
            let back = match &msg {
                Message::System(m) => serde_json::to_value(m).unwrap(),
                Message::Assistant(m) => serde_json::to_value(m).unwrap(),
                Message::User(m) => serde_json::to_value(m).unwrap(),
                Message::Result(m) => serde_json::to_value(m).unwrap(),
                Message::ControlRequest(m) => serde_json::to_value(m).unwrap(),
                Message::ControlResponse(m) => serde_json::to_value(m).unwrap(),
                Message::StreamEvent(m) => serde_json::to_value(m).unwrap(),
                _ => original.clone(),
            };
            for key in original.as_object().unwrap().keys() {
                if key == "type" {
                    continue;
                }
                assert!(back.get(key).is_some(), "{file}: field {key} lost");
            }
        }
    }

    #[test]
    fn result_fields_of_a_permission_turn() {
        let text =
            std::fs::read_to_string(transcripts().join("permission-prompt.stdout.ndjson")).unwrap();
        let results: Vec<ResultMessage> = text
            .lines()
            .filter_map(|l| match Message::parse(l).unwrap() {
                Message::Result(r) => Some(*r),
                _ => None,
            })
            .collect();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].total_cost_usd, Some(0.002));
        assert_eq!(results[1].total_cost_usd, Some(0.004));
        assert_eq!(results[1].num_turns, Some(2));
        assert_eq!(results[1].permission_denials.len(), 1);
        assert_eq!(results[1].permission_denials[0].tool_name, "Write");
        assert_eq!(results[1].terminal_reason.as_deref(), Some("completed"));
        assert!(results[1].model_usage.is_some());
    }

    #[test]
    fn can_use_tool_request_is_typed() {
        let text =
            std::fs::read_to_string(transcripts().join("permission-prompt.stdout.ndjson")).unwrap();
        let reqs: Vec<ControlRequest> = text
            .lines()
            .filter_map(|l| match Message::parse(l).unwrap() {
                Message::ControlRequest(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(reqs.len(), 2);
        match reqs[1].body() {
            ControlRequestBody::CanUseTool(t) => {
                assert_eq!(t.tool_name, "Write");
                assert_eq!(t.input["file_path"], "/home/dev/project/protected.env");
                assert_eq!(t.tool_use_id.as_deref(), Some("toolu_9dfe9bef4bcb4de7919e"));
                assert_eq!(t.permission_suggestions.len(), 1);
            }
            other => panic!("expected can_use_tool, got {other:?}"),
        }
    }

    #[test]
    fn api_errors_and_limits() {
        let t = std::fs::read_to_string(transcripts().join("max-turns.stdout.ndjson")).unwrap();
        let r = t
            .lines()
            .find_map(|l| match Message::parse(l).unwrap() {
                Message::Result(r) => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(r.subtype, "error_max_turns");
        assert!(r.is_error);
        assert!(r.result.is_none());
        assert_eq!(r.errors.len(), 1);

        let t = std::fs::read_to_string(transcripts().join("api-overloaded-retry.stdout.ndjson"))
            .unwrap();
        let retries: Vec<ApiRetry> = t
            .lines()
            .filter_map(|l| match Message::parse(l).unwrap() {
                Message::System(s) => s.api_retry(),
                _ => None,
            })
            .collect();
        assert_eq!(retries.len(), 5);
        assert_eq!(retries[0].attempt, 1);
        assert_eq!(retries[0].max_retries, 10);
        assert_eq!(retries[0].error_status, Some(529));
        assert_eq!(retries[4].error.as_deref(), Some("overloaded"));
    }

    #[test]
    fn assistant_blocks_and_tool_results() {
        let t = std::fs::read_to_string(transcripts().join("tool-read.stdout.ndjson")).unwrap();
        let mut saw_tool_use = false;
        let mut saw_tool_result = false;
        for l in t.lines() {
            match Message::parse(l).unwrap() {
                Message::Assistant(a) => {
                    for b in a.message.content.blocks() {
                        if let KnownBlock::ToolUse { name, input, .. } = b {
                            assert_eq!(name, "Read");
                            assert!(input["file_path"].as_str().unwrap().ends_with("notes.txt"));
                            saw_tool_use = true;
                        }
                    }
                }
                Message::User(u) => {
                    for b in u.message.content.blocks() {
                        if let KnownBlock::ToolResult { content, .. } = b {
                            assert!(content.as_str().unwrap().contains("secret"));
                            saw_tool_result = true;
                        }
                    }
                }
                _ => {}
            }
        }
        assert!(saw_tool_use && saw_tool_result);
    }

    #[test]
    fn partial_stream_events_carry_text_deltas() {
        let t = std::fs::read_to_string(transcripts().join("partial.stdout.ndjson")).unwrap();
        let deltas: Vec<String> = t
            .lines()
            .filter_map(|l| match Message::parse(l).unwrap() {
                Message::StreamEvent(e) => e.text_delta().map(str::to_string),
                _ => None,
            })
            .collect();
        assert_eq!(deltas, vec!["echo: partial please"]);
    }

    #[test]
    fn unknown_types_and_fields_are_kept_not_fatal() {
        let m = Message::parse(r#"{"type":"bogus_type","x":1}"#).unwrap();
        assert_eq!(
            m,
            Message::Unknown(serde_json::json!({"type":"bogus_type","x":1}))
        );
        let m = Message::parse(
            r#"{"type":"system","subtype":"brand_new","session_id":"s","novel":[1]}"#,
        )
        .unwrap();
        match m {
            Message::System(s) => {
                assert_eq!(s.subtype, "brand_new");
                assert_eq!(s.extra["novel"], serde_json::json!([1]));
            }
            other => panic!("{other:?}"),
        }
        // A known type in an unexpected shape is kept, not dropped.
        let m = Message::parse(r#"{"type":"result"}"#).unwrap();
        assert!(matches!(m, Message::Unknown(_)));
        let m = Message::parse(r#"{"type":"assistant","message":42}"#).unwrap();
        assert!(matches!(m, Message::Unknown(_)));
        assert!(Message::parse("not json").is_err());
    }
}
