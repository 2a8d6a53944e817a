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
                .map(|p| load_file(p, &dims, normalize))
                .collect::<Result<Vec<Tensor>>>()?;
            let views: Vec<_> = samples.iter().map(|s| s.view()).collect();
            let stacked =
                ndarray::concatenate(Axis(0), &views).expect("samples share the network's shape");
            repeat_to_batch(stacked, batch)
        }
    }
}

/// One file as `[n, ...shape]`.
fn load_file(path: &Path, dims: &[usize], normalize: &Normalize) -> Result<Tensor> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        load_npy(path, dims)
    } else {
        load_image(path, dims, normalize)
    }
}

fn load_npy(path: &Path, dims: &[usize]) -> Result<Tensor> {
    let file = std::fs::File::open(path).map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let array: Tensor =
        ndarray_npy::ReadNpyExt::read_npy(std::io::BufReader::new(file)).map_err(|e| {
            RuntimeError::Npy {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
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

fn load_image(path: &Path, dims: &[usize], normalize: &Normalize) -> Result<Tensor> {
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
    let image = image::ImageReader::open(path)
        .map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(|e| RuntimeError::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let image = cover_and_crop(image, width as u32, height as u32);
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

/// Scales the image so it covers `width`x`height`, then crops the centre, the usual
/// ImageNet evaluation transform (without the 256/224 margin).
fn cover_and_crop(image: image::DynamicImage, width: u32, height: u32) -> image::DynamicImage {
    if image.width() == width && image.height() == height {
        return image;
    }
    let scale = (f64::from(width) / f64::from(image.width()))
        .max(f64::from(height) / f64::from(image.height()));
    let scaled_w = ((f64::from(image.width()) * scale).round() as u32).max(width);
    let scaled_h = ((f64::from(image.height()) * scale).round() as u32).max(height);
    let resized = image.resize_exact(scaled_w, scaled_h, FilterType::Triangle);
    resized.crop_imm(
        (scaled_w - width) / 2,
        (scaled_h - height) / 2,
        width,
        height,
    )
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

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cnnc-input-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

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
        let dir = scratch("crop");
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
    fn npy_inputs_take_a_sample_or_a_batch() {
        let dir = scratch("npy");
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
