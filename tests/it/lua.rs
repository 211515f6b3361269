//! Integration: `cms script`, `cms repl` and `cms lua-types` on the simulator.

use crate::support;

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use support::{close, Cms};

/// Write `code` as a script in the working directory and return its file name.
fn script(cms: &Cms, name: &str, code: &str) -> String {
    std::fs::write(cms.work().join(name), code).unwrap();
    name.to_string()
}

/// Run a script with `--json` and parse what it returned.
fn run_json(cms: &Cms, name: &str, code: &str) -> Value {
    let file = script(cms, name, code);
    cms.json(&["script", &file])
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sessions_from_lua_send_fork_and_cost_each_turn() {
    let cms = Cms::new();
    let v = run_json(
        &cms,
        "plan.lua",
        r#"
        local s = cms.spawn{ name = "a", prompt = "COST 0.25 first" }
        local first = s.response
        local r2 = s:send("COST 0.5 second")
        local r3 = s:send("RECALL")
        local b = s:fork{ name = "b", message = "RECALL" }
        local names = {}
        for _, st in ipairs(cms.list()) do names[#names + 1] = st.name end
        table.sort(names)
        local h = s:history()
        return {
          first = first, second = r2, third = r3, fork = b.response,
          state = s.state, id = s.id, fork_id = b.id,
          names = names, history = #h, status = s:status(),
          missing = cms.get("nope") == nil, same = cms.get("a").id == s.id,
        }
        "#,
    );
    assert_eq!(v["first"]["text"], "echo: first");
    assert!(close(v["first"]["cost_usd"].as_f64().unwrap(), 0.25), "{v}");
    // Cost is per turn even though the three sends share one live process.
    assert!(close(v["second"]["cost_usd"].as_f64().unwrap(), 0.5), "{v}");
    assert!(
        close(v["second"]["session_cost_usd"].as_f64().unwrap(), 0.75),
        "{v}"
    );
    assert_eq!(
        v["third"]["text"],
        "recall: COST 0.25 first | COST 0.5 second"
    );
    assert_eq!(
        v["fork"]["text"],
        "recall: COST 0.25 first | COST 0.5 second | RECALL"
    );
    assert_ne!(v["fork_id"], v["id"], "a fork has its own session id");
    assert_eq!(
        v["state"], "idle",
        "the session stays live inside the script"
    );
    assert_eq!(v["names"], serde_json::json!(["a", "b"]));
    assert_eq!(v["history"], 3);
    assert_eq!(v["status"]["interaction_count"], 3);
    assert!(
        close(v["status"]["total_cost_usd"].as_f64().unwrap(), 0.751),
        "{v}"
    );
    // The same shape as `cms status --json`: snake_case, times in RFC 3339.
    assert_eq!(v["status"]["claude_session_id"], v["id"], "{v}");
    assert!(
        v["status"]["created_at"].as_str().unwrap().ends_with('Z'),
        "{v}"
    );
    assert_eq!(v["missing"], true);
    assert_eq!(v["same"], true);
    // When the script ends its sessions are stopped, resumable from the CLI.
    let list = cms.json(&["list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "stopped"),
        "{list}"
    );
    let out = cms.ok(&["send", "--name", "a", "--message", "RECALL"]);
    assert!(out.contains("COST 0.5 second"), "{out}");
}

#[test]
fn pause_resume_stop_kill_and_delete_from_lua() {
    let cms = Cms::new();
    let v = run_json(
        &cms,
        "plan.lua",
        r#"
        local s = cms.spawn{ name = "p", prompt = "one" }
        s:pause()
        local paused = s.state
        local ok, err = pcall(s.send, s, "refused")
        local r = s:resume("two")
        s:stop()
        local stopped = s.state
        local again = s:send("RECALL").text
        s:kill()
        local killed = s.state
        s:delete()
        return { paused = paused, refused = not ok, err = tostring(err), resumed = r.text,
                 stopped = stopped, again = again, killed = killed, gone = cms.get("p") == nil }
        "#,
    );
    assert_eq!(v["paused"], "paused");
    assert_eq!(v["refused"], true);
    assert!(v["err"].as_str().unwrap().contains("paused"), "{v}");
    assert_eq!(v["resumed"], "echo: two");
    assert_eq!(v["stopped"], "stopped");
    assert_eq!(
        v["again"], "recall: one | two",
        "the stopped session resumed"
    );
    assert_eq!(v["killed"], "killed");
    assert_eq!(v["gone"], true);
}

#[test]
fn parallel_runs_sessions_at_once_and_keeps_order() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "fan.lua",
        r#"
        local fns = {}
        for i = 1, 10 do
          fns[i] = function()
            local s = cms.spawn{ name = "s" .. i, prompt = "SLOW 1000 n" .. i }
            return s.response.text
          end
        end
        return cms.parallel(fns)
        "#,
    );
    let started = Instant::now();
    let v = cms.json(&["script", &file]);
    let took = started.elapsed();
    let expected: Vec<String> = (1..=10).map(|i| format!("echo: n{i}")).collect();
    assert_eq!(v, serde_json::json!(expected));
    // Ten one-second turns one after the other would take ten seconds.
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn a_failure_in_parallel_names_its_index_and_the_others_finish() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "fan.lua",
        r#"
        cms.parallel{
          function() return cms.spawn{ name = "ok1", prompt = "SLOW 300 a" } end,
          function() error("second one broke") end,
          function() return cms.spawn{ name = "ok3", prompt = "SLOW 300 b" } end,
        }
        print("not reached")
        "#,
    );
    let out = cms.run(&["script", &file]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("fan.lua:2: cms.parallel: 1 of 3 functions failed"),
        "{err}"
    );
    assert!(err.contains("#2: fan.lua:4: second one broke"), "{err}");
    assert!(!stdout(&out).contains("not reached"));
    let names: Vec<String> = cms
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"ok1".to_string()) && names.contains(&"ok3".to_string()),
        "{names:?}"
    );
}

#[test]
fn errors_name_the_file_and_line_and_exit_non_zero() {
    let cms = Cms::new();
    let cases = [
        ("runtime.lua", "local t = nil\nlocal x = 1\nreturn t.field\n", "runtime.lua:3: attempt to index a nil value (local 't')"),
        ("syntax.lua", "local x = \nfunction(\n", "syntax.lua:3: <name> or '...' expected near <eof>"),
        ("raise.lua", "\nerror('custom failure')\n", "raise.lua:2: custom failure"),
        ("engine.lua", "cms.spawn{ name = 'd', prompt = 'x' }\ncms.spawn{ name = 'd', prompt = 'x' }\n", "engine.lua:2: session 'd' already exists"),
        ("option.lua", "cms.spawn{ name = 'o', prompt = 'x', modle = 'haiku' }\n", "option.lua:1: cms.spawn: unknown field `modle`, expected one of `name`, `prompt`, `model`"),
        ("badname.lua", "cms.spawn{ name = 'no spaces', prompt = 'x' }\n", "badname.lua:1:"),
    ];
    for (file, code, expected) in cases {
        script(&cms, file, code);
        let out = cms.run(&["script", file]);
        assert_eq!(out.status.code(), Some(1), "{file}: {}", stderr(&out));
        // The first script of the home started the session host, and said so once.
        let err = support::without_host_notice(&stderr(&out));
        assert!(
            err.starts_with(&format!("Error: {expected}")),
            "{file}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let runtime = stderr(&cms.run(&["script", "runtime.lua"]));
    assert!(
        runtime.contains("stack traceback:\n\truntime.lua:3: in main chunk"),
        "{runtime}"
    );
    let missing = cms.run(&["script", "nope.lua"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("cannot read script nope.lua"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn unsafe_functions_are_off_unless_asked_for() {
    let cms = Cms::new();
    for call in [
        "os.execute('true')",
        "io.popen('true')",
        "package.loadlib('x', 'y')",
    ] {
        let file = script(&cms, "u.lua", &format!("return {call}\n"));
        let out = cms.run(&["script", &file]);
        assert_eq!(out.status.code(), Some(1), "{call}");
        let name = call.split('(').next().unwrap();
        assert!(
            stderr(&out).contains(&format!(
                "u.lua:1: {name} is disabled in cms scripts; run with --unsafe-lua"
            )),
            "{call}: {}",
            stderr(&out)
        );
    }
    let file = script(&cms, "d.lua", "return debug == nil\n");
    assert_eq!(cms.ok(&["script", &file]).trim(), "true");
    let file = script(
        &cms,
        "x.lua",
        "return { os.execute('exit 3'), debug ~= nil }\n",
    );
    let v = cms.json(&["script", "--unsafe-lua", &file]);
    assert_eq!(v, serde_json::json!([serde_json::Value::Null, true]));
}

#[test]
fn binary_chunks_never_load() {
    let cms = Cms::new();
    // A real binary chunk, patched so running it would read far out of bounds.
    let mut chunk = mlua::Lua::new()
        .load("local a, b = 1, 2 return a + b, 'x'")
        .into_function()
        .unwrap()
        .dump(false);
    let n = chunk.len();
    for b in &mut chunk[n / 2..n - 4] {
        *b = 0xff;
    }
    std::fs::write(cms.work().join("evil.luac"), &chunk).unwrap();
    let literal: String = chunk.iter().map(|b| format!("\\{b}")).collect();
    std::fs::write(cms.work().join("evil.lua"), &chunk).unwrap();
    let file = script(
        &cms,
        "b.lua",
        &format!(
            r#"
            local out = {{}}
            out.dump = select(2, pcall(string.dump, function() end))
            out.load = select(2, load("{literal}"))
            out.load_b = select(2, load("{literal}", "x", "b"))
            out.loadfile = select(2, loadfile("evil.luac"))
            out.dofile = select(2, pcall(dofile, "evil.luac"))
            package.path = "./?.lua"
            out.require = select(2, pcall(require, "evil"))
            return out
            "#
        ),
    );
    let out = cms.run(&["script", "--json", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["dump"]
            .as_str()
            .unwrap()
            .contains("string.dump is disabled"),
        "{v}"
    );
    for k in ["load", "load_b", "loadfile", "dofile", "require"] {
        assert!(
            v[k].as_str()
                .unwrap_or("")
                .contains("attempt to load a binary chunk"),
            "{k}: {v}"
        );
    }
    // The file itself, as a script: an error, never a crash.
    let out = cms.run(&["script", "evil.luac"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // Policies and plugins are held to the same rule.
    let policy = script(
        &cms,
        "p.lua",
        "return load(string.dump(function() return 1 end))\n",
    );
    let out = cms.run(&["policy", "check", &policy]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("string.dump is disabled"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_endless_event_handler_is_stopped_and_the_script_goes_on() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "h.lua",
        r#"
        local seen = {}
        cms.on("tool_use", function(e) seen[#seen + 1] = e.name end)
        cms.on("result", function() while true do end end)
        local s = cms.spawn{ name = "t", prompt = 'USE_TOOL Read {"file_path": "/etc/hostname"}' }
        return { text = s.response.text, seen = seen }
        "#,
    );
    let started = Instant::now();
    let out = cms.run(&["script", "--json", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        stderr(&out).contains("cms.on('result') handler failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("ran longer than its limit of 2000 ms"),
        "{}",
        stderr(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["text"], "done: 1 tool results");
    assert_eq!(v["seen"], serde_json::json!(["Read"]));
}

#[test]
fn a_handler_spinning_inside_a_coroutine_is_stopped_too() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "co.lua",
        r#"
        cms.on("result", function() coroutine.wrap(function() while true do end end)() end)
        cms.on("tool_use", function()
          local co = coroutine.create(function() coroutine.wrap(function() while true do end end)() end)
          assert(coroutine.resume(co))
        end)
        local s = cms.spawn{ name = "t", prompt = 'USE_TOOL Read {"file_path": "/etc/hostname"}' }
        return s.response.text
        "#,
    );
    let mut child = cms.spawn_piped(&["script", "--json", &file]);
    assert!(
        wait_at_most(&mut child, Duration::from_secs(30)).is_some(),
        "the handlers were never stopped"
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for event in ["result", "tool_use"] {
        assert!(
            stderr(&out).contains(&format!("cms.on('{event}') handler failed")),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        stderr(&out)
            .matches("ran longer than its limit of 2000 ms")
            .count(),
        2,
        "{}",
        stderr(&out)
    );
}

/// `cms script --memory-limit 16 FILE` fails with Lua's own out-of-memory error.
fn runs_out_of_memory_at_16_mb(cms: &Cms, file: &str) {
    let out = cms.run(&["script", "--memory-limit", "16", file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not enough memory")
            && stderr(&out).contains("its memory limit (--memory-limit 16 MB"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_memory_limit_stops_a_runaway_script() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "mem.lua",
        "local t = {}\nfor i = 1, 1e9 do t[i] = string.rep('x', 1024) .. i end\n",
    );
    runs_out_of_memory_at_16_mb(&cms, &file);
    // The same script within the default limit goes further: the limit is the flag's.
    let small = script(
        &cms,
        "small.lua",
        "local t = {}\nfor i = 1, 20000 do t[i] = string.rep('x', 1024) .. i end\nreturn #t\n",
    );
    assert!(!cms
        .run(&["script", "--memory-limit", "16", &small])
        .status
        .success());
    assert_eq!(cms.ok(&["script", &small]).trim(), "20000");
}

/// Run `cms args...` to the end; its exit code and peak resident memory in MB.
#[allow(clippy::zombie_processes)] // reaped by wait4, which also gives the peak
/// Run cms and measure its own peak memory: the high-water mark of its resident set
/// (`VmHWM`), read while it runs. Not `wait4`'s `ru_maxrss`: that also counts the
/// memory of this test process, which the child shared until it exec'd.
fn run_measured(cms: &Cms, args: &[&str]) -> (Option<i32>, u64) {
    let mut child = cms
        .cmd(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        let hwm = std::fs::read_to_string(&status_file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        peak_kb = peak_kb.max(hwm);
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(peak_kb > 0, "no memory figure was read for {args:?}");
    (status.code(), peak_kb / 1024)
}

#[test]
fn the_memory_limit_covers_cms_functions() {
    let cms = Cms::new();
    // A 24 KB line nested 8,000 deep, under a 16 MB limit.
    let file = script(
        &cms,
        "parse.lua",
        // Too deep to read: refused as too complex, in bounded memory, never a crash.
        "local line = string.rep('$(', 8000) .. string.rep(')', 8000)\n\
         local ok, err = pcall(cms.shell.parse, line)\n\
         assert(not ok and tostring(err):find('too complex'), tostring(err))\n",
    );
    let (code, peak_mb) = run_measured(&cms, &["script", "--memory-limit", "16", &file]);
    assert_eq!(code, Some(0));
    assert!(peak_mb < 64, "peak {peak_mb} MB");
    // Work too big for the limit is refused like any allocation.
    let file = script(
        &cms,
        "big.lua",
        "return #cms.shell.parse(string.rep('echo $(a) ', 600000))\n",
    );
    runs_out_of_memory_at_16_mb(&cms, &file);
    // A table shared 2^30 times over would encode to gigabytes.
    let file = script(
        &cms,
        "bomb.lua",
        "local t = {'xxxxxxxxxxxxxxxx'}\nfor i = 1, 30 do t = {t, t} end\nreturn #cms.json.encode(t)\n",
    );
    let (code, peak_mb) = run_measured(&cms, &["script", "--memory-limit", "16", &file]);
    assert_eq!(code, Some(1));
    assert!(peak_mb < 64, "peak {peak_mb} MB");
}

#[test]
fn os_exit_sets_the_exit_code_after_stopping_sessions() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "e.lua",
        "cms.spawn{ name = 'x', prompt = 'hi' }\nos.exit(3)\n",
    );
    let out = cms.run(&["script", &file]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(cms.json(&["status", "--name", "x"])["state"], "stopped");
}

#[test]
fn args_json_and_return_values() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "a.lua",
        r#"
        local decoded = cms.json.decode('{"n": 1, "list": [1, 2], "none": null}')
        return { args = cms.args, n = decoded.n, list = decoded.list, none = decoded.none == nil,
                 encoded = cms.json.encode({ x = true }), version = cms.version }
        "#,
    );
    let v: Value =
        serde_json::from_str(&cms.ok(&["script", "--json", &file, "one", "two words"])).unwrap();
    assert_eq!(v["args"], serde_json::json!(["one", "two words"]));
    assert_eq!(v["n"], 1);
    assert_eq!(v["list"], serde_json::json!([1, 2]));
    assert_eq!(v["none"], true);
    assert_eq!(v["encoded"], r#"{"x":true}"#);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    // Without --json, tables are pretty-printed.
    let plain = cms.ok(&["script", &file, "z"]);
    assert!(
        plain.contains("args = { \"z\" }") || plain.contains("args = {\n"),
        "{plain}"
    );
    let bad = script(&cms, "b.lua", "return cms.json.decode('{oops')\n");
    let out = cms.run(&["script", &bad]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("b.lua:1:"), "{}", stderr(&out));
}

#[test]
fn the_repl_reads_piped_lines() {
    let cms = Cms::new();
    script(&cms, "lib.lua", "greeting = 'hello from lib'\n");
    let input = "\
1 + 1
function add(a, b)
  return a + b
end
add(2, 3)
{ a = 1, b = { 2, 3 } }
:help
:load lib.lua
greeting
error('oops')
s = cms.spawn{ name = 'r', prompt = 'from the repl' }
s.response.text
:quit
print('not reached')
";
    let out = cms.run_with_input(&["repl"], input.as_bytes());
    let text = stdout(&out);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a piped REPL that met an error exits 1: {err}"
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "2");
    assert!(lines.contains(&"5"), "{text}");
    assert!(
        text.contains("{\n  a = 1,\n  b = { 2, 3 },\n}") || text.contains("a = 1"),
        "{text}"
    );
    assert!(
        text.contains(":load FILE"),
        "help lists the commands: {text}"
    );
    assert!(text.contains("\"hello from lib\""), "{text}");
    assert!(err.contains("oops"), "{err}");
    assert!(
        text.contains("\"echo: from the repl\""),
        "the REPL went on after the error: {text}"
    );
    assert!(!text.contains("not reached"));
    assert_eq!(cms.json(&["status", "--name", "r"])["state"], "stopped");
}

#[test]
fn lua_types_describe_every_function() {
    let cms = Cms::new();
    let stubs = cms.ok(&["lua-types"]);
    assert!(stubs.starts_with("---@meta"), "{stubs}");
    let file = script(
        &cms,
        "names.lua",
        r#"
        local names = {}
        for k, v in pairs(cms) do
          if type(v) == "function" then names[#names + 1] = "function cms." .. k .. "(" end
        end
        for k, v in pairs(cms.json) do names[#names + 1] = "function cms.json." .. k .. "(" end
        local s = cms.spawn{ name = "m", prompt = "x" }
        for _, m in ipairs({ "send", "pause", "resume", "stop", "kill", "interrupt", "delete", "fork", "history", "status" }) do
          assert(type(s[m]) == "function", m .. " is not a method")
          names[#names + 1] = "function Session:" .. m .. "("
        end
        table.sort(names)
        return names
        "#,
    );
    let names = cms.json(&["script", &file]);
    let names = names.as_array().unwrap();
    assert!(names.len() >= 20, "{names:?}");
    for n in names {
        assert!(stubs.contains(n.as_str().unwrap()), "the stubs lack {n}");
    }
    let file_in_repo = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/types/cms.lua"),
    )
    .unwrap();
    assert_eq!(stubs, file_in_repo);
}

/// `cms script --json ARGS...` (after the file, every word is the script's).
fn script_json(cms: &Cms, args: &[&str]) -> Value {
    let mut all = vec!["script", "--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cms.ok(&all)).unwrap()
}

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn the_fanout_example_reviews_in_parallel_then_summarises() {
    let cms = Cms::new();
    let v = script_json(&cms, &[&example("fanout.lua"), "src/", "t1"]);
    let reviews = v["reviews"].as_array().unwrap();
    assert_eq!(reviews.len(), 3);
    assert_eq!(reviews[0]["angle"], "security");
    assert!(reviews[2]["text"]
        .as_str()
        .unwrap()
        .contains("Review src/ for readability problems"));
    let summary = v["summary"].as_str().unwrap();
    for r in reviews {
        assert!(
            summary.contains(r["text"].as_str().unwrap()),
            "the summary saw every review"
        );
    }
    assert!(close(v["cost"].as_f64().unwrap(), 0.004), "{v}");
    let list = cms.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 4);
    let plan = cms.json(&["status", "--name", "fanout-security-t1"]);
    assert!(
        plan["args"].to_string().contains("plan") || plan["permission_mode"] == "plan",
        "{plan}"
    );
}

#[test]
fn the_pipeline_example_feeds_each_stage_the_previous_answer() {
    let cms = Cms::new();
    let v = script_json(&cms, &[&example("pipeline.lua"), "cats", "t1"]);
    let result = v["result"].as_str().unwrap();
    assert!(result.starts_with("echo: Edit this article"), "{result}");
    assert!(result.contains("echo: Write a 300-word article from this outline:\n\necho: Write a five-point outline for a short article about cats."), "{result}");
    let stages: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["outline", "draft", "edit"]);
    assert_eq!(
        cms.json(&["status", "--name", "pipeline-outline-t1"])["model"],
        "haiku"
    );
}

#[test]
fn the_correction_loop_example_corrects_until_the_check_passes() {
    let cms = Cms::new();
    // The simulator echoes: the first answer lacks the word, the correction names it.
    let v = script_json(
        &cms,
        &[&example("correction_loop.lua"), "say hello", "PASS"],
    );
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["attempts"], 2);
    assert!(close(v["cost"].as_f64().unwrap(), 0.002), "{v}");
    // The default check (three primes over 100) never passes on an echo: it gives up.
    let v = script_json(&cms, &[&example("correction_loop.lua")]);
    assert_eq!(v["passed"], false, "{v}");
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["problem"], "100 is not greater than 100");
    let name = v["session"].as_str().unwrap();
    assert_eq!(
        cms.json(&["history", "--name", name])
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn sigterm_stops_every_session_the_script_started() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "hang.lua",
        "local s = cms.spawn{ name = 'h', prompt = 'first' }\ns:send('HANG')\n",
    );
    let child = cms.spawn_piped(&["script", &file]);
    let pid = cms.busy_pid("h");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("every session the script started was stopped"));
    support::assert_gone(pid);
    let state = cms.json(&["status", "--name", "h"])["state"].clone();
    assert!(state == "killed" || state == "stopped", "{state}");
}

/// Wait until the child's stderr says `ready` (its Lua code is running), then a
/// little more so it is busy. The rest of stderr comes from the returned thread.
fn wait_for_ready(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while err.read_line(&mut line).unwrap() > 0 && !line.contains("ready") {
        line.clear();
    }
    assert!(line.contains("ready"), "the child never got ready");
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut rest);
        rest
    });
    std::thread::sleep(Duration::from_millis(200));
    rest
}

/// Wait for `child` to exit, at most `limit`; None if it is still running.
fn wait_at_most(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

#[test]
fn a_busy_script_stops_on_a_signal_with_its_sessions() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "busy.lua",
        "cms.spawn{ name = 'b', prompt = 'first' }\nwhile true do pcall(function() while true do end end) end\n",
    );
    let mut child = cms.spawn_piped(&["script", &file]);
    let mut pid = None;
    for _ in 0..300 {
        std::thread::sleep(Duration::from_millis(50));
        // Not recorded yet while the script starts (or reaches) the session host.
        let out = cms.run(&["status", "--name", "b", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["state"] == "idle" {
            pid = v["pid"].as_i64();
            if pid.is_some() {
                break;
            }
        }
    }
    let pid = pid.expect("the session went idle with a live process") as i32;
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_at_most(&mut child, Duration::from_secs(5)).expect("the script stopped");
    assert_eq!(status.code(), Some(130));
    support::assert_gone(pid);
    let state = cms.json(&["status", "--name", "b"])["state"].clone();
    assert!(state == "killed" || state == "stopped", "{state}");

    // A bare loop, and Ctrl-C.
    let file = script(
        &cms,
        "bare.lua",
        "io.stderr:write('ready\\n')\nwhile true do end\n",
    );
    for _ in 0..3 {
        let mut child = cms
            .cmd(&["script", &file])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let _ = wait_for_ready(&mut child);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_at_most(&mut child, Duration::from_secs(5)).expect("the script stopped");
        assert_eq!(status.code(), Some(130));
    }
}

#[test]
fn ctrl_c_stops_a_busy_repl_line_and_the_repl_goes_on() {
    use std::io::Write;
    let cms = Cms::new();
    let mut child = cms.spawn_all_piped(&["repl"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"do io.stderr:write('ready\\n') end\ncoroutine.wrap(function() while true do end end)()\nprint('after')\n")
        .unwrap();
    drop(stdin);
    let err = wait_for_ready(&mut child);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(
        wait_at_most(&mut child, Duration::from_secs(10)).is_some(),
        "the REPL never stopped the line"
    );
    let out = child.wait_with_output().unwrap();
    let err = err.join().unwrap();
    assert!(err.contains("interrupted (Ctrl-C)"), "{err}");
    assert_eq!(stdout(&out).trim(), "after");
    assert_eq!(out.status.code(), Some(1), "a line failed");
}

/// Engine errors say what to do in Lua's words, not the CLI's.
#[test]
fn engine_errors_advise_in_lua_terms() {
    let cms = Cms::new();
    let v = run_json(
        &cms,
        "plan.lua",
        r#"
        cms.spawn{ name = "d", prompt = "x" }
        local ok, err = pcall(cms.spawn, { name = "d", prompt = "y" })
        return { ok = ok, err = tostring(err) }
        "#,
    );
    assert_eq!(v["ok"], false);
    let err = v["err"].as_str().unwrap();
    assert!(
        err.contains(
            "session 'd' already exists; pick another name, or cms.get(\"d\"):delete() first"
        ),
        "{err}"
    );
    assert!(!err.contains("cms delete"), "{err}");
}

/// Whether `lua` has the shape of `cli`: every field `cli` has a value for, and no
/// field `cli` lacks. (Lua has no null: an absent value is a missing key there;
/// values may differ, a live session has a pid.)
fn same_shape(lua: &Value, cli: &Value) -> bool {
    let (Some(lua), Some(cli)) = (lua.as_object(), cli.as_object()) else {
        return false;
    };
    cli.iter().all(|(k, v)| v.is_null() || lua.contains_key(k))
        && lua.keys().all(|k| cli.contains_key(k))
}

#[test]
fn a_session_a_turn_and_a_history_entry_have_one_shape_in_the_cli_and_in_lua() {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "a", "--prompt", "COST 0.25 hello"]);
    let send = cms.json(&["send", "--name", "a", "--message", "again"]);
    let status = cms.json(&["status", "--name", "a"]);
    let history = cms.json(&["history", "--name", "a"]);
    // The last output is `output`, as `get_last_output` says it; a state change
    // prints the whole session.
    assert_eq!(
        cms.json(&["output", "--name", "a"])["output"],
        "echo: again"
    );
    let paused = cms.json(&["pause", "--name", "a"]);
    assert!(same_shape(&paused, &status), "{paused}");
    cms.ok(&["resume", "--name", "a"]);
    let lua = run_json(
        &cms,
        "shapes.lua",
        r#"
        local s = cms.get("a")
        local r = s:send("once more")
        local h = s:history()
        return { status = s:status(), turn = r, entry = h[#h] }
        "#,
    );
    assert!(same_shape(&lua["status"], &status), "{lua}\n{status}");
    assert!(same_shape(&lua["turn"], &send["response"]), "{lua}\n{send}");
    let entry = &history.as_array().unwrap()[0];
    assert!(same_shape(&lua["entry"], entry), "{lua}\n{history}");
    for at in [
        &status["created_at"],
        &lua["status"]["updated_at"],
        &entry["at"],
    ] {
        let at = at.as_str().unwrap_or_else(|| panic!("not a time: {at}"));
        assert!(
            at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
            "RFC 3339: {at}"
        );
    }
}

#[test]
fn a_plan_runs_twice_with_replace_or_get_or_spawn() {
    let cms = Cms::new();
    let code = r#"
        local opts = { name = "p", prompt = "first", replace = true }
        local s = cms.spawn(opts)
        local g = cms.get_or_spawn{ name = "g", prompt = "made once" }
        local r = g:send("RECALL")
        return { text = s.response.text, kept = opts.replace, recall = r.text, turns = #s:history() }
    "#;
    let first = run_json(&cms, "plan.lua", code);
    assert_eq!(first["text"], "echo: first");
    assert_eq!(first["kept"], true, "the caller's table is left as it was");
    assert_eq!(first["turns"], 1);
    let second = run_json(&cms, "plan.lua", code);
    assert_eq!(second["text"], "echo: first", "{second}");
    assert_eq!(second["turns"], 1, "replaced: a new session");
    // get_or_spawn found the first run's session: its conversation goes on.
    assert!(
        second["recall"].as_str().unwrap().contains("made once"),
        "{second}"
    );
    let g = cms.json(&["history", "--name", "g"]);
    assert_eq!(g.as_array().unwrap().len(), 3, "one spawn, two sends: {g}");
    // Without replace, a second spawn is still an error.
    let file = script(
        &cms,
        "dup.lua",
        r#"cms.spawn{ name = "p", prompt = "again" }"#,
    );
    let out = cms.run(&["script", &file]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let bad = script(
        &cms,
        "bad.lua",
        r#"cms.spawn{ name = "q", prompt = "x", replace = "yes" }"#,
    );
    assert!(stderr(&cms.run(&["script", &bad])).contains("replace must be true or false"));
}

#[test]
fn cms_log_is_shown_at_the_default_level() {
    let cms = Cms::new();
    let file = script(
        &cms,
        "log.lua",
        r#"cms.log("hello from the plan"); cms.log("debug", "quiet")"#,
    );
    let out = cms.run(&["script", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("hello from the plan"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("quiet"), "{}", stderr(&out));
}

#[test]
fn a_repl_session_stopped_from_elsewhere_resumes_on_its_next_send() {
    use std::io::{BufRead, BufReader, Write};
    let cms = Cms::new();
    let mut child = cms.spawn_all_piped(&["repl"]);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    writeln!(
        stdin,
        "s = cms.spawn{{ name = 's', prompt = 'remember me' }}"
    )
    .unwrap();
    writeln!(stdin, "print('spawned')").unwrap();
    stdin.flush().unwrap();
    let mut wait_for = |want: &str| {
        for line in lines.by_ref() {
            let line = line.unwrap();
            if line.contains(want) {
                return line;
            }
        }
        panic!("the REPL never printed {want}");
    };
    wait_for("spawned");
    assert_eq!(cms.json(&["status", "--name", "s"])["state"], "idle");
    // Another terminal stops it.
    cms.ok(&["stop", "--name", "s"]);
    assert_eq!(cms.json(&["status", "--name", "s"])["state"], "stopped");
    writeln!(stdin, "print('got: ' .. s:send('RECALL').text)").unwrap();
    writeln!(stdin, ":quit").unwrap();
    stdin.flush().unwrap();
    let line = wait_for("got: ");
    assert!(line.contains("remember me"), "{line}");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}
