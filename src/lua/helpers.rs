//! `cms.path` and `cms.shell`: the helpers safety rules are written with, available
//! to scripts, the REPL, policies and plugins alike.
//!
//! - `cms.path.resolve(path, cwd)`: the absolute path, `..` and symlinks resolved;
//! - `cms.path.relative(path, cwd)`: the same relative to `cwd` (nil outside it),
//!   and the absolute path as a second value;
//! - `cms.path.exists(path)`, `cms.path.is_dir(path)`, `cms.path.read(path)` (the
//!   text, or nil and an error);
//! - `cms.shell.parse(command)`: the simple commands of a Bash line, each
//!   `{argv = {...}, assigns = {...}, redirects = {{op, target, writes}}}`; raises
//!   "the command is too complex to check" for a line nested too deep or too slow.

use crate::policy::{paths, shell};
use mlua::{Lua, Table};
use std::path::Path;

pub fn install(lua: &Lua, cms: &Table) -> mlua::Result<()> {
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
            crate::lua::limits::reserve(lua, line.len().saturating_mul(12))?;
            let out = crate::lua::convert::array(lua, lua.create_table()?);
            // A line too deep, long or slow to read raises: the policy then denies.
            let commands = shell::parse(&line).map_err(|e| mlua::Error::runtime(e.to_string()))?;
            for (i, c) in commands.into_iter().enumerate() {
                let t = lua.create_table()?;
                t.set(
                    "argv",
                    crate::lua::convert::array(lua, lua.create_sequence_from(c.argv)?),
                )?;
                t.set(
                    "assigns",
                    crate::lua::convert::array(lua, lua.create_sequence_from(c.assigns)?),
                )?;
                let redirects = crate::lua::convert::array(lua, lua.create_table()?);
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
