//! `labctl import` of the Compose files of the seeds (the IoT training lab verbatim, and
//! DockerCoins as container.training ships it): the labs validate, and once their images are
//! mapped to a local stand-in they become Ready on this registry-less machine.

mod common;

use std::time::Duration;

use common::*;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/compose/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A local image that runs whatever arguments it is given as a long sleep: what the real
/// images do (serve, compute) does not matter to convergence, and none can be pulled here.
fn standin_image() {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), "FROM labbox:latest\nENTRYPOINT [\"sh\", \"-c\", \"exec sleep 100000\", \"standin\"]\n").unwrap();
    docker_ok(&["build", "-q", "-t", "swarmlab-standin:latest", ctx.path().to_str().unwrap()]);
}

#[test]
fn the_seed_compose_files_import_into_labs_that_validate_and_converge() {
    standin_image();
    let mut lab = Lab::new();
    for (file, name, services) in [("iot.yml", "impiot", 4), ("dockercoins.yml", "impcoins", 5)] {
        lab.cleanup.push(name.into());
        remove_lab_objects(name);
        let out_file = lab.labs.join(format!("{name}.yaml"));
        let out = lab.labctl(&["import", &fixture(file), "--name", name, "--image", "*=swarmlab-standin:latest", "-o", out_file.to_str().unwrap()]);
        let notes = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{notes}");
        let text = std::fs::read_to_string(&out_file).unwrap();
        let valid = lab.labctl(&["validate", out_file.to_str().unwrap()]);
        assert!(valid.status.success(), "{}\n{text}", String::from_utf8_lossy(&valid.stdout));
        assert!(text.contains("# Not carried over"), "{text}");
        if file == "dockercoins.yml" {
            assert!(notes.contains("dockercoins.yml:5:5: services.rng.build: labd never builds or pulls"), "{notes}");
            assert!(notes.contains("services.webui.volumes"), "{notes}");
        } else {
            assert!(notes.contains("iot.yml:5:5: services.db.container_name"), "{notes}");
        }
        assert_eq!(text.matches("image: swarmlab-standin:latest").count(), services);
    }
    // Host ports of the Compose files (3000, 8000–8002) are published in host mode: fine on
    // one node as long as nothing else holds them.
    lab.start_labd();
    lab.wait_phase("impiot", "Ready", Duration::from_secs(120));
    let s = lab.wait_phase("impcoins", "Ready", Duration::from_secs(120));
    assert_eq!(s["services"].as_object().unwrap().len(), 5);
    let sim = docker_ok(&["service", "inspect", "impiot_simulator", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Args}}"]);
    assert_eq!(sim.trim(), r#"["-h","collector","-p","1337"]"#, "Compose's command is the entrypoint's arguments");
}
