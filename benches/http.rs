//! Per-request cost of the HTTP routes, in process (no network), next to a trivial axum
//! handler returning a fixed body of the same size as server-info.
//!
//! `cargo bench --bench http`

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use bytes::Bytes;
use commucat::config::Config;
use commucat::daemon::Daemon;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn daemon_router(rt: &tokio::runtime::Runtime) -> (Router, usize) {
    let dir = std::env::temp_dir().join(format!("commucat-bench-http-{}", std::process::id()));
    let text = format!(
        "[server]\nbind = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[ice]\nlite_bind = \"127.0.0.1:0\"\n\
         [[ice.turn]]\nurls = [\"turn:turn.example.org:3478\", \"turns:turn.example.org:5349\"]\nsecret = \"bench\"\n",
        dir.display()
    );
    let config = Config::from_toml_with_env(&text, &[]).expect("bench config");
    let daemon = rt.block_on(Daemon::start(config)).expect("daemon");
    let size = daemon.state.keys().server_info.len();
    let router = commucat::http::router(daemon.state.clone(), Router::new());
    (router, size)
}

fn call(rt: &tokio::runtime::Runtime, app: &Router, req: Request<Body>) -> usize {
    rt.block_on(async {
        let response = app.clone().oneshot(req).await.expect("infallible");
        assert!(response.status().is_success());
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .len()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (app, size) = daemon_router(&rt);
    let fixed = Bytes::from(vec![b'x'; size]);
    let baseline: Router = Router::new().route(
        "/fixed",
        get(move || {
            let body = fixed.clone();
            async move { body }
        }),
    );
    let baseline = Arc::new(baseline);

    let mut group = c.benchmark_group("http");
    group.bench_function("baseline_fixed_body", |b| {
        b.iter(|| {
            call(
                &rt,
                &baseline,
                Request::get("/fixed").body(Body::empty()).unwrap(),
            )
        })
    });
    group.bench_function("server_info", |b| {
        b.iter(|| {
            call(
                &rt,
                &app,
                Request::get("/api/server-info")
                    .body(Body::empty())
                    .unwrap(),
            )
        })
    });
    group.bench_function("assist_get", |b| {
        b.iter(|| {
            call(
                &rt,
                &app,
                Request::get("/api/p2p/assist").body(Body::empty()).unwrap(),
            )
        })
    });
    let body = r#"{"paths":[{"address":"relay.example.org","port":443,"id":"a","priority":0},{"address":"192.0.2.1","port":443}],"fec":{"mtu":1200,"repair_overhead":0.4},"min_paths":2}"#;
    group.bench_function("assist_post", |b| {
        b.iter(|| {
            let req = Request::post("/api/p2p/assist")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            call(&rt, &app, req)
        })
    });
    group.finish();

    let mut keys = c.benchmark_group("device_key");
    keys.bench_function("x25519_dalek_static_secret", |b| {
        b.iter(|| {
            let secret = x25519_dalek::StaticSecret::random_from_rng(&mut rand::rng());
            x25519_dalek::PublicKey::from(&secret)
        })
    });
    let pool = commucat::keys::device::DeviceKeyPool::default();
    keys.bench_function("batched_pool", |b| b.iter(|| pool.take()));
    keys.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
