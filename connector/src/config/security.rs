//! The TLS and SASL parameters, checked together: each bad combination is named by the
//! key to fix, and PEM problems by the key whose text does not parse. No message quotes
//! a secret's value.

use super::*;
use crate::kafka::network::Security;
use crate::kafka::network::tls::{TlsInput, TlsPem, TlsSettings};
use crate::kafka::protocol::sasl::{Credentials, Mechanism, Secret};

pub(super) fn security(v: &Values) -> Result<Security> {
    Ok(Security {
        tls: tls(v)?,
        sasl: sasl(v)?,
    })
}

fn tls(v: &Values) -> Result<Option<TlsSettings>> {
    let ca = v.given_text(CA_CERT);
    let cert = v.given_text(CLIENT_CERT);
    let key = v.given_text(CLIENT_KEY);
    let insecure = v.bool(INSECURE_SKIP_VERIFY)?;
    if !v.bool(TLS_ENABLED)? {
        let tls_only = [
            (CA_CERT, ca.is_some()),
            (CLIENT_CERT, cert.is_some()),
            (CLIENT_KEY, key.is_some()),
        ];
        let given = tls_only
            .into_iter()
            .find(|(_, given)| *given)
            .map(|(name, _)| name);
        if let Some(name) = given.or(insecure.then_some(INSECURE_SKIP_VERIFY)) {
            return Err(Error::config(
                name,
                format!("{name} is only used with {TLS_ENABLED}=true"),
            ));
        }
        return Ok(None);
    }
    let client = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => return Err(Error::config(CLIENT_KEY, "clientCert needs its clientKey")),
        (None, Some(_)) => return Err(Error::config(CLIENT_CERT, "clientKey needs its clientCert")),
        (None, None) => None,
    };
    let pem = TlsPem {
        ca,
        client,
        insecure_skip_verify: insecure,
    };
    TlsSettings::new(pem).map(Some).map_err(|e| {
        let name = match e.input {
            TlsInput::CaCert => CA_CERT,
            TlsInput::ClientCert => CLIENT_CERT,
            TlsInput::ClientKey => CLIENT_KEY,
        };
        Error::config(name, e.message)
    })
}

/// Why these settings let others on the network read the password, if they do: PLAIN
/// sends it as it is, so it needs TLS with a verified broker.
pub(super) fn exposed(security: &Security) -> Option<&'static str> {
    let plain = security
        .sasl
        .as_ref()
        .is_some_and(|c| c.mechanism == Mechanism::Plain);
    match &security.tls {
        _ if !plain => None,
        None => Some("saslMechanism PLAIN without TLS sends the password readably: set tls.enabled=true"),
        Some(tls) if tls.skips_verification() => {
            Some("saslMechanism PLAIN with insecureSkipVerify sends the password to any broker on the path")
        }
        Some(_) => None,
    }
}

fn sasl(v: &Values) -> Result<Option<Credentials>> {
    let username = v.given_exact(SASL_USERNAME);
    let password = v.given_exact(SASL_PASSWORD);
    let mechanism = v.string(SASL_MECHANISM)?;
    if mechanism.is_empty() {
        let given = [
            (SASL_USERNAME, username.is_some()),
            (SASL_PASSWORD, password.is_some()),
        ];
        if let Some((name, _)) = given.into_iter().find(|(_, given)| *given) {
            return Err(Error::config(
                name,
                format!("{name} is only used with a {SASL_MECHANISM}"),
            ));
        }
        return Ok(None);
    }
    let mechanism =
        Mechanism::parse(&mechanism).ok_or_else(|| Error::config(SASL_MECHANISM, "unknown mechanism"))?;
    let username =
        username.ok_or_else(|| Error::config(SASL_USERNAME, "saslMechanism needs a saslUsername"))?;
    let password =
        password.ok_or_else(|| Error::config(SASL_PASSWORD, "saslMechanism needs a saslPassword"))?;
    // PLAIN separates its fields with NUL, and a SCRAM name cannot hold one.
    for (name, value) in [(SASL_USERNAME, username), (SASL_PASSWORD, password)] {
        if value.contains('\0') {
            return Err(Error::config(name, format!("{name} contains a NUL character")));
        }
    }
    Ok(Some(Credentials {
        mechanism,
        username: username.to_string(),
        password: Secret::new(password),
    }))
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    const PASSWORD: &str = " pencil, with spaces ";

    /// A CA's certificate, and a client certificate it signed with that certificate's key.
    fn pems() -> (String, String, String) {
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["client".into()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (ca_pem, cert.pem(), key.serialize_pem())
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<SourceConfig> {
        let mut all = vec![
            ("servers".to_string(), "b:9093".to_string()),
            ("topic".into(), "t".into()),
        ];
        all.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        SourceConfig::parse(&all)
    }

    fn refused(pairs: &[(&str, &str)]) -> (String, String) {
        match parse(pairs) {
            Err(Error::InvalidConfig { parameter, message }) => (parameter, message),
            other => panic!("{pairs:?}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn tls_and_sasl_together_parse_and_keep_the_password_exactly() {
        let (ca, cert, key) = pems();
        let c = parse(&[
            (TLS_ENABLED, "true"),
            (CA_CERT, &ca),
            (CLIENT_CERT, &cert),
            (CLIENT_KEY, &key),
            (SASL_MECHANISM, "SCRAM-SHA-512"),
            (SASL_USERNAME, "alice"),
            (SASL_PASSWORD, PASSWORD),
        ])
        .unwrap();
        let security = &c.client.security;
        assert!(security.tls.is_some());
        let creds = security.sasl.as_ref().unwrap();
        assert_eq!(
            (creds.mechanism, creds.username.as_str()),
            (Mechanism::ScramSha512, "alice")
        );
        assert_eq!(creds.password.expose(), PASSWORD);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("pencil") && !shown.contains(key.lines().nth(1).unwrap()),
            "{shown}"
        );
    }

    #[test]
    fn each_bad_combination_names_the_key_to_fix() {
        let (ca, cert, key) = pems();
        let (_, other_cert, _) = pems();
        let tls = (TLS_ENABLED, "true");
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![(CA_CERT, &ca)], CA_CERT),
            (vec![(INSECURE_SKIP_VERIFY, "true")], INSECURE_SKIP_VERIFY),
            (vec![(CLIENT_KEY, &key)], CLIENT_KEY),
            (vec![tls, (CA_CERT, "not PEM")], CA_CERT),
            (vec![tls, (CLIENT_CERT, &cert)], CLIENT_KEY),
            (vec![tls, (CLIENT_KEY, &key)], CLIENT_CERT),
            (
                vec![tls, (CLIENT_CERT, &other_cert), (CLIENT_KEY, &key)],
                CLIENT_KEY,
            ),
            (
                vec![
                    tls,
                    (CLIENT_CERT, &cert),
                    (
                        CLIENT_KEY,
                        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                    ),
                ],
                CLIENT_KEY,
            ),
            (vec![(SASL_MECHANISM, "scram-sha-256")], SASL_MECHANISM),
            (
                vec![(SASL_MECHANISM, "PLAIN"), (SASL_PASSWORD, PASSWORD)],
                SASL_USERNAME,
            ),
            (
                vec![(SASL_MECHANISM, "PLAIN"), (SASL_USERNAME, "alice")],
                SASL_PASSWORD,
            ),
            (
                vec![(SASL_USERNAME, "alice"), (SASL_PASSWORD, PASSWORD)],
                SASL_USERNAME,
            ),
            (vec![(SASL_PASSWORD, PASSWORD)], SASL_PASSWORD),
            (
                vec![
                    (SASL_MECHANISM, "PLAIN"),
                    (SASL_USERNAME, "a\0b"),
                    (SASL_PASSWORD, PASSWORD),
                ],
                SASL_USERNAME,
            ),
            (
                vec![
                    (SASL_MECHANISM, "PLAIN"),
                    (SASL_USERNAME, "a"),
                    (SASL_PASSWORD, "pencil\0"),
                ],
                SASL_PASSWORD,
            ),
        ];
        for (pairs, key_named) in cases {
            let (parameter, message) = refused(&pairs);
            assert_eq!(parameter, key_named, "{pairs:?}: {message}");
            assert!(
                !message.contains("pencil") && !message.contains("PRIVATE"),
                "{message}"
            );
        }
    }

    #[test]
    fn only_the_password_and_the_key_are_sensitive() {
        let sensitive: Vec<&str> = PARAMS.iter().filter(|p| p.sensitive).map(|p| p.name).collect();
        assert_eq!(sensitive, [CLIENT_KEY, SASL_PASSWORD]);
    }
}
