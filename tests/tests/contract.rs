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
    let rows: Vec<Vec<String>> = readme
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect();
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
    let mut documented = 0;
    for (side, params, column) in [
        ("source", &spec.source_params, 2),
        ("destination", &spec.destination_params, 3),
    ] {
        for p in params.iter() {
            let row = rows
                .iter()
                .find(|r| r[1] == p.name)
                .unwrap_or_else(|| panic!("README lacks {}", p.name));
            assert_eq!(row[column], "yes", "{} is a {side} parameter", p.name);
            assert_eq!(row[4], type_name(p.type_), "type of {}", p.name);
            assert_eq!(
                row[5],
                if p.required { "yes" } else { "no" },
                "required of {}",
                p.name
            );
            assert_eq!(
                row[6],
                p.default.clone().unwrap_or_default(),
                "default of {}",
                p.name
            );
            assert_eq!(
                row[7].replace('`', ""),
                p.description,
                "description of {}",
                p.name
            );
            documented += 1;
        }
    }
    let in_spec = |side: &[connector_host::wit::Parameter], name: &str| side.iter().any(|p| p.name == name);
    for r in &rows {
        assert_eq!(
            r[2] == "yes",
            in_spec(&spec.source_params, &r[1]),
            "README source column of {}",
            r[1]
        );
        assert_eq!(
            r[3] == "yes",
            in_spec(&spec.destination_params, &r[1]),
            "README destination column of {}",
            r[1]
        );
    }
    assert!(documented > 0);
}
