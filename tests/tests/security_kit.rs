//! The security test kit proved with librdkafka (confluent-kafka, scripts/interop-setup.sh)
//! and a bare Kafka client, before the connector relies on it: a [`SecureBroker`] takes
//! SCRAM over TLS and plaintext and refuses a wrong password; the test certificates verify
//! (and the broken ones fail) as meant; the [`Gateway`] does PLAIN and mutual TLS, refuses
//! what it must, and expires and re-authenticates sessions (KIP-368).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use integration_tests::certs::{self, Pem, write_pem};
use integration_tests::faults::Proxy;
use integration_tests::gateway::{Gateway, PLAIN_FAILURE_MESSAGE};
use integration_tests::interop::{KRecord, Librdkafka};
use integration_tests::pipelines::scratch;
use integration_tests::secure::{Scram, SecureBroker};
use kafka_protocol::messages::{
    ApiVersionsRequest, MetadataRequest, RequestHeader, ResponseHeader, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

const N: usize = 20;

fn records(tag: &str) -> Vec<KRecord> {
    (0..N)
        .map(|i| KRecord {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(format!("{tag}-{i}").into_bytes()),
            ..KRecord::default()
        })
        .collect()
}

fn values(read: &[KRecord]) -> Vec<String> {
    let mut v: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap_or_default()).unwrap())
        .collect();
    v.sort();
    v
}

fn expected(tag: &str) -> Vec<String> {
    values(&records(tag))
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The test CA in a file, for librdkafka.
fn ca_file(dir: &Path) -> String {
    path(&write_pem(dir, "ca.pem", &certs::pki().ca.cert))
}

/// librdkafka on `addr` with SCRAM `mechanism` as `user`/`password`, over TLS trusting the
/// test CA (from `dir`) when `tls`.
fn scram_client(addr: &str, tls: Option<&Path>, mechanism: Scram, user: &str, password: &str) -> Librdkafka {
    let mut c = Librdkafka::at(addr)
        .set("sasl.mechanisms", mechanism.mechanism())
        .set("sasl.username", user)
        .set("sasl.password", password);
    c = match tls {
        Some(dir) => c
            .set("security.protocol", "SASL_SSL")
            .set("ssl.ca.location", &ca_file(dir)),
        None => c.set("security.protocol", "SASL_PLAINTEXT"),
    };
    c
}

/// Produces and consumes `N` records of `topic` as `client`.
fn round_trip(client: &Librdkafka, topic: &str, tag: &str) {
    client.produce(topic, &records(tag), "none");
    let read = client.consume(topic, N);
    assert_eq!(values(&read), expected(tag), "{tag}");
}

fn scram_broker(tls: bool) -> SecureBroker {
    let b = SecureBroker::with()
        .user("alice", "alice-secret", Scram::Sha256)
        .user("bob", "bob-secret", Scram::Sha512)
        .topic("kit-256", 2)
        .topic("kit-512", 2);
    if tls { b.tls(&certs::pki().server) } else { b }.start()
}

#[test]
fn librdkafka_round_trips_over_sasl_ssl_with_scram_256_and_512() {
    let b = scram_broker(true);
    let dir = b.dir().to_path_buf();
    let alice = scram_client(&b.addr(), Some(&dir), Scram::Sha256, "alice", "alice-secret");
    round_trip(&alice, b.topic(0), "ssl-256");
    let bob = scram_client(&b.addr(), Some(&dir), Scram::Sha512, "bob", "bob-secret");
    round_trip(&bob, b.topic(1), "ssl-512");
}

#[test]
fn librdkafka_round_trips_over_sasl_plaintext() {
    let b = scram_broker(false);
    let alice = scram_client(&b.addr(), None, Scram::Sha256, "alice", "alice-secret");
    round_trip(&alice, b.topic(0), "plain-256");
    let bob = scram_client(&b.addr(), None, Scram::Sha512, "bob", "bob-secret");
    round_trip(&bob, b.topic(1), "plain-512");
}

#[test]
fn librdkafka_round_trips_over_tls_without_authentication() {
    let b = SecureBroker::with()
        .no_authentication()
        .tls(&certs::pki().server)
        .topic("kit-tls", 1)
        .start();
    let client = Librdkafka::at(&b.addr())
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", &ca_file(b.dir()));
    round_trip(&client, b.topic(0), "tls");
    // And that listener takes TLS only.
    let err = Librdkafka::at(&b.addr())
        .fail_fast()
        .try_produce(b.topic(0), &records("plaintext"), "none")
        .expect_err("plaintext against a TLS listener");
    eprintln!("plaintext against TLS: {err}");
}

#[test]
fn a_wrong_scram_password_or_user_is_refused() {
    let b = scram_broker(true);
    let dir = b.dir().to_path_buf();
    for (mechanism, user, password) in [
        (Scram::Sha256, "alice", "not-her-secret"),
        (Scram::Sha512, "bob", "alice-secret"),
        // bob's credential is SCRAM-SHA-512's only.
        (Scram::Sha256, "bob", "bob-secret"),
        (Scram::Sha512, "nobody", "x"),
    ] {
        let client = scram_client(&b.addr(), Some(&dir), mechanism, user, password).fail_fast();
        let err = client
            .try_produce(b.topic(0), &records("refused"), "none")
            .expect_err("a wrong credential is refused");
        assert!(
            err.contains("SASL authentication error") || err.contains("Authentication failed"),
            "{user} with {}: {err}",
            mechanism.mechanism()
        );
    }
}

/// librdkafka against a TLS nisshi with `server`'s certificate, trusting the test CA: the
/// error it reports.
fn tls_failure(server: &Pem) -> String {
    let b = SecureBroker::with()
        .no_authentication()
        .tls(server)
        .topic("kit-bad-cert", 1)
        .start();
    Librdkafka::at(&b.addr())
        .set("security.protocol", "SSL")
        .set("ssl.ca.location", &ca_file(b.dir()))
        .fail_fast()
        .try_produce(b.topic(0), &records("bad-cert"), "none")
        .expect_err("a broker certificate that does not verify")
}

/// librdkafka (OpenSSL) refuses every broken broker certificate (it says no more than
/// "certificate verify failed"; the reasons are the next test's).
#[test]
fn librdkafka_refuses_the_broken_certificates() {
    let pki = certs::pki();
    for (what, server) in [
        ("of an unknown CA", &pki.other_server),
        ("expired", &pki.expired),
        ("for another name", &pki.wrong_name),
    ] {
        let err = tls_failure(server);
        assert!(err.contains("certificate verify failed"), "{what}: {err}");
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// Each broken certificate fails rustls's verification (as the connector's would) for its
/// own reason, with the word the connector's `tls` errors are to carry; the good ones pass,
/// the broker's under its IP address and `localhost`, the client's as a client's.
#[test]
fn the_broken_certificates_fail_verification_for_their_reason() {
    let pki = certs::pki();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(der(&pki.ca.cert)).unwrap();
    let roots = Arc::new(roots);
    let servers = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    let ip = ServerName::try_from("127.0.0.1").unwrap();
    let verify = |pem: &Pem, name: &ServerName<'_>| {
        servers.verify_server_cert(&der(&pem.cert), &[], name, &[], UnixTime::now())
    };
    verify(&pki.server, &ip).expect("the broker's certificate, for 127.0.0.1");
    verify(&pki.server, &ServerName::try_from("localhost").unwrap()).expect("... and localhost");
    verify(&pki.wrong_name, &ServerName::try_from("localhost").unwrap()).expect("localhost's");
    for (what, pem, variant, word) in [
        ("unknown CA", &pki.other_server, "UnknownIssuer", "issuer"),
        ("expired", &pki.expired, "Expired", "expired"),
        ("wrong name", &pki.wrong_name, "NotValidForName", "name"),
    ] {
        let err = verify(pem, &ip).expect_err(what);
        let (debug, shown) = (format!("{err:?}"), err.to_string());
        assert!(debug.contains(variant), "{what}: {debug}");
        assert!(shown.to_lowercase().contains(word), "{what}: {shown}");
    }
    let clients = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .build()
        .unwrap();
    clients
        .verify_client_cert(&der(&pki.client.cert), &[], UnixTime::now())
        .expect("the client certificate");
    let err = clients
        .verify_client_cert(&der(&pki.other_ca_client.cert), &[], UnixTime::now())
        .expect_err("a client certificate of another CA");
    assert!(format!("{err:?}").contains("UnknownIssuer"), "{err:?}");
}

/// librdkafka through a gateway with mutual TLS (the test client certificate, when
/// `client_cert`) and PLAIN as `user`/`password`.
fn gateway_client(
    g: &Gateway,
    dir: &Path,
    client_cert: Option<&Pem>,
    user: &str,
    password: &str,
) -> Librdkafka {
    let mut c = Librdkafka::at(&g.addr())
        .set("security.protocol", "SASL_SSL")
        .set("ssl.ca.location", &ca_file(dir))
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", user)
        .set("sasl.password", password);
    if let Some(pem) = client_cert {
        let (cert, key) = pem.write(dir, "client");
        c = c
            .set("ssl.certificate.location", &path(&cert))
            .set("ssl.key.location", &path(&key));
    }
    c
}

fn mtls_gateway() -> Gateway {
    let pki = certs::pki();
    Gateway::with()
        .tls(&pki.server)
        .client_ca(&pki.ca.cert)
        .plain("carol", "carol-secret")
        .start()
}

#[test]
fn librdkafka_round_trips_through_the_gateway_with_mtls_and_plain() {
    let g = mtls_gateway();
    let dir = scratch("kit-gateway");
    let topic = g.new_topic("kit-gw", 2);
    let client = gateway_client(&g, &dir, Some(&certs::pki().client), "carol", "carol-secret");
    round_trip(&client, &topic, "gateway");
    assert!(
        g.authentications() >= 2,
        "{} authentications",
        g.authentications()
    );
    assert_eq!(
        (
            g.failed_authentications(),
            g.tls_failures(),
            g.unauthenticated_requests()
        ),
        (0, 0, 0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_gateway_refuses_a_client_without_a_good_certificate() {
    let g = mtls_gateway();
    let dir = scratch("kit-gateway-nocert");
    let topic = g.new_topic("kit-gw-nocert", 1);
    let pki = certs::pki();
    for cert in [None, Some(&pki.other_ca_client)] {
        let err = gateway_client(&g, &dir, cert, "carol", "carol-secret")
            .fail_fast()
            .try_produce(&topic, &records("nocert"), "none")
            .expect_err("no client certificate, no connection");
        eprintln!("client certificate {:?}: {err}", cert.map(|_| "of another CA"));
    }
    assert!(g.tls_failures() >= 2, "{} TLS failures", g.tls_failures());
    assert_eq!(g.authentications(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_gateway_refuses_a_wrong_plain_password() {
    let g = mtls_gateway();
    let dir = scratch("kit-gateway-wrong");
    let topic = g.new_topic("kit-gw-wrong", 1);
    let err = gateway_client(&g, &dir, Some(&certs::pki().client), "carol", "wrong")
        .fail_fast()
        .try_produce(&topic, &records("wrong"), "none")
        .expect_err("a wrong password is refused");
    assert!(err.contains(PLAIN_FAILURE_MESSAGE), "{err}");
    assert!(g.failed_authentications() >= 1);
    assert_eq!(g.authentications(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

/// A bare Kafka client on one plaintext connection, one request at a time.
struct Bare {
    s: TcpStream,
    correlation: i32,
}

impl Bare {
    fn connect(addr: &str) -> Bare {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Bare { s, correlation: 0 }
    }

    fn send<R: Request>(&mut self, req: &R, version: i16) {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("kit")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header.encode(&mut buf, R::header_version(version)).unwrap();
        req.encode(&mut buf, version).unwrap();
        let len = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        // A closed connection shows in the answer that does not come.
        let _ = self.s.write_all(&buf);
    }

    /// The answer to the request just sent, or `None` when the connection closed.
    fn receive<R: Request>(&mut self, version: i16) -> Option<R::Response> {
        let mut len = [0u8; 4];
        match self.s.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("neither an answer nor the end of the connection within 10 s")
            }
            Err(_) => return None,
        }
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut frame).expect("a whole answer");
        let mut buf = Bytes::from(frame);
        let header =
            ResponseHeader::decode(&mut buf, <R::Response as HeaderVersion>::header_version(version))
                .unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        Some(R::Response::decode(&mut buf, version).expect("an answer that decodes"))
    }

    fn call<R: Request>(&mut self, req: &R, version: i16) -> Option<R::Response> {
        self.send(req, version);
        self.receive::<R>(version)
    }

    /// SaslHandshake v1 + SaslAuthenticate v1 with a PLAIN token: the error code and the
    /// session lifetime answered.
    fn plain(&mut self, user: &str, password: &str) -> (i16, i64) {
        let hs = self
            .call(
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN")),
                1,
            )
            .expect("a handshake answer");
        assert_eq!(hs.error_code, 0);
        let token = format!("\0{user}\0{password}");
        let auth = self
            .call(
                &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token)),
                1,
            )
            .expect("an authentication answer");
        (auth.error_code, auth.session_lifetime_ms)
    }

    /// A Metadata request: whether it was answered (else the connection closed).
    fn metadata(&mut self) -> bool {
        self.call(&MetadataRequest::default().with_topics(None), 4)
            .is_some()
    }
}

/// The gateway's SASL as the protocol says: ApiVersions (answered by nisshi) names the SASL
/// APIs; nothing but SASL goes before authentication; sessions get the lifetime set, expire
/// (the next request closes the connection) and are renewed by re-authenticating.
#[test]
fn the_gateway_expires_and_renews_sessions() {
    let lifetime = Duration::from_millis(1500);
    let g = Gateway::with()
        .plain("dave", "dave-secret")
        .session_lifetime(lifetime)
        .start();

    let mut c = Bare::connect(&g.addr());
    let versions = c
        .call(&ApiVersionsRequest::default(), 0)
        .expect("ApiVersions before authentication");
    for key in [17, 36] {
        assert!(
            versions.api_keys.iter().any(|k| k.api_key == key),
            "ApiVersions lacks {key}"
        );
    }
    assert_eq!(c.plain("dave", "dave-secret"), (0, lifetime.as_millis() as i64));
    assert!(c.metadata());
    // Renewed before it ends, the session goes on past its first lifetime.
    std::thread::sleep(lifetime / 2);
    assert_eq!(c.plain("dave", "dave-secret"), (0, lifetime.as_millis() as i64));
    std::thread::sleep(lifetime * 3 / 4);
    assert!(
        c.metadata(),
        "a renewed session lasts a lifetime from its renewal"
    );
    assert_eq!(g.reauthentications(), 1);
    // Not renewed, it ends: the next request closes the connection.
    std::thread::sleep(lifetime);
    assert!(!c.metadata(), "an expired session's connection closes");
    assert_eq!(g.sessions_expired(), 1);

    // Nothing but SASL before authentication.
    let mut c = Bare::connect(&g.addr());
    assert!(
        !c.metadata(),
        "a request before authentication closes the connection"
    );
    assert_eq!(g.unauthenticated_requests(), 1);
    // A wrong password: error 58, then the connection closes.
    let mut c = Bare::connect(&g.addr());
    assert_eq!(c.plain("dave", "wrong").0, 58);
    assert!(!c.metadata());
    assert_eq!((g.authentications(), g.failed_authentications()), (1, 1));
}

/// A gateway without SASL or TLS forwards everything: librdkafka round-trips through it.
#[test]
fn a_bare_gateway_forwards_everything() {
    let g = Gateway::with().start();
    let topic = g.new_topic("kit-bare", 2);
    round_trip(&Librdkafka::at(&g.addr()), &topic, "bare");
    assert!(
        g.accepted() >= 2,
        "bootstrap and broker connections: {}",
        g.accepted()
    );
}

/// A real KIP-368 client through the gateway: a librdkafka consumer waits for records
/// produced in three batches over more than five seconds of two-second sessions; it renews
/// its sessions (none expires) and reads them all.
#[test]
fn librdkafka_renews_its_sessions_through_the_gateway() {
    let g = Gateway::with()
        .plain("gina", "gina-secret")
        .session_lifetime(Duration::from_secs(2))
        .start();
    let topic = g.new_topic("kit-reauth", 1);
    let client = Librdkafka::at(&g.addr())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", "PLAIN")
        .set("sasl.username", "gina")
        .set("sasl.password", "gina-secret");
    let reader = {
        let (client, topic) = (client.clone(), topic.clone());
        std::thread::spawn(move || client.consume(&topic, 3 * N))
    };
    for batch in ["a", "b", "c"] {
        std::thread::sleep(Duration::from_millis(2500));
        client.produce(&topic, &records(batch), "none");
    }
    let read = reader.join().expect("the consumer");
    let mut want = [expected("a"), expected("b"), expected("c")].concat();
    want.sort();
    assert_eq!(values(&read), want);
    eprintln!(
        "{} connections, {} authentications, {} re-authentications",
        g.accepted(),
        g.authentications(),
        g.reauthentications()
    );
    assert!(g.reauthentications() > 0, "librdkafka never re-authenticated");
    assert_eq!(
        g.sessions_expired(),
        0,
        "{} re-authentications",
        g.reauthentications()
    );
}

/// What the connector must make of nisshi's refusal: a wrong SCRAM proof is answered with
/// error code 0 (not 58) and `e=invalid-proof` in the server's final message (RFC 5802).
/// Seen through a proxy on the bootstrap connection, where librdkafka authenticates first.
#[test]
fn nisshi_answers_a_wrong_scram_proof_with_code_0_and_invalid_proof() {
    let b = scram_broker(false);
    let proxy = Proxy::start(b.socket_addr()).expect("a proxy");
    let answers = Arc::new(Mutex::new(Vec::new()));
    let seen = answers.clone();
    proxy.corrupt_responses(move |api_key, frame| {
        if api_key == 36 {
            seen.lock().unwrap().push(frame.to_vec());
        }
    });
    let client = Librdkafka::at(&proxy.addr().to_string())
        .set("security.protocol", "SASL_PLAINTEXT")
        .set("sasl.mechanisms", Scram::Sha256.mechanism())
        .set("sasl.username", "alice")
        .set("sasl.password", "not-her-secret")
        .fail_fast();
    let err = client
        .try_produce(b.topic(0), &records("proof"), "none")
        .expect_err("a wrong password");
    assert!(err.contains("invalid-proof"), "{err}");
    let answers = answers.lock().unwrap();
    // The client-first and client-final answers; the last one refuses.
    let last = answers.last().expect("SaslAuthenticate answers");
    let text = String::from_utf8_lossy(last);
    assert!(text.contains("e=invalid-proof"), "{text:?}");
    // SaslAuthenticate v0/v1 (what librdkafka sends): correlation id, then the error code;
    // v2 has a byte of tagged fields between them: the code is 0 either way, never 58.
    let (v1, v2) = (
        i16::from_be_bytes([last[4], last[5]]),
        i16::from_be_bytes([last[5], last[6]]),
    );
    assert!(v1 == 0 && v2 != 58, "{last:x?}");
}
