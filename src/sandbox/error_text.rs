//! Lua errors as people read them, the same from every state: a script, a policy,
//! a plugin or a strategy.

/// A Lua error as people read it: `file:line: message`, then the traceback without
/// mlua's internal frames. Errors raised by Rust functions (`cms.spawn` on a
/// duplicate name, say) carry no position of their own: they get the position of
/// the script line that called them.
pub fn error_text(e: &mlua::Error) -> String {
    let (message, traceback) = split(e);
    let message = ["runtime error: ", "syntax error: "]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .unwrap_or(&message)
        .to_string();
    let frames: Vec<&str> = traceback
        .lines()
        .skip_while(|l| l.trim() == "stack traceback:")
        .filter(|l| {
            let l = l.trim();
            !(l.is_empty()
                || l.starts_with("[C]: in local 'poll'")
                || l.starts_with("[C]: in hook")
                || l.starts_with("[string \"?\"]"))
        })
        .collect();
    let has_position = message
        .split(':')
        .nth(1)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    let mut out = match frames
        .iter()
        .map(|l| l.trim())
        .find(|l| !l.starts_with("[C]"))
    {
        Some(frame) if !has_position => {
            let position: String = frame.splitn(3, ':').take(2).collect::<Vec<_>>().join(":");
            format!("{position}: {message}")
        }
        _ => message,
    };
    if !frames.is_empty() {
        out.push_str("\nstack traceback:");
        for f in frames {
            out.push_str("\n\t");
            out.push_str(f.trim());
        }
    }
    out
}

/// The innermost message and the outermost traceback of an error.
fn split(e: &mlua::Error) -> (String, String) {
    match e {
        mlua::Error::CallbackError { traceback, cause } => {
            let (message, inner) = split(cause);
            (
                message,
                if inner.is_empty() {
                    traceback.clone()
                } else {
                    inner
                },
            )
        }
        mlua::Error::WithContext { context, cause } => {
            let (message, tb) = split(cause);
            (format!("{context}: {message}"), tb)
        }
        other => {
            let text = other.to_string();
            match text.split_once("\nstack traceback:") {
                Some((m, tb)) => (m.to_string(), tb.to_string()),
                None => (text, String::new()),
            }
        }
    }
}
