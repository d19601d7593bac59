# CommuCat daemon image.
#
#   docker build -t commucat .
#   docker volume create commucat-state
#   docker run -d --name commucat \
#     -p 8080:8080 -p 3478:3478/udp \
#     -v commucat-state:/var/lib/commucat \
#     -e COMMUCAT_SERVER_DOMAIN=commucat.example.org \
#     -e COMMUCAT_SERVER_PUBLIC_URL=https://commucat.example.org \
#     -e COMMUCAT_ICE_LITE_PUBLIC_ADDRESS=203.0.113.42:3478 \
#     commucat
#
# A configuration file can be mounted read-only at /etc/commucat/commucat.toml (it must
# be readable by uid 10001); the COMMUCAT_* variables below and on `docker run` override it.
# Validate a configuration: docker run --rm -v "$PWD/commucat.toml:/etc/commucat/commucat.toml:ro" commucat check-config

# ---- build ----
FROM rust:1-bookworm AS builder
WORKDIR /src
# The whole context (see .dockerignore): Cargo.toml names benches/ and src/bin/ targets.
COPY . .
RUN cargo build --release --locked --bin commucat --bin commucat-cli \
 && install -D -m 0755 -t /out target/release/commucat target/release/commucat-cli

# ---- runtime ----
FROM debian:bookworm-slim
# ca-certificates: for commucat-cli talking to https:// servers and for TLS in general.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A fixed non-root uid/gid, so that volume ownership is predictable. The keystore
# directory is private to it: the daemon refuses key files readable by others.
RUN groupadd --system --gid 10001 commucat \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/commucat --shell /usr/sbin/nologin commucat \
 && install -d -m 0700 -o 10001 -g 10001 /var/lib/commucat \
 && install -d -m 0755 /etc/commucat

COPY --from=builder /out/commucat /out/commucat-cli /usr/local/bin/

# Listen on every interface inside the container (the built-in defaults are loopback
# only) and keep the keys in the volume. Set COMMUCAT_SERVER_DOMAIN and
# COMMUCAT_SERVER_PUBLIC_URL (or [server] domain/public_url) to what clients use,
# and COMMUCAT_ICE_LITE_PUBLIC_ADDRESS to the host's public IP:3478, otherwise the
# advertised URLs name "localhost" and no ICE-lite candidate is listed.
ENV COMMUCAT_SERVER_BIND=0.0.0.0:8080 \
    COMMUCAT_ICE_LITE_BIND=0.0.0.0:3478 \
    COMMUCAT_SERVER_STATE_DIR=/var/lib/commucat

# HTTP API (server-info, assist, /api/connect, metrics) and the ICE-lite STUN responder.
EXPOSE 8080/tcp 3478/udp

# noise_keys.json, kem.seed, identity.seed, ice.secret: losing them changes the server's
# identity for every client. A new named volume inherits owner 10001 and mode 0700.
VOLUME ["/var/lib/commucat"]

# No HEALTHCHECK: the image carries no HTTP client (no curl). Probe from outside:
# GET /healthz (process alive) and GET /readyz (keys loaded, sockets bound), e.g. as
# Kubernetes liveness/readiness probes or `curl -f http://HOST:8080/readyz`.

USER 10001:10001
# SIGTERM (docker stop) lets in-flight requests finish, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/commucat"]
CMD ["run"]
