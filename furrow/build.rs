//! Says whether the repository's README and guide sit beside this crate:
//! they do in the repository, where `src/lib.rs` compiles their examples
//! as doc tests (`cfg(furrow_repo_docs)`), and not in the published
//! package, which leaves this script out too (`include` in Cargo.toml), so
//! a `cargo test --doc` there does not look for files it lacks.

use std::path::PathBuf;

fn main() {
    // The cfg is declared in the workspace's `[workspace.lints.rust]`, not
    // here: the published package has no build script and must know it too.
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default()).join("..");
    let docs = [root.join("README.md"), root.join("docs").join("guide.md")];
    if docs.iter().all(|d| d.is_file()) {
        for d in &docs {
            println!("cargo::rerun-if-changed={}", d.display());
        }
        println!("cargo::rustc-cfg=furrow_repo_docs");
    } else {
        println!("cargo::rerun-if-changed=build.rs");
    }
}
