//! The dermatological-domain check: is this a photograph of skin at all? A cup, a cat, a
//! document or random noise is outside the device's intended use and must never reach the
//! model. Two classical measures on the working-size image, no learned weights:
//! - **skin presence**: the share of pixels whose chroma falls in a skin-colour region of YCbCr
//!   (Chai & Ngan's Cb/Cr box, widened for the reds of inflamed lesions), a region that holds for
//!   every Fitzpatrick tone because chroma barely depends on luminance;
//! - **natural texture**: the lag-1 autocorrelation of luminance, high in photographs of
//!   surfaces and near zero in noise, which a colour test alone would let through.
//!
//! Thresholds are versioned with the quality gate's; the measured false-accept and false-reject
//! rates on the project's test corpus are in `docs/ifu.md` (test `domain_rates_on_the_corpus`).

use serde::{Deserialize, Serialize};

/// Thresholds of the domain check (part of the quality thresholds, same version).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainThresholds {
    /// Minimum share of skin-coloured pixels.
    pub min_skin_fraction: f64,
    /// Minimum lag-1 autocorrelation of luminance.
    pub min_texture_correlation: f64,
}

impl Default for DomainThresholds {
    fn default() -> Self {
        DomainThresholds { min_skin_fraction: 0.35, min_texture_correlation: 0.3 }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainVerdict {
    pub is_dermatological: bool,
    /// 0-100: the weaker of the two measures' margins; below 50 means out of domain.
    pub score: u8,
    pub skin_fraction: f64,
    pub texture_correlation: f64,
    pub thresholds_version: String,
}

/// Whether an RGB pixel's chroma is in the skin region (BT.601 full-range YCbCr).
pub fn is_skin(r: u8, g: u8, b: u8) -> bool {
    let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    // Pure greys (Cb = Cr = 128) are never skin; very dark pixels carry no reliable chroma.
    let luma = 0.299 * r + 0.587 * g + 0.114 * b;
    (77.0..=127.0).contains(&cb) && (133.0..=180.0).contains(&cr) && luma >= 20.0
}

/// Lag-1 autocorrelation of a luminance plane, horizontal and vertical together.
fn texture_correlation(y: &[f32], w: usize, h: usize) -> f64 {
    let n = y.len().max(1) as f64;
    let mean = y.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let var = y.iter().map(|v| (f64::from(*v) - mean).powi(2)).sum::<f64>() / n;
    if var < 1e-6 {
        return 0.0; // a flat image has no texture at all
    }
    let (mut sum, mut count) = (0f64, 0usize);
    for row in 0..h {
        for col in 0..w {
            let v = f64::from(y[row * w + col]) - mean;
            if col + 1 < w {
                sum += v * (f64::from(y[row * w + col + 1]) - mean);
                count += 1;
            }
            if row + 1 < h {
                sum += v * (f64::from(y[(row + 1) * w + col]) - mean);
                count += 1;
            }
        }
    }
    sum / count.max(1) as f64 / var
}

/// Judges an RGB image (at working size) against `t`.
pub fn assess(rgb: &[u8], width: u32, height: u32, t: &DomainThresholds, version: &str) -> DomainVerdict {
    let pixels = rgb.len() / 3;
    let skin = rgb.chunks_exact(3).filter(|p| is_skin(p[0], p[1], p[2])).count();
    let skin_fraction = skin as f64 / pixels.max(1) as f64;
    let y = crate::quality::luminance(rgb);
    let texture = texture_correlation(&y, width as usize, height as usize);
    let margins = [skin_fraction / t.min_skin_fraction - 1.0, texture / t.min_texture_correlation - 1.0];
    let worst = margins.iter().copied().fold(f64::INFINITY, f64::min);
    let is_dermatological = worst >= 0.0;
    let score = if is_dermatological {
        (50.0 + 50.0 * worst.min(1.0)).round() as u8
    } else {
        (50.0 * (1.0 + worst).clamp(0.0, 0.98)).round() as u8
    };
    DomainVerdict {
        is_dermatological,
        score,
        skin_fraction: (skin_fraction * 1000.0).round() / 1000.0,
        texture_correlation: (texture * 1000.0).round() / 1000.0,
        thresholds_version: version.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{self, Fitzpatrick};

    fn verdict(img: &image::RgbImage) -> DomainVerdict {
        assess(img.as_raw(), img.width(), img.height(), &DomainThresholds::default(), "test")
    }

    // traces
    #[test]
    fn skin_of_every_tone_is_in_domain_and_objects_documents_noise_and_flat_colour_are_not() {
        for tone in Fitzpatrick::ALL {
            let v = verdict(&synthetic::skin(tone, 512, 384, 7));
            assert!(v.is_dermatological, "{tone:?}: {v:?}");
        }
        for (name, img) in [
            ("object", synthetic::object(512, 384, 3)),
            ("document", synthetic::document(512, 384)),
            ("noise", synthetic::noise(512, 384, 5)),
            ("flat skin tone", synthetic::flat([196, 142, 110], 512, 384)),
            ("flat grey", synthetic::flat([128, 128, 128], 512, 384)),
        ] {
            let v = verdict(&img);
            assert!(!v.is_dermatological, "{name}: {v:?}");
        }
    }

    /// The false-accept and false-reject rates on the corpus the project makes (stated in the
    /// IFU): 6 tones x 20 textures of skin; 20 each of objects, documents, noise and flat colours.
    // traces: R-09
    #[test]
    fn domain_rates_on_the_corpus() {
        let mut false_reject = 0;
        let mut skin_total = 0;
        for tone in Fitzpatrick::ALL {
            for seed in 0..20 {
                skin_total += 1;
                false_reject += usize::from(!verdict(&synthetic::skin(tone, 320, 240, seed)).is_dermatological);
            }
        }
        let mut false_accept = 0;
        let mut other_total = 0;
        for seed in 0..20u64 {
            let shade = (seed * 12) as u8;
            for img in [
                synthetic::object(320, 240, seed),
                synthetic::document(320 + seed as u32, 240),
                synthetic::noise(320, 240, seed),
                synthetic::flat([shade, 255 - shade, 128], 320, 240),
            ] {
                other_total += 1;
                false_accept += usize::from(verdict(&img).is_dermatological);
            }
        }
        eprintln!("domain check: false reject {false_reject}/{skin_total}, false accept {false_accept}/{other_total}");
        assert_eq!((false_reject, false_accept), (0, 0), "rates changed: update docs/ifu.md");
    }
}
