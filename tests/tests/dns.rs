//! Name lookups through the sandbox, against a fake resolver: the host runs in a network
//! and mount namespace of its own (`unshare`, as root) whose `/etc/resolv.conf` points at
//! `tests/dns/fake_dns.py` on its loopback (no broker is needed). Every name that reaches the resolver is logged:
//! a tenant's lookups of names no rule allows never do, those a rule allows do.

use std::time::Duration;

use integration_tests::pipelines::*;
use integration_tests::*;

/// A pipeline of the hostile guest looking up `<secret>-<i>.<domain>`, with `extra` lines;
/// not restarted (its failure says what was refused, once).
fn lookups(name: &str, domain: &str, extra: &str) -> String {
    format!(
        "[[pipeline]]\nname = \"{name}\"\ntenant = \"evil\"\nrestart = {{ attempts = 0 }}\n{extra}\
         [pipeline.source]\ntype = \"component\"\ncomponent = \"hostile_guest.wasm\"\n\
         settings = {{ mode = \"dns\", domain = \"{domain}\", secret = \"s3cret\" }}\n\
         [pipeline.destination]\ntype = \"file\"\npath = \"{name}.jsonl\"\n\n"
    )
}

#[tokio::test]
async fn only_names_a_rule_allows_reach_the_resolver() {
    let dir = scratch("dns");
    std::fs::copy(hostile_component_path(), dir.join("hostile_guest.wasm")).unwrap();
    let mut file = lookups("exfil", "exfil.example", "");
    file += &lookups(
        "allowed",
        "allowed.example",
        "allow = [\"*.allowed.example:9092\"]\nmax-records = 1\n",
    );
    let path = dir.join("pipelines.toml");
    std::fs::write(&path, &file).unwrap();
    let (resolv, queries) = (dir.join("resolv.conf"), dir.join("queries.log"));
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let fake = workspace().join("tests/dns/fake_dns.py");

    // The host starts once the resolver says it is ready (polled every 0.1 s, for up to 30 s;
    // exit 98 if it never is).
    let script = format!(
        "ip link set lo up && mount --bind '{resolv}' /etc/resolv.conf || exit 99; \
         python3 '{fake}' '{queries}' >/dev/null 2>&1 & \
         for _ in $(seq 300); do grep -q ready '{queries}' 2>/dev/null && break; sleep 0.1; done; \
         grep -q ready '{queries}' || {{ echo 'the fake resolver is not ready after 30 s' >&2; exit 98; }}; \
         exec \"$0\" \"$@\"",
        resolv = resolv.display(),
        fake = fake.display(),
        queries = queries.display(),
    );
    // A PID namespace too: when the host (its first process) exits, the resolver goes with it.
    let launcher = ["unshare", "--net", "--mount", "--pid", "--fork"];
    let mut cmd = run_host_in(&path, &[], &launcher, &script);
    let (code, stderr) = finish(&mut cmd, Duration::from_secs(60)).await;
    assert_ne!(code, 99, "could not set up the namespace:\n{stderr}");
    assert_ne!(code, 98, "the fake resolver did not start:\n{stderr}");

    let asked = std::fs::read_to_string(&queries).unwrap_or_default();
    assert!(
        asked.lines().any(|n| n == "s3cret-0.allowed.example"),
        "an allowed name reaches the resolver (the test's control): {asked:?}\n{stderr}"
    );
    assert!(
        !asked.contains("exfil"),
        "a name no rule allows reached the resolver: {asked:?}"
    );
    let exfil = summary(&stderr, "evil/exfil");
    assert!(exfil.contains("200 lookups refused"), "{exfil}");
    assert!(
        summary(&stderr, "evil/allowed").contains("finished (1 read, 1 written"),
        "{stderr}"
    );
    let got = std::fs::read_to_string(dir.join("allowed.jsonl")).unwrap();
    assert_eq!(got.lines().count(), 1, "{got}");
}
