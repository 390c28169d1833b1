//! The device's inference engine: the model manifest, the ONNX runtime (tract, in process,
//! optimised once at start-up) and, growing with issue 4, image decoding and quality checks.
//! **This crate knows nothing of HTTP, Raft or storage.**

pub mod decode;
pub mod manifest;
pub mod model;
pub mod pool;
pub mod quality;

pub use manifest::{Label, Manifest};
pub use model::{Model, ModelError, Prediction};
