//! The host confines each instance to its allowlist.

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
    match guest_error(&err) {
        wit::Error::Connection(m) => assert!(
            m.contains("ermission denied") || m.contains("ccess denied"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }

    // The same config in an instance whose allowlist has the broker works.
    let mut allowed = destination(&allow_broker()).await;
    allowed.open(&cfg).await.unwrap();
}
