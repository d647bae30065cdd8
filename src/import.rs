//! From a Compose file to a Lab: what carries over (services, images, commands, environment,
//! networks, replicas, resources, placement, ports, init, grace period, health check, sysctls,
//! configs, labels; `extends` resolved), and a located note for everything that does not. Pure: text in, text out
//! (the files a Compose config names are read through the caller's reader); the result is
//! validated like any lab file before it is returned.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use crate::spec::yaml::{parse_documents, pointer_segment, Positions};
use crate::spec::{parse_file, Diagnostic};

mod extends;

/// Why a Compose key is not carried over, by key.
fn not_carried(key: &str) -> Option<&'static str> {
    Some(match key {
        "container_name" => "Swarm names tasks itself (`<lab>_<service>.<slot>`)",
        "restart" => "a lab's services are kept running: Swarm starts a task again whatever its exit code (a service meant to run once is a job: `mode: replicated-job`)",
        "links" | "external_links" => "services reach each other by name on their networks",
        "expose" => "every port is reachable on the lab's networks",
        "devices" | "privileged" | "security_opt" | "pid" | "ipc" | "network_mode" | "shm_size" | "platform" | "pull_policy" => {
            "not supported by swarmlab"
        }
        _ => return None,
    })
}

/// A Compose key swarmlab maps, and a located note for one it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub line: usize,
    pub column: usize,
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}: {}", self.line, self.column, self.field, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The lab file's text (with a header of what was not carried over).
    pub text: String,
    pub notes: Vec<Note>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Syntax(String),
    #[error("the Compose file has no `services`")]
    NoServices,
    /// The notes say what to do about it (an image to map, most often).
    #[error("the lab made from it is not valid yet, nothing written: {}", .diagnostics.iter().map(|d| format!("{}: {}", d.field, d.message)).collect::<Vec<_>>().join("; "))]
    Invalid { diagnostics: Vec<Diagnostic>, notes: Vec<Note> },
}

/// Image rewrites: `service=image` or `image=image` (the first matching wins; `*=` matches all).
pub type ImageMap = Vec<(String, String)>;

/// What `labctl import` is asked besides the file.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    pub images: ImageMap,
    /// Compose profiles to enable (`--profile`, `*` all), as `docker compose --profile`: a
    /// service in profiles none of which is enabled is not imported, as `up` does not start it.
    pub profiles: Vec<String>,
}

fn field_path(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

struct Ctx<'a> {
    positions: &'a Positions,
    notes: Vec<Note>,
}

impl Ctx<'_> {
    fn note(&mut self, pointer: &str, message: impl Into<String>) {
        let m = self.positions.key(pointer);
        self.notes.push(Note { line: m.line, column: m.column, field: field_path(pointer), message: message.into() });
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `KEY=value` list or map, as Compose allows both.
fn key_values(v: &Value) -> BTreeMap<String, String> {
    key_value_map(v).into_iter().map(|(k, v)| (k, as_string(&v).unwrap_or_default())).collect()
}

/// `KEY=VALUE` items (`KEY` alone: no value, null) or a map, as a map.
fn key_value_map(v: &Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                None => (s.to_string(), Value::Null),
            })
            .collect(),
        _ => Map::new(),
    }
}

/// A service's `environment`, as `key_values`, but for a variable given no value (`- KEY`, or
/// `KEY:` in a map): Compose takes it from the environment it runs in, and leaves it unset
/// when that has none; a lab file is the same on every machine, so it is left out and noted.
fn environment(ctx: &mut Ctx<'_>, at: &str, v: &Value) -> BTreeMap<String, String> {
    let mut unset = Vec::new();
    let mut env = BTreeMap::new();
    for (key, value) in key_value_map(v) {
        match as_string(&value) {
            Some(value) => {
                env.insert(key, value);
            }
            None => unset.push(key),
        }
    }
    if !unset.is_empty() {
        let names = unset.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let (takes, one) = if unset.len() == 1 { ("takes its value", "it one") } else { ("take their values", "them values") };
        ctx.note(at, format!("{names} {takes} from where Compose runs (unset there: not set at all); not carried: give {one} in `env`"));
    }
    env
}

/// Compose's `extra_hosts`: a map, or a list of `host:ip` / `host=ip` (an IPv6 address after
/// the first `:`, bracketed or not), as hostname → address.
fn extra_hosts(v: &Value) -> BTreeMap<String, String> {
    let unbracket = |ip: &str| ip.trim_start_matches('[').trim_end_matches(']').to_string();
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), unbracket(&as_string(v).unwrap_or_default()))).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .filter_map(|s| {
                let (host, ip) = s.split_once('=').or_else(|| s.split_once(':'))?;
                Some((host.to_string(), unbracket(ip)))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A Compose value that is a string or a list of them, as a list.
fn one_or_many(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(as_string).collect(),
        other => as_string(other).into_iter().collect(),
    }
}

/// Compose durations (`10s`, `1m30s`, `500ms`) as a lab duration.
fn duration(text: &str) -> Option<String> {
    let mut micros: f64 = 0.0;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(n) = chars.peek().filter(|n| n.is_ascii_alphabetic()) {
            unit.push(*n);
            chars.next();
        }
        let scale = match unit.as_str() {
            "us" => 1.0,
            "ms" => 1e3,
            "s" => 1e6,
            "m" => 60e6,
            "h" => 3600e6,
            _ => return None,
        };
        micros += number.parse::<f64>().ok()? * scale;
        number.clear();
    }
    if !number.is_empty() {
        micros += number.parse::<f64>().ok()? * 1e6;
    }
    Some(if micros % 1e6 == 0.0 { format!("{}s", micros / 1e6) } else { format!("{}ms", (micros / 1e3).round()) })
}

/// Compose's `healthcheck`: `test` is `[CMD, …]` (a list), `[CMD-SHELL, line]` or a string (a
/// string), or `[NONE]` (off, as `disable: true`).
fn healthcheck(ctx: &mut Ctx, at: &str, value: &Value, out: &mut Map<String, Value>) {
    let Some(fields) = value.as_object() else { return ctx.note(at, "expected a mapping") };
    let mut check = Map::new();
    for (key, value) in fields {
        let field_at = format!("{at}/{}", pointer_segment(key));
        match key.as_str() {
            "test" => match value {
                Value::String(line) => {
                    check.insert("test".into(), json!(line));
                }
                Value::Array(items) => {
                    let words: Vec<String> = items.iter().filter_map(as_string).collect();
                    match words.split_first() {
                        Some((form, rest)) if form == "CMD" => {
                            check.insert("test".into(), json!(rest));
                        }
                        Some((form, rest)) if form == "CMD-SHELL" => {
                            check.insert("test".into(), json!(rest.join(" ")));
                        }
                        Some((form, _)) if form == "NONE" => {
                            check.insert("disable".into(), json!(true));
                        }
                        _ => ctx.note(&field_at, "expected [CMD, …], [CMD-SHELL, …] or [NONE]"),
                    }
                }
                _ => ctx.note(&field_at, "expected a string or a list"),
            },
            "interval" | "timeout" | "start_period" => match value.as_str().and_then(duration) {
                Some(d) => {
                    check.insert(if key == "start_period" { "startPeriod".into() } else { key.clone() }, json!(d));
                }
                None => ctx.note(&field_at, "not a duration swarmlab reads"),
            },
            "retries" | "disable" => {
                check.insert(key.clone(), value.clone());
            }
            "start_interval" => ctx.note(&field_at, "not carried: it needs Engine API 1.44 (Docker 25), labd also runs on older Engines"),
            _ => ctx.note(&field_at, "unknown to swarmlab; not carried"),
        }
    }
    // Compose lets `disable: true` sit beside a test; the test is then not run.
    if check.get("disable") == Some(&json!(true)) {
        check.remove("test");
    }
    out.insert("healthcheck".into(), Value::Object(check));
}

fn mapped_image(map: &ImageMap, service: &str, image: Option<&str>) -> Option<String> {
    map.iter()
        .find(|(from, _)| from == "*" || from == service || Some(from.as_str()) == image || image.is_some_and(|i| i.split(':').next() == Some(from.as_str())))
        .map(|(_, to)| to.clone())
}

/// A service's Compose `configs` or `secrets` (`- name` or `{source, target, uid, gid, mode}`):
/// the same fields in a lab's `configs`, the mode written as octal text; a secret goes to
/// `/run/secrets/<source>` (or `/run/secrets/<target>` for a relative target), as Compose puts
/// it. Mounts of files not carried are noted.
fn config_mounts(ctx: &mut Ctx, at: &str, value: &Value, carried: &Map<String, Value>, kind: FileKind) -> Vec<Value> {
    let mut mounts = Vec::new();
    for (i, mount) in value.as_array().into_iter().flatten().enumerate() {
        let source = mount.as_str().or_else(|| mount.get("source").and_then(Value::as_str)).unwrap_or_default();
        if !carried.contains_key(source) {
            ctx.note(&format!("{at}/{i}"), format!("{} `{source}` is not carried (see the top-level {})", kind.one(), kind.top()));
            continue;
        }
        let mut mount = if mount.is_string() { json!({"source": source}) } else { mount.clone() };
        if let Some(mode) = mount.get("mode").and_then(Value::as_u64) {
            mount["mode"] = json!(format!("{mode:04o}"));
        }
        if kind == FileKind::Secret {
            let target = mount.get("target").and_then(Value::as_str).unwrap_or(source);
            if !target.starts_with('/') {
                mount["target"] = json!(format!("/run/secrets/{target}"));
            }
        }
        mounts.push(if mount.as_object().is_some_and(|m| m.len() == 1) { json!(source) } else { mount });
    }
    mounts
}

/// Compose's two kinds of files a service mounts; a lab carries both as configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Config,
    Secret,
}

impl FileKind {
    fn one(self) -> &'static str {
        match self {
            FileKind::Config => "config",
            FileKind::Secret => "secret",
        }
    }

    fn top(self) -> &'static str {
        match self {
            FileKind::Config => "configs",
            FileKind::Secret => "secrets",
        }
    }
}

/// A service's Compose `volumes`: named volumes (declared at the top), absolute binds and
/// tmpfs carry; relative binds (the Compose file's directory is not on the nodes) and
/// anonymous volumes are noted.
fn volume_mounts(ctx: &mut Ctx, at: &str, value: &Value, declared: &Map<String, Value>) -> Vec<Value> {
    let mut mounts = Vec::new();
    for (i, mount) in value.as_array().into_iter().flatten().enumerate() {
        let here = format!("{at}/{i}");
        let (kind, source, target, read_only, size) = match mount {
            Value::String(text) => {
                let parts: Vec<&str> = text.split(':').collect();
                match parts.as_slice() {
                    [source, target, rest @ ..] if rest.len() <= 1 => {
                        let kind = if crate::spec::is_host_path(source) { "bind" } else { "volume" };
                        (kind, Some(source.to_string()), target.to_string(), rest.first().is_some_and(|m| m.split(',').any(|o| o == "ro")), None)
                    }
                    [target] => {
                        ctx.note(&here, format!("anonymous volume at {target} is not carried: name it in the top-level volumes"));
                        continue;
                    }
                    _ => {
                        ctx.note(&here, format!("`{text}` is not carried (SOURCE:TARGET[:MODE] expected)"));
                        continue;
                    }
                }
            }
            Value::Object(long) => {
                let kind = long.get("type").and_then(Value::as_str).unwrap_or("volume");
                let size = long.get("tmpfs").and_then(|t| t.get("size")).and_then(as_string);
                let target = long.get("target").and_then(Value::as_str).unwrap_or_default().to_string();
                (kind, long.get("source").and_then(Value::as_str).map(str::to_string), target, long.get("read_only").and_then(Value::as_bool).unwrap_or(false), size)
            }
            _ => continue,
        };
        match (kind, source.as_deref()) {
            ("bind", Some(path)) if !path.starts_with('/') => {
                ctx.note(&here, format!("relative host path `{path}` is not carried: a bind mounts a path of the node that runs the task; use an absolute one, or bake the files into the image"));
                continue;
            }
            ("volume", Some(name)) if !declared.contains_key(name) => {
                ctx.note(&here, format!("volume `{name}` is not declared in the top-level volumes; not carried"));
                continue;
            }
            ("volume" | "bind", None) => {
                ctx.note(&here, format!("a {kind} without a source at {target} is not carried: name it in the top-level volumes"));
                continue;
            }
            ("volume" | "bind" | "tmpfs", _) => {}
            (other, _) => {
                ctx.note(&here, format!("a {other} mount is not carried (volume, bind and tmpfs are)"));
                continue;
            }
        }
        let mut out = Map::new();
        out.insert("type".into(), json!(kind));
        if let Some(source) = source.filter(|_| kind != "tmpfs") {
            out.insert("source".into(), json!(source));
        }
        out.insert("target".into(), json!(target));
        if read_only {
            out.insert("readOnly".into(), json!(true));
        }
        if let Some(size) = size.filter(|_| kind == "tmpfs") {
            // Compose writes sizes in bytes or with a unit (`64m`): the lab takes upper-case units.
            let size = if size.bytes().all(|b| b.is_ascii_digit()) { size } else { size.to_uppercase() };
            out.insert("size".into(), json!(size));
        }
        mounts.push(Value::Object(out));
    }
    mounts
}

/// A service's Compose `networks`: a list of names, or a map whose entries may give `aliases`
/// (carried: a lab entry `{name, aliases}`); fixed addresses and the like are noted (Swarm
/// gives each task its address).
fn service_networks(ctx: &mut Ctx, at: &str, value: &Value, defined: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    let known = |name: &str| name == "default" || defined.iter().any(|d| d == name);
    match value {
        Value::Array(items) => out.extend(items.iter().filter_map(as_string).filter(|n| known(n)).map(Value::String)),
        Value::Object(map) => {
            for (name, entry) in map {
                if !known(name) {
                    continue;
                }
                let here = format!("{at}/{}", pointer_segment(name));
                let mut aliases = Vec::new();
                for (key, v) in entry.as_object().into_iter().flatten() {
                    match key.as_str() {
                        "aliases" => aliases.extend(v.as_array().into_iter().flatten().filter_map(as_string)),
                        other => ctx.note(&format!("{here}/{}", pointer_segment(other)), "not carried: Swarm gives each task its address on the network"),
                    }
                }
                out.push(if aliases.is_empty() { json!(name) } else { json!({"name": name, "aliases": aliases}) });
            }
        }
        _ => {}
    }
    out
}

/// Adds mounts to a lab service's `volumes` (Compose's `volumes` and `tmpfs` both end there).
fn append_mounts(service: &mut Map<String, Value>, mounts: Vec<Value>) {
    if let Value::Array(list) = service.entry("volumes").or_insert_with(|| json!([])) {
        list.extend(mounts);
    }
}

/// Compose's top-level `volumes`: a name each (Docker's local volumes); drivers and external
/// ones are noted.
fn volumes(ctx: &mut Ctx, top: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, def) in top.as_object().into_iter().flatten() {
        let at = format!("/volumes/{}", pointer_segment(name));
        for key in def.as_object().into_iter().flatten().map(|(k, _)| k) {
            ctx.note(&format!("{at}/{}", pointer_segment(key)), format!("{key} is not carried: the lab's volumes are Docker's local ones"));
        }
        out.insert(name.clone(), json!({}));
    }
    out
}

/// Compose's top-level `configs` (or `secrets`) with a `file` (read beside the Compose file) or
/// a `content`; `external` and `environment` ones are noted.
fn files_of(ctx: &mut Ctx, compose: &Path, top: &Value, kind: FileKind, read_file: &dyn Fn(&Path) -> std::io::Result<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, def) in top.as_object().into_iter().flatten() {
        let at = format!("/{}/{}", kind.top(), pointer_segment(name));
        let content = match (def.get("content").and_then(Value::as_str), def.get("file").and_then(Value::as_str)) {
            (Some(content), _) => Some(content.to_string()),
            (None, Some(file)) => {
                let full = beside(compose, file);
                match read_file(&full) {
                    Ok(text) => Some(text),
                    Err(e) => {
                        ctx.note(&format!("{at}/file"), format!("cannot read {}: {e}; not carried", full.display()));
                        None
                    }
                }
            }
            (None, None) => {
                ctx.note(&at, format!("only {} with a `file` or a `content` are carried (not `external` or `environment` ones)", kind.top()));
                None
            }
        };
        if let Some(content) = content {
            out.insert(name.clone(), json!({"content": content}));
        }
    }
    out
}

/// A Compose command or entrypoint as a list of words: a string is split as Compose splits it
/// (shell quoting, not run by a shell).
fn words(ctx: &mut Ctx, at: &str, value: &Value) -> Option<Value> {
    match value {
        Value::String(s) => match shlex::split(s) {
            Some(words) => Some(json!(words)),
            None => {
                ctx.note(at, "cannot split this into words (unbalanced quotes)");
                None
            }
        },
        Value::Array(items) => Some(json!(items.iter().filter_map(as_string).collect::<Vec<_>>())),
        _ => {
            ctx.note(at, "expected a string or a list");
            None
        }
    }
}

/// What a service's fields refer to outside it: the file's top-level definitions, and where
/// the files it names are.
struct Top<'a> {
    networks: &'a [String],
    configs: &'a Map<String, Value>,
    /// The secrets carried (configs of the lab, of the same names).
    secrets: &'a Map<String, Value>,
    volumes: &'a Map<String, Value>,
    compose: &'a Path,
    read_file: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

/// The files Compose names are relative to its own directory.
fn beside(compose: &Path, file: &str) -> std::path::PathBuf {
    compose.parent().unwrap_or(Path::new("")).join(file.trim_start_matches("./"))
}

/// Compose's `env_file` (a path, a list of paths or of `{path, required}`): `KEY=VALUE` lines,
/// `#` comments, quotes around a value removed. A line without `=` takes the value from the
/// environment of whoever runs Compose: not carried.
fn env_files(ctx: &mut Ctx, at: &str, value: &Value, top: &Top) -> BTreeMap<String, String> {
    let entries: Vec<(usize, &Value)> = match value {
        Value::Array(items) => items.iter().enumerate().collect(),
        one => vec![(0, one)],
    };
    let mut env = BTreeMap::new();
    for (i, entry) in entries {
        let here = if value.is_array() { format!("{at}/{i}") } else { at.to_string() };
        let Some(file) = entry.as_str().or_else(|| entry.get("path").and_then(Value::as_str)) else { continue };
        let required = entry.get("required").and_then(Value::as_bool).unwrap_or(true);
        let path = beside(top.compose, file);
        let text = match (top.read_file)(&path) {
            Ok(text) => text,
            Err(_) if !required => continue,
            Err(e) => {
                ctx.note(&here, format!("cannot read {}: {e}; its variables are not carried", path.display()));
                continue;
            }
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((key, value)) => {
                    let value = value.trim();
                    let unquoted = ['"', '\''].iter().find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q))).unwrap_or(value);
                    env.insert(key.trim().to_string(), unquoted.to_string());
                }
                None => ctx.note(&here, format!("{}:{}: `{line}` takes its value from where Compose runs; not carried", path.display(), n + 1)),
            }
        }
    }
    env
}

fn service(ctx: &mut Ctx, name: &str, svc: &Map<String, Value>, images: &ImageMap, top: &Top) -> Value {
    let base = format!("/services/{}", pointer_segment(name));
    let mut out = Map::new();
    let image = svc.get("image").and_then(Value::as_str);
    match (mapped_image(images, name, image), image) {
        (Some(local), Some(was)) => {
            out.insert("image".into(), json!(local));
            ctx.note(&format!("{base}/image"), format!("image {was} mapped to {local} (--image)"));
        }
        (Some(local), None) => {
            out.insert("image".into(), json!(local));
        }
        (None, Some(was)) => {
            out.insert("image".into(), json!(was));
        }
        (None, None) => {}
    }
    let (mut env_from_files, mut explicit_env) = (BTreeMap::new(), BTreeMap::new());
    for (key, value) in svc {
        let at = format!("{base}/{}", pointer_segment(key));
        match key.as_str() {
            // Which profiles import it (see `compose_to_lab`).
            "image" | "profiles" => {}
            // `service_started` and `service_healthy` alike: labd creates the service once its
            // dependencies' tasks run, which with a health check means healthy.
            "depends_on" => {
                let mut names = Vec::new();
                let listed: Vec<(String, Option<&str>)> = match value {
                    Value::Array(items) => items.iter().filter_map(Value::as_str).map(|n| (n.to_string(), None)).collect(),
                    Value::Object(map) => map.iter().map(|(n, v)| (n.clone(), v.get("condition").and_then(Value::as_str))).collect(),
                    _ => vec![],
                };
                for (dep, condition) in listed {
                    match condition {
                        Some("service_completed_successfully") => ctx.note(
                            &format!("{at}/{}/condition", pointer_segment(&dep)),
                            "not carried: a lab runs its jobs once its services run, and no service waits for a job",
                        ),
                        _ => names.push(dep),
                    }
                }
                if !names.is_empty() {
                    out.insert("dependsOn".into(), json!(names));
                }
            }
            "logging" => {
                let mut logging = Map::new();
                if let Some(driver) = value.get("driver").and_then(Value::as_str) {
                    logging.insert("driver".into(), json!(driver));
                }
                if let Some(options) = value.get("options").filter(|o| o.as_object().is_some_and(|o| !o.is_empty())) {
                    logging.insert("options".into(), json!(key_values(options)));
                }
                out.insert("logging".into(), Value::Object(logging));
            }
            "build" if out.contains_key("image") => ctx.note(&at, "labd never builds or pulls: the image set runs"),
            "build" => ctx.note(&at, format!("labd never builds or pulls: build the image, load it on every node, then map it: `--image {name}=IMAGE`")),
            // Compose's command is the arguments of the image's entrypoint.
            "command" => {
                if let Some(words) = words(ctx, &at, value) {
                    out.insert("args".into(), words);
                }
            }
            // Both end in `env`, `environment` winning (as in Compose), whatever their order.
            "environment" => explicit_env = environment(ctx, &at, value),
            "env_file" => env_from_files = env_files(ctx, &at, value, top),
            "labels" => {
                out.insert("labels".into(), json!(key_values(value)));
            }
            "hostname" => {
                out.insert("hostname".into(), value.clone());
            }
            "user" => {
                out.insert("user".into(), json!(as_string(value)));
            }
            "working_dir" => {
                out.insert("workingDir".into(), value.clone());
            }
            "stop_signal" => {
                out.insert("stopSignal".into(), value.clone());
            }
            // Compose's entrypoint is what a lab's `command` is (it replaces the image's).
            "entrypoint" => {
                if let Some(words) = words(ctx, &at, value) {
                    out.insert("command".into(), words);
                }
            }
            "init" | "tty" => {
                out.insert(key.clone(), value.clone());
            }
            "stdin_open" => {
                out.insert("stdinOpen".into(), value.clone());
            }
            "cap_add" => {
                out.insert("capAdd".into(), value.clone());
            }
            "cap_drop" => {
                out.insert("capDrop".into(), value.clone());
            }
            "read_only" => {
                out.insert("readOnly".into(), value.clone());
            }
            "extra_hosts" => {
                out.insert("extraHosts".into(), json!(extra_hosts(value)));
            }
            // The three make one `dns` block.
            "dns" | "dns_search" | "dns_opt" => {
                let field = match key.as_str() {
                    "dns" => "nameservers",
                    "dns_search" => "search",
                    _ => "options",
                };
                let block = out.entry("dns").or_insert_with(|| json!({}));
                block[field] = json!(one_or_many(value));
            }
            "stop_grace_period" => match value.as_str().and_then(duration) {
                Some(d) => {
                    out.insert("stopGracePeriod".into(), json!(d));
                }
                None => ctx.note(&at, "not a duration swarmlab reads"),
            },
            "ports" => {
                let mut ports = Vec::new();
                for (i, p) in value.as_array().into_iter().flatten().enumerate() {
                    let text = match p {
                        Value::Object(long) => {
                            let target = long.get("target").and_then(as_string).unwrap_or_default();
                            let published = long.get("published").and_then(as_string);
                            let udp = long.get("protocol").and_then(Value::as_str) == Some("udp");
                            format!("{}{target}{}", published.map(|p| format!("{p}:")).unwrap_or_default(), if udp { "/udp" } else { "" })
                        }
                        other => as_string(other).unwrap_or_default(),
                    };
                    // `HOST_IP:PUBLISHED:TARGET` and ranges are beyond a lab's ports.
                    if text.matches(':').count() > 1 || text.contains('-') {
                        ctx.note(&format!("{at}/{i}"), format!("port `{text}` (host address or range) is not carried"));
                    } else {
                        ports.push(json!(text));
                    }
                }
                out.insert("ports".into(), json!(ports));
            }
            "networks" => {
                out.insert("networks".into(), json!(service_networks(ctx, &at, value, top.networks)));
            }
            "deploy" => deploy(ctx, &at, value, &mut out),
            "healthcheck" => healthcheck(ctx, &at, value, &mut out),
            "sysctls" => {
                out.insert("sysctls".into(), json!(key_values(value)));
            }
            // The same shape in a lab: a number, or {soft, hard}.
            "ulimits" => {
                out.insert("ulimits".into(), value.clone());
            }
            "configs" | "secrets" => {
                let (kind, carried) = if key == "configs" { (FileKind::Config, top.configs) } else { (FileKind::Secret, top.secrets) };
                let mounts = config_mounts(ctx, &at, value, carried, kind);
                if let Value::Array(list) = out.entry("configs").or_insert_with(|| json!([])) {
                    list.extend(mounts);
                }
            }
            "volumes" => {
                let mounts = volume_mounts(ctx, &at, value, top.volumes);
                append_mounts(&mut out, mounts);
            }
            // Compose's `tmpfs: /run` or `[/run, /tmp:size=64m]`: tmpfs mounts of a lab.
            "tmpfs" => {
                let paths: Vec<&str> = match value {
                    Value::String(one) => vec![one.as_str()],
                    other => other.as_array().into_iter().flatten().filter_map(Value::as_str).collect(),
                };
                let mut mounts = Vec::new();
                for (i, entry) in paths.into_iter().enumerate() {
                    let (target, options) = entry.split_once(':').unwrap_or((entry, ""));
                    let mut mount = json!({"type": "tmpfs", "target": target});
                    for option in options.split(',').filter(|o| !o.is_empty()) {
                        match option.split_once('=') {
                            Some(("size", size)) => mount["size"] = json!(size.to_uppercase()),
                            _ => ctx.note(&format!("{at}/{i}"), format!("tmpfs option `{option}` is not carried (size is)")),
                        }
                    }
                    mounts.push(mount);
                }
                append_mounts(&mut out, mounts);
            }
            // What a lab does anyway (Swarm restarts a service's tasks whatever their exit).
            "restart" if matches!(value.as_str(), Some("always" | "unless-stopped")) => {}
            // Compose's extension fields: the file's own, ignored by Compose too.
            other if other.starts_with("x-") => {}
            other => match not_carried(other) {
                Some(why) => ctx.note(&at, why),
                None => ctx.note(&at, "unknown to swarmlab; not carried"),
            },
        }
    }
    env_from_files.extend(explicit_env);
    if !env_from_files.is_empty() {
        out.insert("env".into(), json!(env_from_files));
    }
    if !out.contains_key("image") && !svc.contains_key("build") {
        ctx.note(&base, format!("no image: set `image` in the lab, or map one: `--image {name}=IMAGE`"));
    }
    Value::Object(out)
}

/// Compose's `cpus` and `memory` of a `limits` or `reservations` block, as the lab writes them.
fn cpus_and_memory(block: Option<&Value>) -> Map<String, Value> {
    let mut r = Map::new();
    if let Some(cpus) = block.and_then(|l| l.get("cpus")).and_then(as_string).and_then(|c| c.parse::<f64>().ok()) {
        r.insert("cpus".into(), json!(cpus));
    }
    if let Some(mem) = block.and_then(|l| l.get("memory")).and_then(as_string) {
        // Compose writes `50M`, `1G`, `512m`: the lab takes upper-case units.
        r.insert("memory".into(), json!(mem.trim_end_matches(['b', 'B']).to_uppercase()));
    }
    r
}

fn deploy(ctx: &mut Ctx, at: &str, value: &Value, out: &mut Map<String, Value>) {
    for (key, v) in value.as_object().into_iter().flatten() {
        let here = format!("{at}/{}", pointer_segment(key));
        match key.as_str() {
            "replicas" => {
                out.insert("replicas".into(), v.clone());
            }
            "mode" => {
                out.insert("mode".into(), v.clone());
            }
            "endpoint_mode" => {
                out.insert("endpointMode".into(), v.clone());
            }
            "labels" => {
                let mut labels: BTreeMap<String, String> = out.get("labels").map(key_values).unwrap_or_default();
                labels.extend(key_values(v));
                out.insert("labels".into(), json!(labels));
            }
            "resources" => {
                let mut r = cpus_and_memory(v.get("limits"));
                let reserved = cpus_and_memory(v.get("reservations"));
                if !reserved.is_empty() {
                    r.insert("reservations".into(), Value::Object(reserved));
                }
                for key in ["devices", "generic_resources", "pids"] {
                    if v.pointer(&format!("/reservations/{key}")).or_else(|| v.pointer(&format!("/limits/{key}"))).is_some() {
                        ctx.note(&here, format!("`{key}` is not carried (CPU and memory are)"));
                    }
                }
                if !r.is_empty() {
                    out.insert("resources".into(), Value::Object(r));
                }
            }
            "placement" => {
                let mut p = Map::new();
                if let Some(c) = v.get("constraints") {
                    p.insert("constraints".into(), c.clone());
                }
                if let Some(m) = v.get("max_replicas_per_node") {
                    p.insert("maxReplicasPerNode".into(), m.clone());
                }
                if let Some(preferences) = v.get("preferences") {
                    p.insert("preferences".into(), preferences.clone());
                }
                out.insert("placement".into(), Value::Object(p));
            }
            "restart_policy" => {
                let policy = carry_policy(ctx, &here, v, |field, value| match (field, value) {
                    ("condition", Value::String(c)) if c == "any" => Carry::Drop,
                    ("condition", _) => Carry::Note("not carried: a lab's services are kept running, their tasks always started again (condition any); a service meant to run once is a job: `mode: replicated-job`".into()),
                    ("max_attempts", n) => Carry::As("maxAttempts", n.clone()),
                    ("delay" | "window", _) => Carry::Duration,
                    _ => Carry::Note("not carried".into()),
                });
                if !policy.is_empty() {
                    out.insert("restartPolicy".into(), Value::Object(policy));
                }
            }
            "update_config" => {
                let policy = carry_policy(ctx, &here, v, |field, value| match (field, value) {
                    ("parallelism", n) => Carry::As("parallelism", n.clone()),
                    ("order", o) => Carry::As("order", o.clone()),
                    ("failure_action", Value::String(a)) if a == "rollback" => Carry::Note("not carried: Swarm would put back a spec the lab file no longer says, and labd would apply the file again (pause, Swarm's default, applies)".into()),
                    ("failure_action", a) => Carry::As("failureAction", a.clone()),
                    // Compose's is a fraction; a lab's a percentage.
                    ("max_failure_ratio", ratio) => match ratio.as_f64().or_else(|| ratio.as_str()?.parse().ok()).filter(|r| (0.0..=1.0).contains(r)) {
                        Some(r) => Carry::As("maxFailureRatio", json!(format!("{}%", (r * 1e6).round() / 1e4))),
                        None => Carry::Note("not a fraction between 0 and 1".into()),
                    },
                    ("delay" | "monitor", _) => Carry::Duration,
                    _ => Carry::Note("not carried".into()),
                });
                if !policy.is_empty() {
                    out.insert("update".into(), Value::Object(policy));
                }
            }
            other => ctx.note(&here, format!("deploy.{other} is not carried (Swarm's defaults apply)")),
        }
    }
}

/// What becomes of one field of a Compose policy block.
enum Carry {
    /// Carried under the lab's name for it.
    As(&'static str, Value),
    /// A duration, carried under the same name as the lab writes durations.
    Duration,
    /// Left out, as the lab's default says the same.
    Drop,
    /// Left out, and why.
    Note(String),
}

/// A Compose policy block (`deploy.restart_policy`, `deploy.update_config`) carried field by
/// field as `carry` says, a note for each field left out.
fn carry_policy(ctx: &mut Ctx, here: &str, block: &Value, carry: impl Fn(&str, &Value) -> Carry) -> Map<String, Value> {
    let mut policy = Map::new();
    for (field, value) in block.as_object().into_iter().flatten() {
        let at = format!("{here}/{}", pointer_segment(field));
        match carry(field, value) {
            Carry::As(name, v) => {
                policy.insert(name.into(), v);
            }
            Carry::Duration => match value.as_str().and_then(duration) {
                Some(d) => {
                    policy.insert(field.clone(), json!(d));
                }
                None => ctx.note(&at, "not a duration swarmlab reads"),
            },
            Carry::Drop => {}
            Carry::Note(why) => ctx.note(&at, why),
        }
    }
    policy
}

/// Converts a Compose file into a lab named `name`; `read_file` reads the files its configs
/// name (relative to the Compose file's directory, as Compose reads them).
pub fn compose_to_lab(path: &Path, text: &str, name: &str, options: &ImportOptions, read_file: &dyn Fn(&Path) -> std::io::Result<String>) -> Result<Imported, ImportError> {
    let docs = parse_documents(text).map_err(|e| ImportError::Syntax(format!("{}:{}:{}: {}", path.display(), e.mark.line, e.mark.column, e.message)))?;
    let doc = docs.into_iter().next().ok_or(ImportError::NoServices)?;
    let mut ctx = Ctx { positions: &doc.positions, notes: Vec::new() };
    let services = doc.value.get("services").and_then(Value::as_object).ok_or(ImportError::NoServices)?;
    let mut networks = Map::new();
    for (net, def) in doc.value.get("networks").and_then(Value::as_object).into_iter().flatten() {
        let at = format!("/networks/{}", pointer_segment(net));
        let mut n = Map::new();
        if let Some(subnet) = def.pointer("/ipam/config/0/subnet") {
            n.insert("subnet".into(), subnet.clone());
        }
        if let Some(internal) = def.get("internal") {
            n.insert("internal".into(), internal.clone());
        }
        if def.get("external").is_some() {
            ctx.note(&at, "external networks are not carried: the lab makes its own");
        }
        networks.insert(net.clone(), Value::Object(n));
    }
    let defined: Vec<String> = networks.keys().cloned().collect();
    let configs = files_of(&mut ctx, path, doc.value.get("configs").unwrap_or(&Value::Null), FileKind::Config, read_file);
    // Secrets become configs of the lab (mounted where Compose mounts them): a test lab's
    // passwords and keys need no encryption at rest, and one kind of file is simpler to read.
    let mut secrets = Map::new();
    for (name, content) in files_of(&mut ctx, path, doc.value.get("secrets").unwrap_or(&Value::Null), FileKind::Secret, read_file) {
        let at = format!("/secrets/{}", pointer_segment(&name));
        if configs.contains_key(&name) {
            ctx.note(&at, format!("not carried: a config is named `{name}` too"));
            continue;
        }
        ctx.note(&at, "carried as a config of the lab (Swarm keeps secrets encrypted; configs are not), mounted at /run/secrets/ as Compose does");
        secrets.insert(name, content);
    }
    let volumes = volumes(&mut ctx, doc.value.get("volumes").unwrap_or(&Value::Null));
    let top = Top { networks: &defined, configs: &configs, secrets: &secrets, volumes: &volumes, compose: path, read_file };
    let mut lab_services = Map::new();
    let dir = path.parent().unwrap_or(Path::new("."));
    for (svc_name, svc) in services {
        let mut svc = svc.as_object().cloned().unwrap_or_default();
        if svc.contains_key("extends") {
            match extends::resolve(svc_name, services, dir, read_file) {
                Ok(merged) => svc = merged,
                Err(why) => {
                    ctx.note(&format!("/services/{}/extends", pointer_segment(svc_name)), format!("{why}; not carried"));
                    svc.remove("extends");
                }
            }
        }
        let profiles: Vec<&str> = svc.get("profiles").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        if !profiles.is_empty() && !profiles.iter().any(|p| options.profiles.iter().any(|e| e == p || e == "*")) {
            let at = format!("/services/{}/profiles", pointer_segment(svc_name));
            let listed = profiles.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ");
            ctx.note(&at, format!("not imported: `docker compose up` starts it only with its profile ({listed}) enabled; `--profile {}` imports it", profiles[0]));
            continue;
        }
        lab_services.insert(svc_name.clone(), service(&mut ctx, svc_name, &svc, &options.images, &top));
    }
    // A dependency the lab does not keep running (not imported, or a job) is nothing to wait for.
    let kept_running: Vec<String> = lab_services.iter().filter(|(_, s)| !s.get("mode").and_then(Value::as_str).is_some_and(|m| m.ends_with("-job"))).map(|(n, _)| n.clone()).collect();
    for (name, svc) in lab_services.iter_mut() {
        let Some(Value::Array(deps)) = svc.get_mut("dependsOn") else { continue };
        deps.retain(|dep| {
            let dep = dep.as_str().unwrap_or_default();
            let kept = kept_running.iter().any(|k| k == dep);
            if !kept {
                ctx.note(&format!("/services/{}/depends_on", pointer_segment(name)), format!("`{dep}` not carried: the lab does not keep it running (not imported, or a job)"));
            }
            kept
        });
        if deps.is_empty() {
            svc.as_object_mut().map(|o| o.remove("dependsOn"));
        }
    }
    let mut spec = Map::new();
    let files: Map<String, Value> = configs.into_iter().chain(secrets).collect();
    if !files.is_empty() {
        spec.insert("configs".into(), Value::Object(files));
    }
    if !volumes.is_empty() {
        spec.insert("volumes".into(), Value::Object(volumes));
    }
    if !networks.is_empty() {
        spec.insert("networks".into(), Value::Object(networks));
    }
    spec.insert("services".into(), Value::Object(lab_services));
    let lab = json!({"apiVersion": crate::spec::API_VERSION, "kind": crate::spec::KIND, "metadata": {"name": name}, "spec": spec});
    let body = serde_yaml_ng::to_string(&lab).unwrap_or_default();
    let mut notes = ctx.notes;
    notes.sort_by_key(|n| (n.line, n.column));
    let mut text = String::from("# yaml-language-server: $schema=https://swarmlab.dev/schemas/lab.v1alpha1.json\n");
    text.push_str(&format!("# Imported from {} by `labctl import`.\n", path.display()));
    if !notes.is_empty() {
        text.push_str("# Not carried over, or changed (compose file line:column):\n");
        for n in &notes {
            text.push_str(&format!("#   {n}\n"));
        }
    }
    text.push_str(&body);
    if !text.ends_with('\n') {
        text.push('\n');
    }
    // What we write must be a lab labd accepts.
    match parse_file(Path::new(&format!("{name}.yaml")), &text).into_iter().next().map(|d| d.result) {
        Some(Ok(_)) => Ok(Imported { text, notes }),
        Some(Err(diagnostics)) => Err(ImportError::Invalid { diagnostics, notes }),
        None => Err(ImportError::NoServices),
    }
}

/// Compose's project name, as `docker compose` picks it without `-p`: the file's top-level
/// `name` (unless it is still a `${VARIABLE}`), else the directory the file is in; made a DNS
/// label, as lab names are.
pub fn project_name(text: &str, dir: Option<&str>) -> String {
    let declared = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).ok().and_then(|v| v.get("name")?.as_str().map(str::to_string)).filter(|n| !n.contains('$'));
    let name: String = declared.or(dir.map(str::to_string)).unwrap_or_default().to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let name = name.trim_matches('-').chars().take(32).collect::<String>();
    if name.is_empty() { "imported".into() } else { name }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_project_name_is_the_file_s_name_else_its_directory_s() {
        use super::project_name;
        assert_eq!(project_name("name: Shop_Front\nservices: {}\n", Some("imp2")), "shop-front");
        assert_eq!(project_name("services: {}\n", Some("My Project")), "my-project");
        assert_eq!(project_name("name: ${PROJECT}\nservices: {}\n", Some("dir")), "dir", "not interpolated here");
        assert_eq!(project_name("services: [\n", None), "imported");
    }

    use super::*;

    fn no_files(path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} (no files in this test)", path.display())))
    }

    #[test]
    fn named_volumes_absolute_binds_and_tmpfs_carry_and_relative_binds_are_noted() {
        let compose = "services:\n  db:\n    image: labbox:latest\n    tmpfs: [/run, '/tmp:size=16m,mode=1777']\n    volumes:\n      - data:/var/lib/db\n      - /srv/results:/results:ro\n      - ./conf:/etc/db\n      - /anonymous\n      - {type: volume, target: /anon}\n      - type: tmpfs\n        target: /scratch\n        tmpfs: {size: 64m}\nvolumes:\n  data:\n    driver: local\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "vols", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("vols.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        assert!(lab.spec.volumes.contains_key("data"));
        let mounts: Vec<_> = lab.spec.services["db"].volumes.clone().unwrap().iter().map(|m| m.entry().unwrap()).collect();
        let view: Vec<_> = mounts.iter().map(|m| (m.kind, m.source.as_deref(), m.target.as_str(), m.read_only, m.size.map(|s| s.bytes))).collect();
        use crate::spec::MountKind::*;
        assert_eq!(view, vec![
            (Tmpfs, None, "/run", None, None),
            (Tmpfs, None, "/tmp", None, Some(16 * 1024 * 1024)),
            (Volume, Some("data"), "/var/lib/db", None, None),
            (Bind, Some("/srv/results"), "/results", Some(true), None),
            (Tmpfs, None, "/scratch", None, Some(64 * 1024 * 1024)),
        ]);
        assert!(out.text.contains("#   4:19: services.db.tmpfs.1: tmpfs option `mode=1777` is not carried"), "{}", out.text);
        assert!(out.text.contains("#   8:9: services.db.volumes.2: relative host path `./conf` is not carried"), "{}", out.text);
        assert!(out.text.contains("#   9:9: services.db.volumes.3: anonymous volume at /anonymous is not carried"), "{}", out.text);
        assert!(out.text.contains("#   10:9: services.db.volumes.4: a volume without a source at /anon is not carried"), "{}", out.text);
        assert!(out.text.contains("#   16:5: volumes.data.driver: driver is not carried"), "{}", out.text);
    }

    #[test]
    fn a_variable_given_no_value_is_left_out_and_noted() {
        let compose = "services:\n  list:\n    image: labbox:latest\n    environment: [A=1, EMPTY=, FROM_SHELL]\n  map:\n    image: labbox:latest\n    environment: {B: '', C: 2, FROM_SHELL: null, ALSO: ~}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "envs", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("envs.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let env = |s: &str| lab.spec.services[s].env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!((env("list"), env("map")), (vec!["A=1".to_string(), "EMPTY=".into()], vec!["B=".to_string(), "C=2".into()]));
        let notes: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes, [
            "4:5: services.list.environment: `FROM_SHELL` takes its value from where Compose runs (unset there: not set at all); not carried: give it one in `env`",
            "7:5: services.map.environment: `ALSO`, `FROM_SHELL` take their values from where Compose runs (unset there: not set at all); not carried: give them values in `env`",
        ]);
    }

    #[test]
    fn env_files_are_read_beside_the_compose_file_and_environment_wins() {
        let compose = "services:\n  node:\n    image: labbox:latest\n    environment: {B: explicit}\n    env_file: [.env, {path: ./optional.env, required: false}, missing.env]\n";
        let read = |path: &Path| match path.to_str() {
            Some("lab/.env") => Ok("# peers\nA=1\nB=from-file\nC=\"quoted value\"\n\nFROM_SHELL\n".to_string()),
            _ => no_files(path),
        };
        let out = compose_to_lab(Path::new("lab/compose.yml"), compose, "envs", &ImportOptions::default(), &read).expect("valid");
        let lab = parse_file(Path::new("envs.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let env: Vec<String> = lab.spec.services["node"].env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(env, ["A=1", "B=explicit", "C=quoted value"]);
        assert!(out.text.contains("services.node.env_file.0: lab/.env:6: `FROM_SHELL` takes its value from where Compose runs"), "{}", out.text);
        assert!(out.text.contains("services.node.env_file.2: cannot read lab/missing.env"), "{}", out.text);
        assert!(!out.text.contains("optional.env"), "a file not required may be missing: {}", out.text);
    }

    #[test]
    fn entrypoint_user_working_dir_stop_signal_ulimits_and_restart_policy_carry() {
        let compose = "services:\n  node:\n    image: labbox:latest\n    deploy: {restart_policy: {condition: on-failure, delay: 500ms, max_attempts: 3, window: 2m}}\n    ulimits: {nofile: {soft: 20000, hard: 40000}, nproc: 65535}\n    entrypoint: /bin/node --flag 'a b'\n    command: [--port, 4000]\n    user: 1000\n    working_dir: /srv\n    stop_signal: SIGINT\n  list:\n    image: labbox:latest\n    entrypoint: [sh, -c]\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "run", &ImportOptions::default(), &no_files).expect("valid");
        assert_eq!(out.notes.iter().map(ToString::to_string).collect::<Vec<_>>(), ["4:31: services.node.deploy.restart_policy.condition: not carried: a lab's services are kept running, their tasks always started again (condition any); a service meant to run once is a job: `mode: replicated-job`"]);
        let lab = parse_file(Path::new("run.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let node = &lab.spec.services["node"];
        assert_eq!(node.command, Some(crate::spec::Command::Exec(vec!["/bin/node".into(), "--flag".into(), "a b".into()])), "split, not run by a shell");
        assert_eq!(node.args, Some(vec!["--port".to_string(), "4000".to_string()]));
        assert_eq!((node.user.as_deref(), node.working_dir.as_deref(), node.stop_signal.as_deref()), (Some("1000"), Some("/srv"), Some("SIGINT")));
        let restart = node.restart_policy.unwrap();
        assert_eq!((restart.delay.map(|d| d.micros), restart.max_attempts, restart.window.map(|d| d.micros)), (Some(500_000), Some(3), Some(120_000_000)));
        assert_eq!(node.ulimits["nofile"].soft_hard(), (20000, 40000));
        assert_eq!(node.ulimits["nproc"].soft_hard(), (65535, 65535));
        assert_eq!(lab.spec.services["list"].command, Some(crate::spec::Command::Exec(vec!["sh".into(), "-c".into()])));
    }

    #[test]
    fn update_config_carries_as_the_service_s_update_policy_and_rollback_is_said_not_carried() {
        let compose = "services:\n  node:\n    image: labbox:latest\n    deploy:\n      replicas: 20\n      update_config: {parallelism: 5, delay: 10s, order: start-first, monitor: 2s, max_failure_ratio: 0.07}\n  other:\n    image: labbox:latest\n    deploy: {update_config: {failure_action: rollback}, rollback_config: {parallelism: 0}}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "roll", &ImportOptions::default(), &no_files).expect("valid");
        let notes: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("9:30: services.other.deploy.update_config.failure_action: not carried: Swarm would put back"), "{notes:?}");
        assert!(notes[1].starts_with("9:57: services.other.deploy.rollback_config: deploy.rollback_config is not carried"), "{notes:?}");
        let lab = parse_file(Path::new("roll.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let update = lab.spec.services["node"].update.expect("carried");
        assert_eq!((update.parallelism, update.delay.map(|d| d.micros), update.monitor.map(|d| d.micros)), (Some(5), Some(10_000_000), Some(2_000_000)));
        assert_eq!(update.order, Some(crate::spec::UpdateOrder::StartFirst));
        assert_eq!(update.max_failure_ratio.map(|p| p.0), Some(7.0));
        assert_eq!(lab.spec.services["other"].update, None);
    }

    #[test]
    fn reservations_carry_beside_limits_and_devices_are_noted() {
        let compose = "services:\n  db:\n    image: labbox:latest\n    deploy:\n      resources:\n        limits: {cpus: '1', memory: 256M}\n        reservations: {cpus: '0.25', memory: 64m, devices: [{capabilities: [gpu]}]}\n  cache:\n    image: labbox:latest\n    deploy: {resources: {reservations: {memory: 1G}}}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "res", &ImportOptions::default(), &no_files).expect("valid");
        let notes: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
        assert_eq!(notes, ["5:7: services.db.deploy.resources: `devices` is not carried (CPU and memory are)"]);
        let lab = parse_file(Path::new("res.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let db = lab.spec.services["db"].resources.clone().expect("carried");
        let reserved = db.reservations.expect("reservations carried");
        assert_eq!((db.cpus, reserved.cpus, reserved.memory.map(|m| m.bytes)), (Some(1.0), Some(0.25), Some(64 * 1024 * 1024)));
        let cache = lab.spec.services["cache"].resources.clone().expect("carried");
        assert_eq!((cache.memory, cache.reservations.and_then(|r| r.memory).map(|m| m.bytes)), (None, Some(1 << 30)));
    }

    #[test]
    fn cap_drop_read_only_and_placement_preferences_carry() {
        let compose = "services:\n  node:\n    image: labbox:latest\n    cap_drop: [NET_RAW]\n    read_only: true\n    deploy:\n      placement:\n        preferences: [{spread: node.labels.zone}]\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "caps", &ImportOptions::default(), &no_files).expect("valid");
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        let lab = parse_file(Path::new("caps.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let node = &lab.spec.services["node"];
        assert_eq!((node.cap_drop.as_slice(), node.read_only), (["NET_RAW".to_string()].as_slice(), Some(true)));
        assert_eq!(node.placement.as_ref().map(|p| p.preferences[0].spread.as_str()), Some("node.labels.zone"));
    }

    #[test]
    fn depends_on_carries_in_both_forms_and_what_the_lab_does_not_keep_running_is_noted() {
        let compose = "services:\n  db: {image: labbox:latest}\n  cache: {image: labbox:latest}\n  app:\n    image: labbox:latest\n    depends_on: [db, cache]\n  web:\n    image: labbox:latest\n    depends_on:\n      app: {condition: service_healthy}\n      seed: {condition: service_completed_successfully}\n      debug: {condition: service_started}\n  seed: {image: labbox:latest, deploy: {mode: replicated-job}}\n  debug: {image: labbox:latest, profiles: [debug]}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "deps", &ImportOptions::default(), &no_files).expect("valid");
        let notes: Vec<String> = out.notes.iter().map(ToString::to_string).collect();
        assert!(notes.iter().any(|n| n.starts_with("11:14: services.web.depends_on.seed.condition: not carried: a lab runs its jobs once its services run")), "{notes:?}");
        assert!(notes.iter().any(|n| n == "9:5: services.web.depends_on: `debug` not carried: the lab does not keep it running (not imported, or a job)"), "{notes:?}");
        let lab = parse_file(Path::new("deps.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        assert_eq!(lab.spec.services["app"].depends_on, ["db", "cache"]);
        assert_eq!(lab.spec.services["web"].depends_on, ["app"]);
    }

    #[test]
    fn logging_carries_its_driver_and_options() {
        let compose = "services:\n  chatty:\n    image: labbox:latest\n    logging:\n      driver: json-file\n      options: {max-size: 10m, max-file: 3}\n  quiet:\n    image: labbox:latest\n    logging: {driver: none}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "logs", &ImportOptions::default(), &no_files).expect("valid");
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        let lab = parse_file(Path::new("logs.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let chatty = lab.spec.services["chatty"].logging.clone().expect("carried");
        assert_eq!(chatty.driver.as_deref(), Some("json-file"));
        assert_eq!(chatty.options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(), ["max-file=3", "max-size=10m"]);
        assert_eq!(lab.spec.services["quiet"].logging.as_ref().and_then(|l| l.driver.as_deref()), Some("none"));
    }

    #[test]
    fn extra_hosts_and_dns_carry_in_each_of_compose_s_forms() {
        let compose = "services:\n  list:\n    image: labbox:latest\n    extra_hosts: ['broker:10.42.0.5', 'v6host:::1', 'eq=10.0.0.9']\n    dns: 10.42.0.2\n    dns_search: [lab.internal]\n    dns_opt: [ndots:2]\n  map:\n    image: labbox:latest\n    extra_hosts: {broker: '[fd00::5]'}\n    dns: [10.42.0.2, 10.42.0.3]\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "hosts", &ImportOptions::default(), &no_files).expect("valid");
        assert!(out.notes.is_empty(), "{:?}", out.notes);
        let lab = parse_file(Path::new("hosts.yaml"), &out.text).remove(0).result.expect("a valid lab").lab;
        let list = &lab.spec.services["list"];
        let hosts: Vec<(&str, &str)> = list.extra_hosts.iter().map(|(h, ip)| (h.as_str(), ip.as_str())).collect();
        assert_eq!(hosts, [("broker", "10.42.0.5"), ("eq", "10.0.0.9"), ("v6host", "::1")]);
        assert_eq!(list.dns, Some(crate::spec::Dns { nameservers: vec!["10.42.0.2".into()], search: vec!["lab.internal".into()], options: vec!["ndots:2".into()] }));
        let map = &lab.spec.services["map"];
        assert_eq!(map.extra_hosts["broker"], "fd00::5");
        assert_eq!(map.dns.as_ref().map(|d| d.nameservers.len()), Some(2));
        // As Swarm takes them: `IP hostname` lines, and a DNS config.
        let desired = crate::plan::desired_lab(&lab);
        let svc = desired.services.iter().find(|s| s.short_name == "list").unwrap();
        assert_eq!(svc.hosts, ["10.42.0.5 broker", "10.0.0.9 eq", "::1 v6host"]);
    }

    #[test]
    fn configs_carry_with_their_files_read_beside_the_compose_file_and_modes_in_octal() {
        let compose = "services:\n  web:\n    image: labbox:latest\n    configs:\n      - inline\n      - source: nginx\n        target: /etc/nginx/nginx.conf\n        uid: '101'\n        mode: 0440\n      - gone\n      - far\nconfigs:\n  nginx:\n    file: ./nginx.conf\n  inline:\n    content: |\n      x = 1\n  gone:\n    external: true\n  far:\n    file: ./missing.conf\n";
        let read = |path: &Path| match path.to_str() {
            Some("deploy/nginx.conf") => Ok("events {}\n".to_string()),
            _ => no_files(path),
        };
        let out = compose_to_lab(Path::new("deploy/compose.yml"), compose, "files", &ImportOptions::default(), &read).expect("valid");
        let lab = parse_file(Path::new("files.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        assert_eq!(lab.spec.configs["nginx"].content, "events {}\n");
        assert_eq!(lab.spec.configs["inline"].content, "x = 1\n");
        assert_eq!(lab.spec.configs.len(), 2, "{}", out.text);
        let mounts = lab.spec.services["web"].configs.clone().unwrap();
        assert_eq!(mounts.len(), 2, "{}", out.text);
        assert_eq!((mounts[0].source(), mounts[0].target()), ("inline", "/inline".to_string()));
        let crate::spec::ConfigMount::Entry(nginx) = &mounts[1] else { panic!("{:?}", mounts[1]) };
        assert_eq!((nginx.target.as_deref(), nginx.mode.as_ref().and_then(|m| m.bits())), (Some("/etc/nginx/nginx.conf"), Some(0o440)));
        assert!(out.text.contains("mode: '0440'"), "written as octal: {}", out.text);
        assert!(out.text.contains("#   18:3: configs.gone: only configs with a `file` or a `content` are carried"), "{}", out.text);
        assert!(out.text.contains("#   21:5: configs.far.file: cannot read deploy/missing.conf"), "{}", out.text);
        assert!(out.text.contains("#   10:9: services.web.configs.2: config `gone` is not carried"), "{}", out.text);
    }

    #[test]
    fn secrets_become_configs_mounted_where_compose_mounts_secrets() {
        let compose = "services:\n  db:\n    image: labbox:latest\n    secrets:\n      - db_password\n      - source: tls_key\n        target: server.key\n        mode: 0400\n      - source: token\n        target: /etc/app/token\n      - missing\n    configs: [nginx]\nconfigs:\n  nginx:\n    content: x\nsecrets:\n  db_password:\n    file: ./db_password.txt\n  tls_key:\n    file: ./tls.key\n  token:\n    environment: API_TOKEN\n";
        let read = |path: &Path| match path.to_str() {
            Some("deploy/db_password.txt") => Ok("hunter2\n".to_string()),
            Some("deploy/tls.key") => Ok("KEY\n".to_string()),
            _ => no_files(path),
        };
        let out = compose_to_lab(Path::new("deploy/compose.yml"), compose, "vault", &ImportOptions::default(), &read).expect("valid");
        let lab = parse_file(Path::new("vault.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        assert_eq!((lab.spec.configs["db_password"].content.as_str(), lab.spec.configs["tls_key"].content.as_str()), ("hunter2\n", "KEY\n"));
        assert_eq!(lab.spec.configs.len(), 3, "{}", out.text);
        let mounts = lab.spec.services["db"].configs.clone().expect("mounts");
        let placed: Vec<(&str, String, Option<u32>)> = mounts
            .iter()
            .map(|m| (m.source(), m.target(), match m { crate::spec::ConfigMount::Entry(e) => e.mode.as_ref().and_then(|m| m.bits()), _ => None }))
            .collect();
        assert_eq!(placed, [("nginx", "/nginx".to_string(), None), ("db_password", "/run/secrets/db_password".to_string(), None), ("tls_key", "/run/secrets/server.key".to_string(), Some(0o400))], "{}", out.text);
        assert!(out.text.contains("#   17:3: secrets.db_password: carried as a config of the lab"), "{}", out.text);
        assert!(out.text.contains("#   21:3: secrets.token: only secrets with a `file` or a `content` are carried"), "{}", out.text);
        assert!(out.text.contains("#   9:9: services.db.secrets.2: secret `token` is not carried (see the top-level secrets)"), "{}", out.text);
        assert!(out.text.contains("#   11:9: services.db.secrets.3: secret `missing` is not carried"), "{}", out.text);
    }

    #[test]
    fn a_services_network_aliases_and_terminal_carry_and_its_fixed_address_is_noted() {
        let compose = "services:\n  broker:\n    image: labbox:latest\n    tty: true\n    stdin_open: true\n    networks:\n      iot:\n        aliases: [mqtt.example.com]\n        ipv4_address: 10.5.0.9\n      back: {}\nnetworks:\n  iot: {}\n  back: {}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "nets", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("nets.yaml"), &out.text).remove(0).result.expect("valid lab").lab;
        let nets = lab.spec.services["broker"].networks.clone().expect("networks");
        let got: Vec<(&str, &[String])> = nets.iter().map(|n| (n.name(), n.aliases())).collect();
        assert_eq!(got, [("back", &[][..]), ("iot", &["mqtt.example.com".to_string()][..])], "{}", out.text);
        assert!(out.text.contains("#   9:9: services.broker.networks.iot.ipv4_address: not carried"), "{}", out.text);
        assert_eq!((lab.spec.services["broker"].tty, lab.spec.services["broker"].stdin_open), (Some(true), Some(true)), "{}", out.text);
    }

    /// The IoT lab of the seeds (a Docker training, in French), verbatim.
    const IOT: &str = "version: \"3\"\nservices:\n  db:\n    image: influxdb:1.3\n    container_name: influx\n    restart: on-failure\n  dashboard:\n    image: grafana/grafana:4.3.2\n    ports:\n      - 3000:3000\n    restart: on-failure\n  simulator:\n    image: lucj/iot-simulator:1.0\n    command: -h collector -p 1337\n    restart: on-failure\n  collector:\n    image: lucj/iot-collector:1.0\n    restart: on-failure\n";

    #[test]
    fn the_iot_compose_file_becomes_a_valid_lab_with_every_dropped_field_located() {
        let out = compose_to_lab(Path::new("docker-compose.yml"), IOT, "iot", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("iot.yaml"), &out.text).remove(0).result.unwrap().lab;
        assert_eq!(lab.spec.services.len(), 4);
        let sim = &lab.spec.services["simulator"];
        assert_eq!(sim.args.as_deref(), Some(&["-h", "collector", "-p", "1337"].map(String::from)[..]), "command becomes the entrypoint's arguments");
        assert_eq!(lab.spec.services["dashboard"].ports[0].0, "3000:3000");
        assert!(out.text.contains("#   5:5: services.db.container_name: Swarm names tasks itself"), "{}", out.text);
        assert!(out.text.contains("#   6:5: services.db.restart: a lab's services are kept running: Swarm starts a task again whatever its exit code (a service meant to run once is a job: `mode: replicated-job`)"), "{}", out.text);
        assert_eq!(out.notes.len(), 5, "{:?}", out.notes);
        // `always` (or `unless-stopped`) is what a lab does anyway: nothing to say.
        let always = IOT.replace("restart: on-failure", "restart: always");
        let out = compose_to_lab(Path::new("docker-compose.yml"), &always, "iot", &ImportOptions::default(), &no_files).expect("valid");
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
    }

    #[test]
    fn extension_fields_and_merge_keys_are_read_as_compose_reads_them() {
        let compose = "x-node: &node\n  image: labbox:latest\n  networks: [back]\nservices:\n  a:\n    <<: *node\n    command: [sleep, infinity]\n  b:\n    <<: *node\n    deploy: {replicas: 3}\nnetworks:\n  back: {}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "dry", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("dry.yaml"), &out.text).remove(0).result.unwrap().lab;
        let (a, b) = (&lab.spec.services["a"], &lab.spec.services["b"]);
        assert_eq!((a.image.as_deref(), b.image.as_deref()), (Some("labbox:latest"), Some("labbox:latest")));
        assert_eq!(b.replicas, Some(3));
        assert_eq!(a.networks.as_ref().map(Vec::len), Some(1));
        assert!(out.notes.is_empty(), "an `x-` field is Compose's own, not a field dropped: {:?}", out.notes);
    }

    #[test]
    fn health_checks_carry_over_in_each_of_composes_forms() {
        let compose = "services:\n  exec:\n    image: labbox:latest\n    sysctls: [net.ipv4.ip_default_ttl=42]\n    healthcheck:\n      test: [CMD, nc, -z, localhost, '80']\n      interval: 1m30s\n      timeout: 10s\n      retries: 3\n      start_period: 40s\n      start_interval: 5s\n  shell:\n    image: labbox:latest\n    healthcheck: {test: [CMD-SHELL, test -f /tmp/ok]}\n  line:\n    image: labbox:latest\n    healthcheck: {test: test -f /tmp/ok}\n  off:\n    image: labbox:latest\n    healthcheck: {test: [NONE]}\n";
        let out = compose_to_lab(Path::new("compose.yml"), compose, "hc", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("hc.yaml"), &out.text).remove(0).result.unwrap().lab;
        let check = |name: &str| lab.spec.services[name].healthcheck.clone().unwrap();
        let exec = check("exec");
        assert_eq!(exec.test, Some(crate::spec::Command::Exec(["nc", "-z", "localhost", "80"].map(String::from).to_vec())));
        assert_eq!((exec.interval.map(|d| d.micros), exec.timeout.map(|d| d.micros)), (Some(90_000_000), Some(10_000_000)));
        assert_eq!((exec.retries, exec.start_period.map(|d| d.micros)), (Some(3), Some(40_000_000)));
        assert_eq!(check("shell").test, Some(crate::spec::Command::Shell("test -f /tmp/ok".into())));
        assert_eq!(check("line").test, check("shell").test);
        assert_eq!((check("off").test, check("off").disable), (None, Some(true)));
        assert!(out.text.contains("#   11:7: services.exec.healthcheck.start_interval: not carried"), "{}", out.text);
        assert_eq!(lab.spec.services["exec"].sysctls["net.ipv4.ip_default_ttl"].to_string(), "42");
        assert_eq!(out.notes.len(), 1, "{:?}", out.notes);
    }

    #[test]
    fn builds_are_reported_and_images_can_be_mapped_to_local_ones() {
        let dockercoins = "version: \"2\"\nservices:\n  rng:\n    build: rng\n    ports:\n    - \"8001:80\"\n  hasher:\n    build: hasher\n    ports:\n    - \"8002:80\"\n  webui:\n    build: webui\n    ports:\n    - \"8000:80\"\n    volumes:\n    - \"./webui/files/:/files/\"\n  redis:\n    image: redis\n  worker:\n    build: worker\n    deploy:\n      replicas: 2\n      resources: {limits: {cpus: '0.5', memory: 50M}}\n    stop_grace_period: 1m30s\n";
        let unmapped = compose_to_lab(Path::new("dc.yml"), dockercoins, "coins", &ImportOptions::default(), &no_files);
        match &unmapped {
            Err(ImportError::Invalid { diagnostics, notes }) => {
                assert!(diagnostics.iter().any(|d| d.message.contains("has no image")), "{diagnostics:?}");
                assert!(notes.iter().any(|n| n.to_string() == "4:5: services.rng.build: labd never builds or pulls: build the image, load it on every node, then map it: `--image rng=IMAGE`"), "{notes:?}");
            }
            other => panic!("{other:?}"),
        }
        let images = vec![("redis".to_string(), "labbox:latest".to_string()), ("*".to_string(), "standin:latest".to_string())];
        let out = compose_to_lab(Path::new("dc.yml"), dockercoins, "coins", &ImportOptions { images, ..Default::default() }, &no_files).expect("valid once mapped");
        assert!(out.text.contains("#   4:5: services.rng.build: labd never builds or pulls"), "{}", out.text);
        assert!(out.text.contains("services.webui.volumes"), "{}", out.text);
        assert!(out.text.contains("services.redis.image: image redis mapped to labbox:latest (--image)"), "{}", out.text);
        let lab = parse_file(Path::new("coins.yaml"), &out.text).remove(0).result.unwrap().lab;
        let worker = &lab.spec.services["worker"];
        assert_eq!((worker.replicas, worker.image.as_deref()), (Some(2), Some("standin:latest")));
        assert_eq!(worker.stop_grace_period.map(|d| d.micros), Some(90_000_000));
        assert_eq!(worker.resources.as_ref().and_then(|r| r.memory).map(|m| m.bytes), Some(50 * 1024 * 1024));
    }

    #[test]
    fn a_service_in_a_profile_is_imported_only_with_its_profile_enabled_as_compose_up_starts_it() {
        let compose = "services:\n  db: {image: labbox:latest}\n  client:\n    image: labbox:latest\n    profiles: [tools, debug]\n";
        let out = compose_to_lab(Path::new("c.yml"), compose, "p", &ImportOptions::default(), &no_files).expect("valid");
        let lab = parse_file(Path::new("p.yaml"), &out.text).remove(0).result.unwrap().lab;
        assert_eq!(lab.spec.services.keys().collect::<Vec<_>>(), ["db"]);
        assert!(out.text.contains("#   5:5: services.client.profiles: not imported: `docker compose up` starts it only with its profile (`tools`, `debug`) enabled; `--profile tools` imports it"), "{}", out.text);
        for enabled in ["debug", "*"] {
            let options = ImportOptions { profiles: vec![enabled.into()], ..Default::default() };
            let out = compose_to_lab(Path::new("c.yml"), compose, "p", &options, &no_files).expect("valid");
            let lab = parse_file(Path::new("p.yaml"), &out.text).remove(0).result.unwrap().lab;
            assert_eq!(lab.spec.services.keys().collect::<Vec<_>>(), ["client", "db"], "--profile {enabled}");
            assert!(out.notes.is_empty(), "{:?}", out.notes);
        }
    }
}
