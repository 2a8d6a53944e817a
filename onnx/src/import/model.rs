//! Reading what an ONNX model carries: its constant tensors and node attributes, with
//! every size read from the file checked against the bytes that hold it.

use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::tensor_shape_proto::dimension::Value as Dim;
use crate::proto::{AttributeProto, ModelProto, TensorProto, ValueInfoProto, type_proto};
use prost::Message;

/// Protobuf's own limit: a model above it cannot be a valid single-file ONNX model.
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

pub fn decode(bytes: &[u8]) -> Result<ModelProto, String> {
    // prost checks every length prefix against the bytes that remain, so a corrupt
    // length is an error here rather than a huge allocation.
    ModelProto::decode(bytes).map_err(|e| format!("this is not a readable ONNX model ({e})"))
}

/// A constant tensor: an initializer or the value of a `Constant` node.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub dims: Vec<usize>,
    pub values: Values,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Float(Vec<f32>),
    Int(Vec<i64>),
}

impl Constant {
    pub fn floats(&self) -> Option<&[f32]> {
        match &self.values {
            Values::Float(v) => Some(v),
            Values::Int(_) => None,
        }
    }

    pub fn ints(&self) -> Option<&[i64]> {
        match &self.values {
            Values::Int(v) => Some(v),
            Values::Float(_) => None,
        }
    }

    /// The value of a one-element float tensor (a scalar or `[1]`).
    pub fn scalar(&self) -> Option<f32> {
        match self.floats()? {
            [v] => Some(*v),
            _ => None,
        }
    }
}

pub fn constant(tensor: &TensorProto) -> Result<Constant, String> {
    let name = tensor.name.as_deref().unwrap_or("(unnamed)");
    if tensor.data_location == Some(DataLocation::External as i32) {
        return Err(format!(
            "tensor `{name}` is stored in an external data file, which `cnnc import` does not \
             read; save the model with its weights inside (onnx.save(model, path, \
             save_as_external_data=False))"
        ));
    }
    let dims = tensor
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor `{name}` has dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("tensor `{name}`: its dimensions {dims:?} overflow"))?;
    let values = match tensor.data_type.and_then(|t| DataType::try_from(t).ok()) {
        Some(DataType::Float) => Values::Float(elements(
            name,
            count,
            tensor.raw_data.as_deref(),
            &tensor.float_data,
            f32::from_le_bytes,
        )?),
        Some(DataType::Double) => Values::Float(
            elements(
                name,
                count,
                tensor.raw_data.as_deref(),
                &tensor.double_data,
                f64::from_le_bytes,
            )?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        ),
        Some(DataType::Int64) => Values::Int(elements(
            name,
            count,
            tensor.raw_data.as_deref(),
            &tensor.int64_data,
            i64::from_le_bytes,
        )?),
        Some(DataType::Int32) => Values::Int(
            elements(
                name,
                count,
                tensor.raw_data.as_deref(),
                &tensor.int32_data,
                i32::from_le_bytes,
            )?
            .into_iter()
            .map(i64::from)
            .collect(),
        ),
        other => {
            return Err(format!(
                "tensor `{name}` has element type {}, and `cnnc import` reads float32, \
                 float64, int32 and int64 tensors",
                other.map_or("(unknown)".to_string(), |t| t.as_str_name().to_string())
            ));
        }
    };
    Ok(Constant { dims, values })
}

/// A tensor's `count` elements, from its raw little-endian bytes or its typed field.
fn elements<T: Copy, const N: usize>(
    name: &str,
    count: usize,
    raw: Option<&[u8]>,
    typed: &[T],
    from_le: fn([u8; N]) -> T,
) -> Result<Vec<T>, String> {
    let values: Vec<T> = match raw {
        Some(raw) if !raw.is_empty() || typed.is_empty() => {
            if Some(raw.len()) != count.checked_mul(N) {
                return Err(format!(
                    "tensor `{name}` should hold {count} elements ({} bytes) but has {} bytes",
                    count.saturating_mul(N),
                    raw.len()
                ));
            }
            raw.chunks_exact(N)
                .map(|b| from_le(b.try_into().expect("chunks of N")))
                .collect()
        }
        _ => typed.to_vec(),
    };
    if values.len() != count {
        return Err(format!(
            "tensor `{name}` should hold {count} elements but has {}",
            values.len()
        ));
    }
    Ok(values)
}

/// A node's attributes, by name.
pub struct Attributes<'a>(pub &'a [AttributeProto]);

impl Attributes<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.0.iter().find(|a| a.name.as_deref() == Some(name))
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.get(name).and_then(|a| a.i)
    }

    pub fn float(&self, name: &str) -> Option<f32> {
        self.get(name).and_then(|a| a.f)
    }

    pub fn ints(&self, name: &str) -> Option<&[i64]> {
        self.get(name).map(|a| a.ints.as_slice())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.get(name)
            .and_then(|a| a.s.as_deref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorProto> {
        self.get(name).and_then(|a| a.t.as_ref())
    }
}

/// A graph input's per-sample shape (the batch dimension dropped), if every dimension
/// after the first is a known number.
pub fn sample_shape(input: &ValueInfoProto) -> Result<Vec<u64>, String> {
    let name = input.name.as_deref().unwrap_or("(unnamed)");
    let Some(type_proto::Value::TensorType(tensor)) =
        input.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input `{name}` is not a tensor"));
    };
    if tensor.elem_type != Some(DataType::Float as i32) {
        return Err(format!(
            "input `{name}` is not float32; `cnnc` networks take float32 inputs"
        ));
    }
    let dims = tensor
        .shape
        .as_ref()
        .map(|s| s.dim.as_slice())
        .unwrap_or_default();
    if !(dims.len() == 2 || dims.len() == 4) {
        return Err(format!(
            "input `{name}` has {} dimensions; `cnnc` networks take [N, C, H, W] or [N, F]",
            dims.len()
        ));
    }
    dims[1..]
        .iter()
        .map(|d| match d.value {
            Some(Dim::DimValue(v)) if v > 0 => Ok(v as u64),
            _ => Err(format!(
                "input `{name}` has a symbolic or missing size after the batch dimension; \
                 `cnnc` checks shapes at compile time and needs them all"
            )),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(dims: Vec<i64>, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: Some("t".into()),
            dims,
            data_type: Some(DataType::Float as i32),
            raw_data: Some(raw),
            ..Default::default()
        }
    }

    #[test]
    fn sizes_are_checked_against_the_bytes() {
        let ok = constant(&tensor(
            vec![2],
            [1f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
        assert_eq!(ok.expect("valid").floats(), Some(&[1.0, 2.0][..]));
        let short = constant(&tensor(vec![3], vec![0; 8])).expect_err("too few bytes");
        assert!(
            short.contains("should hold 3 elements (12 bytes) but has 8 bytes"),
            "{short}"
        );
        // Dimensions whose product overflows are refused before anything is allocated.
        let huge = constant(&tensor(vec![1 << 40, 1 << 40], Vec::new())).expect_err("overflow");
        assert!(huge.contains("overflow"), "{huge}");
        let negative = constant(&tensor(vec![-1], Vec::new())).expect_err("negative");
        assert!(negative.contains("dimension -1"), "{negative}");
    }

    #[test]
    fn external_data_and_other_types_are_explained() {
        let mut external = tensor(vec![1], Vec::new());
        external.data_location = Some(DataLocation::External as i32);
        assert!(
            constant(&external)
                .expect_err("external")
                .contains("external data")
        );
        let mut half = tensor(vec![1], vec![0, 0]);
        half.data_type = Some(DataType::Float16 as i32);
        assert!(constant(&half).expect_err("float16").contains("FLOAT16"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(&[0xff; 16]).is_err());
        assert!(decode(b"not a model at all").is_err());
    }
}
