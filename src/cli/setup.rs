//! `cms setup`: register `cms mcp` with Claude Code, where Claude Code reads MCP
//! servers today: `~/.claude.json` (`mcpServers`, user scope, `--global`) and
//! `./.mcp.json` (project scope, `--local`). The files are edited as text: the cms
//! entry goes in (or out) and every other byte stays as it was; a file is backed
//! up (`*.cms.bak`) before it changes, and writes are atomic. `--guide` puts the
//! strategy guide into CLAUDE.md between markers, so running it again replaces the
//! block instead of adding a second one, and `--uninstall` takes out exactly that.
//!
//! Nothing personal goes in unasked: `CMS_HOME` and `CMS_CLAUDE_BIN` of the shell
//! are copied only with `--env` or a yes on a terminal, and `./.mcp.json` (a file
//! teams commit) names `cms` on PATH unless `--absolute` asks for this binary.
//!
//! `--http [ADDR]` registers the host's MCP over streamable HTTP instead (`cms serve
//! --http`), as `claude mcp add --transport http cms URL --header "Authorization:
//! Bearer TOKEN"` writes it: `{"type": "http", "url", "headers"}`. The token goes
//! only into `~/.claude.json` (private to you); `./.mcp.json` gets
//! `Bearer ${CMS_HTTP_TOKEN}`, which Claude Code fills in from its environment.

use super::args::SetupArgs;
use super::out::{self, errln, outln};
use crate::engine::EngineConfig;
use serde_json::{json, Map, Value};
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

/// The server's name in Claude Code: its tools are `mcp__cms__<tool>`.
const SERVER: &str = "cms";
const START: &str = "<!-- cms:start -->";
const END: &str = "<!-- cms:end -->";

/// The guide block for CLAUDE.md (the long form is STRATEGY.md).
const GUIDE: &str = include_str!("../../scripts/guide.md");

pub fn run(a: SetupArgs, cfg: &EngineConfig, json_out: bool) -> i32 {
    match setup(a, cfg, json_out) {
        Ok(actions) => {
            if json_out {
                let _ = outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "actions": actions }))
                        .unwrap_or_default()
                );
            } else {
                for (file, action) in &actions {
                    let _ = outln!("{action:<10} {file}");
                }
                let _ = outln!("Restart Claude Code to pick this up (it rewrites ~/.claude.json itself, so close it while running setup).");
                if actions
                    .iter()
                    .any(|(f, what)| f.ends_with(".mcp.json") && what == "added")
                {
                    let _ = outln!("./.mcp.json is project scope: Claude Code asks each user to approve `cms` once, when `claude` starts here (`claude mcp list` shows \"Pending approval\" until then; `/mcp` approves it).");
                }
            }
            0
        }
        Err(e) => out::fail(json_out, e),
    }
}

type Actions = Vec<(String, String)>;

fn home() -> Result<PathBuf, String> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| "HOME is not set: cannot find ~/.claude.json".to_string())
}

fn setup(mut a: SetupArgs, cfg: &EngineConfig, json: bool) -> Result<Actions, String> {
    let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
    let home = home()?;
    let user_file = home.join(".claude.json");
    let project_file = cwd.join(".mcp.json");
    let user_guide = home.join(".claude/CLAUDE.md");
    let project_guide = cwd.join("CLAUDE.md");
    let mut actions = Vec::new();
    if a.uninstall {
        for file in [&user_file, &project_file] {
            actions.push((file.display().to_string(), edit_servers(file, None)?));
        }
        for file in [&user_guide, &project_guide] {
            actions.push((file.display().to_string(), edit_guide(file, false)?));
        }
        return Ok(actions);
    }
    if !a.global && !a.local {
        ask(&mut a, json)?;
    }
    let http = match a.http.as_deref() {
        Some(addr) => Some(http_url(addr, cfg)?),
        None => None,
    };
    let env = if http.is_some() {
        if a.env {
            errln!("cms: --env does nothing with --http: the host runs with its own environment");
        }
        Map::new()
    } else {
        shell_env(&a, cfg, json)?
    };
    if a.global {
        let entry = match &http {
            Some(url) => {
                let token = crate::host::token::get_or_make(&cfg.home)?;
                http_entry(url, &format!("Bearer {token}"))
            }
            None => entry(Command::Absolute, &env)?,
        };
        actions.push((
            user_file.display().to_string(),
            edit_servers(&user_file, Some(&entry))?,
        ));
        if a.guide {
            actions.push((
                user_guide.display().to_string(),
                edit_guide(&user_guide, true)?,
            ));
        }
    }
    if a.local {
        if let Some(url) = &http {
            // A file teams commit never holds the token: Claude Code expands the
            // variable from the environment it runs in.
            let entry = http_entry(url, &format!("Bearer ${{{TOKEN_VAR}}}"));
            actions.push((
                project_file.display().to_string(),
                edit_servers(&project_file, Some(&entry))?,
            ));
            errln!(
                "cms: ./.mcp.json sends `Authorization: Bearer ${{{TOKEN_VAR}}}`, never the token itself \
                 (the file is shared): set {TOKEN_VAR} where Claude Code starts, e.g. \
                 `export {TOKEN_VAR}=$(cms serve --print-token)` (without it Claude Code reports \
                 \"Missing environment variables: {TOKEN_VAR}\" and the host answers 401). \
                 `cms setup --global --http` writes the token into ~/.claude.json instead (yours alone)."
            );
            if a.guide {
                actions.push((
                    project_guide.display().to_string(),
                    edit_guide(&project_guide, true)?,
                ));
            }
            return Ok(actions);
        }
        let command = if a.absolute {
            Command::Absolute
        } else {
            if crate::engine::process::resolve_binary(Path::new("cms")).is_err() {
                errln!(
                    "cms: `cms` is not on PATH here; ./.mcp.json names `cms`, so Claude Code finds it once \
                     it is (`cargo install --path .`, or a link in a PATH folder). \
                     `cms setup --local --absolute` writes this binary's path instead (personal to you)."
                );
            }
            Command::OnPath
        };
        let entry = entry(command, &env)?;
        actions.push((
            project_file.display().to_string(),
            edit_servers(&project_file, Some(&entry))?,
        ));
        if a.guide {
            actions.push((
                project_guide.display().to_string(),
                edit_guide(&project_guide, true)?,
            ));
        }
    }
    Ok(actions)
}

/// Whether setup may ask: a person at a terminal (stdin and stderr), and no `--json`
/// (whose stdout a program reads).
fn may_ask(json: bool) -> bool {
    !json && std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Ask `question` on the terminal (stderr: stdout carries only the result); the
/// answer, trimmed and lowercase.
fn read_answer(question: &str) -> Result<String, String> {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{question}").and_then(|_| err.flush());
    drop(err);
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line.trim().to_lowercase())
}

/// The interactive questions, when no scope flag was given.
fn ask(a: &mut SetupArgs, json: bool) -> Result<(), String> {
    if !may_ask(json) {
        return Err(
            "choose where to install: --global (all projects) or --local (this project); \
                    without them setup asks, which needs a terminal (and no --json)"
                .into(),
        );
    }
    let read = read_answer;
    let scope = read("Install cms for all projects (g) or only this one (l)? [g] ")?;
    match scope.as_str() {
        "" | "g" | "global" => a.global = true,
        "l" | "local" => a.local = true,
        other => return Err(format!("'{other}' is neither g nor l")),
    }
    let guide = read("Add the delegation guide to CLAUDE.md? [y/N] ")?;
    a.guide = matches!(guide.as_str(), "y" | "yes");
    Ok(())
}

/// How the entry names the cms executable.
enum Command {
    /// This very binary, by absolute path (GUI-started Claude Code may not share the
    /// shell's PATH): for `~/.claude.json`, which is yours alone.
    Absolute,
    /// `cms`, found on each user's PATH: for `./.mcp.json`, which a team shares.
    OnPath,
}

/// `CMS_HOME` and `CMS_CLAUDE_BIN` as set in this shell, to be copied into the
/// entry only when the user says so: `--env`, or yes on a terminal. Without a
/// terminal they are left out, saying so.
fn shell_env(a: &SetupArgs, cfg: &EngineConfig, json: bool) -> Result<Map<String, Value>, String> {
    let mut set = Map::new();
    if std::env::var_os("CMS_HOME").is_some() {
        set.insert("CMS_HOME".into(), json!(cfg.home.display().to_string()));
    }
    if std::env::var_os("CMS_CLAUDE_BIN").is_some() {
        set.insert(
            "CMS_CLAUDE_BIN".into(),
            json!(cfg.claude_bin.display().to_string()),
        );
    }
    if set.is_empty() {
        return Ok(set);
    }
    let listed = set
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ");
    if a.env {
        errln!("cms: copying {listed} from this shell into the entry (--env)");
        return Ok(set);
    }
    if may_ask(json) {
        let answer = read_answer(&format!(
            "This shell sets {listed}. Copy it into Claude Code's entry for cms, so `cms mcp` uses it too? [y/N] "
        ))?;
        if matches!(answer.as_str(), "y" | "yes") {
            return Ok(set);
        }
        errln!("cms: not copied; Claude Code's `cms mcp` uses the defaults");
        return Ok(Map::new());
    }
    errln!(
        "cms: not copied into the entry: {listed} (set in this shell); Claude Code's `cms mcp` \
         uses the defaults. `cms setup --env` copies them."
    );
    Ok(Map::new())
}

/// How Claude Code starts the server.
fn entry(command: Command, env: &Map<String, Value>) -> Result<Value, String> {
    let command = match command {
        Command::Absolute => std::env::current_exe()
            .map_err(|e| format!("cannot find the cms executable: {e}"))?
            .display()
            .to_string(),
        Command::OnPath => "cms".to_string(),
    };
    let mut entry = json!({ "type": "stdio", "command": command, "args": ["mcp"] });
    if !env.is_empty() {
        entry["env"] = Value::Object(env.clone());
    }
    Ok(entry)
}

/// The variable `./.mcp.json` names in place of the token (`--local --http`).
const TOKEN_VAR: &str = "CMS_HTTP_TOKEN";

/// Where `cms serve --http` listens when given no address: the entry names it when
/// no running host says otherwise.
use super::args::DEFAULT_HTTP;

/// The entry of a server Claude Code reaches over HTTP, in the shape `claude mcp add
/// --transport http NAME URL --header "Authorization: ..."` writes (2.1.197 and
/// 2.1.332 alike).
fn http_entry(url: &str, authorization: &str) -> Value {
    json!({ "type": "http", "url": url, "headers": { "Authorization": authorization } })
}

/// The URL of the host's MCP for `--http [ADDR]`: ADDR when given (`HOST:PORT` or a
/// URL), else the running host's address, else [`DEFAULT_HTTP`]; says on stderr
/// when no host serves there now.
fn http_url(addr: &str, cfg: &EngineConfig) -> Result<String, String> {
    let serving = running_http(cfg);
    let addr = addr.trim();
    if !addr.is_empty() {
        let url = url_of(addr)?;
        if serving
            .as_deref()
            .map(url_of)
            .and_then(Result::ok)
            .as_deref()
            != Some(url.as_str())
        {
            errln!(
                "cms: no host serves MCP at {url} now; Claude Code reaches it once one does: \
                 `cms serve --http {addr}`"
            );
        }
        return Ok(url);
    }
    match serving {
        Some(at) => url_of(&at),
        None => {
            errln!(
                "cms: no running host serves HTTP, so the entry names http://{DEFAULT_HTTP}/mcp: \
                 start the host with `cms serve --http {DEFAULT_HTTP}` (or run setup again with \
                 --http ADDR, or while the host runs, to register its address)"
            );
            url_of(DEFAULT_HTTP)
        }
    }
}

/// The HTTP address of the host of this home, when one runs and serves HTTP.
fn running_http(cfg: &EngineConfig) -> Option<String> {
    let rt = crate::app::runtime::init_runtime().ok()?;
    match rt.block_on(crate::host::probe(cfg)) {
        Ok(info) => info.and_then(|i| i.http),
        Err(e) => {
            tracing::debug!("no host to ask for its HTTP address: {e}");
            None
        }
    }
}

/// `HOST:PORT` (or an `http://` URL) as the URL of its `/mcp`. An address of every
/// interface (`0.0.0.0`, `[::]`) is reached on loopback.
fn url_of(addr: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!("--http {addr}: {why} (write HOST:PORT, e.g. {DEFAULT_HTTP}, or the URL of /mcp)")
    };
    if let Some(rest) = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
    {
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || rest.contains(char::is_whitespace) {
            return Err(bad("not a URL"));
        }
        return Ok(
            if rest.len() == authority.len() || rest == format!("{authority}/") {
                format!("{}/mcp", addr.trim_end_matches('/'))
            } else {
                addr.to_string()
            },
        );
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
    if port == 0 {
        return Err(bad(
            "port 0 picks a free port when the host starts; give the one it picked \
             (`cms host status`), or leave ADDR out while the host runs",
        ));
    }
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("no host name"));
    }
    let host = match addr.parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) if a.ip().is_unspecified() => "127.0.0.1".to_string(),
        Ok(std::net::SocketAddr::V6(a)) if a.ip().is_unspecified() => "[::1]".to_string(),
        _ => host.to_string(),
    };
    Ok(format!("http://{host}:{port}/mcp"))
}

/// The variables setup copies from the shell into the entry (and only those).
const MANAGED_ENV: &[&str] = &["CMS_HOME", "CMS_CLAUDE_BIN"];

/// The text of a file holding only the cms entry, as a fresh install writes it.
fn fresh_text(entry: &Value) -> String {
    let doc = json!({ "mcpServers": { SERVER: entry } });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    )
}

/// Add (Some) or remove (None) the cms entry of `mcpServers` in a JSON file, keeping
/// everything else byte for byte. An `mcpServers` left empty goes too, and a file
/// left holding nothing (`{}`) is removed: uninstalling undoes what installing did.
/// Returns what happened.
fn edit_servers(file: &Path, entry: Option<&Value>) -> Result<String, String> {
    let existing = match std::fs::read_to_string(file) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let mut doc: Value = match &existing {
        Some(text) if !text.trim().is_empty() => serde_json::from_str(text).map_err(|e| {
            format!("{} is not valid JSON ({e}); nothing was changed — fix or move it, then run setup again", file.display())
        })?,
        _ => json!({}),
    };
    // Variables of the entry that setup does not manage (added by hand: RUST_LOG, ...)
    // stay; CMS_HOME and CMS_CLAUDE_BIN follow this run (--env, or the answer).
    let kept: Map<String, Value> = doc
        .pointer(&format!("/mcpServers/{SERVER}/env"))
        .and_then(Value::as_object)
        .map(|env| {
            env.iter()
                .filter(|(k, _)| !MANAGED_ENV.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    let carried: Option<Value> = entry.map(|e| {
        let mut e = e.clone();
        // Only a server Claude Code starts has an environment (not one over HTTP).
        if !kept.is_empty() && e.get("command").is_some() {
            let mut env = kept.clone();
            if let Some(new) = e.get("env").and_then(Value::as_object) {
                env.extend(new.clone());
            }
            e["env"] = Value::Object(env);
        }
        e
    });
    let entry = carried.as_ref();
    let Some(root) = doc.as_object_mut() else {
        return Err(format!(
            "{} does not hold a JSON object; nothing was changed",
            file.display()
        ));
    };
    // On uninstall: the text a fresh install would have written with the entry
    // removed; only a file that is exactly that was made by setup and may go.
    let mut fresh_install: Option<String> = None;
    let action = match entry {
        Some(entry) => {
            let servers = root.entry("mcpServers").or_insert_with(|| json!({}));
            let Some(servers) = servers.as_object_mut() else {
                return Err(format!(
                    "\"mcpServers\" in {} is not an object; nothing was changed",
                    file.display()
                ));
            };
            match servers.get(SERVER) {
                Some(old) if old == entry => return Ok("unchanged".into()),
                Some(_) => {
                    servers.insert(SERVER.into(), entry.clone());
                    "updated"
                }
                None => {
                    servers.insert(SERVER.into(), entry.clone());
                    "added"
                }
            }
        }
        None => {
            let servers = root.get_mut("mcpServers").and_then(Value::as_object_mut);
            let Some(servers) = servers else {
                return Ok("absent".into());
            };
            let Some(removed) = servers.remove(SERVER) else {
                return Ok("absent".into());
            };
            if servers.is_empty() {
                root.remove("mcpServers");
            }
            fresh_install = Some(fresh_text(&removed));
            "removed"
        }
    };
    let old = existing.as_deref().unwrap_or_default();
    // The text with only the entry changed; the whole file rewritten only if that
    // edit does not read back as the intended document (it always should).
    let edited = match entry {
        Some(entry) => span::install(old, entry),
        None => span::uninstall(old),
    }
    .filter(|t| serde_json::from_str::<Value>(t).ok().as_ref() == Some(&doc));
    let made_by_setup = fresh_install.is_some_and(|fresh| existing.as_deref() == Some(&fresh));
    if entry.is_none() && made_by_setup && doc.as_object().is_some_and(|m| m.is_empty()) {
        // Nothing but the cms entry was in it: the file goes (a symlink's target
        // keeps an empty object, so the link still points somewhere).
        let is_link = std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            backup(file, file)?;
            std::fs::remove_file(file)
                .map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
            return Ok("removed".into());
        }
    }
    let text = match edited {
        Some(t) => t,
        None => serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n",
    };
    write_file(file, existing.is_some(), &text)?;
    Ok(action.into())
}

/// Where the parts of a JSON text are, enough to add, replace or remove one
/// member of an object and leave every other byte alone.
mod span {
    use serde_json::{json, Value};

    /// `"key": value` in an object: byte offsets into the text.
    pub struct Member {
        pub key: String,
        pub key_start: usize,
        pub value_start: usize,
        pub value_end: usize,
    }

    /// An object: its braces and its members in order.
    pub struct Object {
        pub open: usize,
        pub close: usize,
        pub members: Vec<Member>,
    }

    impl Object {
        fn find(&self, key: &str) -> Option<usize> {
            // The last of duplicate keys is the one that counts (as serde_json reads it).
            self.members.iter().rposition(|m| m.key == key)
        }
    }

    fn ws(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    }

    /// `i` at a `"`: the offset after the closing quote.
    fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    }

    /// `i` at the start of a value: the offset after it.
    fn value_end(b: &[u8], i: usize) -> Option<usize> {
        match *b.get(i)? {
            b'"' => string_end(b, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                while j < b.len() {
                    match b[j] {
                        b'"' => {
                            j = string_end(b, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            _ => {
                let mut j = i;
                while j < b.len()
                    && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                {
                    j += 1;
                }
                (j > i).then_some(j)
            }
        }
    }

    /// The object whose `{` is at `open`.
    pub fn object(text: &str, open: usize) -> Option<Object> {
        let b = text.as_bytes();
        if b.get(open) != Some(&b'{') {
            return None;
        }
        let mut members = Vec::new();
        let mut i = ws(b, open + 1);
        if b.get(i) == Some(&b'}') {
            return Some(Object {
                open,
                close: i,
                members,
            });
        }
        loop {
            let key_start = i;
            let key_end = string_end(b, i).filter(|_| b.get(i) == Some(&b'"'))?;
            let key: String = serde_json::from_str(&text[key_start..key_end]).ok()?;
            i = ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            let value_start = ws(b, i + 1);
            let value_end = value_end(b, value_start)?;
            members.push(Member {
                key,
                key_start,
                value_start,
                value_end,
            });
            i = ws(b, value_end);
            match b.get(i)? {
                b',' => i = ws(b, i + 1),
                b'}' => {
                    return Some(Object {
                        open,
                        close: i,
                        members,
                    })
                }
                _ => return None,
            }
        }
    }

    /// The top-level object, if the text is one (and nothing but whitespace follows).
    fn root(text: &str) -> Option<Object> {
        let b = text.as_bytes();
        let o = object(text, ws(b, 0))?;
        (ws(b, o.close + 1) == b.len()).then_some(o)
    }

    /// The leading whitespace of the line holding offset `at`.
    fn indent_at(text: &str, at: usize) -> &str {
        let line = text[..at].rfind('\n').map_or(0, |n| n + 1);
        let rest = &text[line..];
        &rest[..rest.len() - rest.trim_start_matches([' ', '\t']).len()]
    }

    /// `value` as text at indentation `indent` (one line when `indent` is None).
    fn render(value: &Value, indent: Option<&str>) -> String {
        match indent {
            None => value.to_string(),
            Some(ind) => serde_json::to_string_pretty(value)
                .unwrap_or_default()
                .replace('\n', &format!("\n{ind}")),
        }
    }

    /// `"key": value` added as the last member of `o`, laid out like its others.
    fn add_member(text: &str, o: &Object, key: &str, value: &Value) -> String {
        let key = Value::from(key).to_string();
        match o.members.last() {
            None => {
                let ind = indent_at(text, o.open);
                let inner = format!("{ind}  ");
                format!(
                    "{}{{\n{inner}{key}: {}\n{ind}}}{}",
                    &text[..o.open],
                    render(value, Some(&inner)),
                    &text[o.close + 1..]
                )
            }
            Some(last) => {
                // What separates the last member from the `{` or `,` before it.
                let before = match o.members.len() {
                    1 => o.open + 1,
                    n => {
                        let prev = &o.members[n - 2];
                        prev.value_end
                            + text[prev.value_end..last.key_start].find(',').unwrap_or(0)
                            + 1
                    }
                };
                let sep = &text[before..last.key_start];
                let indent = sep.rfind('\n').map(|n| &sep[n + 1..]);
                format!(
                    "{},{sep}{key}: {}{}",
                    &text[..last.value_end],
                    render(value, indent),
                    &text[last.value_end..]
                )
            }
        }
    }

    /// Member `idx` of `o` taken out with its separator (so adding it last and
    /// taking it out again gives the text back as it was).
    fn remove_member(text: &str, o: &Object, idx: usize) -> String {
        let n = o.members.len();
        let (from, to) = if n == 1 {
            (o.open + 1, o.close)
        } else if idx + 1 < n {
            (o.members[idx].key_start, o.members[idx + 1].key_start)
        } else {
            (o.members[idx - 1].value_end, o.members[idx].value_end)
        };
        format!("{}{}", &text[..from], &text[to..])
    }

    /// The text with `mcpServers.cms` set to `entry`.
    pub fn install(text: &str, entry: &Value) -> Option<String> {
        if text.trim().is_empty() {
            return None;
        }
        let r = root(text)?;
        let Some(i) = r.find("mcpServers") else {
            let servers = json!({ super::SERVER: entry });
            return Some(add_member(text, &r, "mcpServers", &servers));
        };
        let servers = object(text, r.members[i].value_start)?;
        Some(match servers.find(super::SERVER) {
            Some(j) => {
                let m = &servers.members[j];
                let multi_line = text[servers.open..servers.close].contains('\n');
                let ind = indent_at(text, m.key_start);
                format!(
                    "{}{}{}",
                    &text[..m.value_start],
                    render(entry, multi_line.then_some(ind)),
                    &text[m.value_end..]
                )
            }
            None => add_member(text, &servers, super::SERVER, entry),
        })
    }

    /// The text without `mcpServers.cms` (and without `mcpServers` if that was
    /// all it held).
    pub fn uninstall(text: &str) -> Option<String> {
        let r = root(text)?;
        let i = r.find("mcpServers")?;
        let servers = object(text, r.members[i].value_start)?;
        let j = servers.find(super::SERVER)?;
        if servers.members.len() == 1 {
            return Some(remove_member(text, &r, i));
        }
        Some(remove_member(text, &servers, j))
    }
}

/// Put the guide block into (or take it out of) a CLAUDE.md; text outside the
/// markers is never touched.
fn edit_guide(file: &Path, install: bool) -> Result<String, String> {
    let existing = match std::fs::read_to_string(file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let text = existing.clone().unwrap_or_default();
    let block = format!("{START}\n{}\n{END}", GUIDE.trim_end());
    let found = text
        .find(START)
        .and_then(|s| text[s..].find(END).map(|e| (s, s + e + END.len())));
    let (new, action) = match (found, install) {
        (Some((s, e)), true) => {
            if text[s..e] == block {
                return Ok("unchanged".into());
            }
            (format!("{}{block}{}", &text[..s], &text[e..]), "updated")
        }
        (None, true) => {
            // One blank line before the block; uninstalling takes out exactly it.
            let sep = if text.is_empty() {
                ""
            } else if text.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            (format!("{text}{sep}{block}\n"), "added")
        }
        (Some((s, e)), false) => {
            let before = text[..s].strip_suffix('\n').unwrap_or(&text[..s]);
            let after = text[e..].strip_prefix('\n').unwrap_or(&text[e..]);
            (
                format!(
                    "{before}{}{after}",
                    if before.is_empty() || after.is_empty() {
                        ""
                    } else {
                        "\n"
                    }
                ),
                "removed",
            )
        }
        (None, false) => return Ok("absent".into()),
    };
    let is_link = std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_symlink());
    if !install && new.is_empty() && !is_link {
        // The guide was all there was: the file goes, as it came.
        backup(file, file)?;
        std::fs::remove_file(file).map_err(|e| format!("cannot remove {}: {e}", file.display()))?;
        return Ok(action.into());
    }
    write_file(file, existing.is_some(), &new)?;
    Ok(action.into())
}

/// The file a path names, following symlinks (also a dangling one: the file it
/// would create). Writing there keeps a dotfiles link a link.
fn through_links(file: &Path) -> PathBuf {
    let mut path = file.to_path_buf();
    for _ in 0..40 {
        let is_link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            break;
        }
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match path.parent() {
                    Some(dir) => dir.join(target),
                    None => target,
                }
            }
            Err(_) => break,
        }
    }
    path
}

/// Copy `target` (what `file` names) to `file.cms.bak` before it changes.
fn backup(file: &Path, target: &Path) -> Result<(), String> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let backup = file.with_file_name(format!("{name}.cms.bak"));
    std::fs::copy(target, &backup).map(|_| ()).map_err(|e| {
        format!(
            "cannot back up {} to {}: {e}",
            file.display(),
            backup.display()
        )
    })
}

/// Take group and other permissions off `file` (it holds a secret).
fn close_to_others(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(file) {
        let mode = meta.permissions().mode() & 0o7777 & !0o077;
        let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode));
    }
}

/// Back the file up (when it exists), then replace it atomically, keeping its
/// permissions; a new file is 0600. A symlink is written through: its target
/// gets the new text and the link stays. The text is never readable by others
/// on the way: the temporary file is created 0600.
fn write_file(file: &Path, exists: bool, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let target = through_links(file);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    // A bearer token written out (not a `${VAR}` to expand) keeps the file and its
    // backup closed to others, whatever mode the file had.
    let secret = text
        .match_indices("Bearer ")
        .any(|(i, m)| !text[i + m.len()..].starts_with('$'));
    if exists {
        backup(file, &target)?;
        if secret {
            let bak = file.with_file_name(format!("{}.cms.bak", name(file)));
            close_to_others(&bak);
        }
    }
    let tmp = target.with_file_name(format!(".{}.cms-{}.tmp", name(&target), std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            f.sync_all()
        });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("cannot write {}: {e}", tmp.display()));
    }
    if exists {
        if let Ok(meta) = std::fs::metadata(&target) {
            let mut mode = meta.permissions().mode() & 0o7777;
            if secret {
                mode &= !0o077;
            }
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode));
        }
    }
    std::fs::rename(&tmp, &target).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot replace {}: {e}", target.display())
    })
}

#[cfg(test)]
mod tests {
    use super::span;
    use serde_json::{json, Value};

    /// Installing then uninstalling gives the text back byte for byte, and the
    /// installed text reads as the document with the entry added.
    #[test]
    fn install_then_uninstall_is_the_identity() {
        let entry = json!({ "type": "stdio", "command": "cms", "args": ["mcp"] });
        for text in [
            "{}",
            "{ }\n",
            "{\"a\": 1}",
            "{\n  \"a\": \"}{\\\"\",\n  \"b\": [1, {\"c\": null}]\n}\n",
            "{\n\t\"mcpServers\": {\n\t\t\"x\": {\"command\": \"y\"}\n\t}\n}",
            "{\"mcpServers\":{\"x\":{}},\"k\\u0041\":true}",
            "  {\"n\": -1.5e3 , \"mcpServers\" : {\"x\" : 1}}  \n",
        ] {
            let installed = span::install(text, &entry).unwrap_or_else(|| panic!("{text}"));
            let mut want: Value = serde_json::from_str(text).unwrap();
            want.as_object_mut()
                .unwrap()
                .entry("mcpServers")
                .or_insert_with(|| json!({}))["cms"] = entry.clone();
            assert_eq!(
                serde_json::from_str::<Value>(&installed).unwrap(),
                want,
                "{installed}"
            );
            let removed = span::uninstall(&installed).unwrap();
            if text.trim() == "{}" || text.trim() == "{ }" {
                // An object with nothing but cms: its member goes, `{}` stays.
                assert_eq!(serde_json::from_str::<Value>(&removed).unwrap(), json!({}));
            } else {
                assert_eq!(removed, text);
            }
            // Replacing the entry keeps the rest as well.
            let other = json!({ "command": "/abs/cms", "args": ["mcp"] });
            let replaced = span::install(&installed, &other).unwrap();
            assert_eq!(span::uninstall(&replaced).unwrap(), removed);
        }
        // Not an object, or not JSON: no text edit (the caller refuses or rewrites).
        assert!(span::install("[1]", &entry).is_none());
        assert!(span::install("{\"a\": ", &entry).is_none());
        assert!(span::uninstall("{\"a\": 1}").is_none());
    }
}
