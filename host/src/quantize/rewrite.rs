//! The int8 graph: every `Conv` becomes a `QLinearConv` (int8 activations, int8
//! weights per output channel, int32 bias), which tract runs with its integer matrix
//! kernels. A `Relu` that is its convolution's only reader is folded into the output's
//! range. Everything else (`Add`, `MaxPool`, the upsampler's reshuffles) stays f32,
//! with `QuantizeLinear`/`DequantizeLinear` only where a value crosses between the two:
//! tract has no `QLinearAdd`, and it runs QDQ-style convolutions in f32.

use std::collections::{HashMap, HashSet};

use anyhow::{bail, Context, Result};
use segcam::onnx_card::pb;

use pb::tensor_proto::DataType;

/// Affine int8 quantisation of one tensor: `x ≈ scale · (q − zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i8,
}

impl QParams {
    /// The same grid with a uint8 zero point (QDQ activations): q_u8 = q_i8 + 128.
    pub fn zero_point_u8(&self) -> u8 {
        (self.zero_point as i16 + 128) as u8
    }

    /// The parameters that cover `lo..=hi` (widened to include 0, which must be exact:
    /// it is the padding value and what a folded `Relu` clamps to).
    pub fn covering(lo: f32, hi: f32) -> Self {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero_point = (-128.0 - lo / scale).round().clamp(-128.0, 127.0) as i8;
        Self { scale, zero_point }
    }
}

/// One convolution the rewrite turns into int8: where it reads and what it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedConv {
    /// Index of the `Conv` node.
    pub node: usize,
    pub input: String,
    /// The value the int8 output stands for: the convolution's output, or that of the
    /// `Relu` folded into it.
    pub output: String,
    /// The folded `Relu` node, if any.
    pub relu: Option<usize>,
}

/// The convolutions of `graph` that can be quantised: plain 2-D, ungrouped, weights
/// (and bias, if any) as initialisers, and not named in `keep_f32`.
pub fn plan(graph: &pb::GraphProto, keep_f32: &HashSet<String>) -> Vec<QuantizedConv> {
    let initialisers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let readers = readers(graph);
    let outputs: HashSet<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
    let mut convs = Vec::new();
    for (i, node) in graph.node.iter().enumerate() {
        let ungrouped = node.attribute.iter().all(|a| a.name != "group" || a.i == 1);
        let params_known = node
            .input
            .iter()
            .skip(1)
            .all(|n| initialisers.contains(n.as_str()));
        if node.op_type != "Conv"
            || !ungrouped
            || !params_known
            || node.input.len() < 2
            || keep_f32.contains(&node.name)
        {
            continue;
        }
        let out = node.output[0].as_str();
        let relu = match readers.get(out).map(Vec::as_slice) {
            Some(&[r]) if graph.node[r].op_type == "Relu" && !outputs.contains(out) => Some(r),
            _ => None,
        };
        convs.push(QuantizedConv {
            node: i,
            input: node.input[0].clone(),
            output: relu
                .map_or(out, |r| graph.node[r].output[0].as_str())
                .to_string(),
            relu,
        });
    }
    convs
}

/// The values whose ranges calibration must measure for `convs`, each once.
pub fn calibrated_values(convs: &[QuantizedConv]) -> Vec<String> {
    let mut seen = HashSet::new();
    convs
        .iter()
        .flat_map(|c| [c.input.clone(), c.output.clone()])
        .filter(|v| seen.insert(v.clone()))
        .collect()
}

/// Rewrite `model` with the planned convolutions in int8, given each calibrated value's
/// parameters. The f32 weights of those convolutions are dropped.
pub fn rewrite(
    model: &pb::ModelProto,
    convs: &[QuantizedConv],
    params: &HashMap<String, QParams>,
    weights: &dyn Fn(&str) -> WeightScale,
) -> Result<pb::ModelProto> {
    let graph = model.graph.as_ref().context("the model has no graph")?;
    let q = |value: &str| -> Result<QParams> {
        params
            .get(value)
            .copied()
            .with_context(|| format!("no calibrated range for '{value}'"))
    };
    let by_node: HashMap<usize, &QuantizedConv> = convs.iter().map(|c| (c.node, c)).collect();
    let folded: HashSet<usize> = convs.iter().filter_map(|c| c.relu).collect();
    let int8_readers: HashSet<usize> = by_node.keys().copied().collect();
    let readers = readers(graph);
    let outputs: HashSet<String> = graph.output.iter().map(|o| o.name.clone()).collect();

    let initialisers: HashMap<&str, &pb::TensorProto> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    let mut added: Vec<pb::TensorProto> = Vec::new();
    let mut dropped: HashSet<String> = HashSet::new();
    // Values available in int8, by their f32 name.
    let mut int8: HashSet<String> = HashSet::new();
    let mut scaled: HashSet<String> = HashSet::new();
    let mut nodes = Vec::with_capacity(graph.node.len() * 2);

    for (i, node) in graph.node.iter().enumerate() {
        if folded.contains(&i) {
            continue;
        }
        let Some(conv) = by_node.get(&i) else {
            nodes.push(node.clone());
            continue;
        };
        let (x, y) = (q(&conv.input)?, q(&conv.output)?);
        for (value, p) in [(&conv.input, x), (&conv.output, y)] {
            if scaled.insert(value.clone()) {
                added.push(f32_scalar(&format!("{value}.scale"), p.scale));
                added.push(i8_tensor(
                    &format!("{value}.zero_point"),
                    &[],
                    &[p.zero_point],
                ));
            }
        }
        if int8.insert(conv.input.clone()) {
            nodes.push(simple_node(
                "QuantizeLinear",
                &format!("{}.quantize", conv.input),
                &[
                    &conv.input,
                    &format!("{}.scale", conv.input),
                    &format!("{}.zero_point", conv.input),
                ],
                &int8_name(&conv.input),
            ));
        }

        let weight_name = &node.input[1];
        let weight = initialisers
            .get(weight_name.as_str())
            .with_context(|| format!("'{}': weight '{weight_name}' missing", node.name))?;
        let dims = weight.dims.clone();
        let w = f32_values(weight).with_context(|| format!("'{weight_name}'"))?;
        let channels = *dims.first().context("a weight without dimensions")? as usize;
        let bias = match node.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => {
                let t = initialisers
                    .get(b.as_str())
                    .with_context(|| format!("'{}': bias '{b}' missing", node.name))?;
                dropped.insert(b.clone());
                f32_values(t).with_context(|| format!("'{b}'"))?
            }
            None => vec![0.0; channels],
        };
        dropped.insert(weight_name.clone());
        let mode = weights(&node.name);
        let qw = quantize_weights(&w, channels, mode);
        let bias_q: Vec<i32> = bias
            .iter()
            .zip(&qw.scales)
            .map(|(b, s)| {
                (b / (x.scale * s))
                    .round()
                    .clamp(i32::MIN as f32, i32::MAX as f32) as i32
            })
            .collect();
        let name = &node.name;
        added.push(i8_tensor(&format!("{name}.weight_q"), &dims, &qw.values));
        // A per-tensor scale is written as a scalar: that is what tract fuses.
        added.push(match mode {
            WeightScale::PerChannel => f32_tensor(
                &format!("{name}.weight_scale"),
                &[channels as i64],
                &qw.scales,
            ),
            WeightScale::PerTensor => f32_scalar(&format!("{name}.weight_scale"), qw.scales[0]),
        });
        // Symmetric weights: one zero point (0) serves every channel.
        added.push(i8_tensor(&format!("{name}.weight_zero_point"), &[], &[0]));
        added.push(i32_tensor(
            &format!("{name}.bias_q"),
            &[channels as i64],
            &bias_q,
        ));
        nodes.push(pb::NodeProto {
            op_type: "QLinearConv".into(),
            name: name.clone(),
            input: vec![
                int8_name(&conv.input),
                format!("{}.scale", conv.input),
                format!("{}.zero_point", conv.input),
                format!("{name}.weight_q"),
                format!("{name}.weight_scale"),
                format!("{name}.weight_zero_point"),
                format!("{}.scale", conv.output),
                format!("{}.zero_point", conv.output),
                format!("{name}.bias_q"),
            ],
            output: vec![int8_name(&conv.output)],
            attribute: node.attribute.clone(),
            ..Default::default()
        });
        int8.insert(conv.output.clone());

        // Dequantise for any reader that is not an int8 convolution.
        let f32_readers = readers
            .get(conv.output.as_str())
            .is_some_and(|r| r.iter().any(|n| !int8_readers.contains(n)));
        if f32_readers || outputs.contains(&conv.output) {
            nodes.push(simple_node(
                "DequantizeLinear",
                &format!("{}.dequantize", conv.output),
                &[
                    &int8_name(&conv.output),
                    &format!("{}.scale", conv.output),
                    &format!("{}.zero_point", conv.output),
                ],
                &conv.output,
            ));
        }
    }
    let kept = initialisers_after(graph, &nodes, &dropped, added);
    if convs.is_empty() {
        bail!("the model has no convolution that can be quantised");
    }
    let mut model = model.clone();
    let out = model.graph.as_mut().expect("checked above");
    out.initializer = kept;
    out.node = nodes;
    Ok(model)
}

/// The graph's initialisers that `nodes` still read (those in `dropped` only if some
/// node does), in their original order, then `added`.
pub(super) fn initialisers_after(
    graph: &pb::GraphProto,
    nodes: &[pb::NodeProto],
    dropped: &HashSet<String>,
    added: Vec<pb::TensorProto>,
) -> Vec<pb::TensorProto> {
    let still_read: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .collect();
    let mut kept: Vec<pb::TensorProto> = graph
        .initializer
        .iter()
        .filter(|t| !dropped.contains(&t.name) || still_read.contains(t.name.as_str()))
        .cloned()
        .collect();
    kept.extend(added);
    kept
}

/// For each value, the nodes that read it.
pub(super) fn readers(graph: &pb::GraphProto) -> HashMap<&str, Vec<usize>> {
    let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        for input in &node.input {
            map.entry(input.as_str()).or_default().push(i);
        }
    }
    map
}

fn int8_name(value: &str) -> String {
    format!("{value}.int8")
}

/// How a convolution's int8 weights are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightScale {
    /// One scale per output channel: the finest, but tract then requantises outside
    /// its matrix kernel.
    PerChannel,
    /// One scale for the tensor: tract fuses the requantisation into the kernel.
    PerTensor,
}

/// Int8 weights, symmetric (zero point 0), one scale per output channel (the first
/// dimension; all equal when per tensor).
pub(super) struct QuantizedWeights {
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

pub(super) fn quantize_weights(w: &[f32], channels: usize, mode: WeightScale) -> QuantizedWeights {
    let per = w.len() / channels;
    let mut values = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    let tensor_max = w.iter().fold(0f32, |m, v| m.max(v.abs()));
    for row in w.chunks(per) {
        let max = match mode {
            WeightScale::PerChannel => row.iter().fold(0f32, |m, v| m.max(v.abs())),
            WeightScale::PerTensor => tensor_max,
        };
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        values.extend(
            row.iter()
                .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(scale);
    }
    QuantizedWeights { values, scales }
}

/// The relative RMS error of `w` quantised to int8 with `mode`: ‖w − ŵ‖ / ‖w‖.
pub fn weight_error(w: &[f32], channels: usize, mode: WeightScale) -> f64 {
    let q = quantize_weights(w, channels, mode);
    let per = w.len() / channels.max(1);
    let (mut err, mut norm) = (0f64, 0f64);
    for (i, (&x, &v)) in w.iter().zip(&q.values).enumerate() {
        let back = v as f64 * q.scales[i / per.max(1)] as f64;
        err += (x as f64 - back).powi(2);
        norm += (x as f64).powi(2);
    }
    if norm > 0.0 {
        (err / norm).sqrt()
    } else {
        0.0
    }
}

/// The values of an f32 initialiser, stored as `raw_data` or `float_data`.
pub fn f32_values(t: &pb::TensorProto) -> Result<Vec<f32>> {
    if t.data_type != DataType::Float as i32 {
        bail!("'{}' is not f32 (ONNX data type {})", t.name, t.data_type);
    }
    if !t.raw_data.is_empty() {
        Ok(t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    } else {
        Ok(t.float_data.clone())
    }
}

pub(super) fn simple_node(op: &str, name: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

pub(super) fn tensor(
    name: &str,
    dims: &[i64],
    data_type: DataType,
    raw_data: Vec<u8>,
) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type as i32,
        raw_data,
        ..Default::default()
    }
}

pub(super) fn f32_scalar(name: &str, value: f32) -> pb::TensorProto {
    f32_tensor(name, &[], &[value])
}

pub(super) fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Float, raw)
}

pub(super) fn i8_tensor(name: &str, dims: &[i64], values: &[i8]) -> pb::TensorProto {
    tensor(
        name,
        dims,
        DataType::Int8,
        values.iter().map(|&v| v as u8).collect(),
    )
}

pub(super) fn i32_tensor(name: &str, dims: &[i64], values: &[i32]) -> pb::TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, dims, DataType::Int32, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_exact_and_the_range_is_covered() {
        for (lo, hi) in [
            (0.0, 6.0),
            (-1.5, 3.0),
            (-2.0, -1.0),
            (0.5, 4.0),
            (0.0, 0.0),
        ] {
            let p = QParams::covering(lo, hi);
            let q = |x: f32| ((x / p.scale).round() + p.zero_point as f32).clamp(-128.0, 127.0);
            let back = |q: f32| p.scale * (q - p.zero_point as f32);
            assert_eq!(back(q(0.0)), 0.0, "{lo}..{hi}");
            for x in [lo, hi] {
                assert!((back(q(x)) - x).abs() <= p.scale, "{lo}..{hi}: {x}");
            }
        }
        // A Relu's range puts 0 at the bottom, so negatives clamp to exactly 0.
        assert_eq!(QParams::covering(0.0, 6.0).zero_point, -128);
    }

    #[test]
    fn weights_are_symmetric_per_output_channel() {
        let w = [0.5, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -2.0];
        let q = quantize_weights(&w, 3, WeightScale::PerChannel);
        assert_eq!(q.scales, [1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(&q.values[..3], &[64, -127, 32]);
        assert_eq!(&q.values[3..6], &[0, 0, 0]);
        assert_eq!(&q.values[6..], &[127, 64, -127]);
    }

    #[test]
    fn per_tensor_weights_share_one_scale_and_cost_small_channels_precision() {
        // Channel 0 spans ±2, channel 1 only ±0.01: one scale for both leaves channel 1
        // a few steps, so its error grows while per channel stays fine.
        let w = [2.0, -1.0, 0.5, -2.0, 0.01, -0.004, 0.007, -0.01];
        let t = quantize_weights(&w, 2, WeightScale::PerTensor);
        assert_eq!(t.scales, [2.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(&t.values[4..], &[1, 0, 0, -1]);
        let per_channel = weight_error(&w, 2, WeightScale::PerChannel);
        let per_tensor = weight_error(&w, 2, WeightScale::PerTensor);
        assert!(per_channel < 0.005, "{per_channel}");
        assert!(per_tensor > per_channel, "{per_tensor} vs {per_channel}");
        // Equal ranges: both modes are the same.
        let even = [1.0, -0.5, 0.25, -1.0, 0.5, 1.0];
        assert_eq!(
            weight_error(&even, 2, WeightScale::PerTensor),
            weight_error(&even, 2, WeightScale::PerChannel)
        );
    }
}
