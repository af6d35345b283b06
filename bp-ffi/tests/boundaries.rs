//! The crate's place in the workspace (ARCHITECTURE.md): the SDK speaks HTTP to the server and
//! shares only bp-core's wire types with it, so bp-core is the one workspace crate it links.

#![forbid(unsafe_code)]

#[test]
fn bp_core_is_the_only_workspace_crate_it_depends_on() {
    let manifest = include_str!("../Cargo.toml");
    let mut section = "";
    let mut workspace_crates = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let name = line.split(['=', ' ', '.']).next().unwrap_or("");
        if section.contains("dependencies") && name.starts_with("bp-") {
            workspace_crates.push(format!("{section} {name}"));
        }
    }
    assert_eq!(workspace_crates, ["[dependencies] bp-core"]);
}
