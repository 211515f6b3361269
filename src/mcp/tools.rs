//! The built-in MCP tools: names (the seed's 17), descriptions, JSON input
//! schemas, and the argument types they are checked against.

use crate::delegate::DelegateOptions;
use crate::engine::spec::input_schema;
use crate::engine::{SessionState, SpawnSpec};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

/// `(name, description, input schema)` of every built-in tool. The options of
/// `spawn_session`, `batch_spawn`, `delegate_task` and `list_sessions` are the schemas
/// of their Rust types ([`SpawnSpec`], [`DelegateOptions`], [`ListArgs`]); the small
/// ones reuse their properties.
pub fn builtin() -> Vec<(&'static str, &'static str, Value)> {
    let spawn = input_schema::<SpawnSpec>();
    let spawn_props = &spawn["properties"];
    let name = spawn_props["name"].clone();
    let model = spawn_props["model"].clone();
    let background = json!({ "type": "boolean", "description": "Return at once and keep working; poll get_session_status (for long work and client timeouts)" });
    let mut delegate = input_schema::<DelegateOptions>();
    if let Some(Value::Object(p)) = delegate.get_mut("properties") {
        p.insert("background".into(), background.clone());
    }
    let batch = input_schema::<BatchArgs>();
    let obj = |props: Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false });
    let only_name = obj(json!({ "name": name }), &["name"]);
    vec![
        ("spawn_session", "Start a new Claude Code session with a first prompt; returns its response, cost and status. The session stays live for send_message.", Value::Object(spawn.clone())),
        ("send_message", "Send a follow-up to a session and wait for its response (a stopped session is resumed with its context).", obj(json!({ "name": name, "message": { "type": "string" }, "timeout": spawn_props["timeout"] }), &["name", "message"])),
        ("resume_session", "Clear a pause or restore a stopped session, optionally sending a message.", obj(json!({ "name": name, "message": { "type": "string" } }), &["name"])),
        ("pause_session", "Refuse new messages to a session until resumed (a turn in flight finishes).", only_name.clone()),
        ("fork_session", "Start a new session holding a copy of this one's conversation; the original is unchanged.", obj(json!({ "name": name, "new_name": name, "message": { "type": "string" }, "model": model }), &["name", "new_name"])),
        ("stop_session", "Stop a session gracefully; it can be resumed later.", only_name.clone()),
        ("kill_session", "Kill a session's process now (resumable later).", only_name.clone()),
        ("get_session_status", "A session's state, cost, turns, ids and last error.", only_name.clone()),
        ("get_last_output", "The last response text of a session.", only_name.clone()),
        ("list_sessions", "Every session with state, model, cost and turns, most recently active first.", Value::Object(input_schema::<ListArgs>())),
        ("get_history", "Every interaction of a session with its cost and timing.", obj(json!({ "name": name, "limit": { "type": "integer", "minimum": 1, "description": "Only the last N" } }), &["name"])),
        ("delete_session", "Remove a session and its history for good.", only_name.clone()),
        ("delegate_task", "Hand a task to a guarded session: a permission preset, limits on cost, turns and time, protected paths checked before each tool runs, and a strategy. Returns status (completed, needs_input, check_failed: the check never passed, failed, cost_exceeded, turns_exceeded), response, cost, safety report. Use continue_task to correct it.", Value::Object(delegate)),
        ("continue_task", "Send a follow-up or correction to a delegated task; same guard and strategy.", obj(json!({ "name": name, "message": { "type": "string" }, "background": background }), &["name", "message"])),
        ("finish_task", "Finish a delegated task: stop its session gracefully.", only_name.clone()),
        ("abort_task", "Abort a delegated task: kill its session now.", only_name),
        ("batch_spawn", "Spawn several sessions in parallel (at most 4 at a time); one failure does not stop the others.", Value::Object(batch)),
        ("list_pending_approvals", "Tool calls waiting for a person's decision (a safety policy answered \"ask\"): session, id, tool, input, reason, deadline. Each waits, nothing run, until decided or its deadline denies it.", obj(json!({}), &[])),
        ("decide_approval", "Approve or deny a tool call waiting in a session (the oldest, or `id`). Denying always works; approving over MCP works only where the user allowed it (CMS_MCP_MAY_APPROVE=1 in this server's environment), and never for a guarded caller.", obj(json!({ "name": name, "id": { "type": "string", "description": "The waiting call's id [default: the oldest]" }, "allow": { "type": "boolean" }, "reason": { "type": "string", "description": "Why (the model sees it with a denial)" }, "always_for_session": { "type": "boolean", "description": "Approve every later call of this tool in the session's process" } }), &["name", "allow"])),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideArgs {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    pub allow: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub always_for_session: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendArgs {
    pub name: String,
    pub message: String,
    #[serde(default)]
    pub timeout: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeArgs {
    pub name: String,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkArgs {
    pub name: String,
    pub new_name: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Only sessions in this state.
    #[serde(default)]
    pub status: Option<SessionState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryArgs {
    pub name: String,
    #[serde(default)]
    pub limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContinueArgs {
    pub name: String,
    pub message: String,
    #[serde(default)]
    pub background: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchArgs {
    /// The sessions to start; each stops after its answer unless it says `stop: false`.
    #[schemars(length(min = 1))]
    pub sessions: Vec<SpawnSpec>,
    /// Return at once and keep working; poll get_session_status (for long work and client timeouts).
    #[serde(default)]
    pub background: bool,
}

/// Check arguments against a tool's type, naming what is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(tool: &str, args: &Value) -> Result<T, String> {
    serde_json::from_value(args.clone()).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}
