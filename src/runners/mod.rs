//! Runners and hosts in Lua: the engine's [`Runner`] door, answered by the scripts
//! `hosts.lua` (which machines there are) and `runners/NAME.lua` (how a `claude` is
//! run on one: `ssh`, `local`; a container runtime is one more file). Both are
//! found in the script layers (built-in, `~/.config/cms/`, a trusted `.cms/`) and
//! read again at each start, so an edit applies to the next process without a reload.
//!
//! What Rust decides, whatever the script says: the host must exist; the remote
//! folder is the session's folder mapped by the host's `work_dir_map` (the policy
//! judges tool paths against it); the environment offered to a remote `claude` is the
//! host's `env` and the session's guard (`CMS_GUARD`), never cms's own environment.

use crate::engine::runner::{Launch, PlaceRequest, RemoteEnd, RunRequest, Runner};
use crate::engine::EngineError;
use crate::sandbox::limits::{call_limited, load_limited};
use crate::sandbox::scripts::{builtin, Layers, Source};
use crate::sandbox::{error_text, new_state, StateOptions};
use mlua::{Lua, LuaSerdeExt, Table, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a runner script may take to say what to run.
const LIMIT: Duration = Duration::from_secs(2);

/// Variables of the local child's environment that travel to a remote one: the
/// guard, so what the remote session starts through cms stays guarded.
const FORWARDED: &[&str] = &["CMS_GUARD"];

/// Why a runner could not say what to run.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("no host '{0}' in hosts.lua (known: {1}); add it to ~/.config/cms/hosts.lua")]
    UnknownHost(String, String),
    #[error("no runner '{0}': add runners/{0}.lua to ~/.config/cms/ (shipped: local, ssh, docker (podman with program = \"podman\"), kubectl)")]
    UnknownRunner(String),
    #[error("{0}")]
    Script(String),
    #[error(
        "the runner's answer: {0}; it returns {{ argv = {{...}}, env = {{...}}, kill = {{...}} }}"
    )]
    Answer(String),
}

/// One host of `hosts.lua`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Host {
    /// `ssh` (default), `local`, or the name of a runner of yours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// `user@host`, or an alias of `~/.ssh/config`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Local folder prefix → the same folder on the host.
    pub work_dir_map: BTreeMap<String, String>,
    /// Most live sessions on the host (its own capacity gate; parked, then queued, at the cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live: Option<u32>,
    pub labels: Vec<String>,
    /// The `claude` executable on the host [default: claude].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claude: Option<String>,
    /// The remote child's environment, on top of the remote login's own.
    pub env: BTreeMap<String, String>,
    /// Extra client options (`{"-F", "/path/ssh_config"}`, `{"-p", "2222"}`).
    pub ssh_options: Vec<String>,
    /// docker: an image to run (`docker run`) instead of a container to exec into
    /// (`address`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// docker: the program run instead of `docker`, one with the same command line
    /// (`podman`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// kubectl: the pod's namespace (`-n`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// kubectl: the kubeconfig context (`--context`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// What a runner script returns.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    argv: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    kill: Vec<String>,
}

/// The runner the app installs on the manager: `hosts.lua` and `runners/*.lua` of
/// the layers of the session's folder.
#[derive(Debug, Default)]
pub struct LuaRunners;

impl Runner for LuaRunners {
    fn launch(&self, req: &RunRequest) -> crate::engine::Result<Launch> {
        let Some(host) = req.host.clone() else {
            return Ok(Launch::local(req));
        };
        launch(&Layers::standard(&req.cwd), req).map_err(|e| EngineError::RunsOn {
            host,
            detail: e.to_string(),
        })
    }

    fn place(&self, req: &PlaceRequest) -> crate::engine::Result<Option<String>> {
        place(&Layers::standard(&req.cwd), req).map_err(|e| {
            EngineError::Invalid(format!(
                "placement refused the spawn of '{}': {e}",
                req.session
            ))
        })
    }

    fn max_live(&self, host: &str, cwd: &Path) -> Option<usize> {
        let all = hosts(&Layers::standard(cwd)).ok()?;
        all.get(host)?.max_live.map(|n| n as usize)
    }
}

/// One place a session can run, as `placement.lua` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct PlaceView {
    pub live: usize,
    pub queued: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_live: Option<usize>,
    pub labels: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// The host `placement.lua` (of `layers`, else the built-in one) picks for a spawn
/// that names none; None: this machine. Without hosts there is nothing to ask. A
/// script error, a wrong answer or an unknown host name is an error (the spawn is
/// refused: placement fails closed).
pub fn place(layers: &Layers, req: &PlaceRequest) -> Result<Option<String>, RunnerError> {
    let all = hosts(layers)?;
    if all.is_empty() {
        return Ok(None);
    }
    let src = layers
        .find("placement.lua")
        .or_else(|| builtin("placement.lua"))
        .ok_or_else(|| RunnerError::Script("no placement.lua".into()))?;
    let lua = state()?;
    let f = load_function(&lua, &src)?;
    let script = |e: mlua::Error| RunnerError::Script(error_text(&e));
    let views: BTreeMap<String, PlaceView> = all
        .iter()
        .map(|(name, h)| {
            let load = req.hosts.get(name).copied().unwrap_or_default();
            let view = PlaceView {
                live: load.live,
                queued: load.queued,
                max_live: h.max_live.map(|n| n as usize),
                labels: h.labels.clone(),
                runner: Some(h.runner.clone().unwrap_or_else(|| "ssh".into())),
                address: h.address.clone(),
            };
            (name.clone(), view)
        })
        .collect();
    let here = PlaceView {
        live: req.local.live,
        queued: req.local.queued,
        max_live: req.local_max_live,
        labels: Vec::new(),
        runner: None,
        address: None,
    };
    let t: Table = lua.create_table().map_err(script)?;
    t.set("session", req.session.as_str()).map_err(script)?;
    t.set("spec", lua.to_value(&req.options).map_err(script)?)
        .map_err(script)?;
    t.set("local", lua.to_value(&here).map_err(script)?)
        .map_err(script)?;
    t.set("hosts", lua.to_value(&views).map_err(script)?)
        .map_err(script)?;
    let out: Value = call_limited(&lua, LIMIT, &f, t).map_err(script)?;
    match out {
        Value::Nil => Ok(None),
        Value::String(s) => {
            let name = s.to_str().map_err(script)?.to_string();
            if all.contains_key(&name) {
                Ok(Some(name))
            } else {
                let known: Vec<&str> = all.keys().map(String::as_str).collect();
                Err(RunnerError::Answer(format!(
                    "{}: placement chose '{name}', which is not in hosts.lua (known: {})",
                    src.origin,
                    known.join(", ")
                )))
            }
        }
        other => Err(RunnerError::Script(format!(
            "{}: placement returns a {}, not a host name or nil",
            src.origin,
            other.type_name()
        ))),
    }
}

/// The hosts of `hosts.lua` in `layers`.
pub fn hosts(layers: &Layers) -> Result<BTreeMap<String, Host>, RunnerError> {
    let lua = state()?;
    let Some(src) = layers.find("hosts.lua") else {
        return Ok(BTreeMap::new());
    };
    let v = load(&lua, &src)?;
    lua.from_value(v)
        .map_err(|e| RunnerError::Script(format!("{}: {e}", src.origin)))
}

/// What to run for `req` on its host.
pub fn launch(layers: &Layers, req: &RunRequest) -> Result<Launch, RunnerError> {
    let name = req.host.clone().unwrap_or_default();
    let all = hosts(layers)?;
    let Some(host) = all.get(&name).cloned() else {
        let known: Vec<&str> = all.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        };
        return Err(RunnerError::UnknownHost(name, known));
    };
    let runner = host.runner.clone().unwrap_or_else(|| "ssh".into());
    let rel = format!("runners/{runner}.lua");
    let src = layers
        .find(&rel)
        .or_else(|| builtin(&rel))
        .ok_or_else(|| RunnerError::UnknownRunner(runner.clone()))?;
    let dir = map_dir(&host.work_dir_map, &req.cwd);
    let mut env = host.env.clone();
    for (k, v) in &req.env {
        if FORWARDED.contains(&k.as_str()) {
            env.insert(k.clone(), v.clone());
        }
    }
    let lua = state()?;
    let f = load_function(&lua, &src)?;
    let script = |e: mlua::Error| RunnerError::Script(error_text(&e));
    let t: Table = lua.create_table().map_err(script)?;
    t.set("session", req.session.as_str()).map_err(script)?;
    t.set("host", name.as_str()).map_err(script)?;
    t.set("config", lua.to_value(&host).map_err(script)?)
        .map_err(script)?;
    t.set(
        "claude",
        host.claude
            .clone()
            .unwrap_or_else(|| req.claude_bin.display().to_string()),
    )
    .map_err(script)?;
    t.set("argv", req.argv.clone()).map_err(script)?;
    t.set("dir", dir.as_str()).map_err(script)?;
    t.set("local_dir", req.cwd.display().to_string())
        .map_err(script)?;
    t.set("env", env).map_err(script)?;
    let local_env: BTreeMap<String, String> = req.env.iter().cloned().collect();
    t.set("local_env", local_env).map_err(script)?;
    let out: Value = call_limited(&lua, LIMIT, &f, t).map_err(script)?;
    let answer: Answer = lua
        .from_value(out)
        .map_err(|e| RunnerError::Answer(format!("{}: {e}", src.origin)))?;
    if answer.argv.is_empty() {
        return Err(RunnerError::Answer(format!(
            "{}: argv is empty",
            src.origin
        )));
    }
    let mut argv = answer.argv.into_iter();
    let program = PathBuf::from(argv.next().unwrap_or_default());
    let remote = (!answer.kill.is_empty() || runner != "local").then(|| RemoteEnd {
        host: name.clone(),
        cwd: dir.clone(),
        argv: answer.kill,
    });
    Ok(Launch {
        program,
        args: argv.collect(),
        // The local client runs in the session's folder when it exists here.
        cwd: if req.cwd.is_dir() {
            req.cwd.clone()
        } else {
            PathBuf::from("/")
        },
        env: answer.env.into_iter().collect(),
        remote,
    })
}

/// `cwd` with the longest matching prefix of `map` replaced (whole path components).
pub fn map_dir(map: &BTreeMap<String, String>, cwd: &Path) -> String {
    let best = map
        .iter()
        .filter(|(from, _)| cwd.starts_with(Path::new(from.as_str())))
        .max_by_key(|(from, _)| Path::new(from.as_str()).components().count());
    match best {
        Some((from, to)) => {
            let rest = cwd.strip_prefix(from.as_str()).unwrap_or(Path::new(""));
            let mapped = Path::new(to).join(rest);
            mapped.display().to_string()
        }
        None => cwd.display().to_string(),
    }
}

fn state() -> Result<Lua, RunnerError> {
    new_state(StateOptions {
        allow_unsafe: false,
        memory_limit: 16 * 1024 * 1024,
        confine_files: true,
    })
    .map_err(|e| RunnerError::Script(error_text(&e)))
}

/// The function a placement or runner script returns (`function(req)`).
fn load_function(lua: &Lua, src: &Source) -> Result<mlua::Function, RunnerError> {
    match load(lua, src)? {
        Value::Function(f) => Ok(f),
        other => Err(RunnerError::Script(format!(
            "{} returns a {}, not a function(req)",
            src.origin,
            other.type_name()
        ))),
    }
}

fn load(lua: &Lua, src: &Source) -> Result<Value, RunnerError> {
    load_limited(lua, || {
        lua.load(src.code.as_str())
            .set_name(src.chunk_name())
            .set_mode(mlua::ChunkMode::Text)
            .call::<Value>(())
    })
    .map_err(|e| RunnerError::Script(error_text(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str, cwd: &str) -> RunRequest {
        RunRequest {
            session: "s".into(),
            host: Some(host.into()),
            claude_bin: "claude".into(),
            argv: vec!["-p".into(), "--model".into(), "it's".into()],
            cwd: cwd.into(),
            env: vec![
                ("ANTHROPIC_API_KEY".into(), "secret".into()),
                ("CMS_GUARD".into(), "{}".into()),
            ],
        }
    }

    fn layers_with(hosts: &str) -> (tempfile::TempDir, Layers) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hosts.lua"), hosts).unwrap();
        let layers = Layers {
            dirs: vec![dir.path().to_path_buf()],
            gated: None,
        };
        (dir, layers)
    }

    #[test]
    fn folders_map_by_the_longest_prefix() {
        let map: BTreeMap<String, String> = [
            ("/home/me".to_string(), "/srv/me".to_string()),
            ("/home/me/work".to_string(), "/data/work".to_string()),
        ]
        .into();
        assert_eq!(map_dir(&map, Path::new("/home/me/work/x")), "/data/work/x");
        assert_eq!(map_dir(&map, Path::new("/home/me/y")), "/srv/me/y");
        assert_eq!(map_dir(&map, Path::new("/home/meat")), "/home/meat");
    }

    #[test]
    fn the_ssh_runner_sends_no_local_secret_and_knows_how_to_end_the_remote_group() {
        let (_d, layers) = layers_with(
            r#"return { gpu = { address = "me@gpu", claude = "/opt/claude",
                 work_dir_map = { ["/home/me"] = "/srv/me" }, env = { FOO = "bar" },
                 ssh_options = { "-F", "/tmp/cfg" } } }"#,
        );
        let l = launch(&layers, &req("gpu", "/home/me/p")).unwrap();
        assert_eq!(l.program, PathBuf::from("ssh"));
        let line = l.args.join(" ");
        assert!(
            line.contains("BatchMode=yes") && line.contains("-F /tmp/cfg"),
            "{line}"
        );
        assert!(!line.contains("secret"), "{line}");
        assert!(
            line.contains("'FOO=bar'") && line.contains("'CMS_GUARD={}'"),
            "{line}"
        );
        assert!(
            line.contains("cd '/srv/me/p'") && line.contains("'it'\\''s'"),
            "{line}"
        );
        let remote = l.remote.unwrap();
        assert_eq!(remote.cwd, "/srv/me/p");
        assert!(
            remote.command(99).join(" ").contains("-- -99"),
            "{remote:?}"
        );
    }

    #[test]
    fn an_unknown_host_names_the_known_ones() {
        let (_d, layers) = layers_with(r#"return { a = { address = "x" } }"#);
        let e = launch(&layers, &req("b", "/tmp")).unwrap_err().to_string();
        assert!(e.contains("'b'") && e.contains("known: a"), "{e}");
    }

    #[test]
    fn the_local_runner_runs_the_hosts_claude_here() {
        let (_d, layers) = layers_with(
            r#"return { here = { runner = "local", claude = "/bin/true", env = { X = "1" } } }"#,
        );
        let l = launch(&layers, &req("here", "/tmp")).unwrap();
        assert_eq!(l.program, PathBuf::from("/bin/true"));
        assert!(l.remote.is_none());
        assert!(l.env.contains(&("X".into(), "1".into())), "{:?}", l.env);
    }
}

#[cfg(test)]
mod placement_tests {
    use super::*;
    use crate::engine::runner::Load;

    fn layers_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Layers) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let layers = Layers {
            dirs: vec![dir.path().to_path_buf()],
            gated: None,
        };
        (dir, layers)
    }

    fn req(local: Load, hosts: &BTreeMap<String, Load>) -> PlaceRequest {
        PlaceRequest {
            session: "s".into(),
            options: Default::default(),
            cwd: "/tmp".into(),
            local,
            local_max_live: Some(2),
            hosts: hosts.clone(),
        }
    }

    /// Ten spawns, local cap 2, two hosts capped at 3: where each goes (each one
    /// counted live where it went before the next is placed).
    #[test]
    fn the_default_fills_this_machine_then_the_least_loaded_host() {
        let (_d, layers) = layers_with(&[(
            "hosts.lua",
            r#"return { hostA = { address = "a", max_live = 3 },
                        hostB = { address = "b", max_live = 3 } }"#,
        )]);
        let mut local = Load::default();
        let mut hosts: BTreeMap<String, Load> = BTreeMap::new();
        let mut went = Vec::new();
        for _ in 0..10 {
            let at = place(&layers, &req(local, &hosts)).unwrap();
            match &at {
                Some(h) => hosts.entry(h.clone()).or_default().live += 1,
                None => local.live += 1,
            }
            went.push(at.unwrap_or_else(|| "local".into()));
        }
        eprintln!("placement of 10 spawns: {went:?}");
        assert_eq!(
            went,
            [
                "local", "local", "hostA", "hostB", "hostA", "hostB", "hostA", "hostB", "local",
                "local"
            ]
        );
    }

    /// A spawn that asks for labels goes to a host that has them all, once this
    /// machine is full.
    #[test]
    fn labels_pick_the_host_that_carries_them() {
        let (_d, layers) = layers_with(&[(
            "hosts.lua",
            r#"return { plain = { address = "a", max_live = 3 },
                        gpu = { address = "b", max_live = 3, labels = { "gpu", "big" } } }"#,
        )]);
        let full = Load { live: 2, queued: 0 };
        let mut r = req(full, &BTreeMap::new());
        r.options.labels = vec!["gpu".into()];
        assert_eq!(place(&layers, &r).unwrap().as_deref(), Some("gpu"));
        r.options.labels = vec!["gpu".into(), "tpu".into()];
        assert_eq!(
            place(&layers, &r).unwrap(),
            None,
            "nowhere fits: waits here"
        );
        r.options.labels = Vec::new();
        assert!(
            place(&layers, &r).unwrap().is_some(),
            "no labels asked: any host with room"
        );
    }

    #[test]
    fn a_broken_or_wrong_placement_refuses_with_its_file_and_line() {
        let hosts = r#"return { hostA = { address = "a" } }"#;
        let (_d, layers) = layers_with(&[
            ("hosts.lua", hosts),
            (
                "placement.lua",
                "return function(req)\n  error('boom')\nend",
            ),
        ]);
        let e = place(&layers, &req(Load::default(), &BTreeMap::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("placement.lua:2") && e.contains("boom"), "{e}");
        let (_d, layers) = layers_with(&[
            ("hosts.lua", hosts),
            ("placement.lua", "return function(req) return 'nowhere' end"),
        ]);
        let e = place(&layers, &req(Load::default(), &BTreeMap::new()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("'nowhere'") && e.contains("known: hostA"), "{e}");
        let (_d, layers) = layers_with(&[
            ("hosts.lua", hosts),
            (
                "placement.lua",
                "return function(req) return req.session == 's' and 'hostA' or nil end",
            ),
        ]);
        let at = place(&layers, &req(Load::default(), &BTreeMap::new())).unwrap();
        assert_eq!(at.as_deref(), Some("hostA"));
    }
}
