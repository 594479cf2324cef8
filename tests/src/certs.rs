//! Certificates for the TLS tests, made at run time (rcgen, ECDSA P-256, ring): a test CA,
//! certificates it signs for servers and clients, and the broken ones the error tests
//! need. Everything comes out as PEM text (what the connector takes); [`Pem::write`] and
//! [`write_pem`] put them in files for nisshi and librdkafka, which take paths.
//!
//! ```text
//! let pki = certs::pki();                      // one set per test binary
//! pki.ca.cert                                  // caCert
//! pki.server                                   // 127.0.0.1 and localhost, for a broker
//! pki.client                                   // clientCert / clientKey (mTLS)
//! pki.expired, pki.wrong_name, pki.other_ca    // the failures
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// A certificate and its private key, both PEM (the key PKCS#8, `BEGIN PRIVATE KEY`).
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl Pem {
    /// Writes `<stem>.crt` and `<stem>.key` into `dir`: their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        (
            write_pem(dir, &format!("{stem}.crt"), &self.cert),
            write_pem(dir, &format!("{stem}.key"), &self.key),
        )
    }

    /// The lines of the key's base64 body (what must never be printed).
    pub fn key_body_lines(&self) -> Vec<String> {
        pem_body_lines(&self.key)
    }
}

/// The lines of a PEM text between its BEGIN and END lines.
pub fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .map(String::from)
        .collect()
}

/// Writes `text` to `dir/name` (making `dir`): the file's path.
pub fn write_pem(dir: &Path, name: &str, text: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join(name);
    fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// A certificate authority of the tests' own: a self-signed root that signs the others.
pub struct Ca {
    /// Its certificate, PEM: what a client trusts (`caCert`, `ssl.ca.location`).
    pub cert: String,
    issuer: Issuer<'static, KeyPair>,
}

/// What a certificate is for.
#[derive(Clone, Copy)]
enum Usage {
    Server,
    Client,
}

impl Ca {
    /// A new root CA whose subject is `name`.
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::CommonName, name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "wasm-kafka tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        // Not forever: rustls and OpenSSL check the issuer's validity too.
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2090, 1, 1);
        let cert = params
            .self_signed(&key)
            .expect("a self-signed CA certificate")
            .pem();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names`: IP addresses become IP SANs, the rest DNS names.
    /// Valid from 2020 to 2090.
    pub fn server(&self, names: &[&str]) -> Pem {
        self.sign(names, Usage::Server, (2020, 2090))
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server(&self, names: &[&str]) -> Pem {
        self.sign(names, Usage::Server, (2000, 2001))
    }

    /// A client certificate (mTLS) with common name `name`.
    pub fn client(&self, name: &str) -> Pem {
        self.sign(&[name], Usage::Client, (2020, 2090))
    }

    fn sign(&self, names: &[&str], usage: Usage, (from, to): (i32, i32)) -> Pem {
        let key = KeyPair::generate().expect("a key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("certificate names");
        params.distinguished_name.remove(DnType::CommonName);
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        params.is_ca = IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The certificates the TLS tests use, made once per test binary.
pub struct Pki {
    /// The CA that signed everything below but `other_ca`'s.
    pub ca: Ca,
    /// For a broker on 127.0.0.1 (an IP SAN: brokers are verified under the addresses they
    /// advertise) and `localhost`.
    pub server: Pem,
    /// A client certificate (common name `client`), for mTLS.
    pub client: Pem,
    /// A second client certificate: its key does not match `client`'s certificate.
    pub other_client: Pem,
    /// For 127.0.0.1 and localhost, but expired (2000 to 2001).
    pub expired: Pem,
    /// For `localhost` only: the wrong name for a broker reached as 127.0.0.1.
    pub wrong_name: Pem,
    /// A second CA, unrelated to `ca`.
    pub other_ca: Ca,
    /// For 127.0.0.1 and localhost, signed by `other_ca`: an unknown issuer to whoever
    /// trusts only `ca`.
    pub other_server: Pem,
    /// A client certificate signed by `other_ca`.
    pub other_ca_client: Pem,
}

/// The names a broker's certificate is for.
pub const BROKER_NAMES: &[&str] = &["127.0.0.1", "localhost"];

/// The shared set of test certificates.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = Ca::new("wasm-kafka test CA");
        let other_ca = Ca::new("wasm-kafka unrelated CA");
        Pki {
            server: ca.server(BROKER_NAMES),
            client: ca.client("client"),
            other_client: ca.client("other-client"),
            expired: ca.expired_server(BROKER_NAMES),
            wrong_name: ca.server(&["localhost"]),
            other_server: other_ca.server(BROKER_NAMES),
            other_ca_client: other_ca.client("stranger"),
            ca,
            other_ca,
        }
    })
}
