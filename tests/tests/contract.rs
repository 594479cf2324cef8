//! The component's public face: the world it exports and imports, and its specification.

use connector_host::wit::ParameterType;
use integration_tests::*;

#[test]
fn the_component_exports_the_connector_world_and_imports_only_wasi_and_log() {
    let bytes = std::fs::read(component_path()).unwrap();
    let engine = runtime().engine();
    let component = wasmtime::component::Component::from_binary(engine, &bytes).unwrap();
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    for want in ["specifier", "source", "destination"] {
        let name = format!("opencdc:connector/{want}@0.1.0");
        assert!(exports.contains(&name), "{name} not in {exports:?}");
    }
    for (name, _) in ty.imports(engine) {
        let ok = name.starts_with("wasi:")
            || name == "opencdc:connector/log@0.1.0"
            || name == "opencdc:connector/types@0.1.0";
        assert!(ok, "unexpected import {name}");
        assert!(
            !name.starts_with("wasi:") || name.contains("@0.2."),
            "{name} is not WASI 0.2"
        );
    }
}

#[tokio::test]
async fn the_spec_lists_every_parameter_with_its_type_and_default() {
    let mut inst = runtime()
        .instantiate("test/spec", &Default::default(), &Default::default())
        .await
        .unwrap();
    let spec = inst.specify().await.unwrap();
    assert_eq!(spec.name, "kafka");
    assert!(!spec.version.is_empty());
    let find = |params: &[connector_host::wit::Parameter], name: &str| {
        params
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("no parameter {name}"))
    };
    let servers = find(&spec.source_params, "servers");
    assert!(servers.required && matches!(servers.type_, ParameterType::List));
    let acks = find(&spec.destination_params, "acks");
    assert_eq!(acks.default.as_deref(), Some("all"));
    assert_eq!(acks.allowed, ["0", "1", "all"]);
    let timeout = find(&spec.destination_params, "deliveryTimeout");
    assert!(matches!(timeout.type_, ParameterType::Duration));
    assert_eq!(timeout.default.as_deref(), Some("10s"));
    let rfb = find(&spec.source_params, "readFromBeginning");
    assert!(matches!(rfb.type_, ParameterType::Bool) && !rfb.required);
    assert!(
        spec.source_params.iter().all(|p| p.name != "acks"),
        "acks is a destination parameter"
    );
    find(&spec.source_params, "clientID");
}

/// The README's configuration table says what the spec says, parameter by parameter.
#[tokio::test]
async fn the_readme_table_matches_the_spec() {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    // One row per (side, parameter): name, type, required, default, description.
    let mut documented = std::collections::BTreeSet::new();
    for line in readme.lines().filter(|l| l.starts_with("| `")) {
        let c: Vec<String> = line.split('|').map(|c| c.trim().replace('`', "")).collect();
        for (side, column) in [("source", 2), ("destination", 3)] {
            if c[column] == "yes" {
                documented.insert((
                    side,
                    c[1].clone(),
                    c[4].clone(),
                    c[5].clone(),
                    c[6].clone(),
                    c[7].clone(),
                ));
            }
        }
    }
    let mut inst = runtime()
        .instantiate("test/spec", &Default::default(), &Default::default())
        .await
        .unwrap();
    let spec = inst.specify().await.unwrap();
    let type_name = |t: ParameterType| match t {
        ParameterType::String => "string",
        ParameterType::Int => "int",
        ParameterType::Float => "float",
        ParameterType::Bool => "bool",
        ParameterType::Duration => "duration",
        ParameterType::List => "list",
    };
    let mut specified = std::collections::BTreeSet::new();
    for (side, params) in [
        ("source", &spec.source_params),
        ("destination", &spec.destination_params),
    ] {
        for p in params.iter() {
            let required = if p.required { "yes" } else { "no" };
            let row = (
                side,
                p.name.clone(),
                type_name(p.type_).to_string(),
                required.to_string(),
                p.default.clone().unwrap_or_default(),
                p.description.clone(),
            );
            specified.insert(row);
        }
    }
    assert_eq!(documented, specified);
}
