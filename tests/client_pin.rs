//! The client's server-identity pin cannot be bypassed: a document that keeps the pinned
//! key in `device_ca_public` but is signed by another key (named in
//! `post_quantum.signature_public_hex`) over the attacker's own Noise keys is refused,
//! by `verify_server_info` and by `connect` alike.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use common::{Daemon, client, runtime};
use commucat::client::connect::{ConnectError, ConnectOptions, connect};
use commucat::client::http::{ClientError, IdentityError, Rejected, verify_server_info};
use commucat::discovery::ServerInfo;
use commucat::keys::IdentityKeys;
use commucat::keys::bundle::sign_hex;

/// What an attacker on the path serves: the real document with its own Noise key and
/// ML-DSA key swapped in, re-signed, and the real identity left in `device_ca_public`.
fn forged(real: &ServerInfo) -> ServerInfo {
    let attacker = IdentityKeys::from_seed(&[0xA7; 32]);
    let mut doc = real.clone();
    for key in &mut doc.noise_keys {
        key.public = hex::encode([0x55; 32]);
    }
    doc.noise_public = hex::encode([0x55; 32]);
    doc.post_quantum.signature_public_hex = attacker.public_hex.clone();
    let text = doc.key_bundle_text();
    doc.post_quantum.key_bundle_signature_hex = sign_hex(&attacker.signing, text.as_bytes());
    doc
}

fn real_document(d: &Daemon) -> ServerInfo {
    runtime().block_on(async {
        client()
            .get(d.url("/api/server-info"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

#[test]
fn a_document_signed_by_another_key_is_refused_even_with_the_pinned_key_shown() {
    let d = Daemon::start("");
    let real = real_document(&d);
    let pin = real.device_ca_public.clone();
    assert_eq!(verify_server_info(&real, Some(&pin)), Ok(()));

    let forged = forged(&real);
    assert_eq!(
        forged.device_ca_public, pin,
        "the forgery shows the pinned key"
    );
    assert_eq!(
        verify_server_info(&forged, Some(&pin)),
        Err(Rejected::Identity(IdentityError::FieldsDiffer))
    );
    assert_eq!(
        verify_server_info(&forged, None),
        Err(Rejected::Identity(IdentityError::FieldsDiffer)),
        "without a pin the two fields must still agree"
    );

    // Both fields made to name the attacker: self-consistent, but not the pinned key.
    let mut consistent = forged.clone();
    consistent.device_ca_public = consistent.post_quantum.signature_public_hex.clone();
    assert_eq!(verify_server_info(&consistent, None), Ok(()));
    assert_eq!(
        verify_server_info(&consistent, Some(&pin)),
        Err(Rejected::Identity(IdentityError::NotPinned))
    );
}

#[test]
fn connect_refuses_a_forged_document_before_any_handshake() {
    let d = Daemon::start("");
    let real = real_document(&d);
    let pin = real.device_ca_public.clone();
    let body = serde_json::to_vec(&forged(&real)).unwrap();
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().route(
            "/api/server-info",
            axum::routing::get(move || {
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let options = ConnectOptions {
            server_identity: Some(pin),
            ..ConnectOptions::default()
        };
        let result = connect(&base, options).await;
        server.abort();
        match result {
            Err(ConnectError::Http(ClientError::Identity {
                reason: IdentityError::FieldsDiffer,
                ..
            })) => {}
            Err(e) => panic!("refused for the wrong reason: {e}"),
            Ok(_) => panic!("a forged document was accepted"),
        }
    });
}
