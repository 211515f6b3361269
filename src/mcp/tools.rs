//! The built-in MCP tools: names (the seed's 17), descriptions, JSON input
//! schemas, and the argument types they are checked against.

use serde::Deserialize;
use serde_json::{json, Value};

/// `(name, description, input schema)` of every built-in tool.
pub fn builtin() -> Vec<(&'static str, &'static str, Value)> {
    let name =
        json!({ "type": "string", "description": "Session name: 1-64 of A-Z a-z 0-9 . _ -" });
    let tools = json!({ "type": "array", "items": { "type": "string" } });
    let model =
        json!({ "type": "string", "description": "sonnet (default), opus, haiku, or a model id" });
    let background = json!({ "type": "boolean", "description": "Return at once and keep working; poll get_session_status (for long work and client timeouts)" });
    let spawn_props = json!({
        "name": name, "prompt": { "type": "string", "description": "The first message" },
        "model": model, "work_dir": { "type": "string", "description": "Working directory (default: the server's)" },
        "permission_mode": { "type": "string", "enum": ["default", "acceptEdits", "plan", "dontAsk", "bypassPermissions"] },
        "allowed_tools": tools, "disallowed_tools": tools,
        "system_prompt": { "type": "string", "description": "Appended to Claude Code's system prompt" },
        "max_budget": { "type": "number", "exclusiveMinimum": 0, "description": "Hard budget in USD for the session's whole life, across restarts (a fork gets what is left)" },
        "max_turns": { "type": "integer", "minimum": 1 },
        "agent": { "type": "string" },
        "worktree": { "type": "string", "description": "Run in a git worktree of this name (claude -w)" },
        "stop": { "type": "boolean", "description": "Stop the session after the first response (one-shot)" },
        "timeout": { "type": "number", "exclusiveMinimum": 0, "description": "Seconds one turn may take before it is interrupted (default 3600: 60 minutes)" }
    });
    let obj = |props: Value, required: &[&str]| json!({ "type": "object", "properties": props, "required": required, "additionalProperties": false });
    let only_name = obj(json!({ "name": name }), &["name"]);
    vec![
        ("spawn_session", "Start a new Claude Code session with a first prompt; returns its response, cost and status. The session stays live for send_message.", obj(spawn_props.clone(), &["name", "prompt"])),
        ("send_message", "Send a follow-up to a session and wait for its response (a stopped session is resumed with its context).", obj(json!({ "name": name, "message": { "type": "string" }, "timeout": spawn_props["timeout"] }), &["name", "message"])),
        ("resume_session", "Clear a pause or restore a stopped session, optionally sending a message.", obj(json!({ "name": name, "message": { "type": "string" } }), &["name"])),
        ("pause_session", "Refuse new messages to a session until resumed (a turn in flight finishes).", only_name.clone()),
        ("fork_session", "Start a new session holding a copy of this one's conversation; the original is unchanged.", obj(json!({ "name": name, "new_name": name, "message": { "type": "string" }, "model": model }), &["name", "new_name"])),
        ("stop_session", "Stop a session gracefully; it can be resumed later.", only_name.clone()),
        ("kill_session", "Kill a session's process now (resumable later).", only_name.clone()),
        ("get_session_status", "A session's state, cost, turns, ids and last error.", only_name.clone()),
        ("get_last_output", "The last response text of a session.", only_name.clone()),
        ("list_sessions", "Every session with state, model, cost and turns, most recently active first.", obj(json!({ "status": { "type": "string", "description": "Only sessions in this state (idle, busy, stopped, ...)" } }), &[])),
        ("get_history", "Every interaction of a session with its cost and timing.", obj(json!({ "name": name, "limit": { "type": "integer", "minimum": 1, "description": "Only the last N" } }), &["name"])),
        ("delete_session", "Remove a session and its history for good.", only_name.clone()),
        ("delegate_task", "Hand a task to a guarded session: a permission preset, limits on cost, turns and time, protected paths checked before each tool runs, and a strategy. Returns status (completed, needs_input, check_failed: the check never passed, failed, cost_exceeded, turns_exceeded), response, cost, safety report. Use continue_task to correct it.", obj(json!({
            "name": name, "task": { "type": "string" }, "model": model,
            "preset": { "type": "string", "description": "read-only, review, edit (default), full, plan" },
            "max_cost": { "type": "number", "exclusiveMinimum": 0, "description": "USD limit over the session's life (default 2.00)" },
            "max_turns": { "type": "integer", "minimum": 1, "description": "Agent-turn limit (default 50)" },
            "timeout": { "type": "number", "exclusiveMinimum": 0, "description": "Seconds per interaction, a turn or a check (default: safety.lua's, 3600)" },
            "safety": { "type": "boolean", "description": "false: no limits and no protected paths (default true)" },
            "context": { "type": "string", "description": "Put before the task" },
            "work_dir": { "type": "string" }, "system_prompt": { "type": "string" }, "agent": { "type": "string" },
            "strategy": { "type": "string", "description": "single (default), correction_loop, review, or a plugin's" },
            "check": { "type": "string", "description": "correction_loop: a shell command that must exit 0" },
            "max_attempts": { "type": "integer", "minimum": 1 },
            "background": background
        }), &["name", "task"])),
        ("continue_task", "Send a follow-up or correction to a delegated task; same guard and strategy.", obj(json!({ "name": name, "message": { "type": "string" }, "background": background }), &["name", "message"])),
        ("finish_task", "Finish a delegated task: stop its session gracefully.", only_name.clone()),
        ("abort_task", "Abort a delegated task: kill its session now.", only_name),
        ("batch_spawn", "Spawn several sessions in parallel (at most 4 at a time); one failure does not stop the others.", obj(json!({
            "sessions": { "type": "array", "minItems": 1, "items": obj(spawn_props, &["name", "prompt"]) },
            "background": background
        }), &["sessions"])),
    ]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameArgs {
    pub name: String,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    #[serde(default)]
    pub status: Option<String>,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchArgs {
    pub sessions: Vec<crate::engine::SpawnSpec>,
    #[serde(default)]
    pub background: bool,
}

/// Check arguments against a tool's type, naming what is wrong.
pub fn parse<T: serde::de::DeserializeOwned>(tool: &str, args: &Value) -> Result<T, String> {
    serde_json::from_value(args.clone()).map_err(|e| format!("invalid arguments for {tool}: {e}"))
}
