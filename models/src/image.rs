//! Image input for the vision pipelines: decoding (JPEG/PNG/BMP/WebP, or a raw RGB8 buffer) under
//! configurable byte and pixel limits, Pillow-exact resampling (the upstream pre-processing of
//! SAM and DINOv2 is PIL's antialiased bilinear/bicubic), centre crop, and conversion to
//! normalised float tensors.

use std::io::Cursor;

use ndarray::{Array3, Array4};
use serde::{Deserialize, Serialize};

/// Errors of image input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// More encoded bytes than allowed.
    #[error("image is {bytes} bytes, over the limit of {limit} bytes")]
    TooManyBytes {
        /// Size given.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// More pixels than allowed.
    #[error("image is {width}x{height} = {pixels} pixels, over the limit of {limit} pixels")]
    TooManyPixels {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// width*height.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not a decodable image.
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// A raw buffer whose size does not match its declared dimensions.
    #[error("raw RGB8 buffer has {got} bytes, expected {expected} for {width}x{height}x3")]
    RawSize {
        /// Bytes given.
        got: usize,
        /// width*height*3.
        expected: usize,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
    },
    /// One side much longer than the other (a "geometry bomb": few pixels, but a resize to the
    /// model's input would need a huge buffer).
    #[error("image is {width}x{height}, more elongated than the limit of {limit}:1 (image_limits.max_aspect_ratio)")]
    AspectRatio {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// The limit (longest side ÷ shortest side).
        limit: u32,
    },
    /// A resize whose output, or the buffer between its two passes, would be too large.
    #[error("resizing {from_w}x{from_h} to {to_w}x{to_h} needs a buffer of more than {limit} pixels; refused")]
    ResizeTooLarge {
        /// Input width.
        from_w: u32,
        /// Input height.
        from_h: u32,
        /// Output width.
        to_w: u64,
        /// Output height.
        to_h: u64,
        /// [`MAX_RESIZE_PIXELS`].
        limit: u64,
    },
    /// Zero width or height.
    #[error("image has an empty dimension ({width}x{height})")]
    Empty {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
}

/// Limits on input images. Checked before any large allocation.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLimits {
    /// Largest encoded (or raw) input, in bytes.
    pub max_bytes: usize,
    /// Largest decoded image, in pixels (width × height).
    pub max_pixels: u64,
    /// Most elongated image accepted: longest side ÷ shortest side (0: no limit). A 40,000,000
    /// × 1 PNG is small on the wire and within `max_pixels`, but resizing it to a model's input
    /// size is not.
    pub max_aspect_ratio: u32,
}

impl Default for ImageLimits {
    fn default() -> Self {
        ImageLimits { max_bytes: 32 * 1024 * 1024, max_pixels: 40_000_000, max_aspect_ratio: 100 }
    }
}

/// The most pixels a resize may produce, or hold between its horizontal and vertical passes
/// (128 Mi: 384 MiB of RGB8, 512 MiB per float plane). Resize targets come from the input's
/// geometry and the model's configuration; both are checked against this before allocating.
pub const MAX_RESIZE_PIXELS: u64 = 1 << 27;

/// Checks that resizing `from` to `to` (width, height) stays within [`MAX_RESIZE_PIXELS`], for
/// the output and for the horizontal pass's buffer (`to.0 × from.1`), with checked arithmetic;
/// returns the target as `u32`s.
pub fn check_resize(from: (u32, u32), to: (u64, u64)) -> Result<(u32, u32), ImageError> {
    let too_large = || ImageError::ResizeTooLarge {
        from_w: from.0,
        from_h: from.1,
        to_w: to.0,
        to_h: to.1,
        limit: MAX_RESIZE_PIXELS,
    };
    if to.0 == 0 || to.1 == 0 {
        return Err(ImageError::Empty {
            width: to.0.min(u64::from(u32::MAX)) as u32,
            height: to.1.min(u64::from(u32::MAX)) as u32,
        });
    }
    let out = to.0.checked_mul(to.1).ok_or_else(too_large)?;
    let between = to.0.checked_mul(u64::from(from.1)).ok_or_else(too_large)?;
    if out > MAX_RESIZE_PIXELS || between > MAX_RESIZE_PIXELS {
        return Err(too_large());
    }
    // Both sides are at most MAX_RESIZE_PIXELS here, which fits in u32.
    Ok((u32::try_from(to.0).map_err(|_| too_large())?, u32::try_from(to.1).map_err(|_| too_large())?))
}

/// A resize target side from a floating-point computation, truncated like Python's `int()` and
/// at least 1. Not finite or beyond `u64` gives `u64::MAX`, which [`check_resize`] refuses: a
/// side is never saturated into a size that is then allocated.
pub fn resize_side(value: f64) -> u64 {
    if value.is_finite() && value < u64::MAX as f64 { (value.max(0.0) as u64).max(1) } else { u64::MAX }
}

/// An image as a caller hands it over.
#[derive(Clone, Copy, Debug)]
pub enum ImageInput<'a> {
    /// An encoded file (JPEG, PNG, BMP, WebP), format guessed from its content.
    Encoded(&'a [u8]),
    /// Raw interleaved RGB8 pixels, row-major.
    Rgb8 {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// `width * height * 3` bytes.
        data: &'a [u8],
    },
}

impl ImageInput<'_> {
    /// The bytes this input carries (for hashing and limits).
    pub fn bytes(&self) -> &[u8] {
        match self {
            ImageInput::Encoded(b) => b,
            ImageInput::Rgb8 { data, .. } => data,
        }
    }
}

/// A decoded RGB8 image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Interleaved RGB, row-major, `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// Value of channel `c` at (`x`, `y`).
    pub fn at(&self, x: u32, y: u32, c: usize) -> u8 {
        self.data[(y as usize * self.width as usize + x as usize) * 3 + c]
    }
}

/// Decodes an image, enforcing `limits`. Animated or multi-channel formats are reduced to RGB8
/// (alpha dropped, grey expanded), as PIL's `convert("RGB")` does.
pub fn decode(input: ImageInput<'_>, limits: &ImageLimits) -> Result<RgbImage, ImageError> {
    let bytes = input.bytes().len();
    if bytes > limits.max_bytes {
        return Err(ImageError::TooManyBytes { bytes, limit: limits.max_bytes });
    }
    match input {
        ImageInput::Rgb8 { width, height, data } => {
            check_pixels(width, height, limits)?;
            let expected = width as usize * height as usize * 3;
            if data.len() != expected {
                return Err(ImageError::RawSize { got: data.len(), expected, width, height });
            }
            Ok(RgbImage { width, height, data: data.to_vec() })
        }
        ImageInput::Encoded(data) => {
            let reader = image::ImageReader::new(Cursor::new(data))
                .with_guessed_format()
                .map_err(|e| ImageError::Decode(e.to_string()))?;
            if reader.format().is_none() {
                return Err(ImageError::Decode("unknown image format (expected JPEG, PNG, BMP or WebP)".into()));
            }
            // Header first: refuse oversized images before allocating for them.
            let (width, height) = image::ImageReader::new(Cursor::new(data))
                .with_guessed_format()
                .map_err(|e| ImageError::Decode(e.to_string()))?
                .into_dimensions()
                .map_err(|e| ImageError::Decode(e.to_string()))?;
            check_pixels(width, height, limits)?;
            let mut reader = reader;
            let mut image_limits = image::Limits::default();
            image_limits.max_image_width = Some(width);
            image_limits.max_image_height = Some(height);
            image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(1 << 20));
            reader.limits(image_limits);
            let decoded = reader.decode().map_err(|e| ImageError::Decode(e.to_string()))?;
            let rgb = decoded.into_rgb8();
            let (width, height) = rgb.dimensions();
            Ok(RgbImage { width, height, data: rgb.into_raw() })
        }
    }
}

fn check_pixels(width: u32, height: u32, limits: &ImageLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(ImageError::TooManyPixels { width, height, pixels, limit: limits.max_pixels });
    }
    let (short, long) = (width.min(height), width.max(height));
    if limits.max_aspect_ratio > 0 && u64::from(long) > u64::from(short) * u64::from(limits.max_aspect_ratio) {
        return Err(ImageError::AspectRatio { width, height, limit: limits.max_aspect_ratio });
    }
    Ok(())
}

/// Resampling filter, named as PIL names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resample {
    /// PIL.Image.NEAREST (0).
    Nearest,
    /// PIL.Image.BILINEAR (2): triangle filter, antialiased when shrinking.
    Bilinear,
    /// PIL.Image.BICUBIC (3): Catmull-Rom (a = -0.5), antialiased when shrinking.
    Bicubic,
    /// PIL.Image.LANCZOS (1).
    Lanczos,
}

impl Resample {
    /// From PIL's integer code as found in `preprocessor_config.json` (`"resample": 3`).
    pub fn from_pil_code(code: u32) -> Option<Resample> {
        match code {
            0 => Some(Resample::Nearest),
            1 => Some(Resample::Lanczos),
            2 => Some(Resample::Bilinear),
            3 => Some(Resample::Bicubic),
            _ => None,
        }
    }
}

/// Resizes like `PIL.Image.resize((width, height), resample)` on an RGB image (see
/// [`crate::resample`]: the same arithmetic, so the same bytes).
pub fn resize(image: &RgbImage, width: u32, height: u32, resample: Resample) -> Result<RgbImage, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    if width == image.width && height == image.height {
        return Ok(image.clone());
    }
    check_resize((image.width, image.height), (u64::from(width), u64::from(height)))?;
    let (iw, ih, ow, oh) = (image.width as usize, image.height as usize, width as usize, height as usize);
    let data = match resample {
        Resample::Nearest => crate::resample::resize_nearest_rgb8(&image.data, iw, ih, ow, oh),
        Resample::Bilinear => crate::resample::resize_rgb8(&image.data, iw, ih, ow, oh, crate::resample::BILINEAR),
        Resample::Bicubic => crate::resample::resize_rgb8(&image.data, iw, ih, ow, oh, crate::resample::BICUBIC),
        Resample::Lanczos => crate::resample::resize_rgb8(&image.data, iw, ih, ow, oh, crate::resample::LANCZOS),
    };
    Ok(RgbImage { width, height, data })
}

/// Crops the centre `width` × `height` region as HF's `center_crop` does (top/left rounded down;
/// a crop larger than the image is padded with zeros around it).
pub fn center_crop(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let mut data = vec![0u8; width as usize * height as usize * 3];
    // Offsets of the crop window in image coordinates (may be negative when padding).
    let top = (i64::from(image.height) - i64::from(height)).div_euclid(2);
    let left = (i64::from(image.width) - i64::from(width)).div_euclid(2);
    for y in 0..height as i64 {
        let sy = y + top;
        if sy < 0 || sy >= i64::from(image.height) {
            continue;
        }
        for x in 0..width as i64 {
            let sx = x + left;
            if sx < 0 || sx >= i64::from(image.width) {
                continue;
            }
            let s = ((sy as usize) * image.width as usize + sx as usize) * 3;
            let d = ((y as usize) * width as usize + x as usize) * 3;
            data[d..d + 3].copy_from_slice(&image.data[s..s + 3]);
        }
    }
    RgbImage { width, height, data }
}

/// `[1, 3, H, W]` float tensor: `(pixel * scale - mean[c]) / std[c]`.
pub fn to_nchw(image: &RgbImage, scale: f32, mean: [f32; 3], std: [f32; 3]) -> Array4<f32> {
    let (w, h) = (image.width as usize, image.height as usize);
    let mut out = Array4::<f32>::zeros((1, 3, h, w));
    for c in 0..3 {
        let mut plane = out.slice_mut(ndarray::s![0, c, .., ..]);
        for y in 0..h {
            for x in 0..w {
                plane[[y, x]] = (f32::from(image.data[(y * w + x) * 3 + c]) * scale - mean[c]) / std[c];
            }
        }
    }
    out
}

/// `[H, W, 3]` float tensor of raw 0..255 values (the samexporter encoder input).
pub fn to_hwc_f32(image: &RgbImage) -> Array3<f32> {
    let data: Vec<f32> = image.data.iter().map(|&v| f32::from(v)).collect();
    Array3::from_shape_vec((image.height as usize, image.width as usize, 3), data)
        .unwrap_or_else(|_| Array3::zeros((0, 0, 3)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageEncoder;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).unwrap();
        out
    }

    #[test]
    fn decodes_png_and_raw() {
        let img = decode(ImageInput::Encoded(&png(5, 4)), &ImageLimits::default()).unwrap();
        assert_eq!((img.width, img.height), (5, 4));
        assert_eq!(img.at(3, 2, 0), 3);
        assert_eq!(img.at(3, 2, 1), 2);
        let raw = vec![1u8; 2 * 3 * 3];
        let img = decode(ImageInput::Rgb8 { width: 2, height: 3, data: &raw }, &ImageLimits::default()).unwrap();
        assert_eq!(img.data, raw);
    }

    #[test]
    fn limits_and_bad_input_are_typed_errors() {
        let limits = ImageLimits { max_bytes: 100_000, max_pixels: 19, ..ImageLimits::default() };
        assert!(matches!(
            decode(ImageInput::Encoded(&png(5, 4)), &limits),
            Err(ImageError::TooManyPixels { pixels: 20, .. })
        ));
        let small = ImageLimits { max_bytes: 10, max_pixels: 1000, ..ImageLimits::default() };
        assert!(matches!(decode(ImageInput::Encoded(&png(5, 4)), &small), Err(ImageError::TooManyBytes { .. })));
        let mut truncated = png(64, 64);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(decode(ImageInput::Encoded(&truncated), &ImageLimits::default()), Err(ImageError::Decode(_))));
        assert!(matches!(
            decode(ImageInput::Encoded(b"not an image"), &ImageLimits::default()),
            Err(ImageError::Decode(_))
        ));
        let raw = vec![0u8; 5];
        assert!(matches!(
            decode(ImageInput::Rgb8 { width: 2, height: 2, data: &raw }, &ImageLimits::default()),
            Err(ImageError::RawSize { expected: 12, .. })
        ));
        assert!(matches!(
            decode(ImageInput::Rgb8 { width: 0, height: 2, data: &[] }, &ImageLimits::default()),
            Err(ImageError::Empty { .. })
        ));
    }

    #[test]
    fn elongated_images_are_refused_from_the_header_before_decoding() {
        // 40,000,000 x 1: about 120 KB as a PNG, within max_pixels, and the geometry that made a
        // DINOv2 resize allocate 32 GiB. The header is enough to refuse it.
        let limits = ImageLimits::default();
        let mut bomb = Vec::new();
        image::codecs::png::PngEncoder::new(&mut bomb)
            .write_image(&vec![0u8; 40_000_000 * 3], 40_000_000, 1, image::ExtendedColorType::Rgb8)
            .unwrap();
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let e = decode(ImageInput::Encoded(&bomb), &limits).unwrap_err();
        assert!(matches!(e, ImageError::AspectRatio { width: 40_000_000, height: 1, limit: 100 }), "{e}");
        assert!(e.to_string().contains("max_aspect_ratio"), "{e}");
        // Raw buffers too, and exactly at the limit is fine.
        let raw = vec![0u8; 101 * 3];
        assert!(matches!(
            decode(ImageInput::Rgb8 { width: 1, height: 101, data: &raw }, &limits),
            Err(ImageError::AspectRatio { .. })
        ));
        assert!(decode(ImageInput::Rgb8 { width: 1, height: 100, data: &raw[..300] }, &limits).is_ok());
        let unlimited = ImageLimits { max_aspect_ratio: 0, ..limits };
        assert!(decode(ImageInput::Rgb8 { width: 1, height: 101, data: &raw }, &unlimited).is_ok());
    }

    #[test]
    fn resize_targets_and_their_buffers_are_bounded_with_checked_arithmetic() {
        assert_eq!(check_resize((640, 480), (1024, 768)).unwrap(), (1024, 768));
        // The horizontal pass holds to_w x from_h pixels: a 1024-wide pass over a tall image.
        assert!(matches!(check_resize((1, 200_000_000), (1024, 1024)), Err(ImageError::ResizeTooLarge { .. })));
        assert!(matches!(check_resize((1, 1), (u64::MAX, 2)), Err(ImageError::ResizeTooLarge { .. })));
        assert!(matches!(check_resize((1, 1), (0, 2)), Err(ImageError::Empty { .. })));
        assert_eq!(resize_side(f64::NAN), u64::MAX);
        assert_eq!(resize_side(1e30), u64::MAX);
        assert_eq!(resize_side(0.2), 1);
        assert_eq!(resize_side(355.9), 355);
        let img = RgbImage { width: 1, height: 1, data: vec![1, 2, 3] };
        assert!(matches!(resize(&img, 100_000, 100_000, Resample::Bilinear), Err(ImageError::ResizeTooLarge { .. })));
    }

    #[test]
    fn center_crop_matches_hf_offsets_and_pads() {
        let img = RgbImage { width: 5, height: 4, data: (0..60).map(|v| v as u8).collect() };
        let c = center_crop(&img, 3, 2);
        // top = (4-2)//2 = 1, left = (5-3)//2 = 1
        assert_eq!(c.at(0, 0, 0), img.at(1, 1, 0));
        let padded = center_crop(&img, 7, 4);
        assert_eq!(padded.at(0, 0, 0), 0);
        assert_eq!(padded.at(1, 0, 0), img.at(0, 0, 0));
    }
}
