//! The base of the `cms` module, in every Lua state cms builds (scripts, the REPL,
//! policies, plugins, strategies): `cms.version`, `cms.log`, `cms.json`, and
//! `cms.path` and `cms.shell`, the helpers safety rules are written with.
//!
//! - `cms.path.resolve(path, cwd)`: the absolute path, `..` and symlinks resolved;
//! - `cms.path.relative(path, cwd)`: the same relative to `cwd` (nil outside it),
//!   and the absolute path as a second value;
//! - `cms.path.exists(path)`, `cms.path.is_dir(path)`, `cms.path.read(path)` (the
//!   text, or nil and an error);
//! - `cms.shell.parse(command)`: the simple commands of a Bash line, each
//!   `{argv = {...}, assigns = {...}, redirects = {{op, target, writes}}}`; raises
//!   "the command is too complex to check" for a line nested too deep or too slow.

use super::{convert, paths, shell};
use mlua::{Lua, MultiValue, Table, Value};
use std::path::Path;

pub fn install(lua: &Lua, cms: &Table) -> mlua::Result<()> {
    install_pure(lua, cms)?;
    let path = lua.create_table()?;
    path.set(
        "resolve",
        lua.create_function(|_, (p, cwd): (String, Option<String>)| {
            let cwd = cwd.unwrap_or_else(|| ".".into());
            Ok(paths::resolve(&p, Path::new(&cwd)).display().to_string())
        })?,
    )?;
    path.set(
        "relative",
        lua.create_function(|_, (p, cwd): (String, Option<String>)| {
            let cwd = cwd.unwrap_or_else(|| ".".into());
            let (rel, full) = paths::locate(&p, Path::new(&cwd));
            Ok((rel, full.display().to_string()))
        })?,
    )?;
    path.set(
        "exists",
        lua.create_function(|_, p: String| Ok(Path::new(&p).exists()))?,
    )?;
    path.set(
        "read",
        lua.create_function(|_, p: String| match std::fs::read_to_string(&p) {
            Ok(text) => Ok((Some(text), None)),
            Err(e) => Ok((None, Some(format!("{p}: {e}")))),
        })?,
    )?;
    path.set(
        "is_dir",
        lua.create_function(|_, p: String| Ok(Path::new(&p).is_dir()))?,
    )?;
    cms.set("path", path)?;

    let sh = lua.create_table()?;
    sh.set(
        "parse",
        lua.create_function(|lua, line: String| {
            // The reader holds the line as chars and the words it reads (about
            // 4 + 2 bytes per byte), and the tables cost about as much again.
            crate::sandbox::limits::reserve(lua, line.len().saturating_mul(12))?;
            let out = convert::array(lua, lua.create_table()?);
            // A line too deep, long or slow to read raises: the policy then denies.
            let commands = shell::parse(&line).map_err(|e| mlua::Error::runtime(e.to_string()))?;
            for (i, c) in commands.into_iter().enumerate() {
                let t = lua.create_table()?;
                t.set(
                    "argv",
                    convert::array(lua, lua.create_sequence_from(c.argv)?),
                )?;
                t.set(
                    "assigns",
                    convert::array(lua, lua.create_sequence_from(c.assigns)?),
                )?;
                let redirects = convert::array(lua, lua.create_table()?);
                for (j, r) in c.redirects.iter().enumerate() {
                    let rt = lua.create_table()?;
                    rt.set("op", r.op.clone())?;
                    rt.set("target", r.target.clone())?;
                    rt.set("writes", r.writes())?;
                    redirects.raw_set(j + 1, rt)?;
                }
                t.set("redirects", redirects)?;
                out.raw_set(i + 1, t)?;
            }
            Ok(out)
        })?,
    )?;
    cms.set("shell", sh)?;
    Ok(())
}

/// `cms.version`, `cms.log` and `cms.json`.
fn install_pure(lua: &Lua, cms: &Table) -> mlua::Result<()> {
    cms.set("version", env!("CARGO_PKG_VERSION"))?;
    cms.set("log", lua.create_function(log)?)?;

    let json = lua.create_table()?;
    json.set(
        "encode",
        lua.create_function(|lua, (v, pretty): (Value, Option<bool>)| {
            // A table shared many times over is written out each time: the text can
            // be far bigger than the table, so it is held to the memory limit.
            let mut out = super::limits::Bounded::new(lua);
            let written = if pretty.unwrap_or(false) {
                serde_json::to_writer_pretty(&mut out, &v)
            } else {
                serde_json::to_writer(&mut out, &v)
            };
            if let Some(e) = out.overflowed() {
                return Err(e);
            }
            written.map_err(|e| mlua::Error::runtime(format!("cms.json.encode: {e}")))?;
            lua.create_string(&out.bytes)
        })?,
    )?;
    json.set(
        "decode",
        lua.create_function(|lua, text: mlua::String| {
            // The parsed value takes up to ~16 bytes of Rust memory per byte of text.
            super::limits::reserve(lua, text.as_bytes().len().saturating_mul(16))?;
            let v: serde_json::Value = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| mlua::Error::runtime(format!("cms.json.decode: invalid JSON: {e}")))?;
            convert::to_lua(lua, &v)
        })?,
    )?;
    cms.set("json", json)?;

    Ok(())
}

/// `cms.log(message)` at info, or `cms.log(level, message)`.
fn log(_: &Lua, args: MultiValue) -> mlua::Result<()> {
    let parts: Vec<String> = args
        .iter()
        .map(|v| match v {
            Value::String(s) => s.to_string_lossy(),
            other => format!("{other:?}"),
        })
        .collect();
    let levels = ["trace", "debug", "info", "warn", "error"];
    let (level, text) = match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() && levels.contains(&first.as_str()) => {
            (first.as_str(), rest.join(" "))
        }
        _ => ("info", parts.join(" ")),
    };
    match level {
        "trace" => tracing::trace!(target: "lua", "{text}"),
        "debug" => tracing::debug!(target: "lua", "{text}"),
        "warn" => tracing::warn!(target: "lua", "{text}"),
        "error" => tracing::error!(target: "lua", "{text}"),
        _ => tracing::info!(target: "lua", "{text}"),
    }
    Ok(())
}
