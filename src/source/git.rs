//! A Git repository as the source of labs (`labd --git URL`): labd fetches one branch itself
//! (gix, pure Rust) into a bare repository of its own, and reads the lab files of the branch
//! head's tree straight from the object database. A commit is thus read whole or not at all: no
//! working tree is ever half updated, and nothing but labd writes to the cache.
//!
//! Lab files are named `<url>/<path in the repository>`, the same at every commit, so the labs
//! a file defines stay tied to it across commits (the deletion rule needs that) and errors read
//! `file:///srv/labs.git/labs/x.yaml:12:3: …`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::catalog::{catalog_of, is_lab_file, Catalog, Content};
use crate::spec::yaml::MAX_FILE_BYTES;

/// Where labs come from in Git mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// What `git clone` takes: `file://`, `git://`, `ssh://` or `user@host:path`.
    pub url: String,
    pub branch: String,
    /// The directory of the repository holding the labs (`""`: all of it).
    pub path: PathBuf,
    /// labd's own bare repository for this source.
    pub cache: PathBuf,
    /// A file holding `username:password` (a token as the password) for HTTPS, read at each
    /// fetch so a rotated secret is picked up. Without it Git's own credential helpers apply.
    pub credentials: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot prepare the repository cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("cannot fetch branch `{branch}` of {url}: {reason}")]
    Fetch { url: String, branch: String, reason: String },
    #[error("{url} has no branch `{branch}`")]
    NoBranch { url: String, branch: String },
    #[error("cannot read the credentials file {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("cannot read commit {commit}: {reason}")]
    Read { commit: String, reason: String },
}

impl GitSource {
    /// The cache directory labd uses for `url` and `branch` under `base` when none is given.
    pub fn default_cache(base: &Path, url: &str, branch: &str) -> PathBuf {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{url}#{branch}").as_bytes());
        base.join(hex::encode(&digest[..8]))
    }

    /// The URL as people see it (status, errors, file names): a password or token written
    /// into it (`https://user:token@host/…`) is left out.
    pub fn shown_url(&self) -> String {
        match self.url.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('/') {
                Some((authority, path)) if authority.contains('@') => {
                    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                    format!("{scheme}://{host}/{path}")
                }
                _ => self.url.clone(),
            },
            None => self.url.clone(),
        }
    }

    /// The prefix of every lab file's name from this source.
    pub fn root(&self) -> PathBuf {
        let shown = self.shown_url();
        let url = PathBuf::from(shown.trim_end_matches('/'));
        if self.path.as_os_str().is_empty() {
            url
        } else {
            url.join(&self.path)
        }
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    fn fetch_error(&self, error: impl std::error::Error) -> GitError {
        GitError::Fetch { url: self.shown_url(), branch: self.branch.clone(), reason: with_causes(&error).replace(&self.url, &self.shown_url()) }
    }

    fn open_cache(&self) -> Result<gix::Repository, GitError> {
        let cache_error = |reason: String| GitError::Cache { path: self.cache.clone(), reason };
        if self.cache.join("HEAD").exists() {
            return gix::open(&self.cache).map_err(|e| cache_error(e.to_string()));
        }
        std::fs::create_dir_all(&self.cache).map_err(|e| cache_error(e.to_string()))?;
        gix::init_bare(&self.cache).map_err(|e| cache_error(e.to_string()))
    }

    /// Fetches the branch (blocking; `interrupt` stops it) and returns the id of its head. A
    /// force-push is taken as it is: the branch is wherever the remote says it is now.
    pub fn fetch(&self, interrupt: &AtomicBool) -> Result<String, GitError> {
        let repo = self.open_cache()?;
        let refspec = format!("+refs/heads/{}:{}", self.branch, self.tracking_ref());
        let remote = repo
            .remote_at(self.url.as_str())
            .map_err(|e| self.fetch_error(e))?
            .with_refspecs(Some(refspec.as_str()), gix::remote::Direction::Fetch)
            .map_err(|e| self.fetch_error(e))?;
        let connection = remote.connect(gix::remote::Direction::Fetch).map_err(|e| self.fetch_error(e))?;
        // The connection's type changes with its credentials: one body for both.
        macro_rules! receive {
            ($connection:expr) => {
                $connection
                    .prepare_fetch(gix::progress::Discard, Default::default())
                    .map_err(|e| self.fetch_error(e))?
                    .receive(gix::progress::Discard, interrupt)
                    .map_err(|e| self.fetch_error(e))?
            };
        }
        match self.account()? {
            Some(account) => {
                receive!(connection.with_credentials(move |action| match action {
                    gix::credentials::helper::Action::Get(context) => {
                        Ok(Some(gix::credentials::protocol::Outcome { identity: account.clone(), next: context.into() }))
                    }
                    _ => Ok(None),
                }))
            }
            None => receive!(connection),
        };
        // Opened again: the fetch may have written new packs and refs.
        let repo = self.open_cache()?;
        let mut reference = repo
            .find_reference(self.tracking_ref().as_str())
            .map_err(|_| GitError::NoBranch { url: self.shown_url(), branch: self.branch.clone() })?;
        let id = reference.peel_to_id().map_err(|e| self.fetch_error(e))?;
        Ok(id.to_string())
    }

    /// The account in the credentials file, if one is given.
    fn account(&self) -> Result<Option<gix::sec::identity::Account>, GitError> {
        let Some(path) = &self.credentials else { return Ok(None) };
        let error = |reason: String| GitError::Credentials { path: path.clone(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        parse_account(&text).map(Some).ok_or_else(|| error("expected one line `username:password` (a token as the password)".into()))
    }

    /// The lab files under `path` in `commit`'s tree, read into a catalog (its `commit` set).
    pub fn read(&self, commit: &str) -> Result<Catalog, GitError> {
        let read_error = |reason: String| GitError::Read { commit: commit.to_string(), reason };
        let repo = self.open_cache()?;
        let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| read_error(e.to_string()))?;
        let tree = repo.find_commit(id).map_err(|e| read_error(e.to_string()))?.tree().map_err(|e| read_error(e.to_string()))?;
        let sub = if self.path.as_os_str().is_empty() {
            tree
        } else {
            match tree.lookup_entry_by_path(&self.path).map_err(|e| read_error(e.to_string()))? {
                Some(entry) if entry.mode().is_tree() => repo.find_tree(entry.object_id()).map_err(|e| read_error(e.to_string()))?,
                // A commit without the labs directory defines no labs (the deletion rule and
                // the empty-start guard decide what that means).
                _ => return Ok(Catalog { commit: Some(commit.to_string()), ..Catalog::default() }),
            }
        };
        let mut recorder = gix::traverse::tree::Recorder::default();
        sub.traverse().breadthfirst(&mut recorder).map_err(|e| read_error(e.to_string()))?;
        let root = self.root();
        let mut sources = Vec::new();
        for entry in recorder.records.iter().filter(|e| e.mode.is_blob()) {
            let relative = PathBuf::from(entry.filepath.to_string());
            if !is_lab_file(&relative) {
                continue;
            }
            sources.push((root.join(&relative), blob_content(&repo, entry.oid)));
        }
        sources.sort_by(|a, b| a.0.cmp(&b.0));
        let mut catalog = catalog_of(sources);
        catalog.commit = Some(commit.to_string());
        Ok(catalog)
    }
}

/// A lab file's blob, not unpacked when its header says it is larger than a lab file may be.
fn blob_content(repo: &gix::Repository, id: gix::ObjectId) -> Content {
    let unreadable = |e: &dyn std::error::Error| Content::Unreadable(std::io::Error::other(with_causes(e)));
    match repo.find_header(id) {
        Ok(header) if header.size() > MAX_FILE_BYTES as u64 => Content::TooLarge { bytes: header.size() },
        Ok(_) => match repo.find_blob(id) {
            Ok(blob) => Content::Bytes(blob.data.clone()),
            Err(e) => unreadable(&e),
        },
        Err(e) => unreadable(&e),
    }
}

/// `username:password` on the first non-empty line.
fn parse_account(text: &str) -> Option<gix::sec::identity::Account> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let (username, password) = line.split_once(':')?;
    (!username.is_empty() && !password.is_empty())
        .then(|| gix::sec::identity::Account { username: username.to_string(), password: password.to_string(), oauth_refresh_token: None })
}

/// gix's errors say what failed at the top and why further down: people need both.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// What the sync loop tells the controller.
#[derive(Debug)]
pub enum GitNews {
    /// The branch moved (or this is the first fetch): the labs of its new head.
    Moved(Catalog),
    /// A fetch or a read failed: the last commit stays applied.
    Failed(String),
    /// A fetch worked and the branch did not move.
    Unchanged,
}

/// The longest one fetch may take; it is interrupted then, and counts as failed.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// One fetch's outcome, and who asked for it (`labctl reconcile`'s requests: answered by a
/// fetch that began after they came).
#[derive(Debug)]
pub struct Fetched {
    pub news: GitNews,
    pub asked_by: Vec<String>,
}

/// Fetches `source` at once, then every `interval` or sooner when `asks` brings a request (its
/// id comes back in the next [`Fetched`]), sending what changed, until `news` is closed.
/// Fetches run on a blocking thread, one at a time.
pub async fn sync(source: GitSource, interval: std::time::Duration, news: tokio::sync::mpsc::Sender<Fetched>, mut asks: tokio::sync::mpsc::Receiver<String>) {
    let source = std::sync::Arc::new(source);
    let mut applied: Option<String> = None;
    let mut asked_by = Vec::new();
    loop {
        let interrupt = std::sync::Arc::new(AtomicBool::new(false));
        let (s, stop, last) = (source.clone(), interrupt.clone(), applied.clone());
        let work = tokio::task::spawn_blocking(move || -> Result<Option<Catalog>, GitError> {
            let head = s.fetch(&stop)?;
            if last.as_deref() == Some(head.as_str()) {
                return Ok(None);
            }
            s.read(&head).map(Some)
        });
        let message = match tokio::time::timeout(FETCH_TIMEOUT, work).await {
            Ok(Ok(Ok(Some(catalog)))) => {
                applied = catalog.commit.clone();
                GitNews::Moved(catalog)
            }
            Ok(Ok(Ok(None))) => GitNews::Unchanged,
            Ok(Ok(Err(e))) => GitNews::Failed(e.to_string()),
            Ok(Err(e)) => GitNews::Failed(format!("the fetch stopped: {e}")),
            Err(_) => {
                interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
                GitNews::Failed(format!("no answer within {}s", FETCH_TIMEOUT.as_secs()))
            }
        };
        if news.send(Fetched { news: message, asked_by: std::mem::take(&mut asked_by) }).await.is_err() {
            return;
        }
        // Requests that came during that fetch wait for the next one, which starts at once.
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            Some(id) = asks.recv() => asked_by.push(id),
        }
        while let Ok(id) = asks.try_recv() {
            asked_by.push(id);
        }
    }
}

/// Runs the `git` program in `dir` (tests build real repositories with it); its stdout.
#[cfg(test)]
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `labs` directory of `repo`'s main branch, its cache under `work`.
    fn labs_of(repo: &Path, work: &Path) -> GitSource {
        GitSource { url: format!("file://{}", repo.display()), branch: "main".into(), path: "labs".into(), cache: work.join("cache"), credentials: None }
    }

    const LAB: &str = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: NAME}\nspec:\n  services:\n    web: {image: labbox:latest}\n";

    #[test]
    fn a_commit_is_read_whole_from_the_object_database_and_a_force_push_is_followed() {
        let work = tempfile::tempdir().unwrap();
        let repo = work.path().join("repo");
        std::fs::create_dir_all(repo.join("labs/deeper")).unwrap();
        super::git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("labs/a.yaml"), LAB.replace("NAME", "a")).unwrap();
        std::fs::write(repo.join("labs/deeper/b.yml"), LAB.replace("NAME", "b")).unwrap();
        std::fs::write(repo.join("labs/.hidden.yaml"), LAB.replace("NAME", "hidden")).unwrap();
        std::fs::write(repo.join("README.yaml"), LAB.replace("NAME", "outside")).unwrap();
        super::git(&repo, &["add", "-A"]);
        super::git(&repo, &["commit", "-qm", "one"]);
        let source = labs_of(&repo, work.path());
        let stop = AtomicBool::new(false);
        let first = source.fetch(&stop).unwrap();
        let catalog = source.read(&first).unwrap();
        assert_eq!(catalog.labs.keys().collect::<Vec<_>>(), ["a", "b"], "{:?}", catalog.diagnostics());
        assert_eq!(catalog.file_of("a").unwrap(), &source.root().join("a.yaml"));
        assert_eq!(catalog.commit.as_deref(), Some(first.as_str()));

        std::fs::write(repo.join("labs/a.yaml"), "metadata: {name: a\n").unwrap();
        super::git(&repo, &["commit", "-qam", "broken"]);
        let second = source.fetch(&stop).unwrap();
        assert_ne!(first, second);
        let broken = source.read(&second).unwrap();
        let errors = broken.diagnostics();
        let want = format!("file://{}/labs/a.yaml:", repo.display());
        assert!(errors.iter().any(|d| d.to_string().starts_with(&want)), "{errors:?}");

        // Back to the first commit, forced: fetched as it is.
        super::git(&repo, &["reset", "-q", "--hard", &first]);
        assert_eq!(source.fetch(&stop).unwrap(), first);
        // The old commit can still be read after the force-push.
        assert!(source.read(&first).unwrap().is_clean());
    }

    #[test]
    fn a_blob_larger_than_a_lab_file_is_refused_with_its_size_and_the_others_are_read() {
        let work = tempfile::tempdir().unwrap();
        let repo = work.path().join("repo");
        std::fs::create_dir_all(repo.join("labs")).unwrap();
        super::git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("labs/a.yaml"), LAB.replace("NAME", "a")).unwrap();
        let big = format!("{}# {}\n", LAB.replace("NAME", "big"), "x".repeat(MAX_FILE_BYTES));
        std::fs::write(repo.join("labs/big.yaml"), &big).unwrap();
        super::git(&repo, &["add", "-A"]);
        super::git(&repo, &["commit", "-qm", "one"]);
        let source = labs_of(&repo, work.path());
        let commit = source.fetch(&AtomicBool::new(false)).unwrap();
        let catalog = source.read(&commit).unwrap();
        assert_eq!(catalog.labs.keys().collect::<Vec<_>>(), ["a"]);
        let errors = &catalog.file_errors[&source.root().join("big.yaml")];
        assert_eq!(errors[0].message, format!("file is {} bytes; lab files are limited to {MAX_FILE_BYTES} bytes", big.len()));
        assert!(catalog.incomplete.is_empty(), "the file was read and refused: {:?}", catalog.incomplete);
    }

    #[test]
    fn a_credentials_file_holds_one_account() {
        let a = parse_account("\n  x-access-token:ghp_abc:def \n").unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("x-access-token", "ghp_abc:def"));
        assert!(parse_account("just-a-token").is_none());
        assert!(parse_account(":password").is_none());
        let with_token = GitSource { url: "https://bot:s3cret@git.example/labs.git".into(), branch: "main".into(), path: "labs".into(), cache: "/c".into(), credentials: None };
        assert_eq!(with_token.shown_url(), "https://git.example/labs.git");
        assert_eq!(with_token.root(), PathBuf::from("https://git.example/labs.git/labs"));
        let work = tempfile::tempdir().unwrap();
        let source = GitSource { url: "https://example.invalid/x.git".into(), branch: "main".into(), path: "".into(), cache: work.path().join("c"), credentials: Some(work.path().join("missing")) };
        assert!(matches!(source.fetch(&AtomicBool::new(false)), Err(GitError::Credentials { .. })));
    }

    #[test]
    fn an_unreachable_repository_or_branch_is_an_error_not_an_empty_catalog() {
        let work = tempfile::tempdir().unwrap();
        let stop = AtomicBool::new(false);
        let missing = GitSource { url: format!("file://{}/nope", work.path().display()), branch: "main".into(), path: "".into(), cache: work.path().join("c1"), credentials: None };
        assert!(matches!(missing.fetch(&stop), Err(GitError::Fetch { .. })));
        let repo = work.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        super::git(&repo, &["init", "-q"]);
        std::fs::write(repo.join("x.yaml"), LAB.replace("NAME", "x")).unwrap();
        super::git(&repo, &["add", "-A"]);
        super::git(&repo, &["commit", "-qm", "one"]);
        let other = GitSource { url: format!("file://{}", repo.display()), branch: "nope".into(), path: "".into(), cache: work.path().join("c2"), credentials: None };
        assert!(other.fetch(&stop).is_err());
    }
}
