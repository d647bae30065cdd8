//! An error and its causes on one line, for people: `what failed: why: why`.

use std::fmt;

/// Shows an error with its causes joined by `: `, leaving out a cause whose text the line
/// already holds: several errors (redis's, and ours that name their `io::Error`) repeat their
/// source in their own message, and anyhow's `{:#}` then prints it twice ("Connection refused
/// (os error 111): Connection refused (os error 111)").
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        for cause in std::iter::successors(self.0.source(), |e| e.source()) {
            let text = cause.to_string();
            if !text.is_empty() && !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read labs directory /x: {source}")]
    struct Repeats {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot load the labs")]
    struct Wraps {
        #[source]
        inner: Repeats,
    }

    #[test]
    fn each_cause_is_said_once() {
        let e = Wraps { inner: Repeats { source: std::io::Error::from(std::io::ErrorKind::NotFound) } };
        assert_eq!(Chain(&e).to_string(), "cannot load the labs: cannot read labs directory /x: entity not found");
        let e = anyhow::Error::new(std::io::Error::other("disk on fire")).context("cannot write the report");
        assert_eq!(Chain(e.as_ref()).to_string(), "cannot write the report: disk on fire");
    }
}
