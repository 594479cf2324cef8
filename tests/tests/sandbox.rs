//! The host confines each instance to its allowlist: `host:port` rules of the operator,
//! checked on the resolved address at every connect and on the name at every lookup.

use connector_host::{Allowlist, wit};
use integration_tests::*;

#[tokio::test]
async fn a_connection_outside_the_allowlist_is_refused_by_the_host() {
    let mut elsewhere = Allowlist::default();
    elsewhere.allow("10.255.255.1:9092").unwrap();
    let topic = new_topic("sandbox", 1);
    let cfg = config(&[("servers", &broker()), ("topic", &topic)]);

    let mut refused = destination(&elsewhere).await;
    let err = refused.open(&cfg).await.unwrap_err();
    // A final refusal, naming the address, without WASI's errno (2, EACCES there).
    match guest_error(&err) {
        wit::Error::NotPermitted(m) => assert!(
            m.contains(&broker()) && m.contains("the host does not permit it") && !m.contains("os error"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    let denied = refused.instance().denied();
    let wanted = format!("only an operator allow entry \"{}\" permits it", broker());
    assert!(denied.contains(&wanted), "the refusal names the entry: {denied}");

    // The same config in an instance whose allowlist has the broker works.
    let mut allowed = destination(&allow_broker()).await;
    allowed.open(&cfg).await.unwrap();
}

/// `allow` of the given entries, with the broker's port.
fn allow(entries: &[&str]) -> Allowlist {
    let port = broker().rsplit_once(':').unwrap().1.to_string();
    let mut a = Allowlist::default();
    for e in entries {
        a.allow(&e.replace("PORT", &port)).unwrap();
    }
    a
}

#[tokio::test]
async fn a_name_is_looked_up_only_when_a_rule_matches_it_and_only_the_operators_reach_loopback() {
    let port = broker().rsplit_once(':').unwrap().1.to_string();
    let topic = new_topic("sandbox-names", 1);
    let cfg = config(&[("servers", &format!("localhost:{port}")), ("topic", &topic)]);

    // The address is allowed, but not the name: the host does not look it up.
    let mut by_address = destination(&allow(&["127.0.0.1:PORT"])).await;
    let err = by_address.open(&cfg).await.unwrap_err();
    // The refused lookup is as final as a refused connect (WASI's access-denied, EACCES).
    match guest_error(&err) {
        wit::Error::NotPermitted(m) => {
            assert!(m.contains(&format!("cannot resolve localhost:{port}")), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let denied = by_address.instance().denied();
    assert!(
        denied.contains("name lookup localhost: name \"localhost\" is not in the allow list"),
        "{denied}"
    );

    // A tenant's `servers` name a loopback host: looked up, but not reached.
    let tenant = Allowlist::from_tenant_servers(&format!("localhost:{port}")).unwrap();
    let mut by_tenant = destination(&tenant).await;
    assert!(by_tenant.open(&cfg).await.is_err());
    let denied = by_tenant.instance().denied();
    assert!(denied.contains("is a loopback address"), "{denied}");

    // The operator named it: its name is looked up and its loopback address reached.
    let mut by_operator = destination(&allow(&["localhost:PORT"])).await;
    by_operator.open(&cfg).await.unwrap();
    let one = [record(None, Some(wit::Data::Raw(b"x".to_vec())), &[])];
    let (written, err) = by_operator.write(&one).await.unwrap();
    assert_eq!((written, err.map(|e| e.to_string())), (1, None));
    by_operator.teardown().await.unwrap();
}
