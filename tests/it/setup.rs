//! `cms setup` on files (the real Claude Code reading them is in e2e_claude.rs):
//! other keys kept, idempotent, broken JSON refused, symlinks written through,
//! `--uninstall` undoing exactly what setup did, nothing personal copied unasked,
//! `--http` registering the host's MCP over HTTP (the token only in user scope).

use crate::support;

use serde_json::Value;
use support::Cms;

#[test]
fn setup_keeps_other_keys_is_idempotent_and_refuses_broken_json() {
    let cms = Cms::new();
    let mcp = cms.work().join(".mcp.json");
    std::fs::write(
        &mcp,
        r#"{"mcpServers": {"other": {"command": "x"}}, "extra": [1, 2]}"#,
    )
    .unwrap();
    std::fs::write(cms.work().join("CLAUDE.md"), "# My project\n\nOur rules.\n").unwrap();
    let out = cms.ok(&["setup", "--local", "--guide"]);
    assert!(out.contains("added") && out.contains(".mcp.json"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&mcp).unwrap()).unwrap();
    assert_eq!(v["extra"], serde_json::json!([1, 2]));
    assert_eq!(v["mcpServers"]["other"]["command"], "x");
    assert_eq!(v["mcpServers"]["cms"]["args"], serde_json::json!(["mcp"]));
    // A file teams commit names `cms` on PATH, not this machine's path.
    assert_eq!(v["mcpServers"]["cms"]["command"], "cms");
    assert!(cms.work().join(".mcp.json.cms.bak").exists());
    let again = cms.ok(&["setup", "--local", "--guide"]);
    assert_eq!(again.matches("unchanged").count(), 2, "{again}");
    let md = std::fs::read_to_string(cms.work().join("CLAUDE.md")).unwrap();
    assert!(
        md.starts_with("# My project\n\nOur rules.\n\n<!-- cms:start -->"),
        "{md}"
    );
    assert_eq!(md.matches("<!-- cms:start -->").count(), 1);

    cms.ok(&["setup", "--uninstall"]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&mcp).unwrap()).unwrap();
    assert!(v["mcpServers"].get("cms").is_none());
    assert_eq!(
        std::fs::read_to_string(cms.work().join("CLAUDE.md")).unwrap(),
        "# My project\n\nOur rules.\n"
    );

    std::fs::write(&mcp, "{ not json").unwrap();
    let err = cms.fails(&["setup", "--local"]);
    assert!(
        err.contains(".mcp.json is not valid JSON") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&mcp).unwrap(), "{ not json");
    let err = cms.fails(&["setup"]);
    assert!(
        err.contains("choose where to install: --global (all projects) or --local"),
        "{err}"
    );
}

#[test]
fn setup_writes_through_a_symlink_and_creates_files_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A new ~/.claude.json is 0600 (it holds the API key once Claude Code writes it).
    let cms = Cms::new();
    let home_json = cms.dir.path().join(".claude.json");
    cms.ok(&["setup", "--global"]);
    assert_eq!(mode(&home_json), 0o600);
    // A dotfiles link stays a link; its target gets the entry and keeps its mode.
    let cms = Cms::new();
    let dotfiles = cms.dir.path().join("dotfiles");
    std::fs::create_dir_all(&dotfiles).unwrap();
    let target = dotfiles.join("claude.json");
    std::fs::write(
        &target,
        r#"{"primaryApiKey": "sk-secret", "numStartups": 3}"#,
    )
    .unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
    let home_json = cms.dir.path().join(".claude.json");
    std::os::unix::fs::symlink("dotfiles/claude.json", &home_json).unwrap();
    cms.ok(&["setup", "--global"]);
    assert!(std::fs::symlink_metadata(&home_json)
        .unwrap()
        .file_type()
        .is_symlink());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(v["primaryApiKey"], "sk-secret");
    assert_eq!(v["mcpServers"]["cms"]["args"], serde_json::json!(["mcp"]));
    assert_eq!(mode(&target), 0o600);
    // And back out again, through the link.
    cms.ok(&["setup", "--uninstall"]);
    assert!(std::fs::symlink_metadata(&home_json)
        .unwrap()
        .file_type()
        .is_symlink());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert!(v["mcpServers"].get("cms").is_none(), "{v}");
    // No temporary file is left next to either.
    for dir in [cms.dir.path(), dotfiles.as_path()] {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            assert!(
                !e.file_name().to_string_lossy().ends_with(".tmp"),
                "{:?}",
                e.path()
            );
        }
    }
}

/// Install and uninstall in both scopes: every byte that was not cms's is as it was
/// (layout, key order, escapes), and a file setup created is gone again.
#[test]
fn uninstall_removes_only_what_setup_added() {
    let cms = Cms::new();
    let home = cms.dir.path();
    // Claude Code's own layout, with what serde_json would reorder or re-escape.
    let user = "{\n  \"numStartups\": 3,\n  \"projects\": {\"/w\": {\"allowedTools\": [], \"x\": [1, 2.50]}},\n  \"mcpServers\": {\n    \"other\": {\n      \"command\": \"x\"\n    }\n  },\n  \"a\": \"\\u00e9 é\"\n}\n";
    let user_file = home.join(".claude.json");
    std::fs::write(&user_file, user).unwrap();
    // An inline project file, no trailing newline.
    let project = r#"{"mcpServers": {"other": {"command": "x"}}, "extra": [1,2]}"#;
    let project_file = cms.work().join(".mcp.json");
    std::fs::write(&project_file, project).unwrap();
    // Guides with and without text around them.
    let md = "# Mine\n\nrules\n\n\n";
    std::fs::write(cms.work().join("CLAUDE.md"), md).unwrap();
    cms.ok(&["setup", "--global", "--local", "--guide"]);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&user_file).unwrap()).unwrap();
    assert_eq!(v["mcpServers"]["cms"]["args"], serde_json::json!(["mcp"]));
    assert_eq!(v["mcpServers"]["other"]["command"], "x");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&project_file).unwrap()).unwrap();
    assert_eq!(v["mcpServers"]["cms"]["command"], "cms");
    assert!(home.join(".claude/CLAUDE.md").exists());
    // Updating the entry (now with --env) keeps the rest too.
    cms.ok(&["setup", "--global", "--local", "--env"]);

    let out = cms.ok(&["setup", "--uninstall"]);
    assert_eq!(out.matches("removed").count(), 4, "{out}");
    assert_eq!(std::fs::read_to_string(&user_file).unwrap(), user);
    assert_eq!(std::fs::read_to_string(&project_file).unwrap(), project);
    assert_eq!(
        std::fs::read_to_string(cms.work().join("CLAUDE.md")).unwrap(),
        md
    );
    // ~/.claude/CLAUDE.md held only the guide: setup made it, uninstall takes it.
    assert!(!home.join(".claude/CLAUDE.md").exists());
    // Again: nothing of cms's is left, nothing changes.
    let out = cms.ok(&["setup", "--uninstall"]);
    assert_eq!(out.matches("absent").count(), 4, "{out}");

    // A file that was only `mcpServers.cms` goes; one with other servers keeps them.
    let cms = Cms::new();
    cms.ok(&["setup", "--local"]);
    let project_file = cms.work().join(".mcp.json");
    assert!(project_file.exists());
    cms.ok(&["setup", "--uninstall"]);
    assert!(!project_file.exists());
    // `mcpServers` with nothing but cms in it goes with it, the rest stays.
    let user = "{\n  \"numStartups\": 1\n}\n";
    std::fs::write(cms.dir.path().join(".claude.json"), user).unwrap();
    cms.ok(&["setup", "--global"]);
    cms.ok(&["setup", "--uninstall"]);
    assert_eq!(
        std::fs::read_to_string(cms.dir.path().join(".claude.json")).unwrap(),
        user
    );
    // A file the user had before, with nothing of theirs in `mcpServers`, stays.
    for before in ["{\"mcpServers\": {}}", "{}"] {
        let cms = Cms::new();
        let project_file = cms.work().join(".mcp.json");
        std::fs::write(&project_file, before).unwrap();
        cms.ok(&["setup", "--local"]);
        cms.ok(&["setup", "--uninstall"]);
        assert!(project_file.exists(), "{before} was the user's file");
    }
}

/// `CMS_HOME` and `CMS_CLAUDE_BIN` of the shell reach Claude Code's config only when
/// asked (`--env`; not on a terminal, no question is asked), and setup says so.
#[test]
fn shell_settings_are_copied_only_when_asked() {
    let cms = Cms::new();
    let user_file = cms.dir.path().join(".claude.json");
    let read = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&user_file).unwrap()).unwrap()
    };
    // Cms sets both in the environment of every command it runs.
    let out = cms.run(&["setup", "--global"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not copied into the entry")
            && err.contains("CMS_HOME=")
            && err.contains("CMS_CLAUDE_BIN=")
            && err.contains("--env"),
        "{err}"
    );
    assert!(
        read()["mcpServers"]["cms"].get("env").is_none(),
        "{}",
        read()
    );
    let out = cms.run(&["setup", "--global", "--env"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("copying CMS_CLAUDE_BIN="), "{err}");
    let env = &read()["mcpServers"]["cms"]["env"];
    assert_eq!(
        env["CMS_HOME"],
        cms.dir.path().join("cms").display().to_string()
    );
    assert_eq!(
        env["CMS_CLAUDE_BIN"],
        support::sim_bin().display().to_string()
    );
    // Unset in the shell: nothing to copy, nothing said.
    let out = cms
        .cmd(&["setup", "--global"])
        .env_remove("CMS_HOME")
        .env_remove("CMS_CLAUDE_BIN")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        read()["mcpServers"]["cms"].get("env").is_none(),
        "{}",
        read()
    );
    // A variable added to the entry by hand stays when setup runs again.
    let file = cms.dir.path().join(".claude.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["mcpServers"]["cms"]["env"] = serde_json::json!({ "RUST_LOG": "debug" });
    std::fs::write(&file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    cms.ok(&["setup", "--global", "--env"]);
    let env = &read()["mcpServers"]["cms"]["env"];
    assert_eq!(env["RUST_LOG"], "debug", "{env}");
    assert!(env.get("CMS_HOME").is_some(), "{env}");
}

/// `./.mcp.json` is committed by teams: it names `cms` on PATH (saying so when this
/// machine has none there), and this binary's path only with `--absolute`.
#[test]
fn the_project_file_holds_no_personal_path_unless_asked() {
    let cms = Cms::new();
    let project_file = cms.work().join(".mcp.json");
    let command = || -> Value {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(&project_file).unwrap()).unwrap();
        v["mcpServers"]["cms"]["command"].clone()
    };
    let empty = cms.dir.path().join("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let out = cms
        .cmd(&["setup", "--local"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`cms` is not on PATH here") && err.contains("--absolute"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("asks each user to approve"), "{text}");
    assert_eq!(command(), "cms");
    // With cms on PATH: the same entry, and no warning.
    let bin = cms.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(support::cms_bin(), bin.join("cms")).unwrap();
    let out = cms
        .cmd(&["setup", "--local"])
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("not on PATH"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(command(), "cms");
    // Asked for: this binary's absolute path.
    cms.ok(&["setup", "--local", "--absolute"]);
    assert_eq!(command(), support::cms_bin().display().to_string());
    // ~/.claude.json is the user's own: the absolute path (GUI-started Claude Code).
    cms.ok(&["setup", "--global"]);
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(cms.dir.path().join(".claude.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        v["mcpServers"]["cms"]["command"],
        support::cms_bin().display().to_string()
    );
}

/// `cms mcp` typed on a terminal says what it is and how to register it; under a
/// client (stdin a pipe) stderr stays quiet and stdout carries only the protocol.
#[test]
fn cms_mcp_on_a_terminal_points_at_setup() {
    let cms = Cms::new();
    let hint = "cms mcp speaks MCP (JSON-RPC) on stdin/stdout";
    let out = cms.run_with_input(&["mcp"], b"");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(hint),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A terminal: `script` gives the command one (skipped where it is missing).
    let script = std::path::Path::new("/usr/bin/script");
    if !script.exists() {
        eprintln!("skipping the terminal half: no /usr/bin/script");
        return;
    }
    let command = format!("'{}' mcp", support::cms_bin().display());
    let out = std::process::Command::new(script)
        .args(["-qec", &command, "/dev/null"])
        .current_dir(cms.work())
        .env("HOME", cms.dir.path())
        .env("CMS_HOME", cms.dir.path().join("cms"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains(hint) && all.contains("`cms setup`"), "{all}");
}

/// `--http` writes the entry `claude mcp add --transport http cms URL --header
/// "Authorization: Bearer TOKEN"` writes (2.1.197 and 2.1.332 alike): the token of
/// `cms serve --print-token`, the running host's address, else 127.0.0.1:7707 with a
/// word on how to start it. Setup run again changes nothing; `--uninstall` takes it out.
#[test]
fn setup_http_registers_the_hosts_address_and_token() {
    let cms = Cms::new();
    let user_file = cms.dir.path().join(".claude.json");
    let entry = || -> Value {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&user_file).unwrap()).unwrap();
        v["mcpServers"]["cms"].clone()
    };
    // No host runs: the default address, and how to serve it.
    let out = cms.run(&["setup", "--global", "--http"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`cms serve --http 127.0.0.1:7707`"), "{err}");
    let token = cms.ok(&["serve", "--print-token"]).trim().to_string();
    assert_eq!(token.len(), 64, "{token}");
    assert_eq!(
        entry(),
        serde_json::json!({
            "type": "http",
            "url": "http://127.0.0.1:7707/mcp",
            "headers": { "Authorization": format!("Bearer {token}") }
        })
    );
    // The file holding the token stays private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&user_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(cms
        .ok(&["setup", "--global", "--http"])
        .contains("unchanged"));

    // A host serving HTTP on a port it picked: its address is registered.
    let mut host = cms.spawn_piped(&["serve", "--http", "127.0.0.1:0"]);
    let mut at = String::new();
    let up = support::eventually(std::time::Duration::from_secs(20), || {
        let out = cms.run(&["host", "status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        at = v["http"].as_str().unwrap_or_default().to_string();
        !at.is_empty()
    });
    assert!(up, "the host did not report its HTTP address");
    let out = cms.run(&["setup", "--global", "--http"]);
    let _ = cms.run(&["host", "stop"]);
    let _ = host.wait();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("no running host"), "{err}");
    assert_eq!(entry()["url"], format!("http://{at}/mcp"));
    assert_eq!(
        entry()["headers"]["Authorization"],
        format!("Bearer {token}")
    );

    // ADDR as given: HOST:PORT or a URL; every interface is reached on loopback.
    for (addr, url) in [
        ("localhost:8080", "http://localhost:8080/mcp"),
        ("0.0.0.0:7000", "http://127.0.0.1:7000/mcp"),
        ("[::]:7000", "http://[::1]:7000/mcp"),
        ("http://box.lan:9000", "http://box.lan:9000/mcp"),
        (
            "http://127.0.0.1:9000/cms/mcp",
            "http://127.0.0.1:9000/cms/mcp",
        ),
    ] {
        let out = cms.run(&["setup", "--global", &format!("--http={addr}")]);
        assert!(
            out.status.success(),
            "{addr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(entry()["url"], url, "{addr}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no host serves MCP at"), "{err}");
    }
    for bad in [
        "nowhere",
        "127.0.0.1:0",
        "127.0.0.1:http",
        "http://",
        ":7707",
    ] {
        let err = cms.fails(&["setup", "--global", &format!("--http={bad}")]);
        assert!(err.contains("write HOST:PORT"), "{bad}: {err}");
    }
    // What a failed run leaves: the entry as it was.
    assert_eq!(entry()["url"], "http://127.0.0.1:9000/cms/mcp");

    // Back out: the file only setup wrote goes.
    cms.ok(&["setup", "--uninstall"]);
    assert!(!user_file.exists());
}

/// `./.mcp.json` is committed by teams, so `--local --http` never writes the token
/// there: the header names `${CMS_HTTP_TOKEN}`, which Claude Code fills in from its
/// environment (and reports as missing when unset), and setup says how to set it.
#[test]
fn setup_http_keeps_the_token_out_of_the_project_file() {
    let cms = Cms::new();
    let project_file = cms.work().join(".mcp.json");
    let out = cms.run(&["setup", "--local", "--http", "127.0.0.1:7707"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("export CMS_HTTP_TOKEN=$(cms serve --print-token)")
            && err.contains("cms setup --global --http"),
        "{err}"
    );
    let token = cms.ok(&["serve", "--print-token"]).trim().to_string();
    let text = std::fs::read_to_string(&project_file).unwrap();
    assert!(!text.contains(&token), "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["mcpServers"]["cms"],
        serde_json::json!({
            "type": "http",
            "url": "http://127.0.0.1:7707/mcp",
            "headers": { "Authorization": "Bearer ${CMS_HTTP_TOKEN}" }
        })
    );
    // A stdio entry with a variable added by hand becomes an HTTP one: an HTTP
    // server has no environment, so none is carried over.
    let user_file = cms.dir.path().join(".claude.json");
    cms.ok(&["setup", "--global"]);
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&user_file).unwrap()).unwrap();
    v["mcpServers"]["cms"]["env"] = serde_json::json!({ "RUST_LOG": "debug" });
    std::fs::write(&user_file, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    let out = cms.ok(&["setup", "--global", "--http", "127.0.0.1:7707"]);
    assert!(out.contains("updated"), "{out}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&user_file).unwrap()).unwrap();
    let entry = &v["mcpServers"]["cms"];
    assert!(
        entry.get("env").is_none() && entry.get("command").is_none(),
        "{entry}"
    );
    assert_eq!(entry["headers"]["Authorization"], format!("Bearer {token}"));

    let out = cms.ok(&["setup", "--uninstall"]);
    assert_eq!(out.matches("removed").count(), 2, "{out}");
    assert!(!project_file.exists());
}
