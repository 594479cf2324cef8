//! The soak's short version (`just soak` runs the long one): records Kafka to Kafka through
//! `connector-host run` while connections are cut, the broker is killed (SIGKILL) and
//! restarted, and the host is killed (SIGKILL) and restarted; every record arrives, and only
//! the host's kill may repeat any (those it had written and not committed).

use std::time::Duration;

use integration_tests::soak::{self, Fault, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_survive_cuts_a_broker_restart_and_a_host_kill_with_no_loss() {
    let plan = Plan {
        records: 20_000,
        cut_every: Duration::from_secs(1),
        broker_restarts: 1,
        host_kill: true,
        limit: Duration::from_secs(600),
    };
    let r = soak::run(&plan).await;
    eprintln!("{r:#?}");
    assert!(
        r.failure.is_none(),
        "{}",
        r.failure.as_deref().unwrap_or_default()
    );
    assert_eq!(r.lost, 0, "records lost");
    assert_eq!(
        r.unexplained_duplicates(),
        0,
        "duplicates the host's kill does not explain"
    );
    assert!(
        r.duplicates <= r.uncommitted_at_kill,
        "{} duplicates, more than the {} records uncommitted at the kill",
        r.duplicates,
        r.uncommitted_at_kill
    );
    for fault in [Fault::BrokerRestart, Fault::HostKill] {
        assert_eq!(
            r.recoveries_from(fault).len(),
            1,
            "records flowed again after the {fault:?}"
        );
    }
}
