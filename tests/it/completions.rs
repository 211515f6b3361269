//! `cms completions SHELL` and `cms man`: the scripts and pages come from the
//! command line's definition, and bash completes subcommands and session names
//! in a real shell (driven through tmux, as a person would type).

use super::support::{cms_bin, Cms};
use clap::CommandFactory;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_script_for_every_shell_naming_the_subcommands() {
    let cms = Cms::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = cms.ok(&["completions", shell]);
        for sub in ["spawn", "status", "delegate", "completions", "man"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    let bad = cms.run(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn session_names_come_one_a_line_and_none_before_any_session() {
    let cms = Cms::new();
    assert_eq!(cms.ok(&["__complete-names"]), "");
    assert!(
        !cms.dir.path().join("cms").join("cms.db").exists(),
        "completion created a store"
    );
    cms.ok(&["spawn", "--name", "one", "--prompt", "x"]);
    cms.ok(&["spawn", "--name", "two", "--prompt", "x"]);
    let mut names: Vec<String> = cms
        .ok(&["__complete-names"])
        .lines()
        .map(String::from)
        .collect();
    names.sort();
    assert_eq!(names, ["one", "two"]);
    // Hidden: not in the help.
    assert!(!cms.ok(&["--help"]).contains("__complete-names"));
}

#[test]
fn man_pages_for_cms_and_each_command() {
    let cms = Cms::new();
    let main = cms.ok(&["man"]);
    assert!(main.contains(".TH cms 1"), "{main}");
    assert!(main.contains("spawn"));
    let dir = cms.dir.path().join("man");
    let said = cms.ok(&["man", "--out", dir.to_str().unwrap()]);
    assert!(said.contains("manual pages"), "{said}");
    for page in ["cms.1", "cms-spawn.1", "cms-send.1", "cms-policy-show.1"] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text}");
    }
}

/// A tmux server of its own (its own socket), ended when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// A tmux server of its own running `shell` in a 160x40 window, in the test's
    /// project, with `cms` on PATH and its own CMS_HOME and HOME.
    fn start(shell: &str, cms: &Cms, path: &std::ffi::OsStr, env: &[(&str, &str)]) -> Tmux {
        let tmux = Tmux {
            socket: format!("cmstest-{}", uuid::Uuid::new_v4().simple()),
        };
        let dir = cms.dir.path();
        let mut cmd = tmux.cmd(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "160",
            "-y",
            "40",
            shell,
        ]);
        cmd.env("PATH", path)
            .env("CMS_HOME", dir.join("cms"))
            .env("HOME", dir)
            .env_remove("PROMPT_COMMAND")
            .current_dir(cms.work());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let started = cmd.output().unwrap();
        assert!(
            started.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&started.stderr)
        );
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).args(args);
        c
    }

    fn run(&self, args: &[&str]) {
        let out = self.cmd(args).output().unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait until the screen shows what `ok` looks for.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let screen = self.screen();
            if ok(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < end,
                "waited for {what}; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type `keys` on a fresh line; tmux key names (`Tab`) are sent as keys.
    fn type_line(&self, text: &str, keys: &[&str]) {
        self.run(&["send-keys", "-t", "t", "C-u", "clear", "Enter"]);
        self.wait_for("a clear screen", |s| s.trim() == "$");
        self.run(&["send-keys", "-t", "t", "-l", text]);
        for k in keys {
            self.run(&["send-keys", "-t", "t", k]);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(program)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn tmux_available() -> bool {
    available("tmux")
}

/// Two sessions, `cms` on a PATH of its own, and the script for `shell` in a file.
fn shell_setup(shell: &str, file: &str) -> (Cms, String, std::path::PathBuf) {
    let cms = Cms::new();
    cms.ok(&["spawn", "--name", "login", "--prompt", "x"]);
    cms.ok(&["spawn", "--name", "signup", "--prompt", "x"]);
    let dir = cms.dir.path();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(cms_bin(), bin.join("cms")).unwrap();
    let script = dir.join(file);
    std::fs::write(&script, cms.ok(&["completions", shell])).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (cms, path, script)
}

/// Fish (when installed; not required): `complete -C` answers as a Tab would.
#[test]
fn fish_completes_session_names() {
    if !available("fish") {
        eprintln!("skipping: fish is not installed");
        return;
    }
    let (cms, path, script) = shell_setup("fish", "cms.fish");
    let ask = |line: &str| {
        let out = Command::new("fish")
            .arg("--no-config")
            .arg("-c")
            .arg(format!(
                "source '{}'; complete -C '{line}'",
                script.display()
            ))
            .env("PATH", &path)
            .env("CMS_HOME", cms.dir.path().join("cms"))
            .env("HOME", cms.dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(ask("cms sta").contains("status"));
    let names = ask("cms status --name ");
    assert!(
        names.contains("login") && names.contains("signup"),
        "{names}"
    );
}

/// Where status takes its session: by position, with `--name`, or both.
fn status_takes_name() -> (bool, bool) {
    let cli = cms::cli::Cli::command();
    let status = cli.find_subcommand("status").expect("cms status");
    let named = |a: &&clap::Arg| {
        matches!(
            a.get_id().as_str(),
            "name" | "name_pos" | "session" | "session_name"
        ) && !a.is_hide_set()
    };
    let positional = status
        .get_arguments()
        .filter(named)
        .any(|a| a.is_positional());
    let option = status
        .get_arguments()
        .filter(named)
        .any(|a| a.get_long() == Some("name"));
    (positional, option)
}

#[test]
fn bash_completes_subcommands_and_session_names_in_a_real_shell() {
    if !tmux_available() {
        if std::env::var("CMS_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!("CMS_E2E_REQUIRED=1 but tmux is not installed (apt-get install -y tmux)");
        }
        eprintln!("skipping: tmux is not installed (apt-get install -y tmux)");
        return;
    }
    let (cms, path, script) = shell_setup("bash", "cms.bash");
    let tmux = Tmux::start(
        "bash --norc --noprofile",
        &cms,
        path.as_ref(),
        &[("PS1", "$ ")],
    );
    source(&tmux, &script);

    // A subcommand.
    tmux.type_line("cms sta", &["Tab"]);
    tmux.wait_for("`cms sta` completed to `cms status`", |s| {
        s.contains("$ cms status")
    });

    let (positional, option) = status_takes_name();
    // Both forms: `cms status NAME` and `cms status --name NAME`.
    assert!(positional && option, "cms status takes its name both ways");
    if positional {
        tmux.type_line("cms status ", &["Tab", "Tab"]);
        tmux.wait_for("both sessions offered", |s| {
            s.contains("login") && s.contains("signup")
        });
        tmux.type_line("cms status si", &["Tab"]);
        tmux.wait_for("`si` completed to `signup`", |s| {
            s.contains("$ cms status signup")
        });
    }
    if option {
        tmux.type_line("cms status --name ", &["Tab", "Tab"]);
        let screen = tmux.wait_for("both sessions offered after --name", |s| {
            s.contains("login") && s.contains("signup")
        });
        // Names only, not the files of the working directory.
        assert!(!screen.contains("cms.bash"), "{screen}");
        tmux.type_line("cms status --name lo", &["Tab"]);
        tmux.wait_for("`lo` completed to `login`", |s| {
            s.contains("$ cms status --name login")
        });
    }
    // A new session's name is not an existing one: no names after spawn --name.
    tmux.type_line("cms spawn --name lo", &["Tab"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!tmux.screen().contains("--name login"), "{}", tmux.screen());
}

/// Zsh (when installed; not required), through tmux like bash.
#[test]
fn zsh_completes_session_names_in_a_real_shell() {
    if !tmux_available() || !available("zsh") {
        eprintln!("skipping: zsh or tmux is not installed");
        return;
    }
    let (cms, path, script) = shell_setup("zsh", "_cms");
    let tmux = Tmux::start("zsh -f", &cms, path.as_ref(), &[]);
    tmux.wait_for("zsh's prompt", |s| !s.trim().is_empty());
    tmux.run(&[
        "send-keys",
        "-t",
        "t",
        "-l",
        &format!(
            "PS1='$ '; autoload -U compinit; compinit -u; source '{}'; clear",
            script.display()
        ),
    ]);
    tmux.run(&["send-keys", "-t", "t", "Enter"]);
    tmux.wait_for("the script sourced", |s| s.trim() == "$");
    tmux.type_line("cms sta", &["Tab"]);
    tmux.wait_for("`cms sta` completed to `cms status`", |s| {
        s.contains("$ cms status")
    });
    tmux.type_line("cms status --name ", &["Tab"]);
    tmux.wait_for("both sessions offered", |s| {
        s.contains("login") && s.contains("signup")
    });
}

fn source(tmux: &Tmux, script: &Path) {
    // Wait for bash's first prompt, then set a plain one and load the script.
    tmux.wait_for("bash's prompt", |s| !s.trim().is_empty());
    tmux.run(&[
        "send-keys",
        "-t",
        "t",
        "-l",
        &format!("PS1='$ '; source '{}'; clear", script.display()),
    ]);
    tmux.run(&["send-keys", "-t", "t", "Enter"]);
    tmux.wait_for("the script sourced", |s| s.trim() == "$");
}
