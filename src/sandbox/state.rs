//! The restricted Lua state, built in one place for every kind of state cms runs:
//! scripts and the REPL, policies, plugins and strategies.
//!
//! - [`new_state`]: the standard libraries cms allows, the instruction hook of
//!   [`super::limits`], a memory limit, [`restrict`]ions, and the base `cms` table
//!   ([`super::base_module`]);
//! - [`restrict`]: `os.exit` ends the script (not the process), text chunks only, and
//!   no `os.execute`/`io.popen`/C modules unless the user opted in;
//! - [`confine_files`]/[`confined_env`]: `io` and `os` that read files but never write
//!   or delete one (policies, plugins, strategies).

use mlua::{Lua, LuaOptions, MultiValue, StdLib, Value};

/// What kind of state to build.
#[derive(Debug, Clone, Copy)]
pub struct StateOptions {
    /// Allow `os.execute`, `io.popen`, `package.loadlib` and the `debug` library
    /// (`--unsafe-lua`). Never for policies.
    pub allow_unsafe: bool,
    /// Most memory the state may use, in bytes.
    pub memory_limit: usize,
    /// `io` and `os` in the globals read files but never write or delete them.
    pub confine_files: bool,
}

/// A new restricted state with the base `cms` table in its globals.
pub fn new_state(opts: StateOptions) -> mlua::Result<Lua> {
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
    super::limits::install(&lua)?;
    lua.set_memory_limit(opts.memory_limit)?;
    restrict(&lua, opts.allow_unsafe)?;
    if opts.confine_files {
        confine_files(&lua, &lua.globals())?;
    }
    let cms = lua.create_table()?;
    super::base_module::install(&lua, &cms)?;
    lua.globals().set("cms", cms)?;
    Ok(lua)
}

/// Raised by `os.exit` so the host can stop its sessions before the process exits.
#[derive(Debug, thiserror::Error)]
#[error("os.exit({0})")]
pub struct ExitRequest(pub i32);

/// The code of an `os.exit` call, wherever it sits in the error's causes.
pub fn exit_code(e: &mlua::Error) -> Option<i32> {
    match e {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            exit_code(cause)
        }
        mlua::Error::ExternalError(inner) => inner.downcast_ref::<ExitRequest>().map(|r| r.0),
        _ => None,
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
pub fn confine_files(lua: &Lua, target: &mlua::Table) -> mlua::Result<()> {
    let (io, os): (mlua::Table, mlua::Table) =
        lua.load(CONFINE).set_name("=cms-confine").call(())?;
    target.set("io", io)?;
    target.set("os", os)
}

/// An environment for a plugin or strategy chunk loaded into a script's state:
/// the script's globals, but `io` and `os` without file writes or deletes.
pub fn confined_env(lua: &Lua) -> mlua::Result<mlua::Table> {
    let env = lua.create_table()?;
    confine_files(lua, &env)?;
    let meta = lua.create_table()?;
    meta.set("__index", lua.globals())?;
    env.set_metatable(Some(meta));
    Ok(env)
}

/// Remove what a script must not do unless the user opted in.
pub fn restrict(lua: &Lua, allow_unsafe: bool) -> mlua::Result<()> {
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
