//! Collateral: the Intel-signed data a quote is verified against (a [`Collateral`] bundle, with
//! its [`TcbInfo`] and [`EnclaveIdentity`]), and where it comes from ([`pccs`]).

mod bundle;
pub mod pccs;
mod tcb_info;

pub use bundle::{format_time, parse_time, Collateral, CollateralError, MAX_BUNDLE_SIZE};
pub use tcb_info::{EnclaveIdentity, IsvLevel, TcbInfo, TcbLevel, TcbStatus, TdxModuleIdentity};
