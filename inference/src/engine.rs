//! One analysis, end to end and off the async runtime: decode every image safely, assess its
//! quality, run the model on the images that pass, and summarise the class probabilities.
//! **No diagnosis is ever produced from an image that failed the quality gate.**

use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::decode::{self, DecodeError, DecodeLimits};
use crate::manifest::Label;
use crate::model::{Model, ModelError, Prediction};
use crate::pool::{InferencePool, PoolError};
use crate::quality::{self, QualityThresholds, QualityVerdict};

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub decode: DecodeLimits,
    pub quality: QualityThresholds,
    /// Inference worker threads (defaults to the number of cores).
    pub workers: usize,
    /// Analyses that may wait for a worker; beyond this the node sheds load at once.
    pub queue: usize,
    /// Longest side of a stored copy of an image (organisations that opted in).
    pub stored_max_side: u32,
}

impl Default for EngineSettings {
    fn default() -> Self {
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        EngineSettings {
            decode: DecodeLimits::default(),
            quality: QualityThresholds::default(),
            workers,
            queue: workers * 8,
            stored_max_side: 1024,
        }
    }
}

/// An uploaded image as the client declared it.
#[derive(Debug, Clone)]
pub struct UploadedImage {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

#[derive(Debug, Clone)]
pub struct ImageResult {
    pub width: u32,
    pub height: u32,
    pub quality: QualityVerdict,
    /// Present only when the image passed the quality gate.
    pub prediction: Option<Prediction>,
    /// A re-encoded JPEG copy (no metadata), when the caller asked to keep one.
    pub stored_jpeg: Option<Vec<u8>>,
}

/// Time spent in each stage of one analysis, summed over its images.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimings {
    pub queue: Duration,
    pub decode: Duration,
    pub quality: Duration,
    pub model: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone)]
pub struct Analysis {
    pub images: Vec<ImageResult>,
    /// `None` when no image passed the quality gate.
    pub summary: Option<Summary>,
    pub timings: StageTimings,
}

#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// An image broke an input rule; `index` says which.
    #[error("image {index}: {error}")]
    Rejected { index: usize, error: DecodeError },
    #[error("the inference queue is full")]
    Busy,
    #[error("the analysis deadline passed")]
    DeadlineExceeded,
    #[error("the inference workers stopped")]
    Stopped,
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl From<PoolError> for AnalysisError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Busy => AnalysisError::Busy,
            PoolError::DeadlineExceeded => AnalysisError::DeadlineExceeded,
            PoolError::Stopped => AnalysisError::Stopped,
            PoolError::Panicked => AnalysisError::Model(ModelError::Run("the analysis failed unexpectedly".into())),
        }
    }
}

pub struct Engine {
    model: Arc<Model>,
    settings: EngineSettings,
    pool: InferencePool,
}

impl Engine {
    pub fn new(model: Model, settings: EngineSettings) -> Engine {
        let pool = InferencePool::new(settings.workers, settings.queue);
        Engine { model: Arc::new(model), settings, pool }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Whether the queue has room now; a refusal counts as shed load. A full queue lets the API
    /// refuse a request before it spends time reading and decoding its body (the definitive check
    /// is at submission).
    pub fn admits(&self) -> bool {
        let room = self.pool.has_capacity();
        if !room {
            metrics::counter!("dermagate_inference_shed_total").increment(1);
        }
        room
    }

    /// Analyses `images` on the worker pool before `deadline`; refuses at once when the pool's
    /// queue is full.
    pub async fn analyse(
        &self,
        images: Vec<UploadedImage>,
        keep_copies: bool,
        deadline: Instant,
    ) -> Result<Analysis, AnalysisError> {
        let submitted = Instant::now();
        let model = self.model.clone();
        let settings = self.settings.clone();
        let result = self
            .pool
            .run(deadline, move || analyse_now(&model, &settings, &images, keep_copies, submitted, deadline))
            .await;
        let mut analysis = result??;
        analysis.timings.total = submitted.elapsed();
        record_timings(&analysis.timings);
        Ok(analysis)
    }
}

/// The work of one analysis, on a worker thread.
fn analyse_now(
    model: &Model,
    settings: &EngineSettings,
    images: &[UploadedImage],
    keep_copies: bool,
    submitted: Instant,
    deadline: Instant,
) -> Result<Analysis, AnalysisError> {
    let mut timings = StageTimings { queue: submitted.elapsed(), ..Default::default() };
    let mut results = Vec::with_capacity(images.len());
    for (index, upload) in images.iter().enumerate() {
        if Instant::now() > deadline {
            return Err(AnalysisError::DeadlineExceeded);
        }
        let started = Instant::now();
        let rgb = decode::decode(&upload.bytes, &upload.content_type, &settings.decode)
            .map_err(|error| AnalysisError::Rejected { index, error })?;
        timings.decode += started.elapsed();
        results.push(assess_and_predict(model, settings, &rgb, keep_copies, &mut timings)?);
    }
    let predictions: Vec<&Prediction> = results.iter().filter_map(|r| r.prediction.as_ref()).collect();
    let summary = summarise(&model.manifest.labels, &predictions);
    Ok(Analysis { images: results, summary, timings })
}

fn assess_and_predict(
    model: &Model,
    settings: &EngineSettings,
    rgb: &RgbImage,
    keep_copy: bool,
    timings: &mut StageTimings,
) -> Result<ImageResult, AnalysisError> {
    let started = Instant::now();
    let verdict = quality::assess_image(rgb, &settings.quality);
    timings.quality += started.elapsed();
    for check in &verdict.failed_checks {
        metrics::counter!("dermagate_inference_quality_rejections_total", "check" => *check).increment(1);
    }
    let prediction = if verdict.is_valid {
        let started = Instant::now();
        let i = &model.manifest.input;
        let input = decode::to_model_input(rgb, i.width as u32, i.height as u32);
        let p = model.predict(&input)?;
        timings.model += started.elapsed();
        Some(p)
    } else {
        None
    };
    let stored_jpeg = if keep_copy { Some(reencode(rgb, settings.stored_max_side)?) } else { None };
    Ok(ImageResult { width: rgb.width(), height: rgb.height(), quality: verdict, prediction, stored_jpeg })
}

/// A JPEG copy from the decoded pixels only, so nothing of the upload's metadata (EXIF GPS,
/// device ids, ICC comments) survives; scaled down to `max_side` (data minimisation).
pub fn reencode(rgb: &RgbImage, max_side: u32) -> Result<Vec<u8>, AnalysisError> {
    let (w, h) = rgb.dimensions();
    let scaled;
    let img = if w.max(h) > max_side {
        let ratio = max_side as f64 / w.max(h) as f64;
        let (nw, nh) = (((w as f64 * ratio).round() as u32).max(1), ((h as f64 * ratio).round() as u32).max(1));
        scaled = image::imageops::resize(rgb, nw, nh, image::imageops::FilterType::Triangle);
        &scaled
    } else {
        rgb
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .encode_image(img)
        .map_err(|e| AnalysisError::Model(ModelError::Run(format!("re-encoding the stored copy: {e}"))))?;
    Ok(out)
}

fn record_timings(t: &StageTimings) {
    for (stage, d) in
        [("queue", t.queue), ("decode", t.decode), ("quality", t.quality), ("model", t.model), ("total", t.total)]
    {
        metrics::histogram!("dermagate_inference_stage_duration_seconds", "stage" => stage).record(d.as_secs_f64());
    }
}

/// One class of the summary, with its share in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedClass {
    pub label: usize,
    pub percent: f64,
}

/// The model's answer over the valid images of one analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Every class, highest first; the percentages (two decimals) sum to exactly 100.
    pub ranked: Vec<RankedClass>,
    /// Percent of probability on malignant classes.
    pub malignancy: f64,
    /// Percent of probability on classes that call for urgent referral.
    pub urgent_referral: f64,
    /// Shannon entropy of the distribution, in bits.
    pub entropy_bits: f64,
    /// Entropy divided by its maximum (log2 of the class count): 1 means no preference at all.
    pub normalized_entropy: f64,
}

/// Averages the class probabilities of the valid images and ranks them.
pub fn summarise(labels: &[Label], predictions: &[&Prediction]) -> Option<Summary> {
    if predictions.is_empty() || labels.is_empty() {
        return None;
    }
    let n = labels.len();
    let mut mean = vec![0f64; n];
    for p in predictions {
        for (m, v) in mean.iter_mut().zip(&p.probabilities) {
            *m += *v as f64 / predictions.len() as f64;
        }
    }
    let total: f64 = mean.iter().sum();
    if total > 0.0 {
        mean.iter_mut().for_each(|m| *m /= total);
    }
    let hundredths = largest_remainder(&mean, 10_000);
    let mut ranked: Vec<RankedClass> =
        hundredths.iter().enumerate().map(|(label, h)| RankedClass { label, percent: *h as f64 / 100.0 }).collect();
    ranked.sort_by(|a, b| b.percent.total_cmp(&a.percent).then(a.label.cmp(&b.label)));
    let share = |pick: fn(&Label) -> bool| -> f64 {
        let h: u64 = labels.iter().zip(&hundredths).filter(|(l, _)| pick(l)).map(|(_, h)| *h).sum();
        h as f64 / 100.0
    };
    let entropy_bits: f64 = -mean.iter().filter(|p| **p > 0.0).map(|p| p * p.log2()).sum::<f64>();
    let max_entropy = (n as f64).log2();
    Some(Summary {
        ranked,
        malignancy: share(|l| l.malignant),
        urgent_referral: share(|l| l.urgent_referral),
        entropy_bits: round4(entropy_bits.max(0.0)),
        normalized_entropy: round4(if max_entropy > 0.0 { (entropy_bits / max_entropy).clamp(0.0, 1.0) } else { 0.0 }),
    })
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Integer shares of `total` proportional to `weights` (which sum to 1), summing to `total`
/// exactly: floors first, then the remaining units to the largest fractional parts.
fn largest_remainder(weights: &[f64], total: u64) -> Vec<u64> {
    let exact: Vec<f64> = weights.iter().map(|w| w.max(0.0) * total as f64).collect();
    let mut units: Vec<u64> = exact.iter().map(|e| e.floor() as u64).collect();
    let assigned: u64 = units.iter().sum();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor())));
    for i in order.into_iter().cycle().take(total.saturating_sub(assigned) as usize) {
        units[i] += 1;
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(code: &str, malignant: bool) -> Label {
        Label { code: code.into(), display: code.into(), malignant, urgent_referral: malignant }
    }

    // traces: R-05
    #[test]
    fn percentages_sum_to_exactly_one_hundred_and_are_ranked() {
        let labels = [label("a", true), label("b", false), label("c", false)];
        let p = Prediction { probabilities: vec![1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0] };
        let s = summarise(&labels, &[&p]).unwrap();
        let hundredths: u64 = s.ranked.iter().map(|r| (r.percent * 100.0).round() as u64).sum();
        assert_eq!(hundredths, 10_000);
        assert!((s.normalized_entropy - 1.0).abs() < 1e-3, "uniform means maximal entropy");
        let q = Prediction { probabilities: vec![0.1, 0.7, 0.2] };
        let s = summarise(&labels, &[&q]).unwrap();
        assert_eq!(s.ranked.iter().map(|r| r.label).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert!((s.malignancy - 10.0).abs() < 1e-9);
    }

    // traces: R-09
    #[test]
    fn no_valid_image_means_no_summary() {
        assert!(summarise(&[label("a", false), label("b", false)], &[]).is_none());
    }

    // traces: REQ-5.4
    #[test]
    fn a_stored_copy_keeps_no_metadata_and_is_scaled_down() {
        let img = RgbImage::from_fn(2000, 1000, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let jpeg = reencode(&img, 1024).unwrap();
        let back = image::load_from_memory(&jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (1024, 512));
        assert!(!jpeg.windows(4).any(|w| w == b"Exif"));
    }
}
