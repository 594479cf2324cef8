//! Every bad configuration gets an `invalid-config` error naming the parameter and the
//! value, through the host, without any I/O.

use connector_host::{Role, wit};
use integration_tests::*;

/// Validates `cfg` for the source or the destination and returns (parameter, message).
async fn invalid(role: &str, cfg: &[(&str, &str)]) -> (String, String) {
    let cfg = config(cfg);
    let inst = runtime()
        .instantiate("test/config", &Default::default(), &Default::default())
        .await
        .unwrap();
    let role = match role {
        "source" => Role::Source,
        _ => Role::Destination,
    };
    let mut inst = inst;
    let err = inst.validate(role, &cfg).await.unwrap_err();
    match guest_error(&err) {
        wit::Error::InvalidConfig(c) => (c.parameter.clone(), c.message.clone()),
        other => panic!("expected invalid-config, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_servers_and_topic_are_named_like_the_original_plugin() {
    assert_eq!(
        invalid("source", &[("topic", "t")]).await,
        ("servers".into(), "servers missing".into())
    );
    assert_eq!(
        invalid("source", &[("servers", "a:1")]).await,
        ("topic".into(), "topic missing".into())
    );
    assert_eq!(
        invalid("destination", &[("servers", ""), ("topic", "t")]).await.1,
        "servers missing"
    );
}

#[tokio::test]
async fn bad_values_name_the_parameter_and_the_value() {
    let base = [("servers", "127.0.0.1:9092"), ("topic", "t")];
    let with = |k: &'static str, v: &'static str| {
        let mut c = base.to_vec();
        c.push((k, v));
        c
    };
    let cases: &[(&str, &str, &str, &str)] = &[
        ("destination", "acks", "2", "\"2\" is not one of 0, 1, all"),
        ("destination", "deliveryTimeout", "10", "\"10\" is not a duration"),
        ("destination", "deliveryTimeout", "1x", "\"1x\" is not a duration"),
        ("source", "readFromBeginning", "yes", "\"yes\" is not a boolean"),
        ("source", "acks", "all", "unknown parameter for a source"),
        (
            "destination",
            "readFromBeginning",
            "true",
            "unknown parameter for a destination",
        ),
        ("destination", "colour", "blue", "unknown parameter"),
    ];
    for (role, key, value, want) in cases {
        let (param, msg) = invalid(role, &with(key, value)).await;
        assert_eq!(&param, key, "{role} {key}={value}");
        assert!(msg.contains(want), "{role} {key}={value}: {msg}");
    }
}

#[tokio::test]
async fn malformed_server_addresses_are_named() {
    for bad in ["localhost", "host:notaport", "host:0", ":9092", "a:1,b"] {
        let (param, msg) = invalid("source", &[("servers", bad), ("topic", "t")]).await;
        assert_eq!(param, "servers");
        assert!(msg.contains("malformed server address"), "{bad}: {msg}");
    }
}

#[tokio::test]
async fn a_good_config_validates_for_both_sides() {
    let mut inst = runtime()
        .instantiate("test/config", &Default::default(), &Default::default())
        .await
        .unwrap();
    let cfg = config(&[
        ("servers", "a:1,[::1]:2"),
        ("topic", "t"),
        ("acks", "1"),
        ("deliveryTimeout", "1m30s"),
    ]);
    inst.validate(Role::Destination, &cfg).await.unwrap();
    let mut inst = runtime()
        .instantiate("test/config", &Default::default(), &Default::default())
        .await
        .unwrap();
    let cfg = config(&[
        ("servers", "a:1"),
        ("topic", "t"),
        ("readFromBeginning", "true"),
        ("clientID", "x"),
    ]);
    inst.validate(Role::Source, &cfg).await.unwrap();
}
