//! `cms`: the command-line entry point. Everything lives in the library.

use clap::Parser;

fn main() {
    let cli = cms::cli::Cli::parse();
    std::process::exit(cms::cli::run(cli));
}
