//! Synthetic images for tests and benchmarks, reproducible from a seed: skin of every
//! Fitzpatrick phototype (sharp and well exposed, with pores, skin lines and a pigmented lesion,
//! drawn in normalised coordinates so one scene can be drawn at any resolution), and what is not
//! skin (objects, documents, noise, flat colour). Degraded versions of the skin (blurred,
//! darkened, brightened, flattened) are how the quality gate is tested; the others test the
//! dermatological-domain check.

use image::RgbImage;

pub fn skin_like(width: u32, height: u32) -> RgbImage {
    scene(width, height)
}

/// A small deterministic generator, so every synthetic image is reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// The six Fitzpatrick skin phototypes, by a representative skin colour of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fitzpatrick {
    I,
    II,
    III,
    IV,
    V,
    VI,
}

impl Fitzpatrick {
    pub const ALL: [Fitzpatrick; 6] =
        [Fitzpatrick::I, Fitzpatrick::II, Fitzpatrick::III, Fitzpatrick::IV, Fitzpatrick::V, Fitzpatrick::VI];

    pub fn rgb(self) -> [f32; 3] {
        match self {
            Fitzpatrick::I => [241.0, 206.0, 180.0],
            Fitzpatrick::II => [228.0, 184.0, 150.0],
            Fitzpatrick::III => [206.0, 150.0, 114.0],
            Fitzpatrick::IV => [170.0, 116.0, 82.0],
            Fitzpatrick::V => [126.0, 84.0, 58.0],
            Fitzpatrick::VI => [84.0, 56.0, 42.0],
        }
    }
}

/// Skin of a phototype: the tone with soft shading, pores and fine grain, and a pigmented
/// lesion; features are placed in normalised coordinates, so the same scene is drawn at any
/// resolution (what a camera of more or fewer megapixels would see).
pub fn skin(tone: Fitzpatrick, width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let base = tone.rgb();
    let (lx, ly, lr) = (0.3 + 0.4 * rng.unit(), 0.3 + 0.4 * rng.unit(), 0.08 + 0.08 * rng.unit());
    let pore_salt = rng.next();
    let (fx, fy) = (5.0 + 6.0 * rng.unit(), 4.0 + 6.0 * rng.unit());
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let shade = 1.0 + 0.12 * (u * fx).sin() * (v * fy).cos();
        // Skin lines: a fine ridge pattern of a few hundred per image width.
        let ridge = 1.0 + 0.06 * ((u * 180.0 + v * 40.0).sin() * (v * 150.0 - u * 30.0).cos());
        let d = ((u - lx).powi(2) + (v - ly).powi(2) * 0.8).sqrt();
        let lesion = if d < lr { 0.55 + 0.35 * d / lr } else { 1.0 };
        // Pores: one in seven cells of a 160x120 grid holds a small dark dot at its centre.
        let (cu, cv) = (u * 160.0, v * 120.0);
        let cell = (cu as u64).wrapping_mul(1_000_003) ^ (cv as u64).wrapping_mul(7_919) ^ pore_salt;
        let centred = (cu.fract() - 0.5).abs() < 0.18 && (cv.fract() - 0.5).abs() < 0.18;
        let pore = if centred && Rng::new(cell).next().is_multiple_of(7) { 0.8 } else { 1.0 };
        let k = shade * ridge * lesion * pore;
        image::Rgb([
            (base[0] * k).clamp(0.0, 255.0) as u8,
            (base[1] * k).clamp(0.0, 255.0) as u8,
            (base[2] * k).clamp(0.0, 255.0) as u8,
        ])
    })
}

/// The same skin scene at any resolution (for the resolution-independence of the gate).
pub fn scene(width: u32, height: u32) -> RgbImage {
    skin(Fitzpatrick::III, width, height, 11)
}

/// An object photographed on a table: saturated shapes of a random hue on a grey background.
pub fn object(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let hue = rng.unit() * 360.0;
    let colour = hsv(hue, 0.55 + 0.4 * rng.unit(), 0.5 + 0.45 * rng.unit());
    let (cx, cy, r) = (0.3 + 0.4 * rng.unit(), 0.3 + 0.4 * rng.unit(), 0.2 + 0.15 * rng.unit());
    RgbImage::from_fn(width, height, |x, y| {
        let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
        let inside = (u - cx).abs() < r * 0.7 && (v - cy).abs() < r;
        let light = 0.85 + 0.15 * (u * 3.0).cos();
        let c = if inside { colour } else { [150.0, 150.0, 155.0] };
        image::Rgb([(c[0] * light) as u8, (c[1] * light) as u8, (c[2] * light) as u8])
    })
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [(r + m) * 255.0, (g + m) * 255.0, (b + m) * 255.0]
}

/// A document or screenshot: dark text lines on white.
pub fn document(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let line = (y / 6) % 3 == 0 && (x / 4) % 5 != 0 && x > 20 && x + 20 < width;
        if line {
            image::Rgb([30, 30, 40])
        } else {
            image::Rgb([250, 250, 248])
        }
    })
}

/// Uniform random noise.
pub fn noise(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    RgbImage::from_fn(width, height, |_, _| {
        let v = rng.next();
        image::Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
    })
}

/// One flat colour.
pub fn flat(rgb: [u8; 3], width: u32, height: u32) -> RgbImage {
    RgbImage::from_pixel(width, height, image::Rgb(rgb))
}
