//! `cms-sim`: the simulated `claude` executable used by tests and `cms demo`.

fn main() {
    let code = cms::sim::run(std::env::args().skip(1).collect());
    std::process::exit(code);
}
