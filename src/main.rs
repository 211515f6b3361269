//! `cms`: the command-line entry point. Everything lives in the library.
//!
//! Invoked under the name `cms-sim` (a link or copy), the binary is the simulator,
//! so `cms demo` works from a lone `cms` executable. `cms mcp` goes to the MCP
//! frontend, every other command to the CLI frontend; neither imports the other.

use clap::FromArgMatches;

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
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match cms::cli::command()
        .color(color_choice(&args))
        .try_get_matches_from(&args)
        .and_then(|mut m| cms::cli::Cli::from_arg_matches_mut(&mut m))
    {
        Ok(cli) => cli,
        Err(e) => std::process::exit(usage_error(e, &args)),
    };
    if let cms::cli::Command::Serve(a) = &cli.command {
        std::process::exit(cms::web::serve(cms::cli::config(&cli), a));
    }
    if matches!(cli.command, cms::cli::Command::Mcp) {
        let want = cms::cli::host_use(&cli);
        std::process::exit(cms::mcp::run(cms::cli::config(&cli), want));
    }
    std::process::exit(cms::cli::run(cli));
}

/// The words before `--` (after it, everything is an argument of a script).
fn flags(args: &[std::ffi::OsString]) -> impl Iterator<Item = &str> {
    args.iter()
        .skip(1)
        .map_while(|a| a.to_str().filter(|a| *a != "--"))
}

/// `--color` as given, for clap's own help and errors (read before clap parses).
fn color_choice(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut words = flags(args);
    let mut when = None;
    while let Some(w) = words.next() {
        if let Some(v) = w.strip_prefix("--color=") {
            when = Some(v.to_string());
        } else if w == "--color" {
            when = words.next().map(str::to_string);
        }
    }
    match when.as_deref() {
        Some("always") => clap::ColorChoice::Always,
        Some("never") => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    }
}

/// A command line clap refused (or `--help`, `--version`): printed as clap prints it,
/// and under `--json` also as `{"error": ...}` on stdout. Returns the exit code.
fn usage_error(e: clap::Error, args: &[std::ffi::OsString]) -> i32 {
    use clap::error::ErrorKind;
    let informational = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
    if !informational && flags(args).any(|a| a == "--json") {
        let text = e.render().to_string();
        let message = text.trim().trim_start_matches("error: ");
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({ "error": message })
        );
    }
    let _ = e.print();
    e.exit_code()
}
