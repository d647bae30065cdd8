//! `POST /hooks/git` on labd's `--http`: a Git host's push webhook has labd fetch its branch at
//! once (as Flux's Receiver) instead of at its next `--interval`. Served only with
//! `--webhook-secret-file`; a request must show it knows the secret: signed as GitHub, Gitea
//! and Forgejo sign (`X-Hub-Signature-256: sha256=HMAC(secret, body)`), or carrying it as
//! GitLab does (`X-Gitlab-Token`) or as any client can (`Authorization: Bearer`).

use hmac::{Hmac, Mac};
use hyper::header::HeaderMap;
use subtle::ConstantTimeEq;

pub const PATH: &str = "/hooks/git";

/// The largest body read (GitHub's push payloads stay far below; a larger one is refused).
pub const MAX_BODY: usize = 5 << 20;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("no X-Hub-Signature-256, X-Gitlab-Token or Authorization: Bearer header")]
    Unsigned,
    #[error("X-Hub-Signature-256 is not `sha256=` and 64 hex digits")]
    Malformed,
    #[error("the signature or token does not match the webhook secret")]
    Mismatch,
}

/// Whether the request shows it knows `secret`: by the first of the three headers it has.
pub fn authorize(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> Result<(), Refused> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(signature) = header("x-hub-signature-256") {
        let digest = signature.strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()).filter(|d| d.len() == 32).ok_or(Refused::Malformed)?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).map_err(|_| Refused::Mismatch)?;
        mac.update(body);
        return mac.verify_slice(&digest).map_err(|_| Refused::Mismatch);
    }
    let token = header("x-gitlab-token").or_else(|| header("authorization").and_then(|a| a.strip_prefix("Bearer ")).map(str::trim)).ok_or(Refused::Unsigned)?;
    if bool::from(token.as_bytes().ct_eq(secret)) { Ok(()) } else { Err(Refused::Mismatch) }
}

/// The secret as a file holds it (a trailing newline is not part of it).
pub fn read_secret(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut secret = std::fs::read(path)?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    Ok(secret)
}

/// Whether the request is GitHub's (or Gitea's) ping at the webhook's creation: answered, and
/// no fetch.
pub fn is_ping(headers: &HeaderMap) -> bool {
    ["x-github-event", "x-gitea-event"].iter().any(|h| headers.get(*h).is_some_and(|v| v == "ping"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    /// GitHub's own example (docs: "Validating webhook deliveries"): secret "It's a Secret to
    /// Everybody", payload "Hello, World!".
    #[test]
    fn github_s_signature_is_checked_as_github_documents_it() {
        let secret = b"It's a Secret to Everybody";
        let signed = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(authorize(&headers(&[("x-hub-signature-256", signed)]), b"Hello, World!", secret), Ok(()));
        assert_eq!(authorize(&headers(&[("x-hub-signature-256", signed)]), b"Hello, World?", secret), Err(Refused::Mismatch), "another body");
        assert_eq!(authorize(&headers(&[("x-hub-signature-256", signed)]), b"Hello, World!", b"another secret"), Err(Refused::Mismatch));
        assert_eq!(authorize(&headers(&[("x-hub-signature-256", "sha1=abc")]), b"", secret), Err(Refused::Malformed));
    }

    #[test]
    fn a_token_is_gitlab_s_header_or_a_bearer_and_nothing_is_refused() {
        let secret = b"s3cret";
        assert_eq!(authorize(&headers(&[("x-gitlab-token", "s3cret")]), b"{}", secret), Ok(()));
        assert_eq!(authorize(&headers(&[("authorization", "Bearer s3cret")]), b"{}", secret), Ok(()));
        assert_eq!(authorize(&headers(&[("x-gitlab-token", "s3cre")]), b"{}", secret), Err(Refused::Mismatch));
        assert_eq!(authorize(&headers(&[("authorization", "Basic czNjcmV0")]), b"{}", secret), Err(Refused::Unsigned));
        assert_eq!(authorize(&HeaderMap::new(), b"{}", secret), Err(Refused::Unsigned));
        assert!(is_ping(&headers(&[("x-github-event", "ping")])) && !is_ping(&headers(&[("x-github-event", "push")])));
    }

    #[test]
    fn the_secret_file_s_trailing_newline_is_not_part_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), b"s3cret");
    }
}
