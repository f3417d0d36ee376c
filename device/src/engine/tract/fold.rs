//! Work on constants done once at load instead of on every frame.
//!
//! tract 0.23 leaves parts of an optimised int8 graph that depend only on the weights
//! to be run with every frame: for each quantized convolution, the whole kernel is
//! cast to i32 and summed per output channel (the input zero point's correction),
//! 5 % of an int8 frame. [`fold_constants`] evaluates every such node once and puts
//! its value in the graph as a constant.

use std::collections::HashMap;

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::konst::Const;

/// Replaces each node whose inputs are all constants, and whose value something else
/// reads, with that value; returns how many. Nodes that cannot be evaluated without a
/// plan (or at all, on their constant inputs) stay as they are, and so do those whose
/// value is larger than the graph's constants it comes from (a cast of a kernel to
/// i32, a broadcast of a scalar): a constant must not cost more memory than the work
/// it saves.
pub fn fold_constants(model: &mut TypedModel) -> TractResult<usize> {
    let bytes = |t: &Tensor| t.len() * t.datum_type().size_of();
    let mut values: HashMap<OutletId, TValue> = HashMap::new();
    // For each value, the bytes of the graph's constants it is computed from.
    let mut origin: HashMap<OutletId, usize> = HashMap::new();
    let mut folded = vec![];
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op_is::<Const>() {
            if let Some(konst) = &model.outlet_fact(id.into())?.konst {
                origin.insert(id.into(), bytes(konst));
                values.insert(id.into(), konst.clone().into_tvalue());
            }
            continue;
        }
        if node.inputs.is_empty() || node.outputs.len() != 1 {
            continue;
        }
        let Some(inputs) = node.inputs.iter().map(|i| values.get(i).cloned()).collect() else {
            continue;
        };
        if let Ok(Some(mut outputs)) = node.op.eval_out_of_plan(inputs) {
            origin.insert(id.into(), node.inputs.iter().map(|i| origin[i]).sum());
            values.insert(id.into(), outputs.remove(0));
            folded.push(id);
        }
    }
    // Only what a node that is not folded reads becomes a constant; the rest is dead.
    let mut replaced = 0;
    for id in folded {
        let outlet = OutletId::new(id, 0);
        let read_by_the_rest = model.node(id).outputs[0]
            .successors
            .iter()
            .any(|s| !values.contains_key(&OutletId::new(s.node, 0)))
            || model.output_outlets()?.contains(&outlet);
        let value = values[&outlet].clone().into_arc_tensor();
        if !read_by_the_rest || bytes(&value) > origin[&outlet] {
            continue;
        }
        let mut patch = TypedModelPatch::new("fold constants");
        let name = format!("{}.folded", model.node(id).name);
        let wire = patch.add_const(name, value)?;
        // A value whose fact tract would not take in the node's place stays computed.
        if patch.shunt_outside(model, outlet, wire).is_err() {
            continue;
        }
        patch.apply(model)?;
        replaced += 1;
    }
    model.compact()?;
    Ok(replaced)
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::{optimized, random_image, run, Conv};
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Nodes other than constants whose inputs are all constants.
    fn constant_work(model: &TypedModel) -> Vec<String> {
        let is_const = |o: &OutletId| model.node(o.node).op_is::<Const>();
        let nodes = model.nodes().iter();
        let constant = nodes.filter(|n| !n.inputs.is_empty() && n.inputs.iter().all(is_const));
        constant
            .map(|n| format!("{} {}", n.op.name(), n.name))
            .collect()
    }

    #[test]
    fn the_weight_sums_are_computed_once_and_the_output_is_the_same() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // As ResNet-18's layer4: a kernel whose i32 copy is over tract's own budget
        // for folding (4 MiB), so tract leaves the cast and the sum to every run.
        let conv = Conv {
            c: 256,
            h: 5,
            w: 6,
            o: 512,
            kernel: [3, 3],
            strides: [1, 1],
            pads: [1; 4],
            dilations: [1, 1],
            group: 1,
            signed: false,
        };
        let tracts = optimized(&conv, &mut rng);
        assert!(!constant_work(&tracts).is_empty());
        let mut folded = tracts.clone();
        assert!(fold_constants(&mut folded).unwrap() >= 1);
        assert_eq!(constant_work(&folded), Vec::<String>::new());
        assert!(folded.nodes().len() < tracts.nodes().len());
        let image = random_image(&conv, &mut rng);
        for threads in [1, 2] {
            let expected = run(tracts.clone(), &image, threads);
            assert_eq!(expected, run(folded.clone(), &image, threads));
        }
    }

    /// A folded value read both by another folded node and by the rest of the graph,
    /// and a broadcast of a scalar (larger than the constant it comes from).
    #[test]
    fn shared_values_fold_and_growing_ones_do_not() {
        use tract_onnx::tract_core::ops::array::MultiBroadcastTo;
        use tract_onnx::tract_core::ops::math::{add, mul};
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([1024])).unwrap();
        let c = model.add_const("c", tensor1(&[0.5f32; 1024])).unwrap();
        let a = model.wire_node("a", add(), &[c, c]).unwrap()[0];
        let b = model.wire_node("b", mul(), &[a, a]).unwrap()[0];
        let xa = model.wire_node("xa", add(), &[x, a]).unwrap()[0];
        let xb = model.wire_node("xb", mul(), &[xa, b]).unwrap()[0];
        let scalar = model.add_const("s", tensor1(&[2.0f32])).unwrap();
        let to = MultiBroadcastTo::new(tvec![1024.to_dim()].into());
        let wide = model.wire_node("wide", to, &[scalar]).unwrap()[0];
        let y = model.wire_node("y", add(), &[xb, wide]).unwrap()[0];
        model.select_output_outlets(&[y]).unwrap();
        let mut folded = model.clone();
        assert_eq!(fold_constants(&mut folded).unwrap(), 2);
        let names: Vec<&str> = folded.nodes().iter().map(|n| n.name.as_str()).collect();
        assert!(names.contains(&"wide"), "{names:?}");
        assert!(!names.contains(&"a") && !names.contains(&"b"), "{names:?}");
        let image: TValue = tensor1(&[1.0f32; 1024]).into();
        assert_eq!(run(model, &image, 1), run(folded, &image, 1));
    }
}
