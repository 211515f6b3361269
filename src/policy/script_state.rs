//! One Lua state with the policy scripts of a snapshot loaded, on one thread: the
//! safety hooks, the presets, the limits and the plugin policies, called under a
//! time limit; and `cms policy check FILE`.

use super::snapshot::{fail_closed, HostCaps, Limits, PolicyError, Preset, Snapshot};
use crate::engine::{Decision, Guard, Progress, SessionEvent, ToolCall, Verdict, Violation};
use crate::sandbox::error_text;
use crate::sandbox::limits::call_limited;
use crate::sandbox::limits::load_limited;
use crate::sandbox::scripts::{Layers, Source};
use mlua::{Function, Lua, LuaSerdeExt, MultiValue, Table, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub(super) struct ScriptState {
    pub(super) lua: Lua,
    pub(super) limit: Duration,
    pub(super) safety: Table,
    pub(super) presets: Table,
    pub(super) limits: Limits,
    /// `M.host`: the caps and budgets across sessions, validated.
    pub(super) host: HostCaps,
    /// `(name, file, on_tool_use)` of each plugin policy, asked first.
    pub(super) plugin_policies: Vec<(String, String, Function)>,
    /// The file `safety.lua` came from (named when it answers nonsense).
    pub(super) safety_origin: String,
    pub(super) generation: u64,
}

impl ScriptState {
    /// A Lua state with the snapshot's scripts loaded, or the `file:line` errors.
    pub(super) fn build(
        layers: &Layers,
        snap: &Snapshot,
        limit: Duration,
    ) -> Result<ScriptState, Vec<String>> {
        let one = |e: mlua::Error| vec![error_text(&e)];
        let lua = base_lua().map_err(one)?;
        // Decisions make many short-lived tables: the generational collector keeps
        // their cost (and the p99) low.
        lua.gc_gen(0, 0);
        install_searcher(&lua, layers, &snap.modules).map_err(one)?;
        let require = |name: &str| -> mlua::Result<Value> {
            let require: Function = lua.globals().get("require")?;
            load_limited(&lua, || require.call::<Value>(name))
        };
        let mut errors = Vec::new();
        let safety = require("safety")
            .and_then(|v| check_safety(&v))
            .map_err(|e| errors.push(error_text(&e)))
            .ok();
        let presets = require("presets")
            .and_then(|v| check_presets(&lua, &v))
            .map_err(|e| errors.push(error_text(&e)))
            .ok();
        let (Some(safety), Some(presets)) = (safety, presets) else {
            return Err(errors);
        };
        let safety_source = snap
            .modules
            .get("safety")
            .cloned()
            .or_else(|| crate::sandbox::scripts::builtin("safety.lua"));
        let safety_origin = safety_source
            .as_ref()
            .map(|s| s.origin.clone())
            .unwrap_or_else(|| "builtin:safety.lua".into());
        let code = safety_source.as_ref().map_or("", |s| s.code.as_str());
        let host = read_host(&safety, &safety_origin, code).map_err(|e| vec![e])?;
        let plugin_policies = crate::plugins::policies(&lua, &snap.plugins);
        let mut w = ScriptState {
            safety_origin,
            lua,
            limit,
            safety,
            presets,
            limits: Limits::SEED,
            host,
            plugin_policies,
            generation: snap.generation,
        };
        w.limits = w.read_limits();
        Ok(w)
    }

    /// `M.limits` of the safety policy; a limit it leaves out keeps the seed's
    /// default, so no limit is dropped by omission.
    pub(super) fn read_limits(&self) -> Limits {
        let set: Limits = self
            .safety
            .get::<Value>("limits")
            .ok()
            .and_then(|v| self.lua.from_value(v).ok())
            .unwrap_or_default();
        Limits {
            max_cost: set.max_cost.or(Limits::SEED.max_cost),
            max_turns: set.max_turns.or(Limits::SEED.max_turns),
            timeout: set.timeout.or(Limits::SEED.timeout),
        }
    }

    pub(super) fn preset_table(&self, name: &str) -> Option<Table> {
        self.presets.get::<Option<Table>>(name).ok().flatten()
    }

    pub(super) fn preset(&self, name: &str) -> Result<Preset, PolicyError> {
        let Some(t) = self.preset_table(name) else {
            let mut known: Vec<String> = self
                .presets
                .pairs::<String, Value>()
                .filter_map(|kv| kv.ok().map(|(k, _)| k))
                .collect();
            known.sort();
            return Err(PolicyError::UnknownPreset {
                name: name.into(),
                known: known.join(", "),
            });
        };
        let _ = t.set("name", name);
        let mut p: Preset = self
            .lua
            .from_value(Value::Table(t))
            .map_err(|e| PolicyError::Load(format!("preset '{name}' is malformed: {e}")))?;
        p.name = name.into();
        Ok(p)
    }

    pub(super) fn ctx(
        &self,
        session: &str,
        cwd: &str,
        guard: &Guard,
        progress: &Progress,
    ) -> mlua::Result<Table> {
        let lua = &self.lua;
        let ctx = lua.create_table()?;
        ctx.set("session", session)?;
        ctx.set("cwd", cwd)?;
        ctx.set("safety", guard.safety)?;
        if let Some(name) = &guard.preset {
            if let Some(p) = self.preset_table(name) {
                p.set("name", name.as_str())?;
                ctx.set("preset", p)?;
            }
        }
        let defaults = self.limits;
        let limits = lua.create_table()?;
        limits.set("max_cost", guard.max_cost_usd.or(defaults.max_cost))?;
        limits.set("max_turns", guard.max_turns.or(defaults.max_turns))?;
        limits.set("timeout", guard.timeout_secs.or(defaults.timeout))?;
        ctx.set("limits", limits)?;
        ctx.set("cost", progress.cost_usd)?;
        ctx.set("turns", progress.turns)?;
        ctx.set("elapsed", progress.turn_elapsed.as_secs_f64())?;
        Ok(ctx)
    }

    pub(super) fn decide(&self, call: &ToolCall, guard: &Guard) -> Decision {
        let safety = &self.safety;
        let run = || -> mlua::Result<Decision> {
            let f: Function = safety.get("on_tool_use")?;
            let tool = self.lua.create_table()?;
            tool.set("name", call.tool_name.as_str())?;
            tool.set("input", self.lua.to_value(&call.input)?)?;
            let ctx = self.ctx(&call.session, &call.cwd, guard, &call.progress)?;
            ctx.set("host", call.host.as_deref())?;
            if guard.safety {
                for (name, origin, policy) in &self.plugin_policies {
                    let out: MultiValue =
                        call_limited(&self.lua, self.limit, policy, (tool.clone(), ctx.clone()))
                            .map_err(|e| {
                                mlua::Error::runtime(format!(
                                    "plugin policy '{name}' ({origin}): {}",
                                    error_text(&e)
                                ))
                            })?;
                    let who = format!("plugin policy '{name}' ({origin})");
                    match verdict(&self.lua, out, &who, call, Some(name))? {
                        // No opinion, or no objection: the next policy decides.
                        None | Some(Decision::Allow) | Some(Decision::AllowWith(_)) => {}
                        Some(deny) => return Ok(deny),
                    }
                }
            }
            let out: MultiValue = call_limited(&self.lua, self.limit, &f, (tool, ctx))?;
            let who = format!("on_tool_use of {}", self.safety_origin);
            // The safety policy has the last word: no opinion is not an answer.
            verdict(&self.lua, out, &who, call, None)?.ok_or_else(|| {
                mlua::Error::runtime(format!(
                    "{who} returned nil; it must return \"allow\" or \"deny\""
                ))
            })
        };
        run().unwrap_or_else(|e| fail_closed(&error_text(&e)))
    }

    pub(super) fn on_event(
        &self,
        event: &SessionEvent,
        guard: &Guard,
        progress: &Progress,
    ) -> Verdict {
        let safety = &self.safety;
        let run = || -> mlua::Result<Verdict> {
            let Some(f) = safety.get::<Option<Function>>("on_event")? else {
                return Ok(Verdict::Continue);
            };
            let ev = crate::sandbox::convert::to_lua(&self.lua, event)?;
            let ctx = self.ctx(&event.session, "", guard, progress)?;
            let out: MultiValue = call_limited(&self.lua, self.limit, &f, (ev, ctx))?;
            let mut it = out.into_iter();
            let verb = match it.next() {
                None | Some(Value::Nil) => None,
                Some(Value::String(s)) => Some(s.to_string_lossy()),
                Some(other) => Some(show(&other)),
            };
            let message = it
                .next()
                .and_then(|v| v.as_string().map(|s| s.to_string_lossy()))
                .unwrap_or_default();
            let rule = it
                .next()
                .and_then(|v| v.as_string().map(|s| s.to_string_lossy()))
                .unwrap_or_else(|| "policy".into());
            let v = Violation { rule, message };
            Ok(match verb.as_deref() {
                None | Some("continue") => Verdict::Continue,
                Some("warn") => Verdict::Warn(v),
                Some("stop") => Verdict::Stop(v),
                Some("kill") => Verdict::Kill(v),
                Some(other) => {
                    return Err(mlua::Error::runtime(format!(
                        "on_event of {} returned \"{other}\"; expected nil, \"warn\", \"stop\" or \"kill\"",
                        self.safety_origin
                    )))
                }
            })
        };
        // Fail closed: a limit check that cannot run stops the session.
        run().unwrap_or_else(|e| {
            Verdict::Stop(Violation {
                rule: "policy_error".into(),
                message: format!(
                    "the safety policy's on_event failed, so the session is stopped: {}",
                    error_text(&e)
                ),
            })
        })
    }
}

/// Read a policy's answer: nil is no opinion (`None`); `"allow"` [, input],
/// `"deny"`, reason [, rule] and `"ask"`, reason [, seconds] (a person decides) are
/// answers; anything else (`"Deny"`, `"bogus"`, a
/// number) is an error naming `who` and the value, so the call is denied.
pub(super) fn verdict(
    lua: &Lua,
    out: MultiValue,
    who: &str,
    call: &ToolCall,
    default_rule: Option<&String>,
) -> mlua::Result<Option<Decision>> {
    let mut it = out.into_iter();
    let verb = it.next().unwrap_or(Value::Nil);
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s.to_string_lossy()),
        _ => None,
    };
    match &verb {
        Value::Nil => Ok(None),
        Value::String(s) if s.as_bytes() == b"allow" => match it.next() {
            Some(v @ Value::Table(_)) => Ok(Some(Decision::AllowWith(lua.from_value(v)?))),
            None | Some(Value::Nil) => Ok(Some(Decision::Allow)),
            Some(other) => Err(mlua::Error::runtime(format!(
                "{who} returned \"allow\" with {} as the changed input; it must be a table",
                show(&other)
            ))),
        },
        Value::String(s) if s.as_bytes() == b"deny" => {
            let reason = text(it.next()).unwrap_or_else(|| match default_rule {
                Some(name) => format!("denied by the {name} policy"),
                None => format!("denied by the cms safety policy ({})", call.tool_name),
            });
            let rule = text(it.next()).or_else(|| default_rule.cloned());
            Ok(Some(Decision::Deny {
                reason,
                interrupt: false,
                rule,
            }))
        }
        Value::String(s) if s.as_bytes() == b"ask" => {
            let reason = text(it.next())
                .unwrap_or_else(|| format!("the cms safety policy asks about {}", call.tool_name));
            let timeout = match it.next() {
                None | Some(Value::Nil) => None,
                Some(Value::Integer(n)) if n > 0 => Some(std::time::Duration::from_secs(n as u64)),
                Some(Value::Number(n)) if n.is_finite() && n > 0.0 => {
                    Some(std::time::Duration::from_secs_f64(n.min(86_400.0)))
                }
                Some(other) => {
                    return Err(mlua::Error::runtime(format!(
                        "{who} returned \"ask\" with {} as the time to wait; it must be seconds above 0",
                        show(&other)
                    )))
                }
            };
            Ok(Some(Decision::Ask { reason, timeout }))
        }
        other => Err(mlua::Error::runtime(format!(
            "{who} returned {}, which cms does not know; only nil, \"allow\", \"deny\" and \"ask\" are answers",
            show(other)
        ))),
    }
}

/// A Lua value as a person reads it in a message.
pub(super) fn show(v: &Value) -> String {
    match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => i.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        other => format!("a {}", other.type_name()),
    }
}

/// A sandboxed Lua state with the pure parts of `cms` (`cms.path`, `cms.shell`,
/// `cms.json`, `cms.log`): what policies are written with.
pub(super) fn base_lua() -> mlua::Result<Lua> {
    // Policies read files (through `cms.path`, `io.open(path)`); they never write one.
    crate::sandbox::new_state(crate::sandbox::StateOptions {
        allow_unsafe: false,
        memory_limit: 64 * 1024 * 1024,
        confine_files: true,
    })
}

/// Make `require` find cms modules: the snapshot's sources first (the versions in
/// force), then the layers (a helper module of yours in `.cms/`).
pub(super) fn install_searcher(
    lua: &Lua,
    layers: &Layers,
    modules: &HashMap<String, Source>,
) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let searchers: Table = package.get("searchers")?;
    let layers = layers.clone();
    let modules = modules.clone();
    let searcher = lua.create_function(move |lua, name: String| {
        let rel = format!("{}.lua", name.replace('.', "/"));
        match modules.get(&name).cloned().or_else(|| layers.find(&rel)) {
            Some(src) => {
                let f = lua
                    .load(src.code.as_str())
                    .set_name(src.chunk_name())
                    .set_mode(mlua::ChunkMode::Text)
                    .into_function()?;
                Ok((
                    Value::Function(f),
                    Value::String(lua.create_string(&src.origin)?),
                ))
            }
            None => Ok((
                Value::String(lua.create_string(format!("\n\tno cms script '{rel}'"))?),
                Value::Nil,
            )),
        }
    })?;
    // Slot 2: after the preload searcher, before the file searcher.
    searchers.raw_insert(2, searcher)?;
    Ok(())
}

pub(super) fn check_safety(v: &Value) -> mlua::Result<Table> {
    match v {
        Value::Table(t) if matches!(t.get::<Value>("on_tool_use")?, Value::Function(_)) => {
            Ok(t.clone())
        }
        _ => Err(mlua::Error::runtime(
            "safety.lua must return a table with a function on_tool_use(tool, ctx)",
        )),
    }
}

/// `M.host` of a safety policy, validated: `max_live` and `max_turns` whole numbers
/// of 1 or more, `daily_usd` and `total_usd` numbers of 0 or more, no other key.
/// Errors read `file:line: ...` (the line of the key, or of `host`, when found).
pub(super) fn read_host(safety: &Table, origin: &str, code: &str) -> Result<HostCaps, String> {
    let at = |key: Option<&str>| match key
        .and_then(|k| line_of(code, k))
        .or_else(|| line_of(code, "host"))
    {
        Some(line) => format!("{origin}:{line}"),
        None => origin.to_string(),
    };
    let t = match safety.get::<Value>("host") {
        Ok(Value::Nil) => return Ok(HostCaps::default()),
        Ok(Value::Table(t)) => t,
        Ok(other) => {
            return Err(format!(
                "{}: M.host must be a table {{ max_live = N, max_turns = N, daily_usd = USD, total_usd = USD }}, not {}",
                at(None),
                show(&other)
            ))
        }
        Err(e) => return Err(format!("{}: M.host: {}", at(None), error_text(&e))),
    };
    let mut caps = HostCaps::default();
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair.map_err(|e| format!("{}: M.host: {}", at(None), error_text(&e)))?;
        let key = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => {
                return Err(format!(
                    "{}: M.host has the key {}; its keys are {}",
                    at(None),
                    show(other),
                    HostCaps::KEYS.join(", ")
                ))
            }
        };
        let whole = |v: &Value| -> Option<u32> {
            match v {
                Value::Integer(n) if *n >= 1 => u32::try_from(*n).ok(),
                Value::Number(f) if f.fract() == 0.0 && *f >= 1.0 && *f <= u32::MAX as f64 => {
                    Some(*f as u32)
                }
                _ => None,
            }
        };
        let usd = |v: &Value| -> Option<f64> {
            match v {
                Value::Integer(n) if *n >= 0 => Some(*n as f64),
                Value::Number(f) if f.is_finite() && *f >= 0.0 => Some(*f),
                _ => None,
            }
        };
        let bad = |what: &str| {
            format!(
                "{}: M.host.{key} must be {what} (or nil), not {}",
                at(Some(&key)),
                show(&v)
            )
        };
        match key.as_str() {
            "max_live" => {
                caps.max_live = Some(whole(&v).ok_or_else(|| bad("a whole number of 1 or more"))?)
            }
            "max_turns" => {
                caps.max_turns = Some(whole(&v).ok_or_else(|| bad("a whole number of 1 or more"))?)
            }
            "daily_usd" => {
                caps.daily_usd = Some(usd(&v).ok_or_else(|| bad("a number of USD, 0 or more"))?)
            }
            "total_usd" => {
                caps.total_usd = Some(usd(&v).ok_or_else(|| bad("a number of USD, 0 or more"))?)
            }
            _ => {
                return Err(format!(
                    "{}: M.host has an unknown key '{key}'; its keys are {}",
                    at(Some(&key)),
                    HostCaps::KEYS.join(", ")
                ))
            }
        }
    }
    Ok(caps)
}

/// The first line (from 1) of `code` that assigns `key` (`key =`, not `key ==`).
fn line_of(code: &str, key: &str) -> Option<usize> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    code.lines()
        .position(|line| {
            let line = line.split("--").next().unwrap_or("");
            line.match_indices(key).any(|(i, _)| {
                let before = line[..i].chars().next_back();
                let after = line[i + key.len()..].trim_start();
                !before.is_some_and(ident) && after.starts_with('=') && !after.starts_with("==")
            })
        })
        .map(|i| i + 1)
}

pub(super) fn check_presets(lua: &Lua, v: &Value) -> mlua::Result<Table> {
    let Value::Table(t) = v else {
        return Err(mlua::Error::runtime(
            "presets.lua must return a table of presets",
        ));
    };
    for pair in t.pairs::<String, Value>() {
        let (name, p) = pair?;
        let preset: Result<Preset, _> = lua.from_value({
            if let Value::Table(pt) = &p {
                pt.set("name", name.as_str())?;
            }
            p
        });
        let preset = preset.map_err(|e| mlua::Error::runtime(format!("preset '{name}': {e}")))?;
        if crate::engine::PermissionMode::parse(&preset.permission_mode).is_none() {
            return Err(mlua::Error::runtime(format!(
                "preset '{name}': unknown permission_mode '{}' (one of: {})",
                preset.permission_mode,
                crate::engine::PermissionMode::names().join(", ")
            )));
        }
    }
    Ok(t.clone())
}

/// What a script is, for `cms policy check --as KIND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKind {
    Safety,
    ProtectedPaths,
    Presets,
    Strategy,
}

impl ScriptKind {
    /// The names `--as` takes.
    pub const NAMES: &'static [&'static str] =
        &["safety", "protected_paths", "presets", "strategy"];

    pub fn parse(name: &str) -> Option<ScriptKind> {
        Some(match name {
            "safety" => ScriptKind::Safety,
            "protected_paths" => ScriptKind::ProtectedPaths,
            "presets" => ScriptKind::Presets,
            "strategy" => ScriptKind::Strategy,
            _ => return None,
        })
    }

    /// The kind a file name says (`safety.lua`, `protected_paths.lua`,
    /// `presets.lua`, `strategies/NAME.lua`), if it says one.
    pub fn guess(path: &std::path::Path) -> Option<ScriptKind> {
        let file = path.file_name()?.to_string_lossy().into_owned();
        let in_strategies = path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|d| d == "strategies");
        match file.as_str() {
            "safety.lua" => Some(ScriptKind::Safety),
            "protected_paths.lua" => Some(ScriptKind::ProtectedPaths),
            "presets.lua" => Some(ScriptKind::Presets),
            _ if in_strategies && file.ends_with(".lua") => Some(ScriptKind::Strategy),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            ScriptKind::Safety => "safety policy",
            ScriptKind::ProtectedPaths => "protected paths",
            ScriptKind::Presets => "presets",
            ScriptKind::Strategy => "strategy",
        }
    }
}

/// The sample tool calls a policy is dry-run against: `(what, tool, input)`.
fn sample_calls(cwd: &std::path::Path) -> Vec<(&'static str, &'static str, serde_json::Value)> {
    let at = |f: &str| cwd.join(f).display().to_string();
    vec![
        (
            "Read of a file in the working directory",
            "Read",
            serde_json::json!({ "file_path": at("README.md") }),
        ),
        (
            "Write of .env",
            "Write",
            serde_json::json!({ "file_path": at(".env"), "content": "TOKEN=x\n" }),
        ),
        (
            "Bash rm -rf /",
            "Bash",
            serde_json::json!({ "command": "rm -rf /" }),
        ),
        ("Bash ls", "Bash", serde_json::json!({ "command": "ls" })),
    ]
}

/// Validate one script file without running a session: it loads, returns what its
/// kind must return, and (a safety policy, protected paths) answers a few sample
/// tool calls without an error. The kind is `kind`, or else comes from the file
/// name (`safety.lua`, `protected_paths.lua`, `presets.lua`, `strategies/NAME.lua`);
/// a file of no known kind is only loaded. Returns the report, or the first
/// failure as `file:line: message`.
pub fn check_file(path: &std::path::Path, kind: Option<ScriptKind>) -> Result<String, String> {
    let code = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let src = Source {
        origin: path.display().to_string(),
        code,
    };
    let started = Instant::now();
    let cwd = std::env::current_dir().unwrap_or_default();
    let layers = Layers::standard(&cwd);
    let lua = base_lua().map_err(|e| error_text(&e))?;
    install_searcher(&lua, &layers, &HashMap::new()).map_err(|e| error_text(&e))?;
    let value: Value = load_limited(&lua, || {
        lua.load(src.code.as_str())
            .set_name(src.chunk_name())
            .set_mode(mlua::ChunkMode::Text)
            .call(())
    })
    .map_err(|e| error_text(&e))?;
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines = Vec::new();
    let (kind, assumed) = match kind {
        Some(k) => (Some(k), false),
        None => (ScriptKind::guess(path), true),
    };
    let label = match kind {
        None => {
            lines.push(format!(
                "  (only loaded: {file} is no known kind by its name; pass --as {})",
                ScriptKind::NAMES.join("|")
            ));
            "module".to_string()
        }
        Some(k) => {
            let text = |e: mlua::Error| error_text(&e);
            match k {
                ScriptKind::Safety => {
                    let t = check_safety(&value).map_err(text)?;
                    let host = read_host(&t, &src.origin, &src.code)?;
                    dry_run_safety(&lua, &t, &src.origin, &cwd, &mut lines).map_err(text)?;
                    if host != HostCaps::default() {
                        lines.push(format!("  host: {host:?}"));
                    }
                }
                ScriptKind::Presets => {
                    check_presets(&lua, &value).map_err(text)?;
                    if let Value::Table(t) = &value {
                        let mut names: Vec<String> = t
                            .pairs::<String, Value>()
                            .filter_map(|kv| kv.ok().map(|(k, _)| k))
                            .collect();
                        names.sort();
                        lines.push(format!("  presets: {}", names.join(", ")));
                    }
                }
                ScriptKind::ProtectedPaths => {
                    dry_run_protected(&lua, &value, &file, &cwd, &mut lines).map_err(text)?;
                }
                ScriptKind::Strategy => {
                    if !value.is_function() {
                        return Err(format!(
                            "{file} must return a function(task) (a strategy), not {}",
                            show(&value)
                        ));
                    }
                }
            }
            if assumed {
                lines.insert(
                    0,
                    format!(
                        "  assumed a {} from the file name (--as KIND to choose)",
                        k.label()
                    ),
                );
            }
            k.label().to_string()
        }
    };
    let mut out = format!(
        "{}: ok ({label}, checked in {:.1} ms)",
        path.display(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    for l in lines {
        out.push('\n');
        out.push_str(&l);
    }
    Ok(out)
}

/// Ask a safety policy about the sample calls: each must get `"allow"` or
/// `"deny"` without an error (nil is no answer from the safety policy). Its
/// `limits`, if set, must read as limits.
fn dry_run_safety(
    lua: &Lua,
    safety: &Table,
    origin: &str,
    cwd: &std::path::Path,
    lines: &mut Vec<String>,
) -> mlua::Result<()> {
    let limits = match safety.get::<Value>("limits")? {
        Value::Nil => Limits::SEED,
        v => {
            let set: Limits = lua.from_value(v).map_err(|e| {
                mlua::Error::runtime(format!(
                    "{origin}: M.limits must be {{ max_cost = USD, max_turns = N, timeout = SECS }}: {e}"
                ))
            })?;
            set
        }
    };
    let f: Function = safety.get("on_tool_use")?;
    // Where it is defined: an answer cms does not know names this line.
    let at = match f.info().line_defined {
        Some(line) => format!("{origin}:{line}"),
        None => origin.to_string(),
    };
    // The widest shipped preset, so the policy's own rules answer (not the preset's).
    let presets: Option<Table> = lua
        .globals()
        .get::<Function>("require")
        .and_then(|r| load_limited(lua, || r.call::<Table>("presets")))
        .ok();
    for (what, name, input) in sample_calls(cwd) {
        let tool = lua.create_table()?;
        tool.set("name", name)?;
        tool.set("input", lua.to_value(&input)?)?;
        let ctx = lua.create_table()?;
        ctx.set("session", "policy-check")?;
        ctx.set("cwd", cwd.display().to_string())?;
        ctx.set("safety", true)?;
        if let Some(p) = presets
            .as_ref()
            .and_then(|t| t.get::<Option<Table>>("full").ok().flatten())
        {
            p.set("name", "full")?;
            ctx.set("preset", p)?;
        }
        let l = lua.create_table()?;
        l.set("max_cost", limits.max_cost.or(Limits::SEED.max_cost))?;
        l.set("max_turns", limits.max_turns.or(Limits::SEED.max_turns))?;
        l.set("timeout", limits.timeout.or(Limits::SEED.timeout))?;
        ctx.set("limits", l)?;
        ctx.set("cost", 0.0)?;
        ctx.set("turns", 0)?;
        ctx.set("elapsed", 0.0)?;
        let call = ToolCall {
            session: "policy-check".into(),
            tool_name: name.into(),
            input: input.clone(),
            tool_use_id: None,
            cwd: cwd.display().to_string(),
            host: None,
            blocked_path: None,
            progress: Progress::default(),
        };
        let out: MultiValue = call_limited(lua, super::DECISION_LIMIT, &f, (tool, ctx))
            .map_err(|e| in_sample(&e, what))?;
        let who = format!("{at}: on_tool_use (sample call: {what})");
        let answer = match verdict(lua, out, &who, &call, None)? {
            None => {
                return Err(mlua::Error::runtime(format!(
                    "{who} returned nil; it must return \"allow\" or \"deny\""
                )))
            }
            Some(Decision::Allow) => "allow".to_string(),
            Some(Decision::AllowWith(_)) => "allow (input changed)".to_string(),
            Some(Decision::Deny { reason, .. }) => format!("deny: {reason}"),
            Some(Decision::Ask { reason, .. }) => format!("ask a person: {reason}"),
        };
        lines.push(format!("  {what} (preset full): {answer}"));
    }
    Ok(())
}

/// A run-time error of a sample call, saying which call it was.
fn in_sample(e: &mlua::Error, what: &str) -> mlua::Error {
    let text = error_text(e);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let sep = if rest.is_empty() { "" } else { "\n" };
    mlua::Error::runtime(format!(
        "{first}\n  (while answering the sample call: {what}){sep}{rest}"
    ))
}

/// A protected-paths module: a table with `violation(tool, cwd)` (nil or the
/// reason) and `paths`, the list of patterns the OS sandbox holds read-only; the
/// sample calls must not raise an error.
fn dry_run_protected(
    lua: &Lua,
    value: &Value,
    file: &str,
    cwd: &std::path::Path,
    lines: &mut Vec<String>,
) -> mlua::Result<()> {
    let shape = || {
        mlua::Error::runtime(format!(
            "{file} must return a table with a function violation(tool, cwd) and paths, a list of patterns"
        ))
    };
    let Value::Table(t) = value else {
        return Err(shape());
    };
    let Value::Function(violation) = t.get::<Value>("violation")? else {
        return Err(shape());
    };
    match t.get::<Value>("paths")? {
        Value::Nil => lines.push(
            "  note: no M.paths, so the OS sandbox holds only cms's own protected paths".into(),
        ),
        v => {
            let paths: Vec<String> = lua.from_value(v).map_err(|e| {
                mlua::Error::runtime(format!("{file}: M.paths must be a list of strings: {e}"))
            })?;
            lines.push(format!("  {} protected path patterns", paths.len()));
        }
    }
    for (what, name, input) in sample_calls(cwd) {
        let tool = lua.create_table()?;
        tool.set("name", name)?;
        tool.set("input", lua.to_value(&input)?)?;
        let out: Value = call_limited(
            lua,
            super::DECISION_LIMIT,
            &violation,
            (tool, cwd.display().to_string()),
        )
        .map_err(|e| in_sample(&e, what))?;
        let answer = match out {
            Value::Nil => "not protected".to_string(),
            Value::String(s) => format!("protected: {}", s.to_string_lossy()),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "violation() of {file} returned {} for the sample {what}; it must return nil or the reason (a string)",
                    show(&other)
                )))
            }
        };
        lines.push(format!("  {what}: {answer}"));
    }
    Ok(())
}
