use std::path::PathBuf;

use base64::Engine as _;
use rcgen::{CertificateParams, DnType, KeyPair};

use super::*;

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn self_signed() -> rcgen::CertifiedKey<KeyPair> {
    rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

#[test]
fn loads_a_pkcs8_key_and_offers_h2_then_http11() {
    let files = Files::new();
    let ck = self_signed();
    let cert = files.write("cert.pem", &ck.cert.pem());
    let key = files.write("key.pem", &ck.signing_key.serialize_pem());
    let tls = ServerTls::load(&cert, &key).unwrap();
    let config = tls.config();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert_eq!(tls.summary().subject, "CN=rcgen self signed cert");
    assert_eq!(tls.summary().not_after_text(), "4096-01-01T00:00:00Z");
    assert_eq!(
        tls.summary().sha256,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(ck.cert.der()))
    );
}

#[test]
fn loads_a_sec1_key_and_a_chain() {
    let files = Files::new();
    let ck = self_signed();
    // PKCS#8 PrivateKeyInfo ::= SEQUENCE { version, algorithm, privateKey OCTET STRING };
    // the OCTET STRING holds the SEC1 ECPrivateKey.
    let pkcs8 = ck.signing_key.serialize_der();
    let (_, info, _) = summary_element(&pkcs8);
    let (_, _, rest) = summary_element(info);
    let (_, _, rest) = summary_element(rest);
    let (tag, sec1, _) = summary_element(rest);
    assert_eq!(tag, 0x04);
    let key = files.write("key.pem", &pem("EC PRIVATE KEY", sec1));
    let other = self_signed();
    let cert = files.write(
        "chain.pem",
        &format!("{}{}", ck.cert.pem(), other.cert.pem()),
    );
    ServerTls::load(&cert, &key).unwrap();
}

fn summary_element(input: &[u8]) -> (u8, &[u8], &[u8]) {
    summary::element(input).unwrap()
}

#[test]
fn errors_name_the_setting_and_the_file() {
    let files = Files::new();
    let ck = self_signed();
    let cert = files.write("cert.pem", &ck.cert.pem());
    let key = files.write("key.pem", &ck.signing_key.serialize_pem());
    let missing = files.dir.path().join("missing.pem");

    let e = ServerTls::load(&missing, &key).unwrap_err();
    assert_eq!(e.key(), "server.tls_cert");
    assert!(e.to_string().contains("missing.pem: no such file"), "{e}");

    let e = ServerTls::load(&cert, &missing).unwrap_err();
    assert_eq!(e.key(), "server.tls_key");
    assert!(e.to_string().contains("no such file"), "{e}");

    let garbage = files.write("garbage.pem", "not a certificate\n");
    let e = ServerTls::load(&garbage, &key).unwrap_err();
    assert!(
        e.to_string().starts_with("server.tls_cert: ")
            && e.to_string().contains("holds no certificate"),
        "{e}"
    );
    let e = ServerTls::load(&cert, &garbage).unwrap_err();
    assert!(e.to_string().contains("holds no private key"), "{e}");

    // PEM whose contents are not a certificate or not a key.
    let bad_cert = files.write("bad-cert.pem", &pem("CERTIFICATE", b"\x30\x03\x02\x01\x00"));
    let e = ServerTls::load(&bad_cert, &key).unwrap_err();
    assert_eq!(e.key(), "server.tls_cert", "{e}");
    let bad_key = files.write("bad-key.pem", &pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00"));
    let e = ServerTls::load(&cert, &bad_key).unwrap_err();
    assert_eq!(e.key(), "server.tls_key", "{e}");
    assert!(e.to_string().contains("not a usable private key"), "{e}");
    let broken = files.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    let e = ServerTls::load(&broken, &key).unwrap_err();
    assert!(e.to_string().contains("not valid PEM"), "{e}");

    let other = self_signed();
    let other_key = files.write("other.pem", &other.signing_key.serialize_pem());
    let e = ServerTls::load(&cert, &other_key).unwrap_err();
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    assert!(e.to_string().starts_with("server.tls_key: "), "{e}");
    assert!(e.to_string().contains("does not match"), "{e}");
}

#[test]
fn a_failed_reload_keeps_the_configuration() {
    let files = Files::new();
    let first = self_signed();
    let cert = files.write("cert.pem", &first.cert.pem());
    let key = files.write("key.pem", &first.signing_key.serialize_pem());
    let tls = ServerTls::load(&cert, &key).unwrap();
    let before = tls.config();

    files.write("key.pem", "garbage");
    let e = tls.reload().unwrap_err();
    assert_eq!(e.key(), "server.tls_key");
    assert!(Arc::ptr_eq(&before, &tls.config()));
    assert_eq!(tls.summary(), CertSummary::of(first.cert.der()));

    let second = self_signed();
    files.write("cert.pem", &second.cert.pem());
    files.write("key.pem", &second.signing_key.serialize_pem());
    let summary = tls.reload().unwrap();
    assert_eq!(summary, CertSummary::of(second.cert.der()));
    assert!(!Arc::ptr_eq(&before, &tls.config()));
    assert_eq!(tls.summary(), summary);
}

#[test]
fn summary_reads_utc_time_and_the_subject() {
    let mut params = CertificateParams::new(vec!["example.org".to_string()]).unwrap();
    params.not_after = rcgen::date_time_ymd(2031, 2, 3);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "example.org");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example\nOrg");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let summary = CertSummary::of(cert.der());
    assert_eq!(summary.subject, "CN=example.org, O=ExampleOrg");
    assert_eq!(summary.not_after_text(), "2031-02-03T00:00:00Z");

    let nothing = CertSummary::of(b"\x30\x00");
    assert_eq!(nothing.subject, "");
    assert_eq!(nothing.not_after, None);
    assert_eq!(nothing.not_after_text(), "unknown");
}
