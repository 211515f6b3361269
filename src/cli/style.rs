//! Colours on a terminal: when they are on (`--color`, `NO_COLOR`, a terminal or not)
//! and how a session state looks. Plain ANSI SGR codes through clap's own `anstyle`.

use crate::engine::SessionState;
pub use clap::builder::styling::Style;
use clap::builder::styling::{AnsiColor, Effects};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorWhen {
    // On a terminal, unless NO_COLOR is set.
    #[default]
    Auto,
    Always,
    Never,
}

static STDOUT: AtomicBool = AtomicBool::new(false);
static STDERR: AtomicBool = AtomicBool::new(false);

/// Whether a stream gets colours: `always`, `never`, or (auto) a terminal when
/// `NO_COLOR` is unset or empty.
pub fn decide(when: ColorWhen, terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    match when {
        ColorWhen::Always => true,
        ColorWhen::Never => false,
        ColorWhen::Auto => terminal && no_color.is_none_or(|v| v.is_empty()),
    }
}

/// Decide for stdout and stderr, once at start.
pub fn init(when: ColorWhen) {
    let no_color = std::env::var_os("NO_COLOR");
    let nc = no_color.as_deref();
    STDOUT.store(
        decide(when, std::io::stdout().is_terminal(), nc),
        Ordering::Relaxed,
    );
    STDERR.store(
        decide(when, std::io::stderr().is_terminal(), nc),
        Ordering::Relaxed,
    );
}

/// Colours on stdout.
pub fn stdout() -> bool {
    STDOUT.load(Ordering::Relaxed)
}

/// Colours on stderr (logs).
pub fn stderr() -> bool {
    STDERR.load(Ordering::Relaxed)
}

/// How a state reads: failed and killed red, busy and retrying yellow, waiting for
/// approval magenta, idle green, starting and queued cyan, stopped, paused and parked
/// dim.
pub fn state_style(s: SessionState) -> Style {
    match s {
        SessionState::Failed | SessionState::Killed => AnsiColor::Red.on_default(),
        SessionState::Busy | SessionState::Retrying => AnsiColor::Yellow.on_default(),
        SessionState::Idle => AnsiColor::Green.on_default(),
        SessionState::WaitingApproval => AnsiColor::Magenta.on_default(),
        SessionState::Starting | SessionState::Queued => AnsiColor::Cyan.on_default(),
        SessionState::Stopped | SessionState::Paused | SessionState::Parked => {
            Style::new().effects(Effects::DIMMED)
        }
    }
}

/// `text` in `style` when `on`.
pub fn paint(text: &str, style: Style, on: bool) -> String {
    if on {
        format!("{style}{text}{style:#}")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn auto_is_a_terminal_without_no_color() {
        assert!(decide(ColorWhen::Auto, true, None));
        assert!(decide(ColorWhen::Auto, true, Some(OsStr::new(""))));
        assert!(!decide(ColorWhen::Auto, true, Some(OsStr::new("1"))));
        assert!(!decide(ColorWhen::Auto, false, None));
        assert!(decide(ColorWhen::Always, false, Some(OsStr::new("1"))));
        assert!(!decide(ColorWhen::Never, true, None));
    }

    #[test]
    fn states_are_painted_only_when_on() {
        assert_eq!(
            paint("idle", state_style(SessionState::Idle), false),
            "idle"
        );
        assert_eq!(
            paint("failed", state_style(SessionState::Failed), true),
            "\x1b[31mfailed\x1b[0m"
        );
    }
}
