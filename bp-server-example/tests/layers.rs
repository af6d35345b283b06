//! The layers of the server's top-level modules, as the crate's documentation (`src/lib.rs`) lists
//! them: every `crate::…` and `super::…` path in `src/**/*.rs` (comments and literals aside) must
//! lead from a module to one of a lower layer. So no two top-level modules import each other, no
//! cycle goes through several, and the list in the documentation names every module and stays
//! true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One `crate::…` or `super::…` path that leaves its top-level module.
#[derive(Debug)]
struct Import {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
}

#[test]
fn top_level_modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let layers = documented_layers(&std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs"));
    assert!(layers.len() >= 2, "src/lib.rs lists the layers as `//! 1. `name`, `name`: …` lines");
    let imports = imports_in(&src);
    let found: BTreeSet<String> = top_level_modules(&src);
    let listed: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(found, listed, "src/lib.rs's layer list names every top-level module, and only those");
    let mut wrong = Vec::new();
    for i in &imports {
        let (from, to) = (layers[&i.from], layers.get(&i.to).copied().unwrap_or(usize::MAX));
        if to >= from {
            wrong.push(format!(
                "{}:{}: `{}` (layer {from}) imports `{}` (layer {to})",
                i.file.display(),
                i.line,
                i.from,
                i.to,
            ));
        }
    }
    let pairs = mutual_pairs(&imports);
    assert!(pairs.is_empty() && wrong.is_empty(), "modules that import each other: {pairs:?}\n{}", wrong.join("\n"));
}

/// `lib.rs`'s list `//! N. `a`, `b`: …`: each module's layer number.
fn documented_layers(lib: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! ") else { continue };
        let Some((number, rest)) = rest.split_once(". ") else { continue };
        let Ok(number) = number.parse::<usize>() else { continue };
        let names = rest.split(':').next().unwrap_or("");
        for name in names.split(',') {
            if let Some(name) = name.trim().strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                layers.insert(name.to_owned(), number);
            }
        }
    }
    layers
}

/// The children of the crate root: `src/x.rs` and `src/x/mod.rs`, but for `lib.rs` (the root)
/// and `main.rs` (the binary, a crate of its own).
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .expect("src")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            let name = path.file_stem()?.to_str()?.to_owned();
            let module = path.is_dir() && path.join("mod.rs").exists()
                || path.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main";
            module.then_some(name)
        })
        .collect()
}

/// Every path in `src` that leads out of its file's top-level module.
fn imports_in(src: &Path) -> Vec<Import> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut imports = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("inside src").to_owned();
        let Some(module) = module_path(&relative) else { continue };
        let text = std::fs::read_to_string(&file).expect("source");
        let code = strip_comments_and_literals(&text);
        for (offset, target) in paths(&code, &module) {
            if target != module[0] {
                let line = code[..offset].matches('\n').count() + 1;
                imports.push(Import { from: module[0].clone(), to: target, file: relative.clone(), line });
            }
        }
    }
    imports
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// `a.rs` → `[a]`, `a/mod.rs` → `[a]`, `a/b.rs` → `[a, b]`; `None` for the crate roots.
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if parts.is_empty() && (stem == "lib" || stem == "main") {
        return None;
    }
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

/// `text` with comments, string and character literals blanked out (newlines kept), so that
/// only code is left.
fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br#"…"#: ends at a quote followed by as many hashes.
            i += chars[i..].iter().position(|&c| c == '"').unwrap_or(0) + 1;
            while i < chars.len() && !(chars[i] == '"' && chars[i + 1..].iter().take(hashes).all(|&c| c == '#')) {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += 1 + hashes;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('x', '\n', '\''); a lifetime ('a) has no closing quote there.
            i += if next == Some('\\') { 2 } else { 1 };
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The number of `#`s of a raw string literal starting at `i`, if one does.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let j = match (chars.get(i), chars.get(i + 1)) {
        (Some('r'), _) => i + 1,
        (Some('b'), Some('r')) => i + 2,
        _ => return None,
    };
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some(hashes)
}

/// The top-level module each `crate::…` and `super::…` path of `code` (the code of the file of
/// module `module`) leads to, with its offset. Inline modules (`mod tests { … }`) are tracked so
/// that their `super::` resolves to the file's own module.
fn paths(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let bytes = code.as_bytes();
    let inline = inline_modules(code);
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$');
        if word_start && code[i..].starts_with("crate") {
            if let Some(after) = after_separator(code, i + "crate".len()) {
                found.extend(names_at(code, after).into_iter().map(|n| (i, n)));
            }
        } else if word_start && code[i..].starts_with("super") {
            let mut supers = 0;
            let mut at = i;
            while code[at..].starts_with("super") {
                match after_separator(code, at + "super".len()) {
                    Some(after) => {
                        supers += 1;
                        at = after;
                    }
                    None => break,
                }
            }
            let mut here: Vec<String> = module.to_vec();
            here.extend(inline.iter().filter(|(open, close, _)| *open < i && i < *close).map(|(_, _, n)| n.clone()));
            if supers > 0 && supers <= here.len() {
                let base = &here[..here.len() - supers];
                match base.first() {
                    Some(top) => found.push((i, top.clone())),
                    None => found.extend(names_at(code, at).into_iter().map(|n| (i, n))),
                }
            }
            i = at.max(i + 1);
            continue;
        }
        i += 1;
    }
    found
}

/// Where the path goes on after `::` at `at` (spaces allowed around it), if there is one.
fn after_separator(code: &str, at: usize) -> Option<usize> {
    let rest = &code[at..];
    let trimmed = rest.trim_start();
    let rest2 = trimmed.strip_prefix("::")?;
    Some(code.len() - rest2.trim_start().len())
}

/// The first name at `at`, or each item's first name in a `{ … }` group there.
fn names_at(code: &str, at: usize) -> Vec<String> {
    let rest = &code[at..];
    let ident = |s: &str| s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = Vec::new();
        let mut start = 0;
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    items.push(&group[start..k]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..k]);
                    start = k + 1;
                }
                _ => {}
            }
        }
        return items.into_iter().map(ident).filter(|n| !n.is_empty() && n != "self").collect();
    }
    let name = ident(rest);
    if name.is_empty() { Vec::new() } else { vec![name] }
}

/// The inline modules of `code`: where each one's braces open and close, and its name.
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let bytes = code.as_bytes();
    let mut open: Vec<(usize, Option<String>)> = Vec::new();
    let mut modules = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'{' => {
                let before = code[..i].trim_end();
                let name: String =
                    before.chars().rev().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
                let name: String = name.chars().rev().collect();
                let keyword = before[..before.len() - name.len()].trim_end();
                let is_mod = !name.is_empty()
                    && keyword.ends_with("mod")
                    && !keyword[..keyword.len() - 3].ends_with(|c: char| c.is_alphanumeric() || c == '_');
                open.push((i, is_mod.then_some(name)));
            }
            b'}' => {
                if let Some((start, Some(name))) = open.pop() {
                    modules.push((start, i, name));
                }
            }
            _ => {}
        }
    }
    modules
}

/// The pairs of modules that import each other.
fn mutual_pairs(imports: &[Import]) -> Vec<(String, String)> {
    let edges: BTreeSet<(&str, &str)> = imports.iter().map(|i| (i.from.as_str(), i.to.as_str())).collect();
    edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(*b, *a)))
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn the_scanner_finds_crate_and_super_paths_but_not_comments_or_strings() {
    let code = strip_comments_and_literals(
        "use crate::http::problem::ApiError;\nuse crate::{auth::Auth, events};\n// crate::app\n\
         let s = \"crate::jobs\"; let c = '{'; let r = r#\"crate::demo\"#;\n\
         fn f<'a>(x: &'a str) {}\nuse super::super::state::AppState;\n\
         mod tests { use super::*; use super::super::config; }\n",
    );
    let module = vec!["v1".to_owned(), "transfers".to_owned()];
    let tops: Vec<String> = paths(&code, &module).into_iter().map(|(_, t)| t).collect();
    assert_eq!(tops, ["http", "auth", "events", "state", "v1", "v1"]);
    assert_eq!(module_path(Path::new("events/mod.rs")), Some(vec!["events".to_owned()]));
    assert_eq!(module_path(Path::new("lib.rs")), None);
    let layers = documented_layers("//! 1. `config`: x\n//! 2. `http`, `auth`: y\n//! text 3. `no`\n");
    assert_eq!(layers.into_iter().collect::<Vec<_>>(), [("auth".into(), 2), ("config".into(), 1), ("http".into(), 2)]);
}
