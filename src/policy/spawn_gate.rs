//! What a caller may ask for when it starts a session: the ceiling for MCP callers
//! and the floor for work started from inside a guarded session.
//!
//! - Sessions started over MCP are guarded (preset `edit`, or `plan` when asked),
//!   and may not ask for `bypassPermissions`, `dontAsk`, `acceptEdits` or `auto`,
//!   pre-approved tools beyond reading ones, `safety: false`, MCP servers of their
//!   own (`mcp_config`: Claude Code starts them, unasked) or more directories
//!   (`add_dirs`).
//! - A session started by a guarded session (its `claude` child carries
//!   [`crate::policy::isolation::GUARD_ENV`], which `cms mcp` inherits) is at
//!   least as guarded as its parent: safety on, and a preset no wider.
//! - The safety policy may have its say first: `on_spawn(spec, ctx)` in
//!   `safety.lua` sees the request and who asks (`ctx.caller` = `"cli"`,
//!   `"script"`, `"mcp"` or `"session"`, `ctx.parent` = the parent's guard) and
//!   returns nil (the defaults above decide), `"allow"` [, spec] (the ceiling is
//!   lifted, the parent floor stays), or `"deny"`, reason. Anything else refuses.

use crate::engine::{Guard, SpawnRequest};
use serde::{Deserialize, Serialize};

/// Who asks for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Caller {
    Cli,
    Script,
    Mcp,
    /// A guarded session, through cms's MCP tools (or a cms it runs).
    Session,
}

/// A request for a session as `on_spawn` sees it (and may lower it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpawnAsk {
    pub name: String,
    /// `session` (spawn_session, batch_spawn) or `delegate`.
    pub kind: String,
    pub permission_mode: Option<String>,
    pub allowed_tools: Vec<String>,
    /// The preset it will be guarded with (None: unguarded).
    pub preset: Option<String>,
    /// Whether the safety net decides its tool calls.
    pub safety: bool,
    /// `claude --mcp-config`: servers Claude Code starts by itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_config: Option<String>,
    /// `claude --add-dir`: more directories for the file tools.
    pub add_dirs: Vec<String>,
}

/// Tools a caller may pre-approve (the CLI runs them without asking cms).
pub const READ_TOOLS: &[&str] = &[
    "Read",
    "Glob",
    "Grep",
    "LS",
    "WebSearch",
    "WebFetch",
    "TodoWrite",
];

/// Permission modes that let Claude Code act without asking cms.
pub const WIDE_MODES: &[&str] = &["bypassPermissions", "dontAsk", "acceptEdits", "auto"];

/// How wide a preset is: read-only kinds < edit < full; unknown ones count as
/// the widest.
pub fn rank(preset: &str) -> u8 {
    match preset {
        "plan" | "read-only" | "review" => 0,
        "edit" => 1,
        _ => 2,
    }
}

/// The default ceiling for callers that are not the user (MCP, a session).
pub fn ceiling(ask: &mut SpawnAsk) -> Result<(), String> {
    if let Some(mode) = ask.permission_mode.as_deref() {
        if WIDE_MODES.contains(&mode) {
            return Err(format!(
                "permission mode '{mode}' lets Claude Code act without asking cms; over MCP sessions are guarded (preset edit, or permission_mode plan). Use delegate_task with a preset, or ask the user to allow it in on_spawn of safety.lua"
            ));
        }
    }
    if let Some(tool) = ask
        .allowed_tools
        .iter()
        .find(|t| !READ_TOOLS.contains(&t.as_str()))
    {
        return Err(format!(
            "pre-approving '{tool}' would let it run unseen by the safety net; over MCP only reading tools may be pre-approved ({})",
            READ_TOOLS.join(", ")
        ));
    }
    if !ask.safety {
        return Err(
            "safety: false is not available over MCP; the safety net guards every session started here"
                .into(),
        );
    }
    if ask.mcp_config.is_some() {
        return Err(
            "mcp_config is not available over MCP: Claude Code would start its servers before the safety net sees anything; ask the user to allow it in on_spawn of safety.lua"
                .into(),
        );
    }
    if !ask.add_dirs.is_empty() {
        return Err(
            "add_dirs is not available over MCP: the session would reach files outside its working directory; ask the user to allow it in on_spawn of safety.lua"
                .into(),
        );
    }
    if ask.preset.is_none() {
        let plan = ask.permission_mode.as_deref() == Some("plan");
        ask.preset = Some(if plan { "plan" } else { "edit" }.into());
    }
    Ok(())
}

/// Raise `ask` to at least its parent's guard.
pub fn floor(ask: &mut SpawnAsk, parent: &Guard) {
    if parent.safety {
        ask.safety = true;
    }
    let parent_preset = parent.preset.clone().unwrap_or_else(|| "read-only".into());
    let wider = match &ask.preset {
        None => true,
        Some(p) => rank(p) > rank(&parent_preset) || (rank(p) == 2 && p != &parent_preset),
    };
    if wider {
        ask.preset = Some(parent_preset);
    }
    if ask
        .permission_mode
        .as_deref()
        .is_some_and(|m| WIDE_MODES.contains(&m))
    {
        ask.permission_mode = None;
    }
    ask.allowed_tools
        .retain(|t| READ_TOOLS.contains(&t.as_str()));
    ask.mcp_config = None;
    ask.add_dirs.clear();
}

/// Whether a guarded session (`parent`) may steer an existing session (send to it,
/// resume, fork or continue it): only one at least as guarded as itself, or it could
/// have an unguarded session do what it may not. None: it may; else why not.
pub fn may_steer(target: Option<&Guard>, parent: &Guard) -> Option<String> {
    let parent_preset = parent.preset.as_deref().unwrap_or("read-only");
    let why = match target {
        None => "it is not guarded by cms".to_string(),
        Some(g) if parent.safety && !g.safety => "its safety net is off".to_string(),
        Some(g) => {
            let preset = g.preset.as_deref().unwrap_or("full");
            let wider = rank(preset) > rank(parent_preset)
                || (rank(preset) == 2 && preset != parent_preset);
            if !wider {
                return None;
            }
            format!("its preset '{preset}' is wider than '{parent_preset}'")
        }
    };
    Some(format!(
        "{why}; a guarded session may only steer sessions at least as guarded as itself (preset '{parent_preset}', safety on)"
    ))
}

/// Decide a request: the policy's `on_spawn` first, then the defaults for the
/// caller, then the parent's floor. The request as it may start, or why not.
pub fn decide(
    policy: Option<&crate::policy::PolicyService>,
    mut ask: SpawnAsk,
    caller: Caller,
    parent: Option<&Guard>,
) -> Result<SpawnAsk, String> {
    let answer = match policy {
        Some(p) => p.on_spawn(&ask, caller, parent)?,
        None => None,
    };
    let lifted = match answer {
        Some(changed) => {
            ask = changed;
            true
        }
        None => false,
    };
    if !lifted && matches!(caller, Caller::Mcp | Caller::Session) {
        ceiling(&mut ask)?;
    }
    if let Some(parent) = parent {
        floor(&mut ask, parent);
    }
    Ok(ask)
}

/// Admit a session asked for by `caller`: the ceiling, the parent's floor and
/// `on_spawn` decide its permission mode, tools, MCP servers and directories; a
/// preset they impose is applied to its options and kept as its guard. Err: why it
/// was refused.
pub fn admit_session(
    policy: Option<&crate::policy::PolicyService>,
    req: &mut SpawnRequest,
    caller: Caller,
    parent: Option<&Guard>,
) -> Result<(), String> {
    let ask = SpawnAsk {
        name: req.name.clone(),
        kind: "session".into(),
        permission_mode: req.options.permission_mode.clone(),
        allowed_tools: req.options.allowed_tools.clone(),
        preset: None,
        safety: true,
        mcp_config: req.options.mcp_config.clone(),
        add_dirs: req.options.add_dirs.clone(),
    };
    let refused = |e: String| format!("cms refused to start '{}': {e}", req.name);
    let ask = decide(policy, ask, caller, parent).map_err(refused)?;
    let o = &mut req.options;
    o.permission_mode = ask.permission_mode.clone();
    o.allowed_tools = ask.allowed_tools.clone();
    o.mcp_config = ask.mcp_config.clone();
    o.add_dirs = ask.add_dirs.clone();
    if let Some(preset_name) = &ask.preset {
        let preset = match policy {
            Some(p) => p.preset(preset_name).map_err(|e| refused(e.to_string()))?,
            None => return Err(refused("no safety policy is loaded".into())),
        };
        if o.permission_mode.as_deref() != Some("plan") {
            o.permission_mode = Some(preset.permission_mode.clone());
        }
        for t in preset.allowed_tools {
            if !o.allowed_tools.contains(&t) {
                o.allowed_tools.push(t);
            }
        }
        o.disallowed_tools.extend(preset.disallowed_tools);
        o.guard = Some(Guard {
            preset: Some(preset_name.clone()),
            safety: ask.safety,
            max_cost_usd: o.max_budget_usd,
            max_turns: o.max_turns,
            ..Guard::default()
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(mode: Option<&str>, safety: bool) -> SpawnAsk {
        SpawnAsk {
            name: "x".into(),
            kind: "session".into(),
            permission_mode: mode.map(String::from),
            safety,
            ..SpawnAsk::default()
        }
    }

    #[test]
    fn mcp_callers_get_a_guarded_session_and_no_wider() {
        let a = decide(None, ask(None, true), Caller::Mcp, None).unwrap();
        assert_eq!(a.preset.as_deref(), Some("edit"));
        for mode in WIDE_MODES {
            let e = decide(None, ask(Some(mode), true), Caller::Mcp, None).unwrap_err();
            assert!(e.contains(mode), "{e}");
        }
        assert!(decide(None, ask(None, false), Caller::Mcp, None)
            .unwrap_err()
            .contains("safety: false"));
        let mut bash = ask(None, true);
        bash.allowed_tools = vec!["Bash".into()];
        assert!(decide(None, bash, Caller::Mcp, None).is_err());
        let mut servers = ask(None, true);
        servers.mcp_config = Some("{}".into());
        assert!(decide(None, servers, Caller::Mcp, None)
            .unwrap_err()
            .contains("mcp_config"));
        let mut dirs = ask(None, true);
        dirs.add_dirs = vec!["/".into()];
        assert!(decide(None, dirs, Caller::Mcp, None)
            .unwrap_err()
            .contains("add_dirs"));
        // The user at the CLI decides for themself.
        assert!(decide(None, ask(Some("acceptEdits"), false), Caller::Cli, None).is_ok());
    }

    #[test]
    fn every_mode_is_wide_or_asks_cms() {
        use crate::engine::PermissionMode;
        for m in WIDE_MODES {
            assert!(PermissionMode::parse(m).is_some(), "{m}");
        }
        let narrow: Vec<&str> = PermissionMode::names()
            .into_iter()
            .filter(|m| !WIDE_MODES.contains(m))
            .collect();
        assert_eq!(
            narrow,
            ["default", "plan"],
            "a new mode must be classed here"
        );
    }

    #[test]
    fn a_child_is_at_least_as_guarded_as_its_parent() {
        let parent = Guard {
            preset: Some("edit".into()),
            safety: true,
            ..Guard::default()
        };
        let mut wide = ask(None, false);
        wide.preset = Some("full".into());
        wide.mcp_config = Some("{}".into());
        wide.add_dirs = vec!["/".into()];
        let a = decide(None, wide, Caller::Cli, Some(&parent)).unwrap();
        assert_eq!(a.preset.as_deref(), Some("edit"));
        assert!(a.safety);
        assert!(a.mcp_config.is_none() && a.add_dirs.is_empty());
        let mut narrow = ask(None, true);
        narrow.preset = Some("read-only".into());
        let a = decide(None, narrow, Caller::Session, Some(&parent)).unwrap();
        assert_eq!(a.preset.as_deref(), Some("read-only"));
    }
}
