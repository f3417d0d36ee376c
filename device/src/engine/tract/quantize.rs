//! f32 → int8 quantization in a form the compiler vectorises.
//!
//! The `qlinear` graph goes back to f32 around every `Add` and `MaxPool`, so each
//! residual block ends with a `QuantizeLinear`. tract 0.23 rounds each value with a
//! branching scalar function (`round_ties_to_even`): 10 % of an int8 frame on one
//! thread. [`QuantizeI8`] computes the same bytes with the float trick (adding and
//! taking away 1.5·2²³ rounds to the nearest integer, ties to even, in the default
//! rounding mode), branch-free, on the run's threads.

use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::tract_core;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
use tract_onnx::tract_core::ops::quant::QuantizeLinearI8;

/// Replaces every f32 `QuantizeLinearI8` of `model` with [`QuantizeI8`]; returns how
/// many.
pub fn use_quantize_i8(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, |model, node| {
        let Some(tract) = node
            .op_as::<ElementWiseOp>()
            .and_then(|op| op.0.downcast_ref::<QuantizeLinearI8>())
        else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(node.id.into())?;
        if input.datum_type != f32::datum_type() || output.datum_type.size_of() != 1 {
            return Ok(None);
        }
        Ok(Some(Box::new(QuantizeI8 {
            scale: tract.scale,
            zero_point: tract.zero_point,
            output: output.datum_type,
        })))
    })
}

/// `clamp(round_ties_to_even(x · scale) + zero_point, -128, 127)`, as tract's
/// `QuantizeLinearI8` (whose `scale` is already the reciprocal of ONNX's).
#[derive(Debug, Clone)]
pub struct QuantizeI8 {
    scale: f32,
    zero_point: i8,
    /// tract's type for the result (`i8`, or `QI8` with its parameters).
    output: DatumType,
}

impl PartialEq for QuantizeI8 {
    fn eq(&self, other: &Self) -> bool {
        self.scale.to_bits() == other.scale.to_bits()
            && self.zero_point == other.zero_point
            && self.output == other.output
    }
}

impl Eq for QuantizeI8 {}

impl std::hash::Hash for QuantizeI8 {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.scale.to_bits(), self.zero_point, self.output).hash(state);
    }
}

impl QuantizeI8 {
    fn quantize(&self, xs: &[f32], ys: &mut [i8]) {
        // Above 2²² in magnitude the sum is no longer exact, but such values saturate.
        const ROUND: f32 = 1.5 * (1u32 << 23) as f32;
        let zero_point = self.zero_point as f32;
        for (x, y) in xs.iter().zip(ys) {
            let v = x * self.scale;
            // tract turns NaN into the zero point (its cast of NaN is 0).
            let v = if v.is_nan() { 0.0 } else { v };
            let rounded = (v + ROUND) - ROUND;
            let clamped = (rounded + zero_point).clamp(-128.0, 127.0);
            // SAFETY: a whole number in i32's range (NaN is gone above). The checked
            // cast would keep the compiler from vectorising the loop.
            *y = unsafe { clamped.to_int_unchecked::<i32>() } as i8;
        }
    }

    fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let xs = input.try_as_plain_ram()?;
        let xs = xs.as_slice::<f32>()?;
        // SAFETY: every byte is written below.
        let mut output = unsafe { Tensor::uninitialized_dt(self.output, input.shape())? };
        let mut plain = output.try_as_plain_ram_mut()?;
        let bytes = plain.as_bytes_mut();
        // SAFETY: i8 and u8 have the same size and alignment, and any byte is an i8.
        let ys =
            unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut i8, bytes.len()) };
        par_chunks_mut(ys, 1, xs.len(), |first, ys| {
            self.quantize(&xs[first..first + ys.len()], ys);
            Ok(())
        })?;
        Ok(tvec!(output.into_tvalue()))
    }
}

impl Op for QuantizeI8 {
    fn name(&self) -> StaticName {
        "QuantizeI8".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "scale: {} zero point: {}",
            self.scale, self.zero_point
        )])
    }

    tract_core::op_as_typed_op!();
}

impl EvalOp for QuantizeI8 {
    tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run(inputs)
    }
}

impl TypedOp for QuantizeI8 {
    tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.output.fact(inputs[0].shape.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tract_onnx::tract_core::ops::quant::quantize_linear_i8;

    /// Values that end on .5 after scaling (the ties), near the clamp, huge, and not
    /// numbers at all, with ordinary ones between.
    fn awkward_values(scale: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
        let mut values: Vec<f32> = (-300..300).map(|i| (i as f32 + 0.5) / scale).collect();
        values.extend((0..5000).map(|_| rng.random_range(-200.0..200.0) / scale));
        // (Not past i32 once scaled: tract adds the zero point to an i32 that can overflow.)
        values.extend([0.0, -0.0, 1e7, -1e7, 4e6, -4e6, f32::NAN, f32::MIN_POSITIVE]);
        values
    }

    #[test]
    fn quantizes_as_tract_does() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (scale, zero_point) in [(12.5f32, 0i8), (0.37, -128), (41.0, 17), (3.0, 127)] {
            let values = awkward_values(scale, &mut rng);
            let input = tensor1(&values);
            let tract = ElementWiseOp(quantize_linear_i8(scale, zero_point).0, None);
            let expected = tract.eval_out_of_plan(tvec![input.clone().into()]);
            let ours = QuantizeI8 {
                scale,
                zero_point,
                output: i8::datum_type(),
            };
            let got = ours
                .run(tvec![input.into()])
                .unwrap()
                .remove(0)
                .into_tensor();
            let expected = expected.unwrap().unwrap().remove(0).into_tensor();
            let bytes = |t: &Tensor| t.try_as_plain_ram().unwrap().as_bytes().to_vec();
            let (expected, got) = (bytes(&expected), bytes(&got));
            for ((x, e), g) in values.iter().zip(expected).zip(got) {
                assert_eq!(e as i8, g as i8, "{x} × {scale} + {zero_point}");
            }
        }
    }
}
