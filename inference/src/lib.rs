//! The device's inference engine: the model manifest, the ONNX runtime (tract, in process,
//! optimised once at start-up), safe image decoding, quality checks, the bounded worker pool and
//! the engine that runs one analysis through all of them.
//! **This crate knows nothing of HTTP, Raft or storage.**

pub mod decode;
pub mod domain;
pub mod engine;
pub mod manifest;
pub mod model;
pub mod pool;
pub mod quality;
pub mod synthetic;

pub use engine::{Analysis, AnalysisError, Engine, EngineSettings, UploadedImage};
pub use manifest::{Label, Manifest};
pub use model::{Model, ModelError, Prediction};
