//! The simulator's tools: permission decisions like the real CLI's, and small real
//! implementations (Read, Write, Edit, Bash) so tests can see files change or not.

use super::{uuid, Outcome, Sim, Stop, TurnState};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The tool calls of a `USE_TOOL Name {json}` message: one per line.
pub fn parse_tool_lines(text: &str) -> Vec<(String, Value)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("USE_TOOL")
                .or_else(|| l.strip_prefix("LOOP_TOOL"))?;
            let rest = rest.trim_start();
            let (name, input) = match rest.find(char::is_whitespace) {
                Some(i) => (&rest[..i], rest[i..].trim()),
                None => (rest, "{}"),
            };
            Some((
                name.to_string(),
                serde_json::from_str(input).unwrap_or(json!({})),
            ))
        })
        .collect()
}

enum Permission {
    Allowed,
    Ask,
    Denied(String),
}

const READ_ONLY_TOOLS: &[&str] = &[
    "Read",
    "Glob",
    "Grep",
    "LS",
    "WebSearch",
    "WebFetch",
    "TodoWrite",
    "Task",
];
const EDIT_TOOLS: &[&str] = &["Write", "Edit", "MultiEdit", "NotebookEdit"];

fn target_path(input: &Value) -> String {
    input["file_path"]
        .as_str()
        .or_else(|| input["notebook_path"].as_str())
        .unwrap_or("")
        .to_string()
}

impl Sim {
    pub(super) fn tools(
        &mut self,
        text: &str,
        looping: bool,
        t: &mut TurnState,
        msg_id: &str,
    ) -> Outcome {
        let calls = parse_tool_lines(text);
        let mut rounds = 0u32;
        loop {
            if let Some(max) = self.args.max_turns {
                if rounds >= max {
                    return Outcome::MaxTurns(max);
                }
            }
            let within_budget = self.bill(t);
            let ids: Vec<String> = calls
                .iter()
                .map(|_| format!("toolu_sim_{}", &uuid()[..12]))
                .collect();
            let blocks = calls
                .iter()
                .zip(&ids)
                .map(|((name, input), id)| json!({"type":"tool_use","id":id,"name":name,"input":input}))
                .collect();
            self.assistant(blocks, msg_id);
            if !within_budget {
                return Outcome::Budget(self.args.max_budget.unwrap_or(0.0));
            }
            for ((name, input), id) in calls.iter().zip(&ids) {
                let (content, is_error, structured, interrupt) =
                    match self.run_tool(name, input, id, t) {
                        Ok(r) => r,
                        Err(Stop::Interrupted) => return Outcome::Interrupted,
                    };
                let mut block = json!({"tool_use_id":id,"type":"tool_result","content":content});
                if is_error {
                    block["is_error"] = true.into();
                }
                self.out.line(&json!({"type":"user","message":{"role":"user","content":[block]},
                    "parent_tool_use_id":null,"session_id":self.session_id,"uuid":uuid(),"tool_use_result":structured}));
                t.tool_results += 1;
                if interrupt {
                    return Outcome::Interrupted;
                }
            }
            rounds += 1;
            if !looping || calls.is_empty() || rounds >= 100 {
                break;
            }
        }
        if let Some(max) = self.args.max_turns {
            if rounds >= max {
                return Outcome::MaxTurns(max);
            }
        }
        let within_budget = self.bill(t);
        let reply = format!("done: {} tool results", calls.len());
        self.assistant(vec![json!({"type":"text","text":reply})], msg_id);
        if !within_budget {
            return Outcome::Budget(self.args.max_budget.unwrap_or(0.0));
        }
        Outcome::Text(reply)
    }

    fn permission(&self, name: &str, input: &Value) -> Permission {
        let mode = self.args.permission_mode.as_str();
        if READ_ONLY_TOOLS.contains(&name)
            || mode == "bypassPermissions"
            || self.allowed_by_rule(name, input)
        {
            return Permission::Allowed;
        }
        let is_edit = EDIT_TOOLS.contains(&name);
        if is_edit && mode == "acceptEdits" {
            return Permission::Allowed;
        }
        if name == "Bash" && is_read_only_command(input["command"].as_str().unwrap_or("")) {
            return Permission::Allowed;
        }
        match mode {
            "plan" => Permission::Denied(format!("Cannot write to {} while in plan mode.", target_path(input))),
            "dontAsk" => Permission::Denied(format!(
                "Permission to use {name} has been denied because Claude Code is running in don't ask mode."
            )),
            _ => Permission::Ask,
        }
    }

    fn allowed_by_rule(&self, name: &str, input: &Value) -> bool {
        self.args.allowed.iter().any(|rule| {
            if rule == name {
                return true;
            }
            let Some(inner) = rule
                .strip_prefix(name)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
            else {
                return false;
            };
            let prefix = inner
                .trim_end_matches(":*")
                .trim_end_matches('*')
                .trim_end();
            input["command"]
                .as_str()
                .is_some_and(|c| c.starts_with(prefix))
        })
    }

    /// Run one tool: (content, is_error, tool_use_result, interrupt the turn).
    fn run_tool(
        &mut self,
        name: &str,
        input: &Value,
        id: &str,
        t: &mut TurnState,
    ) -> Result<(String, bool, Value, bool), Stop> {
        if self.args.disallowed.iter().any(|d| d == name) {
            let msg =
                format!("<tool_use_error>Error: No such tool available: {name}</tool_use_error>");
            return Ok((msg.clone(), true, json!(msg), false));
        }
        let mut input = input.clone();
        let denial = match self.permission(name, &input) {
            Permission::Allowed => None,
            Permission::Denied(msg) => Some((msg, false)),
            Permission::Ask if self.args.prompt_stdio => {
                let request_id = uuid();
                self.out.line(&json!({"type":"control_request","request_id":request_id,"request":{
                    "subtype":"can_use_tool","tool_name":name,"display_name":name,"input":input,
                    "description":target_path(&input),"tool_use_id":id,
                    "permission_suggestions":[{"type":"setMode","mode":"acceptEdits","destination":"session"}]}}));
                let body = self.wait_permission(&request_id)?;
                let resp = &body["response"];
                if body["subtype"] != "success" {
                    Some((
                        format!(
                            "Tool permission request failed: Error: {}",
                            body["error"].as_str().unwrap_or("unknown")
                        ),
                        false,
                    ))
                } else if resp["behavior"] == "allow" {
                    match resp.get("updatedInput") {
                        Some(updated) if updated.is_object() => {
                            input = updated.clone();
                            None
                        }
                        _ => Some((
                            "Tool permission request failed: ZodError: [{\"code\":\"invalid_type\",\"path\":[\"updatedInput\"]}]".into(),
                            false,
                        )),
                    }
                } else if resp["behavior"] == "deny" {
                    Some((
                        resp["message"].as_str().unwrap_or("denied").to_string(),
                        resp["interrupt"] == true,
                    ))
                } else {
                    Some((
                        "Tool permission request failed: ZodError: invalid permission result"
                            .into(),
                        false,
                    ))
                }
            }
            Permission::Ask => Some((
                if name == "Bash" {
                    format!(
                        "This command requires approval: {}",
                        input["command"].as_str().unwrap_or("")
                    )
                } else {
                    format!(
                        "Claude requested permissions to write to {}, but you haven't granted it yet.",
                        target_path(&input)
                    )
                },
                false,
            )),
        };
        if let Some((msg, interrupt)) = denial {
            t.denials
                .push(json!({"tool_name":name,"tool_use_id":id,"tool_input":input}));
            let shown = if interrupt {
                "The user doesn't want to proceed with this tool use. The tool use was rejected."
                    .to_string()
            } else {
                msg
            };
            return Ok((
                shown.clone(),
                true,
                json!(format!("Error: {shown}")),
                interrupt,
            ));
        }
        let (content, is_error) = self.execute(name, &input);
        Ok((
            content.clone(),
            is_error,
            json!({"type":"text","content":content}),
            false,
        ))
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            self.cwd.join(p)
        }
    }

    fn execute(&self, name: &str, input: &Value) -> (String, bool) {
        match name {
            "Read" => match std::fs::read_to_string(self.resolve(&target_path(input))) {
                Ok(text) => (
                    text.split('\n')
                        .enumerate()
                        .map(|(i, l)| format!("{}\t{l}", i + 1))
                        .collect::<Vec<_>>()
                        .join("\n"),
                    false,
                ),
                Err(_) => ("File does not exist.".into(), true),
            },
            "Write" => {
                let path = self.resolve(&target_path(input));
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                match std::fs::write(&path, input["content"].as_str().unwrap_or("")) {
                    Ok(()) => (
                        format!("File created successfully at: {}", path.display()),
                        false,
                    ),
                    Err(e) => (format!("Error writing file: {e}"), true),
                }
            }
            "Edit" => {
                let path = self.resolve(&target_path(input));
                let Ok(text) = std::fs::read_to_string(&path) else {
                    return ("File does not exist.".into(), true);
                };
                let old = input["old_string"].as_str().unwrap_or("");
                if old.is_empty() || !text.contains(old) {
                    return ("String to replace not found in file.".into(), true);
                }
                let new = text.replacen(old, input["new_string"].as_str().unwrap_or(""), 1);
                match std::fs::write(&path, new) {
                    Ok(()) => (
                        format!("The file {} has been updated.", path.display()),
                        false,
                    ),
                    Err(e) => (format!("Error editing file: {e}"), true),
                }
            }
            "Bash" => {
                use std::os::unix::process::CommandExt;
                // In a process group of its own, as Claude Code runs its Bash tools.
                let out = std::process::Command::new("sh")
                    .process_group(0)
                    .arg("-c")
                    .arg(input["command"].as_str().unwrap_or(""))
                    .current_dir(&self.cwd)
                    .output();
                match out {
                    Ok(o) => {
                        let mut s = String::from_utf8_lossy(&o.stdout).trim_end().to_string();
                        let err = String::from_utf8_lossy(&o.stderr);
                        if !err.trim().is_empty() {
                            s.push_str(err.trim_end());
                        }
                        (s, !o.status.success())
                    }
                    Err(e) => (format!("Error: {e}"), true),
                }
            }
            _ => ("ok".into(), false),
        }
    }
}

fn is_read_only_command(cmd: &str) -> bool {
    let first = cmd.split_whitespace().next().unwrap_or("");
    [
        "echo", "ls", "pwd", "cat", "true", "date", "whoami", "head", "wc",
    ]
    .contains(&first)
        && !cmd.contains('>')
        && !cmd.contains('|')
        && !cmd.contains(';')
        && !cmd.contains('&')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_lines_parse_name_and_json_input() {
        let calls = parse_tool_lines("USE_TOOL Write {\"file_path\": \"a.txt\", \"content\": \"x\"}\nUSE_TOOL Read {\"file_path\": \"b\"}");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].0, "Write");
        assert_eq!(calls[0].1["content"], "x");
        assert_eq!(calls[1].0, "Read");
    }

    #[test]
    fn read_only_commands() {
        assert!(is_read_only_command("echo hi"));
        assert!(!is_read_only_command("echo hi > f"));
        assert!(!is_read_only_command("rm -rf x"));
    }
}
