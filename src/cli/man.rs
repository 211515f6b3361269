//! `cms man [--out DIR]`: manual pages from the command line's own definition
//! (`Cli::command()`): `cms.1` on stdout, or `cms.1` and one page per command
//! (`cms-spawn.1`, `cms-policy-check.1`, ...) written into DIR.

use super::args::{Cli, ManArgs};
use super::out;
use crate::app::exit;
use clap::CommandFactory;
use std::path::{Path, PathBuf};

pub fn run(args: &ManArgs, json: bool) -> i32 {
    match &args.out {
        None => {
            let mut page = Vec::new();
            if let Err(e) = clap_mangen::Man::new(Cli::command()).render(&mut page) {
                return exit::fail(e);
            }
            let _ = out::with(|w| w.write_all(&page));
            0
        }
        Some(dir) => match write_pages(dir) {
            Ok(pages) => {
                let _ = if json {
                    out::line(format_args!("{}", serde_json::json!({ "pages": pages })))
                } else {
                    out::line(format_args!(
                        "Wrote {} manual pages into {} (try: man -l {})",
                        pages.len(),
                        dir.display(),
                        dir.join("cms.1").display()
                    ))
                };
                0
            }
            Err(e) => exit::fail(format!(
                "cannot write the manual pages into {}: {e}",
                dir.display()
            )),
        },
    }
}

/// Write every page into `dir` (created if needed); returns the files written.
pub fn write_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(Cli::command(), dir)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "1")
                && p.file_name()
                    .and_then(|f| f.to_str())
                    .is_some_and(|f| f == "cms.1" || f.starts_with("cms-"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_cms_and_each_command() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "cms.1",
            "cms-spawn.1",
            "cms-status.1",
            "cms-policy-check.1",
            "cms-man.1",
        ] {
            assert!(
                names.iter().any(|n| n == page),
                "{page} missing from {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("complete-names")),
            "{names:?}"
        );
        let spawn = std::fs::read_to_string(dir.path().join("cms-spawn.1")).unwrap();
        assert!(spawn.starts_with(".ie") || spawn.contains(".TH"), "{spawn}");
        assert!(
            spawn.contains(".TH cms-spawn 1"),
            "{}",
            &spawn[..spawn.len().min(400)]
        );
    }
}
