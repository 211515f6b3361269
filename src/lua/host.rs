//! One Lua state for scripts, the REPL and (later) policies and plugins: the sandbox,
//! the memory limit, the time limit for callbacks, and the `cms` module.
//!
//! Lua is single-threaded: a host lives on one thread and its async calls are driven
//! from there (inside a `tokio::task::LocalSet`), while the engine's sessions run on
//! the runtime's worker threads.

use crate::engine::{Manager, SessionEvent};
use crate::lua::api;
use mlua::{Function, IntoLuaMulti, Lua, LuaOptions, MultiValue, StdLib, Value};
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

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
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            allow_unsafe: std::env::var("CMS_LUA_UNSAFE").as_deref() == Ok("1"),
            memory_limit: 256 * 1024 * 1024,
            callback_limit: Duration::from_secs(2),
            args: Vec::new(),
            policy: None,
            plugins: true,
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
    #[error("{}", describe(.0))]
    Lua(mlua::Error),
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

/// The code of an `os.exit` call, wherever it sits in the error's causes.
fn exit_code(e: &mlua::Error) -> Option<i32> {
    match e {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            exit_code(cause)
        }
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<ExitRequest>().map(|r| r.0),
        _ => None,
    }
}

/// A Lua error as people read it: `file:line: message`, then the traceback without
/// mlua's internal frames. Errors raised by Rust functions (`cms.spawn` on a
/// duplicate name, say) carry no position of their own: they get the position of
/// the script line that called them.
pub fn describe(e: &mlua::Error) -> String {
    let (message, traceback) = split(e);
    let message = ["runtime error: ", "syntax error: "]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .unwrap_or(&message)
        .to_string();
    let frames: Vec<&str> = traceback
        .lines()
        .skip_while(|l| l.trim() == "stack traceback:")
        .filter(|l| {
            let l = l.trim();
            !(l.is_empty()
                || l.starts_with("[C]: in local 'poll'")
                || l.starts_with("[C]: in hook")
                || l.starts_with("[string \"?\"]"))
        })
        .collect();
    let has_position = message
        .split(':')
        .nth(1)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    let mut out = match frames
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.starts_with("[C]"))
    {
        Some(frame) if !has_position => {
            let position: String = frame.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
            format!("{position}: {message}")
        }
        _ => message,
    };
    if !frames.is_empty() {
        out.push_str("\nstack traceback:");
        for f in frames {
            out.push_str("\n\t");
            out.push_str(f.trim());
        }
    }
    out
}

/// The innermost message and the outermost traceback of an error.
fn split(e: &mlua::Error) -> (String, String) {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            let (message, inner) = split(cause);
            (
                message,
                if inner.is_empty() {
                    traceback.clone()
                } else {
                    inner
                },
            )
        }
        mlua::Error::WithContext { context, cause } => {
            let (message, tb) = split(cause);
            (format!("{context}: {message}"), tb)
        }
        other => {
            let text = other.to_string();
            match text.split_once("\nstack traceback:") {
                Some((m, tb)) => (m.to_string(), tb.to_string()),
                None => (text, String::new()),
            }
        }
    }
}

/// Raised by `os.exit` so the host can stop its sessions before the process exits.
#[derive(Debug, thiserror::Error)]
#[error("os.exit({0})")]
pub struct ExitRequest(pub i32);

/// State shared by the host and the functions it installs.
pub struct HostShared {
    pub callback_limit: Duration,
    pub policy: Option<Arc<crate::policy::PolicyService>>,
    pub handlers: RefCell<Vec<Handler>>,
    pub next_handler: Cell<u64>,
    events: RefCell<Option<broadcast::Receiver<SessionEvent>>>,
}

pub struct Handler {
    pub id: u64,
    /// An event name (`tool_use`, `result`, ...) or `*`.
    pub event: String,
    pub func: Function,
}

pub struct LuaHost {
    lua: Lua,
    manager: Arc<Manager>,
    shared: Rc<HostShared>,
}

/// The result of evaluating a REPL chunk.
pub enum Eval {
    Values(MultiValue),
    /// The chunk is not finished (an open `function`, string, ...): read more.
    Incomplete,
}

impl LuaHost {
    pub fn new(manager: Arc<Manager>, opts: HostOptions) -> mlua::Result<LuaHost> {
        let libs = StdLib::COROUTINE
            | StdLib::TABLE
            | StdLib::IO
            | StdLib::OS
            | StdLib::STRING
            | StdLib::UTF8
            | StdLib::MATH
            | StdLib::PACKAGE;
        let lua = if opts.allow_unsafe {
            // SAFETY: the user asked for the debug library (`--unsafe-lua`).
            unsafe { Lua::unsafe_new_with(libs | StdLib::DEBUG, LuaOptions::new()) }
        } else {
            Lua::new_with(libs, LuaOptions::new())?
        };
        crate::lua::limits::install(&lua)?;
        lua.set_memory_limit(opts.memory_limit)?;
        let shared = Rc::new(HostShared {
            callback_limit: opts.callback_limit,
            policy: opts.policy.clone(),
            handlers: RefCell::new(Vec::new()),
            next_handler: Cell::new(1),
            events: RefCell::new(None),
        });
        restrict(&lua, opts.allow_unsafe)?;
        let host = LuaHost {
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

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
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
        let value: Value = chunk.call_async(()).await?;
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
                Err(e) => return Err(e.into()),
            },
        };
        let values: MultiValue = func.call_async(()).await?;
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

/// Run `f` in its own coroutine under a deadline of `limit`: Lua code still
/// running then (in any coroutine it made) is stopped with a clear error.
pub(crate) fn call_limited<R: mlua::FromLuaMulti>(
    lua: &Lua,
    limit: Duration,
    f: &Function,
    args: impl IntoLuaMulti,
) -> mlua::Result<R> {
    let thread = lua.create_thread(f.clone())?;
    let message = format!(
        "callback stopped: it ran longer than its limit of {} ms (an endless loop?)",
        limit.as_millis()
    );
    let r = crate::lua::limits::with_deadline(lua, limit, &message, || thread.resume::<R>(args))?;
    if thread.status() == mlua::ThreadStatus::Resumable {
        return Err(mlua::Error::runtime(
            "callbacks cannot wait: async calls (s:send, cms.sleep, ...) are not allowed here",
        ));
    }
    Ok(r)
}

/// Subscribe lazily: only a host with handlers pays for events.
pub(crate) fn ensure_subscribed(manager: &Manager, shared: &HostShared) {
    let mut events = shared.events.borrow_mut();
    if events.is_none() {
        *events = Some(manager.subscribe());
    }
}

/// Deliver pending events to the `cms.on` handlers. Called after every engine call
/// returns (all events of a turn are published before its response), so handlers
/// run at predictable points, on the script's thread.
pub(crate) fn dispatch_events(lua: &Lua, shared: &HostShared) {
    loop {
        let next = match shared.events.borrow_mut().as_mut() {
            Some(rx) => rx.try_recv(),
            None => return,
        };
        match next {
            Ok(event) => deliver(lua, shared, &event),
            Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
            Err(_) => return,
        }
    }
}

fn deliver(lua: &Lua, shared: &HostShared, event: &SessionEvent) {
    let name = event.kind.name();
    let funcs: Vec<Function> = shared
        .handlers
        .borrow()
        .iter()
        .filter(|h| h.event == name || h.event == "*")
        .map(|h| h.func.clone())
        .collect();
    if funcs.is_empty() {
        return;
    }
    let table = match crate::lua::convert::to_lua(lua, event) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("cannot pass event {name} to Lua: {e}");
            return;
        }
    };
    for f in funcs {
        if let Err(e) = call_limited::<()>(lua, shared.callback_limit, &f, table.clone()) {
            // The handler failed; the host goes on.
            let _ = writeln!(std::io::stderr(), "cms.on('{name}') handler failed: {e}");
        }
    }
}

/// Precompiled (binary) chunks are never loaded: Lua does not verify them, and a
/// patched one crashes the process. `load`, `loadfile`, `dofile` and `require`
/// read text only, and `string.dump` is gone.
fn text_chunks_only(lua: &Lua) -> mlua::Result<()> {
    lua.load(
        r#"
        local load, loadfile, error = load, loadfile, error
        local package, string = package, string
        _G.load = function(chunk, name, _, ...)
          return load(chunk, name, "t", ...)
        end
        _G.loadfile = function(file, _, ...)
          return loadfile(file, "t", ...)
        end
        _G.dofile = function(file)
          local f, err = loadfile(file, "t")
          if not f then error(err, 2) end
          return f()
        end
        string.dump = function()
          error("string.dump is disabled in cms: binary chunks cannot be loaded", 2)
        end
        local searchers = package and package.searchers
        if searchers then
          searchers[2] = function(name)
            local path, err = package.searchpath(name, package.path)
            if not path then return err end
            local f, lerr = loadfile(path, "t")
            if not f then
              error(("error loading module '%s' from file '%s':\n\t%s"):format(name, path, lerr), 3)
            end
            return f, path
          end
        end
        "#,
    )
    .set_name("=cms")
    .set_mode(mlua::ChunkMode::Text)
    .exec()
}

/// Remove what a script must not do unless the user opted in.
/// Lua that builds `io` and `os` tables without file writes or deletes from the
/// real ones: `io.open` only reads, `io.output`, `io.popen`, `io.tmpfile`,
/// `os.remove`, `os.rename`, `os.tmpname` and `os.execute` raise.
const CONFINE: &str = r#"
local io, os, error, pairs, type = io, os, error, pairs, type
local function refuse(what)
  return function()
    error(what .. " is disabled in cms policies, plugins and strategies: they may read files "
      .. "(io.open(path), io.lines(path), cms.path.read(path)) but not write or delete them", 2)
  end
end
local cio, cos = {}, {}
for k, v in pairs(io) do cio[k] = v end
for k, v in pairs(os) do cos[k] = v end
local open = io.open
cio.open = function(path, mode)
  mode = mode or "r"
  if mode ~= "r" and mode ~= "rb" then
    return refuse("io.open with mode " .. tostring(mode))()
  end
  return open(path, mode)
end
cio.output = refuse("io.output")
cio.popen = refuse("io.popen")
cio.tmpfile = refuse("io.tmpfile")
cos.remove = refuse("os.remove")
cos.rename = refuse("os.rename")
cos.tmpname = refuse("os.tmpname")
cos.execute = refuse("os.execute")
return cio, cos
"#;

/// Give `target` (the globals of a policy state, or the environment of a plugin
/// or strategy chunk) `io` and `os` without file writes or deletes.
pub(crate) fn confine_files(lua: &Lua, target: &mlua::Table) -> mlua::Result<()> {
    let (io, os): (mlua::Table, mlua::Table) =
        lua.load(CONFINE).set_name("=cms-confine").call(())?;
    target.set("io", io)?;
    target.set("os", os)
}

/// An environment for a plugin or strategy chunk loaded into a script's state:
/// the script's globals, but `io` and `os` without file writes or deletes.
pub(crate) fn confined_env(lua: &Lua) -> mlua::Result<mlua::Table> {
    let env = lua.create_table()?;
    confine_files(lua, &env)?;
    let meta = lua.create_table()?;
    meta.set("__index", lua.globals())?;
    env.set_metatable(Some(meta));
    Ok(env)
}

pub(crate) fn restrict(lua: &Lua, allow_unsafe: bool) -> mlua::Result<()> {
    let g = lua.globals();
    let os: mlua::Table = g.get("os")?;
    // os.exit would end the process without stopping the sessions: end the script instead.
    os.set(
        "exit",
        lua.create_function(|_, code: Option<Value>| {
            let code = match code {
                None | Some(Value::Boolean(true)) => 0,
                Some(Value::Boolean(false)) => 1,
                Some(Value::Integer(i)) => i as i32,
                Some(Value::Number(n)) => n as i32,
                Some(_) => 1,
            };
            Err::<(), _>(mlua::Error::external(ExitRequest(code)))
        })?,
    )?;
    text_chunks_only(lua)?;
    if allow_unsafe {
        return Ok(());
    }
    let disabled = |what: &'static str| {
        lua.create_function(move |_, _: MultiValue| {
            Err::<(), _>(mlua::Error::runtime(format!(
                "{what} is disabled in cms scripts; run with --unsafe-lua (or set CMS_LUA_UNSAFE=1) to allow it"
            )))
        })
    };
    os.set("execute", disabled("os.execute")?)?;
    let io: mlua::Table = g.get("io")?;
    io.set("popen", disabled("io.popen")?)?;
    let package: mlua::Table = g.get("package")?;
    package.set("loadlib", disabled("package.loadlib")?)?;
    // No C modules through require either.
    package.set("cpath", "")?;
    if let Ok(searchers) = package.get::<mlua::Table>("searchers") {
        // Keep the preload and Lua-file searchers, drop the C-library ones.
        let kept = lua.create_sequence_from([
            searchers.raw_get::<Value>(1)?,
            searchers.raw_get::<Value>(2)?,
        ])?;
        package.set("searchers", kept)?;
    }
    Ok(())
}
