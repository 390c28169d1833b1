//! Image-quality assessment that runs before the model: real measurements on the luminance of the
//! image — sharpness (variance of the Laplacian), exposure (share of clipped dark and bright
//! pixels), contrast (standard deviation) and resolution — against versioned thresholds. An image
//! that fails any check gets no diagnosis.

use serde::{Deserialize, Serialize};

/// Thresholds, versioned so every report can say which rules judged its images.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityThresholds {
    pub version: String,
    /// Minimum variance of the 4-neighbour Laplacian of luminance (0-255 scale).
    pub min_sharpness: f64,
    /// Maximum share of pixels with luminance below 16 (under-exposed).
    pub max_dark_fraction: f64,
    /// Maximum share of pixels with luminance above 239 (over-exposed).
    pub max_bright_fraction: f64,
    /// Minimum standard deviation of luminance.
    pub min_contrast: f64,
    pub min_width: u32,
    pub min_height: u32,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            version: "2026-11-1".into(),
            min_sharpness: 60.0,
            max_dark_fraction: 0.5,
            max_bright_fraction: 0.3,
            min_contrast: 12.0,
            min_width: 320,
            min_height: 240,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QualityMeasures {
    pub sharpness: f64,
    pub dark_fraction: f64,
    pub bright_fraction: f64,
    pub contrast: f64,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct QualityVerdict {
    #[serde(rename = "isValid")]
    pub is_valid: bool,
    /// 0-100: the worst check's margin, 100 meaning comfortably within every threshold.
    pub score: u8,
    /// "good", "acceptable" or "poor".
    pub category: &'static str,
    #[serde(rename = "failedChecks")]
    pub failed_checks: Vec<&'static str>,
    pub measures: QualityMeasures,
    #[serde(rename = "thresholdsVersion")]
    pub thresholds_version: String,
}

/// Luminance (ITU-R BT.601) of interleaved RGB pixels.
pub fn luminance(rgb: &[u8]) -> Vec<f32> {
    rgb.chunks_exact(3).map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect()
}

pub fn measure(rgb: &[u8], width: u32, height: u32) -> QualityMeasures {
    let (w, h) = (width as usize, height as usize);
    let y = luminance(rgb);
    let n = y.len().max(1) as f64;
    let (mut sum, mut sum_sq, mut dark, mut bright) = (0f64, 0f64, 0usize, 0usize);
    for v in &y {
        let v64 = *v as f64;
        sum += v64;
        sum_sq += v64 * v64;
        dark += (*v < 16.0) as usize;
        bright += (*v > 239.0) as usize;
    }
    let mean = sum / n;
    let contrast = (sum_sq / n - mean * mean).max(0.0).sqrt();
    // Variance of the 4-neighbour Laplacian, streamed (no second image in memory).
    let (mut lsum, mut lsum_sq, mut count) = (0f64, 0f64, 0usize);
    for row in 1..h.saturating_sub(1) {
        let (up, mid, down) =
            (&y[(row - 1) * w..row * w], &y[row * w..(row + 1) * w], &y[(row + 1) * w..(row + 2) * w]);
        for col in 1..w.saturating_sub(1) {
            let l = (mid[col - 1] + mid[col + 1] + up[col] + down[col] - 4.0 * mid[col]) as f64;
            lsum += l;
            lsum_sq += l * l;
        }
        count += w.saturating_sub(2);
    }
    let ln = count.max(1) as f64;
    let lmean = lsum / ln;
    let sharpness = (lsum_sq / ln - lmean * lmean).max(0.0);
    QualityMeasures {
        sharpness,
        dark_fraction: dark as f64 / n,
        bright_fraction: bright as f64 / n,
        contrast,
        width,
        height,
    }
}

pub fn assess(rgb: &[u8], width: u32, height: u32, t: &QualityThresholds) -> QualityVerdict {
    let m = measure(rgb, width, height);
    // Each margin is how far inside its threshold the image is: 1 = twice as good, 0 = at it.
    let margins = [
        ("sharpness", m.sharpness / t.min_sharpness - 1.0),
        ("underexposure", 1.0 - m.dark_fraction / t.max_dark_fraction),
        ("overexposure", 1.0 - m.bright_fraction / t.max_bright_fraction),
        ("contrast", m.contrast / t.min_contrast - 1.0),
        (
            "resolution",
            // The shorter side relative to the minimum, in u64: no overflow for any image size.
            (u64::from(m.width).min(u64::from(m.height) * u64::from(t.min_width) / u64::from(t.min_height.max(1)))
                as f64
                / f64::from(t.min_width.max(1)))
                - 1.0,
        ),
    ];
    let failed_checks: Vec<&'static str> =
        margins.iter().filter(|(_, margin)| *margin < 0.0).map(|(n, _)| *n).collect();
    let worst = margins.iter().map(|(_, m)| *m).fold(f64::INFINITY, f64::min);
    let score = if failed_checks.is_empty() {
        (50.0 + 50.0 * worst.min(1.0)).round() as u8
    } else {
        (50.0 * (1.0 + worst).clamp(0.0, 0.98)).round() as u8
    };
    let category = match (failed_checks.is_empty(), score) {
        (false, _) => "poor",
        (true, s) if s >= 75 => "good",
        _ => "acceptable",
    };
    QualityVerdict {
        is_valid: failed_checks.is_empty(),
        score,
        category,
        failed_checks,
        measures: m,
        thresholds_version: t.version.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::skin_like as sharp_image;

    fn verdict(img: &image::RgbImage) -> QualityVerdict {
        assess(img.as_raw(), img.width(), img.height(), &QualityThresholds::default())
    }

    #[test]
    fn a_sharp_well_exposed_image_passes() {
        let v = verdict(&sharp_image(640, 480));
        assert!(v.is_valid, "{v:?}");
        assert!(v.score >= 50);
    }

    // traces
    #[test]
    fn blurred_dark_and_overexposed_versions_fail_for_the_right_reason() {
        let img = sharp_image(640, 480);
        let blurred = image::imageops::blur(&img, 6.0);
        assert!(verdict(&blurred).failed_checks.contains(&"sharpness"), "{:?}", verdict(&blurred));
        let dark = image::RgbImage::from_fn(640, 480, |x, y| {
            let p = img.get_pixel(x, y);
            image::Rgb([p[0] / 12, p[1] / 12, p[2] / 12])
        });
        let v = verdict(&dark);
        assert!(!v.is_valid && v.failed_checks.contains(&"underexposure"), "{v:?}");
        let bright = image::RgbImage::from_fn(640, 480, |x, y| {
            let p = img.get_pixel(x, y);
            image::Rgb([p[0].saturating_add(170), p[1].saturating_add(170), p[2].saturating_add(170)])
        });
        let v = verdict(&bright);
        assert!(!v.is_valid && v.failed_checks.contains(&"overexposure"), "{v:?}");
        let small = sharp_image(200, 150);
        assert!(verdict(&small).failed_checks.contains(&"resolution"));
    }
}
