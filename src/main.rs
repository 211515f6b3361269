//! `cms`: the command-line entry point. Everything lives in the library.
//!
//! Invoked under the name `cms-sim` (a link or copy), the binary is the simulator,
//! so `cms demo` works from a lone `cms` executable. `cms mcp` goes to the MCP
//! frontend, every other command to the CLI frontend; neither imports the other.

use clap::Parser;

fn main() {
    let invoked_as = std::env::args_os().next().and_then(|a| {
        std::path::Path::new(&a)
            .file_name()
            .map(|f| f.to_os_string())
    });
    if invoked_as.as_deref() == Some(std::ffi::OsStr::new("cms-sim")) {
        std::process::exit(cms::sim::run(std::env::args().skip(1).collect()));
    }
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(cms::engine::supervisor::ARG))
    {
        std::process::exit(cms::engine::supervisor::run(
            std::env::args().skip(2).collect(),
        ));
    }
    let cli = cms::cli::Cli::parse();
    if matches!(cli.command, cms::cli::Command::Mcp) {
        std::process::exit(cms::mcp::run(cms::cli::config(&cli)));
    }
    std::process::exit(cms::cli::run(cli));
}
