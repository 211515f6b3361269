//! Claude Code's permission modes: the one list every face takes its values from
//! (the CLI's `--permission-mode`, the MCP schemas, the LuaLS alias, the check of a
//! preset's mode).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How Claude Code decides on a tool call by itself (`claude --permission-mode`). The
/// real CLI accepts exactly these (2.1.197 and 2.1.332).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
#[serde(rename_all = "camelCase")]
#[value(rename_all = "camelCase")]
pub enum PermissionMode {
    // Ask (cms, when it is the permission prompt) before anything but reading.
    Default,
    // Let file edits through without asking.
    AcceptEdits,
    // Claude Code's own classifier decides.
    Auto,
    // Plan only: no edits, no commands.
    Plan,
    // Refuse whatever is not pre-approved, without asking.
    DontAsk,
    // Ask about nothing (refused as root unless `IS_SANDBOX=1`).
    BypassPermissions,
}

impl PermissionMode {
    /// Every mode, in the order they are listed.
    pub const ALL: [PermissionMode; 6] = [
        PermissionMode::Default,
        PermissionMode::AcceptEdits,
        PermissionMode::Auto,
        PermissionMode::Plan,
        PermissionMode::DontAsk,
        PermissionMode::BypassPermissions,
    ];

    /// The name Claude Code uses.
    pub fn as_str(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
            PermissionMode::Auto => "auto",
            PermissionMode::Plan => "plan",
            PermissionMode::DontAsk => "dontAsk",
            PermissionMode::BypassPermissions => "bypassPermissions",
        }
    }

    pub fn parse(s: &str) -> Option<PermissionMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Every name, in order.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|m| m.as_str()).collect()
    }
}

impl fmt::Display for PermissionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn one_name_on_every_face() {
        for m in PermissionMode::ALL {
            assert_eq!(PermissionMode::parse(m.as_str()), Some(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
            let clap_name = m.to_possible_value().unwrap();
            assert_eq!(clap_name.get_name(), m.as_str());
        }
        assert_eq!(
            PermissionMode::value_variants().len(),
            PermissionMode::ALL.len()
        );
        let schema = serde_json::to_value(schemars::schema_for!(PermissionMode)).unwrap();
        assert_eq!(
            schema["enum"],
            serde_json::json!(PermissionMode::names()),
            "{schema}"
        );
        assert_eq!(PermissionMode::parse("nope"), None);
    }
}
