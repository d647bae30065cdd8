//! The JSON Schema of the Lab resource, generated from the Rust types, and the compiled
//! validator every document goes through.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::Value;

use super::model::Lab;

/// The schema as JSON, in the draft 2020-12 dialect. `Option` fields are plain optional
/// properties (no `null`), so `delay: ~` is an error rather than a silent "unset".
pub fn lab_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let generator = SchemaSettings::draft2020_12().into_generator();
        let mut schema = serde_json::to_value(generator.into_root_schema_for::<Lab>()).unwrap_or(Value::Null);
        strip_null(&mut schema);
        schema
    })
}

/// The schema pretty-printed as checked into `schemas/lab.v1alpha1.json`.
pub fn lab_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(lab_schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// Removes the `null` alternative schemars adds for `Option` fields.
fn strip_null(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    map.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(branches)) = map.get_mut("anyOf") {
                branches.retain(|b| b.get("type").and_then(Value::as_str) != Some("null"));
                if branches.len() == 1 {
                    let only = branches.remove(0);
                    map.remove("anyOf");
                    if let Value::Object(inner) = only {
                        map.extend(inner);
                    }
                }
            }
            if map.get("default").is_some_and(Value::is_null) {
                map.remove("default");
            }
            map.values_mut().for_each(strip_null);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}

pub fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        // The schema is generated from our own types at build time; failing to compile it is a
        // programming error caught by every test, not an input error.
        jsonschema::validator_for(lab_schema()).expect("the generated Lab schema compiles")
    })
}

/// The schema node describing the value at `pointer` segments, following `$ref`s and the
/// branches of `anyOf`. Used to list the fields allowed where an unknown one was found.
pub fn schema_at<'a>(segments: &[&str]) -> Option<&'a Value> {
    fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
        while let Some(r) = node.get("$ref").and_then(Value::as_str) {
            match r.strip_prefix("#/$defs/").and_then(|name| root.get("$defs")?.get(name)) {
                Some(target) => node = target,
                None => break,
            }
        }
        node
    }
    fn walk<'a>(root: &'a Value, node: &'a Value, segments: &[&str]) -> Option<&'a Value> {
        let node = resolve(root, node);
        let Some((first, rest)) = segments.split_first() else { return Some(node) };
        if let Some(branches) = node.get("anyOf").and_then(Value::as_array) {
            return branches.iter().find_map(|b| walk(root, b, segments));
        }
        let next = node
            .get("properties")
            .and_then(|p| p.get(*first))
            .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))
            .or_else(|| node.get("items").filter(|_| first.parse::<usize>().is_ok()))?;
        walk(root, next, rest)
    }
    let root = lab_schema();
    walk(root, root, segments)
}

/// The property names allowed in the object at `segments`.
pub fn allowed_fields(segments: &[&str]) -> Vec<String> {
    let Some(node) = schema_at(segments) else { return Vec::new() };
    let objects: Vec<&Value> = match node.get("anyOf").and_then(Value::as_array) {
        Some(branches) => branches.iter().filter_map(|b| schema_at_ref(b)).collect(),
        None => vec![node],
    };
    objects
        .iter()
        .filter_map(|o| o.get("properties").and_then(Value::as_object))
        .flat_map(|p| p.keys().cloned())
        .collect()
}

fn schema_at_ref(node: &Value) -> Option<&'static Value> {
    let root = lab_schema();
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => root.get("$defs")?.get(r.strip_prefix("#/$defs/")?),
        None => None,
    }
}
