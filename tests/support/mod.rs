//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod fake_api;

use std::path::PathBuf;

/// The simulator built with the tests.
pub fn sim_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cms-sim"))
}

pub fn cms_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cms"))
}

/// The real Claude Code CLI for end-to-end tests: `CMS_E2E_CLAUDE`, or the copy
/// `.ci/run` installs. None (the test is skipped) unless `CMS_E2E_REQUIRED=1`,
/// where a missing CLI fails the test.
pub fn real_claude() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CMS_E2E_CLAUDE").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".ci/node_modules/@anthropic-ai/claude-code/bin/claude.exe"),
        ),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".ci/node_modules/@anthropic-ai/claude-code-linux-x64/claude"),
        ),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CMS_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("CMS_E2E_REQUIRED=1 but the real Claude Code CLI was not found (run `bash .ci/run`, or set CMS_E2E_CLAUDE)");
        }
        eprintln!("skipping: the real Claude Code CLI is not installed (run `bash .ci/run`, or set CMS_E2E_CLAUDE)");
    }
    found
}
