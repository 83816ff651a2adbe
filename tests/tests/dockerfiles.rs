//! Static checks of the image build files: `Dockerfile.sidecar`, `Dockerfile.controller`,
//! `.dockerignore`, and the example controllers' `examples/python-controller/Dockerfile` and
//! `examples/go-controller/Dockerfile`. No Docker engine is needed: the files are parsed here, the workspace is
//! read with `cargo metadata`, and the default listen addresses come from the built binaries'
//! `--help`. The build steps themselves are replayed by hand with
//! `tests/scripts/replay-dockerfile.sh <Dockerfile>` (not in CI: it takes minutes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Each Dockerfile and the workspace package whose binary its image runs.
const IMAGES: [(&str, &str); 2] = [
    ("Dockerfile.sidecar", "leader-sidecar"),
    ("Dockerfile.controller", "newresource-controller"),
];

/// The labels every image carries (OCI image spec, annotations).
const REQUIRED_LABELS: [&str; 6] = [
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
];

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace root");
    // Canonical, like the paths `cargo metadata` prints.
    std::fs::canonicalize(root).expect("the workspace root exists")
}

// ---------------------------------------------------------------------------------------------
// Dockerfile parsing: enough of the syntax for these files (continuations, comments, stages).

#[derive(Debug)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    /// The image or earlier stage after FROM.
    base: String,
    name: Option<String>,
    body: Vec<Instruction>,
}

impl Stage {
    fn label(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("FROM {}", self.base))
    }

    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.body.iter().filter(move |i| i.keyword == keyword)
    }
}

#[derive(Debug)]
struct Dockerfile {
    name: String,
    stages: Vec<Stage>,
}

impl Dockerfile {
    fn load(name: &str) -> Dockerfile {
        let path = repo_root().join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instructions(&text) {
            if ins.keyword == "FROM" {
                let words: Vec<&str> = ins
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let name = match words.as_slice() {
                    [_, kw, name] if kw.eq_ignore_ascii_case("as") => Some(name.to_string()),
                    [_] => None,
                    _ => panic!("{name}:{}: cannot read FROM {}", ins.line, ins.args),
                };
                stages.push(Stage {
                    base: words[0].to_string(),
                    name,
                    body: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.body.push(ins);
            } else {
                assert_eq!(
                    ins.keyword, "ARG",
                    "{name}:{}: only ARG may come before the first FROM",
                    ins.line
                );
            }
        }
        Dockerfile {
            name: name.to_string(),
            stages,
        }
    }

    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    fn last(&self) -> &Stage {
        self.stages
            .last()
            .unwrap_or_else(|| panic!("{}: no FROM", self.name))
    }

    /// The stages before the final one: where the binary is built.
    fn build_stages(&self) -> &[Stage] {
        &self.stages[..self.stages.len().saturating_sub(1)]
    }

    /// Every cargo command of every RUN, with its stage, the RUN and its words.
    fn cargo_commands(&self) -> Vec<(&Stage, &Instruction, Vec<String>)> {
        let mut out = Vec::new();
        for stage in &self.stages {
            for run in stage.all("RUN") {
                for cmd in shell_commands(&run.args) {
                    if cmd.first().map(String::as_str) == Some("cargo") {
                        out.push((stage, run, cmd));
                    }
                }
            }
        }
        out
    }
}

/// Instructions with their first line number: continuation lines joined, comments and blank
/// lines dropped (also inside a continuation, as Docker does).
fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && buf.is_empty()) {
            continue;
        }
        if buf.is_empty() {
            start = i + 1;
        }
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                buf.push_str(head);
                buf.push(' ');
            }
            None => {
                buf.push_str(line);
                let text = std::mem::take(&mut buf);
                let text = text.trim();
                let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
                out.push(Instruction {
                    line: start,
                    keyword: keyword.to_ascii_uppercase(),
                    args: args.trim().to_string(),
                });
            }
        }
    }
    assert!(buf.is_empty(), "the last line ends with a continuation");
    out
}

/// The simple commands of a shell-form RUN, as words (split at `&&`, `||`, `;` and `|`).
fn shell_commands(run: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    for word in run.split_whitespace() {
        if ["&&", "||", ";", "|"].contains(&word) {
            out.push(Vec::new());
        } else if let Some(w) = word.strip_suffix(';') {
            out.last_mut().unwrap().push(w.to_string());
            out.push(Vec::new());
        } else {
            out.last_mut().unwrap().push(word.to_string());
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

/// Whether the command's words start with `prefix` (`["cargo", "build"]`).
fn is_command(words: &[String], prefix: &[&str]) -> bool {
    words.len() >= prefix.len() && words.iter().zip(prefix).all(|(a, b)| a == b)
}

/// The values of a command-line option: `-p x`, `--package x`, `--package=x`.
fn option_values(words: &[String], names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        for name in names {
            if w == name {
                out.extend(words.get(i + 1).cloned());
            } else if let Some(v) = w.strip_prefix(&format!("{name}=")) {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// COPY's flags (`--from=x`) and its sources and destination.
fn copy_parts(args: &str) -> (BTreeMap<String, String>, Vec<String>, String) {
    let mut flags = BTreeMap::new();
    let mut paths = Vec::new();
    for w in args.split_whitespace() {
        match w.strip_prefix("--") {
            Some(flag) if paths.is_empty() => {
                let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
                flags.insert(k.to_string(), v.to_string());
            }
            _ => paths.push(w.to_string()),
        }
    }
    assert!(
        paths.len() >= 2,
        "COPY {args}: needs a source and a destination"
    );
    let dest = paths.pop().unwrap();
    (flags, paths, dest)
}

/// LABEL's key=value pairs; values may be double-quoted.
fn label_pairs(args: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = args.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return out;
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|&c| c != '=')).collect();
        assert_eq!(
            chars.next(),
            Some('='),
            "LABEL {args}: `{key}` has no value"
        );
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => panic!("LABEL {args}: unterminated quote"),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        out.push((key.trim().to_string(), value));
    }
}

/// `ARG NAME=default` declarations of a stage.
fn arg_defaults(stage: &Stage) -> BTreeMap<String, String> {
    stage
        .all("ARG")
        .filter_map(|a| a.args.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// .dockerignore: Docker's rules (last matching pattern wins; a pattern matching a directory
// excludes what is under it; `*`, `?` within a path segment, `**` for any number of segments).

struct DockerIgnore {
    raw: Vec<String>,
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    fn load() -> DockerIgnore {
        Self::load_from(&repo_root())
    }

    /// The `.dockerignore` of the build context `dir`.
    fn load_from(dir: &Path) -> DockerIgnore {
        let text = std::fs::read_to_string(dir.join(".dockerignore")).expect("read .dockerignore");
        let mut raw = Vec::new();
        let mut patterns = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            raw.push(line.to_string());
            let (exception, p) = match line.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, line),
            };
            assert!(
                !p.contains(['[', '\\']) && p.split('/').all(|s| s == "**" || !s.contains("**")),
                ".dockerignore: {line}: this matcher knows `*`, `?` and whole-segment `**` only"
            );
            let segments = p
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            patterns.push((exception, segments));
        }
        DockerIgnore { raw, patterns }
    }

    /// Whether `path` (relative to the context, `/`-separated) is left out of the context.
    fn excludes(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (exception, pattern) in &self.patterns {
            if (1..=segs.len()).any(|n| segments_match(pattern, &segs[..n])) {
                excluded = !exception;
            }
        }
        excluded
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            segments_match(rest, path) || (!path.is_empty() && segments_match(pattern, &path[1..]))
        }
        Some((first, rest)) => {
            !path.is_empty() && glob_match(first, path[0]) && segments_match(rest, &path[1..])
        }
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(&p, &t)
}

// ---------------------------------------------------------------------------------------------
// The workspace, from `cargo metadata`.

fn metadata() -> &'static serde_json::Value {
    static METADATA: OnceLock<serde_json::Value> = OnceLock::new();
    METADATA.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--no-deps"])
            .current_dir(repo_root())
            .output()
            .expect("run cargo metadata");
        assert!(
            out.status.success(),
            "cargo metadata: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
    })
}

fn package(name: &str) -> &'static serde_json::Value {
    metadata()["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no workspace package {name}"))
}

fn package_str(name: &str, field: &str) -> String {
    package(name)[field]
        .as_str()
        .unwrap_or_else(|| panic!("package {name} has no {field}"))
        .to_string()
}

/// The names of the package's binary targets (`[[bin]]` or the default `src/main.rs`).
fn package_bins(name: &str) -> Vec<String> {
    package(name)["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .map(|t| t["name"].as_str().expect("target name").to_string())
        .collect()
}

/// The workspace packages `name` links (its normal dependencies, transitively; dev-dependencies
/// are not in the image).
fn workspace_closure(name: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(next) = todo.pop() {
        for dep in package(&next)["dependencies"]
            .as_array()
            .expect("dependencies")
        {
            let local = dep["path"].is_string();
            let normal = dep["kind"].is_null();
            let dep_name = dep["name"].as_str().expect("dependency name").to_string();
            if local && normal && seen.insert(dep_name.clone()) {
                todo.push(dep_name);
            }
        }
    }
    seen
}

#[test]
fn neither_image_builds_the_other_binary_crate() {
    let controller = workspace_closure("newresource-controller");
    let sidecar = workspace_closure("leader-sidecar");
    assert!(
        !controller.contains("leader-sidecar"),
        "newresource-controller links the sidecar crate: {controller:?}"
    );
    assert!(
        !sidecar.contains("newresource-controller"),
        "leader-sidecar links the controller crate: {sidecar:?}"
    );
    // Both share the contract types and the plumbing, from one place each.
    for shared in ["leader-client", "plumbing"] {
        assert!(controller.contains(shared), "{controller:?}");
        assert!(sidecar.contains(shared), "{sidecar:?}");
    }
}

/// The directories of the workspace members.
fn member_dirs() -> Vec<PathBuf> {
    metadata()["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            Path::new(p["manifest_path"].as_str().expect("manifest_path"))
                .parent()
                .expect("manifest directory")
                .to_path_buf()
        })
        .collect()
}

/// `path` relative to the repository root, `/`-separated, with `.` and `..` resolved.
fn relative(path: &Path) -> String {
    let root = repo_root();
    let rel = path
        .strip_prefix(&root)
        .unwrap_or_else(|_| panic!("{} is outside {}", path.display(), root.display()));
    let mut parts: Vec<String> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts
                    .pop()
                    .unwrap_or_else(|| panic!("{} leaves the repository", path.display()));
            }
            _ => {}
        }
    }
    parts.join("/")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The string literal paths of `include_str!`/`include_bytes!` in `source`.
fn included_paths(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    for mac in ["include_str!(", "include_bytes!("] {
        for (at, _) in source.match_indices(mac) {
            // Not the name quoted in a string (as in this file).
            if source[..at].ends_with('"') {
                continue;
            }
            let rest = source[at + mac.len()..].trim_start();
            if let Some(lit) = rest.strip_prefix('"')
                && let Some(end) = lit.find('"')
            {
                out.push(lit[..end].to_string());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// The cargo command of `dockerfile` that starts with `prefix` (e.g. `["cargo", "build"]`);
/// there must be exactly one.
fn the_command(df: &Dockerfile, prefix: &[&str]) -> Vec<String> {
    let found: Vec<Vec<String>> = df
        .cargo_commands()
        .into_iter()
        .map(|(_, _, words)| words)
        .filter(|w| is_command(w, prefix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{}: expected one `{}`, found {found:?}",
        df.name,
        prefix.join(" ")
    );
    found.into_iter().next().unwrap()
}

/// The binary the image runs: the first element of the exec-form ENTRYPOINT.
fn entrypoint(df: &Dockerfile) -> String {
    let eps: Vec<&Instruction> = df.last().all("ENTRYPOINT").collect();
    assert_eq!(
        eps.len(),
        1,
        "{}: one ENTRYPOINT in the final stage",
        df.name
    );
    let argv: Vec<String> = serde_json::from_str(&eps[0].args).unwrap_or_else(|e| {
        panic!(
            "{}:{}: ENTRYPOINT must be exec-form (a JSON array; there is no shell): {e}",
            df.name, eps[0].line
        )
    });
    assert!(!argv.is_empty(), "{}: empty ENTRYPOINT", df.name);
    argv[0].clone()
}

/// The final stage of `df` runs on a distroless `:nonroot` image whose name starts with
/// `base`, and so has no shell for `RUN`.
fn runs_distroless_without_shell(file: &str, df: &Dockerfile, base: &str) {
    let runtime = df.last();
    assert!(
        runtime.base.starts_with(base) && runtime.base.ends_with(":nonroot"),
        "{file}: the final stage runs on a distroless :nonroot image ({base}…), not {}",
        runtime.base
    );
    assert!(
        runtime.all("RUN").next().is_none(),
        "{file}: the runtime image has no shell for RUN"
    );
}

#[test]
fn each_image_is_built_in_stages_and_runs_distroless_as_non_root() {
    for (file, pkg) in IMAGES {
        let df = Dockerfile::load(file);
        assert!(
            df.stages.len() >= 2,
            "{file}: a build stage and a runtime stage"
        );
        let names: Vec<&str> = df.stages.iter().filter_map(|s| s.name.as_deref()).collect();
        for stage in &df.stages {
            if names.contains(&stage.base.as_str()) {
                continue;
            }
            // An image: pinned by a version tag or a digest, never implicitly `latest`.
            let tag = stage
                .base
                .rsplit_once('/')
                .map_or(stage.base.as_str(), |(_, last)| last)
                .split_once(':')
                .map(|(_, tag)| tag);
            assert!(
                stage.base.contains('@') || tag.is_some_and(|t| t != "latest"),
                "{file}: base image {} has no pinned tag",
                stage.base
            );
        }

        // The toolchain image is at least the workspace's rust-version.
        let rust_version = |v: &str| -> Vec<u32> {
            v.split('.')
                .map(|n| n.parse().expect("a version number"))
                .collect()
        };
        for stage in df.stages.iter().filter(|s| s.base.starts_with("rust:")) {
            let tag = &stage.base["rust:".len()..];
            let version = tag.split('-').next().unwrap();
            let minimum = package(pkg)["rust_version"].as_str().expect("rust-version");
            assert!(
                rust_version(version) >= rust_version(minimum),
                "{file}: {} is older than the workspace's rust-version {minimum}",
                stage.base
            );
        }

        runs_distroless_without_shell(file, &df, "gcr.io/distroless/");
        let runtime = df.last();
        for cmd in runtime.all("CMD") {
            assert!(
                cmd.args.starts_with('['),
                "{file}:{}: CMD must be exec-form",
                cmd.line
            );
        }

        let user = runtime
            .all("USER")
            .last()
            .unwrap_or_else(|| panic!("{file}: the final stage sets USER"));
        let (uid, gid) = user
            .args
            .split_once(':')
            .map_or((user.args.as_str(), None), |(u, g)| (u, Some(g)));
        let uid: u32 = uid.parse().unwrap_or_else(|_| {
            panic!(
                "{file}:{}: USER {} must be numeric so the kubelet can check runAsNonRoot",
                user.line, user.args
            )
        });
        assert_ne!(uid, 0, "{file}:{}: USER must not be root", user.line);
        if let Some(gid) = gid {
            assert!(
                gid.parse::<u32>().is_ok(),
                "{file}:{}: the group of USER {} must be numeric",
                user.line,
                user.args
            );
        }
    }
}

#[test]
fn cargo_is_locked_and_dependencies_are_cooked_before_the_sources_are_copied() {
    for (file, _) in IMAGES {
        let df = Dockerfile::load(file);
        for (stage, run, words) in df.cargo_commands() {
            let sub = words[1..]
                .iter()
                .find(|w| !w.starts_with('-'))
                .map(String::as_str);
            let cooks = sub == Some("chef") && words.iter().any(|w| w == "cook");
            if matches!(sub, Some("build" | "install" | "fetch")) || cooks {
                assert!(
                    words.iter().any(|w| w == "--locked" || w == "--frozen"),
                    "{file}:{}: `{}` needs --locked",
                    run.line,
                    words.join(" ")
                );
            }
            if sub == Some("install") {
                assert!(
                    !option_values(&words, &["--version"]).is_empty(),
                    "{file}:{}: pin the version of `{}`",
                    run.line,
                    words.join(" ")
                );
            }
            assert!(
                !std::ptr::eq(stage, df.last()),
                "{file}:{}: cargo in the runtime stage",
                run.line
            );
        }

        // In the stage that builds the binary: cook (dependencies), then copy the sources,
        // then build; so the cooked layer survives source changes.
        let has = |i: &Instruction, prefix: &[&str]| {
            i.keyword == "RUN"
                && shell_commands(&i.args)
                    .iter()
                    .any(|c| is_command(c, prefix))
        };
        let build_stage = df
            .build_stages()
            .iter()
            .find(|s| s.body.iter().any(|i| has(i, &["cargo", "build"])))
            .unwrap_or_else(|| panic!("{file}: no build stage runs `cargo build`"));
        let position = |pred: &dyn Fn(&Instruction) -> bool| build_stage.body.iter().position(pred);
        let cook = position(&|i| has(i, &["cargo", "chef", "cook"]))
            .unwrap_or_else(|| panic!("{file}: `cargo chef cook` in {}", build_stage.label()));
        let copy_sources =
            position(&|i| i.keyword == "COPY" && !copy_parts(&i.args).0.contains_key("from"))
                .unwrap_or_else(|| panic!("{file}: {} copies no sources", build_stage.label()));
        let build = position(&|i| has(i, &["cargo", "build"])).unwrap();
        assert!(
            cook < copy_sources && copy_sources < build,
            "{file}: in {}, `cargo chef cook` must come before the sources are copied, and \
             `cargo build` after",
            build_stage.label()
        );

        // The recipe comes from a stage that ran `cargo chef prepare`.
        let recipe_from: Vec<&str> = build_stage.body[..cook]
            .iter()
            .filter(|i| i.keyword == "COPY")
            .filter_map(|i| {
                let (flags, _, _) = copy_parts(&i.args);
                flags.get("from").cloned()
            })
            .filter_map(|from| df.stage(&from))
            .filter(|s| s.all("RUN").any(|r| has(r, &["cargo", "chef", "prepare"])))
            .filter_map(|s| s.name.as_deref())
            .collect();
        assert!(
            !recipe_from.is_empty(),
            "{file}: the recipe `cargo chef cook` reads comes from a `cargo chef prepare` stage"
        );
    }
}

#[test]
fn the_entrypoint_is_the_binary_of_the_package_built() {
    for (file, expected_package) in IMAGES {
        let df = Dockerfile::load(file);
        let build = the_command(&df, &["cargo", "build"]);
        let cook = the_command(&df, &["cargo", "chef", "cook"]);
        for words in [&build, &cook] {
            assert_eq!(
                option_values(words, &["--profile"]),
                ["lto"],
                "{file}: `{}` builds the lto profile the image ships (and the bench measures)",
                words.join(" ")
            );
            assert_eq!(
                option_values(words, &["-p", "--package"]),
                [expected_package],
                "{file}: `{}` builds package {expected_package} only",
                words.join(" ")
            );
        }
        let bins = option_values(&build, &["--bin"]);
        assert_eq!(bins.len(), 1, "{file}: `cargo build` names one --bin");
        let bin = &bins[0];
        assert_eq!(
            option_values(&cook, &["--bin"]),
            bins,
            "{file}: cook and build select the same binary"
        );
        let real = package_bins(expected_package);
        assert!(
            real.contains(bin),
            "{file}: {bin} is not a binary of {expected_package} (its binaries: {real:?})"
        );

        let ep = entrypoint(&df);
        assert!(
            ep.starts_with('/') && ep.rsplit('/').next() == Some(bin.as_str()),
            "{file}: ENTRYPOINT runs {ep}, not the absolute path of {bin}"
        );
        // The runtime stage copies exactly that binary out of a build stage's target/lto.
        let copied = df.last().all("COPY").any(|c| {
            let (flags, sources, dest) = copy_parts(&c.args);
            let into = if dest.ends_with('/') {
                format!("{dest}{bin}")
            } else {
                dest
            };
            flags.get("from").is_some_and(|f| df.stage(f).is_some())
                && sources.len() == 1
                && sources[0].ends_with(&format!("target/lto/{bin}"))
                && into == ep
        });
        assert!(
            copied,
            "{file}: the final stage copies target/lto/{bin} from a build stage to {ep}"
        );
    }
}

#[test]
fn copy_sources_exist_and_are_in_the_build_context() {
    let ignore = DockerIgnore::load();
    let root = repo_root();
    for (file, _) in IMAGES {
        let df = Dockerfile::load(file);
        for (n, stage) in df.stages.iter().enumerate() {
            for copy in stage.all("COPY").chain(stage.all("ADD")) {
                let (flags, sources, _) = copy_parts(&copy.args);
                if let Some(from) = flags.get("from") {
                    assert!(
                        df.stages[..n]
                            .iter()
                            .any(|s| s.name.as_deref() == Some(from)),
                        "{file}:{}: COPY --from={from} names no earlier stage",
                        copy.line
                    );
                    continue;
                }
                for src in sources {
                    assert!(
                        !src.contains(['*', '?', '[']),
                        "{file}:{}: no globs in COPY sources",
                        copy.line
                    );
                    let path = root.join(src.trim_start_matches('/'));
                    assert!(
                        path.exists(),
                        "{file}:{}: COPY source {src} is not in the repository",
                        copy.line
                    );
                    let rel = relative(&path);
                    assert!(
                        rel.is_empty() || !ignore.excludes(&rel),
                        "{file}:{}: COPY source {src} is excluded by .dockerignore",
                        copy.line
                    );
                }
            }
        }
    }
}

#[test]
fn dockerignore_keeps_what_cargo_reads_and_drops_build_output() {
    let ignore = DockerIgnore::load();
    for raw in &ignore.raw {
        // The replay script applies the file with git's matcher; these forms mean the same
        // to git and to Docker.
        assert!(
            (raw.starts_with('/') || raw.starts_with("**/")) && !raw.starts_with('!'),
            ".dockerignore: {raw}: anchor patterns with / or **/ and use no `!` exceptions"
        );
    }
    for gone in ["target", "target/lto/leader-sidecar", ".git", ".git/HEAD"] {
        assert!(ignore.excludes(gone), ".dockerignore must exclude {gone}");
    }

    let root = repo_root();
    let mut needed = vec![root.join("Cargo.toml"), root.join("Cargo.lock")];
    for extra in [".cargo", "rust-toolchain", "rust-toolchain.toml"] {
        if root.join(extra).exists() {
            needed.push(root.join(extra));
        }
    }
    // Cargo loads every member to build any one of them: nothing under a member is left out.
    let members = member_dirs();
    assert!(members.len() >= 3, "workspace members: {members:?}");
    let mut sources = Vec::new();
    for dir in &members {
        files_under(dir, &mut sources);
    }
    for src in sources
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
    {
        let text = std::fs::read_to_string(src).expect("read source");
        for inc in included_paths(&text) {
            let path = src.parent().unwrap().join(&inc);
            assert!(
                path.exists(),
                "{}: includes {inc}, which does not exist",
                src.display()
            );
            needed.push(path);
        }
    }
    needed.extend(sources);
    let excluded: Vec<String> = needed
        .iter()
        .map(|p| relative(p))
        .filter(|rel| ignore.excludes(rel))
        .collect();
    assert!(
        excluded.is_empty(),
        ".dockerignore leaves out files the build reads: {excluded:?}"
    );
}

/// The labels of the final stage of `df`, after checking that each of [`REQUIRED_LABELS`] is
/// there and not empty.
fn required_labels(file: &str, df: &Dockerfile) -> BTreeMap<String, String> {
    let labels: BTreeMap<String, String> = df
        .last()
        .all("LABEL")
        .flat_map(|l| label_pairs(&l.args))
        .collect();
    for key in REQUIRED_LABELS {
        assert!(
            labels.get(key).is_some_and(|v| !v.is_empty()),
            "{file}: label {key} missing (labels: {labels:?})"
        );
    }
    labels
}

#[test]
fn labels_describe_the_package() {
    for (file, pkg) in IMAGES {
        let df = Dockerfile::load(file);
        let labels = required_labels(file, &df);
        let label = |k: &str| labels[&format!("org.opencontainers.image.{k}")].as_str();
        assert_eq!(label("title"), pkg, "{file}");
        assert_eq!(
            label("description"),
            package_str(pkg, "description"),
            "{file}"
        );
        assert_eq!(label("licenses"), package_str(pkg, "license"), "{file}");

        // version and revision come from build arguments declared in the final stage, with
        // defaults; the version's default is the crate's.
        let args = arg_defaults(df.last());
        for (key, arg) in [("version", "VERSION"), ("revision", "REVISION")] {
            assert!(
                [format!("${arg}"), format!("${{{arg}}}")].contains(&label(key).to_string()),
                "{file}: label {key} is ${{{arg}}}, not {}",
                label(key)
            );
            assert!(
                args.get(arg).is_some_and(|d| !d.is_empty()),
                "{file}: the final stage declares ARG {arg}=<default>"
            );
        }
        assert_eq!(args["VERSION"], package_str(pkg, "version"), "{file}");
    }
}

/// The ports of the default listen addresses in `--help` (`[default: 0.0.0.0:4041]`,
/// `[default: :8080]`), each with whether it is on loopback. URLs are not listen addresses.
fn default_listen_ports(help: &str) -> BTreeMap<u16, bool> {
    let mut out = BTreeMap::new();
    for (at, _) in help.match_indices("[default: ") {
        let rest = &help[at + "[default: ".len()..];
        let value = &rest[..rest.find(']').expect("closing ]")];
        if value.contains("://") {
            continue;
        }
        if let Ok(addr) = value.parse::<SocketAddr>() {
            out.insert(addr.port(), addr.ip().is_loopback());
        } else if let Some(port) = value.strip_prefix(':').and_then(|p| p.parse().ok()) {
            out.insert(port, false);
        }
    }
    out
}

/// `EXPOSE` of the final stage of `df` lists exactly the ports the image's program listens on
/// outside loopback by default, as its `--help` says.
fn assert_exposes_the_public_listen_ports(file: &str, df: &Dockerfile, help: &str) {
    let ports = default_listen_ports(help);
    let public: BTreeSet<u16> = ports
        .iter()
        .filter(|(_, lo)| !**lo)
        .map(|(p, _)| *p)
        .collect();
    assert!(
        !public.is_empty(),
        "{file}: --help shows no default listen address:\n{help}"
    );
    let exposed: BTreeSet<u16> = df
        .last()
        .all("EXPOSE")
        .flat_map(|e| e.args.split_whitespace())
        .map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            assert_eq!(proto, "tcp", "{file}: EXPOSE {p}");
            port.parse()
                .unwrap_or_else(|_| panic!("{file}: EXPOSE {p} is not a port number"))
        })
        .collect();
    assert_eq!(
        exposed, public,
        "{file}: EXPOSE the ports the program listens on outside loopback by default ({ports:?}, \
         true = loopback)"
    );
}

#[test]
fn exposed_ports_are_the_default_listen_ports() {
    for (file, _) in IMAGES {
        let df = Dockerfile::load(file);
        let ep = entrypoint(&df);
        let bin = ep.rsplit('/').next().unwrap();
        let out = Command::new(testkit::bins::binary(bin))
            .arg("--help")
            .env_clear()
            .output()
            .unwrap_or_else(|e| panic!("run {bin} --help: {e}"));
        assert!(out.status.success(), "{bin} --help failed");
        let help = String::from_utf8(out.stdout).expect("UTF-8 help");
        assert_exposes_the_public_listen_ports(file, &df, &help);
    }
}

#[test]
fn the_parsers_read_what_docker_reads() {
    let ins = instructions(
        "# comment\nFROM a AS b\nRUN x \\\n  # inside\n  && y\n\nLABEL k=\"v w\" \\\n      j=z\n",
    );
    let got: Vec<(usize, &str, String)> = ins
        .iter()
        .map(|i| {
            let args = i.args.split_whitespace().collect::<Vec<_>>().join(" ");
            (i.line, i.keyword.as_str(), args)
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "FROM", "a AS b".to_string()),
            (3, "RUN", "x && y".to_string()),
            (7, "LABEL", "k=\"v w\" j=z".to_string()),
        ]
    );
    assert_eq!(
        label_pairs(&ins[2].args),
        [("k".into(), "v w".into()), ("j".into(), "z".into())]
    );
    assert_eq!(
        shell_commands("cargo a --locked && cargo b; cargo c"),
        [
            vec!["cargo", "a", "--locked"],
            vec!["cargo", "b"],
            vec!["cargo", "c"]
        ]
    );

    let ignore = DockerIgnore {
        raw: Vec::new(),
        patterns: [
            (false, "target"),
            (false, "**/*.bk"),
            (false, "docs"),
            (true, "docs/keep.md"),
        ]
        .iter()
        .map(|(e, p)| (*e, p.split('/').map(str::to_string).collect()))
        .collect(),
    };
    assert!(ignore.excludes("target"));
    assert!(ignore.excludes("target/debug/x"));
    assert!(!ignore.excludes("sidecar/target"));
    assert!(ignore.excludes("a.bk") && ignore.excludes("x/y/a.bk"));
    assert!(ignore.excludes("docs/a.md") && !ignore.excludes("docs/keep.md"));
    assert!(!ignore.excludes("Cargo.toml"));

    let source = format!("{}(\"../a.yaml\") \"{0}(\" x", "include_str!");
    assert_eq!(included_paths(&source), ["../a.yaml"]);

    let help = "--a [default: 127.0.0.1:4040]\n--b [default: 0.0.0.0:4041] --c [default: :8080]\n\
                --d [default: http://127.0.0.1:9] --e [default: 2s]";
    assert_eq!(
        default_listen_ports(help),
        BTreeMap::from([(4040, true), (4041, false), (8080, false)])
    );
}

/// `examples/python-controller/Dockerfile`, whose build context is the repository root (as
/// for the Rust images): one distroless Python stage, the same user and ports as the Rust
/// controller's image, every module of the controller copied to `/app/` and every module of
/// the `leader_client` package (`clients/python`) to `/app/leader_client/`, where the script's
/// `import leader_client` finds it (a missing module would fail only at import time, in the
/// cluster), and their tests left out.
#[test]
fn the_python_controller_image_carries_every_module_and_nothing_else() {
    let root = repo_root();
    let file = "examples/python-controller/Dockerfile";
    let df = Dockerfile::load(file);
    assert_eq!(df.stages.len(), 1, "{file}: nothing to build, one stage");
    let runtime = df.last();
    assert!(
        runtime.base.starts_with("gcr.io/distroless/python3-")
            && runtime.base.ends_with(":nonroot"),
        "{file}: a distroless Python :nonroot base, not {}",
        runtime.base
    );
    assert!(
        runtime.all("RUN").next().is_none(),
        "{file}: no shell for RUN"
    );

    // The same numeric user as the Rust controller's image (the Deployment's runAsUser).
    let user = |df: &Dockerfile| df.last().all("USER").last().map(|u| u.args.clone());
    let rust = Dockerfile::load("Dockerfile.controller");
    assert_eq!(user(&df), user(&rust), "{file}: USER");

    let eps: Vec<&Instruction> = runtime.all("ENTRYPOINT").collect();
    assert_eq!(eps.len(), 1, "{file}: one ENTRYPOINT");
    let argv: Vec<String> = serde_json::from_str(&eps[0].args).expect("exec-form ENTRYPOINT");
    assert_eq!(argv, ["python3", "/app/controller.py"], "{file}");

    // Python files directly in `dir` (relative to the root).
    let modules_in = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("read {dir}: {e}"))
            .map(|e| {
                e.expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".py"))
            .map(|n| format!("{dir}/{n}"))
            .collect()
    };
    // What each COPY takes from the context, by destination folder. A source glob matches
    // file names in its own folder only (`*` matches no `/`), minus what .dockerignore drops.
    let ignore = DockerIgnore::load();
    let mut copied: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for copy in runtime.all("COPY") {
        let (flags, sources, dest) = copy_parts(&copy.args);
        assert!(
            flags.is_empty(),
            "{file}:{}: COPY from the context",
            copy.line
        );
        assert!(
            dest.ends_with('/'),
            "{file}:{}: COPY into a folder",
            copy.line
        );
        for src in sources {
            let (dir, glob) = src.rsplit_once('/').unwrap_or((".", src.as_str()));
            let entries = std::fs::read_dir(root.join(dir))
                .unwrap_or_else(|e| panic!("{file}:{}: {src}: {e}", copy.line));
            for entry in entries {
                let name = entry.expect("a directory entry").file_name();
                let name = name.to_string_lossy().into_owned();
                let path = format!("{dir}/{name}");
                if glob_match(glob, &name) && !ignore.excludes(&path) {
                    copied.entry(dest.clone()).or_default().insert(path);
                }
            }
        }
    }
    let controller = modules_in("examples/python-controller");
    assert!(
        controller.contains("examples/python-controller/controller.py"),
        "{controller:?}"
    );
    let package = modules_in("clients/python/leader_client");
    assert!(
        package.contains("clients/python/leader_client/__init__.py"),
        "{package:?}"
    );
    let expected = BTreeMap::from([
        ("/app/".to_string(), controller),
        ("/app/leader_client/".to_string(), package),
    ]);
    assert_eq!(
        copied, expected,
        "{file}: COPY takes exactly the controller's and the package's modules"
    );

    // The root filesystem is read-only in the Deployment: no bytecode is written.
    let env: Vec<String> = runtime
        .all("ENV")
        .flat_map(|e| label_pairs(&e.args))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert!(
        env.iter().any(|e| e == "PYTHONDONTWRITEBYTECODE=1"),
        "{file}: {env:?}"
    );

    required_labels(file, &df);

    // EXPOSE: the ports the controller listens on by default, as its --help says.
    let out = Command::new("python3")
        .arg(root.join("examples/python-controller/controller.py"))
        .arg("--help")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 controller.py --help");
    assert!(out.status.success(), "controller.py --help failed");
    // argparse wraps its help at the terminal width, inside `[default: …]` too.
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_exposes_the_public_listen_ports(file, &df, &help);
}

/// `examples/go-controller/Dockerfile`, whose build context is the repository root (the
/// controller builds `clients/go` through its `replace` directive): a Go build stage that
/// downloads nothing and builds a static binary, a distroless static runtime with the same
/// user and ports as the Rust controller's image, and the entrypoint the binary built.
#[test]
fn the_go_controller_image_builds_offline_and_runs_distroless_as_non_root() {
    let file = "examples/go-controller/Dockerfile";
    let df = Dockerfile::load(file);
    assert_eq!(df.stages.len(), 2, "{file}: a build stage and the runtime");
    let builder = &df.stages[0];
    assert!(
        builder.base.starts_with("golang:1.19"),
        "{file}: the Go of CI (Debian 12's golang-go, 1.19), not {}",
        builder.base
    );
    runs_distroless_without_shell(file, &df, "gcr.io/distroless/static-");
    let runtime = df.last();
    let user = |df: &Dockerfile| df.last().all("USER").last().map(|u| u.args.clone());
    assert_eq!(
        user(&df),
        user(&Dockerfile::load("Dockerfile.controller")),
        "{file}: USER"
    );

    // Offline and static: the proxy off and cgo off for the build.
    let env: BTreeMap<String, String> = builder
        .all("ENV")
        .flat_map(|e| label_pairs(&e.args))
        .collect();
    assert_eq!(
        env.get("GOPROXY").map(String::as_str),
        Some("off"),
        "{file}: {env:?}"
    );
    assert_eq!(
        env.get("CGO_ENABLED").map(String::as_str),
        Some("0"),
        "{file}: {env:?}"
    );
    let builds: Vec<Vec<String>> = builder
        .all("RUN")
        .flat_map(|r| shell_commands(&r.args))
        .filter(|c| is_command(c, &["go", "build"]))
        .collect();
    assert_eq!(builds.len(), 1, "{file}: one go build");
    let outputs = option_values(&builds[0], &["-o"]);
    assert_eq!(outputs.len(), 1, "{file}: go build -o <binary>");

    // Every COPY source is in the repository and in the root build context; the client
    // module is among them.
    let ignore = DockerIgnore::load();
    let root = repo_root();
    let mut sources = Vec::new();
    for copy in builder.all("COPY") {
        let (_, srcs, _) = copy_parts(&copy.args);
        for src in srcs {
            let path = root.join(&src);
            assert!(
                path.exists(),
                "{file}:{}: {src} is not in the repository",
                copy.line
            );
            assert!(
                !ignore.excludes(&src),
                "{file}:{}: {src} is excluded by .dockerignore",
                copy.line
            );
            sources.push(src);
        }
    }
    assert!(
        sources
            .iter()
            .any(|s| s.trim_end_matches('/') == "clients/go")
            && sources
                .iter()
                .any(|s| s.trim_end_matches('/') == "examples/go-controller"),
        "{file}: COPY the controller and the client module: {sources:?}"
    );

    // The runtime runs what the builder built.
    let copies: Vec<(BTreeMap<String, String>, Vec<String>, String)> =
        runtime.all("COPY").map(|c| copy_parts(&c.args)).collect();
    assert_eq!(
        copies.len(),
        1,
        "{file}: the runtime copies the binary only"
    );
    let (flags, srcs, dest) = &copies[0];
    assert_eq!(
        flags.get("from"),
        builder.name.as_ref(),
        "{file}: COPY --from the builder"
    );
    assert_eq!(srcs, &outputs, "{file}: COPY the binary go build wrote");
    assert_eq!(
        entrypoint(&df),
        *dest,
        "{file}: ENTRYPOINT is the binary copied"
    );

    required_labels(file, &df);

    // EXPOSE: the ports the controller listens on by default, as its --help says.
    if let Some(missing) =
        testkit::conformance::missing_toolchain("the Go image's port check", &["go"])
    {
        println!("skipped: {missing}");
        return;
    }
    let bin = testkit::conformance::ControllerCommand::go()
        .expect("build the Go controller")
        .program;
    let out = Command::new(&bin)
        .arg("--help")
        .output()
        .expect("run the Go controller's --help");
    assert!(out.status.success(), "{} --help failed", bin.display());
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    assert_exposes_the_public_listen_ports(file, &df, &help);
}
