//! The check command of a correction loop: a shell command in the working
//! directory, run through the engine's process module, that must exit 0.

use crate::engine::process::{run_shell, ShellRun};
use std::path::Path;
use std::time::Duration;

/// How much of a failed check's output goes back to the session.
const KEEP_OUTPUT: usize = 8192;

/// Run a check command in the working directory: exit 0 passes. Its output (the
/// last 8 KB of stdout and stderr) goes back to the session when it fails.
pub(super) async fn run_check(cmd: &str, dir: &Path, limit: Duration) -> (bool, String) {
    match run_shell(cmd, dir, limit, KEEP_OUTPUT).await {
        ShellRun::TimedOut => (
            false,
            format!("the check `{cmd}` took longer than {}s", limit.as_secs()),
        ),
        ShellRun::Failed(e) => (false, format!("the check `{cmd}` could not run: {e}")),
        ShellRun::Exited { code, tail } => {
            let shown = code.map_or("a signal".to_string(), |c| c.to_string());
            (
                code == Some(0),
                format!("`{cmd}` exited with {shown}\n{}", tail.trim_end()),
            )
        }
    }
}
