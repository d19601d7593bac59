use super::*;

#[test]
fn http_dates_parse() {
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(784_111_777)
    );
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    assert_eq!(parse_http_date("yesterday"), None);
}

#[test]
fn ice_servers_are_checked() {
    let good = serde_json::json!({"ice_servers": [
        {"urls": ["stun:1.2.3.4:3478"]},
        {"urls": ["turn:1.2.3.4:3478"], "username": "u", "credential": "c"}
    ]});
    assert_eq!(check_ice_servers(&good), Ok(2));
    let bad = serde_json::json!({"ice_servers": [{"urls": ["turn:1.2.3.4"]}]});
    assert!(check_ice_servers(&bad).is_err());
    let bad = serde_json::json!({"ice_servers": [{"urls": ["http://x"]}]});
    assert!(check_ice_servers(&bad).is_err());
}
