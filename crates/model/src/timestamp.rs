//! Timestamps on the wire: the model's `timestampFormat: iso8601`, i.e. RFC 3339 in UTC.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Renders a time as the model's iso8601 timestamp, in UTC with millisecond precision
/// (`2024-06-01T12:00:00.123Z`), which botocore and aws-sdk-rust both parse.
pub fn format(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let ms = at.millisecond();
    let at = at.replace_nanosecond(ms as u32 * 1_000_000).unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// Parses a request timestamp: an RFC 3339 string, or epoch seconds (what some clients send).
pub fn parse(value: &serde_json::Value) -> Option<OffsetDateTime> {
    match value {
        serde_json::Value::String(text) => OffsetDateTime::parse(text, &Rfc3339).ok(),
        serde_json::Value::Number(n) => {
            let seconds = n.as_f64()?;
            if !seconds.is_finite() {
                return None;
            }
            OffsetDateTime::from_unix_timestamp_nanos((seconds * 1e9) as i128).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_with_milliseconds() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_717_243_200_123_456_789).unwrap();
        assert_eq!(format(at), "2024-06-01T12:00:00.123Z");
    }

    #[test]
    fn parses_strings_and_numbers() {
        let at = parse(&serde_json::json!("2024-06-01T12:00:00Z")).unwrap();
        assert_eq!(at.unix_timestamp(), 1_717_243_200);
        assert_eq!(parse(&serde_json::json!(1_717_243_200)).unwrap(), at);
        assert!(parse(&serde_json::json!("yesterday")).is_none());
        assert!(parse(&serde_json::json!(true)).is_none());
    }
}
