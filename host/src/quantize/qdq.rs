//! The QDQ int8 graph, onnxruntime's fastest form on x86 and ARM: every quantised
//! value goes through `QuantizeLinear` → `DequantizeLinear` (uint8, zero point where
//! the calibrated range puts it), weights are int8 symmetric per output channel behind
//! a `DequantizeLinear` (axis 0) and biases int32 at the input scale × weight scale.
//! The `Conv`, `Add` and `MaxPool` nodes stay as they are: onnxruntime recognises the
//! DQ → op → Q pattern and runs its integer kernels (`QLinearConv`, `QLinearAdd`, u8
//! `MaxPool`). A `Relu` that is its producer's only reader is folded into the output's
//! range (zero point 0 clamps at 0), as onnxruntime's own quantiser does.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use segcam::onnx_card::pb;

use super::rewrite::{
    f32_tensor, f32_values, i32_tensor, i8_tensor, initialisers_after, quantize_weights, readers,
    simple_node, tensor, QParams, WeightScale,
};
use pb::tensor_proto::DataType;

/// What the rewrite quantises: the nodes, and which `Relu` each folds.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Indices of the `Conv`, `Add` and `MaxPool` nodes computed in int8.
    pub nodes: Vec<usize>,
    /// Relu node → the node it is folded into.
    pub folded: HashMap<usize, usize>,
    /// Values whose range calibration measures, each once.
    pub calibrated: Vec<String>,
    /// MaxPool outputs: they take their input's parameters (onnxruntime needs the two equal).
    pub inherits: HashMap<String, String>,
}

/// The quantisable nodes of `graph`, leaving out the convolutions named in `keep_f32`.
pub fn plan(graph: &pb::GraphProto, keep_f32: &HashSet<String>) -> Plan {
    let initialisers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let readers = readers(graph);
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut plan = Plan {
        nodes: Vec::new(),
        folded: HashMap::new(),
        calibrated: Vec::new(),
        inherits: HashMap::new(),
    };
    let mut seen = HashSet::new();
    let mut calibrate = |plan: &mut Plan, v: &str| {
        if seen.insert(v.to_string()) {
            plan.calibrated.push(v.to_string());
        }
    };
    for (i, node) in graph.node.iter().enumerate() {
        let quantised = match node.op_type.as_str() {
            "Conv" => {
                node.input.len() >= 2
                    && node.attribute.iter().all(|a| a.name != "group" || a.i == 1)
                    && node.input[1..]
                        .iter()
                        .all(|n| n.is_empty() || initialisers.contains(n.as_str()))
                    && !keep_f32.contains(&node.name)
            }
            "Add" => {
                node.input.len() == 2
                    && node
                        .input
                        .iter()
                        .all(|n| !initialisers.contains(n.as_str()))
            }
            // Only plain max pooling (one output, no indices).
            "MaxPool" => node.output.len() == 1,
            _ => false,
        };
        if !quantised {
            continue;
        }
        plan.nodes.push(i);
        let out = node.output[0].as_str();
        if node.op_type == "MaxPool" {
            calibrate(&mut plan, &node.input[0]);
            plan.inherits.insert(out.to_string(), node.input[0].clone());
            continue;
        }
        let data_inputs = if node.op_type == "Conv" { 1 } else { 2 };
        for input in &node.input[..data_inputs] {
            calibrate(&mut plan, input);
        }
        let relu = match readers.get(out).map(Vec::as_slice) {
            Some(&[r]) if graph.node[r].op_type == "Relu" && !outputs.contains(out) => Some(r),
            _ => None,
        };
        match relu {
            Some(r) => {
                plan.folded.insert(r, i);
                calibrate(&mut plan, &graph.node[r].output[0]);
            }
            None => calibrate(&mut plan, out),
        }
    }
    plan
}

/// Rewrite `model` in QDQ form given the calibrated parameters of `plan`'s values.
pub fn rewrite(
    model: &pb::ModelProto,
    plan: &Plan,
    params: &HashMap<String, QParams>,
    weights: &dyn Fn(&str) -> WeightScale,
) -> Result<pb::ModelProto> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    if plan.nodes.is_empty() {
        bail!("the model has no node that can be quantised");
    }
    let param = |value: &str| -> Result<QParams> {
        let source = plan.inherits.get(value).map_or(value, String::as_str);
        params
            .get(source)
            .copied()
            .with_context(|| format!("no calibrated range for '{value}'"))
    };
    let quantised: HashSet<usize> = plan.nodes.iter().copied().collect();
    let initialisers: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    // A folded Relu's output is its producer's output.
    let folded_output: HashMap<usize, &str> = plan
        .folded
        .iter()
        .map(|(&relu, &node)| (node, graph.node[relu].output[0].as_str()))
        .collect();

    let mut out = Writer::default();
    let mut dropped: HashSet<String> = HashSet::new();
    for (i, node) in graph.node.iter().enumerate() {
        if plan.folded.contains_key(&i) {
            continue;
        }
        let mut node = node.clone();
        // Every reader of a quantised value reads its dequantised form, so that the
        // producer's only reader is its QuantizeLinear (what onnxruntime's fusion needs).
        for input in node.input.iter_mut() {
            if let Some(dq) = out.dequantised.get(input.as_str()) {
                *input = dq.clone();
            }
        }
        if !quantised.contains(&i) {
            out.nodes.push(node);
            continue;
        }
        let data_inputs = match node.op_type.as_str() {
            "Conv" | "MaxPool" => 1,
            _ => 2,
        };
        for k in 0..data_inputs {
            let original = &graph.node[i].input[k];
            if !out.dequantised.contains_key(original.as_str()) {
                // A value made by an f32 node (or the graph's input): quantised here.
                node.input[k] = out.quantise(original, param(original)?);
            }
        }
        if node.op_type == "Conv" {
            let x = param(&graph.node[i].input[0])?;
            conv_weights(&mut node, x, &initialisers, weights, &mut out, &mut dropped)?;
        }
        // The output (the folded Relu's, if any) under its own name, quantised.
        let output = folded_output
            .get(&i)
            .map_or(graph.node[i].output[0].as_str(), |o| *o)
            .to_string();
        node.output[0] = output.clone();
        out.nodes.push(node);
        out.quantise(&output, param(&output)?);
    }
    // Graph outputs keep their names: a quantised output is read back in f32.
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    for name in graph_outputs {
        if out.dequantised.contains_key(name) {
            bail!("the graph's output '{name}' would be quantised; a segcam model ends in an f32 node");
        }
    }
    let Writer { nodes, added, .. } = out;
    let kept = initialisers_after(graph, &nodes, &dropped, added);
    let mut model = model.clone();
    // QuantizeLinear/DequantizeLinear with per-axis scales need opset 13.
    for opset in model.opset_import.iter_mut() {
        if opset.domain.is_empty() && opset.version < 13 {
            opset.version = 13;
        }
    }
    let g = model.graph.as_mut().expect("checked above");
    g.initializer = kept;
    g.node = nodes;
    Ok(model)
}

/// The nodes and initialisers the rewrite adds, and the values it has quantised.
#[derive(Default)]
struct Writer {
    nodes: Vec<pb::NodeProto>,
    added: Vec<pb::TensorProto>,
    /// f32 name → dequantised name.
    dequantised: HashMap<String, String>,
}

impl Writer {
    /// `value` → QuantizeLinear → DequantizeLinear (once); the dequantised name.
    fn quantise(&mut self, value: &str, p: QParams) -> String {
        if let Some(dq) = self.dequantised.get(value) {
            return dq.clone();
        }
        let (scale, zero) = (format!("{value}.scale"), format!("{value}.zero_point"));
        self.added.push(f32_tensor(&scale, &[], &[p.scale]));
        self.added
            .push(tensor(&zero, &[], DataType::Uint8, vec![p.zero_point_u8()]));
        let (q, dq) = (format!("{value}.q"), format!("{value}.dq"));
        self.nodes.push(simple_node(
            "QuantizeLinear",
            &format!("{value}.quantize"),
            &[value, &scale, &zero],
            &q,
        ));
        self.nodes.push(simple_node(
            "DequantizeLinear",
            &format!("{value}.dequantize"),
            &[&q, &scale, &zero],
            &dq,
        ));
        self.dequantised.insert(value.to_string(), dq.clone());
        dq
    }
}

/// The convolution's weights as int8 + DequantizeLinear (axis 0), its bias as int32 +
/// DequantizeLinear at input scale × weight scale.
fn conv_weights(
    node: &mut pb::NodeProto,
    x: QParams,
    initialisers: &HashMap<&str, &pb::TensorProto>,
    weights: &dyn Fn(&str) -> WeightScale,
    out: &mut Writer,
    dropped: &mut HashSet<String>,
) -> Result<()> {
    let (nodes, added) = (&mut out.nodes, &mut out.added);
    let name = node.name.clone();
    let weight_name = node.input[1].clone();
    let weight = initialisers
        .get(weight_name.as_str())
        .with_context(|| format!("'{name}': weight '{weight_name}' missing"))?;
    let dims = weight.dims.clone();
    let w = f32_values(weight).with_context(|| format!("'{weight_name}'"))?;
    let channels = *dims.first().context("a weight without dimensions")? as usize;
    let qw = quantize_weights(&w, channels, weights(&name));
    dropped.insert(weight_name.clone());
    let c = [channels as i64];
    added.push(i8_tensor(&format!("{name}.weight_q"), &dims, &qw.values));
    added.push(f32_tensor(&format!("{name}.weight_scale"), &c, &qw.scales));
    added.push(i8_tensor(
        &format!("{name}.weight_zero_point"),
        &c,
        &vec![0; channels],
    ));
    nodes.push(axis0_dequantize(
        &format!("{name}.weight"),
        &format!("{name}.weight_dq"),
    ));
    node.input[1] = format!("{name}.weight_dq");

    if let Some(b) = node.input.get(2).filter(|b| !b.is_empty()).cloned() {
        let t = initialisers
            .get(b.as_str())
            .with_context(|| format!("'{name}': bias '{b}' missing"))?;
        let bias = f32_values(t).with_context(|| format!("'{b}'"))?;
        dropped.insert(b);
        let scales: Vec<f32> = qw.scales.iter().map(|s| x.scale * s).collect();
        let q: Vec<i32> = bias
            .iter()
            .zip(&scales)
            .map(|(b, s)| (b / s).round().clamp(i32::MIN as f32, i32::MAX as f32) as i32)
            .collect();
        added.push(i32_tensor(&format!("{name}.bias_q"), &c, &q));
        added.push(f32_tensor(&format!("{name}.bias_scale"), &c, &scales));
        added.push(i32_tensor(
            &format!("{name}.bias_zero_point"),
            &c,
            &vec![0; channels],
        ));
        nodes.push(axis0_dequantize(
            &format!("{name}.bias"),
            &format!("{name}.bias_dq"),
        ));
        node.input[2] = format!("{name}.bias_dq");
    }
    Ok(())
}

/// `DequantizeLinear(P_q, P_scale, P_zero_point, axis=0)` for the initialisers named `P_*`.
fn axis0_dequantize(prefix: &str, output: &str) -> pb::NodeProto {
    let mut node = simple_node(
        "DequantizeLinear",
        &format!("{prefix}.dequantize"),
        &[
            &format!("{prefix}_q"),
            &format!("{prefix}_scale"),
            &format!("{prefix}_zero_point"),
        ],
        output,
    );
    node.attribute.push(pb::AttributeProto {
        name: "axis".into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: 0,
        ..Default::default()
    });
    node
}
