//! Turning uploaded bytes into pixels safely: the declared content type must match the bytes,
//! sizes are bounded, and the pixel count is read from the header and refused **before** any
//! decoding, so a decompression bomb never allocates. Decoding to pixels also drops all metadata
//! (EXIF GPS, device ids).

use std::io::Cursor;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

/// Limits of what the device accepts, stated in the instructions for use.
#[derive(Debug, Clone)]
pub struct DecodeLimits {
    pub max_bytes: usize,
    pub max_pixels: u64,
    pub min_width: u32,
    pub min_height: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits { max_bytes: 8 << 20, max_pixels: 40_000_000, min_width: 320, min_height: 240 }
    }
}

/// Why an image is refused; `rule()` names the rule for the problem+json answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("unsupported content type {0:?} (image/jpeg, image/png or image/webp)")]
    UnsupportedType(String),
    #[error("the bytes are not a {declared} image")]
    TypeMismatch { declared: String },
    #[error("the image is {0} bytes, above the limit of {1}")]
    TooManyBytes(usize, usize),
    #[error("the image is {0}x{1}, {2} pixels above the limit")]
    TooManyPixels(u32, u32, u64),
    #[error("the image is {0}x{1}, below the minimum of {2}x{3}")]
    TooSmall(u32, u32, u32, u32),
    #[error("the image is corrupt: {0}")]
    Corrupt(String),
}

impl DecodeError {
    pub fn rule(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedType(_) => "content_type",
            DecodeError::TypeMismatch { .. } => "content_type_matches_bytes",
            DecodeError::TooManyBytes(..) => "max_bytes",
            DecodeError::TooManyPixels(..) => "max_pixels",
            DecodeError::TooSmall(..) => "min_resolution",
            DecodeError::Corrupt(_) => "decodable",
        }
    }
}

fn declared_format(content_type: &str) -> Result<ImageFormat, DecodeError> {
    match content_type.trim().to_ascii_lowercase().as_str() {
        "image/jpeg" | "image/jpg" => Ok(ImageFormat::Jpeg),
        "image/png" => Ok(ImageFormat::Png),
        "image/webp" => Ok(ImageFormat::WebP),
        other => Err(DecodeError::UnsupportedType(other.to_string())),
    }
}

/// Checks and decodes one uploaded image into RGB pixels.
pub fn decode(bytes: &[u8], content_type: &str, limits: &DecodeLimits) -> Result<RgbImage, DecodeError> {
    let declared = declared_format(content_type)?;
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes(bytes.len(), limits.max_bytes));
    }
    let sniffed = image::guess_format(bytes).ok();
    if sniffed != Some(declared) {
        return Err(DecodeError::TypeMismatch { declared: content_type.to_string() });
    }
    let header = ImageReader::with_format(Cursor::new(bytes), declared);
    let (w, h) = header.into_dimensions().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let pixels = w as u64 * h as u64;
    if pixels > limits.max_pixels {
        return Err(DecodeError::TooManyPixels(w, h, pixels));
    }
    if w < limits.min_width || h < limits.min_height {
        return Err(DecodeError::TooSmall(w, h, limits.min_width, limits.min_height));
    }
    if declared == ImageFormat::Jpeg && !jpeg_is_complete(bytes) {
        // Decoders fill a truncated JPEG's missing rows with grey; such an image must not reach
        // the quality gate or the model as if it were whole.
        return Err(DecodeError::Corrupt("the JPEG is truncated (no end-of-image marker after its scan)".into()));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), declared);
    let mut l = Limits::default();
    l.max_image_width = Some(w);
    l.max_image_height = Some(h);
    // RGBA at 16 bits per channel is the most a decoder may need for this many pixels.
    l.max_alloc = Some(pixels * 8 + (1 << 20));
    reader.limits(l);
    let img = reader.decode().map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    Ok(img.to_rgb8())
}

/// Whether a JPEG has its end-of-image marker after the image's first scan. Segments before the
/// scan are skipped by their lengths (an EXIF thumbnail carries markers of its own); inside
/// entropy-coded data 0xFF is always stuffed, so 0xFFD9 there can only be the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let mut i = 2;
    while i + 3 < bytes.len() {
        if bytes[i] != 0xFF {
            return false;
        }
        let marker = bytes[i + 1];
        match marker {
            0xFF => i += 1,
            0xDA => return bytes[i..].windows(2).any(|w| w == [0xFF, 0xD9]),
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => i += 2 + usize::from(u16::from_be_bytes([bytes[i + 2], bytes[i + 3]])),
        }
    }
    false
}

/// The image resized to the model's input, as interleaved RGB bytes. Downscaling averages the
/// source pixels each output pixel covers (no aliasing, and fast at large ratios).
pub fn to_model_input(img: &RgbImage, width: u32, height: u32) -> Vec<u8> {
    if img.width() >= width && img.height() >= height {
        image::imageops::thumbnail(img, width, height).into_raw()
    } else {
        image::imageops::resize(img, width, height, image::imageops::FilterType::Triangle).into_raw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_valid_png_decodes_and_resizes() {
        let img = decode(&png(400, 300), "image/png", &DecodeLimits::default()).unwrap();
        assert_eq!(img.dimensions(), (400, 300));
        assert_eq!(to_model_input(&img, 64, 64).len(), 64 * 64 * 3);
    }

    // traces
    #[test]
    fn every_rejection_rule_has_its_reason() {
        let l = DecodeLimits::default();
        assert_eq!(decode(&png(400, 300), "image/gif", &l).unwrap_err().rule(), "content_type");
        assert_eq!(decode(&png(400, 300), "image/jpeg", &l).unwrap_err().rule(), "content_type_matches_bytes");
        assert_eq!(decode(&png(100, 80), "image/png", &l).unwrap_err().rule(), "min_resolution");
        let mut corrupt = png(400, 300);
        corrupt.truncate(200);
        assert_eq!(decode(&corrupt, "image/png", &l).unwrap_err().rule(), "decodable");
        let img = RgbImage::from_fn(400, 300, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
        let mut jpeg = Cursor::new(Vec::new());
        img.write_to(&mut jpeg, ImageFormat::Jpeg).unwrap();
        let jpeg = jpeg.into_inner();
        assert!(decode(&jpeg, "image/jpeg", &l).is_ok());
        for keep in [jpeg.len() * 9 / 10, jpeg.len() / 2, jpeg.len() / 5] {
            assert_eq!(decode(&jpeg[..keep], "image/jpeg", &l).unwrap_err().rule(), "decodable", "cut at {keep}");
        }
        let tight = DecodeLimits { max_bytes: 100, ..DecodeLimits::default() };
        assert_eq!(decode(&png(400, 300), "image/png", &tight).unwrap_err().rule(), "max_bytes");
    }

    // traces: FM-04, R-17
    #[test]
    fn a_decompression_bomb_is_refused_before_decoding() {
        // 20000 x 20000 of one colour compresses to a few hundred KB but would need 1.2 GB.
        let img = image::GrayImage::from_pixel(20_000, 20_000, image::Luma([7]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        let bomb = out.into_inner();
        assert!(bomb.len() < 10 << 20, "the bomb must be small: {}", bomb.len());
        let err = decode(&bomb, "image/png", &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.rule(), "max_pixels");
    }

    /// Property-based fuzzing of image decoding (stable toolchain; `PROPTEST_CASES=100000` for a
    /// long run, see docs/operations.md): whatever the bytes and the declared type, decoding
    /// answers Ok or a typed refusal, never a panic, and never more pixels than the limit.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn mutated_png() -> impl Strategy<Value = Vec<u8>> {
            let base = png(64, 48);
            proptest::collection::vec((0..base.len(), any::<u8>()), 0..16).prop_map(move |edits| {
                let mut bytes = base.clone();
                for (at, value) in edits {
                    bytes[at] = value;
                }
                bytes
            })
        }
        proptest! {
            // traces: R-03, FM-04
            #[test]
            fn fuzz_decoding_arbitrary_bytes_never_panics(
                bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..4096), mutated_png()],
                kind in prop_oneof![
                    Just("image/png".to_string()),
                    Just("image/jpeg".to_string()),
                    Just("image/webp".to_string()),
                    Just("image/gif".to_string()),
                    ".{0,20}",
                ],
            ) {
                let limits = DecodeLimits { min_width: 1, min_height: 1, ..DecodeLimits::default() };
                if let Ok(img) = decode(&bytes, &kind, &limits) {
                    prop_assert!(u64::from(img.width()) * u64::from(img.height()) <= limits.max_pixels);
                }
            }
        }
    }
}
