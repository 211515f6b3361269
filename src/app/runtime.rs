//! What every frontend stands on: the async runtime, the signal that ends it, and
//! messages on stderr that never panic. Shared by the CLI and the MCP server, so
//! neither leans on the other.

/// The multi-threaded runtime every async command runs on.
pub fn init_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Write one line to stderr; a closed or broken stderr is ignored.
pub fn error_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|_| err.write_all(b"\n"));
}

/// `eprintln!` without its panic when stderr is a closed pipe (`cms ... 2>&1 | head`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::app::runtime::error_line(format_args!($($arg)*))
    };
}
pub(crate) use errln;
