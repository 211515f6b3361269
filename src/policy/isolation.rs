//! How a guarded session's `claude` child is started so that only cms decides for
//! it: Claude Code's own settings (allow rules, hooks) and MCP servers that cms did
//! not give it do not apply, its shell commands run in the OS sandbox when there is
//! one, and the guard travels to anything it starts through cms.
//!
//! Measured on the real CLI (2.1.197 and 2.1.332, fake API): without flags, allow
//! rules in `~/.claude/settings.json`, `SessionStart`/`PreToolUse` hooks in user,
//! project and local settings, and stdio servers in `.mcp.json` and
//! `~/.claude.json` all apply. `--setting-sources ""` drops every settings file
//! (allow rules, hooks, and with them the MCP servers those enable);
//! `--strict-mcp-config` keeps only the servers of `--mcp-config`;
//! `--settings '{"disableAllHooks":true}'` alone turns hooks off but leaves user
//! allow rules in force. cms passes all three.

use crate::engine::os_sandbox::{self, SandboxSpec};
use crate::engine::Guard;
use crate::wire::ClaudeArgs;

/// The environment variable a guarded child (and whatever it starts, `cms mcp`
/// included) carries: the guard as JSON, so work it starts through cms is at least
/// as guarded as it is.
pub const GUARD_ENV: &str = "CMS_GUARD";

/// Settings cms gives every guarded session (the only settings it gets).
pub const SETTINGS: &str = r#"{"disableAllHooks":true}"#;

/// Add the isolating flags and environment for a guarded session; with a
/// `sandbox`, its shell commands run with the protected paths read-only.
pub fn apply(
    guard: &Guard,
    sandbox: Option<&SandboxSpec>,
    args: &mut ClaudeArgs,
    env: &mut Vec<(String, String)>,
) {
    for a in [
        "--setting-sources",
        "",
        "--strict-mcp-config",
        "--settings",
        SETTINGS,
    ] {
        args.extra.push(a.to_string());
    }
    env.retain(|(k, _)| k != GUARD_ENV && k != "CLAUDE_CODE_SHELL_PREFIX");
    env.push((
        GUARD_ENV.into(),
        serde_json::to_string(guard).unwrap_or_default(),
    ));
    if let Some(prefix) = sandbox.and_then(os_sandbox::shell_prefix) {
        env.push(("CLAUDE_CODE_SHELL_PREFIX".into(), prefix));
    }
}

/// The guard of the guarded session this process runs inside, if any.
pub fn inherited() -> Option<Guard> {
    let text = std::env::var(GUARD_ENV).ok()?;
    match serde_json::from_str(&text) {
        Ok(g) => Some(g),
        // Unreadable: assume the strictest guard rather than none.
        Err(_) => Some(Guard {
            preset: Some("read-only".into()),
            safety: true,
            ..Guard::default()
        }),
    }
}

/// The absolute places a guarded session's commands may not change, for a child
/// whose environment is `env`: cms's own (config dir, `$CMS_HOME`), and from the
/// child's home, Claude Code's configuration and the usual credentials.
pub fn roots(env: &[(String, String)]) -> Vec<std::path::PathBuf> {
    let mut out = crate::policy::self_protect::roots().to_vec();
    let get = |k: &str| {
        env.iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| std::path::PathBuf::from(v))
            .or_else(|| std::env::var_os(k).map(std::path::PathBuf::from))
    };
    if let Some(home) = get("HOME") {
        for rel in [
            ".claude",
            ".claude.json",
            ".config/cms",
            ".claude-multi-session",
            ".ssh",
            ".aws",
            ".gnupg",
            ".npmrc",
            ".netrc",
            ".bashrc",
            ".profile",
            ".bash_profile",
        ] {
            out.push(home.join(rel));
        }
    }
    if let Some(d) = get("CLAUDE_CONFIG_DIR") {
        out.push(d);
    }
    out.sort();
    out.dedup();
    out
}
