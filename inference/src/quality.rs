//! Image-quality assessment that runs before the model: real measurements on the luminance of the
//! image — sharpness (variance of the Laplacian), exposure (share of clipped dark and bright
//! pixels), contrast (standard deviation) and resolution — and the dermatological-domain check
//! (`domain.rs`), against versioned thresholds. An image that fails any check gets no diagnosis.
//!
//! **Measures are taken on a normalised working size** (longest side `working_side`, 512 px by
//! default; smaller images as they are), so one scene gets the same verdict whether a 0.3 MP or
//! a 12 MP camera took it: sharpness on the full-resolution pixels would punish high-resolution
//! cameras, whose pixels are smaller than any detail the model looks at. Resolution itself is
//! judged on the original size.

use serde::{Deserialize, Serialize};

use crate::domain::{DomainThresholds, DomainVerdict};

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
    /// The longest side of the working image the measures are taken on.
    pub working_side: u32,
    pub domain: DomainThresholds,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            version: "2026-12-1".into(),
            // Calibrated at the 512-px working size and a mean luminance of 128 (test
            // `print_scene_measures`): the skin scene measures 22-37 at any camera resolution and
            // 8 as a 640x480 JPEG; the same scene out of focus 0.3-3.5.
            min_sharpness: 5.0,
            max_dark_fraction: 0.5,
            max_bright_fraction: 0.3,
            min_contrast: 8.0,
            min_width: 320,
            min_height: 240,
            working_side: 512,
            domain: DomainThresholds::default(),
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
    pub domain: DomainVerdict,
    #[serde(rename = "thresholdsVersion")]
    pub thresholds_version: String,
}

/// The image the measures are taken on: scaled down (area-averaging) to `side` on its longest
/// side, never up.
pub fn working_image(rgb: &image::RgbImage, side: u32) -> std::borrow::Cow<'_, image::RgbImage> {
    let (w, h) = rgb.dimensions();
    if w.max(h) <= side || side == 0 {
        return std::borrow::Cow::Borrowed(rgb);
    }
    let ratio = f64::from(side) / f64::from(w.max(h));
    let (nw, nh) = (((f64::from(w) * ratio).round() as u32).max(1), ((f64::from(h) * ratio).round() as u32).max(1));
    std::borrow::Cow::Owned(image::imageops::resize(rgb, nw, nh, image::imageops::FilterType::Triangle))
}

/// Luminance (ITU-R BT.601) of interleaved RGB pixels.
pub fn luminance(rgb: &[u8]) -> Vec<f32> {
    rgb.chunks_exact(3).map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).collect()
}

pub fn measure(rgb: &[u8], width: u32, height: u32) -> QualityMeasures {
    let (w, h) = (width as usize, height as usize);
    let mut y = luminance(rgb);
    let n = y.len().max(1) as f64;
    let (mut sum, mut dark, mut bright) = (0f64, 0usize, 0usize);
    for v in &y {
        sum += f64::from(*v);
        dark += (*v < 16.0) as usize;
        bright += (*v > 239.0) as usize;
    }
    // Sharpness and contrast are judged at a common brightness (mean luminance 128), so darker
    // skin is held to the same standard as lighter skin: its detail is smaller in absolute
    // luminance, not less visible. The gain is bounded: exposure itself is checked separately.
    let gain = (128.0 / (sum / n).max(1.0)).clamp(0.5, 4.0) as f32;
    for v in &mut y {
        *v *= gain;
    }
    let mean = sum / n * f64::from(gain);
    let sum_sq: f64 = y.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
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

/// Judges an image: quality measures and the domain check on the working image, resolution on
/// the original.
pub fn assess_image(img: &image::RgbImage, t: &QualityThresholds) -> QualityVerdict {
    let work = working_image(img, t.working_side);
    let mut m = measure(work.as_raw(), work.width(), work.height());
    (m.width, m.height) = img.dimensions();
    let domain = crate::domain::assess(work.as_raw(), work.width(), work.height(), &t.domain, &t.version);
    judge(m, domain, t)
}

/// Judges raw pixels as they are (no working size), for callers that already resized.
pub fn assess(rgb: &[u8], width: u32, height: u32, t: &QualityThresholds) -> QualityVerdict {
    let m = measure(rgb, width, height);
    let domain = crate::domain::assess(rgb, width, height, &t.domain, &t.version);
    judge(m, domain, t)
}

fn judge(m: QualityMeasures, domain: DomainVerdict, t: &QualityThresholds) -> QualityVerdict {
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
    let mut failed_checks: Vec<&'static str> =
        margins.iter().filter(|(_, margin)| *margin < 0.0).map(|(n, _)| *n).collect();
    // An image that is not of skin is never used for a diagnosis, however good it looks.
    if !domain.is_dermatological {
        failed_checks.push("domain");
    }
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
        domain,
        thresholds_version: t.version.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::scene;

    fn verdict(img: &image::RgbImage) -> QualityVerdict {
        assess_image(img, &QualityThresholds::default())
    }

    fn sharp_image(width: u32, height: u32) -> image::RgbImage {
        scene(width, height)
    }

    // traces
    #[test]
    fn one_scene_gets_one_verdict_from_a_third_to_twelve_megapixels() {
        let reference = verdict(&scene(640, 480));
        assert!(reference.is_valid, "{reference:?}");
        for (w, h) in [(640, 480), (1024, 768), (1600, 1200), (2048, 1536), (3000, 2250), (4000, 3000)] {
            let v = verdict(&scene(w, h));
            assert!(v.is_valid, "{w}x{h}: {v:?}");
            let ratio = v.measures.sharpness / reference.measures.sharpness;
            assert!(
                (0.5..2.0).contains(&ratio),
                "{w}x{h}: sharpness {} vs {}",
                v.measures.sharpness,
                reference.measures.sharpness
            );
            assert!((v.measures.contrast - reference.measures.contrast).abs() < 3.0, "{w}x{h}: {v:?}");
            assert_eq!(v.category, reference.category, "{w}x{h}");
        }
        // Blurred in proportion to the image (the same optical blur at any resolution) fails at
        // every size.
        for (w, h) in [(640, 480), (2048, 1536), (4000, 3000)] {
            let blurred = image::imageops::blur(&scene(w, h), w as f32 / 160.0);
            let v = verdict(&blurred);
            assert!(v.failed_checks.contains(&"sharpness"), "{w}x{h}: {v:?}");
        }
    }

    #[test]
    #[ignore = "prints the measures of the test scene at several sizes (calibration)"]
    fn print_scene_measures() {
        for (w, h) in [(640, 480), (1024, 768), (2048, 1536), (4000, 3000)] {
            let v = verdict(&scene(w, h));
            eprintln!("{w}x{h}: {:?} domain {:?}", v.measures, v.domain);
            let blurred = verdict(&image::imageops::blur(&scene(w, h), w as f32 / 160.0));
            eprintln!("  blurred: {:?}", blurred.measures);
            let mut jpeg = std::io::Cursor::new(Vec::new());
            scene(w, h).write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
            let decoded = image::load_from_memory(&jpeg.into_inner()).unwrap().to_rgb8();
            eprintln!("  jpeg: {:?}", verdict(&decoded).measures);
            let b6 = verdict(&image::imageops::blur(&scene(w, h), 6.0));
            eprintln!("  blur 6: {:?}", b6.measures);
        }
    }

    // traces
    #[test]
    fn every_skin_tone_is_judged_by_the_same_standard() {
        use crate::synthetic::{skin, Fitzpatrick};
        for tone in Fitzpatrick::ALL {
            let v = verdict(&skin(tone, 640, 480, 3));
            assert!(v.is_valid, "{tone:?}: {v:?}");
            let blurred = verdict(&image::imageops::blur(&skin(tone, 640, 480, 3), 4.0));
            assert!(blurred.failed_checks.contains(&"sharpness"), "{tone:?}: {blurred:?}");
        }
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
        let flat = image::RgbImage::from_fn(640, 480, |x, y| {
            let p = img.get_pixel(x, y);
            let squash = |c: u8| (128.0 + (f32::from(c) - 128.0) / 16.0) as u8;
            image::Rgb([squash(p[0]), squash(p[1]), squash(p[2])])
        });
        let v = verdict(&flat);
        assert!(!v.is_valid && v.failed_checks.contains(&"contrast"), "{v:?}");
    }
}
