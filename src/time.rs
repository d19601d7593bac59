//! Time as the daemon counts it. Wall-clock time is unix seconds (`u64`), read only
//! through [`unix_now`] and shown as the contract's RFC 3339 timestamps (UTC, whole
//! seconds, `Z`); durations and deadlines use the monotonic `std::time::Instant`
//! (`tokio::time::Instant` only where a tokio timer takes one).

use std::time::{SystemTime, UNIX_EPOCH};

use ::time::OffsetDateTime;
use ::time::format_description::well_known::Rfc3339;

/// Seconds since the Unix epoch now (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2025-10-05T12:00:00Z` for `unix` seconds; clamps to the representable range.
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix).unwrap_or(i64::MAX);
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or_else(|_| {
        OffsetDateTime::from_unix_timestamp(253_402_300_799).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    });
    dt.format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Parses an RFC 3339 timestamp back to unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    u64::try_from(dt.unix_timestamp()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_seconds_with_z() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_759_665_600), "2025-10-05T12:00:00Z");
        assert_eq!(parse_rfc3339("2025-10-05T12:00:00Z"), Some(1_759_665_600));
    }

    #[test]
    fn huge_values_do_not_panic() {
        assert!(rfc3339(u64::MAX).starts_with("9999-12-31"));
    }
}
