//! A model loaded once at start-up: the ONNX graph is checked against its manifest, optimised by
//! tract and shared by every worker. A node refuses to start on a model whose manifest and graph
//! disagree.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::manifest::Manifest;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model manifest: {0}")]
    Manifest(String),
    #[error("model graph: {0}")]
    Graph(String),
    #[error("the manifest and the graph disagree: {0}")]
    Mismatch(String),
    #[error("inference failed: {0}")]
    Run(String),
}

type Plan = Arc<TypedRunnableModel>;

/// Class probabilities of one image, in the manifest's label order, summing to 1.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub probabilities: Vec<f32>,
}

pub struct Model {
    pub manifest: Manifest,
    plan: Plan,
}

impl Model {
    /// Loads `dir/manifest.json` and `dir/model.onnx`, validates one against the other, and
    /// optimises the graph for a batch of one image.
    pub fn load(dir: &Path) -> Result<Model, ModelError> {
        let text = std::fs::read_to_string(dir.join("manifest.json"))
            .map_err(|e| ModelError::Manifest(format!("{}: {e}", dir.join("manifest.json").display())))?;
        let onnx = std::fs::read(dir.join("model.onnx"))
            .map_err(|e| ModelError::Graph(format!("{}: {e}", dir.join("model.onnx").display())))?;
        Model::from_parts(&text, &onnx)
    }

    /// The repository's demonstration model, built into the binary so a node runs with no files.
    pub fn embedded_demo() -> Result<Model, ModelError> {
        Model::from_parts(include_str!("../models/demo/manifest.json"), include_bytes!("../models/demo/model.onnx"))
    }

    /// A model from its manifest text and ONNX bytes, validated one against the other.
    pub fn from_parts(manifest_json: &str, onnx: &[u8]) -> Result<Model, ModelError> {
        let manifest: Manifest =
            serde_json::from_str(manifest_json).map_err(|e| ModelError::Manifest(e.to_string()))?;
        manifest.validate().map_err(ModelError::Manifest)?;
        let i = &manifest.input;
        let graph = tract_onnx::onnx()
            .model_for_read(&mut std::io::Cursor::new(onnx))
            .map_err(|e| ModelError::Graph(e.to_string()))?;
        let input_names: Vec<String> = graph
            .input_outlets()
            .map_err(|e| ModelError::Graph(e.to_string()))?
            .iter()
            .map(|o| graph.node(o.node).name.clone())
            .collect();
        if input_names != [i.name.clone()] {
            return Err(ModelError::Mismatch(format!("graph inputs {input_names:?}, manifest input {:?}", i.name)));
        }
        let typed = graph
            .with_input_fact(0, f32::fact([1, i.channels, i.height, i.width]).into())
            .and_then(|m| m.into_optimized())
            .map_err(|e| ModelError::Mismatch(format!("input {}x{}x{}: {e}", i.channels, i.height, i.width)))?;
        let outputs =
            typed.output_fact(0).map_err(|e| ModelError::Graph(e.to_string()))?.shape.as_concrete().map(|s| s.to_vec());
        if outputs != Some(vec![1, manifest.labels.len()]) {
            return Err(ModelError::Mismatch(format!(
                "graph output shape {outputs:?}, manifest has {} labels",
                manifest.labels.len()
            )));
        }
        let plan = typed.into_runnable().map_err(|e| ModelError::Graph(e.to_string()))?;
        let model = Model { manifest, plan };
        model.check_softmax()?;
        Ok(model)
    }

    /// The manifest promises a probability distribution: a graph that emits logits (or anything
    /// else) would be renormalised into meaningless percentages, so it is refused at load.
    fn check_softmax(&self) -> Result<(), ModelError> {
        let i = &self.manifest.input;
        let grey = vec![128u8; i.width * i.height * 3];
        let p = self.predict(&grey)?.probabilities;
        let sum: f32 = p.iter().sum();
        if (sum - 1.0).abs() > 1e-3 || p.iter().any(|v| !(0.0..=1.0).contains(v)) {
            return Err(ModelError::Mismatch(format!(
                "the manifest declares softmax output, but the graph's outputs sum to {sum} on a grey image"
            )));
        }
        Ok(())
    }

    /// Runs the model on one RGB image already resized to the manifest's input size
    /// (`rgb.len() == width * height * 3`, row-major, interleaved).
    pub fn predict(&self, rgb: &[u8]) -> Result<Prediction, ModelError> {
        let i = &self.manifest.input;
        if rgb.len() != i.width * i.height * 3 {
            return Err(ModelError::Run(format!("expected {}x{} RGB pixels", i.width, i.height)));
        }
        let input = tract_ndarray::Array4::from_shape_fn((1, 3, i.height, i.width), |(_, c, y, x)| {
            let v = rgb[(y * i.width + x) * 3 + c] as f32 * i.scale;
            (v - i.mean[c]) / i.std[c]
        });
        let tensor: Tensor = input.into();
        let out = self.plan.run(tvec!(tensor.into())).map_err(|e| ModelError::Run(e.to_string()))?;
        let view = out[0].to_plain_array_view::<f32>().map_err(|e| ModelError::Run(e.to_string()))?;
        let probabilities: Vec<f32> = view.iter().copied().collect();
        Ok(Prediction { probabilities })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package directory at run time: the test binary may be reused by a clone in another
    /// folder (one shared target dir), so the compile-time path could point elsewhere.
    fn package_dir() -> std::path::PathBuf {
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
    }

    fn demo() -> Model {
        Model::load(&package_dir().join("models/demo")).expect("demo model loads")
    }

    #[test]
    fn the_demo_model_is_a_real_network_whose_output_follows_the_image() {
        let m = demo();
        assert!(m.manifest.demonstration);
        let grey = vec![128u8; 64 * 64 * 3];
        let p = m.predict(&grey).unwrap().probabilities;
        assert_eq!(p.len(), m.manifest.labels.len());
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        // Reference from inference/models/demo/README.md (onnxruntime), tolerance 1e-3.
        let reference = [0.0021, 0.0, 0.9951, 0.0002, 0.0025, 0.0, 0.0, 0.0001];
        for (got, want) in p.iter().zip(reference) {
            assert!((got - want).abs() < 1e-3, "{p:?}");
        }
        let stripes: Vec<u8> = (0..64 * 64 * 3).map(|i| if (i / (64 * 3 * 4)) % 2 == 0 { 250 } else { 10 }).collect();
        let q = m.predict(&stripes).unwrap().probabilities;
        let diff: f32 = p.iter().zip(&q).map(|(a, b)| (a - b).abs()).sum();
        assert!(diff > 0.05, "the output does not depend on the image: {p:?} vs {q:?}");
    }

    // traces: R-12
    #[test]
    fn a_manifest_that_disagrees_with_its_graph_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = package_dir().join("models/demo");
        std::fs::copy(src.join("model.onnx"), dir.path().join("model.onnx")).unwrap();
        let mut manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("manifest.json")).unwrap()).unwrap();
        manifest["labels"].as_array_mut().unwrap().pop();
        std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
        assert!(matches!(Model::load(dir.path()), Err(ModelError::Mismatch(_))));
    }
}
