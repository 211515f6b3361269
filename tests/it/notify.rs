//! Notifications from the session host: the user's `notify.lua` picks the kinds and
//! a command is run for each notice, rate-limited, without holding a session up.

use crate::support::{eventually, Cms};
use std::time::Duration;

#[test]
fn the_host_runs_the_users_command_for_each_notice_at_most_once_per_interval() {
    let Some(cms) = Cms::hosted() else {
        return;
    };
    let out = cms.dir.path().join("told.txt");
    let config = cms.dir.path().join(".config/cms");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("notify.lua"),
        format!(
            r#"local M = {{}}
M.on = {{ turn_done = true, needs_input = true, failed = true }}
M.bell = false
M.desktop = false
M.command = {{ "sh", "-c", "echo \"$0|$1\" >> {}", "{{kind}}", "{{session}}" }}
M.min_interval = 30
return M
"#,
            out.display()
        ),
    )
    .unwrap();
    // The first command starts the host, which reads the user's layer from here.
    let first = cms
        .cmd(&["spawn", "a", "hello"])
        .env("CMS_CONFIG_DIR", &config)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let told = || std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || told().contains("turn_done|a")),
        "{}",
        told()
    );
    // A second finished turn within the interval is not told again; a question is.
    cms.ok(&["send", "a", "again"]);
    cms.ok(&["send", "a", "Which file?"]);
    assert!(
        eventually(Duration::from_secs(10), || told().contains("needs_input|a")),
        "{}",
        told()
    );
    assert_eq!(told().matches("turn_done|a").count(), 1, "{}", told());
}
