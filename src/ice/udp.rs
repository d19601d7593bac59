//! LOCAL-ONLY interim (not to be committed): replaced by the real UDP layer from branch stun.
use std::net::SocketAddr;
use std::sync::Arc;
pub struct StunServer {
    sockets: Vec<std::net::UdpSocket>,
}
#[derive(Debug)]
pub struct StunBindError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}
impl StunServer {
    pub fn bind(addrs: &[SocketAddr], _n: usize) -> Result<Self, StunBindError> {
        let mut sockets = Vec::new();
        for a in addrs {
            sockets.push(
                std::net::UdpSocket::bind(a)
                    .map_err(|source| StunBindError { addr: *a, source })?,
            );
        }
        Ok(Self { sockets })
    }
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.sockets
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }
}
pub fn register_metrics(_m: &mut crate::metrics::Metrics) {}
pub async fn serve(
    _s: StunServer,
    state: Arc<crate::state::AppState>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    state.set_stun_ready(true);
    let _ = stop.wait_for(|s| *s).await;
}
