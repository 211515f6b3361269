//! `cms top` in a real terminal (tmux, as a person would use it): the sessions
//! appear, their states follow the turns sent from elsewhere, `m` sends, `i`
//! interrupts, `/` filters, `q` leaves the sessions running.

use super::support::{cms_bin, sim_bin, Cms};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of its own (its own socket) running one command, ended with the test.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(cms: &Cms, command: &str) -> Tmux {
        let tmux = Tmux {
            socket: format!("cmstop-{}", uuid::Uuid::new_v4().simple()),
        };
        let dir = cms.dir.path();
        let out = tmux
            .cmd(&[
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                "160",
                "-y",
                "45",
                command,
            ])
            .env("CMS_HOME", dir.join("cms"))
            .env("CMS_CLAUDE_BIN", sim_bin())
            .env("HOME", dir)
            .env("CMS_HOST_IDLE", "20s")
            .env("TERM", "xterm-256color")
            .env_remove("CMS_NO_HOST")
            .env_remove("NO_COLOR")
            .current_dir(cms.work())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).args(args);
        c
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let out = self.cmd(&["send-keys", "-t", "t", k]).output().unwrap();
            assert!(out.status.success(), "send-keys {k}");
        }
    }

    fn text(&self, text: &str) {
        let out = self
            .cmd(&["send-keys", "-t", "t", "-l", text])
            .output()
            .unwrap();
        assert!(out.status.success(), "send-keys -l {text}");
    }

    fn screen(&self) -> String {
        let out = self
            .cmd(&["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Wait (20 s at most) until the screen shows what `ok` looks for.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(20);
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
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

/// The table's line of session `name`, if shown.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
}

fn row_has(screen: &str, name: &str, what: &str) -> bool {
    row(screen, name).is_some_and(|l| l.contains(what))
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn top_shows_sessions_live_and_acts_on_them() {
    if !tmux_available() {
        eprintln!("skipping: tmux is not installed");
        return;
    }
    let cms = Cms::new();
    if !cms.host_mode() {
        eprintln!("skipping: cms top follows the host's sessions (CMS_TEST_NO_HOST is set)");
        return;
    }
    cms.ok(&["spawn", "--name", "alpha", "--prompt", "x"]);
    cms.ok(&["spawn", "--name", "beta", "--prompt", "x"]);
    let top = Tmux::start(
        &cms,
        &format!("{} top; echo EXITED $?; sleep 60", cms_bin().display()),
    );
    top.wait_for("both sessions", |s| {
        row_has(s, "alpha", "idle") && row_has(s, "beta", "idle")
    });

    // A turn sent from elsewhere: busy, then idle with its answer.
    let mut send = cms.spawn_piped(&["send", "alpha", "SLOW 3000 slow answer"]);
    top.wait_for("alpha busy", |s| row_has(s, "alpha", "busy"));
    top.wait_for("alpha idle again", |s| {
        row_has(s, "alpha", "idle") && row_has(s, "alpha", "slow answer")
    });
    assert!(send.wait().unwrap().success());

    // `/` filters to one row; the selection follows it.
    top.keys(&["/"]);
    top.text("bet");
    top.keys(&["Enter"]);
    top.wait_for("only beta", |s| {
        row(s, "beta").is_some() && row(s, "alpha").is_none()
    });

    // `m` sends a message from inside top; the answer shows.
    top.keys(&["m"]);
    top.wait_for("the message prompt", |s| s.contains("message to beta"));
    top.text("hello from top");
    top.keys(&["Enter"]);
    top.wait_for("beta's answer", |s| {
        row_has(s, "beta", "echo: hello from top")
    });

    // Esc clears the filter.
    top.keys(&["Escape"]);
    top.wait_for("both rows again", |s| {
        row(s, "alpha").is_some() && row(s, "beta").is_some()
    });

    // `i` interrupts a turn that never ends.
    let mut hang = cms.spawn_piped(&["send", "beta", "HANG"]);
    top.wait_for("beta busy", |s| row_has(s, "beta", "busy"));
    top.keys(&["i"]);
    top.wait_for("beta interrupted", |s| {
        s.contains("beta interrupted") && row_has(s, "beta", "idle")
    });
    let _ = hang.wait();

    // `q` leaves; the sessions live on in the host.
    top.keys(&["q"]);
    top.wait_for("top to end", |s| s.contains("EXITED 0"));
    let list = cms.json(&["list"]);
    let states: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.iter().all(|(_, s)| s == "idle"),
        "sessions after top: {states:?}"
    );
}

#[test]
fn top_needs_a_terminal() {
    let cms = Cms::new();
    let out = cms.run(&["top"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("terminal"), "{err}");
}
