//! `labctl fmt`: lab files in one layout (two-space indents, sequences indented under their
//! key, no trailing spaces, one final newline), comments kept. The layout is `pretty_yaml`'s
//! (the formatter behind dprint's YAML plugin); what this module adds is the guarantee that the
//! result means exactly what the input meant: both are parsed and their data compared, and a
//! layout that would change a single value is refused.

use super::yaml::parse_documents;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{0} (fix it first: `labctl validate` says where)")]
    Syntax(String),
    #[error("formatting would change what the file means; it is left as it is")]
    ChangesMeaning,
}

fn options() -> pretty_yaml::config::FormatOptions {
    let mut o = pretty_yaml::config::FormatOptions::default();
    o.layout.print_width = 100;
    // `[a, b]` stays as written: no trailing comma is added when a flow list wraps.
    o.language.trailing_comma = false;
    o.language.indent_block_sequence_in_map = true;
    // `{delay: 20ms}`, as the README and the examples write flow maps.
    o.language.brace_spacing = false;
    o
}

/// The file in canonical layout; `None` when it already is.
pub fn format(text: &str) -> Result<Option<String>, FormatError> {
    let before = parse_documents(text).map_err(|e| FormatError::Syntax(format!("{}:{}: {}", e.mark.line, e.mark.column, e.message)))?;
    let formatted = pretty_yaml::format_text(text, &options()).map_err(|e| FormatError::Syntax(format!("{e:?}")))?;
    if formatted == text {
        return Ok(None);
    }
    let after = parse_documents(&formatted).map_err(|_| FormatError::ChangesMeaning)?;
    let data = |docs: &[super::yaml::Document]| docs.iter().map(|d| d.value.clone()).collect::<Vec<_>>();
    if data(&before) != data(&after) {
        return Err(FormatError::ChangesMeaning);
    }
    Ok(Some(formatted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_changes_and_comments_stay() {
        let messy = "# a lab\napiVersion:   swarmlab/v1alpha1   \nkind: Lab\nmetadata:\n    name: x   # its name\nspec:\n    services:\n        web:\n            image: labbox:latest\n            networks:\n            - lan\n";
        let out = format(messy).unwrap().expect("reformatted");
        assert_eq!(
            out,
            "# a lab\napiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata:\n  name: x # its name\nspec:\n  services:\n    web:\n      image: labbox:latest\n      networks:\n        - lan\n"
        );
        assert_eq!(format(&out).unwrap(), None, "formatting is idempotent");
    }

    #[test]
    fn broken_yaml_is_refused_not_rewritten() {
        assert!(matches!(format("metadata: {name: x\n"), Err(FormatError::Syntax(_))));
    }

    #[test]
    fn the_examples_keep_their_meaning() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("labs");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            if let Some(out) = format(&text).unwrap() {
                assert_eq!(format(&out).unwrap(), None, "{}: not idempotent", path.display());
            }
        }
    }
}
