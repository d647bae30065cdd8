//! YAML documents to JSON values, remembering where every value and key came from. The schema
//! and semantic checks work on JSON pointers; this index turns a pointer back into a line and
//! column of the user's file.

use std::collections::HashMap;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, ScalarStyle, YamlData};
use serde_json::{Map, Number, Value};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn of(m: &saphyr::Marker) -> Mark {
        Mark { line: m.line(), column: m.col() + 1 }
    }
}

/// Where each JSON pointer of a document sits in its file.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    values: HashMap<String, Mark>,
    keys: HashMap<String, Mark>,
    pub document: Mark,
}

impl Positions {
    /// The position of the value at `pointer`, or of its nearest ancestor that exists.
    pub fn value(&self, pointer: &str) -> Mark {
        let mut p = pointer;
        loop {
            if let Some(m) = self.values.get(p) {
                return *m;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.document,
            }
        }
    }

    /// The position of the key naming the member at `pointer` (falls back to the value).
    pub fn key(&self, pointer: &str) -> Mark {
        self.keys.get(pointer).copied().unwrap_or_else(|| self.value(pointer))
    }
}

/// One document of a file, as JSON, with its positions; or why it is not convertible.
pub struct Document {
    pub value: Value,
    pub positions: Positions,
    /// Problems converting YAML to JSON (aliases, odd keys), as (pointer, message).
    pub problems: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub mark: Mark,
    pub message: String,
}

/// The largest lab file read: a lab of hundreds of services is a few tens of kilobytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// The deepest nesting of mappings and sequences accepted. A lab needs about 6; the limit stops
/// a file from driving the loader (and the drop of its tree) into the stack.
pub const MAX_DEPTH: usize = 64;
/// The most `---` documents a file may hold (a lab each). Checking each one costs about 20 µs
/// and its problems a few hundred bytes: 150,000 empty mappings in 1 MiB took 3 s and 250 MB at
/// every read of the directory, listing 600,000 problems.
pub const MAX_DOCUMENTS: usize = 1000;

/// What is wrong with a file of `bytes` bytes, more than a lab file may hold.
pub fn too_large(bytes: u64) -> String {
    format!("file is {bytes} bytes; lab files are limited to {MAX_FILE_BYTES} bytes")
}

/// Refuses, before anything is built, a text too large or nested too deep. Streams the parser's
/// events, so it uses no recursion and constant memory whatever the input.
fn check_bounds(text: &str) -> Result<(), SyntaxError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(SyntaxError { mark: Mark { line: 1, column: 1 }, message: too_large(text.len() as u64) });
    }
    let mut depth = 0usize;
    let mut documents = 0usize;
    for event in saphyr_parser::Parser::new_from_str(text) {
        let (event, span) = match event {
            Ok(e) => e,
            // Syntax errors are reported, with their position, by the real load below.
            Err(_) => return Ok(()),
        };
        match event {
            saphyr_parser::Event::SequenceStart(..) | saphyr_parser::Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    let mark = Mark { line: span.start.line().max(1), column: span.start.col() + 1 };
                    return Err(SyntaxError { mark, message: format!("nested deeper than {MAX_DEPTH} levels") });
                }
            }
            saphyr_parser::Event::SequenceEnd | saphyr_parser::Event::MappingEnd => depth = depth.saturating_sub(1),
            saphyr_parser::Event::DocumentStart(..) => {
                documents += 1;
                if documents > MAX_DOCUMENTS {
                    let mark = Mark { line: span.start.line().max(1), column: span.start.col() + 1 };
                    return Err(SyntaxError { mark, message: format!("more than {MAX_DOCUMENTS} documents; a lab file holds at most {MAX_DOCUMENTS} (split it into several files)") });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses every `---` document of `text`. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, SyntaxError> {
    check_bounds(text)?;
    let docs = MarkedYaml::load_from_str(text)
        .map_err(|e| SyntaxError { mark: Mark::of(e.marker()), message: e.info().to_string() })?;
    let source = Source { text, ascii: text.is_ascii(), char_offsets: std::cell::OnceCell::new() };
    Ok(docs
        .iter()
        .filter(|d| !matches!(d.data, YamlData::Value(Scalar::Null)))
        .map(|d| {
            let start = if d.span.start.line() > 0 { Mark::of(&d.span.start) } else { Mark { line: 1, column: 1 } };
            let mut doc = Document {
                value: Value::Null,
                positions: Positions { document: start, ..Default::default() },
                problems: Vec::new(),
            };
            doc.value = convert(d, "", &mut doc, &source);
            doc
        })
        .collect())
}

/// The text being loaded, to read a scalar as it was written.
struct Source<'a> {
    text: &'a str,
    ascii: bool,
    /// Byte offset of each character, built the first time a non-ASCII text needs it (the
    /// parser's marks count characters).
    char_offsets: std::cell::OnceCell<Vec<usize>>,
}

impl Source<'_> {
    /// A number written with a leading zero (`0440`) is octal, as in YAML 1.1 and in Compose's
    /// reader (Go's yaml): file modes are written that way. YAML 1.2, which the parser follows,
    /// reads it as decimal 440; `0o440` is octal in both. (A number given by an alias, `*m`, is
    /// read as the parser reads it: its node carries the alias's text, not the anchor's.)
    fn legacy_octal(&self, node: &MarkedYaml<'_>, value: i64) -> Option<i64> {
        let (start, end) = (node.span.start.index(), node.span.end.index());
        // Only a number written longer than its decimal digits can have a leading zero.
        let digits = value.checked_ilog10().map_or(1, |d| d as usize + 1);
        if value < 0 || end.saturating_sub(start) <= digits {
            return None;
        }
        // The span starts at an anchor or tag written before the number (`&mode 0440`).
        legacy_octal(self.slice(start, end)?.split_whitespace().last()?)
    }

    fn slice(&self, start: usize, end: usize) -> Option<&str> {
        if self.ascii {
            return self.text.get(start..end);
        }
        let offsets = self.char_offsets.get_or_init(|| self.text.char_indices().map(|(i, _)| i).chain(std::iter::once(self.text.len())).collect());
        self.text.get(*offsets.get(start)?..*offsets.get(end)?)
    }
}

/// `0440` → 288; anything else (`0`, `440`, `0o440`, `089`) → `None`.
fn legacy_octal(raw: &str) -> Option<i64> {
    let digits = raw.strip_prefix('0').filter(|d| !d.is_empty() && d.bytes().all(|b| (b'0'..=b'7').contains(&b)))?;
    i64::from_str_radix(digits, 8).ok()
}

/// Escapes a key as one JSON pointer segment (RFC 6901).
pub fn pointer_segment(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn convert(node: &MarkedYaml<'_>, pointer: &str, doc: &mut Document, source: &Source<'_>) -> Value {
    // Some nodes (an empty tagged scalar such as `!`) carry no span: their parent's is used.
    if node.span.start.line() > 0 {
        doc.positions.values.insert(pointer.to_string(), Mark::of(&node.span.start));
    }
    match &node.data {
        YamlData::Value(Scalar::Integer(i)) => Value::Number(source.legacy_octal(node, *i).unwrap_or(*i).into()),
        YamlData::Value(s) => scalar(s),
        YamlData::Representation(text, style, _) => {
            if *style == ScalarStyle::Plain {
                match legacy_octal(text) {
                    Some(n) => Value::Number(n.into()),
                    None => scalar(&Scalar::parse_from_cow(text.clone())),
                }
            } else {
                Value::String(text.to_string())
            }
        }
        YamlData::Sequence(items) => Value::Array(
            items.iter().enumerate().map(|(i, item)| convert(item, &format!("{pointer}/{i}"), doc, source)).collect(),
        ),
        YamlData::Mapping(map) => {
            let mut out = Map::new();
            // Merge keys first, so the mapping's own keys (and their positions) win over them.
            let merges: Vec<&MarkedYaml<'_>> = map.iter().filter(|(k, _)| is_merge_key(k)).map(|(_, v)| v).collect();
            if !merges.is_empty() {
                merge_into(&mut out, &merges, pointer, doc, source);
                if node.span.start.line() > 0 {
                    doc.positions.values.insert(pointer.to_string(), Mark::of(&node.span.start));
                }
            }
            for (k, v) in map.iter().filter(|(k, _)| !is_merge_key(k)) {
                let key = match key_text(k) {
                    Some(key) => key,
                    None => {
                        doc.problems.push((pointer.to_string(), "mapping keys must be plain strings".into()));
                        continue;
                    }
                };
                let child = format!("{pointer}/{}", pointer_segment(&key));
                if k.span.start.line() > 0 {
                    doc.positions.keys.insert(child.clone(), Mark::of(&k.span.start));
                }
                let value = convert(v, &child, doc, source);
                out.insert(key, value);
            }
            Value::Object(out)
        }
        YamlData::Tagged(_, inner) => convert(inner, pointer, doc, source),
        // The loader resolves aliases (an unknown one is a syntax error); one it could not is
        // an alias used inside its own anchor, which is not finished at that point.
        YamlData::Alias(_) | YamlData::BadValue => {
            doc.problems.push((pointer.to_string(), "an alias used inside its own anchor: an anchor can be used only after it ends".into()));
            Value::Null
        }
    }
}

/// YAML's merge key (`<<: *defaults`, as Compose files use it).
fn is_merge_key(k: &MarkedYaml<'_>) -> bool {
    match &k.data {
        YamlData::Representation(text, style, _) => text == "<<" && *style == ScalarStyle::Plain,
        YamlData::Value(Scalar::String(s)) => s == "<<",
        _ => false,
    }
}

/// Merges `<<` values into `out` (YAML 1.1's merge): each is a mapping or a list of mappings;
/// earlier mappings of a list win over later ones (the mapping's own keys, set after, over
/// all). Shallow, as in the YAML spec: a merged `labels` is replaced by a `labels` here, not
/// combined with it.
fn merge_into(out: &mut Map<String, Value>, merges: &[&MarkedYaml<'_>], pointer: &str, doc: &mut Document, source: &Source<'_>) {
    for merge in merges {
        let sources: Vec<&MarkedYaml<'_>> = match &merge.data {
            YamlData::Sequence(items) => items.iter().collect(),
            _ => vec![merge],
        };
        // Last to first, each overwriting: the earliest mapping's values and positions win.
        for merged_from in sources.into_iter().rev() {
            match convert(merged_from, pointer, doc, source) {
                Value::Object(merged) => out.extend(merged),
                Value::Null if matches!(merged_from.data, YamlData::Alias(_) | YamlData::BadValue) => {}
                other => doc.problems.push((
                    pointer.to_string(),
                    format!("`<<` (a merge key) takes a mapping or a list of mappings, found {}", super::validate::type_name(&other)),
                )),
            }
        }
    }
}

fn key_text(k: &MarkedYaml<'_>) -> Option<String> {
    match &k.data {
        YamlData::Value(Scalar::String(s)) => Some(s.to_string()),
        YamlData::Value(Scalar::Integer(i)) => Some(i.to_string()),
        YamlData::Value(Scalar::Boolean(b)) => Some(b.to_string()),
        YamlData::Value(Scalar::FloatingPoint(f)) => Some(f.to_string()),
        YamlData::Representation(text, _, _) => Some(text.to_string()),
        _ => None,
    }
}

fn scalar(s: &Scalar<'_>) -> Value {
    match s {
        Scalar::Null => Value::Null,
        Scalar::Boolean(b) => Value::Bool(*b),
        Scalar::Integer(i) => Value::Number((*i).into()),
        Scalar::FloatingPoint(f) => {
            Number::from_f64(f.into_inner()).map(Value::Number).unwrap_or_else(|| Value::String(f.to_string()))
        }
        Scalar::String(s) => Value::String(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_point_at_values_and_keys() {
        let docs = parse_documents("a: 1\nb:\n  c: [x, 'y']\n---\n---\nz: true\n").unwrap();
        assert_eq!(docs.len(), 2, "the empty middle document is skipped");
        let d = &docs[0];
        assert_eq!(d.value, serde_json::json!({"a": 1, "b": {"c": ["x", "y"]}}));
        assert_eq!(d.positions.value("/b/c/1"), Mark { line: 3, column: 10 });
        assert_eq!(d.positions.key("/b/c"), Mark { line: 3, column: 3 });
        assert_eq!(d.positions.value("/b/c/9/deep"), Mark { line: 3, column: 6 });
        assert_eq!(docs[1].positions.value("/z"), Mark { line: 6, column: 4 });
    }

    #[test]
    fn nodes_without_a_span_take_their_parents_position() {
        let docs = parse_documents("a:\n  b: !\n").unwrap();
        let m = docs[0].positions.value("/a/b");
        assert!(m.line >= 1 && m.column >= 1, "{m:?}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse_documents("a: [1, 2\nb: 3\n").err().unwrap();
        assert!(err.mark.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn deep_nesting_is_refused_with_a_position_not_a_stack_overflow() {
        let block = "- ".repeat(20_000);
        let err = parse_documents(&block).err().expect("refused");
        assert_eq!(err.message, format!("nested deeper than {MAX_DEPTH} levels"));
        assert_eq!(err.mark.line, 1);
        let flow = format!("a: {}", "[".repeat(5_000));
        assert!(parse_documents(&flow).is_err());
        let ok = format!("a: {}1{}", "[".repeat(MAX_DEPTH - 1), "]".repeat(MAX_DEPTH - 1));
        assert!(parse_documents(&ok).is_ok());
    }

    #[test]
    fn files_of_too_many_documents_are_refused_at_the_first_one_too_many() {
        let ok = format!("a: 0\n{}", "---\na: 1\n".repeat(MAX_DOCUMENTS - 1));
        assert_eq!(parse_documents(&ok).map(|d| d.len()), Ok(MAX_DOCUMENTS));
        // Empty documents count: each costs the parser as much.
        let err = parse_documents(&format!("{ok}---\n")).err().expect("refused");
        assert_eq!(err.message, format!("more than {MAX_DOCUMENTS} documents; a lab file holds at most {MAX_DOCUMENTS} (split it into several files)"));
        assert_eq!(err.mark, Mark { line: 2 * MAX_DOCUMENTS, column: 1 }, "the first document too many");
    }

    #[test]
    fn huge_files_are_refused() {
        let text = format!("a: \"{}\"\n", "x".repeat(MAX_FILE_BYTES));
        let err = parse_documents(&text).err().expect("refused");
        assert!(err.message.contains("limited to"), "{}", err.message);
    }

    #[test]
    fn merge_keys_merge_shallowly_and_the_mappings_own_keys_and_earlier_sources_win() {
        let text = "x-a: &a\n  image: one\n  replicas: 2\n  labels: {k: a}\nx-b: &b\n  replicas: 3\n  init: true\ns:\n  one:\n    <<: [*a, *b]\n    labels: {j: own}\n  two:\n    <<: *b\n";
        let docs = parse_documents(text).unwrap();
        let d = &docs[0];
        assert!(d.problems.is_empty(), "{:?}", d.problems);
        assert_eq!(d.value["s"]["one"], serde_json::json!({"image": "one", "replicas": 2, "init": true, "labels": {"j": "own"}}));
        assert_eq!(d.value["s"]["two"], serde_json::json!({"replicas": 3, "init": true}));
        // A merged value is where its text is (the anchor); the mapping itself stays where it is.
        assert_eq!(d.positions.value("/s/one/replicas"), Mark { line: 3, column: 13 });
        assert_eq!(d.positions.value("/s/one/init"), Mark { line: 7, column: 9 });
        assert_eq!(d.positions.value("/s/one/labels/j"), Mark { line: 11, column: 17 });
        assert_eq!(d.positions.value("/s/one"), Mark { line: 10, column: 5 });
    }

    #[test]
    fn a_merge_key_of_anything_but_mappings_is_a_located_problem() {
        let d = &parse_documents("s:\n  a:\n    <<: 5\n    b: 1\n").unwrap()[0];
        assert_eq!(d.problems, vec![("/s/a".to_string(), "`<<` (a merge key) takes a mapping or a list of mappings, found a number `5`".to_string())]);
        assert_eq!(d.positions.value("/s/a"), Mark { line: 3, column: 5 });
        assert_eq!(d.value["s"]["a"], serde_json::json!({"b": 1}));
    }

    #[test]
    fn an_anchor_used_inside_itself_is_a_located_problem() {
        let d = &parse_documents("a: &a\n  b: *a\n").unwrap()[0];
        assert_eq!(d.problems, vec![("/a/b".to_string(), "an alias used inside its own anchor: an anchor can be used only after it ends".to_string())]);
        assert_eq!(d.positions.value("/a/b"), Mark { line: 2, column: 6 });
    }

    #[test]
    fn numbers_with_a_leading_zero_are_octal_as_in_compose() {
        let value = |text: &str| parse_documents(text).unwrap().remove(0).value;
        assert_eq!(value("{a: 0440, b: 0o440, c: 440, d: 0, e: 089, f: '0440', g: 00}"), serde_json::json!({"a": 288, "b": 288, "c": 440, "d": 0, "e": 89, "f": "0440", "g": 0}));
        assert_eq!(value("é: x\nmode: 0644\nnext: 0755"), serde_json::json!({"é": "x", "mode": 420, "next": 493}), "marks count characters, not bytes");
        assert_eq!(value("x: &m {mode: 0600}\ny: {<<: *m}\n"), serde_json::json!({"x": {"mode": 384}, "y": {"mode": 384}}), "merged from an anchor");
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        let err = parse_documents("a: 1\na: 2\n").err().unwrap();
        assert_eq!(err.mark.line, 2);
    }
}
