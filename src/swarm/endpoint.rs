//! Where the Docker daemon is and how to reach it, decided from what the docker CLI reads and
//! in its order: `--docker-host`/DOCKER_HOST (TLS with DOCKER_TLS_VERIFY, its files from
//! DOCKER_CERT_PATH), else the context DOCKER_CONTEXT names, else the current context of the
//! CLI's config.json (`docker context use`). A shell set up for `docker` against a remote
//! daemon works for labd and labctl as it stands. No I/O but reading those files.

use std::path::{Path, PathBuf};

use sha2::Digest;

use super::ssh::SshTarget;
use super::SwarmError;

/// What the docker CLI would read from the environment.
#[derive(Debug, Default, Clone)]
pub(crate) struct DockerEnv {
    /// `--docker-host` or DOCKER_HOST.
    pub host: Option<String>,
    /// DOCKER_TLS_VERIFY is set (the CLI's test: not empty).
    pub tls_verify: bool,
    /// DOCKER_CERT_PATH.
    pub cert_path: Option<PathBuf>,
    /// DOCKER_CONTEXT.
    pub context: Option<String>,
    /// DOCKER_CONFIG, else ~/.docker: config.json and contexts/.
    pub config_dir: Option<PathBuf>,
}

impl DockerEnv {
    pub(crate) fn of_process(host: Option<&str>) -> DockerEnv {
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        DockerEnv {
            host: host.map(str::to_string),
            tls_verify: set("DOCKER_TLS_VERIFY").is_some(),
            cert_path: set("DOCKER_CERT_PATH").map(Into::into),
            context: set("DOCKER_CONTEXT").map(|v| v.to_string_lossy().into_owned()),
            config_dir: set("DOCKER_CONFIG").map(Into::into).or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".docker"))),
        }
    }
}

#[derive(Debug, PartialEq)]
pub(crate) enum Endpoint {
    Local,
    Unix(String),
    Http(String),
    /// The server checked against `ca.pem`, and `cert.pem`/`key.pem` presented, all from `certs`.
    Tls { addr: String, certs: PathBuf },
    /// `docker system dial-stdio` on the manager through the user's ssh (`addr` as given).
    Ssh { addr: String, target: SshTarget },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Local => write!(f, "the local Docker socket"),
            Endpoint::Unix(path) => write!(f, "unix://{path}"),
            Endpoint::Http(addr) => write!(f, "{addr}"),
            Endpoint::Tls { addr, certs } => write!(f, "{addr} over TLS with the certificates of {}", certs.display()),
            Endpoint::Ssh { addr, .. } => write!(f, "{addr}"),
        }
    }
}

/// The names the docker CLI gives the files of DOCKER_CERT_PATH and of a context's TLS material.
pub(crate) const CERT_FILES: [&str; 3] = ["ca.pem", "cert.pem", "key.pem"];

impl Endpoint {
    pub(crate) fn of(env: &DockerEnv) -> Result<Endpoint, SwarmError> {
        if let Some(host) = env.host.as_deref().filter(|h| !h.is_empty()) {
            let tls = env.tls_verify || host.starts_with("https://");
            let certs = tls.then(|| env.cert_path.clone().or_else(|| env.config_dir.clone()));
            let origin = format!("DOCKER_HOST={host}");
            return match certs {
                Some(None) => Err(SwarmError::Endpoint(format!("{origin} with TLS: no DOCKER_CERT_PATH and no home directory to find ca.pem, cert.pem and key.pem in"))),
                Some(Some(dir)) => address(&origin, host, Some(&dir), "the docker CLI reads ca.pem, cert.pem and key.pem from DOCKER_CERT_PATH, ~/.docker when unset"),
                None => address(&origin, host, None, ""),
            };
        }
        let current = || env.config_dir.as_deref().and_then(current_context);
        match env.context.clone().or_else(current) {
            Some(name) if name != "default" => {
                let dir = env.config_dir.as_deref().ok_or_else(|| SwarmError::Endpoint(format!("docker context `{name}`: no DOCKER_CONFIG and no home directory to find it in")))?;
                of_context(dir, &name)
            }
            _ => Ok(Endpoint::Local),
        }
    }
}

/// `currentContext` of config.json, as `docker context use` leaves it.
fn current_context(config_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(config_dir.join("config.json")).ok()?;
    let config: serde_json::Value = serde_json::from_str(&text).ok()?;
    config["currentContext"].as_str().filter(|c| !c.is_empty()).map(str::to_string)
}

/// A context as `docker context create` stores it: `contexts/meta/<sha256 of the name>/meta.json`
/// (the docker endpoint's `Host`, `SkipTLSVerify`) and its TLS files in
/// `contexts/tls/<the same>/docker/`.
fn of_context(config_dir: &Path, name: &str) -> Result<Endpoint, SwarmError> {
    let id = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let meta_path = config_dir.join("contexts").join("meta").join(&id).join("meta.json");
    let origin = format!("docker context `{name}`");
    let text = std::fs::read_to_string(&meta_path).map_err(|e| {
        SwarmError::Endpoint(format!("{origin} (DOCKER_CONTEXT, or `docker context use`): cannot read {}: {e} (`docker context ls` lists the contexts there)", meta_path.display()))
    })?;
    let meta: serde_json::Value = serde_json::from_str(&text).map_err(|e| SwarmError::Endpoint(format!("{origin}: {}: {e}", meta_path.display())))?;
    let docker = &meta["Endpoints"]["docker"];
    let Some(host) = docker["Host"].as_str() else {
        return Err(SwarmError::Endpoint(format!("{origin}: {} names no docker Host", meta_path.display())));
    };
    if docker["SkipTLSVerify"].as_bool() == Some(true) {
        return Err(SwarmError::Endpoint(format!("{origin} skips verifying the daemon's certificate (skip-tls-verify), which labd does not do: give the context the daemon's ca.pem")));
    }
    let tls = config_dir.join("contexts").join("tls").join(&id).join("docker");
    let has_tls = CERT_FILES.iter().any(|f| tls.join(f).is_file());
    let origin = format!("{origin} ({host})");
    address(&origin, host, has_tls.then_some(tls.as_path()), "`docker context create --docker host=…,ca=…,cert=…,key=…` stores all three")
}

/// `host` as an endpoint: TLS with the files of `certs` when given. `where_certs`: where a user
/// puts the files, said when one is missing.
fn address(origin: &str, host: &str, certs: Option<&Path>, where_certs: &str) -> Result<Endpoint, SwarmError> {
    if let Some(path) = host.strip_prefix("unix://") {
        return Ok(Endpoint::Unix(path.to_string()));
    }
    if host.starts_with('/') {
        return Ok(Endpoint::Unix(host.to_string()));
    }
    if host.starts_with("ssh://") {
        let target = SshTarget::parse(host).map_err(|e| SwarmError::Endpoint(format!("{origin}: {e}")))?;
        return Ok(Endpoint::Ssh { addr: host.to_string(), target });
    }
    if !(host.starts_with("tcp://") || host.starts_with("http://") || host.starts_with("https://")) {
        return Err(SwarmError::Endpoint(format!("{origin}: not an address labd knows (unix:///path, tcp://host:port, ssh://[user@]host[:port])")));
    }
    let Some(certs) = certs else { return Ok(Endpoint::Http(host.to_string())) };
    let missing: Vec<&str> = CERT_FILES.into_iter().filter(|f| !certs.join(f).is_file()).collect();
    if !missing.is_empty() {
        return Err(SwarmError::Endpoint(format!("{origin} with TLS: {} has no {} ({where_certs})", certs.display(), missing.join(", "))));
    }
    Ok(Endpoint::Tls { addr: host.to_string(), certs: certs.to_path_buf() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> DockerEnv {
        DockerEnv { host: Some(h.into()), ..Default::default() }
    }

    fn files(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).expect("a dir");
        for f in names {
            std::fs::write(dir.join(f), "").expect("a file");
        }
    }

    /// DOCKER_HOST and the TLS variables read as the docker CLI reads them; what labd cannot use
    /// is said before any connection, with what to do instead.
    #[test]
    fn docker_host_and_tls_settings_pick_the_endpoint_as_the_docker_cli_does() {
        let of = |env: DockerEnv| Endpoint::of(&env);
        assert_eq!(of(DockerEnv::default()).ok(), Some(Endpoint::Local));
        assert_eq!(of(host("")).ok(), Some(Endpoint::Local));
        assert_eq!(of(host("unix:///run/docker.sock")).ok(), Some(Endpoint::Unix("/run/docker.sock".into())));
        assert_eq!(of(host("/run/docker.sock")).ok(), Some(Endpoint::Unix("/run/docker.sock".into())));
        assert_eq!(of(host("tcp://10.0.0.5:2375")).ok(), Some(Endpoint::Http("tcp://10.0.0.5:2375".into())));

        let ssh = |destination: &str, port| Endpoint::Ssh { addr: format!("ssh://{destination}:2222"), target: SshTarget { destination: destination.into(), port } };
        assert_eq!(of(host("ssh://me@manager:2222")).ok(), Some(ssh("me@manager", Some(2222))));
        let path = of(host("ssh://me@manager/run/docker.sock")).expect_err("a path").to_string();
        assert!(path.contains("DOCKER_HOST=ssh://me@manager/run/docker.sock: ") && path.contains("no path"), "{path}");
        let odd = of(host("npipe:////./pipe/docker_engine")).expect_err("not an address").to_string();
        assert!(odd.contains("not an address labd knows"), "{odd}");

        let dir = tempfile::tempdir().expect("a temp dir");
        let certs = dir.path().to_path_buf();
        files(&certs, &["ca.pem"]);
        let tls = |h: &str, cert_path: Option<PathBuf>, config_dir: Option<PathBuf>| Endpoint::of(&DockerEnv { host: Some(h.into()), tls_verify: true, cert_path, context: None, config_dir });
        let missing = tls("tcp://10.0.0.5:2376", Some(certs.clone()), None).expect_err("two files missing").to_string();
        assert!(missing.contains("has no cert.pem, key.pem") && missing.contains("DOCKER_CERT_PATH"), "{missing}");
        files(&certs, &["cert.pem", "key.pem"]);
        let want = Endpoint::Tls { addr: "tcp://10.0.0.5:2376".into(), certs: certs.clone() };
        assert_eq!(tls("tcp://10.0.0.5:2376", Some(certs.clone()), None).ok(), Some(want));
        // Unset DOCKER_CERT_PATH: the config directory (~/.docker), as the CLI; https:// is TLS too.
        let home = tempfile::tempdir().expect("a temp dir");
        let config = home.path().join(".docker");
        files(&config, &CERT_FILES);
        let https = Endpoint::of(&DockerEnv { host: Some("https://h:2376".into()), config_dir: Some(config.clone()), ..Default::default() }).ok();
        assert_eq!(https, Some(Endpoint::Tls { addr: "https://h:2376".into(), certs: config }));
    }

    /// A context as `docker context create` and `docker context use` leave it; DOCKER_HOST
    /// wins over it, DOCKER_CONTEXT over the current one, as in the CLI.
    #[test]
    fn a_docker_context_is_followed_as_the_docker_cli_follows_it() {
        let home = tempfile::tempdir().expect("a temp dir");
        let config = home.path().join(".docker");
        let context = |name: &str, meta: &str, tls: &[&str]| {
            let id = hex::encode(sha2::Sha256::digest(name.as_bytes()));
            let dir = config.join("contexts/meta").join(&id);
            std::fs::create_dir_all(&dir).expect("a dir");
            std::fs::write(dir.join("meta.json"), meta).expect("meta.json");
            if !tls.is_empty() {
                files(&config.join("contexts/tls").join(&id).join("docker"), tls);
            }
            config.join("contexts/tls").join(&id).join("docker")
        };
        let remote = context("remote", r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://10.0.0.5:2376","SkipTLSVerify":false}}}"#, &CERT_FILES);
        context("plain", r#"{"Name":"plain","Endpoints":{"docker":{"Host":"unix:///run/other.sock"}}}"#, &[]);
        context("half", r#"{"Name":"half","Endpoints":{"docker":{"Host":"tcp://10.0.0.6:2376"}}}"#, &["ca.pem"]);
        context("careless", r#"{"Name":"careless","Endpoints":{"docker":{"Host":"tcp://10.0.0.7:2376","SkipTLSVerify":true}}}"#, &[]);
        context("tunnel", r#"{"Name":"tunnel","Endpoints":{"docker":{"Host":"ssh://lab@10.0.0.8","SkipTLSVerify":false}}}"#, &[]);
        std::fs::write(config.join("config.json"), r#"{"auths": {}, "currentContext": "remote"}"#).expect("config.json");
        let env = |host: Option<&str>, context: Option<&str>| DockerEnv { host: host.map(Into::into), context: context.map(Into::into), config_dir: Some(config.clone()), ..Default::default() };

        assert_eq!(Endpoint::of(&env(None, None)).ok(), Some(Endpoint::Tls { addr: "tcp://10.0.0.5:2376".into(), certs: remote }), "the current context");
        assert_eq!(Endpoint::of(&env(None, Some("plain"))).ok(), Some(Endpoint::Unix("/run/other.sock".into())), "DOCKER_CONTEXT over the current");
        assert_eq!(Endpoint::of(&env(None, Some("default"))).ok(), Some(Endpoint::Local));
        let tunnel = Endpoint::Ssh { addr: "ssh://lab@10.0.0.8".into(), target: SshTarget { destination: "lab@10.0.0.8".into(), port: None } };
        assert_eq!(Endpoint::of(&env(None, Some("tunnel"))).ok(), Some(tunnel), "`docker context create --docker host=ssh://…`");
        assert_eq!(Endpoint::of(&env(Some("unix:///var/run/docker.sock"), Some("plain"))).ok(), Some(Endpoint::Unix("/var/run/docker.sock".into())), "DOCKER_HOST over any context");

        let half = Endpoint::of(&env(None, Some("half"))).expect_err("TLS files missing").to_string();
        assert!(half.contains("docker context `half` (tcp://10.0.0.6:2376) with TLS") && half.contains("has no cert.pem, key.pem"), "{half}");
        let careless = Endpoint::of(&env(None, Some("careless"))).expect_err("no verification").to_string();
        assert!(careless.contains("skip-tls-verify"), "{careless}");
        let gone = Endpoint::of(&env(None, Some("gone"))).expect_err("no such context").to_string();
        assert!(gone.contains("docker context `gone`") && gone.contains("docker context ls"), "{gone}");
    }
}
