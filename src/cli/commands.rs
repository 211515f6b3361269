//! Running one CLI command: build the engine, call it, render, choose the exit code.

use super::args::{Cli, Command};
use super::out::{self};
use super::outcome::{CliError, Json, Outcome, Printed};
use super::{
    attach, completions, delegate, demo, host, logs, man, plugins, policy, render, repl, script,
    sessions, setup, top,
};
use crate::app::{exit, HostUse};
use crate::engine::{EngineConfig, Manager};
use std::io::IsTerminal;

/// Run the parsed command line; returns the process exit code. A reader that
/// closed stdout early ends the command quietly (see [`out`]).
pub fn run(cli: Cli) -> i32 {
    out::exit_code(run_command(cli))
}

/// The engine's configuration from the global flags, with logging set up: what
/// every command, `cms mcp` included, starts from.
pub fn config(cli: &Cli) -> EngineConfig {
    super::style::init(cli.color);
    crate::app::init_tracing(cli.verbose, super::style::stderr());
    crate::app::engine_config(&crate::app::Globals {
        claude_bin: cli.claude_bin(),
        home: cli.home.clone(),
        wait_when_busy: !cli.no_wait,
        // Recorded with the sessions this process holds live, so others can say who holds them.
        host_kind: match &cli.command {
            Command::Script(_) => "script",
            Command::Repl(_) => "repl",
            Command::Mcp => "mcp",
            Command::Serve(_) | Command::Host(_) => "host",
            Command::Demo(_) => "demo",
            _ => "cli",
        },
    })
}

/// Whether `cli`'s command reaches its sessions through the session host: not with
/// `--no-host`/`CMS_NO_HOST`; a command that runs a turn starts the host when none
/// runs; one that only ends or pauses a session uses it when it runs.
pub fn host_use(cli: &Cli) -> HostUse {
    if cli.no_host() {
        return HostUse::Never;
    }
    match &cli.command {
        Command::Spawn(_)
        | Command::Send(_)
        | Command::Resume(_)
        | Command::Fork(_)
        | Command::Batch(_)
        | Command::Delegate(_)
        | Command::Continue(_)
        | Command::Script(_)
        | Command::Repl(_)
        | Command::Attach(_)
        | Command::Top => HostUse::Start,
        // Claude Code starts `cms mcp` to list its tools: the host starts when a tool
        // first needs it.
        Command::Mcp => HostUse::Lazy,
        // Reading a session's log never starts a host (`-f` waits for one).
        Command::Logs(_) => HostUse::IfRunning,
        // A call can wait only in a live session: in the host, if one runs.
        Command::Approvals | Command::Approve(_) | Command::Deny(_) => HostUse::IfRunning,
        _ => HostUse::IfRunning,
    }
}

fn run_command(mut cli: Cli) -> i32 {
    let cfg = config(&cli);
    let json = cli.json;
    let want = host_use(&cli);
    if let Err(e) = cli.command.resolve() {
        return usage_error(json, e);
    }
    let result = match cli.command {
        // The tour is for people: there is nothing for a program to read.
        Command::Demo(_) if json => {
            return usage_error(json, "demo has no JSON output (it is a tour for people)")
        }
        Command::Demo(a) => return demo::run(&a, &cfg),
        Command::Script(a) => return script::run(cfg, a, json, want),
        Command::Repl(_) if json => {
            return usage_error(json, "repl has no JSON output (it is a prompt for people)")
        }
        Command::Repl(a) => return repl::run(cfg, a, want),
        cmd @ (Command::Delegate(_)
        | Command::Continue(_)
        | Command::Finish(_)
        | Command::Abort(_)) => return delegate::run(cfg, cmd, json, want),
        Command::Policy(cmd) => return policy::run(cmd, json),
        Command::Hosts => return super::hosts::run(&cfg.home, json),
        // `main` sends `cms mcp` to the MCP frontend; the CLI never serves it.
        Command::Mcp => {
            exit::fail("`cms mcp` is served by the entry point, not the CLI frontend");
            return exit::USAGE;
        }
        Command::Serve(a) => return host::serve(cfg, &a),
        Command::Host(cmd) => return host::run(cfg, cmd, json),
        Command::Logs(a) => return logs::run(cfg, a, json, want == HostUse::Never),
        Command::Attach(_) if json => {
            return usage_error(
                json,
                "attach has no JSON output (it is a prompt for people); `cms logs -f --json` \
                 streams a session's events, `cms send --json` sends one message",
            )
        }
        Command::Attach(a) => return attach::run(cfg, a, want),
        Command::Top if json => {
            return usage_error(
                json,
                "top draws a screen; `cms list --json` is for programs",
            )
        }
        Command::Top => return top::run(cfg, want),
        Command::Setup(a) => return setup::run(a, &cfg, json),
        Command::Plugins(cmd) => return plugins::run(cmd, cfg, json),
        Command::Trust(a) => return super::trust::run_trust(&a, &cfg.home, json),
        Command::Untrust(a) => return super::trust::run_untrust(&a, &cfg.home, json),
        Command::Completions(_) if json => {
            return usage_error(json, "completions prints a shell script, not JSON")
        }
        Command::Completions(a) => return completions::run(&a),
        Command::Man(a) => return man::run(&a, json),
        Command::CompleteNames => return completions::run_names(cfg),
        Command::LuaTypes => {
            let text = crate::lua::stubs::cms_meta();
            if json {
                // The file, for a program that writes it somewhere.
                let v = serde_json::json!({ "file": "cms.lua", "text": text });
                let _ = out::line(format_args!("{v}"));
            } else {
                let _ = out::text(&text);
            }
            return 0;
        }
        // Reading commands need no async runtime: they start fast.
        Command::List(a) if a.watch.is_some() && json => {
            return usage_error(json, "list --watch redraws a screen; it has no JSON output")
        }
        Command::List(a) if a.watch.is_some() => {
            return match Manager::new(cfg) {
                Ok(m) => match sessions::watch_list(m.as_ref(), &a) {
                    Ok(()) => 0,
                    Err(e) => fail_code(json, &e),
                },
                Err(e) => fail_code(json, &CliError::from(e)),
            }
        }
        cmd
        @ (Command::List(_) | Command::Status(_) | Command::Output(_) | Command::History(_)) => {
            sessions::read_existing(cfg, &cmd, json)
        }
        cmd => sessions::run_async(cfg, cmd, json, want),
    };
    match result {
        Ok(Outcome::Done(p)) => {
            print_out(&p, json);
            0
        }
        Ok(Outcome::Failed(p, msg)) => {
            print_out(&p, json);
            exit::fail(msg)
        }
        Err(e) => fail_code(json, &e),
    }
}

/// Say why the command failed and pick its code: 2 for a usage error, 130 when
/// interrupted, else 1.
fn fail_code(json: bool, e: &CliError) -> i32 {
    let code = out::fail(json, e);
    match e {
        CliError::Interrupted(_) => exit::INTERRUPTED,
        CliError::Usage(_) => exit::USAGE,
        _ => code,
    }
}

fn usage_error(json: bool, message: impl Into<String>) -> i32 {
    fail_code(json, &CliError::Usage(message.into()))
}

fn print_out(p: &Printed, json: bool) {
    if !json && p.text.is_empty() {
        return;
    }
    let _ = out::with(|out| {
        if !json {
            return writeln!(out, "{}", p.text);
        }
        match &p.json {
            Json::Value(v) => serde_json::to_writer_pretty(&mut *out, v),
            Json::Records(recs) => {
                // Long lists go to programs: compact unless a person is looking.
                let views: Vec<_> = recs.iter().map(render::record_view).collect();
                if std::io::stdout().is_terminal() {
                    serde_json::to_writer_pretty(&mut *out, &views)
                } else {
                    serde_json::to_writer(&mut *out, &views)
                }
            }
        }
        .map_err(std::io::Error::from)?;
        writeln!(out)
    });
}
