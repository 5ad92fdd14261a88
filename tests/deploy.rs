//! The deployment files stay true to the binary: every StreamGate config they carry (the
//! example TOML files, the Kubernetes ConfigMaps, the compose file's configs) passes
//! `streamgate edge|control|transcode --check-config`, and the YAML parses.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `--check-config` for the component the TOML configures.
fn check(name: &str, toml_text: &str, tmp: &Path) {
    let doc: toml::Table = toml_text
        .parse()
        .unwrap_or_else(|e| panic!("{name}: not TOML: {e}"));
    // Secrets referenced by path are not in the repository; point them at a test file.
    let token = tmp.join("admin-tokens");
    std::fs::write(&token, "deploy-test-token-0123456789\n").unwrap();
    let mut text = toml_text.to_owned();
    for section in ["control", "transcode"] {
        if let Some(c) = doc.get(section).and_then(|c| c.get("admin_token_file")) {
            text = text.replace(c.as_str().unwrap(), token.to_str().unwrap());
        }
    }
    let component = if doc.contains_key("control") {
        "control"
    } else if doc.contains_key("transcode") {
        "transcode"
    } else {
        "edge"
    };
    let file = tmp.join(format!("{}.toml", name.replace(['/', ' '], "_")));
    std::fs::write(&file, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args([component, "--config"])
        .arg(&file)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} ({component}): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml_docs(path: &Path) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

#[test]
fn every_shipped_config_passes_check_config() {
    let tmp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("deploy/config")).unwrap() {
        let path = entry.unwrap().path();
        check(
            &path.display().to_string(),
            &std::fs::read_to_string(&path).unwrap(),
            tmp.path(),
        );
        checked += 1;
    }
    for entry in std::fs::read_dir(root().join("deploy/k8s")).unwrap() {
        let path = entry.unwrap().path();
        for doc in yaml_docs(&path) {
            assert!(
                doc["kind"].is_string(),
                "{}: a document without kind",
                path.display()
            );
            if doc["kind"] == "ConfigMap" {
                for (k, v) in doc["data"].as_mapping().unwrap() {
                    let k = k.as_str().unwrap();
                    if k.ends_with(".toml") {
                        check(
                            &format!("{} {k}", path.display()),
                            v.as_str().unwrap(),
                            tmp.path(),
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    let compose = yaml_docs(&root().join("deploy/compose/compose.yaml"));
    for (k, v) in compose[0]["configs"].as_mapping().unwrap() {
        check(
            &format!("compose {}", k.as_str().unwrap()),
            v["content"].as_str().unwrap(),
            tmp.path(),
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} configs found");
}
