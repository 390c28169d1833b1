//! A synthetic skin-like photograph for tests and benchmarks: textured mid-tones with fine
//! detail, sharp and well exposed, so it passes the quality gate and the model runs on it.
//! Degraded versions of it (blurred, darkened, brightened) are how the gate is tested.

use image::RgbImage;

pub fn skin_like(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let base = 120.0 + 60.0 * ((x as f32 / 7.0).sin() * (y as f32 / 5.0).cos());
        let detail = if (x / 3 + y / 3) % 2 == 0 { 25.0 } else { -25.0 };
        let v = (base + detail).clamp(0.0, 255.0);
        image::Rgb([v as u8, (v * 0.8) as u8, (v * 0.7) as u8])
    })
}
