//! The machinery every conformance suite of bp-core shares, written once: a [`Factory`] that
//! makes a fresh value under test for every case, [`factory_fn`] to make one from a closure,
//! [`run_case`] to name a failing case, one macro expansion that turns a suite's list of cases
//! into one `#[tokio::test]` per case, a `run_all` body and a `CASES` list, and
//! [`assert_case_list`], which fails when a case is written but not listed.
//!
//! A suite is a module path, a factory trait and a case list. To add one (as [`security`](super::security) does):
//! 1. in `crate::testing::NAME`: `pub trait NameFactory: Factory<S = …> {}`, a blanket impl, cases as below;
//! 2. list them once in a hidden macro that calls `__conformance!`; `run_all`, `CASES` and a public macro use it;
//! 3. check the list with `assert_case_list(SUITES_DIR, "NameFactory", NAME::CASES)` in a test of bp-core.
//!
//! # The signature convention of a case
//!
//! A case is a public async function of the suite's module (or a module it re-exports from),
//! written on one line as `pub async fn name<F: NameFactory>(f: &F)`: one type parameter `F`
//! bounded by the suite's factory trait alone, one parameter of type `&F`, nothing returned.
//! [`assert_case_list`] finds the cases by that line, so a case written another way is an error
//! it reports, not a case it misses. The suite's own `run_all` has the same shape and is not a case.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::clock::ManualClock;

/// The folder of bp-core's suites: every `.rs` file below it is read by [`assert_case_list`].
pub const SUITES_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testing");

/// Makes what a suite runs on: a new, empty value under test for every case, reading the time
/// from `clock` if it reads the time at all (a suite whose records take every time as an
/// argument ignores it).
///
/// The factory outlives everything it makes, so it is the place for resources those need, such
/// as the temporary directory of a database file.
pub trait Factory {
    /// What the cases run on: a store, or a value holding several stores.
    type S: ?Sized + Send + Sync + 'static;

    /// A new, empty value under test on `clock`.
    fn fresh(&self, clock: Arc<ManualClock>) -> impl Future<Output = Arc<Self::S>> + Send;
}

/// A [`Factory`] made from a closure; see [`factory_fn`].
pub struct FnFactory<F>(F);

impl<F> fmt::Debug for FnFactory<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnFactory")
    }
}

/// A [`Factory`] from a closure that takes the clock and returns a future of the value under
/// test: `factory_fn(|clock| async move { Arc::new(MemoryStore::with_clock(clock)) })`, or
/// `factory_fn(|_| async { Arc::new(MemorySecurityStore::new()) })` for a store without a clock.
pub fn factory_fn<S, Fut, F>(f: F) -> FnFactory<F>
where
    S: ?Sized + Send + Sync + 'static,
    Fut: Future<Output = Arc<S>> + Send,
    F: Fn(Arc<ManualClock>) -> Fut,
{
    FnFactory(f)
}

impl<S, Fut, F> Factory for FnFactory<F>
where
    S: ?Sized + Send + Sync + 'static,
    Fut: Future<Output = Arc<S>> + Send,
    F: Fn(Arc<ManualClock>) -> Fut,
{
    type S = S;

    fn fresh(&self, clock: Arc<ManualClock>) -> impl Future<Output = Arc<S>> + Send {
        (self.0)(clock)
    }
}

/// Runs one case of the suite `suite`; if it panics, names the suite and the case on stderr
/// after the panic message, since `run_all` runs every case inside one test.
pub async fn run_case<Fut: Future<Output = ()>>(suite: &str, name: &str, case: Fut) {
    /// Prints the case's name when dropped by a panic unwinding through the case.
    struct Named<'a>(&'a str, &'a str);

    impl Drop for Named<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("{} conformance case `{}` failed", self.0, self.1);
            }
        }
    }

    let _named = Named(suite, name);
    case.await;
}

/// Asserts that `cases`, a suite's list, names every case function of the suite exactly once:
/// every `pub async fn name<F: {factory_trait}>(f: &F)` in the `.rs` files below `dir` (see the
/// [convention](self#the-signature-convention-of-a-case)). A case that is written but not listed
/// would never run; one listed twice would run twice. A listed name without a function does not
/// compile, so it is not checked here.
///
/// Panics naming what is wrong, and on a `pub async fn` that mentions `factory_trait` without
/// following the convention.
pub fn assert_case_list(dir: impl AsRef<Path>, factory_trait: &str, cases: &[&str]) {
    let found = case_functions(dir.as_ref(), factory_trait);
    assert!(!found.is_empty(), "no case of `{factory_trait}` found below {}", dir.as_ref().display());
    let mut listed: Vec<&str> = cases.to_vec();
    listed.sort_unstable();
    let twice: Vec<&&str> = listed.windows(2).filter(|w| w[0] == w[1]).map(|w| &w[0]).collect();
    assert!(twice.is_empty(), "cases listed twice in the `{factory_trait}` suite: {twice:?}");
    let unlisted: Vec<&str> =
        found.iter().map(|(name, _)| name.as_str()).filter(|name| !listed.contains(name)).collect();
    let places: Vec<String> = found
        .iter()
        .filter(|(name, _)| unlisted.contains(&name.as_str()))
        .map(|(name, file)| format!("{name} ({})", file.display()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "case functions of the `{factory_trait}` suite missing from its case list, so never run: {places:?}"
    );
}

/// Every case function of `factory_trait` below `dir`, with its file, sorted by name.
fn case_functions(dir: &Path, factory_trait: &str) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for file in rust_files(dir) {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        for line in text.lines() {
            if let Some(name) = case_name(line, factory_trait, &file) {
                found.push((name, file.clone()));
            }
        }
    }
    found.sort();
    found
}

/// The case `line` declares, if it declares one; panics on a near miss of the convention.
fn case_name(line: &str, factory_trait: &str, file: &Path) -> Option<String> {
    let rest = line.trim_start().strip_prefix("pub async fn ")?;
    let mentions = rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == factory_trait);
    if !mentions {
        return None;
    }
    let name_len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
    let (name, signature) = rest.split_at(name_len);
    let parameter = signature.strip_prefix(&format!("<F: {factory_trait}>(")).and_then(|s| s.strip_suffix(": &F) {"));
    let follows = parameter.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'));
    assert!(
        follows,
        "{}: `{}` does not follow the convention of a case, `pub async fn name<F: {factory_trait}>(f: &F) {{`",
        file.display(),
        line.trim()
    );
    (name != "run_all").then(|| name.to_owned())
}

/// The `.rs` files below `dir`, every folder deep.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let entries = std::fs::read_dir(&folder).unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display())).path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The one expansion of every suite's case list: one `#[tokio::test]` per case (`@tests`, with
/// any further attributes given before the label, such as an `#[ignore = "needs …"]`), the body
/// of `run_all` (`@run_all`), or the list of names (`@names`). A suite calls it from its own
/// hidden list macro as `$crate::__conformance! { $($mode)* "label" [$crate::testing::suite] a b c }`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance {
    (@tests ($factory:expr) $(#[$meta:meta])* $label:literal [$($suite:tt)*]) => {};
    (@tests ($factory:expr) $(#[$meta:meta])* $label:literal [$($suite:tt)*] $case:ident $($rest:ident)*) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        $(#[$meta])*
        async fn $case() {
            let factory = $factory;
            $crate::testing::conformance::run_case($label, ::core::stringify!($case), $($suite)*::$case(&factory))
                .await;
        }
        $crate::__conformance! { @tests ($factory) $(#[$meta])* $label [$($suite)*] $($rest)* }
    };
    (@run_all $factory:ident $label:literal [$($suite:tt)*] $($case:ident)*) => {{
        use $($suite)* as suite;
        $(
            $crate::testing::conformance::run_case($label, ::core::stringify!($case), suite::$case($factory)).await;
        )*
    }};
    (@names $label:literal [$($suite:tt)*] $($case:ident)*) => {
        &[$(::core::stringify!($case)),*]
    };
}
