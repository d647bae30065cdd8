//! From the text of one file to valid labs or located errors. Three passes, all errors of a
//! file collected: YAML syntax (saphyr, with positions), structure (the generated JSON Schema,
//! enforced by the jsonschema crate) and meaning (checks the schema cannot express, such as a
//! service using a network the lab does not define).

use std::collections::BTreeSet;
use std::path::Path;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::diagnostic::Diagnostic;
use super::links::{Cidr, Destination};
use super::model::{Lab, MountKind, VolumeMount, API_VERSION, CONFIG_MAX_BYTES, DEFAULT_NETWORK, EXTENSION_PREFIX, KIND, MEMBER_NAME_MAX, NAME_PATTERN, RESERVED_LABEL_PREFIXES};
use super::units::{Duration, Memory, Rate};
use super::schema::{allowed_fields, validator};
use super::units::pattern_hint;
use super::yaml::{parse_documents, pointer_segment, Document, Mark, Positions};

/// A lab that passed every check, with the hash of its content (the revision labd applies).
#[derive(Debug, Clone, PartialEq)]
pub struct ValidLab {
    pub lab: std::sync::Arc<Lab>,
    pub revision: String,
}

impl ValidLab {
    pub fn name(&self) -> &str {
        &self.lab.metadata.name
    }

    /// Each service's replicas (its own, else `spec.defaults`', else 1): the slots a schedule's
    /// `pick` draws from (a global service has none, and no `pick` is allowed on one).
    pub fn replicas(&self) -> std::collections::BTreeMap<String, u64> {
        let spec = &self.lab.spec;
        let default = spec.defaults.as_ref().and_then(|d| d.replicas);
        spec.services.iter().map(|(name, s)| (name.clone(), u64::from(s.replicas.or(default).unwrap_or(1)))).collect()
    }
}

/// One document of a file: the lab name if one could be read, and the outcome.
#[derive(Debug, Clone)]
pub struct LabDocument {
    pub name: Option<String>,
    pub name_mark: Mark,
    pub result: Result<ValidLab, Vec<Diagnostic>>,
}

/// The revision of a lab: a hash of its canonical JSON, so formatting and comments do not count.
pub fn revision_of(lab: &Lab) -> String {
    let bytes = serde_json::to_vec(lab).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// Parses and validates every document of one file. Never panics, whatever the input.
pub fn parse_file(path: &Path, text: &str) -> Vec<LabDocument> {
    let docs = match parse_documents(text) {
        // A file with no document at all is most often one being written in place (truncated
        // first): an error, so the labs it defined keep running, never "no labs here".
        Ok(docs) if docs.is_empty() => {
            let mark = Mark { line: 1, column: 1 };
            let message = "the file has no document (empty, or written in place and not finished); delete the file to remove its labs";
            return vec![LabDocument { name: None, name_mark: mark, result: Err(vec![diag(path, mark, "(file)", message)]) }];
        }
        Ok(docs) => docs,
        Err(e) => {
            return vec![LabDocument {
                name: None,
                name_mark: e.mark,
                result: Err(vec![diag(path, e.mark, "yaml", e.message)]),
            }]
        }
    };
    docs.into_iter().map(|doc| validate_document(path, doc)).collect()
}

fn diag(path: &Path, mark: Mark, field: &str, message: impl Into<String>) -> Diagnostic {
    Diagnostic { file: path.to_path_buf(), line: mark.line, column: mark.column, field: field.to_string(), message: message.into() }
}

/// A located finding, before it is turned into a [`Diagnostic`].
struct Finding {
    pointer: String,
    at_key: bool,
    message: String,
}

impl Finding {
    fn value(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Finding { pointer: pointer.into(), at_key: false, message: message.into() }
    }
    fn key(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Finding { pointer: pointer.into(), at_key: true, message: message.into() }
    }
}

fn validate_document(path: &Path, doc: Document) -> LabDocument {
    // Extension fields served the YAML (anchors, merged where used, and checked there); the
    // lab, its revision included, is the rest. Pointers into the rest are unchanged.
    let mut value = doc.value;
    if let Value::Object(fields) = &mut value {
        fields.retain(|k, _| !k.starts_with(EXTENSION_PREFIX));
    }
    let name = value.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string);
    let name_mark = doc.positions.value("/metadata/name");
    let mut findings: Vec<Finding> = doc.problems.iter().map(|(p, m)| Finding::value(p.clone(), m.clone())).collect();
    let compose = value.get("services").is_some() && value.get("apiVersion").is_none() && value.get("kind").is_none();
    if !value.is_object() {
        findings.push(Finding::value("", format!("expected a Lab mapping (apiVersion: {API_VERSION}, kind: {KIND}), found {}", type_name(&value))));
    } else if compose {
        // Said once, with the way on, rather than five missing and unknown fields.
        let file = path.display();
        findings.push(Finding::value("", format!("this is a Compose file, not a Lab (top-level `services`, no apiVersion or kind): `labctl import {file} -o lab.yaml` converts it, noting every field that does not carry over")));
    } else {
        for error in validator().iter_errors(&value) {
            findings.extend(schema_findings(&error, &value));
        }
        findings.extend(semantic_findings(&value));
    }
    let mut lab = None;
    if findings.is_empty() {
        match serde_json::from_value::<Lab>(value.clone()) {
            Ok(parsed) => lab = Some(parsed),
            Err(e) => findings.push(Finding::value("", e.to_string())),
        }
    }
    let result = match (lab, findings.is_empty()) {
        (Some(lab), true) => Ok(ValidLab { revision: revision_of(&lab), lab: std::sync::Arc::new(lab) }),
        _ => Err(to_diagnostics(path, &value, &doc.positions, findings)),
    };
    LabDocument { name, name_mark, result }
}

fn to_diagnostics(path: &Path, value: &Value, positions: &Positions, findings: Vec<Finding>) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| {
            let mark = if f.at_key { positions.key(&f.pointer) } else { positions.value(&f.pointer) };
            diag(path, mark, &field_path(value, &f.pointer), f.message)
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `/spec/services/web/networks/0` → `spec.services.web.networks[0]`.
pub fn field_path(root: &Value, pointer: &str) -> String {
    if pointer.is_empty() {
        return "(document)".to_string();
    }
    let mut out = String::new();
    let mut node = Some(root);
    for raw in pointer.trim_start_matches('/').split('/') {
        let seg = raw.replace("~1", "/").replace("~0", "~");
        match node {
            Some(Value::Array(items)) => {
                out.push_str(&format!("[{seg}]"));
                node = seg.parse::<usize>().ok().and_then(|i| items.get(i));
            }
            _ => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&seg);
                node = node.and_then(|n| n.get(&seg));
            }
        }
    }
    out
}

pub(super) fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean `{b}`"),
        Value::Number(n) => format!("a number `{n}`"),
        Value::String(s) => format!("a string `{s}`"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

fn expected_name(kind: &TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "object" => "a mapping".to_string(),
        "array" => "a list".to_string(),
        "integer" => "an integer".to_string(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(set) => set.iter().map(|t| one(&t)).collect::<Vec<_>>().join(" or "),
    }
}

/// The closest allowed name to a misspelled one, if it is close enough to be a likely typo.
fn did_you_mean<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&wrong.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

fn schema_findings(error: &ValidationError<'_>, root: &Value) -> Vec<Finding> {
    let pointer = error.instance_path().as_str().to_string();
    let instance = error.instance();
    let message = match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let segments: Vec<&str> = pointer.trim_start_matches('/').split('/').filter(|s| !s.is_empty()).collect();
            let allowed = allowed_fields(&segments);
            return unexpected
                .iter()
                .map(|field| {
                    let hint = match did_you_mean(field, allowed.iter().map(String::as_str)) {
                        Some(s) => format!(" (did you mean `{s}`?)"),
                        None if !allowed.is_empty() => format!(" (allowed: {})", allowed.join(", ")),
                        None => String::new(),
                    };
                    Finding::key(format!("{pointer}/{}", pointer_segment(field)), format!("unknown field `{field}`{hint}"))
                })
                .collect();
        }
        ValidationErrorKind::Required { property } => {
            let property = property.as_str().unwrap_or_default();
            // The field is absent, so its position falls back to the mapping that lacks it.
            return vec![Finding::key(format!("{pointer}/{}", pointer_segment(property)), format!("missing required field `{property}`"))];
        }
        ValidationErrorKind::Type { kind } => format!("expected {}, found {}", expected_name(kind), type_name(instance)),
        ValidationErrorKind::Pattern { pattern } => match (pattern_hint(pattern), pattern.as_str()) {
            (Some(hint), _) => format!("{} {hint}", type_name(instance)),
            (None, NAME_PATTERN) => format!("{} is not a DNS label: use lowercase letters, digits and '-', starting and ending with a letter or digit", type_name(instance)),
            (None, _) => format!("{} does not match the pattern {pattern}", type_name(instance)),
        },
        ValidationErrorKind::Enum { options } => {
            let names: Vec<&str> = options.as_array().map(|o| o.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let wrong = instance.as_str().unwrap_or_default();
            match did_you_mean(wrong, names.iter().copied()) {
                Some(s) => format!("{} is not allowed (did you mean `{s}`?); one of: {}", type_name(instance), names.join(", ")),
                None => format!("{} is not allowed; one of: {}", type_name(instance), names.join(", ")),
            }
        }
        ValidationErrorKind::Constant { expected_value } => {
            format!("must be `{}`, found {}", expected_value.as_str().unwrap_or_default(), type_name(instance))
        }
        ValidationErrorKind::Minimum { limit } => format!("must be at least {limit}, found {}", type_name(instance)),
        ValidationErrorKind::Maximum { limit } => format!("must be at most {limit}, found {}", type_name(instance)),
        ValidationErrorKind::MaxLength { limit } => format!("is longer than {limit} characters"),
        ValidationErrorKind::MinLength { .. } => "must not be empty".to_string(),
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            return any_of_findings(&pointer, instance, context, root);
        }
        _ => error.to_string(),
    };
    vec![Finding::value(pointer, message)]
}

/// For an untagged choice (a command as list or string, a network as name or entry), explain
/// the branch the user evidently meant: the one whose errors are not just "wrong type here".
fn any_of_findings(pointer: &str, instance: &Value, context: &[Vec<ValidationError<'static>>], root: &Value) -> Vec<Finding> {
    let shallow_type_error = |e: &ValidationError<'_>| {
        e.instance_path().as_str() == pointer && matches!(e.kind(), ValidationErrorKind::Type { .. })
    };
    let meant = context.iter().find(|branch| !branch.is_empty() && !branch.iter().any(shallow_type_error));
    match meant {
        Some(branch) => branch.iter().flat_map(|e| schema_findings(e, root)).collect(),
        None => {
            let expected: BTreeSet<String> = context
                .iter()
                .flatten()
                .filter_map(|e| match e.kind() {
                    ValidationErrorKind::Type { kind } => Some(expected_name(kind)),
                    _ => None,
                })
                .collect();
            let expected: Vec<String> = expected.into_iter().collect();
            vec![Finding::value(pointer, format!("expected {}, found {}", expected.join(" or "), type_name(instance)))]
        }
    }
}

fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Checks of meaning. They read the raw document, so they run even when the structure has
/// errors elsewhere, and every error of a file is reported at once.
fn semantic_findings(doc: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    // The lab's own name is the schema's to check (pattern, maxLength).
    let name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let empty = serde_json::Map::new();
    let networks = doc.pointer("/spec/networks").and_then(Value::as_object).unwrap_or(&empty);
    let services = doc.pointer("/spec/services").and_then(Value::as_object).unwrap_or(&empty);
    for (kind, members) in [("networks", networks), ("services", services)] {
        for n in members.keys() {
            if n.len() > MEMBER_NAME_MAX || !is_dns_label(n) {
                out.push(Finding::key(
                    format!("/spec/{kind}/{}", pointer_segment(n)),
                    format!("`{n}` is not a DNS label of at most {MEMBER_NAME_MAX} characters (Swarm names it `{name}_{n}`)"),
                ));
            }
        }
    }
    check_labels(doc, &mut out);
    check_units(doc, "", &mut out);
    // 0s would call every lab that waits a moment stuck.
    if let Some(Ok(d)) = doc.pointer("/spec/progressDeadline").and_then(Value::as_str).map(str::parse::<Duration>) {
        if d.micros < 1_000_000 {
            out.push(Finding::value("/spec/progressDeadline".to_string(), "must be at least 1s (how long the lab may wait for the same things before it is Degraded)"));
        }
    }
    check_condition_blocks(doc, "", &mut out);
    check_memory_limits(doc, services, &mut out);
    check_subnets(networks, &mut out);
    let configs = doc.pointer("/spec/configs").and_then(Value::as_object).unwrap_or(&empty);
    check_configs(configs, &mut out);
    let volumes = doc.pointer("/spec/volumes").and_then(Value::as_object).unwrap_or(&empty);
    for name in volumes.keys().filter(|n| !is_docker_name(n)) {
        out.push(Finding::key(format!("/spec/volumes/{}", pointer_segment(name)), format!("`{name}` is not a volume name: at most 64 letters, digits, `.`, `_` and `-`, a letter or digit at both ends")));
    }
    let defaults = doc.pointer("/spec/defaults");
    let inherited = |svc: &Value, field: &str| svc.get(field).or_else(|| defaults.and_then(|d| d.get(field))).cloned();
    if let Some(d) = defaults {
        check_networks(networks, "/spec/defaults", d.get("networks"), &mut out);
        check_healthcheck("/spec/defaults", d, &mut out);
        check_sysctls("/spec/defaults", d, &mut out);
        check_hosts_and_dns("/spec/defaults", d, &mut out);
        check_ulimits("/spec/defaults", d, &mut out);
        // Files and volumes share the task's paths: one set of targets for both.
        let mut targets = BTreeSet::new();
        check_config_mounts(configs, "/spec/defaults", d, &mut targets, &mut out);
        check_volume_mounts(volumes, "/spec/defaults", d, &mut targets, &mut out);
    }
    for (svc_name, svc) in services {
        let base = format!("/spec/services/{}", pointer_segment(svc_name));
        if inherited(svc, "image").is_none() {
            out.push(Finding::key(
                base.clone(),
                format!("service `{svc_name}` has no image: set `image` on the service or `spec.defaults.image`"),
            ));
        }
        let mode = inherited(svc, "mode");
        let mode = mode.as_ref().and_then(Value::as_str).unwrap_or("replicated");
        if matches!(mode, "global" | "global-job") && svc.get("replicas").is_some() {
            out.push(Finding::value(format!("{base}/replicas"), format!("`replicas` cannot be set with `mode: {mode}` (one task per node)")));
        }
        if let Some(most) = svc.get("maxConcurrent").and_then(Value::as_u64) {
            let replicas = inherited(svc, "replicas").as_ref().and_then(Value::as_u64).unwrap_or(1);
            if mode != "replicated-job" {
                out.push(Finding::key(format!("{base}/maxConcurrent"), format!("`maxConcurrent` is for `mode: replicated-job` (this service is {mode})")));
            } else if most > replicas {
                out.push(Finding::value(format!("{base}/maxConcurrent"), format!("{most} at once is more than the job's {replicas} replicas: at most {replicas}")));
            }
        }
        check_networks(networks, &base, svc.get("networks"), &mut out);
        check_healthcheck(&base, svc, &mut out);
        check_sysctls(&base, svc, &mut out);
        check_hosts_and_dns(&base, svc, &mut out);
        check_ulimits(&base, svc, &mut out);
        let mut targets = BTreeSet::new();
        check_config_mounts(configs, &base, svc, &mut targets, &mut out);
        check_volume_mounts(volumes, &base, svc, &mut targets, &mut out);
    }
    let networks_of = |svc: &str| -> BTreeSet<String> {
        let list = services.get(svc).and_then(|s| inherited(s, "networks"));
        let names: BTreeSet<String> = list
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().or_else(|| a.get("name").and_then(Value::as_str)).map(str::to_string))
            .collect();
        if names.is_empty() { BTreeSet::from([DEFAULT_NETWORK.to_string()]) } else { names }
    };
    check_depends_on(services, defaults, &inherited, &mut out);
    if let Some(links) = doc.pointer("/spec/links").and_then(Value::as_array) {
        check_links(links, services, &networks_of, &mut out);
    }
    if let Some(schedule) = doc.pointer("/spec/schedule") {
        let links = doc.pointer("/spec/links").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        check_schedule(schedule, networks, services, defaults, links, &mut out);
    }
    out
}

/// `dependsOn` names services of the lab kept running (a job runs once the lab is Ready: a
/// service waiting for one would wait for itself), never its own service, in no cycle.
fn check_depends_on(services: &serde_json::Map<String, Value>, defaults: Option<&Value>, inherited: &dyn Fn(&Value, &str) -> Option<Value>, out: &mut Vec<Finding>) {
    if defaults.and_then(|d| d.get("dependsOn")).is_some() {
        out.push(Finding::key("/spec/defaults/dependsOn", "`dependsOn` names the services one service waits for: set it on that service"));
    }
    let is_job = |svc: &Value| inherited(svc, "mode").as_ref().and_then(Value::as_str).is_some_and(|m| m.ends_with("-job"));
    let deps = |svc: &Value| -> Vec<String> { svc.get("dependsOn").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect() };
    for (name, svc) in services {
        for (i, dep) in deps(svc).iter().enumerate() {
            let at = format!("/spec/services/{}/dependsOn/{i}", pointer_segment(name));
            match services.get(dep) {
                None => out.push(Finding::value(at, unknown_service(dep, services))),
                Some(_) if dep == name => out.push(Finding::value(at, format!("`{name}` cannot wait for itself"))),
                Some(d) if is_job(d) => out.push(Finding::value(at, format!("`{dep}` is a job, which runs once the lab's services run: a service cannot wait for it"))),
                Some(_) => {}
            }
        }
    }
    // A cycle: following `dependsOn` from a service comes back to it. Said once, at the
    // cycle's first service by name.
    fn back_to(start: &str, path: &mut Vec<String>, deps: &dyn Fn(&str) -> Vec<String>) -> bool {
        let Some(last) = path.last().cloned() else { return false };
        for dep in deps(&last) {
            // A service naming itself is said apart.
            if dep == start && path.len() > 1 {
                path.push(dep);
                return true;
            }
            if dep.as_str() > start && !path.contains(&dep) {
                path.push(dep);
                if back_to(start, path, deps) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let deps_of = |name: &str| services.get(name).map(deps).unwrap_or_default();
    for start in services.keys() {
        let mut path = vec![start.clone()];
        if back_to(start, &mut path, &deps_of) {
            out.push(Finding::key(format!("/spec/services/{}/dependsOn", pointer_segment(start)), format!("a cycle: {} (each would wait for the other for good)", path.join(" → "))));
        }
    }
}

fn unknown_service(name: &str, services: &serde_json::Map<String, Value>) -> String {
    let hint = did_you_mean(name, services.keys().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
    format!("service `{name}` is not defined in spec.services{hint}")
}

/// Links between services the lab defines, that share a network (or toward a real range),
/// each direction said once.
fn check_links(links: &[Value], services: &serde_json::Map<String, Value>, networks_of: &dyn Fn(&str) -> BTreeSet<String>, out: &mut Vec<Finding>) {
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, link) in links.iter().enumerate() {
        let at = format!("/spec/links/{i}");
        let (Some(from), Some(to)) = (link.get("from").and_then(Value::as_str), link.get("to").and_then(Value::as_str)) else { continue };
        let from_known = services.contains_key(from);
        if !from_known {
            out.push(Finding::value(format!("{at}/from"), unknown_service(from, services)));
        }
        let symmetric = link.get("symmetric").and_then(Value::as_bool) == Some(true);
        let mut directions = vec![(from.to_string(), to.to_string())];
        match Destination::parse(to) {
            Err(e) => out.push(Finding::value(format!("{at}/to"), format!("`{to}` {e}"))),
            Ok(Destination::Range(_)) => {
                if symmetric {
                    out.push(Finding::value(format!("{at}/symmetric"), "`symmetric` needs a service as `to`: an address range sends nothing back through the lab"));
                }
            }
            Ok(Destination::Service(_)) if !services.contains_key(to) => out.push(Finding::value(format!("{at}/to"), unknown_service(to, services))),
            Ok(Destination::Service(_)) if to == from => out.push(Finding::value(format!("{at}/to"), "a link joins two different services")),
            Ok(Destination::Service(_)) => {
                if from_known && networks_of(from).is_disjoint(&networks_of(to)) {
                    out.push(Finding::key(
                        at.clone(),
                        format!("`{from}` and `{to}` share no network: no traffic goes between them to shape (add a common network)"),
                    ));
                }
                if symmetric {
                    directions.push((to.to_string(), from.to_string()));
                }
            }
        }
        for (a, b) in directions {
            if !seen.insert((a.clone(), b.clone())) {
                out.push(Finding::key(at.clone(), format!("the traffic from `{a}` to `{b}` already has a link above")));
            }
        }
    }
}

/// Steps in order, on targets the lab defines, each saying one thing; ramps that end; runs
/// that know how long they last.
fn check_schedule(
    schedule: &Value,
    networks: &serde_json::Map<String, Value>,
    services: &serde_json::Map<String, Value>,
    defaults: Option<&Value>,
    links: &[Value],
    out: &mut Vec<Finding>,
) {
    let base = "/spec/schedule";
    // Directions the lab's links cover: (from, to), both ways for symmetric ones.
    let linked: BTreeSet<(String, String)> = links
        .iter()
        .filter_map(|l| Some((l.get("from")?.as_str()?.to_string(), l.get("to")?.as_str()?.to_string(), l.get("symmetric").and_then(Value::as_bool) == Some(true))))
        .flat_map(|(from, to, both)| {
            let back = both.then(|| (to.clone(), from.clone()));
            std::iter::once((from, to)).chain(back)
        })
        .collect();
    let micros = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|t| t.parse::<Duration>().ok()).map(|d| d.micros);
    if let Some(text) = schedule.get("startAt").and_then(Value::as_str) {
        if chrono::DateTime::parse_from_rfc3339(text).is_err() {
            out.push(Finding::value(format!("{base}/startAt"), format!("`{text}` is not an RFC 3339 time (e.g. 2026-11-25T10:00:00Z)")));
        }
    }
    if schedule.get("startAt").is_some() && schedule.get("start").and_then(Value::as_str) == Some("manual") {
        out.push(Finding::key(format!("{base}/start"), "`start: manual` (time 0 is `labctl start`) and `startAt` exclude each other"));
    }
    let repeats = schedule.get("repeat").and_then(Value::as_u64).is_some_and(|n| n > 1);
    let looped = schedule.get("loop").and_then(Value::as_bool) == Some(true);
    if looped && schedule.get("repeat").is_some() {
        out.push(Finding::key(format!("{base}/repeat"), "`repeat` and `loop: true` exclude each other"));
    }
    if (repeats || looped) && schedule.get("period").is_none() {
        out.push(Finding::key(base, "a schedule that runs more than once needs `period` (how long one run lasts)"));
    }
    if schedule.get("end").and_then(Value::as_str) == Some("stop") {
        let steps = schedule.get("steps").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
        // A run with every step at 0 and nothing lasting ends the moment it starts.
        let instant = steps.iter().all(|s| micros(s.get("at")) == Some(0) && s.get("ramp").is_none() && s.get("flap").is_none());
        if looped {
            out.push(Finding::value(format!("{base}/end"), "a looped schedule never ends, so `end: stop` never comes; use `repeat`"));
        } else if instant && schedule.get("period").is_none() {
            out.push(Finding::value(format!("{base}/end"), "every step is at 0s, so the run ends as it starts and `end: stop` would stop the lab at once: set `period`"));
        }
    }
    let mut last_at = 0;
    for (i, step) in schedule.get("steps").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at_ptr = format!("{base}/steps/{i}");
        if let Some(at) = micros(step.get("at")) {
            if at < last_at {
                out.push(Finding::value(format!("{at_ptr}/at"), "steps must be in order of `at`: this one comes before the step above it"));
            }
            last_at = last_at.max(at);
        }
        for (field, defined) in [("network", networks), ("service", services)] {
            let Some(name) = step.get(field).and_then(Value::as_str) else { continue };
            // The implicit default network needs no definition.
            let implicit = field == "network" && name == DEFAULT_NETWORK;
            if !implicit && !defined.contains_key(name) {
                let hint = did_you_mean(name, defined.keys().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                out.push(Finding::value(format!("{at_ptr}/{field}"), format!("{field} `{name}` is not defined in spec.{field}s{hint}")));
            }
        }
        if let Some(to) = step.get("to").and_then(Value::as_str) {
            match step.get("service").and_then(Value::as_str) {
                None => out.push(Finding::key(format!("{at_ptr}/to"), "`to` targets the link from `service` toward it: give `service` too")),
                Some(_) if step.get("network").is_some() => {
                    out.push(Finding::key(format!("{at_ptr}/network"), "a step on a link (`service` + `to`) takes no `network`"))
                }
                Some(from) if !linked.contains(&(from.to_string(), to.to_string())) => out.push(Finding::value(
                    format!("{at_ptr}/to"),
                    format!("no link from `{from}` toward `{to}` in spec.links: declare it there (its conditions may be empty)"),
                )),
                Some(_) => {}
            }
        }
        if let Some(groups) = step.get("partition") {
            check_partition(groups, step, services, &at_ptr, out);
            continue;
        }
        if TASK_VERBS.iter().any(|k| step.get(*k).is_some()) {
            check_task_step(step, services, defaults, &at_ptr, out);
            continue;
        }
        for key in ["slots", "pick"] {
            if step.get(key).is_some() {
                out.push(Finding::key(format!("{at_ptr}/{key}"), format!("`{key}` chooses the tasks a `kill`, `stop`, `pause` or `cpus` step acts on")));
            }
        }
        if step.get("heal").is_some() {
            if let Some(extra) = step.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !matches!(k.as_str(), "at" | "heal")) {
                out.push(Finding::key(format!("{at_ptr}/{extra}"), "a `heal` step ends the partition in force and says nothing else"));
            }
            if step.get("heal").and_then(Value::as_bool) == Some(false) {
                out.push(Finding::value(format!("{at_ptr}/heal"), "`heal: false` does nothing: leave the step out"));
            }
            continue;
        }
        if step.get("network").is_none() && step.get("service").is_none() {
            out.push(Finding::key(at_ptr.clone(), "a step needs a target: `network`, `service`, both (one attachment), or `partition`"));
        }
        let says: Vec<&str> = ["conditions", "restore", "ramp", "flap"].into_iter().filter(|k| step.get(*k).is_some()).collect();
        if says.is_empty() {
            out.push(Finding::key(at_ptr.clone(), "a step needs `conditions`, `restore: true`, `ramp`, `flap`, `partition` or `heal: true`"));
        }
        if says.contains(&"restore") && says.len() > 1 {
            out.push(Finding::key(format!("{at_ptr}/restore"), "`restore` returns the target to its static conditions: it cannot come with other changes"));
        }
        if let Some(flap) = step.get("flap") {
            if micros(flap.get("up")) == Some(0) || micros(flap.get("down")) == Some(0) {
                out.push(Finding::value(format!("{at_ptr}/flap"), "`up` and `down` must both be longer than 0"));
            }
        }
        if let Some(ramp) = step.get("ramp") {
            check_ramp(ramp, &format!("{at_ptr}/ramp"), looped, out);
        }
    }
}

/// What a step may do to a service's tasks (rather than to its traffic).
const TASK_VERBS: [&str; 4] = ["kill", "stop", "pause", "cpus"];

/// A step that kills, stops, freezes or slows tasks: of one service, in slots it has; nothing
/// else in the step.
fn check_task_step(step: &Value, services: &serde_json::Map<String, Value>, defaults: Option<&Value>, at: &str, out: &mut Vec<Finding>) {
    let verbs: Vec<&str> = TASK_VERBS.into_iter().filter(|k| step.get(*k).is_some()).collect();
    let verb = verbs.first().copied().unwrap_or("kill");
    if let Some(extra) = step.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !matches!(k.as_str(), "at" | "service" | "slots" | "pick") && !TASK_VERBS.contains(&k.as_str())) {
        let why = if extra == "network" || extra == "to" {
            format!("a `{verb}` step acts on a service's tasks, not on one of its networks or links: leave `{extra}` out")
        } else {
            format!("a `{verb}` step acts on a service's tasks and says nothing else (`service`, `slots`, `pick`)")
        };
        out.push(Finding::key(format!("{at}/{extra}"), why));
    }
    if let [first, second, ..] = verbs[..] {
        out.push(Finding::key(format!("{at}/{second}"), format!("one step does one of `kill`, `stop`, `pause` and `cpus`, not `{first}` and `{second}`: make two steps")));
    }
    for verb in ["kill", "stop"] {
        if step.get(verb).and_then(Value::as_bool) == Some(false) {
            out.push(Finding::value(format!("{at}/{verb}"), format!("`{verb}: false` does nothing: leave the step out")));
        }
    }
    let pick = step.get("pick");
    if pick.is_some() && step.get("pause").and_then(Value::as_bool) == Some(false) {
        out.push(Finding::key(format!("{at}/pick"), "`pause: false` thaws the tasks in `slots`, or every task: leave `pick` out"));
    }
    let Some(name) = step.get("service").and_then(Value::as_str) else {
        out.push(Finding::key(at.to_string(), format!("a `{verb}` step needs the `service` whose tasks it acts on")));
        return;
    };
    let Some(svc) = services.get(name) else { return };
    let field = |f: &str| svc.get(f).or_else(|| defaults.and_then(|d| d.get(f)));
    let slots = step.get("slots").and_then(Value::as_array);
    for (key, _) in [("slots", slots.is_some()), ("pick", pick.is_some())].into_iter().filter(|(_, set)| *set) {
        match field("mode").and_then(Value::as_str) {
            Some("global" | "global-job") => {
                out.push(Finding::key(format!("{at}/{key}"), format!("`{name}` is global: its tasks have no slots (leave `{key}` out to act on every task)")));
                return;
            }
            Some("replicated-job") => {
                out.push(Finding::key(format!("{at}/{key}"), format!("`{name}` is a job: Swarm numbers a job's tasks by run, not by slot (leave `{key}` out to act on every task)")));
                return;
            }
            _ => {}
        }
    }
    let replicas = field("replicas").and_then(Value::as_u64).unwrap_or(1);
    let range = if replicas == 1 { "slot 1 only".to_string() } else { format!("slots 1 to {replicas}") };
    for (i, slot) in slots.into_iter().flatten().enumerate() {
        if let Some(n) = slot.as_u64().filter(|n| *n > replicas) {
            out.push(Finding::value(format!("{at}/slots/{i}"), format!("`{name}` has {replicas} replica{}: {range}, found {n}", if replicas == 1 { "" } else { "s" })));
        }
    }
    // A pick of more tasks than it draws from would act on fewer than written; one of none on none.
    let pool = slots.map(|s| s.iter().filter_map(Value::as_u64).collect::<BTreeSet<u64>>().len() as u64);
    if let Some(count) = pick.and_then(Value::as_u64) {
        match pool {
            Some(listed) if count > listed => out.push(Finding::value(format!("{at}/pick"), format!("picks {count} of the {listed} slot{} in `slots`: at most {listed}", if listed == 1 { "" } else { "s" }))),
            None if count > replicas => out.push(Finding::value(format!("{at}/pick"), format!("picks {count} of `{name}`'s {replicas} replica{}: at most {replicas}", if replicas == 1 { "" } else { "s" }))),
            _ => {}
        }
    }
    if pick.and_then(Value::as_str).and_then(|p| p.parse::<super::units::Percent>().ok()).is_some_and(|p| p.0 == 0.0) {
        out.push(Finding::value(format!("{at}/pick"), "`pick: 0%` picks no task: leave the step out"));
    }
}

/// Two groups or more of services the lab defines, none in two groups; nothing else in the step.
fn check_partition(groups: &Value, step: &Value, services: &serde_json::Map<String, Value>, at: &str, out: &mut Vec<Finding>) {
    if let Some(extra) = step.as_object().into_iter().flat_map(|o| o.keys()).find(|k| !matches!(k.as_str(), "at" | "partition")) {
        out.push(Finding::key(format!("{at}/{extra}"), "a `partition` step cuts traffic between its groups and says nothing else"));
    }
    let Some(list) = groups.as_array() else { return };
    if list.len() < 2 {
        out.push(Finding::value(format!("{at}/partition"), "a partition needs two groups or more (`[[a, b], [c]]`)"));
    }
    let mut seen = BTreeSet::new();
    for (g, group) in list.iter().enumerate() {
        for (m, member) in group.as_array().into_iter().flatten().enumerate() {
            let Some(name) = member.as_str() else { continue };
            let here = format!("{at}/partition/{g}/{m}");
            if !services.contains_key(name) {
                let hint = did_you_mean(name, services.keys().map(String::as_str)).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
                out.push(Finding::value(here, format!("service `{name}` is not defined in spec.services{hint}")));
            } else if !seen.insert(name) {
                out.push(Finding::value(here, format!("service `{name}` is in two groups")));
            }
        }
    }
}

fn check_ramp(ramp: &Value, at: &str, looped: bool, out: &mut Vec<Finding>) {
    let has = |k: &str| ramp.get(k).is_some();
    let fields_of = |k: &str| -> BTreeSet<String> {
        ramp.get(k).and_then(Value::as_object).map(|o| o.keys().filter(|f| *f != "preset").cloned().collect()).unwrap_or_default()
    };
    let (goal, form) = if has("to") || has("over") || has("steps") {
        for k in ["to", "over", "steps"] {
            if !has(k) {
                out.push(Finding::key(at.to_string(), format!("a ramp with `to`, `over` and `steps` needs all three (`{k}` is missing)")));
            }
        }
        ("to", "from … to")
    } else {
        if !has("by") || !has("every") {
            out.push(Finding::key(at.to_string(), "a ramp needs `to`, `over` and `steps`, or `by` and `every` (and `until`)"));
        }
        if !has("until") {
            let message = if looped {
                "a ramp by `by` every `every` needs `until`, its limit, even in a loop (each run starts over)"
            } else {
                "this ramp never ends: give it `until` (its limit), or use `to`, `over` and `steps`"
            };
            out.push(Finding::key(at.to_string(), message));
        }
        ("until", "by … until")
    };
    let from = fields_of("from");
    for k in [goal, "by"] {
        if !has(k) {
            continue;
        }
        let other = fields_of(k);
        for missing in from.symmetric_difference(&other) {
            out.push(Finding::value(format!("{at}/{k}"), format!("`{missing}` must be in both `from` and `{k}` of a {form} ramp")));
        }
    }
    for field in from.iter().filter(|f| matches!(f.as_str(), "reorder" | "down")) {
        out.push(Finding::value(format!("{at}/from/{field}"), format!("`{field}` cannot be ramped; set it with a step's `conditions`")));
    }
}

/// Labels that would override the ownership labels are refused wherever labels are accepted.
fn check_labels(doc: &Value, out: &mut Vec<Finding>) {
    let mut places = vec!["/metadata/labels".to_string(), "/spec/defaults/labels".to_string()];
    for kind in ["networks", "services"] {
        if let Some(members) = doc.pointer(&format!("/spec/{kind}")).and_then(Value::as_object) {
            places.extend(members.keys().map(|m| format!("/spec/{kind}/{}/labels", pointer_segment(m))));
        }
    }
    for place in places {
        for key in doc.pointer(&place).and_then(Value::as_object).into_iter().flat_map(|o| o.keys()) {
            if let Some(prefix) = RESERVED_LABEL_PREFIXES.iter().find(|p| key.starts_with(*p)) {
                out.push(Finding::key(
                    format!("{place}/{}", pointer_segment(key)),
                    format!("label `{key}` is reserved: labels starting with `{prefix}` mark what swarmlab and `docker stack` own"),
                ));
            }
        }
    }
}

/// Unit values that are well formed (the schema checks that) but too large for Docker or tc.
/// The depth of a document is bounded by the loader, so this recursion is too.
/// Every `conditions` block (networks, services, attachments, links, schedule steps) says each
/// thing once and gives what its models shape.
fn check_condition_blocks(node: &Value, pointer: &str, out: &mut Vec<Finding>) {
    let children: Vec<(String, &Value)> = match node {
        Value::Object(map) => map.iter().map(|(k, v)| (pointer_segment(k), v)).collect(),
        Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
        _ => return,
    };
    for (key, value) in children {
        let child = format!("{pointer}/{key}");
        if key == "conditions" && value.is_object() {
            check_conditions(value, &child, out);
        }
        check_condition_blocks(value, &child, out);
    }
}

fn check_conditions(c: &Value, at: &str, out: &mut Vec<Finding>) {
    let has = |k: &str| c.get(k).is_some();
    if has("loss") && has("lossModel") {
        out.push(Finding::key(format!("{at}/lossModel"), "`loss` and `lossModel` both say how packets are lost: keep one"));
    }
    if has("delayDistribution") && !has("jitter") && c.get("delayDistribution").and_then(Value::as_str) != Some("uniform") {
        out.push(Finding::key(format!("{at}/delayDistribution"), "a delay distribution shapes the jitter: set `jitter` (its width) in the same block"));
    }
    if let Some(k) = c.get("correlation") {
        if k.get("delay").is_some() && !has("jitter") {
            out.push(Finding::key(format!("{at}/correlation/delay"), "delay correlation applies to the jitter: set `jitter` in the same block"));
        }
        if k.get("loss").is_some() && has("lossModel") {
            out.push(Finding::key(format!("{at}/correlation/loss"), "loss correlation is for `loss`; a `lossModel` has its own memory"));
        }
    }
    let percent = |v: Option<&Value>| v.and_then(Value::as_str).and_then(|t| t.parse::<crate::spec::units::Percent>().ok()).map(|p| p.0).unwrap_or(0.0);
    if let Some(m) = c.pointer("/lossModel/fourState") {
        for (sum, leaving, state) in [(["p13", "p14"], "1", "a gap"), (["p31", "p32"], "3", "a burst loss")] {
            if percent(m.get(sum[0])) + percent(m.get(sum[1])) > 100.0 {
                out.push(Finding::value(
                    format!("{at}/lossModel/fourState/{}", sum[1]),
                    format!("{} + {} leave state {leaving} ({state}) and cannot exceed 100%", sum[0], sum[1]),
                ));
            }
        }
    }
}

/// Docker refuses a container a memory limit under 6 MB ("Minimum memory limit allowed is
/// 6MB"; Swarm itself takes 4 MiB, so the service is created and every task is rejected).
const MIN_MEMORY_LIMIT: u64 = 6 * 1024 * 1024;

/// Also a reservation above its limit: Docker starts no such container ("Minimum memory limit
/// can not be less than memory reservation limit"), and Swarm would set aside CPU it cannot use.
fn check_memory_limits(doc: &Value, services: &serde_json::Map<String, Value>, out: &mut Vec<Finding>) {
    let at = std::iter::once("/spec/defaults/resources".to_string()).chain(services.keys().map(|s| format!("/spec/services/{}/resources", pointer_segment(s))));
    let memory = |pointer: &str| doc.pointer(pointer).and_then(Value::as_str).and_then(|t| t.parse::<Memory>().ok()).map(|m| m.bytes);
    for resources in at {
        let limit = memory(&format!("{resources}/memory"));
        // 0 is Docker's "no limit".
        if limit.is_some_and(|bytes| bytes > 0 && bytes < MIN_MEMORY_LIMIT) {
            out.push(Finding::value(format!("{resources}/memory"), "must be at least 6M: Docker starts no container with less"));
        }
        let reserved = memory(&format!("{resources}/reservations/memory"));
        if let (Some(limit), Some(reserved)) = (limit.filter(|l| *l > 0), reserved) {
            if reserved > limit {
                out.push(Finding::value(format!("{resources}/reservations/memory"), "more than the memory limit: Docker starts no container that reserves more than it may use"));
            }
        }
        let cpus = |pointer: &str| doc.pointer(pointer).and_then(Value::as_f64);
        if let (Some(limit), Some(reserved)) = (cpus(&format!("{resources}/cpus")), cpus(&format!("{resources}/reservations/cpus"))) {
            if reserved > limit {
                out.push(Finding::value(format!("{resources}/reservations/cpus"), "more than the CPU limit: the task could never use what Swarm sets aside for it"));
            }
        }
    }
}

fn check_units(node: &Value, pointer: &str, out: &mut Vec<Finding>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                let child = format!("{pointer}/{}", pointer_segment(key));
                if let Value::String(text) = value {
                    let parsed = match key.as_str() {
                        "delay" | "jitter" | "stopGracePeriod" | "interval" | "timeout" | "startPeriod" | "window" | "progressDeadline" => text.parse::<Duration>().err(),
                        "rate" => text.parse::<Rate>().err(),
                        "memory" | "size" => text.parse::<Memory>().err(),
                        _ => None,
                    };
                    if let Some(e) = parsed.filter(|e| e.is_out_of_range()) {
                        out.push(Finding::value(child, e.to_string()));
                    }
                } else {
                    check_units(value, &child, out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_units(item, &format!("{pointer}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A hostname as `/etc/hosts` and resolvers take it: dot-separated labels of letters, digits
/// and `-` (each at most 63, no `-` at either end), 253 characters at most.
fn is_hostname(name: &str) -> bool {
    name.len() <= 253
        && !name.is_empty()
        && name.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

/// `extraHosts` maps hostnames to IP addresses, `dns` names servers by address and domains by
/// name: a wrong one would make every task fail to start, or resolve nothing.
fn check_hosts_and_dns(base: &str, svc: &Value, out: &mut Vec<Finding>) {
    for (host, ip) in svc.get("extraHosts").and_then(Value::as_object).into_iter().flatten() {
        let at = format!("{base}/extraHosts/{}", pointer_segment(host));
        if !is_hostname(host) {
            out.push(Finding::key(at.clone(), format!("`{host}` is not a hostname: letters, digits, `-` and dots")));
        }
        if let Some(text) = ip.as_str().filter(|t| t.parse::<std::net::IpAddr>().is_err()) {
            out.push(Finding::value(at, format!("`{text}` is not an IP address (`10.42.0.5`, `fd00::5`): an extra host names an address")));
        }
    }
    let Some(dns) = svc.get("dns") else { return };
    for (i, server) in dns.get("nameservers").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let Some(text) = server.as_str().filter(|t| t.parse::<std::net::IpAddr>().is_err()) {
            out.push(Finding::value(format!("{base}/dns/nameservers/{i}"), format!("`{text}` is not an IP address: a name server is given by its address")));
        }
    }
    for (i, domain) in dns.get("search").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let Some(text) = domain.as_str().filter(|t| !is_hostname(t)) {
            out.push(Finding::value(format!("{base}/dns/search/{i}"), format!("`{text}` is not a domain name")));
        }
    }
    for (i, option) in dns.get("options").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let Some(text) = option.as_str().filter(|t| t.is_empty() || t.contains(char::is_whitespace)) {
            out.push(Finding::value(format!("{base}/dns/options/{i}"), format!("`{text}` is not a resolver option (one word, as `ndots:2`)")));
        }
    }
}

/// Docker sets only the sysctls of a task's own namespaces (its network and IPC ones); any
/// other would fail every task at its start, so it is refused here, with its position.
fn check_sysctls(base: &str, svc: &Value, out: &mut Vec<Finding>) {
    const IPC: [&str; 8] = ["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"];
    let Some(sysctls) = svc.get("sysctls").and_then(Value::as_object) else { return };
    for key in sysctls.keys() {
        let namespaced = key.starts_with("net.") || key.starts_with("fs.mqueue.") || IPC.contains(&key.as_str());
        if !namespaced {
            out.push(Finding::key(
                format!("{base}/sysctls/{}", pointer_segment(key)),
                format!("`{key}` is not a setting of the task's own namespaces (it would change the whole node): a task may set `net.*`, `fs.mqueue.*` and `kernel.shm*`/`msg*`/`sem`"),
            ));
        }
    }
}

/// Names Docker takes for a config, and contents Swarm keeps (it refuses empty ones).
fn check_configs(configs: &serde_json::Map<String, Value>, out: &mut Vec<Finding>) {
    for (name, config) in configs {
        let at = format!("/spec/configs/{}", pointer_segment(name));
        if !is_docker_name(name) {
            out.push(Finding::key(at.clone(), format!("`{name}` is not a config name: at most 64 letters, digits, `.`, `_` and `-`, a letter or digit at both ends")));
        }
        match config.get("content").and_then(Value::as_str) {
            Some("") => out.push(Finding::value(format!("{at}/content"), "empty: Swarm keeps no empty config (leave the file out, or give it a line)")),
            Some(text) if text.len() > CONFIG_MAX_BYTES => out.push(Finding::value(
                format!("{at}/content"),
                format!("{} bytes: Swarm keeps configs of at most {CONFIG_MAX_BYTES} bytes (bake a larger file into the image)", text.len()),
            )),
            _ => {}
        }
    }
}

/// "network `x` is not defined in spec.networks (did you mean `y`?)", with what is defined.
fn not_defined(kind: &str, section: &str, name: &str, defined: &serde_json::Map<String, Value>) -> String {
    let names: Vec<&str> = defined.keys().map(String::as_str).collect();
    let hint = match did_you_mean(name, names.iter().copied()) {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None if names.is_empty() => format!(" (spec.{section} is empty)"),
        None => format!(" (defined: {})", names.join(", ")),
    };
    format!("{kind} `{name}` is not defined in spec.{section}{hint}")
}

/// Docker's rule for config and volume names.
fn is_docker_name(name: &str) -> bool {
    let inner_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name.len() <= 64 && ends_ok && name.chars().all(inner_ok)
}

/// A path in a task that something is mounted at: absolute, a file or directory's own, and
/// only one thing there.
fn check_target(target: &str, at: &str, targets: &mut BTreeSet<String>, out: &mut Vec<Finding>) {
    if !target.starts_with('/') {
        out.push(Finding::value(at, format!("`{target}` is not an absolute path (mounts go at a path such as /etc/app.conf)")));
    } else if target.len() > 1 && target.ends_with('/') {
        out.push(Finding::value(at, format!("`{target}` ends with `/`: give the path without it")));
    }
    if !targets.insert(target.trim_end_matches('/').to_string()) {
        out.push(Finding::value(at, format!("two mounts at `{target}`")));
    }
}

/// Each volume, host path or tmpfs a service mounts: the short form readable, a named volume
/// declared, a host path absolute, each at a path of its own.
fn check_volume_mounts(defined: &serde_json::Map<String, Value>, base: &str, svc: &Value, targets: &mut BTreeSet<String>, out: &mut Vec<Finding>) {
    for (i, mount) in svc.get("volumes").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("{base}/volumes/{i}");
        let (kind, source, target, short) = match mount {
            // The short form as the lab reads it.
            Value::String(text) => match (VolumeMount::Short(text.clone())).entry() {
                Some(e) => (e.kind, e.source, e.target, true),
                None => {
                    let hint = if !text.contains(':') { " (a volume needs a name: declare one in spec.volumes and write NAME:TARGET)" } else { "" };
                    out.push(Finding::value(at, format!("`{text}` is not SOURCE:TARGET or SOURCE:TARGET:ro{hint}")));
                    continue;
                }
            },
            Value::Object(o) => {
                // A type the schema refuses is its to report.
                let kind = o.get("type").and_then(|t| serde_json::from_value::<MountKind>(t.clone()).ok());
                let (Some(kind), Some(target)) = (kind, o.get("target").and_then(Value::as_str)) else { continue };
                (kind, o.get("source").and_then(Value::as_str).map(str::to_string), target.to_string(), false)
            }
            _ => continue,
        };
        let field = |name: &str| if short { at.clone() } else { format!("{at}/{name}") };
        match (kind, source.as_deref()) {
            (MountKind::Volume, Some(name)) if !defined.contains_key(name) => {
                out.push(Finding::value(field("source"), not_defined("volume", "volumes", name, defined)));
            }
            (MountKind::Volume | MountKind::Bind, None) => {
                let kind = if kind == MountKind::Bind { "bind" } else { "volume" };
                out.push(Finding::key(at.clone(), format!("a {kind} mount needs a `source`")));
            }
            (MountKind::Bind, Some(path)) if !path.starts_with('/') => {
                out.push(Finding::value(field("source"), format!("`{path}` is not an absolute path: a bind mounts a path of the node that runs the task (the lab file's directory is not there)")))
            }
            (MountKind::Tmpfs, Some(_)) => out.push(Finding::value(field("source"), "a tmpfs has no source")),
            _ => {}
        }
        if kind != MountKind::Tmpfs && mount.get("size").is_some() {
            out.push(Finding::key(format!("{at}/size"), "`size` is a tmpfs's only"));
        }
        check_target(&target, &field("target"), targets, out);
    }
}

/// Each file a service mounts: a defined config, at an absolute path of its own, owned by
/// numeric ids (Swarm does not resolve user names), with permissions `chmod` would take.
fn check_config_mounts(defined: &serde_json::Map<String, Value>, base: &str, svc: &Value, targets: &mut BTreeSet<String>, out: &mut Vec<Finding>) {
    for (i, mount) in svc.get("configs").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("{base}/configs/{i}");
        let (source, source_at) = match mount {
            Value::String(n) => (n.as_str(), at.clone()),
            Value::Object(o) => match o.get("source").and_then(Value::as_str) {
                Some(n) => (n, format!("{at}/source")),
                None => continue,
            },
            _ => continue,
        };
        if !defined.contains_key(source) {
            out.push(Finding::value(source_at.clone(), not_defined("config", "configs", source, defined)));
        }
        let target = mount.get("target").and_then(Value::as_str).map_or_else(|| format!("/{source}"), str::to_string);
        let target_at = if mount.get("target").is_some() { format!("{at}/target") } else { source_at };
        check_target(&target, &target_at, targets, out);
        // Octal text out of range is the schema's (its pattern) to report.
        if let Some(mode) = mount.get("mode").and_then(Value::as_u64).filter(|m| *m > 0o777) {
            out.push(Finding::value(
                format!("{at}/mode"),
                format!("{mode} is not a file mode: write it in octal as chmod reads it, with a leading zero (0440); a number without one is decimal"),
            ));
        }
        for id in ["uid", "gid"] {
            let Some(value) = mount.get(id) else { continue };
            let numeric = match value {
                Value::Number(n) => n.is_u64(),
                Value::String(s) => !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()),
                _ => true, // the schema's to report
            };
            if !numeric {
                out.push(Finding::value(format!("{at}/{id}"), format!("`{}` is not a numeric id (Swarm sets the owner by number, e.g. {id}: \"1000\")", value_text(value))));
            }
        }
    }
}

fn value_text(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_string)
}

/// Limits `setrlimit` knows, a soft one no higher than its hard one (-1: unlimited).
fn check_ulimits(base: &str, svc: &Value, out: &mut Vec<Finding>) {
    for (name, limit) in svc.get("ulimits").and_then(Value::as_object).into_iter().flatten() {
        let at = format!("{base}/ulimits/{}", pointer_segment(name));
        if !super::model::ULIMIT_NAMES.contains(&name.as_str()) {
            let hint = did_you_mean(name, super::model::ULIMIT_NAMES).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            out.push(Finding::key(at.clone(), format!("`{name}` is not a limit `ulimit` knows{hint}: one of {}", super::model::ULIMIT_NAMES.join(", "))));
        }
        let (Some(soft), Some(hard)) = (limit.get("soft").and_then(Value::as_i64), limit.get("hard").and_then(Value::as_i64)) else { continue };
        let unlimited = |n: i64| if n == -1 { i64::MAX } else { n };
        if unlimited(soft) > unlimited(hard) {
            out.push(Finding::value(format!("{at}/soft"), format!("the soft limit {soft} is above the hard one {hard}")));
        }
    }
}

/// What Docker would refuse in a health check, or take for "keep the image's" unasked.
fn check_healthcheck(base: &str, svc: &Value, out: &mut Vec<Finding>) {
    let Some(check) = svc.get("healthcheck") else { return };
    let at = |field: &str| format!("{base}/healthcheck/{field}");
    if check.get("disable").and_then(Value::as_bool) == Some(true) && check.get("test").is_some() {
        out.push(Finding::key(at("disable"), "`disable: true` turns every check off, the image's too: remove `test` or `disable`"));
    }
    if check.get("test").and_then(Value::as_array).is_some_and(Vec::is_empty) {
        out.push(Finding::value(at("test"), "an empty list: leave `test` out to keep the image's own check"));
    }
    // Docker reads 0 as "the image's value" and refuses anything between 0 and 1ms.
    for (field, zero_allowed) in [("interval", false), ("timeout", false), ("startPeriod", true)] {
        let Some(Ok(d)) = check.get(field).and_then(Value::as_str).map(str::parse::<Duration>) else { continue };
        if d.micros < 1000 && !(zero_allowed && d.micros == 0) {
            out.push(Finding::value(at(field), format!("must be at least 1ms (Docker's shortest){}", if zero_allowed { ", or 0s" } else { "" })));
        }
    }
}

/// Subnets must be real CIDRs and must not overlap within the lab.
fn check_subnets(networks: &serde_json::Map<String, Value>, out: &mut Vec<Finding>) {
    let mut seen: Vec<(&str, Cidr)> = Vec::new();
    for (name, net) in networks {
        let Some(text) = net.get("subnet").and_then(Value::as_str) else { continue };
        let at = format!("/spec/networks/{}/subnet", pointer_segment(name));
        match Cidr::parse(text, 8..=29).map_err(|e| format!("`{text}` {e}")) {
            Ok(cidr) => {
                if let Some((other, _)) = seen.iter().find(|(_, c)| c.overlaps(cidr)) {
                    out.push(Finding::value(at, format!("subnet {text} overlaps network `{other}`'s subnet")));
                }
                seen.push((name, cidr));
            }
            // Malformed text is the schema's to report; only well-formed but wrong CIDRs here.
            Err(e) if text.contains('/') && text.split_once('/').is_some_and(|(a, _)| a.parse::<std::net::Ipv4Addr>().is_ok()) => {
                out.push(Finding::value(at, e));
            }
            Err(_) => {}
        }
    }
}

fn check_networks(defined: &serde_json::Map<String, Value>, base: &str, attachments: Option<&Value>, out: &mut Vec<Finding>) {
    let mut seen = BTreeSet::new();
    for (i, a) in attachments.and_then(Value::as_array).into_iter().flatten().enumerate() {
        let (n, at) = match a {
            Value::String(n) => (n.as_str(), format!("{base}/networks/{i}")),
            Value::Object(o) => match o.get("name").and_then(Value::as_str) {
                Some(n) => (n, format!("{base}/networks/{i}/name")),
                None => continue,
            },
            _ => continue,
        };
        if n != DEFAULT_NETWORK && !defined.contains_key(n) {
            out.push(Finding::value(at.clone(), not_defined("network", "networks", n, defined)));
        }
        if !seen.insert(n) {
            out.push(Finding::value(at, format!("network `{n}` is listed twice")));
        }
    }
}
