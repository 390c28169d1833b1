//! The manifest that travels with a model (`manifest.json` beside `model.onnx`): what it is, what
//! it expects as input, and the ICD-11 labels of its outputs.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    /// True for the repository's demonstration model; every report it produces says so.
    pub demonstration: bool,
    pub intended_use: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub min_resolution: Resolution,
    pub labels: Vec<Label>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub layout: String,
    pub color: String,
    /// Pixel values are multiplied by this before normalisation (1/255 maps bytes to [0, 1]).
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolution {
    pub width: u32,
    pub height: u32,
}

/// One output class: an ICD-11 MMS code and what it implies clinically.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    pub code: String,
    pub display: String,
    pub malignant: bool,
    pub urgent_referral: bool,
}

impl Manifest {
    /// Checks what can be checked without the graph.
    pub fn validate(&self) -> Result<(), String> {
        if self.schema_version != 1 {
            return Err(format!("unsupported manifest schema_version {}", self.schema_version));
        }
        if self.input.layout != "NCHW" || self.input.channels != 3 || self.input.color != "RGB" {
            return Err("only RGB NCHW inputs with 3 channels are supported".into());
        }
        if self.input.std.iter().any(|s| *s <= 0.0) || self.input.scale <= 0.0 {
            return Err("input scale and std must be positive".into());
        }
        if self.labels.len() < 2 {
            return Err("a model needs at least two labels".into());
        }
        let mut codes: Vec<&str> = self.labels.iter().map(|l| l.code.as_str()).collect();
        codes.sort_unstable();
        if codes.windows(2).any(|w| w[0] == w[1]) || codes.iter().any(|c| c.trim().is_empty()) {
            return Err("label codes must be unique and non-empty".into());
        }
        if self.output.kind != "softmax" {
            return Err(format!("unsupported output kind {:?}", self.output.kind));
        }
        Ok(())
    }
}
