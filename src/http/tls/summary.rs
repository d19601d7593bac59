//! What the log says about a certificate: its subject, when it expires, and its SHA-256
//! fingerprint (as `openssl x509 -noout -fingerprint -sha256` prints it, without colons).
//! A few fields are read from the DER by hand; nothing here decides whether the
//! certificate is used, so a field that does not parse is left out.

use sha2::{Digest as _, Sha256};

/// The certificate served, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The subject's attributes as `CN=…, O=…`; empty if it has none this reads.
    pub subject: String,
    /// `notAfter` in Unix seconds, if it parses.
    pub not_after: Option<u64>,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
}

impl CertSummary {
    pub fn of(der: &[u8]) -> Self {
        let fields = tbs_fields(der);
        Self {
            subject: fields.as_ref().map(|f| name(f.subject)).unwrap_or_default(),
            not_after: fields.and_then(|f| time(f.not_after)),
            sha256: hex::encode(Sha256::digest(der)),
        }
    }

    /// `not_after` as RFC 3339, or `unknown`.
    pub fn not_after_text(&self) -> String {
        self.not_after
            .map(crate::time::rfc3339)
            .unwrap_or_else(|| "unknown".into())
    }
}

/// One DER element: tag, contents, and what follows it.
pub(super) fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

struct TbsFields<'a> {
    not_after: (u8, &'a [u8]),
    subject: &'a [u8],
}

/// `Certificate.tbsCertificate`: version, serial, signature, issuer, validity, subject.
fn tbs_fields(der: &[u8]) -> Option<TbsFields<'_>> {
    let (SEQUENCE, cert, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let (tag, _, mut rest) = element(tbs)?;
    if tag == 0xa0 {
        // [0] EXPLICIT version; the serial number follows.
        (_, _, rest) = element(rest)?;
    }
    let (_signature, _, rest) = element(rest)?;
    let (_issuer, _, rest) = element(rest)?;
    let (SEQUENCE, validity, rest) = element(rest)? else {
        return None;
    };
    let (_, _, after_not_before) = element(validity)?;
    let (time_tag, not_after, _) = element(after_not_before)?;
    let (SEQUENCE, subject, _) = element(rest)? else {
        return None;
    };
    Some(TbsFields {
        not_after: (time_tag, not_after),
        subject,
    })
}

/// A `Name` as `CN=…, O=…`, the attributes this knows in their order.
fn name(mut rdns: &[u8]) -> String {
    let mut parts = Vec::new();
    while let Some((SET, mut set, rest)) = element(rdns) {
        rdns = rest;
        while let Some((SEQUENCE, attribute, next)) = element(set) {
            set = next;
            let Some((0x06, oid, value)) = element(attribute) else {
                continue;
            };
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x07] => "L",
                [0x55, 0x04, 0x08] => "ST",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                _ => continue,
            };
            // UTF8String, PrintableString, IA5String; other string types are skipped.
            if let Some((0x0c | 0x13 | 0x16, text, _)) = element(value) {
                let text: String = String::from_utf8_lossy(text)
                    .chars()
                    .filter(|c| !c.is_control())
                    .collect();
                parts.push(format!("{label}={text}"));
            }
        }
    }
    parts.join(", ")
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) in Unix seconds.
fn time((tag, text): (u8, &[u8])) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    let full = match (tag, digits.len()) {
        (0x17, 12) => {
            let yy: u32 = digits.get(..2)?.parse().ok()?;
            let century = if yy >= 50 { "19" } else { "20" };
            format!("{century}{digits}")
        }
        (0x18, 14) => digits.to_string(),
        _ => return None,
    };
    if !full.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &full[..4],
        &full[4..6],
        &full[6..8],
        &full[8..10],
        &full[10..12],
        &full[12..14]
    );
    crate::time::parse_rfc3339(&rfc3339)
}
