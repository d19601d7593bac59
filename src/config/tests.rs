use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(text, &[])
}

#[test]
fn empty_config_gives_laptop_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.server.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(c.ice.lite_bind[0].to_string(), "127.0.0.1:3478");
    assert!(c.crypto.pq);
}

#[test]
fn unknown_key_is_named() {
    let e = parse("[server]\nbindd = \"x\"\n").unwrap_err();
    assert!(e.to_string().contains("server"), "{e}");
    assert!(e.to_string().contains("bindd"), "{e}");
}

#[test]
fn bad_bind_names_the_key() {
    let e = parse("[server]\nbind = \"nope\"\n").unwrap_err();
    assert_eq!(e.key, "server.bind");
}

#[test]
fn env_overrides_are_typed() {
    let env = vec![
        ("COMMUCAT_CRYPTO_PQ".to_string(), "false".to_string()),
        ("COMMUCAT_ICE_TURN_TTL".to_string(), "120".to_string()),
        (
            "COMMUCAT_ICE_LITE_BIND".to_string(),
            "127.0.0.1:1,[::1]:2".to_string(),
        ),
        (
            "COMMUCAT_DEVICE_ROTATION_ENABLED".to_string(),
            "true".to_string(),
        ),
        ("COMMUCAT_ADMIN_TOKEN".to_string(), "12345".to_string()),
        (
            "COMMUCAT_LOG_LEVEL".to_string(),
            "info,commucat=debug".to_string(),
        ),
    ];
    let c = Config::from_toml_with_env("", &env).unwrap();
    assert!(!c.crypto.pq);
    assert_eq!(c.ice.turn_ttl, 120);
    assert_eq!(c.ice.lite_bind.len(), 2);
    assert!(c.device_rotation.enabled);
    assert_eq!(c.admin.token.as_deref(), Some("12345"));
    assert!(
        !format!("{c:?}").contains("12345"),
        "secrets are redacted in Debug"
    );
    assert_eq!(c.log.level, "info,commucat=debug");
}

#[test]
fn env_unknown_key_and_bad_type_are_errors() {
    let env = vec![("COMMUCAT_SERVER_BINDX".to_string(), "1".to_string())];
    assert!(Config::from_toml_with_env("", &env).is_err());
    let env = vec![("COMMUCAT_SERVR_BIND".to_string(), "x".to_string())];
    assert_eq!(
        Config::from_toml_with_env("", &env).unwrap_err().key,
        "COMMUCAT_SERVR_BIND"
    );
    let env = vec![("COMMUCAT_CRYPTO_PQ".to_string(), "maybe".to_string())];
    let e = Config::from_toml_with_env("", &env).unwrap_err();
    assert_eq!(e.key, "COMMUCAT_CRYPTO_PQ");
}

#[test]
fn turn_numbered_tables_and_comma_urls() {
    let c = parse(
        "[ice.turn.2]\nurls = \"turn:b.example:3478\"\nsecret = \"s2\"\n\
         [ice.turn.1]\nurls = \"turn:a.example:3478, turns:a.example:5349\"\nsecret = \"s1\"\n",
    )
    .unwrap();
    assert_eq!(c.ice.turn.len(), 2);
    assert_eq!(c.ice.turn[0].urls.len(), 2);
    assert_eq!(c.ice.turn[1].signing_secret(), Some("s2"));
}

#[test]
fn turn_needs_credentials() {
    let e = parse("[[ice.turn]]\nurls = [\"turn:a.example\"]\n").unwrap_err();
    assert_eq!(e.key, "ice.turn[0]");
}

#[test]
fn relations_are_checked() {
    assert_eq!(
        parse("[crypto]\npq = false\nrequire_pq = true\n")
            .unwrap_err()
            .key,
        "crypto.require_pq"
    );
    assert_eq!(
        parse("[ice]\nturn_ttl = 10\n").unwrap_err().key,
        "ice.turn_ttl"
    );
    assert_eq!(
        parse("[ice]\ncredential_secret = \"abcd\"\n")
            .unwrap_err()
            .key,
        "ice.credential_secret"
    );
    assert_eq!(
        parse("[[transport]]\nid = \"a\"\ntransport = \"warp\"\naddress = \"x\"\nport = 1\n")
            .unwrap_err()
            .key,
        "transport[0].transport"
    );
}

#[test]
fn syntax_error_names_the_line() {
    let e = parse("[server]\nbind = \n").unwrap_err();
    assert!(e.key.starts_with("line "), "{e}");
    assert!(!e.to_string().contains('\n'));
}

#[test]
fn public_url_derives_from_bind() {
    let c = parse("").unwrap();
    assert_eq!(
        c.public_url("127.0.0.1:9999".parse().unwrap()),
        "http://127.0.0.1:9999"
    );
}

#[test]
fn session_times_are_bounded() {
    for text in [
        "[session]\nttl_seconds = 9223372036854775807\n",
        "[session]\nttl_seconds = 86401\n",
        "[session]\nttl_seconds = 0\n",
    ] {
        assert_eq!(
            parse(text).unwrap_err().key,
            "session.ttl_seconds",
            "{text}"
        );
    }
    assert_eq!(
        parse("[session]\nkeepalive_interval = 9223372036854775807\n")
            .unwrap_err()
            .key,
        "session.keepalive_interval"
    );
    assert!(parse("[session]\nttl_seconds = 86400\n").is_ok());
}

#[test]
fn tls_cert_and_key_are_given_together() {
    let e = parse("[server]\ntls_cert = \"/etc/commucat/cert.pem\"\n").unwrap_err();
    assert_eq!(e.key, "server.tls_key");
    assert!(e.message.starts_with("missing"), "{e}");
    let e = parse("[server]\ntls_key = \"/etc/commucat/key.pem\"\n").unwrap_err();
    assert_eq!(e.key, "server.tls_cert");
    let e = parse("[server]\ntls_cert = \"\"\ntls_key = \"k.pem\"\n").unwrap_err();
    assert_eq!(e.key, "server.tls_cert");
    let c = parse("[server]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
    assert!(c.server.tls());
    assert!(!parse("").unwrap().server.tls());
}

#[test]
fn tls_files_from_the_environment() {
    let env = vec![
        (
            "COMMUCAT_SERVER_TLS_CERT".to_string(),
            "/run/c.pem".to_string(),
        ),
        (
            "COMMUCAT_SERVER_TLS_KEY".to_string(),
            "/run/k.pem".to_string(),
        ),
    ];
    let c = Config::from_toml_with_env("", &env).unwrap();
    assert_eq!(c.server.tls_cert.as_deref(), Some(Path::new("/run/c.pem")));
    assert_eq!(c.server.tls_key.as_deref(), Some(Path::new("/run/k.pem")));
    let env = vec![(
        "COMMUCAT_SERVER_TLS_KEY".to_string(),
        "/run/k.pem".to_string(),
    )];
    let e = Config::from_toml_with_env("", &env).unwrap_err();
    assert_eq!(e.key, "server.tls_cert");
}

#[test]
fn derived_public_url_is_https_with_tls() {
    let bound: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let plain = parse("").unwrap();
    assert_eq!(plain.public_url(bound), "http://127.0.0.1:8443");
    let tls = parse("[server]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
    assert_eq!(tls.public_url(bound), "https://127.0.0.1:8443");
    let any: SocketAddr = "0.0.0.0:443".parse().unwrap();
    assert_eq!(tls.public_url(any), "https://localhost:443");
}

#[test]
fn a_turn_entry_takes_secret_or_secrets_not_both() {
    let e = parse(
        "[[ice.turn]]\nurls = [\"turn:a.example\"]\nsecret = \"old\"\nsecrets = [\"new\", \"old\"]\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "ice.turn[0].secrets");
    let c =
        parse("[[ice.turn]]\nurls = [\"turn:a.example\"]\nsecrets = [\"new\", \"old\"]\n").unwrap();
    assert_eq!(c.ice.turn[0].signing_secret(), Some("new"));
}

const SECRET64: &str = "0101010101010101010101010101010101010101010101010101010101010101";

#[test]
fn without_a_cluster_section_there_is_no_cluster() {
    assert!(parse("").unwrap().cluster.is_none());
}

#[test]
fn cluster_section_has_defaults_and_checks_its_keys() {
    let c = parse(&format!(
        "[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\nkeys_secret = \"{SECRET64}\"\n"
    ))
    .unwrap();
    let cluster = c.cluster.unwrap();
    assert_eq!(cluster.heartbeat_seconds, 5);
    assert_eq!(cluster.node_ttl_seconds, 15);
    assert_eq!(*cluster.keys_secret_bytes().unwrap(), [1u8; 32]);
    assert!(cluster.resolved_node_id(8080).ends_with("-8080"));

    for (text, key) in [
        (
            format!("[cluster]\nkeys_secret = \"{SECRET64}\"\n"),
            "cluster.redis_url",
        ),
        (
            "[cluster]\nredis_url = \"redis://h\"\n".to_string(),
            "cluster.keys_secret",
        ),
        (
            "[cluster]\nredis_url = \"redis://h\"\nkeys_secret = \"abcd\"\n".to_string(),
            "cluster.keys_secret",
        ),
        (
            format!("[cluster]\nredis_url = \"http://h\"\nkeys_secret = \"{SECRET64}\"\n"),
            "cluster.redis_url",
        ),
        (
            format!(
                "[cluster]\nredis_url = \"redis://h\"\nkeys_secret = \"{SECRET64}\"\nnode_id = \"a b\"\n"
            ),
            "cluster.node_id",
        ),
        (
            format!(
                "[cluster]\nredis_url = \"redis://h\"\nkeys_secret = \"{SECRET64}\"\nheartbeat_seconds = 5\nnode_ttl_seconds = 5\n"
            ),
            "cluster.node_ttl_seconds",
        ),
        (
            format!(
                "[cluster]\nredis_url = \"redis://h\"\nkeys_secret = \"{SECRET64}\"\nheartbeat_seconds = 0\n"
            ),
            "cluster.heartbeat_seconds",
        ),
        (
            format!(
                "[crypto]\nrotation_grace = 20\n[cluster]\nredis_url = \"redis://h\"\nkeys_secret = \"{SECRET64}\"\n"
            ),
            "crypto.rotation_grace",
        ),
        (
            format!(
                "[cluster]\nredis_url = \"redis://h\"\nkeys_secret = \"{SECRET64}\"\nredis_ca_file = \"/ca.pem\"\n"
            ),
            "cluster.redis_ca_file",
        ),
        (
            format!(
                "[cluster]\nredis_url = \"rediss://h#insecure\"\nkeys_secret = \"{SECRET64}\"\n"
            ),
            "cluster.redis_url",
        ),
        (
            format!(
                "[cluster]\nredis_url = \"rediss://h\"\nkeys_secret = \"{SECRET64}\"\nredis_client_key_file = \"/k.pem\"\n"
            ),
            "cluster.redis_client_cert_file",
        ),
    ] {
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
    }
}

#[test]
fn a_rediss_url_takes_its_tls_files() {
    let c = parse(&format!(
        "[cluster]\nredis_url = \"rediss://:pw@redis.internal:6380\"\nkeys_secret = \"{SECRET64}\"\n\
         redis_ca_file = \"/etc/commucat/redis-ca.pem\"\n\
         redis_client_cert_file = \"/etc/commucat/redis-client.pem\"\n\
         redis_client_key_file = \"/etc/commucat/redis-client.key\"\n"
    ))
    .unwrap();
    let cluster = c.cluster.unwrap();
    assert!(cluster.redis_tls());
    assert!(cluster.redis_client_key_file.is_some());
}

#[test]
fn cluster_env_overrides_turn_cluster_mode_on_and_secrets_stay_redacted() {
    let env = vec![
        (
            "COMMUCAT_CLUSTER_REDIS_URL".to_string(),
            "redis://:pw@127.0.0.1:6379".to_string(),
        ),
        (
            "COMMUCAT_CLUSTER_KEYS_SECRET".to_string(),
            SECRET64.to_string(),
        ),
        ("COMMUCAT_CLUSTER_NODE_ID".to_string(), "node-a".to_string()),
        (
            "COMMUCAT_CLUSTER_HEARTBEAT_SECONDS".to_string(),
            "2".to_string(),
        ),
        (
            "COMMUCAT_CLUSTER_NODE_TTL_SECONDS".to_string(),
            "6".to_string(),
        ),
    ];
    let c = Config::from_toml_with_env("", &env).unwrap();
    let cluster = c.cluster.as_ref().unwrap();
    assert_eq!(cluster.node_id.as_deref(), Some("node-a"));
    assert_eq!(
        (cluster.heartbeat_seconds, cluster.node_ttl_seconds),
        (2, 6)
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains(SECRET64) && !shown.contains("pw@"),
        "{shown}"
    );
    let e = Config::from_toml_with_env(
        "",
        &[("COMMUCAT_CLUSTER_NODES".to_string(), "x".to_string())],
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("unknown setting cluster.nodes"),
        "{e}"
    );
}

#[test]
fn the_redis_tls_files_have_env_overrides() {
    let env: Vec<(String, String)> = [
        ("COMMUCAT_CLUSTER_REDIS_URL", "rediss://redis.internal:6380"),
        ("COMMUCAT_CLUSTER_KEYS_SECRET", SECRET64),
        (
            "COMMUCAT_CLUSTER_REDIS_CA_FILE",
            "/run/secrets/redis-ca.pem",
        ),
        (
            "COMMUCAT_CLUSTER_REDIS_CLIENT_CERT_FILE",
            "/run/secrets/client.pem",
        ),
        (
            "COMMUCAT_CLUSTER_REDIS_CLIENT_KEY_FILE",
            "/run/secrets/client.key",
        ),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = Config::from_toml_with_env("", &env).unwrap();
    let cluster = c.cluster.unwrap();
    assert!(cluster.redis_tls());
    assert_eq!(
        cluster.redis_ca_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/redis-ca.pem"))
    );
    assert_eq!(
        cluster.redis_client_key_file.as_deref(),
        Some(std::path::Path::new("/run/secrets/client.key"))
    );
}

#[test]
fn demo_is_on_by_default_and_switched_off_by_file_or_env() {
    assert!(parse("").unwrap().demo.enabled);
    assert!(!parse("[demo]\nenabled = false\n").unwrap().demo.enabled);
    let env = vec![("COMMUCAT_DEMO_ENABLED".to_string(), "false".to_string())];
    assert!(!Config::from_toml_with_env("", &env).unwrap().demo.enabled);
    let env = vec![("COMMUCAT_DEMO_ENABLED".to_string(), "maybe".to_string())];
    let e = Config::from_toml_with_env("", &env).unwrap_err();
    assert_eq!(e.key, "COMMUCAT_DEMO_ENABLED");
    let e = parse("[demo]\nenabled = \"yes\"\n").unwrap_err();
    assert!(e.to_string().contains("demo"), "{e}");
    let e = parse("[demo]\npath = \"/x\"\n").unwrap_err();
    assert!(e.to_string().contains("path"), "{e}");
}
