//! `cms policy check --as`, `cms policy show NAME`, `cms policy init` and
//! `cms plugins run`: the policy and plugin tools of the command line.

use crate::support;

use serde_json::Value;
use support::Cms;

fn write(cms: &Cms, rel: &str, code: &str) -> String {
    let path = cms.work().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, code).unwrap();
    rel.to_string()
}

/// A safety policy is asked about sample calls; one that fails or answers nonsense
/// at run time fails the check with its file and line, even though it loads.
#[test]
fn policy_check_runs_a_safety_policy_against_sample_calls() {
    let cms = Cms::new();
    let shipped = format!("{}/scripts/safety.lua", env!("CARGO_MANIFEST_DIR"));
    let out = cms.ok(&["policy", "check", &shipped]);
    assert!(
        out.contains("assumed a safety policy from the file name"),
        "{out}"
    );
    assert!(out.contains("Write of .env (preset full): deny:"), "{out}");
    assert!(out.contains("Bash rm -rf / (preset full): deny:"), "{out}");
    assert!(out.contains("Bash ls (preset full): allow"), "{out}");

    // Fails on Bash only: it loads, and only a call shows it.
    let f = write(
        &cms,
        "p/mine.lua",
        "return { on_tool_use = function(tool, ctx)\n  if tool.name == 'Bash' then return tool.input.nope.x end\n  return 'allow'\nend }\n",
    );
    let loaded = cms.ok(&["policy", "check", &f]);
    assert!(
        loaded.contains("only loaded") && loaded.contains("--as"),
        "{loaded}"
    );
    let err = cms.fails(&["policy", "check", &f, "--as", "safety"]);
    assert!(
        err.contains("p/mine.lua:2: attempt to index a nil value")
            && err.contains("sample call: Bash rm -rf /"),
        "{err}"
    );
    // An answer cms does not know, and no answer: named with the function's line.
    let f = write(
        &cms,
        "p/safety.lua",
        "local M = {}\nfunction M.on_tool_use(tool)\n  if tool.name == 'Write' then return 'Deny' end\n  return 'allow'\nend\nreturn M\n",
    );
    let err = cms.fails(&["policy", "check", &f]);
    assert!(
        err.contains("p/safety.lua:2: on_tool_use (sample call: Write of .env) returned \"Deny\""),
        "{err}"
    );
    let f = write(
        &cms,
        "p/safety.lua",
        "return { on_tool_use = function() end }\n",
    );
    let err = cms.fails(&["policy", "check", &f]);
    assert!(err.contains("returned nil"), "{err}");
    // Limits of the wrong shape.
    let f = write(
        &cms,
        "p/safety.lua",
        "return { limits = { max_turns = 'many' }, on_tool_use = function() return 'allow' end }\n",
    );
    let err = cms.fails(&["policy", "check", &f]);
    assert!(err.contains("M.limits must be"), "{err}");
    // The wrong kind for what it returns.
    let err = cms.fails(&["policy", "check", &f, "--as", "strategy"]);
    assert!(err.contains("must return a function(task)"), "{err}");
    let out = cms.run(&["policy", "check", &f, "--as", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn policy_check_protected_paths_and_presets_shapes() {
    let cms = Cms::new();
    let out = cms.ok(&[
        "policy",
        "check",
        &format!("{}/scripts/protected_paths.lua", env!("CARGO_MANIFEST_DIR")),
    ]);
    assert!(out.contains("Write of .env: protected:"), "{out}");
    assert!(out.contains("protected path patterns"), "{out}");
    let f = write(
        &cms,
        "q/paths.lua",
        "return { paths = { '.env' }, violation = function(tool, cwd) return 42 end }\n",
    );
    let err = cms.fails(&["policy", "check", &f, "--as", "protected_paths"]);
    assert!(
        err.contains("returned 42") && err.contains("nil or the reason"),
        "{err}"
    );
    let f = write(
        &cms,
        "q/paths.lua",
        "return { paths = '.env', violation = function() end }\n",
    );
    let err = cms.fails(&["policy", "check", &f, "--as", "protected_paths"]);
    assert!(err.contains("M.paths must be a list of strings"), "{err}");
    let f = write(
        &cms,
        "q/p.lua",
        "return { x = { permission_mode = 'yolo' } }\n",
    );
    let err = cms.fails(&["policy", "check", &f, "--as", "presets"]);
    assert!(
        err.contains("preset 'x': unknown permission_mode 'yolo'"),
        "{err}"
    );
    let out = cms.ok(&[
        "policy",
        "check",
        &format!("{}/scripts/presets.lua", env!("CARGO_MANIFEST_DIR")),
        "--as",
        "presets",
    ]);
    assert!(
        out.contains("presets: edit, full, plan, read-only, review"),
        "{out}"
    );
    assert!(!out.contains("assumed"), "{out}");
}

/// `policy show NAME` prints the script in force (the user's override, else the
/// built-in one; an untrusted project file is not in force), `--builtin` the shipped
/// one; `policy init` copies the built-ins to edit and does not overwrite unasked.
#[test]
fn policy_show_and_init() {
    let cms = Cms::new();
    let builtin = |rel: &str| {
        std::fs::read_to_string(format!("{}/scripts/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    assert_eq!(cms.ok(&["policy", "show", "safety"]), builtin("safety.lua"));
    assert_eq!(
        cms.ok(&["policy", "show", "strategies/single.lua"]),
        builtin("strategies/single.lua")
    );
    let err = cms.fails(&["policy", "show", "nope"]);
    assert!(
        err.contains(
            "no script 'nope' (known: safety, protected_paths, presets, notify, hosts, placement, runners/local, runners/ssh, runners/docker, runners/kubectl, strategies/correction_loop"
        ),
        "{err}"
    );
    // A project override counts once trusted.
    write(&cms, ".cms/presets.lua", "return {}\n");
    assert_eq!(
        cms.ok(&["policy", "show", "presets"]),
        builtin("presets.lua")
    );
    cms.ok(&["trust"]);
    assert_eq!(cms.ok(&["policy", "show", "presets"]), "return {}\n");
    assert_eq!(
        cms.ok(&["policy", "show", "presets", "--builtin"]),
        builtin("presets.lua")
    );
    let v = cms.json(&["policy", "show", "presets"]);
    assert!(
        v["origin"].as_str().unwrap().ends_with(".cms/presets.lua"),
        "{v}"
    );
    std::fs::remove_file(cms.work().join(".cms/presets.lua")).unwrap();

    let config = cms.dir.path().join("config");
    let init = |args: &[&str]| {
        let mut all = vec!["policy", "init"];
        all.extend_from_slice(args);
        cms.cmd(&all)
            .env("CMS_CONFIG_DIR", &config)
            .output()
            .unwrap()
    };
    let out = init(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // Every script cms ships.
    for rel in cms::sandbox::scripts::BUILTIN.iter().map(|(rel, _)| *rel) {
        let path = config.join(rel);
        assert!(
            text.contains(&format!("wrote {}", path.display())),
            "{text}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), builtin(rel));
        // Each copy checks as what it is.
        cms.ok(&["policy", "check", path.to_str().unwrap()]);
    }
    // Not overwritten unasked, even in part.
    std::fs::write(config.join("safety.lua"), "-- mine\n").unwrap();
    std::fs::remove_file(config.join("presets.lua")).unwrap();
    let out = init(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already there") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(config.join("safety.lua")).unwrap(),
        "-- mine\n"
    );
    assert!(!config.join("presets.lua").exists());
    // A link where a script goes counts as there, dangling or not, and --force
    // replaces the link itself: nothing is written where it pointed.
    let elsewhere = cms.dir.path().join("elsewhere.lua");
    std::fs::remove_file(config.join("safety.lua")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, config.join("safety.lua")).unwrap();
    assert_eq!(init(&[]).status.code(), Some(1));
    assert!(!elsewhere.exists());
    let out = init(&["--force"]);
    assert!(out.status.success());
    assert!(!elsewhere.exists(), "written through the link");
    assert_eq!(
        std::fs::read_to_string(config.join("safety.lua")).unwrap(),
        builtin("safety.lua")
    );
}

/// `plugins run` calls a tool as `cms mcp` would: arguments typed by its schema,
/// errors with their line, and the project's plugins only once trusted.
#[test]
fn plugins_run_calls_a_tool_from_the_shell() {
    let cms = Cms::new();
    let v: Value = serde_json::from_str(&cms.ok(&[
        "plugins",
        "run",
        "session-report",
        "session_report",
        "--json",
    ]))
    .unwrap();
    assert_eq!(v["count"], 0, "{v}");
    let code = r#"return { name = "calc", version = "0.1", tools = { {
  name = "add", description = "Adds",
  input_schema = { type = "object", properties = { a = { type = "number" }, b = { type = "number" }, label = { type = "string" } } },
  handler = function(args)
    if args.a == nil then error("a is required") end
    return { sum = args.a + args.b, label = args.label, kind = math.type(args.a) }
  end,
}, {
  name = "hello", description = "Greets",
  handler = function(args) return "hello " .. args.who end,
} } }
"#;
    write(&cms, ".cms/plugins/calc/init.lua", code);
    // Untrusted: not loaded, so not run.
    let err = cms.fails(&["plugins", "run", "calc", "add", "--arg", "a=1"]);
    assert!(
        err.contains("plugin 'calc' is not run: ")
            && err.contains("is not trusted as it is (`cms trust"),
        "{err}"
    );
    cms.ok(&["trust"]);
    let v: Value = serde_json::from_str(&cms.ok(&[
        "plugins", "run", "calc", "add", "--arg", "a=2", "--arg", "b=3.5", "--arg", "label=12",
    ]))
    .unwrap();
    assert_eq!(v["sum"], 5.5, "{v}");
    assert_eq!(v["label"], "12", "a string property stays a string: {v}");
    let v: Value = serde_json::from_str(&cms.ok(&[
        "plugins",
        "run",
        "calc",
        "add",
        "--json-args",
        r#"{"a": 1, "b": 1}"#,
        "--arg",
        "b=41",
    ]))
    .unwrap();
    assert_eq!(v["sum"], 42, "{v}");
    // A string result prints as text (JSON under --json).
    assert_eq!(
        cms.ok(&["plugins", "run", "calc", "hello", "--arg", "who=you"]),
        "hello you\n"
    );
    assert_eq!(
        cms.ok(&["plugins", "run", "calc", "hello", "--arg", "who=you", "--json"]),
        "\"hello you\"\n"
    );
    let err = cms.fails(&["plugins", "run", "calc", "add"]);
    assert!(
        err.contains("plugin calc tool add failed")
            && err.contains("calc/init.lua:5: a is required"),
        "{err}"
    );
    let err = cms.fails(&["plugins", "run", "calc", "mul"]);
    assert!(
        err.contains("plugin 'calc' has no tool 'mul' (its tools: add, hello)"),
        "{err}"
    );
    let err = cms.fails(&["plugins", "run", "calc", "add", "--arg", "a"]);
    assert!(err.contains("expected KEY=VALUE"), "{err}");
    let err = cms.fails(&["plugins", "run", "calc", "add", "--json-args", "[1]"]);
    assert!(err.contains("must be a JSON object"), "{err}");
    // No description: no dangling dash in the list.
    let list = cms.ok(&["plugins", "list"]);
    assert!(list.lines().any(|l| l == "calc 0.1"), "{list}");
}
