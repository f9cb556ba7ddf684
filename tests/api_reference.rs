//! `docs/reference/api.md` is generated from the CRD schemas; this fails when someone changes a
//! type (a field, a bound, a description, a CEL rule) without regenerating it.

#[test]
fn checked_in_api_reference_matches_the_schemas() {
    let generated = skybridge::api::reference_markdown();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/reference/api.md");
    let checked_in = std::fs::read_to_string(path).expect("docs/reference/api.md exists");
    assert!(
        generated == checked_in,
        "docs/reference/api.md is stale: run `cargo run -q -- crd --reference > docs/reference/api.md` and commit it"
    );
}

#[test]
fn the_reference_covers_every_field_of_every_crd() {
    // Every leaf and object property of every schema has a row, so nothing is left undocumented.
    fn paths(prefix: &str, schema: &serde_json::Value, out: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                if !prefix.is_empty() {
                    out.push(path.clone());
                }
                if !(prefix.is_empty()
                    && matches!(name.as_str(), "apiVersion" | "kind" | "metadata"))
                {
                    paths(&path, child, out);
                }
            }
        }
        if let Some(items) = schema.get("items") {
            paths(&format!("{prefix}[]"), items, out);
        }
    }
    let reference = skybridge::api::reference_markdown();
    for crd in skybridge::api::crds() {
        let schema = serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let mut all = Vec::new();
        paths("", &schema, &mut all);
        assert!(all.len() > 10, "{}", crd.spec.names.kind);
        for path in all {
            assert!(
                reference.contains(&format!("| `{path}` |")),
                "{}: no row for {path}",
                crd.spec.names.kind
            );
        }
    }
}
