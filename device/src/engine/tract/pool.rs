//! Max pooling on the int8 values rather than on their dequantized f32 copy.
//!
//! The `qlinear` graph goes back to f32 before ResNet's MaxPool: tract dequantizes the
//! stem's whole output (four times the pooled size), then pools 32-bit values on one
//! thread. Dequantizing is increasing in the value (its scale is positive), so the
//! largest dequantized value of a window is the dequantized largest byte:
//! [`pool_before_dequantize`] pools the bytes and dequantizes the pooled result, the
//! same f32 values from a quarter of the conversions and memory.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::cnn::{OptMaxPool, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::quant::DequantizeLinearF32;

/// Moves each MaxPool that only reads an int8 → f32 dequantization ahead of it;
/// returns how many.
pub fn pool_before_dequantize(model: &mut TypedModel) -> TractResult<usize> {
    let mut moved = 0;
    for id in model.eval_order()? {
        let node = model.node(id);
        let Some(pool) = node.op_as::<OptMaxPool>() else {
            continue;
        };
        let dequantize = model.node(node.inputs[0].node);
        let Some(dq) = dequantize.op_as::<DequantizeLinearF32>() else {
            continue;
        };
        let bytes = model.outlet_fact(dequantize.inputs[0])?.datum_type;
        // A scale that is not positive would not keep the order (NaN: none); a second
        // reader of the f32 values, or the graph's output, needs them anyway; index
        // outputs would name other positions.
        let increasing = dq.scale > 0.0;
        if !increasing
            || dequantize.outputs[0].successors.len() != 1
            || model.output_outlets()?.contains(&node.inputs[0])
            || pool.with_index_outputs.is_some()
            || !every_window_sees_the_input(&pool.pool_spec)
            || bytes.size_of() != 1
            || !bytes.is_integer()
        {
            continue;
        }
        let mut patch = TypedModelPatch::new("max pool before dequantize");
        let wire = patch.tap_model(model, dequantize.inputs[0])?;
        let name = format!("{}.int8", node.name);
        let wire = patch.wire_node(name, pool.clone(), &[wire])?[0];
        let name = format!("{}.pooled", dequantize.name);
        let wire = patch.wire_node(name, dq.clone(), &[wire])?[0];
        patch.shunt_outside(model, id.into(), wire)?;
        patch.apply(model)?;
        moved += 1;
    }
    model.compact()?;
    Ok(moved)
}

/// Whether every window covers at least one input value. tract fills a window that lies
/// wholly in the padding with the type's minimum, which is `f32::MIN` in f32 but a byte
/// in int8: pooling the bytes would then give another value.
fn every_window_sees_the_input(spec: &PoolSpec) -> bool {
    let kernel = &spec.kernel_shape;
    let within = |pads: &[usize]| pads.iter().zip(kernel).all(|(p, k)| p < k);
    let undilated = spec.dilations().iter().all(|&d| d == 1);
    undilated
        && match &spec.padding {
            PaddingSpec::Valid | PaddingSpec::SameUpper | PaddingSpec::SameLower => true,
            PaddingSpec::Explicit(before, after)
            | PaddingSpec::ExplicitOnnxPool(before, after, false) => {
                within(before) && within(after)
            }
            PaddingSpec::ExplicitOnnxPool(_, _, true) => false,
        }
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::run;
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use tract_onnx::tract_core::ops::cnn::MaxPool;
    use tract_onnx::tract_core::ops::math;
    use tract_onnx::tract_core::ops::nn::DataFormat;

    /// int8 → dequantize → MaxPool (ResNet's 3×3, stride 2, pad 1, or `kernel`), optimised.
    fn graph(dt: DatumType, shape: [usize; 4], kernel: usize, scale: f32) -> TypedModel {
        let mut model = TypedModel::default();
        let x = model.add_source("x", dt.fact(shape)).unwrap();
        let dq = DequantizeLinearF32 {
            scale,
            zero_point: 3,
        };
        let x = model.wire_node("dq", dq, &[x]).unwrap()[0];
        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![kernel, kernel],
            padding: PaddingSpec::Explicit(tvec![1, 0], tvec![1, 1]),
            dilations: None,
            strides: Some(tvec![2, 2]),
            input_channels: shape[1],
            output_channels: shape[1],
        };
        let y = model
            .wire_node("pool", MaxPool::new(spec, None), &[x])
            .unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        model.into_optimized().unwrap()
    }

    fn ops(model: &TypedModel) -> Vec<String> {
        let order = model.eval_order().unwrap();
        order
            .iter()
            .map(|&id| model.node(id).op.name().to_string())
            .collect()
    }

    #[test]
    fn pooling_the_bytes_gives_the_same_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for (dt, shape, kernel) in [
            (DatumType::U8, [1, 3, 9, 11], 3),
            (DatumType::I8, [1, 5, 8, 7], 3),
            (DatumType::I8, [1, 2, 5, 6], 2),
        ] {
            let tracts = graph(dt, shape, kernel, 0.037);
            let mut ours = tracts.clone();
            assert_eq!(pool_before_dequantize(&mut ours).unwrap(), 1);
            assert_eq!(ops(&ours), ["Source", "OptMaxPool", "DequantizeLinearF32"]);
            let len = shape.iter().product();
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let mut input = Tensor::from_shape(&shape, &bytes).unwrap();
            // SAFETY: i8 and u8 have the same size; any byte is either.
            unsafe { input.set_datum_type(dt) };
            let input: TValue = input.into();
            for threads in [1, 2] {
                let expected = run(tracts.clone(), &input, threads);
                assert_eq!(
                    expected,
                    run(ours.clone(), &input, threads),
                    "{dt:?} {shape:?}"
                );
            }
        }
    }

    #[test]
    fn a_negative_scale_or_a_second_reader_keeps_the_f32_pool() {
        let mut negative = graph(DatumType::I8, [1, 2, 6, 6], 3, -0.5);
        let pattern = ["Source", "DequantizeLinearF32", "OptMaxPool"];
        assert_eq!(ops(&negative), pattern);
        assert_eq!(pool_before_dequantize(&mut negative).unwrap(), 0);
        assert_eq!(ops(&negative), pattern);

        let mut model = TypedModel::default();
        let x = model.add_source("x", i8::fact([1, 2, 6, 6])).unwrap();
        let dq = DequantizeLinearF32 {
            scale: 0.5,
            zero_point: 0,
        };
        let x = model.wire_node("dq", dq, &[x]).unwrap()[0];
        let spec = PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![3, 3],
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: None,
            input_channels: 2,
            output_channels: 2,
        };
        let y = model
            .wire_node("pool", MaxPool::new(spec, None), &[x])
            .unwrap()[0];
        // The f32 values as an output of the graph, or read by another node.
        let mut output = model.clone();
        output.select_output_outlets(&[y, x]).unwrap();
        let mut output = output.into_optimized().unwrap();
        assert_eq!(pool_before_dequantize(&mut output).unwrap(), 0);
        let twice = model.wire_node("twice", math::add(), &[x, x]).unwrap()[0];
        model.select_output_outlets(&[y, twice]).unwrap();
        let mut read = model.into_optimized().unwrap();
        assert!(
            ops(&read).contains(&"OptMaxPool".to_string()),
            "{:?}",
            ops(&read)
        );
        assert_eq!(pool_before_dequantize(&mut read).unwrap(), 0);
    }

    #[test]
    fn a_window_wholly_in_the_padding_keeps_the_f32_pool() {
        let spec = |padding| PoolSpec {
            data_format: DataFormat::NCHW,
            kernel_shape: tvec![2, 3],
            padding,
            dilations: None,
            strides: None,
            input_channels: 1,
            output_channels: 1,
        };
        let explicit = |b: [usize; 2], a: [usize; 2]| {
            PaddingSpec::Explicit(b.into_iter().collect(), a.into_iter().collect())
        };
        assert!(every_window_sees_the_input(&spec(explicit([1, 2], [1, 2]))));
        assert!(every_window_sees_the_input(&spec(PaddingSpec::SameUpper)));
        assert!(!every_window_sees_the_input(&spec(explicit(
            [2, 0],
            [0, 0]
        ))));
        assert!(!every_window_sees_the_input(&spec(explicit(
            [0, 0],
            [0, 3]
        ))));
        let ceil = PaddingSpec::ExplicitOnnxPool(tvec![0, 0], tvec![0, 0], true);
        assert!(!every_window_sees_the_input(&spec(ceil)));
        let dilated = PoolSpec {
            dilations: Some(tvec![2, 1]),
            ..spec(PaddingSpec::Valid)
        };
        assert!(!every_window_sees_the_input(&dilated));
    }
}
