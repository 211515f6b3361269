//! `cms completions SHELL`: a completion script from the command line's own
//! definition (`Cli::command()`), so it follows every flag and subcommand. Where
//! the shell allows (bash, zsh, fish), the names of existing sessions complete
//! too: the script asks `cms __complete-names`, which prints them one a line.

use super::args::{Cli, CompletionsArgs};
use super::out;
use crate::engine::{EngineConfig, Manager};
use clap::builder::ValueHint;
use clap::{Arg, Command, CommandFactory};
use clap_complete::Shell;

/// The hidden subcommand the scripts call for session names.
pub const NAMES_COMMAND: &str = "__complete-names";

/// Subcommands whose `name` is a new session, not an existing one.
const NEW_NAME_COMMANDS: &[&str] = &["spawn", "delegate", "batch"];

pub fn run(args: &CompletionsArgs) -> i32 {
    let _ = out::text(&script(args.shell));
    0
}

/// `cms __complete-names`: every session's name, one a line. Quiet and empty
/// when there is no store yet or it cannot be read: completion must never fail.
pub fn run_names(cfg: EngineConfig) -> i32 {
    if !cfg.home.join("cms.db").is_file() {
        return 0;
    }
    let Ok(records) = Manager::new(cfg).and_then(|m| m.list()) else {
        return 0;
    };
    let names: String = records.iter().map(|r| format!("{}\n", r.name)).collect();
    let _ = out::text(&names);
    0
}

/// Where a session name goes in one subcommand.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NameSlots {
    /// The options whose value is an existing session (`--name`).
    pub options: Vec<String>,
    /// True when the first positional argument is a session name.
    pub positional: bool,
}

fn is_session_arg(arg: &Arg) -> bool {
    let id = arg.get_id().as_str();
    let named = matches!(id, "name" | "name_pos" | "session" | "session_name")
        || arg
            .get_value_names()
            .is_some_and(|v| v.iter().any(|n| n.as_str() == "SESSION"));
    named && !arg.is_hide_set()
}

/// The subcommands that take an existing session, and where its name goes. It
/// reads the definition, so a new subcommand or a positional name is found as is.
pub fn session_slots(cmd: &Command) -> Vec<(String, NameSlots)> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && !NEW_NAME_COMMANDS.contains(&s.get_name()))
        .filter_map(|s| {
            let mut slots = NameSlots::default();
            for arg in s.get_arguments().filter(|a| is_session_arg(a)) {
                if arg.is_positional() {
                    slots.positional |= arg.get_index() == Some(1) || arg.get_index().is_none();
                } else if let Some(long) = arg.get_long() {
                    slots.options.push(format!("--{long}"));
                }
            }
            (slots.positional || !slots.options.is_empty())
                .then(|| (s.get_name().to_string(), slots))
        })
        .collect()
}

/// The command as the scripts see it: session-name arguments marked with a hint
/// no other argument of cms uses (hostnames), which the zsh and fish scripts
/// then point at `cms __complete-names`.
fn marked_command() -> Command {
    let mut cmd = Cli::command();
    for (sub, _) in session_slots(&cmd) {
        cmd = cmd.mut_subcommand(&sub, |s| {
            let ids: Vec<_> = s
                .get_arguments()
                .filter(|a| is_session_arg(a))
                .map(|a| a.get_id().clone())
                .collect();
            ids.into_iter().fold(s, |s, id| {
                s.mut_arg(id, |a| a.value_hint(ValueHint::Hostname))
            })
        });
    }
    cmd
}

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut cmd = marked_command();
    let slots = session_slots(&cmd);
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "cms", &mut buf);
    let generated = without_names_command(shell, &String::from_utf8_lossy(&buf));
    match shell {
        Shell::Bash => format!("{generated}\n{}", bash_names(&cmd, &slots)),
        Shell::Zsh => zsh_names(&generated),
        Shell::Fish => fish_names(&generated, &slots),
        _ => generated,
    }
}

/// clap_complete offers hidden subcommands too: take `__complete-names` out of
/// the candidates (the branches that handle it once typed stay, harmless).
fn without_names_command(shell: Shell, generated: &str) -> String {
    let offered = |line: &str| {
        let t = line.trim_start();
        match shell {
            Shell::Zsh => t.starts_with(&format!("'{NAMES_COMMAND}:")),
            Shell::Fish => t.contains(&format!("-a \"{NAMES_COMMAND}\"")),
            Shell::PowerShell => t.contains(&format!("CompletionResult]::new('{NAMES_COMMAND}'")),
            Shell::Elvish => t.starts_with(&format!("cand {NAMES_COMMAND} ")),
            _ => false,
        }
    };
    let mut out = String::with_capacity(generated.len());
    for line in generated.lines().filter(|l| !offered(l)) {
        if shell == Shell::Bash && line.trim_start().starts_with("opts=") {
            out.push_str(&line.replace(&format!(" {NAMES_COMMAND}"), ""));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Bash: a wrapper around the generated `_cms` that answers session names
/// after `--name` and right after a subcommand that takes one by position.
fn bash_names(cmd: &Command, slots: &[(String, NameSlots)]) -> String {
    let value_globals: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set() && a.get_action().takes_values())
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let case_of = |pick: &dyn Fn(&NameSlots) -> bool| {
        let subs: Vec<&str> = slots
            .iter()
            .filter(|(_, s)| pick(s))
            .map(|(n, _)| n.as_str())
            .collect();
        if subs.is_empty() {
            "__none__".to_string()
        } else {
            subs.join("|")
        }
    };
    let options: Vec<String> = {
        let mut o: Vec<String> = slots.iter().flat_map(|(_, s)| s.options.clone()).collect();
        o.sort();
        o.dedup();
        o
    };
    let options_case = if options.is_empty() {
        "__none__".to_string()
    } else {
        options.join("|")
    };
    let globals_case = if value_globals.is_empty() {
        "__none__".to_string()
    } else {
        value_globals.join("|")
    };
    format!(
        r#"# Session names: `cms {names}` prints those in $CMS_HOME, one a line.
_cms_session_names() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="" sub="" i w
    local -a globals=()
    (( COMP_CWORD > 0 )) && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    for (( i = 1; i < COMP_CWORD; i++ )); do
        w="${{COMP_WORDS[i]}}"
        case "$w" in
            {globals_case}) globals+=("$w" "${{COMP_WORDS[i+1]}}"); (( i++ )) ;;
            -*) ;;
            *) sub="$w"; break ;;
        esac
    done
    local want=""
    case "$sub" in
        {by_option})
            case "$prev" in {options_case}) want=1 ;; esac ;;
    esac
    if [[ -z $want && $prev == "$sub" && $cur != -* ]]; then
        case "$sub" in {by_position}) want=1 ;; esac
    fi
    if [[ -n $want ]]; then
        # Only names: no fallback to files when none matches.
        compopt +o default +o bashdefault 2>/dev/null
        local IFS=$'\n'
        COMPREPLY=( $(compgen -W "$("${{COMP_WORDS[0]}}" "${{globals[@]}}" {names} 2>/dev/null)" -- "$cur") )
        return 0
    fi
    _cms "$@"
}}
if [[ "${{BASH_VERSINFO[0]}}" -eq 4 && "${{BASH_VERSINFO[1]}}" -ge 4 || "${{BASH_VERSINFO[0]}}" -gt 4 ]]; then
    complete -F _cms_session_names -o nosort -o bashdefault -o default cms
else
    complete -F _cms_session_names -o bashdefault -o default cms
fi
"#,
        names = NAMES_COMMAND,
        by_option = case_of(&|s| !s.options.is_empty()),
        by_position = case_of(&|s| s.positional),
    )
}

/// Zsh: the marked arguments complete with `_cms_sessions`.
fn zsh_names(generated: &str) -> String {
    let helper = format!(
        "\n_cms_sessions() {{\n    local -a names\n    names=(${{(f)\"$(cms {NAMES_COMMAND} 2>/dev/null)\"}})\n    compadd -a names\n}}\n"
    );
    let body = generated.replace(":_hosts'", ":_cms_sessions'");
    match body.split_once('\n') {
        Some((first, rest)) if first.starts_with("#compdef") => {
            format!("{first}\n{helper}{rest}")
        }
        _ => format!("{helper}{body}"),
    }
}

/// Fish: the marked options complete with the session names, and so does the
/// first argument of a subcommand that takes its session by position.
fn fish_names(generated: &str, slots: &[(String, NameSlots)]) -> String {
    let names = format!("(cms {NAMES_COMMAND} 2>/dev/null)");
    let mut body = generated.replace("(__fish_print_hostnames)", &names);
    for (sub, _) in slots.iter().filter(|(_, s)| s.positional) {
        body.push_str(&format!(
            "complete -c cms -n \"__fish_cms_using_subcommand {sub}\" -f -a \"{names}\"\n"
        ));
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_commands_are_found_in_the_definition() {
        let slots = session_slots(&Cli::command());
        let names: Vec<&str> = slots.iter().map(|(n, _)| n.as_str()).collect();
        for sub in [
            "status", "send", "stop", "history", "fork", "delete", "logs", "attach",
        ] {
            assert!(names.contains(&sub), "{sub} missing from {names:?}");
        }
        for sub in NEW_NAME_COMMANDS {
            assert!(!names.contains(sub), "{sub} makes a new session");
        }
    }

    #[test]
    fn every_shell_gets_a_script_naming_the_subcommands() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::PowerShell,
            Shell::Elvish,
        ] {
            let s = script(shell);
            for sub in ["spawn", "status", "completions", "man"] {
                assert!(s.contains(sub), "{shell}: no {sub}");
            }
        }
        assert!(script(Shell::Bash).contains(NAMES_COMMAND));
        // The hidden subcommand is never offered.
        let bash = script(Shell::Bash);
        assert!(bash
            .lines()
            .filter(|l| l.trim_start().starts_with("opts="))
            .all(|l| !l.contains(NAMES_COMMAND)));
        let offered = [
            (Shell::Zsh, format!("'{NAMES_COMMAND}:")),
            (Shell::Fish, format!("-a \"{NAMES_COMMAND}\"")),
            (Shell::PowerShell, format!("::new('{NAMES_COMMAND}'")),
            (Shell::Elvish, format!("cand {NAMES_COMMAND} ")),
        ];
        for (shell, candidate) in offered {
            assert!(
                !script(shell).contains(&candidate),
                "{shell} offers {NAMES_COMMAND}"
            );
        }
        let zsh = script(Shell::Zsh);
        assert!(zsh.starts_with("#compdef cms\n"));
        assert!(zsh.contains(":_cms_sessions'") && !zsh.contains(":_hosts"));
        let fish = script(Shell::Fish);
        assert!(fish.contains(NAMES_COMMAND) && !fish.contains("hostnames"));
    }
}
