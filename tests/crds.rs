//! `crds/` is generated from the Rust types; this fails when someone changes one without the other.

#[test]
fn checked_in_crds_match_the_types() {
    let generated = skybridge::api::crds_yaml().expect("CRDs render");
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/skybridge.yaml"))
            .expect("crds/skybridge.yaml exists");
    assert!(
        generated == checked_in,
        "crds/skybridge.yaml is stale: run `cargo run -q -- crd > crds/skybridge.yaml` and commit it"
    );
}

#[test]
fn every_field_is_documented() {
    // `kubectl explain` shows descriptions; a field without one is a gap in the docs.
    fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let child_path = format!("{path}.{name}");
                let top_level = matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                if !top_level && child.get("description").is_none() {
                    missing.push(child_path.clone());
                }
                walk(&child_path, child, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    let mut missing = Vec::new();
    for crd in skybridge::api::crds() {
        let schema = serde_json::to_value(
            &crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema,
        )
        .unwrap();
        walk(&crd.spec.names.kind, &schema, &mut missing);
    }
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:#?}"
    );
}
