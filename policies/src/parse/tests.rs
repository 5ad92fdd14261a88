use super::*;

fn errors(text: &str) -> Vec<(String, String)> {
    Policy::parse(text)
        .expect_err("expected errors")
        .0
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

#[test]
fn every_example_validates_and_round_trips() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let p = Policy::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The canonical form parses back to the same policy.
        let again = Policy::from_value(&p.to_value()).unwrap();
        assert_eq!(p, again, "{}", path.display());
        n += 1;
    }
    assert!(n >= 4, "examples missing");
}

#[test]
fn all_errors_are_reported_with_paths() {
    let errs = errors(
        r#"
id: "Bad Id"
bogus: 1
on_unavailable: maybe
rule:
  any_of:
    - jwt: { audience: 7, nope: x }
    - ip: { allow: [10.0.0.0/33, "1.2.3.4"] }
    - time: { not_before: yesterday }
    - origin: { allow: ["https://ok.example", "ftp://x", "https://x/path"] }
    - frobnicate: {}
    - not: { public: false }
"#,
    );
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "id",
        "bogus",
        "on_unavailable",
        "rule.any_of[0].jwt.audience",
        "rule.any_of[0].jwt.nope",
        "rule.any_of[1].ip.allow[0]",
        "rule.any_of[2].time.not_before",
        "rule.any_of[3].origin.allow[1]",
        "rule.any_of[3].origin.allow[2]",
        "rule.any_of[4].frobnicate",
        "rule.any_of[5].not.public",
    ] {
        assert!(paths.contains(&want), "missing {want} in {errs:#?}");
    }
    assert!(
        !paths.contains(&"rule.any_of[1].ip.allow[1]"),
        "a bare address is valid"
    );
}

#[test]
fn structural_errors() {
    assert_eq!(errors("rule: {public: true}")[0].0, "id");
    assert_eq!(errors("id: x")[0].0, "rule");
    assert!(
        errors("id: x\nrule: {public: true, jwt: {}}")[0]
            .1
            .contains("exactly one")
    );
    assert!(
        errors("id: x\nrule: {any_of: []}")[0]
            .1
            .contains("at least one")
    );
    assert!(errors("[1, 2")[0].1.contains("not valid YAML"));
    let deep = format!(
        "id: x\nrule: {}{{public: true}}{}",
        "{not: ".repeat(20),
        "}".repeat(20)
    );
    assert!(errors(&deep).iter().any(|(_, m)| m.contains("deeper")));
    assert!(
        errors(&"a".repeat(MAX_DOCUMENT_BYTES + 1))[0]
            .1
            .contains("larger")
    );
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,400}") {
        let _ = Policy::parse(&s);
    }
}
