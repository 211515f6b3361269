//! The argv of a long-lived Claude Code process (`claude -p --input-format stream-json ...`).

use serde::{Deserialize, Serialize};

/// Every option cms can pass to `claude` when it starts a session process.
///
/// The prompt is never part of argv: it is written on stdin as the first user turn.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClaudeArgs {
    pub model: Option<String>,
    pub permission_mode: Option<String>,
    pub allowed_tools: Vec<String>,
    pub disallowed_tools: Vec<String>,
    /// Appended to Claude Code's own system prompt (`--append-system-prompt`).
    pub append_system_prompt: Option<String>,
    pub max_turns: Option<u32>,
    pub max_budget_usd: Option<f64>,
    pub agent: Option<String>,
    /// `--resume ID`: continue an existing conversation in a new process.
    pub resume: Option<String>,
    /// With `resume`: start a new conversation holding the parent's history.
    pub fork_session: bool,
    /// `--session-id UUID`: the id of a new (or forked) conversation.
    pub session_id: Option<String>,
    /// `--permission-prompt-tool stdio`: ask the host (cms) before a tool runs.
    pub permission_prompt_stdio: bool,
    pub include_partial_messages: bool,
    /// `--mcp-config JSON`.
    pub mcp_config: Option<String>,
    /// `-w NAME`: run in a git worktree of that name.
    pub worktree: Option<String>,
    pub add_dirs: Vec<String>,
    /// Anything else, passed through verbatim at the end.
    pub extra: Vec<String>,
}

impl ClaudeArgs {
    /// The full argument list (without the program name).
    pub fn to_argv(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut opt = |flag: &str, value: &Option<String>| {
            if let Some(v) = value {
                a.push(flag.to_string());
                a.push(v.clone());
            }
        };
        opt("--model", &self.model);
        opt("--permission-mode", &self.permission_mode);
        opt("--append-system-prompt", &self.append_system_prompt);
        opt("--agent", &self.agent);
        opt("--resume", &self.resume);
        opt("--session-id", &self.session_id);
        opt("--mcp-config", &self.mcp_config);
        opt("-w", &self.worktree);
        if !self.allowed_tools.is_empty() {
            a.push("--allowedTools".into());
            a.push(self.allowed_tools.join(","));
        }
        if !self.disallowed_tools.is_empty() {
            a.push("--disallowedTools".into());
            a.push(self.disallowed_tools.join(","));
        }
        if let Some(n) = self.max_turns {
            a.push("--max-turns".into());
            a.push(n.to_string());
        }
        if let Some(x) = self.max_budget_usd {
            a.push("--max-budget-usd".into());
            a.push(x.to_string());
        }
        if self.fork_session {
            a.push("--fork-session".into());
        }
        if self.permission_prompt_stdio {
            a.push("--permission-prompt-tool".into());
            a.push("stdio".into());
        }
        if self.include_partial_messages {
            a.push("--include-partial-messages".into());
        }
        for d in &self.add_dirs {
            a.push("--add-dir".into());
            a.push(d.clone());
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(argv: &[String], flag: &str) -> Option<String> {
        argv.iter()
            .position(|a| a == flag)
            .and_then(|i| argv.get(i + 1).cloned())
    }

    #[test]
    fn base_flags_always_present_and_prompt_never() {
        let argv = ClaudeArgs::default().to_argv();
        assert_eq!(
            argv,
            vec![
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose"
            ]
        );
    }

    #[test]
    fn every_option_maps_to_its_flag() {
        let args = ClaudeArgs {
            model: Some("haiku".into()),
            permission_mode: Some("acceptEdits".into()),
            allowed_tools: vec!["Read".into(), "Grep".into()],
            disallowed_tools: vec!["Bash".into()],
            append_system_prompt: Some("S".into()),
            max_turns: Some(7),
            max_budget_usd: Some(1.5),
            agent: Some("rev".into()),
            resume: Some("abc".into()),
            fork_session: true,
            session_id: Some("uuid".into()),
            permission_prompt_stdio: true,
            include_partial_messages: true,
            mcp_config: Some("{}".into()),
            worktree: Some("wt".into()),
            add_dirs: vec!["/x".into()],
            extra: vec!["--bare".into()],
        };
        let argv = args.to_argv();
        assert_eq!(pos(&argv, "--model").as_deref(), Some("haiku"));
        assert_eq!(
            pos(&argv, "--permission-mode").as_deref(),
            Some("acceptEdits")
        );
        assert_eq!(pos(&argv, "--allowedTools").as_deref(), Some("Read,Grep"));
        assert_eq!(pos(&argv, "--disallowedTools").as_deref(), Some("Bash"));
        assert_eq!(pos(&argv, "--append-system-prompt").as_deref(), Some("S"));
        assert_eq!(pos(&argv, "--max-turns").as_deref(), Some("7"));
        assert_eq!(pos(&argv, "--max-budget-usd").as_deref(), Some("1.5"));
        assert_eq!(pos(&argv, "--agent").as_deref(), Some("rev"));
        assert_eq!(pos(&argv, "--resume").as_deref(), Some("abc"));
        assert_eq!(pos(&argv, "--session-id").as_deref(), Some("uuid"));
        assert_eq!(
            pos(&argv, "--permission-prompt-tool").as_deref(),
            Some("stdio")
        );
        assert_eq!(pos(&argv, "--mcp-config").as_deref(), Some("{}"));
        assert_eq!(pos(&argv, "-w").as_deref(), Some("wt"));
        assert_eq!(pos(&argv, "--add-dir").as_deref(), Some("/x"));
        assert!(argv.contains(&"--fork-session".to_string()));
        assert!(argv.contains(&"--include-partial-messages".to_string()));
        assert_eq!(argv.last().map(String::as_str), Some("--bare"));
    }
}
