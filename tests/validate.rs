//! `labctl validate` on real files: the examples pass, and every kind of bad input is reported
//! at the right `path:line:column: field.path:`.

use std::path::{Path, PathBuf};
use std::process::Command;

use swarmlab::source::{load_dir, LabEntry};

fn labctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_labctl"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_examples_are_valid() {
    let out = labctl().arg("validate").arg(root().join("labs")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "labctl validate labs/ failed:\n{stdout}");
    for name in ["coins", "iot", "kademlia"] {
        assert!(stdout.contains(&format!("valid   {name} ")), "{name} missing from:\n{stdout}");
    }
}

#[test]
fn the_examples_carry_the_schema_modeline() {
    for entry in std::fs::read_dir(root().join("labs")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# yaml-language-server: $schema=../schemas/lab.v1alpha1.json"),
            "{} lacks the modeline",
            path.display()
        );
    }
}

/// Each fixture's first line is `# expect: LINE:COL: field: message`; labctl must print it.
#[test]
fn every_kind_of_bad_input_is_located() {
    let dir = root().join("tests/fixtures/invalid");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).expect("fixture has an expect line");
        let out = labctl().arg("validate").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{} should fail validation", path.display());
        let stdout = String::from_utf8_lossy(&out.stdout);
        let wanted = format!("{}:{expect}", path.display());
        assert!(stdout.lines().any(|l| l == wanted), "{}:\nwanted: {wanted}\ngot:\n{stdout}", path.display());
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} fixtures");
}

/// A Compose file handed to labctl (or dropped among the labs) is named as one, with the
/// command that converts it, instead of five missing and unknown fields.
#[test]
fn a_compose_file_is_pointed_to_labctl_import() {
    let path = root().join("tests/fixtures/compose/dockercoins.yml");
    let out = labctl().arg("validate").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let file = path.display();
    assert_eq!(
        stdout.trim(),
        format!("{file}:1:1: (document): this is a Compose file, not a Lab (top-level `services`, no apiVersion or kind): `labctl import {file} -o lab.yaml` converts it, noting every field that does not carry over")
    );
}

#[test]
fn all_errors_of_a_file_are_reported_in_order() {
    let path = root().join("tests/fixtures/many-errors.yaml");
    let out = labctl().arg("validate").arg(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&root().display().to_string(), "");
    insta::assert_snapshot!(stdout);
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn lab(name: &str) -> String {
    format!("apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata:\n  name: {name}\nspec:\n  services:\n    web: {{image: labbox:latest}}\n")
}

#[test]
fn the_loader_reads_recursively_and_ignores_what_is_not_a_lab_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", &lab("a"));
    write(dir.path(), "nested/deeper/b.yml", &format!("{}---\n{}", lab("b"), lab("c")));
    write(dir.path(), ".hidden.yaml", &lab("hidden"));
    write(dir.path(), ".git/x.yaml", &lab("git"));
    write(dir.path(), "a.yaml~", &lab("backup"));
    write(dir.path(), "#a.yaml#", &lab("emacs"));
    write(dir.path(), "notes.txt", "not yaml");
    let catalog = load_dir(dir.path()).unwrap();
    let names: Vec<&String> = catalog.labs.keys().collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert!(catalog.is_clean());
}

#[test]
fn a_lab_defined_twice_is_an_error_on_both_definitions() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "one.yaml", &lab("twin"));
    write(dir.path(), "two.yaml", &lab("twin"));
    let catalog = load_dir(dir.path()).unwrap();
    let LabEntry::Invalid(diags) = &catalog.labs["twin"] else { panic!("twin should be invalid") };
    assert_eq!(diags.len(), 2);
    let files: Vec<String> = diags.iter().map(|d| d.file.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(files, ["one.yaml", "two.yaml"]);
    assert!(diags.iter().all(|d| d.line == 4 && d.column == 9 && d.message.contains("defined 2 times")));
}

/// Compose's way of not repeating oneself: `x-` fields holding anchors, `<<` merging them.
#[test]
fn compose_style_anchors_and_merge_keys_make_the_same_lab_as_writing_it_out() {
    let dir = tempfile::tempdir().unwrap();
    let head = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata:\n  name: dry\n";
    write(dir.path(), "merged.yaml", &format!("{head}x-unused: {{replicas: lots, delay: 100000h}}\nx-node: &node\n  image: labbox:latest\n  replicas: 2\n  networks: [a]\nspec:\n  networks: {{a: {{}}}}\n  services:\n    one: *node\n    two:\n      <<: *node\n      replicas: 3\n"));
    write(dir.path(), "written-out.yaml", &format!("{head}spec:\n  networks: {{a: {{}}}}\n  services:\n    one: {{image: labbox:latest, replicas: 2, networks: [a]}}\n    two: {{image: labbox:latest, replicas: 3, networks: [a]}}\n"));
    let revision = |file: &str| {
        let out = labctl().arg("validate").arg(dir.path().join(file)).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{file}: {stdout}");
        assert!(stdout.contains("2 services, 5 replicas"), "{file}: {stdout}");
        stdout.split_whitespace().skip_while(|w| *w != "revision").nth(1).unwrap().to_string()
    };
    assert_eq!(revision("merged.yaml"), revision("written-out.yaml"), "the `x-` fields and the merge are not part of the lab");

    // An error in a merged value is reported where its text is: in the anchor.
    write(dir.path(), "bad.yaml", &format!("{head}x-node: &node\n  image: labbox:latest\n  replicas: lots\nspec:\n  services:\n    one:\n      <<: *node\n    two:\n      <<: 7\n      image: labbox:latest\nextra: 1\n"));
    let out = labctl().arg("validate").arg(dir.path().join("bad.yaml")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&dir.path().display().to_string(), "");
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "/bad.yaml:7:13: spec.services.one.replicas: expected an integer, found a string `lots`",
            "/bad.yaml:13:7: spec.services.two: `<<` (a merge key) takes a mapping or a list of mappings, found a number `7`",
            "/bad.yaml:15:1: extra: unknown field `extra` (allowed: apiVersion, kind, metadata, spec)",
        ],
        "{stdout}"
    );
}

#[test]
fn a_missing_directory_is_an_error_not_an_empty_catalog() {
    assert!(load_dir(Path::new("/nonexistent/labs")).is_err());
}

#[test]
fn the_checked_in_schema_is_current() {
    let checked_in = std::fs::read_to_string(root().join("schemas/lab.v1alpha1.json")).unwrap();
    assert!(
        checked_in == swarmlab::spec::schema::lab_schema_text(),
        "schemas/lab.v1alpha1.json is stale: run `cargo run --bin labctl schema > schemas/lab.v1alpha1.json`"
    );
    let out = labctl().arg("schema").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), checked_in);
}

/// `labctl … | head` closes the pipe early: labctl ends quietly, as `ls | head` does, not with a
/// panic about printing to stdout.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = labctl().arg("schema").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn completions_are_generated() {
    let out = labctl().args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("labctl"));
}

#[test]
fn fmt_checks_rewrites_keeps_comments_and_refuses_broken_files() {
    // The examples are in canonical layout.
    let out = labctl().args(["fmt", "--check"]).arg(root().join("labs")).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));

    let dir = tempfile::tempdir().unwrap();
    let messy = "# the lab\napiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata:\n    name: tidy    # why it exists\nspec:\n    services:\n        web: {image: labbox:latest, command: [sleep, \"100\"]}   \n";
    let file = dir.path().join("tidy.yaml");
    std::fs::write(&file, messy).unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "metadata: {name: x\n").unwrap();

    let out = labctl().args(["fmt", "--check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tidy.yaml"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), messy, "--check writes nothing");

    let out = labctl().arg("fmt").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "the broken file is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken.yaml"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&broken).unwrap(), "metadata: {name: x\n", "a broken file is left as it is");
    let tidy = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        tidy,
        "# the lab\napiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata:\n  name: tidy # why it exists\nspec:\n  services:\n    web: {image: labbox:latest, command: [sleep, \"100\"]}\n"
    );
    let catalog = load_dir(&file).unwrap();
    assert!(matches!(catalog.labs.get("tidy"), Some(LabEntry::Valid(_))), "still the same valid lab");
    let out = labctl().args(["fmt", "--check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "formatted once is formatted");
}

#[test]
fn every_subcommand_says_what_it_does_in_the_help() {
    let out = labctl().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let commands: Vec<&str> = help.lines().skip_while(|l| !l.starts_with("Commands:")).skip(1).take_while(|l| l.starts_with("  ")).collect();
    assert!(commands.len() >= 10, "{help}");
    for line in commands {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        assert!(words.next().is_some(), "`labctl {name}` has no description in --help:\n{help}");
    }
    let status = String::from_utf8_lossy(&labctl().args(["help", "status"]).output().unwrap().stdout).to_string();
    assert!(status.starts_with("Show labs at a glance"), "{status}");
    let fmt = String::from_utf8_lossy(&labctl().args(["help", "fmt"]).output().unwrap().stdout).to_string();
    assert!(fmt.starts_with("Rewrite lab files"), "{fmt}");
}

#[test]
fn a_kill_step_counts_the_slots_that_spec_defaults_gives_a_service() {
    let dir = tempfile::tempdir().unwrap();
    let text = "apiVersion: swarmlab/v1alpha1\nkind: Lab\nmetadata: {name: dr}\nspec:\n  defaults: {image: labbox:latest, replicas: 3}\n  services:\n    raft: {}\n  schedule:\n    steps:\n      - {at: 10s, service: raft, slots: [3], kill: true}\n";
    write(dir.path(), "dr.yaml", text);
    let out = labctl().arg("validate").arg(dir.path().join("dr.yaml")).output().unwrap();
    assert!(out.status.success(), "slot 3 of 3 replicas: {}", String::from_utf8_lossy(&out.stdout));
    write(dir.path(), "dr.yaml", &text.replace("slots: [3]", "slots: [4]"));
    let out = labctl().arg("validate").arg(dir.path().join("dr.yaml")).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("`raft` has 3 replicas: slots 1 to 3, found 4"), "{}", String::from_utf8_lossy(&out.stdout));
}
