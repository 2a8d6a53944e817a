//! Network inputs: images (PNG, JPEG) preprocessed to the network's input, `.npy`
//! arrays, or a seeded random tensor.

use crate::Tensor;
use crate::error::{Result, RuntimeError};
use cnnc_compiler::ops::Shape;
use image::imageops::FilterType;
use ndarray::{Axis, IxDyn};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::path::{Path, PathBuf};

/// ImageNet's channel statistics, the default for 3-channel inputs.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, Clone, PartialEq)]
pub enum InputSource {
    /// Standard normal values from a seed.
    Random { seed: u64 },
    /// Images or `.npy` files, one sample (or a batch, for `.npy`) each.
    Files(Vec<PathBuf>),
}

/// How images become tensors: scaled to [0, 1], then `(x - mean) / std` per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalize {
    /// ImageNet statistics for RGB; none (mean 0, std 1) for other channel counts.
    pub fn default_for(channels: usize) -> Normalize {
        if channels == 3 {
            Normalize {
                mean: IMAGENET_MEAN.to_vec(),
                std: IMAGENET_STD.to_vec(),
            }
        } else {
            Normalize {
                mean: vec![0.0; channels],
                std: vec![1.0; channels],
            }
        }
    }
}

/// Builds the input batch for a network input of per-sample `shape`.
pub fn load(
    source: &InputSource,
    shape: &Shape,
    batch: usize,
    normalize: &Normalize,
) -> Result<Tensor> {
    let dims: Vec<usize> = shape.0.iter().map(|&d| d as usize).collect();
    match source {
        InputSource::Random { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let full: Vec<usize> = std::iter::once(batch).chain(dims.iter().copied()).collect();
            Ok(Tensor::from_shape_simple_fn(IxDyn(&full), || {
                StandardNormal.sample(&mut rng)
            }))
        }
        InputSource::Files(paths) => {
            let samples = paths
                .iter()
                .map(|p| load_file(p, &dims, batch, normalize))
                .collect::<Result<Vec<Tensor>>>()?;
            let views: Vec<_> = samples.iter().map(|s| s.view()).collect();
            let stacked =
                ndarray::concatenate(Axis(0), &views).expect("samples share the network's shape");
            repeat_to_batch(stacked, batch)
        }
    }
}

/// The largest image file read, and the decoder's limits: an image whose header declares
/// more is refused before its pixels are allocated.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;
pub const MAX_IMAGE_SIDE: u32 = 32_768;
pub const MAX_IMAGE_DECODE_BYTES: u64 = 512 << 20;
/// Room for an `.npy` header (numpy writes 128 bytes or so; the format allows 4 GiB).
const MAX_NPY_HEADER_BYTES: u64 = 1 << 20;

/// One file as `[n, ...shape]`, `n` at most `batch`.
fn load_file(path: &Path, dims: &[usize], batch: usize, normalize: &Normalize) -> Result<Tensor> {
    let io = |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let limit = max_file_bytes(path, dims, batch);
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > limit {
        return Err(RuntimeError::Invalid(format!(
            "{} is {}, more than an input for this network can be ({})",
            path.display(),
            cnnc_compiler::summary::bytes(size),
            cnnc_compiler::summary::bytes(limit)
        )));
    }
    decode(path, &std::fs::read(path).map_err(io)?, dims, normalize)
}

/// The largest file that can hold an input: `batch` samples of f32 for `.npy`, the
/// image limit otherwise.
fn max_file_bytes(path: &Path, dims: &[usize], batch: usize) -> u64 {
    if !is_npy(path) {
        return MAX_IMAGE_FILE_BYTES;
    }
    dims.iter()
        .fold(batch as u64, |a, &d| a.saturating_mul(d as u64))
        .saturating_mul(4)
        .saturating_add(MAX_NPY_HEADER_BYTES)
}

fn is_npy(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// One input file's contents as `[n, ...dims]`: an `.npy` array (by `path`'s
/// extension) or an image. `path` only names the file in errors.
pub fn decode(path: &Path, bytes: &[u8], dims: &[usize], normalize: &Normalize) -> Result<Tensor> {
    if is_npy(path) {
        decode_npy(path, bytes, dims)
    } else {
        decode_image(path, bytes, dims, normalize)
    }
}

fn decode_npy(path: &Path, bytes: &[u8], dims: &[usize]) -> Result<Tensor> {
    let error = |reason: String| RuntimeError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    npy_data_fits(bytes).map_err(error)?;
    let array: Tensor =
        ndarray_npy::ReadNpyExt::read_npy(bytes).map_err(|e| error(e.to_string()))?;
    if array.shape() == dims {
        return Ok(array.insert_axis(Axis(0)));
    }
    if array.ndim() == dims.len() + 1 && &array.shape()[1..] == dims {
        return Ok(array);
    }
    Err(RuntimeError::InputShape {
        expected: format!("{} (or N x {0})", shape_text(dims)),
        found: shape_text(array.shape()),
        hint: format!(" (from {})", path.display()),
    })
}

/// Checks that the bytes after an `.npy` header hold at least the float32 values its
/// shape declares: ndarray-npy allocates the header, then the values, at the sizes the
/// file declares before reading them, so a 100-byte file could ask for terabytes.
fn npy_data_fits(bytes: &[u8]) -> std::result::Result<(), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if !bytes.starts_with(MAGIC) || bytes.len() < 10 {
        return Err("it does not start with the .npy magic string".into());
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 if bytes.len() >= 12 => {
            let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (usize::try_from(len).unwrap_or(usize::MAX), 12)
        }
        version => return Err(format!("unsupported .npy version {version}")),
    };
    let data_start = header_start
        .checked_add(header_len)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| format!("the header declares {header_len} bytes but the file ends first"))?;
    header_is_plain(&bytes[header_start..data_start])?;
    let header = ndarray_npy::npy::header::Header::from_reader(&mut &bytes[..])
        .map_err(|e| e.to_string())?;
    let data = (bytes.len() - data_start) as u64;
    let declared = header
        .shape
        .iter()
        .try_fold(4u64, |a, &d| a.checked_mul(d as u64));
    match declared {
        Some(declared) if declared <= data => Ok(()),
        _ => Err(format!(
            "the header declares shape {:?} but only {data} bytes of values follow",
            header.shape
        )),
    }
}

/// numpy itself refuses headers longer than this (`max_header_size`).
const MAX_NPY_HEADER_TEXT: usize = 10_000;
/// `{'descr': ..., 'shape': (..)}` nests two deep; structured dtypes a few more.
const MAX_NPY_HEADER_NESTING: usize = 8;

/// Refuses a header the literal parser would take long over: it backtracks on deeply
/// nested brackets (a 200-byte header of `[`s ran for minutes), so the text is
/// measured before it is parsed.
fn header_is_plain(header: &[u8]) -> std::result::Result<(), String> {
    if header.len() > MAX_NPY_HEADER_TEXT {
        return Err(format!(
            "its header is {} bytes; numpy writes and reads at most {MAX_NPY_HEADER_TEXT}",
            header.len()
        ));
    }
    let mut depth = 0usize;
    for &byte in header {
        match byte {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NPY_HEADER_NESTING {
            return Err(format!(
                "its header nests brackets more than {MAX_NPY_HEADER_NESTING} deep; \
                 a float32 array's header is {{'descr': '<f4', 'fortran_order': False, 'shape': (...)}}"
            ));
        }
    }
    Ok(())
}

fn decode_image(
    path: &Path,
    bytes: &[u8],
    dims: &[usize],
    normalize: &Normalize,
) -> Result<Tensor> {
    let &[channels, height, width] = dims else {
        return Err(RuntimeError::InputShape {
            expected: shape_text(dims),
            found: "an image".into(),
            hint: ": images feed networks whose input is CxHxW; give a .npy file instead".into(),
        });
    };
    if channels != 1 && channels != 3 {
        return Err(RuntimeError::InputShape {
            expected: shape_text(dims),
            found: "an image (1 or 3 channels)".into(),
            hint: ": give a .npy file for other channel counts".into(),
        });
    }
    let error = |reason: String| RuntimeError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let (Ok(target_w), Ok(target_h)) = (u32::try_from(width), u32::try_from(height)) else {
        return Err(error(format!(
            "the network's input {height}x{width} is too large for an image"
        )));
    };
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| error(e.to_string()))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_DECODE_BYTES);
    reader.limits(limits);
    use image::ImageDecoder as _;
    let decoder = reader.into_decoder().map_err(|e| error(e.to_string()))?;
    decoded_size_is_plausible(decoder.total_bytes(), bytes.len()).map_err(error)?;
    let image = decode_catching_panics(decoder)
        .map_err(error)?
        .map_err(|e| error(e.to_string()))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(error("the image is empty".into()));
    }
    let image = cover_and_crop(image, target_w, target_h);
    let pixels: Vec<u8> = if channels == 1 {
        image.to_luma8().into_raw()
    } else {
        image.to_rgb8().into_raw()
    };
    let mut tensor = Tensor::zeros(IxDyn(&[1, channels, height, width]));
    for (i, &value) in pixels.iter().enumerate() {
        let c = i % channels;
        let x = (i / channels) % width;
        let y = i / channels / width;
        let scaled = f32::from(value) / 255.0;
        tensor[[0, c, y, x]] = (scaled - normalize.mean[c]) / normalize.std[c];
    }
    Ok(tensor)
}

/// Scales the image so it covers `width`x`height` and keeps the centre, the usual
/// ImageNet evaluation transform (without the 256/224 margin). The centre is cut out
/// first and then resized, so a very long, thin image never becomes a huge one.
/// How many bytes of pixels one byte of a complete PNG or JPEG can hold at most:
/// deflate expands at most 1032 to 1; a JPEG block costs at least a bit per 64 samples
/// of a component (with chroma subsampled, about 1536 bytes of RGB per byte). A file
/// that claims more is truncated or crafted, and decoding it only costs time (a
/// 350-byte JPEG declaring 131 megapixels took seconds).
const MAX_IMAGE_EXPANSION: u64 = 2048;
/// Below this, decoding is cheap whatever the file claims.
const IMAGE_EXPANSION_FLOOR: u64 = 1 << 20;

fn decoded_size_is_plausible(decoded: u64, file: usize) -> std::result::Result<(), String> {
    if decoded > MAX_IMAGE_DECODE_BYTES {
        return Err(format!(
            "its pixels would take {}, more than the limit of {}",
            cnnc_compiler::summary::bytes(decoded),
            cnnc_compiler::summary::bytes(MAX_IMAGE_DECODE_BYTES)
        ));
    }
    if decoded > IMAGE_EXPANSION_FLOOR && decoded / MAX_IMAGE_EXPANSION > file as u64 {
        return Err(format!(
            "it declares {} of pixels in a file of {file} bytes, more than a complete \
             image can compress to; the file is truncated or damaged",
            cnnc_compiler::summary::bytes(decoded)
        ));
    }
    Ok(())
}

/// Decodes, turning a panic of the decoder into an error: zune-jpeg 0.5.15, the newest
/// release, asserts on some damaged JPEGs instead of returning an error (its upsampler;
/// upstream issues etemesi254/zune-image#236 and #281, and the input our fuzzer found in
/// tests/regressions/image/). The panic's own report is kept quiet; its message goes
/// into the error.
fn decode_catching_panics(
    decoder: impl image::ImageDecoder,
) -> std::result::Result<image::ImageResult<image::DynamicImage>, String> {
    quiet_panics::install();
    quiet_panics::QUIET.with(|quiet| quiet.set(true));
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        image::DynamicImage::from_decoder(decoder)
    }));
    quiet_panics::QUIET.with(|quiet| quiet.set(false));
    decoded.map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("the decoder failed on it, the file is probably damaged ({message})")
    })
}

/// A panic hook that stays silent while this thread decodes an image and otherwise
/// does what the hook before it did.
mod quiet_panics {
    use std::cell::Cell;
    use std::sync::Once;

    thread_local! {
        pub static QUIET: Cell<bool> = const { Cell::new(false) };
    }

    pub fn install() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.with(Cell::get) {
                    previous(info);
                }
            }));
        });
    }
}

fn cover_and_crop(image: image::DynamicImage, width: u32, height: u32) -> image::DynamicImage {
    if image.width() == width && image.height() == height {
        return image;
    }
    let scale = (f64::from(width) / f64::from(image.width()))
        .max(f64::from(height) / f64::from(image.height()));
    let crop_w = ((f64::from(width) / scale).round() as u32).clamp(1, image.width());
    let crop_h = ((f64::from(height) / scale).round() as u32).clamp(1, image.height());
    image
        .crop_imm(
            (image.width() - crop_w) / 2,
            (image.height() - crop_h) / 2,
            crop_w,
            crop_h,
        )
        .resize_exact(width, height, FilterType::Triangle)
}

/// Repeats a batch of samples to fill `batch` (one image, batch 8: eight copies).
fn repeat_to_batch(samples: Tensor, batch: usize) -> Result<Tensor> {
    let have = samples.shape()[0];
    if have == batch {
        return Ok(samples);
    }
    if have != 1 {
        return Err(RuntimeError::Invalid(format!(
            "the inputs hold {have} samples but --batch is {batch}: give one input per sample, or one to repeat"
        )));
    }
    let views = vec![samples.view(); batch];
    Ok(ndarray::concatenate(Axis(0), &views).expect("copies of one shape"))
}

pub fn shape_text(dims: &[usize]) -> String {
    dims.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_cropped_to_cover_converted_and_normalised() {
        // 16 wide, 8 high: left half black, right half white, in RGB.
        let image = image::RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                image::Rgb([0, 0, 0])
            } else {
                image::Rgb([255, 255, 255])
            }
        });
        let scratch = tempfile::tempdir().expect("scratch dir");
        let dir = scratch.path();
        for (file, format) in [
            ("wide.png", image::ImageFormat::Png),
            ("wide.jpg", image::ImageFormat::Jpeg),
        ] {
            let path = dir.join(file);
            image.save_with_format(&path, format).expect("encode");
            // Scaled to cover 4x4 (8 wide, 4 high), then the centre 4 columns kept.
            let rgb = load(
                &InputSource::Files(vec![path.clone()]),
                &Shape(vec![3, 4, 4]),
                1,
                &Normalize::default_for(3),
            )
            .expect("loads");
            assert_eq!(rgb.shape(), &[1, 3, 4, 4]);
            let white_red = (1.0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0];
            let black_red = -IMAGENET_MEAN[0] / IMAGENET_STD[0];
            assert!(
                (rgb[[0, 0, 1, 3]] - white_red).abs() < 0.05,
                "{file}: {}",
                rgb[[0, 0, 1, 3]]
            );
            assert!(
                (rgb[[0, 0, 1, 0]] - black_red).abs() < 0.05,
                "{file}: {}",
                rgb[[0, 0, 1, 0]]
            );
            let gray = load(
                &InputSource::Files(vec![path]),
                &Shape(vec![1, 4, 4]),
                2,
                &Normalize::default_for(1),
            )
            .expect("loads");
            assert_eq!(
                gray.shape(),
                &[2, 1, 4, 4],
                "one image repeated to the batch"
            );
            assert!(
                gray[[1, 0, 2, 3]] > 0.95 && gray[[1, 0, 2, 0]] < 0.05,
                "{file}: {gray}"
            );
        }
    }

    #[test]
    fn images_that_declare_more_pixels_than_their_file_can_hold_are_refused() {
        // A 4096x4096 PNG of one colour compresses to about 50 KiB: it decodes.
        let solid = image::RgbImage::from_pixel(4096, 4096, image::Rgb([10, 200, 30]));
        let mut png = Vec::new();
        solid
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .expect("encode");
        let dims = [3, 8, 8];
        let normalize = Normalize::default_for(3);
        decode(Path::new("solid.png"), &png, &dims, &normalize).expect("a real image decodes");
        // The same file cut to its first kilobyte still declares 4096x4096.
        let error =
            decode(Path::new("cut.png"), &png[..1024], &dims, &normalize).expect_err("refused");
        assert!(
            error
                .to_string()
                .contains("the file is truncated or damaged"),
            "{error}"
        );
    }

    #[test]
    fn npy_headers_that_would_stall_the_parser_are_refused() {
        let with_header = |text: &str| {
            let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
            bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
            bytes
        };
        let nested = format!("{{'descr': '<f4', 'shape': {}(2,)", "[".repeat(200));
        let long = format!("{{'descr': '<f4', 'shape': (2,)}}{}", " ".repeat(20_000));
        for (header, expected) in [
            (nested, "nests brackets more than 8 deep"),
            (long, "numpy writes and reads at most 10000"),
        ] {
            let started = std::time::Instant::now();
            let error = decode(
                Path::new("x.npy"),
                &with_header(&header),
                &[2],
                &Normalize::default_for(1),
            )
            .expect_err("refused");
            assert!(error.to_string().contains(expected), "{error}");
            assert!(started.elapsed().as_secs() < 5, "refused before parsing");
        }
    }

    #[test]
    fn npy_inputs_take_a_sample_or_a_batch() {
        let scratch = tempfile::tempdir().expect("scratch dir");
        let dir = scratch.path();
        let sample = Tensor::from_shape_fn(IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f32);
        let path = dir.join("sample.npy");
        ndarray_npy::write_npy(&path, &sample).expect("write");
        let source = InputSource::Files(vec![path]);
        let batch =
            load(&source, &Shape(vec![2, 3]), 2, &Normalize::default_for(2)).expect("loads");
        assert_eq!(batch.shape(), &[2, 2, 3]);
        assert_eq!(batch[[1, 1, 2]], 5.0);
        let error = load(&source, &Shape(vec![3, 2]), 1, &Normalize::default_for(3))
            .expect_err("wrong shape");
        assert!(
            error
                .to_string()
                .contains("the input has shape 2x3 but the network takes 3x2"),
            "{error}"
        );
    }

    #[test]
    fn random_inputs_are_seeded() {
        let shape = Shape(vec![3, 2, 2]);
        let a = load(
            &InputSource::Random { seed: 1 },
            &shape,
            2,
            &Normalize::default_for(3),
        )
        .expect("random");
        let b = load(
            &InputSource::Random { seed: 1 },
            &shape,
            2,
            &Normalize::default_for(3),
        )
        .expect("random");
        let c = load(
            &InputSource::Random { seed: 2 },
            &shape,
            2,
            &Normalize::default_for(3),
        )
        .expect("random");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.shape(), &[2, 3, 2, 2]);
    }
}
