//! The host of a script, the REPL or a delegation: a restricted Lua state (built by
//! [`crate::sandbox::state`]) with the `cms` module, `cms.on` handlers and the
//! plugins' strategies.
//!
//! Lua is single-threaded: a host lives on one thread and its async calls are driven
//! from there (inside a `tokio::task::LocalSet`), while the engine's sessions run on
//! the runtime's worker threads.

use crate::engine::Sessions;
use crate::lua::api;
use crate::lua::events::{dispatch_events, stop_started, HostShared, Started};
use crate::sandbox::limits::call_limited;
use crate::sandbox::state::exit_code;
use crate::sandbox::{error_text, new_state, StateOptions};
use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Value};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How a host is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Allow `os.execute`, `io.popen`, `package.loadlib` and the `debug` library.
    pub allow_unsafe: bool,
    /// Most memory the Lua state may use, in bytes.
    pub memory_limit: usize,
    /// Longest a callback (event handler, policy hook, plugin tool) may run.
    pub callback_limit: Duration,
    /// `cms.args`.
    pub args: Vec<String>,
    /// The safety policy service (presets, limits, strategies) for `cms.delegate`.
    pub policy: Option<Arc<crate::policy::PolicyService>>,
    /// Load every plugin (for their strategies) when there is a policy service.
    pub plugins: bool,
    /// `cms.decide{allow = true}` and `approval` handlers may approve (a person's own
    /// script or REPL); off in the MCP server's Lua unless the user allowed it there.
    pub may_approve: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            // Only `cms script`/`cms repl --unsafe-lua` (or CMS_LUA_UNSAFE=1 read by their
            // flag) opt in; hosts for plugins, delegation and the MCP server never do.
            allow_unsafe: false,
            memory_limit: 256 * 1024 * 1024,
            callback_limit: Duration::from_secs(2),
            args: Vec::new(),
            policy: None,
            plugins: true,
            may_approve: true,
        }
    }
}

/// Why a script did not finish normally.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read script {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A Lua error: `file:line: message` and a traceback.
    #[error("{}", error_text(.0))]
    Lua(mlua::Error),
    /// Lua ran out of the memory it may use: the error names the limit.
    #[error("{}", memory_text(.error, *.limit_mb))]
    Memory { error: mlua::Error, limit_mb: usize },
    /// `os.exit(code)`.
    #[error("the script called os.exit({0})")]
    Exit(i32),
}

impl From<mlua::Error> for ScriptError {
    fn from(e: mlua::Error) -> Self {
        match exit_code(&e) {
            Some(code) => ScriptError::Exit(code),
            None => ScriptError::Lua(e),
        }
    }
}

/// Whether Lua failed for want of memory (the state's limit, or a Rust function's
/// check against it).
fn is_memory_error(e: &mlua::Error) -> bool {
    match e {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_memory_error(cause)
        }
        _ => false,
    }
}

/// "not enough memory" says which limit: the script's `--memory-limit`.
fn memory_text(e: &mlua::Error, limit_mb: usize) -> String {
    let text = error_text(e);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let why = format!(
        "the script used more than its memory limit (--memory-limit {limit_mb} MB, or \
         CMS_LUA_MEMORY_MB; raise it to allow more)"
    );
    let first = if first.trim_end().ends_with("not enough memory") {
        format!("{}: {why}", first.trim_end())
    } else {
        format!("{first} ({why})")
    };
    if rest.is_empty() {
        first
    } else {
        format!("{first}\n{rest}")
    }
}

pub struct LuaHost {
    memory_limit: usize,
    lua: Lua,
    manager: Arc<dyn Sessions>,
    shared: Rc<HostShared>,
}

/// The result of evaluating a REPL chunk.
pub enum Eval {
    Values(MultiValue),
    /// The chunk is not finished (an open `function`, string, ...): read more.
    Incomplete,
}

impl LuaHost {
    pub fn new(manager: Arc<dyn Sessions>, opts: HostOptions) -> mlua::Result<LuaHost> {
        let lua = new_state(StateOptions {
            allow_unsafe: opts.allow_unsafe,
            memory_limit: opts.memory_limit,
            confine_files: false,
        })?;
        let shared = Rc::new(HostShared {
            callback_limit: opts.callback_limit,
            policy: opts.policy.clone(),
            handlers: RefCell::new(Vec::new()),
            next_handler: Cell::new(1),
            events: RefCell::new(None),
            started: Arc::default(),
            sessions: manager.clone(),
            may_approve: opts.may_approve,
            touched: RefCell::default(),
        });
        let host = LuaHost {
            memory_limit: opts.memory_limit,
            lua,
            manager: manager.clone(),
            shared,
        };
        api::install(&host.lua, manager, host.shared.clone(), opts.args)?;
        // Plugins' strategies become available to `cms.delegate`.
        if let Some(policy) = opts.policy.as_ref().filter(|_| opts.plugins) {
            let set = crate::plugins::load(&host.lua, &crate::plugins::discover(policy.layers()));
            for e in &set.errors {
                tracing::warn!("plugin disabled: {e}");
            }
            host.lua.set_app_data(set);
        }
        Ok(host)
    }

    /// A Lua error as a script error: `os.exit`, out of memory, or any other.
    pub fn script_error(&self, e: mlua::Error) -> ScriptError {
        if is_memory_error(&e) && self.memory_limit > 0 {
            return ScriptError::Memory {
                error: e,
                limit_mb: self.memory_limit.div_ceil(1024 * 1024),
            };
        }
        e.into()
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    pub fn sessions(&self) -> &Arc<dyn Sessions> {
        &self.manager
    }

    /// The sessions this host started and did not keep (`keep = true`).
    pub fn started(&self) -> Started {
        self.shared.started.clone()
    }

    /// Stop the sessions this host started and did not keep, when they live on in
    /// the session host (in process, they end with the process).
    pub async fn stop_started(&self) {
        stop_started(self.manager.as_ref(), &self.shared.started).await
    }

    /// Run a script file; its return value is the script's result.
    pub async fn run_file(&self, path: &Path) -> Result<Value, ScriptError> {
        let code = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let chunk = self
            .lua
            .load(code)
            .set_name(format!("@{}", path.display()))
            .set_mode(mlua::ChunkMode::Text);
        let value: Value = chunk
            .call_async(())
            .await
            .map_err(|e| self.script_error(e))?;
        self.dispatch_events();
        Ok(value)
    }

    /// Evaluate REPL input: as an expression first (so `1 + 1` prints 2), else as
    /// statements.
    pub async fn eval(&self, code: &str) -> Result<Eval, ScriptError> {
        let func = match self
            .lua
            .load(format!("return {code}"))
            .set_name("=repl")
            .set_mode(mlua::ChunkMode::Text)
            .into_function()
        {
            Ok(f) => f,
            Err(_) => match self
                .lua
                .load(code)
                .set_name("=repl")
                .set_mode(mlua::ChunkMode::Text)
                .into_function()
            {
                Ok(f) => f,
                Err(mlua::Error::SyntaxError {
                    incomplete_input: true,
                    ..
                }) => return Ok(Eval::Incomplete),
                Err(e) => return Err(self.script_error(e)),
            },
        };
        let values: MultiValue = func
            .call_async(())
            .await
            .map_err(|e| self.script_error(e))?;
        self.dispatch_events();
        Ok(Eval::Values(values))
    }

    /// Send `print` to stderr, so that stdout carries only the script's JSON result.
    pub fn print_to_stderr(&self) -> mlua::Result<()> {
        let print = self.lua.create_function(|lua, args: MultiValue| {
            let tostring: Function = lua.globals().get("tostring")?;
            let mut parts = Vec::with_capacity(args.len());
            for a in args {
                parts.push(tostring.call::<String>(a)?);
            }
            // Not eprintln!: a closed stderr must not panic inside Lua.
            let _ = writeln!(std::io::stderr(), "{}", parts.join("\t"));
            Ok(())
        })?;
        self.lua.globals().set("print", print)
    }

    /// Call a callback under the time limit (a `while true do end` is stopped with a
    /// clear error instead of hanging the host).
    pub fn call_limited<R: mlua::FromLuaMulti>(
        &self,
        f: &Function,
        args: impl IntoLuaMulti,
    ) -> mlua::Result<R> {
        call_limited(&self.lua, self.shared.callback_limit, f, args)
    }

    /// Deliver the events that arrived since the last call to `cms.on` handlers.
    pub fn dispatch_events(&self) {
        dispatch_events(&self.lua, &self.shared);
    }
}
