//! The documents the daemon publishes: the signed server-info document and the static
//! part of every assist answer. Each is built from the parts it needs (configuration,
//! keys, endpoints, limits), never from the daemon's whole state.

pub mod server_info;
mod static_advice;

pub use server_info::{
    DeviceRotationInfo, EndpointsInfo, LimitsInfo, NoiseKeyInfo, PairingInfo, PostQuantumInfo,
    PresenceInfo, RenderError, ServerInfo, SessionInfo, Sources,
};
pub use static_advice::StaticAdvice;
