//! A session to start, as people write it: the one definition of the spawn options.
//!
//! [`SpawnSpec`] is the `cms spawn` arguments (clap), the `cms.spawn{...}` table and a
//! batch file entry (serde), the MCP `spawn_session` and `batch_spawn` input schema
//! (schemars, [`input_schema`]) and the LuaLS class `cms.SpawnOptions` (generated from
//! that schema). A field's doc comment is its help text on every face.

use crate::engine::config::{SessionOptions, DEFAULT_MODEL};
use crate::engine::error::{EngineError, Result};
use crate::engine::mode::PermissionMode;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The default turn timeout as the CLI shows it ([`crate::engine::config::DEFAULT_TURN_TIMEOUT_SECS`]).
pub const DEFAULT_TIMEOUT_TEXT: &str = "3600";

/// A session to start: a batch file entry, `cms.spawn{...}`, the MCP `spawn_session`
/// arguments, `cms spawn`'s flags. snake_case, with the seed's camelCase names
/// accepted too; unknown fields are errors, so typos are caught.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct SpawnSpec {
    /// Session name (1-64 of A-Z a-z 0-9 . _ -).
    #[arg(long)]
    pub name: String,
    /// The first message (on the command line, `-` reads it from stdin).
    #[arg(long)]
    pub prompt: String,
    /// Model: sonnet, opus, haiku, or a full model id [default: sonnet].
    #[arg(long, default_value = DEFAULT_MODEL, hide_default_value = true)]
    #[serde(default)]
    pub model: Option<String>,
    /// Stop the session after the first response (one-shot) [default: no; yes for a
    /// batch entry].
    #[arg(long, action = clap::ArgAction::SetTrue)]
    #[serde(default)]
    pub stop: Option<bool>,
    /// Working directory for claude [default: the current directory].
    #[arg(long)]
    #[serde(default, alias = "workDir")]
    pub work_dir: Option<PathBuf>,
    /// Run the session on this host of `hosts.lua` (over its runner, e.g. ssh); it stays
    /// there for sends, resumes and forks [default: this machine].
    #[arg(long)]
    #[serde(default)]
    pub on: Option<String>,
    /// Labels a host must carry for placement to put the session there when `on` is
    /// not given (see `hosts.lua`, `placement.lua`): a list, or comma-separated, e.g.
    /// "gpu,big" [default: none].
    #[arg(long, value_parser = ToolList::parse)]
    #[serde(default)]
    pub labels: Option<ToolList>,
    /// Claude Code's permission mode [default: Claude Code's own setting].
    #[arg(long, value_enum)]
    #[serde(default, alias = "permissionMode")]
    pub permission_mode: Option<PermissionMode>,
    /// Tools allowed without asking: a list, or comma-separated, e.g. "Read,Grep,Bash(git *)"
    /// [default: none].
    #[arg(long, value_parser = ToolList::parse)]
    #[serde(default, alias = "allowedTools")]
    pub allowed_tools: Option<ToolList>,
    /// Tools removed from the session: a list, or comma-separated [default: none].
    #[arg(long, value_parser = ToolList::parse)]
    #[serde(default, alias = "disallowedTools")]
    pub disallowed_tools: Option<ToolList>,
    /// Text appended to Claude Code's system prompt [default: none].
    #[arg(long)]
    #[serde(default, alias = "systemPrompt")]
    pub system_prompt: Option<String>,
    /// Hard budget in USD for the session's whole life, across restarts (each claude
    /// process gets what is left as `--max-budget-usd`; a fork gets what its parent has
    /// left) [default: no cap].
    #[arg(long, value_parser = non_negative_f64)]
    #[serde(default, alias = "maxBudget", alias = "max_budget_usd")]
    #[schemars(range(min = 0))]
    pub max_budget: Option<f64>,
    /// Agent turns allowed per message, `--max-turns` [default: no limit].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(default, alias = "maxTurns")]
    #[schemars(range(min = 1))]
    pub max_turns: Option<u32>,
    /// Use a specific agent [default: none].
    #[arg(long)]
    #[serde(default)]
    pub agent: Option<String>,
    /// Run in a git worktree of this name, `claude -w` [default: none].
    #[arg(long)]
    #[serde(default)]
    pub worktree: Option<String>,
    /// MCP servers for the session, `claude --mcp-config`: JSON text
    /// ({"mcpServers": {...}}) or a file [default: none].
    #[arg(long, value_name = "JSON")]
    #[serde(default, alias = "mcpConfig")]
    pub mcp_config: Option<String>,
    /// More directories the file tools may use, `claude --add-dir` (relative ones from
    /// the working directory) [default: none].
    #[arg(long = "add-dir", value_name = "DIR")]
    #[serde(default, alias = "addDirs")]
    pub add_dirs: Vec<String>,
    /// Seconds one turn may take before it is interrupted (then killed if claude does
    /// not stop); the session stays resumable [default: 3600].
    #[arg(long, value_parser = positive_f64, default_value = DEFAULT_TIMEOUT_TEXT, hide_default_value = true)]
    #[serde(default)]
    #[schemars(extend("exclusiveMinimum" = 0))]
    pub timeout: Option<f64>,
}

/// The seed's name for a batch entry.
pub type BatchSpec = SpawnSpec;

/// A tool list given as `["Read","Grep"]` or `"Read,Grep"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ToolList {
    List(Vec<String>),
    Text(String),
}

impl ToolList {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            ToolList::List(v) => v,
            ToolList::Text(t) => split_list(&t),
        }
    }

    /// A command-line value: the comma-separated text.
    pub fn parse(s: &str) -> std::result::Result<ToolList, String> {
        Ok(ToolList::Text(s.to_string()))
    }
}

/// Split a comma-separated list, trimming items and dropping empty ones.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

impl SpawnSpec {
    /// The engine's request; `stop` applies when the spec does not say.
    pub fn into_request(self, stop: bool) -> Result<SpawnRequest> {
        Ok(SpawnRequest {
            timeout: seconds(self.timeout)?,
            stop_after: self.stop.unwrap_or(stop),
            name: self.name,
            prompt: self.prompt,
            options: SessionOptions {
                model: self.model,
                work_dir: self.work_dir,
                permission_mode: self.permission_mode.map(|m| m.as_str().to_string()),
                allowed_tools: self
                    .allowed_tools
                    .map(ToolList::into_vec)
                    .unwrap_or_default(),
                disallowed_tools: self
                    .disallowed_tools
                    .map(ToolList::into_vec)
                    .unwrap_or_default(),
                system_prompt: self.system_prompt,
                max_budget_usd: self.max_budget,
                max_turns: self.max_turns,
                agent: self.agent,
                worktree: self.worktree,
                mcp_config: self.mcp_config,
                add_dirs: self.add_dirs,
                on: self.on,
                labels: self.labels.map(ToolList::into_vec).unwrap_or_default(),
                ..SessionOptions::default()
            },
            ..SpawnRequest::default()
        })
    }
}

/// A command-line number 0 or more.
pub fn non_negative_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number 0 or more, got '{s}'")),
    }
}

/// A command-line number above 0.
pub fn positive_f64(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("expected a number above 0, got '{s}'")),
    }
}

/// The JSON schema of an input type as MCP tools and the LuaLS stubs use it: one
/// object, subschemas inlined, an optional field typed as its value (not `T|null`),
/// no `$schema`, `title` or `default: null`.
pub fn input_schema<T: JsonSchema>() -> Map<String, Value> {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.inline_subschemas = true;
        s.meta_schema = None;
    });
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut v = schema.to_value();
    tidy(&mut v);
    if let Value::Object(m) = &mut v {
        m.remove("title");
        m.remove("description");
        m.remove("$defs");
    }
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Drop what an optional field adds (`null` in its type, `default: null`) and the
/// number `format`s, and join the wrapped lines of descriptions, everywhere in a schema.
fn tidy(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(types)) = m.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    m.insert("type".into(), only);
                }
            }
            if m.get("default") == Some(&Value::Null) {
                m.remove("default");
            }
            // A doc comment's wrapped lines are one paragraph.
            if let Some(Value::String(d)) = m.get_mut("description") {
                *d = d
                    .split("\n\n")
                    .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
                    .collect::<Vec<_>>()
                    .join("\n\n");
            }
            for key in ["anyOf", "oneOf"] {
                if let Some(Value::Array(alts)) = m.get_mut(key) {
                    alts.retain(|a| a.get("type") != Some(&Value::from("null")));
                    if alts.len() == 1 {
                        let only = alts.remove(0);
                        m.remove(key);
                        if let Value::Object(inner) = only {
                            for (k, val) in inner {
                                m.entry(k).or_insert(val);
                            }
                        }
                    }
                }
            }
            if let Some(Value::Array(e)) = m.get_mut("enum") {
                e.retain(|x| !x.is_null());
            }
            if matches!(m.get("format").and_then(Value::as_str), Some(f) if f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float")
            {
                m.remove("format");
            }
            for val in m.values_mut() {
                tidy(val);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// Everything `spawn` needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SpawnRequest {
    pub name: String,
    pub prompt: String,
    pub options: SessionOptions,
    /// Per-turn timeout (default: the engine's); in seconds on the wire.
    #[serde(rename = "timeout_secs", with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Stop the session after the first response (one-shot).
    pub stop_after: bool,
    /// Stored with the session for layers above (delegation settings, ...).
    pub meta: Option<serde_json::Value>,
    /// The history kind of the first interaction (default `spawn`).
    pub kind: Option<String>,
}

/// An optional [`Duration`] as a number of seconds (the host protocol's form).
pub mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let secs = Option::<f64>::deserialize(d)?;
        super::seconds(secs).map_err(serde::de::Error::custom)
    }
}

/// The longest timeout, in seconds (ten years): a longer one is as good as none, and
/// adding it to a clock must not overflow.
pub const LONGEST_SECS: f64 = 10.0 * 365.0 * 86_400.0;

/// A timeout given in seconds, checked: above 0 and finite (at most [`LONGEST_SECS`]).
pub fn seconds(t: Option<f64>) -> Result<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => {
            Ok(Some(Duration::from_secs_f64(s.min(LONGEST_SECS))))
        }
        Some(s) => Err(EngineError::Invalid(format!(
            "timeout must be a number of seconds above 0, got {s}"
        ))),
    }
}

/// Check a batch before anything starts: at least one entry, valid and distinct
/// names, no empty prompt.
pub fn check_batch(specs: &[SpawnSpec]) -> Result<()> {
    if specs.is_empty() {
        return Err(EngineError::Invalid("the batch has no entries".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for s in specs {
        validate_name(&s.name)?;
        if !seen.insert(s.name.as_str()) {
            return Err(EngineError::Invalid(format!(
                "the batch names '{}' twice",
                s.name
            )));
        }
        if s.prompt.trim().is_empty() {
            return Err(EngineError::Invalid(format!(
                "batch entry '{}' has an empty prompt",
                s.name
            )));
        }
    }
    Ok(())
}

/// Session names: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        // A name is a file name too (`$CMS_HOME/locks/NAME.lock`): not `.` or `..`.
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidName(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_is_plain_json_schema() {
        let s = input_schema::<SpawnSpec>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["required"], serde_json::json!(["name", "prompt"]));
        let p = &s["properties"];
        assert_eq!(p["model"]["type"], "string");
        assert_eq!(p["max_turns"]["minimum"], 1);
        assert_eq!(p["timeout"]["exclusiveMinimum"], 0);
        assert_eq!(
            p["permission_mode"]["enum"],
            serde_json::json!(PermissionMode::names())
        );
        assert!(
            p["allowed_tools"]["anyOf"].is_array(),
            "{}",
            p["allowed_tools"]
        );
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("null") && !text.contains("$ref"), "{text}");
        assert!(!text.contains("\\n"), "descriptions are one line: {text}");
        assert!(p["name"]["description"]
            .as_str()
            .unwrap()
            .starts_with("Session name"));
    }

    #[test]
    fn the_default_timeout_text_is_the_engines() {
        assert_eq!(
            DEFAULT_TIMEOUT_TEXT,
            crate::engine::config::DEFAULT_TURN_TIMEOUT_SECS.to_string()
        );
    }

    #[test]
    fn camel_case_names_and_new_options_are_read() {
        let s: SpawnSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "prompt": "p", "permissionMode": "auto", "allowedTools": "Read, Grep",
            "mcp_config": "{}", "add_dirs": ["/x"]
        }))
        .unwrap();
        let r = s.into_request(false).unwrap();
        assert_eq!(r.options.permission_mode.as_deref(), Some("auto"));
        assert_eq!(r.options.allowed_tools, ["Read", "Grep"]);
        assert_eq!(r.options.mcp_config.as_deref(), Some("{}"));
        assert_eq!(r.options.add_dirs, ["/x"]);
        let bad = serde_json::from_value::<SpawnSpec>(
            serde_json::json!({"name": "a", "prompt": "p", "permission_mode": "yolo"}),
        )
        .unwrap_err();
        assert!(bad.to_string().contains("acceptEdits"), "{bad}");
    }
}
