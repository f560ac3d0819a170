//! The shape of the code, kept true in CI: the layers of `DESIGN.md` ("Shape of the
//! code"), no import circle between files, and no file or function grown past what a
//! reader takes in. Read from the source text (`crate::` and `super::` paths, `use`
//! trees included), so that it needs no tool beyond the test itself.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers from the top. A file imports from its own layer or from below.
/// Each entry is the first segment of a module path (a file or a folder under `src/`).
const LAYERS: &[&[&str]] = &[
    &["main", "cli", "telemetry", "commands"],
    &["server"],
    &["daemon", "schedule", "inbox", "outbox", "retention"],
    &["sync"],
    &["actions", "refresh", "deliver", "subscribers"],
    &["cleeng", "source"],
    &["store"],
    &["config"],
    &["export"],
    &[
        "run", "action", "live", "event", "change", "clock", "redact", "metrics", "process",
        "progress", "error",
    ],
];

/// Longest file, tests inside it counted.
const MAX_FILE_LINES: usize = 600;
/// Longest function anywhere.
const MAX_FN_LINES: usize = 100;
/// Longest function in `sync.rs`, which tells one run's story.
const MAX_SYNC_FN_LINES: usize = 60;

struct File {
    /// Module path, `["store", "staging", "held"]` for `src/store/staging/held.rs`.
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files() -> Vec<File> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&src(), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(src()).unwrap().with_extension("");
            let mut module: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            File { module, path, text }
        })
        .collect()
}

/// The source without comments and string literals, so that a path in prose or in a
/// message is not taken for an import.
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            // A char literal that is a quote would open a string above.
            '\'' if chars.peek() == Some(&'"') => {
                chars.next();
                chars.next();
            }
            c => out.push(c),
        }
    }
    out
}

/// Every path this code names from the crate, absolute, as segments: `use` trees
/// expanded, `super::` resolved against `module`.
fn paths(module: &[String], code: &str) -> Vec<(Vec<String>, bool)> {
    let mut found = Vec::new();
    // Tokens: identifiers, `::`, braces, commas.
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            let mut word = c.to_string();
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' {
                    word.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            tokens.push(word);
        } else if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            tokens.push("::".into());
        } else if "{},;".contains(c) {
            tokens.push(c.to_string());
        } else if !c.is_whitespace() {
            tokens.push(" ".into());
        }
    }
    // The module `super` names from here.
    let parent = |levels: usize| module[..module.len().saturating_sub(levels)].to_vec();
    // The modules declared here (`mod x;`), named from here without a prefix.
    let children: BTreeSet<&str> = tokens
        .windows(3)
        .filter(|w| w[0] == "mod" && w[2] == ";")
        .map(|w| w[1].as_str())
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        let start = &tokens[i];
        let before = |back: usize| i.checked_sub(back).map(|j| tokens[j].as_str());
        let at_start = before(1) != Some("::") && before(1) != Some("mod");
        // A visibility (`pub(super)`, `pub(in crate::store)`) names no import.
        if before(1) == Some("in") || (before(1) == Some(" ") && before(2) == Some("pub")) {
            i += 1;
            continue;
        }
        // `pub use` and `pub(crate) use`: a re-export, which the caller weighs apart.
        let reexport = before(1) == Some("use")
            && (before(2) == Some("pub") || (before(2) == Some(" ") && before(5) == Some("pub")));
        let base = if start == "crate" {
            i += 1;
            Some(Vec::new())
        } else if start == "super" {
            let mut levels = 1;
            i += 1;
            while tokens.get(i).map(String::as_str) == Some("::")
                && tokens.get(i + 1).map(String::as_str) == Some("super")
            {
                levels += 1;
                i += 2;
            }
            Some(parent(levels))
        } else if at_start && (start == "self" || children.contains(start.as_str())) {
            let mut base = module.to_vec();
            if start != "self" {
                base.push(start.clone());
            }
            i += 1;
            Some(base)
        } else {
            None
        };
        match base {
            Some(base) if tokens.get(i).map(String::as_str) == Some("::") => {
                i += 1;
                let mut here = Vec::new();
                i = tree(&tokens, i, base, &mut here);
                found.extend(here.into_iter().map(|p| (p, reexport)));
            }
            Some(base) => found.push((base, reexport)),
            None => i += 1,
        }
    }
    found
}

/// Expands one use tree (or a plain path) from `i`, appending full paths.
fn tree(
    tokens: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i).map(String::as_str) {
            Some("{") => {
                i += 1;
                loop {
                    match tokens.get(i).map(String::as_str) {
                        Some("}") => return i + 1,
                        Some(",") => i += 1,
                        None => return i,
                        _ => i = tree(tokens, i, prefix.clone(), out),
                    }
                }
            }
            Some(word) if word.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                if word != "self" {
                    prefix.push(word.to_string());
                }
                i += 1;
                if tokens.get(i).map(String::as_str) == Some("::") {
                    i += 1;
                } else {
                    out.push(prefix);
                    return i;
                }
            }
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// Names a file defines at its top level or below (items of any visibility).
fn defines(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
        .filter(|w| !w.is_empty())
        .collect();
    for pair in words.windows(2) {
        if matches!(
            pair[0],
            "fn" | "struct" | "enum" | "trait" | "type" | "const" | "static" | "macro_rules!"
        ) {
            names.insert(pair[1].to_string());
        }
    }
    names
}

/// The file a path names: the deepest module file on it, or, for an item a folder's
/// `mod.rs` only re-exports, the file under it that defines the item.
fn resolve(
    files: &[File],
    by_module: &BTreeMap<Vec<String>, usize>,
    defs: &[BTreeSet<String>],
    path: &[String],
) -> Option<usize> {
    let mut depth = path.len();
    while depth > 0 && !by_module.contains_key(&path[..depth]) {
        depth -= 1;
    }
    if depth == 0 {
        // An item of the crate root: the macros live in their own files.
        let name = path.first()?;
        return (0..files.len())
            .find(|&f| defs[f].contains(name) && files[f].text.contains("#[macro_export]"));
    }
    let module = &path[..depth];
    let file = by_module[module];
    let Some(item) = path.get(depth) else {
        return Some(file);
    };
    if defs[file].contains(item) {
        return Some(file);
    }
    // Re-exported: the file under this folder that defines it.
    files
        .iter()
        .enumerate()
        .filter(|(_, f)| f.module.len() > depth && f.module[..depth] == *module)
        .find(|(i, _)| defs[*i].contains(item))
        .map(|(i, _)| i)
        .or(Some(file))
}

fn layer(module: &[String]) -> Option<usize> {
    let first = module.first()?;
    LAYERS
        .iter()
        .position(|layer| layer.contains(&first.as_str()))
}

struct Graph {
    files: Vec<File>,
    /// file -> files it imports, with a name that shows why.
    edges: Vec<BTreeMap<usize, String>>,
}

fn graph() -> Graph {
    let files = files();
    let by_module: BTreeMap<Vec<String>, usize> = files
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.module.is_empty())
        .map(|(i, f)| (f.module.clone(), i))
        .collect();
    let codes: Vec<String> = files.iter().map(|f| code(&f.text)).collect();
    let defs: Vec<BTreeSet<String>> = codes.iter().map(|c| defines(c)).collect();
    let mut edges = vec![BTreeMap::new(); files.len()];
    for (i, f) in files.iter().enumerate() {
        // A file's `mod tests` comes last: there, `super` is the file itself.
        let code = &codes[i];
        let split = code.find("mod tests {").unwrap_or(code.len());
        let mut tests_module = f.module.clone();
        tests_module.push("tests".into());
        let found = paths(&f.module, &code[..split])
            .into_iter()
            .chain(paths(&tests_module, &code[split..]));
        for (path, reexport) in found {
            // A folder's `pub use` of its own parts is its front door, not an import,
            // unless the file also uses the name itself.
            if reexport && path.len() > f.module.len() && path[..f.module.len()] == f.module[..] {
                let last = path.last().map(String::as_str).unwrap_or_default();
                let uses = code
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .filter(|w| *w == last)
                    .count();
                if uses < 2 {
                    continue;
                }
            }
            if let Some(to) = resolve(&files, &by_module, &defs, &path)
                && to != i
                && !files[to].module.is_empty()
            {
                edges[i].entry(to).or_insert_with(|| path.join("::"));
            }
        }
    }
    Graph { files, edges }
}

fn name(f: &File) -> String {
    f.path.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn every_module_has_a_layer() {
    let missing: Vec<String> = files()
        .iter()
        .filter(|f| !f.module.is_empty() && layer(&f.module).is_none())
        .map(name)
        .collect();
    assert!(
        missing.is_empty(),
        "files outside every layer of LAYERS: {missing:?}"
    );
}

#[test]
fn no_import_runs_back_up_a_layer() {
    let g = graph();
    let mut upward = Vec::new();
    for (from, to_all) in g.edges.iter().enumerate() {
        let (Some(here), f) = (layer(&g.files[from].module), &g.files[from]) else {
            continue;
        };
        for (&to, why) in to_all {
            if let Some(there) = layer(&g.files[to].module)
                && there < here
            {
                upward.push(format!("{} -> {} ({why})", name(f), name(&g.files[to])));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run back up:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other_even_through_others() {
    let g = graph();
    // Tarjan's strongly connected components, iteratively small enough to recurse.
    struct Tarjan<'g> {
        g: &'g Graph,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        circles: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on[v] = true;
            for &w in self.g.edges[v].keys() {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on[w] => self.low[v] = self.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut circle = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on[w] = false;
                    circle.push(w);
                    if w == v {
                        break;
                    }
                }
                if circle.len() > 1 {
                    self.circles.push(circle);
                }
            }
        }
    }
    let n = g.files.len();
    let mut t = Tarjan {
        g: &g,
        index: vec![None; n],
        low: vec![0; n],
        on: vec![false; n],
        stack: Vec::new(),
        next: 0,
        circles: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut described = Vec::new();
    for circle in &t.circles {
        let mut ties = Vec::new();
        for &a in circle {
            for &b in circle {
                if let Some(why) = g.edges[a].get(&b) {
                    ties.push(format!(
                        "  {} -> {} ({why})",
                        name(&g.files[a]),
                        name(&g.files[b])
                    ));
                }
            }
        }
        described.push(ties.join("\n"));
    }
    assert!(
        described.is_empty(),
        "import circles:\n{}",
        described.join("\n\n")
    );
}

/// Each function's length in lines, from its `fn` line to the brace that closes it at
/// the same indentation (rustfmt's layout).
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let rest = [
            "pub ",
            "pub(crate) ",
            "pub(super) ",
            "async ",
            "const ",
            "unsafe ",
        ]
        .iter()
        .fold(trimmed, |t, p| t.strip_prefix(p).unwrap_or(t));
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(signature) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = signature
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // A declaration without a body (in a trait) ends with `;` before any `{`.
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        let opened = lines[open].trim_end();
        if opened.ends_with(';') {
            continue;
        }
        if opened.ends_with('}') {
            out.push((name, i + 1, open - i + 1));
            continue;
        }
        let close = " ".repeat(indent) + "}";
        if let Some(end) = (open..lines.len()).find(|&j| lines[j] == close) {
            out.push((name, i + 1, end - i + 1));
        }
    }
    out
}

#[test]
fn no_file_or_function_is_too_long() {
    let mut long = Vec::new();
    for f in files() {
        let lines = f.text.lines().count();
        if lines > MAX_FILE_LINES {
            long.push(format!(
                "{}: {lines} lines (at most {MAX_FILE_LINES})",
                name(&f)
            ));
        }
        let most = if f.module == ["sync"] {
            MAX_SYNC_FN_LINES
        } else {
            MAX_FN_LINES
        };
        for (function, at, length) in functions(&f.text) {
            if length > most {
                long.push(format!(
                    "{}:{at} fn {function}: {length} lines (at most {most})",
                    name(&f)
                ));
            }
        }
    }
    assert!(long.is_empty(), "too long:\n{}", long.join("\n"));
}

#[test]
fn the_checks_see_what_they_check() {
    // A check that finds nothing to read would pass on anything.
    let g = graph();
    let edges: usize = g.edges.iter().map(BTreeMap::len).sum();
    assert!(
        g.files.len() > 40 && edges > 100,
        "{} files, {edges} imports",
        g.files.len()
    );
    let lengths = functions("fn a() {\n    x\n}\n\nasync fn b(\n    y: u8,\n) {\n}\n");
    assert_eq!(lengths, vec![("a".into(), 1, 3), ("b".into(), 5, 4)]);
    let found = paths(
        &["store".into(), "staging".into()],
        &code(
            "mod held;\nuse crate::{a::{B, c::D}, e};\nuse super::f::G;\nlet x = crate::h::i(\"crate::j\");\nheld::K",
        ),
    );
    let found: Vec<String> = found.iter().map(|(p, _)| p.join("::")).collect();
    assert_eq!(
        found,
        [
            "a::B",
            "a::c::D",
            "e",
            "store::f::G",
            "h::i",
            "store::staging::held::K"
        ]
    );
}
