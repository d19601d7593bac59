use super::*;
use crate::config::Secret;
use crate::time::unix_now;

const SECRET: &str = "a-jwt-secret-of-some-length-0123456789";
const DEVICE: &str = "ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12ab12";

fn config(required: bool) -> AuthConfig {
    AuthConfig {
        required,
        tokens: vec![Secret::new("static-token-0123456789")],
        tokens_file: None,
        jwt_secrets: vec![
            Secret::new("a-newer-jwt-secret-9876543210"),
            Secret::new(SECRET),
        ],
    }
}

fn jwt(secret: &str, exp: u64, device: Option<&str>) -> String {
    let claims = Claims {
        sub: "alice".into(),
        exp,
        device: device.map(str::to_string),
    };
    issue_token(secret.as_bytes(), &claims).unwrap()
}

#[test]
fn without_a_token_only_optional_access_passes() {
    assert_eq!(
        Authorizer::new(&config(false)).unwrap().authorize(None),
        Ok(Grant::default())
    );
    assert_eq!(
        Authorizer::new(&config(true)).unwrap().authorize(None),
        Err(AuthError::Missing)
    );
}

#[test]
fn static_tokens_match_exactly() {
    let auth = Authorizer::new(&config(true)).unwrap();
    assert!(auth.authorize(Some("static-token-0123456789")).is_ok());
    for wrong in [
        "static-token-012345678",
        "static-token-01234567890",
        "",
        "x",
    ] {
        assert_eq!(
            auth.authorize(Some(wrong)),
            Err(AuthError::Invalid),
            "{wrong:?}"
        );
    }
    assert_eq!(
        auth.authorize(Some(&"a".repeat(MAX_TOKEN_LEN + 1))),
        Err(AuthError::Invalid)
    );
}

#[test]
fn jwts_from_any_configured_key_carry_subject_and_device() {
    let auth = Authorizer::new(&config(true)).unwrap();
    let exp = unix_now() + 600;
    let grant = auth
        .authorize(Some(&jwt(SECRET, exp, Some(&DEVICE.to_uppercase()))))
        .unwrap();
    assert_eq!(grant.subject.as_deref(), Some("alice"));
    assert_eq!(grant.device.as_deref(), Some(DEVICE));
    assert!(grant.admits_device(DEVICE));
    assert!(!grant.admits_device(&"cd".repeat(32)));
    let plain = auth
        .authorize(Some(&jwt("a-newer-jwt-secret-9876543210", exp, None)))
        .unwrap();
    assert!(plain.admits_device(&"cd".repeat(32)));
}

#[test]
fn bad_jwts_are_refused() {
    let auth = Authorizer::new(&config(true)).unwrap();
    let exp = unix_now() + 600;
    assert_eq!(
        auth.authorize(Some(&jwt("another-secret-entirely-0000", exp, None))),
        Err(AuthError::Invalid)
    );
    assert_eq!(
        auth.authorize(Some(&jwt(SECRET, unix_now() - 3600, None))),
        Err(AuthError::Expired)
    );
    assert_eq!(
        auth.authorize(Some(&jwt(SECRET, exp, Some("not-a-device")))),
        Err(AuthError::Invalid)
    );
    // A token without `sub` is refused; so is one with alg none.
    let no_sub = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(auth.authorize(Some(&no_sub)), Err(AuthError::Invalid));
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            format!(r#"{{"sub":"alice","exp":{exp}}}"#)
        )
    );
    assert_eq!(auth.authorize(Some(&unsigned)), Err(AuthError::Invalid));
}

#[test]
fn the_tokens_file_is_read_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "# operators\nfile-token-aaaaaaaaaaaa\n\n").unwrap();
    let mut c = config(true);
    c.tokens_file = Some(path.clone());
    let auth = Authorizer::new(&c).unwrap();
    assert!(auth.authorize(Some("file-token-aaaaaaaaaaaa")).is_ok());
    std::fs::write(&path, "file-token-bbbbbbbbbbbb\n").unwrap();
    assert_eq!(auth.reload().unwrap(), 1);
    assert_eq!(
        auth.authorize(Some("file-token-aaaaaaaaaaaa")),
        Err(AuthError::Invalid)
    );
    assert!(auth.authorize(Some("file-token-bbbbbbbbbbbb")).is_ok());
    // A bad file keeps the tokens in use.
    std::fs::write(&path, "short\n").unwrap();
    let e = auth.reload().unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(auth.authorize(Some("file-token-bbbbbbbbbbbb")).is_ok());
}
