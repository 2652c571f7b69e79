//! Merging requests into one batch along the first dimension, and splitting outputs back.

use crate::core::tensor::{Tensor, TensorData};
use crate::error::{Error, Result};

/// True when `b` can be stacked under `a`: same inputs, datatypes and trailing dimensions.
pub fn compatible(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.datatype() == y.datatype()
                && x.shape.len() == y.shape.len()
                && x.shape.get(1..) == y.shape.get(1..)
        })
}

/// Stacks each input of `parts` (requests of `rows[i]` rows) along the first dimension.
pub fn merge(parts: &[&[Tensor]], rows: &[usize]) -> Result<Vec<Tensor>> {
    let first = parts
        .first()
        .ok_or_else(|| Error::Internal("empty batch".into()))?;
    let total: usize = rows.iter().sum();
    let mut merged = Vec::with_capacity(first.len());
    for (i, proto) in first.iter().enumerate() {
        let elements: usize = parts.iter().map(|p| p[i].data.len()).sum();
        let mut data = TensorData::with_capacity(proto.datatype(), elements);
        for p in parts {
            // Copies: each request keeps its own inputs, so a failed batch can be retried per request.
            data.append(&p[i].data).map_err(Error::Internal)?;
        }
        let mut shape = proto.shape.clone();
        shape[0] = total as i64;
        merged.push(Tensor::new(proto.name.clone(), shape, data));
    }
    Ok(merged)
}

/// Splits each output of a merged run into one output set per request, by rows.
pub fn split(outputs: Vec<Tensor>, rows: &[usize]) -> Result<Vec<Vec<Tensor>>> {
    let total: usize = rows.iter().sum();
    let mut per_request: Vec<Vec<Tensor>> = (0..rows.len())
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as i64) {
            return Err(Error::Inference(format!(
                "output '{}' has shape {:?}, whose first dimension is not the batch's {total} rows, \
                 so it cannot be split per request; set batching.max_batch_size = 0 for this model",
                out.name, out.shape
            )));
        }
        let per_row = out.data.len().checked_div(total).unwrap_or(0);
        let counts: Vec<usize> = rows.iter().map(|r| r * per_row).collect();
        let parts = out.data.split(&counts).map_err(Error::Internal)?;
        for ((dest, part), &r) in per_request.iter_mut().zip(parts).zip(rows) {
            let mut shape = out.shape.clone();
            shape[0] = r as i64;
            dest.push(Tensor::new(out.name.clone(), shape, part));
        }
    }
    Ok(per_request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, rows: usize, cols: usize, start: f32) -> Tensor {
        let data = (0..rows * cols).map(|i| start + i as f32).collect();
        Tensor::new(name, vec![rows as i64, cols as i64], TensorData::Fp32(data))
    }

    #[test]
    fn merge_then_split_restores_each_request() {
        let a = vec![t("x", 1, 3, 0.0)];
        let b = vec![t("x", 2, 3, 100.0)];
        assert!(compatible(&a, &b));
        let merged = merge(&[&a, &b], &[1, 2]).unwrap();
        assert_eq!(merged[0].shape, vec![3, 3]);
        let back = split(merged, &[1, 2]).unwrap();
        assert_eq!(back[0], a);
        assert_eq!(back[1], b);
    }

    #[test]
    fn incompatible_trailing_dims() {
        assert!(!compatible(&[t("x", 1, 3, 0.0)], &[t("x", 1, 4, 0.0)]));
        let other_type = Tensor::new("x", vec![1, 3], TensorData::Fp64(vec![0.0; 3]));
        assert!(!compatible(&[t("x", 1, 3, 0.0)], &[other_type]));
    }

    #[test]
    fn split_refuses_outputs_without_the_batch_dimension() {
        let out = vec![t("y", 1, 4, 0.0)];
        let e = split(out, &[1, 2]).unwrap_err();
        assert!(e.to_string().contains("max_batch_size = 0"), "{e}");
    }
}
