//! No input makes the loader panic: arbitrary bytes, arbitrary YAML, and mutations of a valid lab.

use std::path::Path;

use proptest::prelude::*;
use swarmlab::source::catalog::{catalog_of, Content};
use swarmlab::spec::parse_file;

const VALID: &str = include_str!("../labs/iot.yaml");

fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("~".to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        "[a-z0-9%. -]{0,12}",
        Just("100ms".to_string()),
        Just("'quoted: x'".to_string()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-zA-Z]{1,8}", inner), 0..4)
                .prop_map(|kv| format!("{{{}}}", kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "))),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = catalog_of(vec![(Path::new("x.yaml").to_path_buf(), Content::Bytes(bytes))]);
    }

    #[test]
    fn arbitrary_yaml_never_panics(spec in yaml_value(), name in "[a-zA-Z0-9_-]{0,40}") {
        let text = format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: {name}}}\nspec: {spec}\n");
        let _ = parse_file(Path::new("x.yaml"), &text);
    }

    #[test]
    fn mutated_valid_labs_never_panic(cut in 0usize..VALID.len(), insert in "[ -~\n]{0,16}") {
        let mut text = VALID.to_string();
        let at = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        for doc in parse_file(Path::new("x.yaml"), &text) {
            if let Err(diags) = doc.result {
                prop_assert!(!diags.is_empty());
                for d in diags {
                    prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
                }
            }
        }
    }
}

/// Nesting a file can drive: block and flow lists and mappings, mixed, thousands deep. Each is
/// refused with a located error (run in a thread with a small stack, so a recursion that the
/// depth limit does not stop fails here rather than on a user's machine).
fn deep_documents() -> impl Strategy<Value = String> {
    (1usize..20_000, 0usize..4).prop_map(|(depth, shape)| match shape {
        0 => "- ".repeat(depth),
        1 => format!("{}1", "[".repeat(depth)),
        2 => (0..depth).map(|i| format!("{}k{i}:\n", "  ".repeat(i.min(200)))).collect(),
        _ => format!("a: {}x{}", "{b: ".repeat(depth), "}".repeat(depth)),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn deep_documents_are_refused_with_a_position(text in deep_documents()) {
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || parse_file(Path::new("deep.yaml"), &text))
            .unwrap()
            .join();
        let docs = result.expect("no stack overflow or panic on deep input");
        for doc in docs {
            if let Err(diags) = doc.result {
                prop_assert!(diags.iter().all(|d| d.line >= 1 && d.column >= 1));
            }
        }
    }
}

#[test]
fn huge_documents_are_refused_not_loaded() {
    let body: String = (0..40_000).map(|i| format!("    s{i}: {{image: x, replicas: {i}}}\n")).collect();
    let text = format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {{name: big}}\nspec:\n  services:\n{body}");
    let docs = parse_file(Path::new("big.yaml"), &text);
    let errors: Vec<String> = docs.into_iter().filter_map(|d| d.result.err()).flatten().map(|d| d.message).collect();
    assert!(errors.iter().any(|m| m.contains("limited to")), "{errors:?}");
}
