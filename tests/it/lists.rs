//! One source for each list: every field of the spawn and delegate options, every
//! permission mode, every session state and every `cms.*` name reaches every face
//! (the CLI's clap arguments, the MCP input schemas, Lua, the LuaLS stubs).
//!
//! Each check takes the union of what all faces list, so a field that one face drops
//! (`#[arg(skip)]`, `#[schemars(skip)]`, `#[serde(skip_deserializing)]`, a hand-written
//! schema, a stale stub) fails here by name.

use clap::CommandFactory;
use cms::cli::args::Cli;
use cms::delegate::DelegateOptions;
use cms::engine::{EngineConfig, Manager, PermissionMode, SessionState, SpawnSpec};
use cms::lua::stubs::{module_names, stub_names, CMS_META};
use cms::lua::{HostOptions, LuaHost};
use mlua::LuaSerdeExt;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// Options of the whole `cms` command, not of one subcommand.
const GLOBAL_ARGS: &[&str] = &[
    "json",
    "claude_bin",
    "home",
    "no_wait",
    "color",
    "verbose",
    "help",
];

/// Fields that are not a flag of the CLI command, and why. (None today.)
const NOT_ON_CLI: &[(&str, &str)] = &[];

/// MCP properties that are not options of the type, and why.
const MCP_ONLY: &[(&str, &str)] = &[(
    "background",
    "how the MCP tool answers (at once, poll later), not an option of the work",
)];

fn clap_fields(command: &str) -> BTreeSet<String> {
    let cli = Cli::command();
    let sub = cli
        .find_subcommand(command)
        .unwrap_or_else(|| panic!("no `cms {command}`"));
    // A positional (`cms spawn NAME PROMPT`) is another way to give a flag's value.
    sub.get_arguments()
        .filter(|a| !a.is_positional())
        .map(|a| a.get_id().to_string())
        .filter(|id| !GLOBAL_ARGS.contains(&id.as_str()))
        .collect()
}

fn tool_schema(tool: &str) -> Value {
    cms::mcp::tools::builtin()
        .into_iter()
        .find(|(n, _, _)| *n == tool)
        .unwrap_or_else(|| panic!("no MCP tool {tool}"))
        .2
}

fn props(schema: &Value) -> Map<String, Value> {
    schema["properties"]
        .as_object()
        .cloned()
        .unwrap_or_else(|| panic!("no properties in {schema}"))
}

fn keys(m: &Map<String, Value>) -> BTreeSet<String> {
    m.keys()
        .filter(|k| !MCP_ONLY.iter().any(|(o, _)| o == k))
        .cloned()
        .collect()
}

/// The `---@field`s of one `---@class` in the stub file.
fn stub_fields(class: &str) -> BTreeSet<String> {
    let header = format!("---@class {class}");
    let mut lines = CMS_META.lines().skip_while(|l| l.trim_end() != header);
    assert!(
        lines.next().is_some(),
        "scripts/types/cms.lua has no {header}"
    );
    lines
        .take_while(|l| l.starts_with("---@field "))
        .map(|l| {
            l["---@field ".len()..]
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('?')
                .to_string()
        })
        .collect()
}

/// A value a schema accepts that is not the default of an option.
fn sample(schema: &Value) -> Value {
    if let Some(v) = schema["enum"].as_array().and_then(|e| e.last()) {
        return v.clone();
    }
    if let Some(alt) = schema["anyOf"].as_array().and_then(|a| a.first()) {
        return sample(alt);
    }
    match schema["type"].as_str() {
        Some("string") => json!("x"),
        Some("integer") => json!(7),
        Some("number") => json!(1.5),
        // Options that are on by default (`safety`) are turned off, others on.
        Some("boolean") => json!(schema["default"] != json!(true)),
        Some("array") => json!([sample(&schema["items"])]),
        other => panic!("no sample for a schema of type {other:?}: {schema}"),
    }
}

/// Check that each field is on every face; `lua` deserialises a table in Lua and
/// gives the options back as JSON.
fn every_face(
    what: &str,
    cli: BTreeSet<String>,
    mcp: &[(&str, Map<String, Value>)],
    serde_keys: BTreeSet<String>,
    stub: BTreeSet<String>,
    lua: impl Fn(&mlua::Lua, mlua::Value) -> mlua::Result<Value>,
) {
    let mut all: BTreeSet<String> = cli.clone();
    for (_, p) in mcp {
        all.extend(keys(p));
    }
    all.extend(serde_keys.iter().cloned());
    all.extend(stub.iter().cloned());
    let mut missing = Vec::new();
    let state = mlua::Lua::new();
    let (_, first) = &mcp[0];
    for field in &all {
        if !cli.contains(field) && !NOT_ON_CLI.iter().any(|(f, _)| f == field) {
            missing.push(format!(
                "{what}: `{field}` is not a flag of the CLI command"
            ));
        }
        for (tool, p) in mcp {
            if !p.contains_key(field) {
                missing.push(format!("{what}: `{field}` is not in the MCP {tool} schema"));
            }
        }
        if !serde_keys.contains(field) {
            missing.push(format!("{what}: `{field}` is not a serde field"));
        }
        if !stub.contains(field) {
            missing.push(format!("{what}: `{field}` is not in the LuaLS stub class"));
        }
        // Lua: a table with the required fields and this one is read, and keeps it.
        let Some(schema) = first.get(field) else {
            continue;
        };
        let value = sample(schema);
        let mut table = json!({ "name": "n", "prompt": "p", "task": "t" });
        table[field] = value.clone();
        if what == "spawn" {
            table.as_object_mut().unwrap().remove("task");
        } else {
            table.as_object_mut().unwrap().remove("prompt");
        }
        let read = state
            .to_value(&table)
            .and_then(|t| lua(&state, t))
            .map_err(|e| e.to_string());
        match read {
            Ok(back) if back[field] == value || (value.is_array() && back[field] == value[0]) => {}
            Ok(back) => missing.push(format!(
                "{what}: Lua `{field} = {value}` came back as {}",
                back[field]
            )),
            Err(e) => missing.push(format!("{what}: Lua does not take `{field}`: {e}")),
        }
    }
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

#[test]
fn every_spawn_option_is_on_every_face() {
    let spawn = props(&tool_schema("spawn_session"));
    let batch = props(&props(&tool_schema("batch_spawn"))["sessions"]["items"]);
    let serde_keys = keys(
        serde_json::to_value(SpawnSpec::default())
            .unwrap()
            .as_object()
            .unwrap(),
    );
    every_face(
        "spawn",
        clap_fields("spawn"),
        &[("spawn_session", spawn), ("batch_spawn", batch)],
        serde_keys,
        stub_fields("cms.SpawnOptions"),
        // What `cms.spawn{...}` does with its table.
        |lua, t| {
            let spec: SpawnSpec = cms::sandbox::convert::opts(lua, "cms.spawn", t)?;
            Ok(serde_json::to_value(spec).unwrap())
        },
    );
}

#[test]
fn every_delegate_option_is_on_every_face() {
    let delegate = props(&tool_schema("delegate_task"));
    let serde_keys = keys(
        serde_json::to_value(DelegateOptions::default())
            .unwrap()
            .as_object()
            .unwrap(),
    );
    every_face(
        "delegate",
        clap_fields("delegate"),
        &[("delegate_task", delegate)],
        serde_keys,
        stub_fields("cms.DelegateOptions"),
        // What `cms.delegate{...}` does with its table.
        |lua, t| {
            let (opts, _) = cms::delegate::options_from_lua(lua, t)?;
            Ok(serde_json::to_value(opts).unwrap())
        },
    );
}

#[test]
fn the_cli_reads_the_new_spawn_and_delegate_flags() {
    use clap::Parser;
    let cli = Cli::try_parse_from([
        "cms",
        "spawn",
        "--name",
        "a",
        "--prompt",
        "p",
        "--permission-mode",
        "auto",
        "--mcp-config",
        "{}",
        "--add-dir",
        "/x",
        "--add-dir",
        "/y",
        "--allowed-tools",
        "Read, Grep",
    ])
    .unwrap();
    let cms::cli::args::Command::Spawn(cmd) = cli.command else {
        panic!("not spawn");
    };
    let req = cmd.spec.into_request(false).unwrap();
    assert_eq!(req.options.permission_mode.as_deref(), Some("auto"));
    assert_eq!(req.options.mcp_config.as_deref(), Some("{}"));
    assert_eq!(req.options.add_dirs, ["/x", "/y"]);
    assert_eq!(req.options.allowed_tools, ["Read", "Grep"]);
    assert_eq!(req.options.model.as_deref(), Some("sonnet"));
    assert_eq!(req.timeout, Some(std::time::Duration::from_secs(3600)));
    assert!(!req.stop_after);
    let bad = Cli::try_parse_from([
        "cms",
        "spawn",
        "--name",
        "a",
        "--prompt",
        "p",
        "--permission-mode",
        "yolo",
    ])
    .unwrap_err()
    .to_string();
    assert!(bad.contains("acceptEdits"), "{bad}");

    let cli = Cli::try_parse_from([
        "cms",
        "delegate",
        "--name",
        "a",
        "--task",
        "t",
        "--no-safety",
        "--review-model",
        "opus",
    ])
    .unwrap();
    let cms::cli::args::Command::Delegate(cmd) = cli.command else {
        panic!("not delegate");
    };
    let opts = cmd.opts;
    assert!(!opts.safety);
    assert_eq!(opts.review_model.as_deref(), Some("opus"));
    let cli = Cli::try_parse_from(["cms", "delegate", "--name", "a", "--task", "t"]).unwrap();
    let cms::cli::args::Command::Delegate(cmd) = cli.command else {
        panic!("not delegate");
    };
    let opts = cmd.opts;
    assert!(opts.safety, "the safety net is on unless --no-safety");
}

#[test]
fn permission_modes_come_from_one_list() {
    let names = PermissionMode::names();
    let cli = Cli::command();
    let arg = cli
        .find_subcommand("spawn")
        .unwrap()
        .get_arguments()
        .find(|a| a.get_id() == "permission_mode")
        .unwrap()
        .clone();
    let values: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| v.get_name().to_string())
        .collect();
    assert_eq!(values, names, "cms spawn --permission-mode");
    for tool in ["spawn_session", "batch_spawn"] {
        let schema = tool_schema(tool);
        let p = if tool == "batch_spawn" {
            props(&props(&schema)["sessions"]["items"])
        } else {
            props(&schema)
        };
        assert_eq!(p["permission_mode"]["enum"], json!(names), "{tool}");
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    assert!(
        CMS_META.contains(&format!(
            "---@alias cms.PermissionMode {}\n",
            quoted.join("|")
        )),
        "the stub's cms.PermissionMode"
    );
    // `auto` is one (presets accept it, and so does the real CLI).
    assert!(names.contains(&"auto"));
}

#[test]
fn session_states_come_from_one_list() {
    let names: Vec<&str> = SessionState::ALL.iter().map(|s| s.as_str()).collect();
    let schema = tool_schema("list_sessions");
    assert_eq!(props(&schema)["status"]["enum"], json!(names));
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    assert!(
        CMS_META.contains(&format!(
            "---@alias cms.SessionState {}\n",
            quoted.join("|")
        )),
        "the stub's cms.SessionState"
    );
    for class in ["cms.Status", "cms.Session"] {
        let header = format!("---@class {class}\n");
        let at = CMS_META.find(&header).unwrap();
        assert!(
            CMS_META[at..].contains("---@field state cms.SessionState"),
            "{class}.state"
        );
    }
}

#[test]
fn every_module_name_has_a_stub_and_every_stub_a_name() {
    let home = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let manager = Manager::new(EngineConfig {
        home: home.path().to_path_buf(),
        ..EngineConfig::from_env()
    })
    .unwrap();
    let host = LuaHost::new(manager, HostOptions::default()).unwrap();
    let module: BTreeSet<String> = module_names(host.lua()).into_iter().collect();
    let stubs: BTreeSet<String> = stub_names(CMS_META).into_iter().collect();
    for name in [
        "cms.delegate",
        "cms.path.resolve",
        "cms.shell.parse",
        "cms.json.encode",
    ] {
        assert!(module.contains(name), "REPL completion would miss {name}");
    }
    let no_stub: Vec<_> = module.difference(&stubs).collect();
    let no_name: Vec<_> = stubs.difference(&module).collect();
    assert!(
        no_stub.is_empty() && no_name.is_empty(),
        "in the module without a stub: {no_stub:?}; stubbed but not in the module: {no_name:?}"
    );
}

#[test]
fn lua_types_prints_the_generated_stubs() {
    // `cms lua-types` prints `cms_meta()`: the file with its lists written afresh.
    assert!(
        cms::lua::stubs::cms_meta() == CMS_META,
        "scripts/types/cms.lua differs from what `cms lua-types` prints; run \
         `CMS_UPDATE_STUBS=1 cargo test --lib stubs`"
    );
}
