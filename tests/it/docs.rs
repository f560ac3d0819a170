//! The README and `docs/` stay what a newcomer can use: the README short enough to read
//! in the first hour, and every link between them (and to the repository's files) leads
//! somewhere.

use std::path::{Path, PathBuf};

/// The README's budget: what it is, the two commands, a tour, where to read on.
const README_MAX_BYTES: u64 = 15 * 1024;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The targets of the relative Markdown links of a text, without their `#anchor`.
fn local_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|target| !target.starts_with("http") && !target.starts_with('#'))
        .map(|target| target.split('#').next().unwrap_or(target).to_string())
        .collect()
}

fn markdown_files() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    for entry in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_readme_is_short() {
    let size = std::fs::metadata(root().join("README.md"))
        .expect("README.md")
        .len();
    assert!(size <= README_MAX_BYTES, "README.md is {size} bytes");
}

#[test]
fn every_local_link_leads_to_a_file() {
    let mut broken = Vec::new();
    let mut seen = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).expect("readable");
        let dir = file.parent().unwrap_or(Path::new("."));
        for target in local_links(&text) {
            seen += 1;
            if !dir.join(&target).exists() {
                broken.push(format!("{}: {target}", file.display()));
            }
        }
    }
    assert!(seen > 10, "only {seen} links read");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_document_is_reachable_from_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let linked = local_links(&readme);
    for file in markdown_files().iter().skip(1) {
        let name = format!(
            "docs/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        assert!(
            linked.contains(&name),
            "{name} is not linked from the README"
        );
    }
}
