//! Reading a labs directory into a catalog: every lab name with its valid spec or its errors.
//! The directory is always read whole, so the result never depends on which file event fired.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::spec::yaml::{too_large, MAX_FILE_BYTES};
use crate::spec::{parse_file, Diagnostic, ValidLab};

/// What one lab name stands for in the directory right now.
#[derive(Debug, Clone)]
pub enum LabEntry {
    Valid(ValidLab),
    /// The lab is defined, but wrongly; its last good version must keep running.
    Invalid(Vec<Diagnostic>),
}

/// The labs a directory defines, and the errors no lab name could be attached to.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub labs: BTreeMap<String, LabEntry>,
    /// Files whose errors could not be tied to a lab name (YAML syntax, unreadable, no
    /// `metadata.name`). Labs that came from such a file before are kept, not torn down.
    pub file_errors: BTreeMap<PathBuf, Vec<Diagnostic>>,
    /// Which lab names each file defined (readable or not), to tie later errors to labs.
    pub files: BTreeMap<PathBuf, Vec<String>>,
    /// Why the read was not complete (a subdirectory or a file could not be read). An
    /// incomplete read is no evidence that a lab is gone.
    pub incomplete: Vec<String>,
    /// The Git commit it was read at (a Git source); `None` for a directory.
    pub commit: Option<String>,
}

impl Catalog {
    /// The file that defines each lab in this read.
    pub fn file_of(&self, lab: &str) -> Option<&PathBuf> {
        self.files.iter().find(|(_, names)| names.iter().any(|n| n == lab)).map(|(f, _)| f)
    }

    /// No lab file at all: neither valid, invalid nor unreadable.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.file_errors.is_empty()
    }

    pub fn is_clean(&self) -> bool {
        self.file_errors.is_empty() && self.labs.values().all(|e| matches!(e, LabEntry::Valid(_)))
    }

    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut all: Vec<Diagnostic> = self.file_errors.values().flatten().cloned().collect();
        for entry in self.labs.values() {
            if let LabEntry::Invalid(d) = entry {
                all.extend(d.iter().cloned());
            }
        }
        all.sort();
        all.dedup();
        all
    }
}

/// The directory itself could not be read: the caller must treat the state as unknown and
/// change nothing (a Git sync may be swapping a symlink).
#[derive(Debug, thiserror::Error)]
#[error("cannot read labs directory {path}: {source}")]
pub struct UnreadableDir {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Whether a path (relative to the labs root) is a lab file: `*.yaml`/`*.yml`, not hidden, not
/// an editor's temporary or backup file.
pub fn is_lab_file(relative: &Path) -> bool {
    let hidden = is_hidden(relative);
    let name = relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
    !hidden && yaml && !name.starts_with('#') && !name.starts_with('~')
}

/// Whether any part of a path (relative to the labs root) is hidden.
fn is_hidden(relative: &Path) -> bool {
    relative.components().any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
}

/// The lab files at `root` (`root` itself if it is a file), in name order, following symlinks
/// and skipping hidden entries; and what could not be walked (a dangling link, an unreadable
/// subdirectory, a file vanishing mid-scan: the labs under it are unknown).
pub fn lab_files(root: &Path) -> (Vec<PathBuf>, Vec<String>) {
    if root.is_file() {
        return (vec![root.to_path_buf()], vec![]);
    }
    let hidden = |path: &Path| path.strip_prefix(root).is_ok_and(is_hidden);
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    let walker = walkdir::WalkDir::new(root).follow_links(true).sort_by_file_name().into_iter();
    for entry in walker.filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.')) {
        match entry {
            Ok(e) if e.file_type().is_file() && is_lab_file(e.path().strip_prefix(root).unwrap_or(e.path())) => files.push(e.into_path()),
            Ok(_) => {}
            // An entry that could not be followed reaches here unfiltered; a hidden one would
            // be skipped anyway, and Emacs keeps one while a buffer has unsaved edits (its lock,
            // `.#lab.yaml`, a link to nowhere), which must not block every deletion meanwhile.
            Err(e) if e.path().is_some_and(hidden) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    (files, errors)
}

/// One lab file as read. A file larger than a lab file may be is not read at all: a stray
/// multi-gigabyte `*.yaml` (a log, a dump) would otherwise be read whole into memory at every
/// event (3 GB of RSS and 15 s for a 3 GB file, measured), and no input may exhaust labd.
#[derive(Debug)]
pub enum Content {
    Bytes(Vec<u8>),
    TooLarge { bytes: u64 },
    Unreadable(std::io::Error),
}

impl Content {
    /// Reads `path`, at most one byte more than a lab file may hold (a file may grow while it
    /// is read, or report no size, as `/proc` files do).
    pub fn read(path: &Path) -> Content {
        use std::io::Read;
        let limit = MAX_FILE_BYTES as u64;
        let read = || -> std::io::Result<Content> {
            let file = std::fs::File::open(path)?;
            let size = file.metadata()?.len();
            if size > limit {
                return Ok(Content::TooLarge { bytes: size });
            }
            let mut bytes = Vec::with_capacity(size as usize);
            file.take(limit + 1).read_to_end(&mut bytes)?;
            Ok(if bytes.len() as u64 > limit { Content::TooLarge { bytes: bytes.len() as u64 } } else { Content::Bytes(bytes) })
        };
        read().unwrap_or_else(Content::Unreadable)
    }
}

/// Reads `root` recursively (following symlinks) and validates every lab file.
pub fn load_dir(root: &Path) -> Result<Catalog, UnreadableDir> {
    let meta = std::fs::metadata(root).map_err(|source| UnreadableDir { path: root.to_path_buf(), source })?;
    if !meta.is_file() {
        std::fs::read_dir(root).map_err(|source| UnreadableDir { path: root.to_path_buf(), source })?;
    }
    let (files, walk_errors) = lab_files(root);
    let sources = files
        .into_iter()
        .map(|path| {
            let content = Content::read(&path);
            (path, content)
        })
        .collect();
    let mut catalog = catalog_of(sources);
    catalog.incomplete.extend(walk_errors);
    Ok(catalog)
}

/// Where a lab is defined (file, line and column) and what its document gave.
type Definition = (PathBuf, crate::spec::yaml::Mark, Result<ValidLab, Vec<Diagnostic>>);

/// Builds the catalog from file contents (pure; `load_dir` feeds it from disk, the Git source
/// from a commit). A file that could not be read hides which labs it defines: the catalog is
/// then incomplete.
pub fn catalog_of(sources: Vec<(PathBuf, Content)>) -> Catalog {
    let mut catalog = Catalog::default();
    let mut definitions: BTreeMap<String, Vec<Definition>> = BTreeMap::new();
    for (path, content) in sources {
        let text = match content {
            Content::Bytes(bytes) => match String::from_utf8(bytes) {
                Ok(text) => text,
                Err(_) => {
                    catalog.file_errors.entry(path.clone()).or_default().push(file_diag(&path, "file is not valid UTF-8"));
                    continue;
                }
            },
            // Read and refused, like a file that does not parse: what it defined is kept.
            Content::TooLarge { bytes } => {
                catalog.file_errors.entry(path.clone()).or_default().push(file_diag(&path, &too_large(bytes)));
                continue;
            }
            Content::Unreadable(e) => {
                catalog.file_errors.entry(path.clone()).or_default().push(file_diag(&path, &format!("cannot read: {e}")));
                catalog.incomplete.push(format!("cannot read {}", path.display()));
                continue;
            }
        };
        let names = catalog.files.entry(path.clone()).or_default();
        for doc in parse_file(&path, &text) {
            match doc.name {
                Some(name) => {
                    names.push(name.clone());
                    definitions.entry(name).or_default().push((path.clone(), doc.name_mark, doc.result));
                }
                None => {
                    let errors = doc.result.err().unwrap_or_default();
                    catalog.file_errors.entry(path.clone()).or_default().extend(errors);
                }
            }
        }
    }
    for (name, defs) in definitions {
        let entry = if defs.len() > 1 {
            let places: Vec<String> =
                defs.iter().map(|(p, m, _)| format!("{}:{}:{}", p.display(), m.line, m.column)).collect();
            LabEntry::Invalid(
                defs.iter()
                    .map(|(p, m, _)| Diagnostic {
                        file: p.clone(),
                        line: m.line,
                        column: m.column,
                        field: "metadata.name".into(),
                        message: format!("lab `{name}` is defined {} times: {}", defs.len(), places.join(", ")),
                    })
                    .collect(),
            )
        } else {
            match defs.into_iter().next().map(|(_, _, r)| r) {
                Some(Ok(lab)) => LabEntry::Valid(lab),
                Some(Err(d)) => LabEntry::Invalid(d),
                None => continue,
            }
        };
        catalog.labs.insert(name, entry);
    }
    catalog
}

fn file_diag(path: &Path, message: &str) -> Diagnostic {
    Diagnostic { file: path.to_path_buf(), line: 1, column: 1, field: "(file)".into(), message: message.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_yaml_files_count() {
        for ok in ["a.yaml", "dir/b.yml", "x.y.yaml"] {
            assert!(is_lab_file(Path::new(ok)), "{ok}");
        }
        for no in [".a.yaml", ".git/c.yaml", "a.yaml~", "#a.yaml#", "a.yaml.swp", ".a.yaml.swp", "a.json", "4913"] {
            assert!(!is_lab_file(Path::new(no)), "{no}");
        }
    }

    #[test]
    fn a_dangling_hidden_link_is_skipped_and_a_visible_one_makes_the_read_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: a}\nspec: {services: {web: {image: x}}}\n").unwrap();
        // What Emacs leaves beside a file with unsaved edits.
        std::os::unix::fs::symlink("root@host.1234:1700000000", dir.path().join(".#a.yaml")).unwrap();
        let catalog = load_dir(dir.path()).unwrap();
        assert_eq!(catalog.labs.keys().collect::<Vec<_>>(), ["a"]);
        assert!(catalog.incomplete.is_empty(), "{:?}", catalog.incomplete);

        std::os::unix::fs::symlink("nowhere.yaml", dir.path().join("b.yaml")).unwrap();
        let catalog = load_dir(dir.path()).unwrap();
        assert_eq!(catalog.incomplete.len(), 1, "{:?}", catalog.incomplete);
        assert!(catalog.incomplete[0].contains("b.yaml"), "{:?}", catalog.incomplete);
    }

    #[test]
    fn a_file_larger_than_a_lab_file_is_refused_unread_as_a_file_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: a}\nspec: {services: {web: {image: x}}}\n").unwrap();
        // Sparse: 64 GiB that take no disk, and would take 64 GiB of memory if read whole.
        std::fs::File::create(dir.path().join("big.yaml")).unwrap().set_len(64 << 30).unwrap();
        let catalog = load_dir(dir.path()).unwrap();
        assert_eq!(catalog.labs.keys().collect::<Vec<_>>(), ["a"]);
        let errors = &catalog.file_errors[&dir.path().join("big.yaml")];
        assert_eq!(errors[0].to_string(), format!("{}:1:1: (file): file is 68719476736 bytes; lab files are limited to 1048576 bytes", dir.path().join("big.yaml").display()));
        assert!(catalog.incomplete.is_empty(), "read and refused, not unreadable: {:?}", catalog.incomplete);

        // A file at the limit is read; one byte more is not.
        let at_limit = dir.path().join("limit.yaml");
        std::fs::write(&at_limit, vec![b'#'; MAX_FILE_BYTES]).unwrap();
        assert!(matches!(Content::read(&at_limit), Content::Bytes(b) if b.len() == MAX_FILE_BYTES));
        std::fs::write(&at_limit, vec![b'#'; MAX_FILE_BYTES + 1]).unwrap();
        assert!(matches!(Content::read(&at_limit), Content::TooLarge { bytes } if bytes == MAX_FILE_BYTES as u64 + 1));
    }

    #[test]
    fn a_file_that_cannot_be_read_makes_the_read_incomplete_and_one_that_is_not_utf8_does_not() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let catalog = catalog_of(vec![
            (PathBuf::from("labs/a.yaml"), Content::Unreadable(denied)),
            (PathBuf::from("labs/b.yaml"), Content::Bytes(vec![0xff, 0xfe])),
        ]);
        assert_eq!(catalog.incomplete, vec!["cannot read labs/a.yaml".to_string()], "what it defines is unknown: no lab may count as gone");
        assert_eq!(catalog.file_errors.len(), 2, "both are reported");
        assert!(catalog.file_errors[Path::new("labs/b.yaml")][0].message.contains("UTF-8"));
    }
}
