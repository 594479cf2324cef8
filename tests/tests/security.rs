//! TLS and SASL through the host, against brokers of the tests' own (`integration_tests::
//! secure`: nisshi with SCRAM and/or TLS; `integration_tests::gateway`: PLAIN, mutual TLS and
//! expiring sessions in front of nisshi), with certificates made at run time
//! (`integration_tests::certs`).
//!
//! The contract: `tls.enabled`, `caCert` (PEM, added to the public roots), `clientCert`,
//! `clientKey`, `insecureSkipVerify`, `saslMechanism` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512;
//! empty: none), `saslUsername`, `saslPassword`, on both roles. A bad combination or PEM is
//! `invalid-config` naming the parameter; a wrong password is `remote` 58
//! SASL_AUTHENTICATION_FAILED, not retriable, at once; a certificate that does not verify is
//! the `tls` error naming the broker and why; a client speaking TLS to a plaintext listener
//! or the other way round fails in time, saying TLS. `saslPassword` and `clientKey` are
//! `sensitive`, and the host prints neither.
//!
//! The WIT `tls` variant and the parameter's `sensitive` field are found through the
//! bindings' Debug output, so these tests compile against the bindings before and after
//! they have them.

use std::collections::HashSet;
use std::future::Future;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use connector_host::wit::{self, Data, Record};
use connector_host::{Destination, Limits, Role, Source};
use integration_tests::certs::{self, Pem, pem_body_lines};
use integration_tests::child::{Running, output_within};
use integration_tests::gateway::Gateway;
use integration_tests::interop::{KRecord, Librdkafka};
use integration_tests::pipelines::{
    allow_line, kafka_end_at, metrics_addr, run_host, scrape, scratch, summary,
};
use integration_tests::secure::{Scram, SecureBroker};
use integration_tests::*;

/// How long any one call may take before the test says it hung: well past the connector's
/// own deadlines.
const HANG: Duration = Duration::from_secs(90);

/// The connector's deadline for a request (a source's; a destination's delivery timeout is
/// 10 s by default): a failure to connect must come within it, not after a hang.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// How fast a refused authentication must come back: one round of the handshake, no
/// retries.
const FAST: Duration = Duration::from_secs(5);

/// `fut`, or a panic saying it hung.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return within {limit:?}"))
}

fn pairs(p: &[(&str, &str)]) -> Config {
    config(p)
}

/// `tls.enabled=true` trusting the test CA.
fn tls() -> Config {
    pairs(&[("tls.enabled", "true"), ("caCert", &certs::pki().ca.cert)])
}

/// SASL settings.
fn sasl(mechanism: &str, user: &str, password: &str) -> Config {
    pairs(&[
        ("saslMechanism", mechanism),
        ("saslUsername", user),
        ("saslPassword", password),
    ])
}

/// The test client certificate and key (mTLS).
fn client_cert() -> Config {
    let c = &certs::pki().client;
    pairs(&[("clientCert", &c.cert), ("clientKey", &c.key)])
}

fn join(parts: &[Config]) -> Config {
    parts.concat()
}

/// A destination on `servers` writing to `topic` with `extra`, or the error opening it.
async fn try_destination(servers: &str, topic: &str, extra: &Config) -> anyhow::Result<Destination> {
    let mut dst = destination(&allow_servers(servers)).await;
    let mut cfg = pairs(&[("servers", servers), ("topic", topic)]);
    cfg.extend(extra.iter().cloned());
    within(HANG, "destination open", dst.open(&cfg)).await?;
    Ok(dst)
}

/// A source on `servers` reading `topic` from the beginning with `extra`, or the error
/// opening it.
async fn try_source(servers: &str, topic: &str, extra: &Config) -> anyhow::Result<Source> {
    let mut src = source(&allow_servers(servers)).await;
    let mut cfg = pairs(&[
        ("servers", servers),
        ("topic", topic),
        ("readFromBeginning", "true"),
    ]);
    cfg.extend(extra.iter().cloned());
    within(HANG, "source open", src.open(&cfg, None)).await?;
    Ok(src)
}

fn raw(value: &str) -> Record {
    record(
        Some(Data::Raw(format!("key-{value}").into_bytes())),
        Some(Data::Raw(value.as_bytes().to_vec())),
        &[],
    )
}

fn value_of(r: &Record) -> String {
    String::from_utf8(bytes(&r.payload.after).unwrap_or_default()).expect("utf-8 values")
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Reads until `n` records arrived or `timeout` passed; a read error fails the test.
async fn read_values(src: &mut Source, n: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let batch = within(HANG, "source read", src.read((n - out.len()) as u32, 500))
            .await
            .unwrap_or_else(|e| panic!("read failed after {} records: {e:#}", out.len()));
        out.extend(batch.iter().map(value_of));
    }
    out
}

/// Writes 20 records to `topic` on `servers` with `extra` settings and reads them back
/// with the same settings.
async fn round_trip(servers: &str, topic: &str, extra: &Config, tag: &str) {
    let values: Vec<String> = (0..20).map(|i| format!("{tag}-{i}")).collect();
    let mut dst = try_destination(servers, topic, extra)
        .await
        .unwrap_or_else(|e| panic!("{tag}: open destination: {e:#}"));
    let recs: Vec<Record> = values.iter().map(|v| raw(v)).collect();
    let (n, err) = within(HANG, "write", dst.write(&recs)).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (20, None), "{tag}");
    dst.teardown().await.unwrap();

    let mut src = try_source(servers, topic, extra)
        .await
        .unwrap_or_else(|e| panic!("{tag}: open source: {e:#}"));
    let read = read_values(&mut src, 20, Duration::from_secs(30)).await;
    assert_eq!(sorted(read), sorted(values), "{tag}");
    src.teardown().await.unwrap();
}

/// The bindings' Debug text of an error (`Error::Tls("...")` once the variant exists).
fn debug(e: &wit::Error) -> String {
    format!("{e:?}")
}

/// The message of the connector's `tls` error, if `e` is one.
fn tls_message(e: &wit::Error) -> Option<String> {
    let d = debug(e);
    d.strip_prefix("Error::Tls(")
        .or_else(|| d.strip_prefix("Tls("))
        .map(|m| m.trim_end_matches(')').to_string())
}

/// `tls_message` reads the bindings' Debug text of an error: it has the shape it expects.
#[test]
fn the_bindings_debug_text_of_an_error_has_the_shape_tls_message_reads() {
    assert_eq!(
        debug(&wit::Error::Connection("x".into())),
        "Error::Connection(\"x\")"
    );
    assert_eq!(tls_message(&wit::Error::Connection("x".into())), None);
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn scram_users() -> [(&'static str, &'static str, Scram); 2] {
    [
        ("alice", "alice-secret", Scram::Sha256),
        ("bob", "bob-secret", Scram::Sha512),
    ]
}

/// A nisshi with SCRAM users alice (SHA-256) and bob (SHA-512), over TLS when `tls`, and
/// `topics` topics.
fn scram_broker(tls: bool, topics: usize) -> SecureBroker {
    let mut b = SecureBroker::with();
    for (user, password, mechanism) in scram_users() {
        b = b.user(user, password, mechanism);
    }
    for _ in 0..topics {
        b = b.topic("sec", 2);
    }
    if tls {
        b = b.tls(&certs::pki().server);
    }
    b.start()
}

/// A TLS nisshi without authentication presenting `server`.
fn tls_broker(server: &Pem) -> SecureBroker {
    SecureBroker::with()
        .no_authentication()
        .tls(server)
        .topic("sec-tls", 2)
        .start()
}

// ---------------------------------------------------------------------------------------
// Working connections

#[tokio::test]
async fn write_then_read_over_tls() {
    let b = tls_broker(&certs::pki().server);
    round_trip(&b.addr(), b.topic(0), &tls(), "tls").await;
}

#[tokio::test]
async fn write_then_read_over_sasl_scram_256_and_512() {
    let b = scram_broker(false, 2);
    for (i, (user, password, mechanism)) in scram_users().into_iter().enumerate() {
        let cfg = sasl(mechanism.mechanism(), user, password);
        round_trip(&b.addr(), b.topic(i), &cfg, mechanism.mechanism()).await;
    }
}

#[tokio::test]
async fn write_then_read_over_sasl_and_tls_together() {
    let b = scram_broker(true, 2);
    for (i, (user, password, mechanism)) in scram_users().into_iter().enumerate() {
        let cfg = join(&[tls(), sasl(mechanism.mechanism(), user, password)]);
        round_trip(
            &b.addr(),
            b.topic(i),
            &cfg,
            &format!("tls+{}", mechanism.mechanism()),
        )
        .await;
    }
}

fn mtls_plain_gateway(user: &str, password: &str) -> Gateway {
    let pki = certs::pki();
    Gateway::with()
        .tls(&pki.server)
        .client_ca(&pki.ca.cert)
        .plain(user, password)
        .start()
}

#[tokio::test]
async fn write_then_read_with_plain_and_mutual_tls_through_the_gateway() {
    let g = mtls_plain_gateway("carol", "carol-secret");
    let topic = g.new_topic("sec-mtls", 2);
    let cfg = join(&[tls(), client_cert(), sasl("PLAIN", "carol", "carol-secret")]);
    round_trip(&g.addr(), &topic, &cfg, "mtls+plain").await;
    assert!(
        g.authentications() >= 2,
        "{} authentications",
        g.authentications()
    );
    assert_eq!(
        (
            g.tls_failures(),
            g.failed_authentications(),
            g.unauthenticated_requests()
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn insecure_skip_verify_accepts_a_certificate_of_an_unknown_ca() {
    let b = tls_broker(&certs::pki().other_server);
    let cfg = pairs(&[("tls.enabled", "true"), ("insecureSkipVerify", "true")]);
    round_trip(&b.addr(), b.topic(0), &cfg, "insecure").await;
}

/// Sessions of two seconds (KIP-368) while a source reads and a destination writes for
/// more than five: the connector re-authenticates its connections in time (none is closed
/// for an expired session), with no error and nothing lost or read twice.
#[tokio::test]
async fn expiring_sessions_are_renewed_while_reading_and_writing() {
    let lifetime = Duration::from_secs(2);
    let g = Gateway::with()
        .plain("erin", "erin-secret")
        .session_lifetime(lifetime)
        .start();
    let topic = g.new_topic("sec-reauth", 2);
    let cfg = sasl("PLAIN", "erin", "erin-secret");
    let mut dst = try_destination(&g.addr(), &topic, &cfg)
        .await
        .expect("open destination");
    let mut src = try_source(&g.addr(), &topic, &cfg).await.expect("open source");

    let start = Instant::now();
    let mut written = Vec::new();
    let mut read = Vec::new();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let batch: Vec<String> = (0..5).map(|i| format!("r{round}-{i}")).collect();
        let recs: Vec<Record> = batch.iter().map(|v| raw(v)).collect();
        let (n, err) = within(HANG, "write", dst.write(&recs)).await.unwrap();
        assert_eq!(
            (n, err.map(|e| e.to_string())),
            (5, None),
            "write {round} after {:?}",
            start.elapsed()
        );
        written.extend(batch);
        let got = within(HANG, "read", src.read(100, 200))
            .await
            .unwrap_or_else(|e| panic!("read after {:?}: {e:#}", start.elapsed()));
        read.extend(got.iter().map(value_of));
        round += 1;
    }
    let missing = written.len() - read.len().min(written.len());
    read.extend(read_values(&mut src, missing, Duration::from_secs(30)).await);
    read.extend(
        within(HANG, "read", src.read(100, 500))
            .await
            .unwrap()
            .iter()
            .map(value_of),
    );
    assert_eq!(sorted(read), sorted(written), "every record read once");
    dst.teardown().await.unwrap();
    src.teardown().await.unwrap();
    assert!(
        g.reauthentications() > 0,
        "no re-authentication in {:?} of {lifetime:?} sessions",
        start.elapsed()
    );
    assert_eq!(
        (g.sessions_expired(), g.failed_authentications()),
        (0, 0),
        "a connection was used past its session ({} re-authentications)",
        g.reauthentications()
    );
}

// ---------------------------------------------------------------------------------------
// Interop with librdkafka over TLS + SASL

fn librdkafka_scram(b: &SecureBroker, mechanism: Scram, user: &str, password: &str) -> Librdkafka {
    let ca = certs::write_pem(b.dir(), "ca.pem", &certs::pki().ca.cert);
    Librdkafka::at(&b.addr())
        .set("security.protocol", "SASL_SSL")
        .set("ssl.ca.location", &ca.display().to_string())
        .set("sasl.mechanisms", mechanism.mechanism())
        .set("sasl.username", user)
        .set("sasl.password", password)
}

#[tokio::test]
async fn librdkafka_writes_over_tls_and_sasl_and_our_source_reads() {
    let b = scram_broker(true, 1);
    let values: Vec<String> = (0..50).map(|i| format!("theirs-{i}")).collect();
    let produced: Vec<KRecord> = values
        .iter()
        .map(|v| KRecord {
            key: Some(format!("k-{v}").into_bytes()),
            value: Some(v.clone().into_bytes()),
            ..KRecord::default()
        })
        .collect();
    let client = librdkafka_scram(&b, Scram::Sha256, "alice", "alice-secret");
    let topic = b.topic(0).to_string();
    tokio::task::spawn_blocking(move || client.produce(&topic, &produced, "lz4"))
        .await
        .unwrap();
    let cfg = join(&[tls(), sasl("SCRAM-SHA-256", "alice", "alice-secret")]);
    let mut src = try_source(&b.addr(), b.topic(0), &cfg)
        .await
        .expect("open source");
    let read = read_values(&mut src, 50, Duration::from_secs(30)).await;
    assert_eq!(sorted(read), sorted(values));
}

#[tokio::test]
async fn our_destination_writes_over_tls_and_sasl_and_librdkafka_reads() {
    let b = scram_broker(true, 1);
    let values: Vec<String> = (0..50).map(|i| format!("ours-{i}")).collect();
    let cfg = join(&[tls(), sasl("SCRAM-SHA-512", "bob", "bob-secret")]);
    let mut dst = try_destination(&b.addr(), b.topic(0), &cfg)
        .await
        .expect("open destination");
    let recs: Vec<Record> = values.iter().map(|v| raw(v)).collect();
    let (n, err) = within(HANG, "write", dst.write(&recs)).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (50, None));
    dst.teardown().await.unwrap();
    let client = librdkafka_scram(&b, Scram::Sha512, "bob", "bob-secret");
    let topic = b.topic(0).to_string();
    let read = tokio::task::spawn_blocking(move || client.consume(&topic, 50))
        .await
        .unwrap();
    let got: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
        .collect();
    assert_eq!(sorted(got), sorted(values));
}

// ---------------------------------------------------------------------------------------
// Refusals

/// Opens a destination and a source on `servers` with `extra`: each one's error and how
/// long it took.
async fn refusals(servers: &str, topic: &str, extra: &Config) -> Vec<(&'static str, wit::Error, Duration)> {
    let mut out = Vec::new();
    let start = Instant::now();
    let err = try_destination(servers, topic, extra)
        .await
        .err()
        .expect("the destination opens no connection");
    out.push(("destination", guest_error(&err).clone(), start.elapsed()));
    let start = Instant::now();
    let err = try_source(servers, topic, extra)
        .await
        .err()
        .expect("the source opens no connection");
    out.push(("source", guest_error(&err).clone(), start.elapsed()));
    out
}

/// The authentication refused: remote 58 SASL_AUTHENTICATION_FAILED, not retriable, fast.
fn assert_authentication_failed(role: &str, e: &wit::Error, took: Duration) {
    match e {
        wit::Error::Remote(r) => {
            assert_eq!(
                (r.code, r.name.as_str(), r.retriable),
                (58, "SASL_AUTHENTICATION_FAILED", false),
                "{role}: {}",
                r.message
            );
        }
        other => panic!("{role}: {other:?}"),
    }
    assert!(took < FAST, "{role}: refused after {took:?}: {e:?}");
}

/// nisshi answers a wrong SCRAM proof with error code 0 and `e=invalid-proof` in its final
/// message: the connector still reports 58, at once.
#[tokio::test]
async fn a_wrong_scram_password_is_a_fast_authentication_failure() {
    let b = scram_broker(false, 1);
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let user = if mechanism == "SCRAM-SHA-256" {
            "alice"
        } else {
            "bob"
        };
        let cfg = sasl(mechanism, user, "not-the-password");
        for (role, e, took) in refusals(&b.addr(), b.topic(0), &cfg).await {
            assert_authentication_failed(&format!("{mechanism} {role}"), &e, took);
            assert!(!debug(&e).contains("not-the-password"), "{e:?}");
        }
    }
}

/// The gateway counts the attempts: a wrong PLAIN password is tried once or twice, not
/// retried in a loop (nor in the background after the error).
#[tokio::test]
async fn a_wrong_plain_password_is_tried_a_few_times_at_most() {
    let g = mtls_plain_gateway("carol", "carol-secret");
    let topic = g.new_topic("sec-wrong", 1);
    let cfg = join(&[tls(), client_cert(), sasl("PLAIN", "carol", "wrong-password")]);
    for (role, e, took) in refusals(&g.addr(), &topic, &cfg).await {
        assert_authentication_failed(role, &e, took);
        if let wit::Error::Remote(r) = &e {
            assert!(
                r.message
                    .contains(integration_tests::gateway::PLAIN_FAILURE_MESSAGE),
                "{role}: the broker's message is kept: {}",
                r.message
            );
        }
    }
    // Nothing keeps trying behind the errors.
    let failed = g.failed_authentications();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(g.failed_authentications(), failed, "attempts after the errors");
    assert!(failed <= 4, "{failed} attempts for two opens: a retry storm");
    assert_eq!(g.authentications(), 0);
}

/// A TLS nisshi presenting `server`; the connector trusting the test CA: each role's error,
/// which must be the `tls` error naming the broker and a reason containing `why`.
async fn assert_tls_refusal(server: &Pem, why: &str) {
    let b = tls_broker(server);
    for (role, e, took) in refusals(&b.addr(), b.topic(0), &tls()).await {
        let m = tls_message(&e).unwrap_or_else(|| panic!("{role}: not a tls error: {e:?}"));
        assert!(m.contains(&b.addr()), "{role}: the broker is named: {m}");
        assert!(contains_ci(&m, why), "{role}: the reason ({why}) is named: {m}");
        assert!(took < REQUEST_DEADLINE, "{role}: refused after {took:?}");
    }
}

#[tokio::test]
async fn a_certificate_of_an_unknown_ca_is_a_tls_error() {
    assert_tls_refusal(&certs::pki().other_server, "issuer").await;
}

#[tokio::test]
async fn an_expired_certificate_is_a_tls_error() {
    assert_tls_refusal(&certs::pki().expired, "expired").await;
}

/// A certificate for `localhost` only, the broker reached (and advertised) as 127.0.0.1.
#[tokio::test]
async fn a_certificate_for_another_name_is_a_tls_error() {
    assert_tls_refusal(&certs::pki().wrong_name, "name").await;
}

/// A client without a certificate where one is required: refused (the `tls` error, or a
/// connection error: with TLS 1.3 the refusal comes after the client's handshake is done),
/// naming the broker, in time; nothing retries it in a loop.
#[tokio::test]
async fn a_missing_client_certificate_is_refused_naming_the_broker() {
    let g = mtls_plain_gateway("carol", "carol-secret");
    let topic = g.new_topic("sec-nocert", 1);
    let cfg = join(&[tls(), sasl("PLAIN", "carol", "carol-secret")]);
    for (role, e, took) in refusals(&g.addr(), &topic, &cfg).await {
        eprintln!("no client certificate, {role}, after {took:?}: {e:?}");
        let m = match (&e, tls_message(&e)) {
            (_, Some(m)) => m,
            (wit::Error::Connection(m), None) => m.clone(),
            (other, None) => panic!("{role}: neither a tls nor a connection error: {other:?}"),
        };
        assert!(m.contains(&g.addr()), "{role}: the broker is named: {m}");
        assert!(took < REQUEST_DEADLINE, "{role}: refused after {took:?}");
    }
    assert!(g.tls_failures() >= 2, "{} refused handshakes", g.tls_failures());
    assert_eq!(g.authentications(), 0);
}

/// An error that says TLS: the `tls` error, or a connection error mentioning it.
fn assert_says_tls(role: &str, e: &wit::Error, took: Duration) {
    let m = match (e, tls_message(e)) {
        (_, Some(m)) => m,
        (wit::Error::Connection(m), None) => m.clone(),
        (other, None) => panic!("{role}: neither a connection nor a tls error: {other:?}"),
    };
    assert!(contains_ci(&m, "TLS"), "{role}: does not mention TLS: {m}");
    assert!(
        took < REQUEST_DEADLINE + Duration::from_secs(5),
        "{role}: took {took:?}: {m}"
    );
}

#[tokio::test]
async fn plaintext_against_a_tls_listener_fails_in_time_saying_tls() {
    let b = tls_broker(&certs::pki().server);
    for (role, e, took) in refusals(&b.addr(), b.topic(0), &Config::new()).await {
        eprintln!("plaintext against TLS, {role}, after {took:?}: {e:?}");
        assert_says_tls(role, &e, took);
    }
}

#[tokio::test]
async fn tls_against_a_plaintext_listener_fails_in_time_saying_tls() {
    let topic = new_topic("sec-plain-listener", 1);
    for (role, e, took) in refusals(&broker(), &topic, &tls()).await {
        eprintln!("TLS against plaintext, {role}, after {took:?}: {e:?}");
        assert_says_tls(role, &e, took);
    }
}

// ---------------------------------------------------------------------------------------
// Configuration

/// What every configuration case below starts from.
fn base() -> Config {
    pairs(&[("servers", "127.0.0.1:1"), ("topic", "t")])
}

fn with(extra: &[(&str, &str)]) -> Config {
    let mut c = base();
    c.extend(pairs(extra));
    c
}

async fn validate(role: Role, cfg: &Config) -> Result<(), wit::Error> {
    let mut inst = runtime()
        .instantiate("test/validate", &allow_servers("127.0.0.1:1"), &Limits::default())
        .await
        .expect("instantiate");
    inst.validate(role, cfg)
        .await
        .map_err(|e| guest_error(&e).clone())
}

#[tokio::test]
async fn coherent_security_settings_validate() {
    let pki = certs::pki();
    let cases: Vec<Config> = vec![
        with(&[("tls.enabled", "false")]),
        with(&[("tls.enabled", "true")]),
        with(&[("tls.enabled", "true"), ("caCert", &pki.ca.cert)]),
        with(&[("tls.enabled", "true"), ("insecureSkipVerify", "true")]),
        with(&[
            ("tls.enabled", "true"),
            ("caCert", &pki.ca.cert),
            ("clientCert", &pki.client.cert),
            ("clientKey", &pki.client.key),
        ]),
        with(&[("saslMechanism", "")]),
        join(&[base(), sasl("PLAIN", "u", "p")]),
        join(&[base(), sasl("SCRAM-SHA-256", "u", "p")]),
        join(&[base(), sasl("SCRAM-SHA-512", "u", "p")]),
        join(&[base(), tls(), client_cert(), sasl("PLAIN", "u", "p")]),
    ];
    for cfg in &cases {
        for role in [Role::Source, Role::Destination] {
            if let Err(e) = validate(role, cfg).await {
                panic!("{role:?} refuses {:?}: {e:?}", keys(cfg));
            }
        }
    }
}

fn keys(cfg: &Config) -> Vec<&str> {
    cfg.iter().map(|(k, _)| k.as_str()).collect()
}

#[tokio::test]
async fn incoherent_security_settings_are_invalid_config_naming_the_parameter() {
    let pki = certs::pki();
    let truncated_key = {
        let mut lines: Vec<&str> = pki.client.key.lines().collect();
        lines.remove(1);
        lines.join("\n")
    };
    let broken_base64 = "-----BEGIN CERTIFICATE-----\nMIIB!!!notbase64\n-----END CERTIFICATE-----\n";
    let on = ("tls.enabled", "true");
    let (cert, key) = (pki.client.cert.as_str(), pki.client.key.as_str());
    // (what, settings, the parameters the error may name: where the fault is one of a
    // pair, either of the pair)
    let cases: Vec<(&str, Config, &[&str])> = vec![
        (
            "caCert not PEM",
            with(&[on, ("caCert", "not a certificate")]),
            &["caCert"],
        ),
        (
            "caCert bad base64",
            with(&[on, ("caCert", broken_base64)]),
            &["caCert"],
        ),
        ("caCert a key", with(&[on, ("caCert", key)]), &["caCert"]),
        (
            "clientCert not PEM",
            with(&[on, ("clientCert", "nope"), ("clientKey", key)]),
            &["clientCert"],
        ),
        (
            "clientKey truncated",
            with(&[on, ("clientCert", cert), ("clientKey", &truncated_key)]),
            &["clientKey"],
        ),
        (
            "clientKey of another certificate",
            with(&[on, ("clientCert", cert), ("clientKey", &pki.other_client.key)]),
            &["clientKey", "clientCert"],
        ),
        (
            "clientCert without clientKey",
            with(&[on, ("clientCert", cert)]),
            &["clientKey", "clientCert"],
        ),
        (
            "clientKey without clientCert",
            with(&[on, ("clientKey", key)]),
            &["clientCert", "clientKey"],
        ),
        (
            "saslUsername without saslPassword",
            with(&[("saslMechanism", "PLAIN"), ("saslUsername", "u")]),
            &["saslPassword", "saslUsername"],
        ),
        (
            "saslPassword without saslUsername",
            with(&[("saslMechanism", "SCRAM-SHA-256"), ("saslPassword", "p")]),
            &["saslUsername", "saslPassword"],
        ),
        (
            "saslMechanism without credentials",
            with(&[("saslMechanism", "SCRAM-SHA-512")]),
            &["saslUsername", "saslPassword"],
        ),
        (
            "unknown saslMechanism",
            with(&[
                ("saslMechanism", "GSSAPI"),
                ("saslUsername", "u"),
                ("saslPassword", "p"),
            ]),
            &["saslMechanism"],
        ),
        (
            "saslMechanism misspelt",
            with(&[
                ("saslMechanism", "SCRAM-SHA-1"),
                ("saslUsername", "u"),
                ("saslPassword", "p"),
            ]),
            &["saslMechanism"],
        ),
        (
            "caCert without tls.enabled",
            with(&[("caCert", &pki.ca.cert)]),
            &["caCert"],
        ),
        (
            "caCert with tls.enabled=false",
            with(&[("tls.enabled", "false"), ("caCert", &pki.ca.cert)]),
            &["caCert"],
        ),
        (
            "client certificate without tls.enabled",
            with(&[("clientCert", cert), ("clientKey", key)]),
            &["clientCert", "clientKey"],
        ),
        (
            "insecureSkipVerify without tls.enabled",
            with(&[("insecureSkipVerify", "true")]),
            &["insecureSkipVerify"],
        ),
        (
            "credentials without saslMechanism",
            with(&[("saslUsername", "u"), ("saslPassword", "p")]),
            &["saslUsername", "saslPassword", "saslMechanism"],
        ),
        (
            "tls.enabled not a bool",
            with(&[("tls.enabled", "yes")]),
            &["tls.enabled"],
        ),
        (
            "insecureSkipVerify not a bool",
            with(&[on, ("insecureSkipVerify", "maybe")]),
            &["insecureSkipVerify"],
        ),
    ];
    let secrets: Vec<String> = pem_body_lines(key)
        .into_iter()
        .chain(pem_body_lines(&pki.other_client.key))
        .collect();
    for (what, cfg, named) in &cases {
        for role in [Role::Source, Role::Destination] {
            let e = validate(role, cfg)
                .await
                .err()
                .unwrap_or_else(|| panic!("{what}: {role:?} accepts it"));
            match &e {
                wit::Error::InvalidConfig(c) => {
                    assert!(
                        named.contains(&c.parameter.as_str()),
                        "{what}: {role:?} names {:?} ({}), not one of {named:?}",
                        c.parameter,
                        c.message
                    );
                    for s in &secrets {
                        assert!(
                            !c.message.contains(s.as_str()),
                            "{what}: the key is in the message: {}",
                            c.message
                        );
                    }
                }
                other => panic!("{what}: {role:?}: {other:?}"),
            }
        }
        // Open checks the same before any I/O (nothing listens on 127.0.0.1:1).
        let mut dst = destination(&allow_servers("127.0.0.1:1")).await;
        let err = within(HANG, "open", dst.open(cfg)).await.unwrap_err();
        assert!(
            matches!(guest_error(&err), wit::Error::InvalidConfig(c) if named.contains(&c.parameter.as_str())),
            "{what}: open: {:?}",
            guest_error(&err)
        );
    }
}

/// Every security parameter is in the specification of both roles, and `saslPassword` and
/// `clientKey` (only) are marked sensitive.
#[tokio::test]
async fn the_specification_names_the_security_parameters_and_marks_the_secrets() {
    let mut inst = runtime()
        .instantiate("test/spec", &allow_servers("127.0.0.1:1"), &Limits::default())
        .await
        .expect("instantiate");
    let spec = inst.specify().await.expect("specify");
    for (role, params) in [
        ("source", &spec.source_params),
        ("destination", &spec.destination_params),
    ] {
        let find = |name: &str| {
            params
                .iter()
                .find(|p| p.name == name)
                .unwrap_or_else(|| panic!("{role} lacks {name}"))
        };
        for (name, sensitive) in [
            ("tls.enabled", false),
            ("caCert", false),
            ("clientCert", false),
            ("clientKey", true),
            ("insecureSkipVerify", false),
            ("saslMechanism", false),
            ("saslUsername", false),
            ("saslPassword", true),
        ] {
            let p = find(name);
            let d = format!("{p:?}");
            // The Debug text shows fields as `name: value`.
            assert!(d.contains(&format!("required: {}", p.required)), "{d}");
            assert!(
                d.contains(&format!("sensitive: {sensitive}")),
                "{role} {name}: sensitive should be {sensitive}: {d}"
            );
        }
        for name in ["tls.enabled", "insecureSkipVerify"] {
            let p = find(name);
            assert!(matches!(p.type_, wit::ParameterType::Bool), "{role} {name}");
            assert_eq!(p.default.as_deref(), Some("false"), "{role} {name}");
        }
        let mechanisms = &find("saslMechanism").allowed;
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            assert!(
                mechanisms.iter().any(|a| a == m),
                "{role}: saslMechanism allows {mechanisms:?}"
            );
        }
        // Every other parameter is not sensitive.
        let secret: HashSet<&str> = ["clientKey", "saslPassword"].into();
        for p in params.iter().filter(|p| !secret.contains(p.name.as_str())) {
            assert!(
                format!("{p:?}").contains("sensitive: false"),
                "{role} {}: {p:?}",
                p.name
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Secrets never printed

/// How long one command of the host may take before the test fails: only a hang reaches it.
const CLI_LIMIT: Duration = Duration::from_secs(90);

const SECRET_PASSWORD: &str = "Pw-7f3a9c1e-never-print-me";
const WRONG_PASSWORD: &str = "Pw-0b5d2e88-wrong-and-secret";

fn host() -> Command {
    let mut c = Command::new(host_binary());
    c.arg("--component").arg(component_path());
    c
}

/// `-c key=value` (or `flag`'s) arguments for `cfg`.
fn args(flag: &str, cfg: &Config) -> Vec<String> {
    cfg.iter()
        .flat_map(|(k, v)| [flag.to_string(), format!("{k}={v}")])
        .collect()
}

/// What every command of the secret test printed, to search.
#[derive(Default)]
struct Printed(Vec<(String, String)>);

impl Printed {
    fn run(&mut self, what: &str, cmd: &mut Command, stdin: &str) -> Output {
        let out = output_within(cmd, stdin.as_bytes(), CLI_LIMIT, what);
        self.add(what, &out.stdout, &out.stderr);
        out
    }

    fn add(&mut self, what: &str, stdout: &[u8], stderr: &[u8]) {
        self.0.push((
            what.to_string(),
            format!(
                "--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(stdout),
                String::from_utf8_lossy(stderr)
            ),
        ));
    }

    /// Fails naming every command that printed one of `secrets`.
    fn assert_none_of(&self, secrets: &[String]) {
        let mut leaks = Vec::new();
        for (what, text) in &self.0 {
            for s in secrets {
                if text.contains(s.as_str()) {
                    leaks.push(format!("{what} printed {s:?}:\n{text}"));
                }
            }
        }
        assert!(leaks.is_empty(), "{}", leaks.join("\n\n"));
    }
}

/// A TOML basic string of `s`.
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}

/// `cfg` as the inner part of a TOML inline table (keys quoted: `tls.enabled` is one key).
fn toml_settings(cfg: &Config) -> String {
    cfg.iter()
        .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A pipeline file: `source` to `destination`, both Kafka on `servers` with `settings`. It
/// ends 3 s after the last record (time to scrape its metrics).
fn pipeline_file(name: &str, servers: &str, source: &Config, destination: &Config) -> String {
    format!("[[pipeline]]\nname = \"{name}\"\ntenant = \"t\"\nidle-exit = \"3s\"\n")
        + &allow_line(servers)
        + &kafka_end_at(servers, "source", &toml_settings(source))
        + &kafka_end_at(servers, "destination", &toml_settings(destination))
}

/// A known password and client key through every command of the host that prints: `spec`,
/// `validate`, `write`, `read`, `pipe`, `run` (progress, metrics, summary), and their error
/// paths (a wrong password, invalid configurations): neither the passwords (right or
/// wrong) nor a line of the key's body is ever printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_never_printed() {
    let pki = certs::pki();
    let g = mtls_plain_gateway("frank", SECRET_PASSWORD);
    let servers = g.addr();
    let (t1, t2, t3) = (
        g.new_topic("sec-cli-1", 1),
        g.new_topic("sec-cli-2", 1),
        g.new_topic("sec-cli-3", 1),
    );
    let secure = join(&[tls(), client_cert(), sasl("PLAIN", "frank", SECRET_PASSWORD)]);
    let wrong = join(&[tls(), client_cert(), sasl("PLAIN", "frank", WRONG_PASSWORD)]);
    let mismatched = join(&[
        pairs(&[
            ("tls.enabled", "true"),
            ("clientCert", &pki.other_client.cert),
            ("clientKey", &pki.client.key),
        ]),
        sasl("PLAIN", "frank", SECRET_PASSWORD),
    ]);
    let truncated = {
        let mut lines: Vec<&str> = pki.client.key.lines().collect();
        lines.remove(2);
        let mut c = join(&[tls(), sasl("PLAIN", "frank", SECRET_PASSWORD)]);
        c.extend(pairs(&[
            ("clientCert", &pki.client.cert),
            ("clientKey", &lines.join("\n")),
        ]));
        c
    };
    let at = |topic: &str, cfg: &Config| -> Config {
        join(&[pairs(&[("servers", &servers), ("topic", topic)]), cfg.clone()])
    };
    let mut printed = Printed::default();

    // spec and validate.
    let out = printed.run("spec", host().arg("spec"), "");
    assert!(out.status.success());
    for role in ["source", "destination"] {
        let out = printed.run(
            &format!("validate {role}"),
            host()
                .args(["validate", role])
                .args(args("-c", &at(&t1, &secure))),
            "",
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for (what, cfg) in [("mismatched", &mismatched), ("truncated", &truncated)] {
        let out = printed.run(
            &format!("validate {what} key"),
            host()
                .args(["validate", "destination"])
                .args(args("-c", &at(&t1, cfg))),
            "",
        );
        assert!(!out.status.success(), "validate accepts a {what} key");
    }

    // write, read, pipe.
    let lines: String = (0..5)
        .map(|i| format!("{{\"payload\":{{\"after\":{{\"n\":{i}}}}}}}\n"))
        .collect();
    let out = printed.run(
        "write",
        host().arg("write").args(args("-c", &at(&t1, &secure))),
        &lines,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let from_start = pairs(&[("readFromBeginning", "true")]);
    let out = printed.run(
        "read",
        host()
            .arg("read")
            .args(args("-c", &join(&[at(&t1, &secure), from_start.clone()])))
            .args(["--max", "5"]),
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 5);
    let out = printed.run(
        "pipe",
        host()
            .arg("pipe")
            .args(args("-s", &join(&[at(&t1, &secure), from_start.clone()])))
            .args(args("-d", &at(&t2, &secure)))
            .args(["--max", "5"]),
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Their errors: a wrong password, a key that does not fit.
    let out = printed.run(
        "write, wrong password",
        host().arg("write").args(args("-c", &at(&t3, &wrong))),
        &lines,
    );
    assert!(!out.status.success(), "a write with a wrong password succeeded");
    let out = printed.run(
        "read, wrong password",
        host()
            .arg("read")
            .args(args("-c", &join(&[at(&t1, &wrong), from_start.clone()])))
            .args(["--max", "1"]),
        "",
    );
    assert!(!out.status.success(), "a read with a wrong password succeeded");
    let out = printed.run(
        "pipe, mismatched key",
        host()
            .arg("pipe")
            .args(args("-s", &join(&[at(&t1, &mismatched), from_start.clone()])))
            .args(args("-d", &at(&t2, &secure)))
            .args(["--max", "1"]),
        "",
    );
    assert!(!out.status.success(), "a pipe with a mismatched key succeeded");

    // A pipeline run, with progress every second and metrics.
    let dir = scratch("secrets");
    let source = join(&[
        pairs(&[("topics", &t1), ("readFromBeginning", "true"), ("groupID", &t1)]),
        secure.clone(),
    ]);
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        pipeline_file(
            "mirror",
            &servers,
            &source,
            &join(&[pairs(&[("topic", &t3)]), secure.clone()]),
        ),
    )
    .unwrap();
    let mut host_run = Running::spawn(&mut run_host(&good, &["--metrics", "127.0.0.1:0"]));
    let addr = metrics_addr(&mut host_run, CLI_LIMIT).await;
    let metrics = scrape(&addr).await;
    printed.add("run: metrics", metrics.as_bytes(), b"");
    let (code, stderr) = host_run.finish(CLI_LIMIT).await;
    printed.add("run", b"", stderr.as_bytes());
    assert_eq!(code, 0, "{stderr}");
    assert!(summary(&stderr, "t/mirror").contains("5 written"), "{stderr}");

    // Pipelines that fail: a wrong password, a key that does not fit.
    for (name, cfg) in [("wrong-password", &wrong), ("mismatched-key", &mismatched)] {
        let file = dir.join(format!("{name}.toml"));
        let source = join(&[
            pairs(&[("topics", &t1), ("readFromBeginning", "true")]),
            cfg.clone(),
        ]);
        std::fs::write(
            &file,
            pipeline_file(
                name,
                &servers,
                &source,
                &join(&[pairs(&[("topic", &t3)]), cfg.clone()]),
            ),
        )
        .unwrap();
        let (code, stderr) = Running::spawn(&mut run_host(&file, &[])).finish(CLI_LIMIT).await;
        printed.add(&format!("run {name}"), b"", stderr.as_bytes());
        assert_ne!(code, 0, "the {name} pipeline succeeded: {stderr}");
    }

    let mut secrets: Vec<String> = vec![SECRET_PASSWORD.into(), WRONG_PASSWORD.into()];
    secrets.extend(pki.client.key_body_lines());
    printed.assert_none_of(&secrets);
}

/// The README's example: a pipeline file moving records from one TLS + SASL cluster to
/// another (SCRAM-SHA-256 at one end, SCRAM-SHA-512 at the other), each end with its own
/// credentials, the CA's PEM written into the file as TOML multi-line strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_file_moves_records_between_two_tls_and_sasl_clusters() {
    let (a, b) = (scram_broker(true, 1), scram_broker(true, 1));
    let values: Vec<String> = (0..50).map(|i| format!("across-{i}")).collect();
    let alice = join(&[tls(), sasl("SCRAM-SHA-256", "alice", "alice-secret")]);
    let bob = join(&[tls(), sasl("SCRAM-SHA-512", "bob", "bob-secret")]);
    let mut dst = try_destination(&a.addr(), a.topic(0), &alice).await.unwrap();
    let recs: Vec<Record> = values.iter().map(|v| raw(v)).collect();
    let (n, err) = within(HANG, "write", dst.write(&recs)).await.unwrap();
    assert_eq!((n, err.map(|e| e.to_string())), (50, None));
    dst.teardown().await.unwrap();

    let end = |side: &str, servers: &str, what: &str, mechanism: &str, user: &str, password: &str| {
        format!(
            "[pipeline.{side}]\ntype = \"kafka\"\n[pipeline.{side}.settings]\nservers = \"{servers}\"\n{what}\n\
             \"tls.enabled\" = true\ncaCert = '''\n{ca}'''\nsaslMechanism = \"{mechanism}\"\n\
             saslUsername = \"{user}\"\nsaslPassword = \"{password}\"\n",
            ca = certs::pki().ca.cert,
        )
    };
    let file = scratch("two-clusters").join("pipelines.toml");
    let text = format!(
        "[[pipeline]]\nname = \"across\"\ntenant = \"t\"\nidle-exit = \"3s\"\nallow = [\"{}\", \"{}\"]\n",
        a.addr(),
        b.addr()
    ) + &end(
        "source",
        &a.addr(),
        &format!("topics = \"{}\"\nreadFromBeginning = true", a.topic(0)),
        "SCRAM-SHA-256",
        "alice",
        "alice-secret",
    ) + &end(
        "destination",
        &b.addr(),
        &format!("topic = \"{}\"", b.topic(0)),
        "SCRAM-SHA-512",
        "bob",
        "bob-secret",
    );
    std::fs::write(&file, text).unwrap();
    let (code, stderr) = Running::spawn(&mut run_host(&file, &[])).finish(CLI_LIMIT).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(summary(&stderr, "t/across").contains("50 written"), "{stderr}");
    assert!(!stderr.contains("secret"), "a password was printed: {stderr}");

    let mut src = try_source(&b.addr(), b.topic(0), &bob).await.unwrap();
    let read = read_values(&mut src, 50, Duration::from_secs(30)).await;
    assert_eq!(sorted(read), sorted(values));
    src.teardown().await.unwrap();
}
