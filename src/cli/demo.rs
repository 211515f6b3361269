//! `cms demo`: a short tour on the bundled simulator, so a newcomer sees cms work
//! without a Claude account. It uses a scratch state directory.

use super::args::DemoArgs;
use super::out::{errln, outln, Closed};
use super::render;
use crate::app::{exit, App, LuaApp};
use crate::engine::{EngineConfig, EngineError, Response, SessionOptions, SpawnSpec};
use std::path::PathBuf;

/// Why the tour ended early.
#[derive(Debug, thiserror::Error)]
enum TourError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The reader of stdout went away: end quietly.
    #[error(transparent)]
    Closed(#[from] Closed),
}

/// The simulator: `cms-sim` next to this executable, or else this executable
/// linked under that name into `scratch` (it acts as the simulator when so named).
fn simulator_path(scratch: &std::path::Path) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let sibling = exe.parent()?.join("cms-sim");
    if sibling.is_file() {
        return Some(sibling);
    }
    let link = scratch.join("bin").join("cms-sim");
    std::fs::create_dir_all(link.parent()?).ok()?;
    std::os::unix::fs::symlink(&exe, &link).ok()?;
    Some(link)
}

pub fn run(args: &DemoArgs, base: &EngineConfig) -> i32 {
    let scratch = std::env::temp_dir().join(format!("cms-demo-{}", std::process::id()));
    let Some(sim) = simulator_path(&scratch) else {
        errln!(
            "Error: the simulator could not be found or linked in {}",
            scratch.display()
        );
        return 1;
    };
    let mut cfg = base.clone();
    cfg.claude_bin = sim;
    cfg.home = scratch.join("state");
    // The simulator keeps its conversations under $HOME/.claude, like the real CLI.
    cfg.child_env = vec![("HOME".into(), scratch.display().to_string())];
    let app = match App::start(cfg) {
        Ok(app) => app,
        Err(e) => return exit::fail(e),
    };
    let code = app.run_local(async {
        match tour(&app).await {
            Ok(()) | Err(TourError::Closed(_)) => exit::OK,
            Err(e) => exit::fail(e),
        }
    });
    drop(app);
    if args.keep {
        let _ = outln!(
            "\nState kept in {}; look at it with: CMS_HOME={} {} list",
            scratch.display(),
            scratch.join("state").display(),
            this_cms()
        );
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    code
}

fn step(cmd: &str) -> Result<(), Closed> {
    outln!("\n$ cms {cmd}")
}

/// The tour; its sessions are stopped however it ends.
async fn tour(app: &App) -> Result<(), TourError> {
    let project = app
        .sessions()
        .config()
        .home
        .parent()
        .map(|p| p.join("project"))
        .unwrap_or_default();
    outln!("cms demo — every session below is a long-lived process of the bundled simulator,")?;
    outln!("which speaks Claude Code's stream-json protocol (no account, no network).")?;
    let m = app.sessions();
    let result = steps(app, &project).await;
    m.shutdown().await;
    result?;
    step("list")?;
    outln!("{}", render::list_table(&m.list()?))?;
    step("history --name login")?;
    outln!("{}", render::history_text("login", &m.history("login")?))?;
    let total: f64 = m.list()?.iter().map(|r| r.total_cost_usd).sum();
    outln!(
        "\nTotal cost of the demo: {} (simulated)",
        render::money(total)
    )?;
    let cms = this_cms();
    outln!("\nNext, on the real Claude Code CLI (`claude` on PATH, or --claude-bin PATH):")?;
    outln!("  {cms} spawn --name first --prompt \"Describe this project\"")?;
    outln!("  {cms} send --name first --message \"Now list its tests\"   # the same live process")?;
    outln!("  {cms} list")?;
    outln!("  {cms} host status    # the session host that keeps sessions live between commands")?;
    outln!("  {cms} --help")?;
    Ok(())
}

fn this_cms() -> String {
    invocation(
        std::env::args_os().next().map(PathBuf::from).as_deref(),
        std::env::var_os("CARGO_PKG_NAME").is_some_and(|n| n == "cms"),
    )
}

/// How to run this cms again, the way it was run: `cms` when found on PATH,
/// `cargo run --` from a checkout (`cargo run` sets CARGO_PKG_NAME; a binary under
/// `target/debug` or `target/release` is one too), else the path as typed.
fn invocation(arg0: Option<&std::path::Path>, under_cargo: bool) -> String {
    let Some(arg0) = arg0 else {
        return "cms".into();
    };
    let in_target = |profile: &str| {
        let dir = arg0.parent();
        dir.and_then(|d| d.file_name())
            .is_some_and(|f| f == profile)
            && dir
                .and_then(|d| d.parent())
                .and_then(|t| t.file_name())
                .is_some_and(|t| t == "target")
    };
    if in_target("release") {
        return "cargo run --release --".into();
    }
    if under_cargo || in_target("debug") {
        return "cargo run --".into();
    }
    if arg0.components().count() > 1 {
        return arg0.display().to_string();
    }
    "cms".into()
}

/// A finished turn and the session after it, as `cms status` sees it: the live
/// session's state (set before its answer was delivered) over the stored row, so a
/// finished turn never shows `busy`, whatever record a call handed back.
fn after_turn(app: &App, name: &str, r: &Response) -> Result<(), TourError> {
    let rec = app.sessions().status(name)?;
    outln!("{}", render::response_block(&rec, r))?;
    Ok(())
}

async fn steps(app: &App, project: &std::path::Path) -> Result<(), TourError> {
    let m = app.sessions();
    step("batch --file tasks.json   # three sessions in parallel")?;
    let mut reqs = Vec::new();
    for n in ["login", "signup", "dashboard"] {
        let spec = SpawnSpec {
            name: n.to_string(),
            prompt: format!("Build the {n} page"),
            model: Some("sonnet".into()),
            ..SpawnSpec::default()
        };
        reqs.push(spec.into_request(false)?);
    }
    let outcomes = m.batch(reqs, 3, &mut |_| {}).await;
    for o in &outcomes {
        let r = o.response.as_ref();
        outln!(
            "  [{}] {} cost={}",
            o.name,
            r.map(|r| r.text.as_str()).unwrap_or("-"),
            render::money(r.map_or(0.0, |r| r.cost_usd))
        )?;
    }

    step("send --name login --message \"Add form validation\"   # same process, no restart")?;
    let r = m.send("login", "Add form validation", None).await?;
    after_turn(app, "login", &r)?;

    step("stop --name login")?;
    m.stop("login").await?;
    outln!("Session 'login' stopped")?;

    step("send --name login --message RECALL   # resumes the conversation (--resume, same id)")?;
    let r = m.send("login", "RECALL", None).await?;
    after_turn(app, "login", &r)?;

    step("fork --name login --new-name login-jwt --message \"Use JWT instead\"")?;
    let (_, r) = m
        .fork(
            "login",
            "login-jwt",
            Some("Use JWT instead"),
            SessionOptions::default(),
            None,
        )
        .await?;
    if let Some(r) = r {
        after_turn(app, "login-jwt", &r)?;
    }

    step("send --name login-jwt --message RECALL   # the fork holds the parent's context")?;
    let r = m.send("login-jwt", "RECALL", None).await?;
    after_turn(app, "login-jwt", &r)?;

    step("send --name signup --message \"USE_TOOL Read {\\\"file_path\\\": \\\"/etc/hostname\\\"}\"   # a tool call")?;
    let r = m
        .send(
            "signup",
            "USE_TOOL Read {\"file_path\": \"/etc/hostname\"}",
            None,
        )
        .await?;
    outln!("{}  (tools used: {})", r.text, r.tools_used.join(", "))?;

    step("pause --name dashboard")?;
    m.pause("dashboard").await?;
    match m.send("dashboard", "hello?", None).await {
        Err(e) => outln!("  send refused: {e}"),
        Ok(_) => outln!("  (unexpected: the paused session answered)"),
    }?;
    step("resume --name dashboard --message \"Add charts\"")?;
    let (_, r) = m.resume("dashboard", Some("Add charts"), None).await?;
    if let Some(r) = r {
        after_turn(app, "dashboard", &r)?;
    }

    guarded_and_scripted(app, project).await?;
    Ok(())
}

/// The safety net and the Lua API, on a scratch project.
async fn guarded_and_scripted(app: &App, project: &std::path::Path) -> Result<(), Closed> {
    let m = app.sessions();
    use crate::delegate::{delegate, DelegateOptions};
    let _ = std::fs::create_dir_all(project);
    let _ = std::fs::write(project.join(".env"), "SECRET=1\n");
    let LuaApp {
        host,
        policy: attached,
    } = match app.lua(crate::lua::HostOptions::default()) {
        Ok(h) => h,
        Err(e) => {
            return outln!("  (skipped: {e})");
        }
    };
    step("delegate --name guarded --task \"...write .env, then notes.txt...\"   # checked before each tool runs")?;
    let task = "USE_TOOL Write {\"file_path\": \".env\", \"content\": \"SECRET=stolen\"}\n\
                USE_TOOL Write {\"file_path\": \"notes.txt\", \"content\": \"notes\"}";
    let opts = DelegateOptions {
        name: "guarded".into(),
        task: task.into(),
        work_dir: Some(project.to_path_buf()),
        max_cost: Some(0.5),
        safety: true,
        ..DelegateOptions::default()
    };
    match delegate(host.lua(), m, &attached.service, opts, None).await {
        Ok(r) => {
            for d in &r.denied_before_execution {
                outln!("  refused before it ran: {}: {}", d.tool, d.reason)?;
            }
            outln!(
                "  [{}] {}  .env still {:?}, notes.txt {}",
                r.name,
                r.status,
                std::fs::read_to_string(project.join(".env"))
                    .unwrap_or_default()
                    .trim(),
                if project.join("notes.txt").exists() {
                    "written"
                } else {
                    "missing"
                }
            )?;
        }
        Err(e) => outln!("  delegate failed: {e}")?,
    }

    step("script plan.lua   # Lua: cms.parallel runs sessions at once")?;
    let plan = r#"
        local answers = cms.parallel{
          function() return cms.spawn{ name = "lua-a", prompt = "SLOW 1000 first" }.response.text end,
          function() return cms.spawn{ name = "lua-b", prompt = "SLOW 1000 second" }.response.text end,
        }
        return table.concat(answers, " + ")"#;
    let started = std::time::Instant::now();
    match host
        .lua()
        .load(plan)
        .set_name("=plan.lua")
        .call_async::<String>(())
        .await
    {
        Ok(text) => {
            // One after the other would take 2 s and more; say "side by side" only
            // when the clock shows it (a loaded machine adds start-up time).
            let took = started.elapsed().as_secs_f64();
            let how = if took < 1.9 {
                "side by side"
            } else {
                "on a busy machine"
            };
            outln!("  {text}  (two 1 s turns in {took:.1} s: {how})")
        }
        Err(e) => outln!("  script failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::invocation;
    use std::path::Path;

    #[test]
    fn the_next_lines_use_the_command_that_ran_the_demo() {
        let run = |a: &str, cargo| invocation(Some(Path::new(a)), cargo);
        assert_eq!(run("cms", false), "cms");
        assert_eq!(run("target/debug/cms", false), "cargo run --");
        assert_eq!(
            run("/src/cms/target/release/cms", false),
            "cargo run --release --"
        );
        assert_eq!(run("/tmp/build/cms", true), "cargo run --");
        assert_eq!(run("./cms", false), "./cms");
        assert_eq!(run("/opt/bin/cms", false), "/opt/bin/cms");
        assert_eq!(invocation(None, false), "cms");
    }
}
