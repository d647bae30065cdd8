//! Compose's `extends`: a service built on another one, of the same file or of `file` (read
//! beside the Compose file), merged as Compose merges them: the service's own fields win; maps
//! merge key by key (`environment` and `labels` in either form); `volumes` by their target,
//! `secrets` and `configs` by their source; other lists are joined; `command`, `entrypoint` and
//! a health check's `test` are replaced whole. `depends_on`, `volumes_from` and `links` are never
//! inherited, as Compose documents.

use std::path::Path;

use serde_json::{Map, Value};

/// What a base service never passes on.
const NOT_INHERITED: [&str; 4] = ["depends_on", "volumes_from", "links", "extends"];

/// The deepest chain of `extends` followed.
const MAX_DEPTH: usize = 16;

/// `name` of `services` with its `extends` resolved (a service without one as it is); `dir`:
/// where `file`s are read from. An error says why the base could not be had.
pub fn resolve(name: &str, services: &Map<String, Value>, dir: &Path, read_file: &dyn Fn(&Path) -> std::io::Result<String>) -> Result<Map<String, Value>, String> {
    resolve_in(name, services, None, dir, read_file, &mut Vec::new())
}

fn resolve_in(name: &str, services: &Map<String, Value>, file: Option<&str>, dir: &Path, read_file: &dyn Fn(&Path) -> std::io::Result<String>, chain: &mut Vec<String>) -> Result<Map<String, Value>, String> {
    let here = match file {
        Some(f) => format!("{f}:{name}"),
        None => name.to_string(),
    };
    if chain.contains(&here) || chain.len() >= MAX_DEPTH {
        chain.push(here);
        return Err(format!("`extends` goes round: {}", chain.join(" → ")));
    }
    let Some(own) = services.get(name).and_then(Value::as_object) else {
        let place = file.map(|f| format!(" in {f}")).unwrap_or_default();
        return Err(format!("no service `{name}`{place} to extend"));
    };
    let Some(extends) = own.get("extends") else { return Ok(own.clone()) };
    chain.push(here);
    let (base_file, base_name) = match extends {
        Value::String(s) => (None, s.as_str()),
        Value::Object(o) => (o.get("file").and_then(Value::as_str), o.get("service").and_then(Value::as_str).ok_or("`extends` names no `service`")?),
        _ => return Err("`extends` is a service's name, or `{service, file}`".into()),
    };
    let base = match base_file.or(file) {
        // Another file's service: its own `extends` are of that file.
        Some(f) => {
            let path = dir.join(f);
            let text = read_file(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            let theirs = doc.get("services").and_then(Value::as_object).cloned().unwrap_or_default();
            resolve_in(base_name, &theirs, Some(f), dir, read_file, chain)?
        }
        None => resolve_in(base_name, services, None, dir, read_file, chain)?,
    };
    let base: Map<String, Value> = base.into_iter().filter(|(k, _)| !NOT_INHERITED.contains(&k.as_str())).collect();
    let own: Map<String, Value> = own.iter().filter(|(k, _)| k.as_str() != "extends").map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok(merge_maps(&base, &own))
}

fn merge_maps(base: &Map<String, Value>, own: &Map<String, Value>) -> Map<String, Value> {
    let mut out = base.clone();
    for (key, value) in own {
        let merged = match base.get(key) {
            Some(b) => merge(key, b, value),
            None => value.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

fn merge(key: &str, base: &Value, own: &Value) -> Value {
    match key {
        "command" | "entrypoint" | "test" => own.clone(),
        "environment" | "labels" | "sysctls" => {
            let mut map = super::key_value_map(base);
            map.extend(super::key_value_map(own));
            Value::Object(map)
        }
        "volumes" => by_key(base, own, |v| match v {
            // `source:target[:mode]`, or an anonymous volume's target alone.
            Value::String(s) => s.split(':').nth(1).unwrap_or(s).to_string(),
            other => other.get("target").and_then(Value::as_str).unwrap_or_default().to_string(),
        }),
        "secrets" | "configs" => by_key(base, own, |v| match v {
            Value::String(s) => s.clone(),
            other => other.get("source").and_then(Value::as_str).unwrap_or_default().to_string(),
        }),
        // A service's networks, a list or a map of each one's settings.
        "networks" if base.is_array() != own.is_array() => merge(key, &Value::Object(networks_map(base)), &Value::Object(networks_map(own))),
        _ => match (base, own) {
            (Value::Object(b), Value::Object(o)) => Value::Object(merge_maps(b, o)),
            (Value::Array(b), Value::Array(o)) => Value::Array(b.iter().chain(o.iter().filter(|v| !b.contains(v))).cloned().collect()),
            _ => own.clone(),
        },
    }
}

fn networks_map(v: &Value) -> Map<String, Value> {
    match v {
        Value::Array(names) => names.iter().filter_map(Value::as_str).map(|n| (n.to_string(), Value::Null)).collect(),
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    }
}

/// Both lists, an item of `own` replacing the one of `base` with the same key.
fn by_key(base: &Value, own: &Value, key: impl Fn(&Value) -> String) -> Value {
    let (Value::Array(b), Value::Array(o)) = (base, own) else { return own.clone() };
    let mine: Vec<String> = o.iter().map(&key).collect();
    Value::Array(b.iter().filter(|v| !mine.contains(&key(v))).chain(o.iter()).cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn services(yaml: &str) -> Map<String, Value> {
        serde_yaml_ng::from_str::<Value>(yaml).unwrap()["services"].as_object().unwrap().clone()
    }

    fn no_files(path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(std::io::ErrorKind::NotFound, path.display().to_string()))
    }

    #[test]
    fn a_service_gets_its_base_s_fields_merged_as_compose_merges_them() {
        let s = services(
            "services:\n  base:\n    image: app:1\n    command: [serve, --port, '80']\n    environment: [A=1, B=2]\n    labels: {tier: web}\n    ports: ['80:80']\n    volumes: ['data:/data', '/cfg:/etc/app:ro']\n    depends_on: [db]\n    networks: [front]\n    healthcheck: {test: [CMD, 'true'], interval: 5s}\n  web:\n    extends: base\n    command: [serve]\n    environment: {B: 3, C: 4}\n    ports: ['81:81']\n    volumes: ['/other:/etc/app']\n    networks: {back: {aliases: [w]}}\n    healthcheck: {test: [CMD, 'false']}\n",
        );
        let web = resolve("web", &s, Path::new("."), &no_files).unwrap();
        assert_eq!(web["image"], "app:1");
        assert_eq!(web["command"], json!(["serve"]), "replaced whole");
        assert_eq!(web["environment"], json!({"A": "1", "B": 3, "C": 4}));
        assert_eq!(web["labels"], json!({"tier": "web"}));
        assert_eq!(web["ports"], json!(["80:80", "81:81"]), "joined");
        assert_eq!(web["volumes"], json!(["data:/data", "/other:/etc/app"]), "by target: its own /etc/app wins");
        assert_eq!(web["networks"], json!({"front": null, "back": {"aliases": ["w"]}}));
        assert_eq!(web["healthcheck"], json!({"test": ["CMD", "false"], "interval": "5s"}));
        assert!(web.get("depends_on").is_none() && web.get("extends").is_none(), "{web:?}");
    }

    #[test]
    fn a_base_in_another_file_a_chain_and_a_loop() {
        let s = services("services:\n  web:\n    extends: {file: common.yml, service: app}\n    image: mine\n  a:\n    extends: b\n  b:\n    extends: a\n");
        let read = |path: &Path| match path.to_str() {
            Some("lab/common.yml") => Ok("services:\n  app:\n    extends: core\n    user: '1000'\n  core:\n    image: core:1\n    init: true\n".to_string()),
            _ => no_files(path),
        };
        let web = resolve("web", &s, Path::new("lab"), &read).unwrap();
        assert_eq!((web["image"].as_str(), web["user"].as_str(), web["init"].as_bool()), (Some("mine"), Some("1000"), Some(true)));
        assert_eq!(resolve("a", &s, Path::new("lab"), &read).unwrap_err(), "`extends` goes round: a → b → a");
        let missing = services("services:\n  web:\n    extends: {file: nowhere.yml, service: app}\n");
        assert!(resolve("web", &missing, Path::new("lab"), &read).unwrap_err().starts_with("cannot read lab/nowhere.yml"));
    }
}
