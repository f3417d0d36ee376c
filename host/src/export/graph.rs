//! The FCN as an ONNX graph (opset 17), written node by node from the checkpoint's
//! weights with batch norms folded into the convolutions.

use std::collections::HashMap;

use anyhow::{bail, Result};
use segcam::onnx_card::pb;
use tch::{Kind, Tensor};

use pb::attribute_proto::AttributeType;
use pb::tensor_proto::DataType;

use super::fold::{conv_params, ConvParams};
use crate::model::{FINAL_CONV, STRIDE, TRANSPOSE_CONV};

pub const OPSET: i64 = 17;
/// IR version 8 is the one that goes with opset 17.
pub const IR_VERSION: i64 = 8;
pub const INPUT_NAME: &str = "image";
pub const LOGITS_NAME: &str = "logits";
pub const CLASS_MAP_NAME: &str = "classes";

/// How the 32× upsampling of the class scores is written into the graph. Both compute
/// the same numbers from the same trained weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Upsampler {
    /// `ConvTranspose(C, C, 64, stride 32, pad 16)`, as trained.
    Convtranspose,
    /// The same transposed convolution as a 2×2 `Conv` (C → C·32·32) on the
    /// zero-padded score map, `DepthToSpace(32)` and a 16-pixel crop: a plain matrix
    /// multiply instead of a scatter.
    DepthToSpace,
}

/// What the graph outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Head {
    /// `logits`: f32 1×C×H×W.
    Logits,
    /// `classes`: int64 1×H×W, ArgMax over the channels in the graph.
    ClassMap,
}

/// The network's graph for a fixed `height × width` input.
pub struct GraphSpec {
    pub height: u32,
    pub width: u32,
    pub classes: usize,
    pub upsampler: Upsampler,
    pub head: Head,
}

/// Build the model from `tensors` (a checkpoint's variables by name).
pub fn build(tensors: &HashMap<String, Tensor>, spec: &GraphSpec) -> Result<pb::ModelProto> {
    let mut g = Builder::default();
    let (h, w) = (spec.height as i64, spec.width as i64);
    let mut x = g.conv(
        INPUT_NAME,
        conv_params(tensors, "conv1", Some("bn1"))?,
        "conv1",
        2,
    );
    x = g.unary("Relu", &x, "relu");
    x = g.node(
        "MaxPool",
        &[&x],
        "maxpool",
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("strides", &[2, 2]),
            ints("pads", &[1, 1, 1, 1]),
        ],
    );
    for layer in 1..=4 {
        for block in 0..2 {
            let p = format!("layer{layer}.{block}");
            let stride = if layer > 1 && block == 0 { 2 } else { 1 };
            let fold = |conv: &str, bn: &str| {
                conv_params(tensors, &format!("{p}.{conv}"), Some(&format!("{p}.{bn}")))
            };
            let mut y = g.conv(&x, fold("conv1", "bn1")?, &format!("{p}.conv1"), stride);
            y = g.unary("Relu", &y, &format!("{p}.relu1"));
            y = g.conv(&y, fold("conv2", "bn2")?, &format!("{p}.conv2"), 1);
            let shortcut = if tensors.contains_key(&format!("{p}.downsample.0.weight")) {
                let params = fold("downsample.0", "downsample.1")?;
                g.conv(&x, params, &format!("{p}.downsample"), stride)
            } else {
                x.clone()
            };
            let sum = g.node("Add", &[&y, &shortcut], &format!("{p}.add"), vec![]);
            x = g.unary("Relu", &sum, &format!("{p}.relu2"));
        }
    }
    let scores = g.conv(&x, conv_params(tensors, FINAL_CONV, None)?, FINAL_CONV, 1);
    let up = conv_params(tensors, TRANSPOSE_CONV, None)?;
    let shape = up.weight.size();
    let c = spec.classes as i64;
    if shape != [c, c, 2 * STRIDE, 2 * STRIDE] {
        bail!(
            "'{TRANSPOSE_CONV}.weight' is {shape:?}, expected [{c}, {c}, {k}, {k}]",
            k = 2 * STRIDE
        );
    }
    let logits_name = match spec.head {
        Head::Logits => LOGITS_NAME,
        Head::ClassMap => "scores",
    };
    match spec.upsampler {
        Upsampler::Convtranspose => {
            let (w_name, b_name) = g.params(TRANSPOSE_CONV, up);
            g.node_named(
                "ConvTranspose",
                &[&scores, &w_name, &b_name],
                TRANSPOSE_CONV,
                logits_name,
                vec![
                    ints("kernel_shape", &[2 * STRIDE, 2 * STRIDE]),
                    ints("strides", &[STRIDE, STRIDE]),
                    ints("pads", &[STRIDE / 2; 4]),
                ],
            );
        }
        Upsampler::DepthToSpace => {
            let sub = subpixel_params(&up, STRIDE);
            let (w_name, b_name) = g.params("upsample.conv", sub);
            let blocks = g.node_named(
                "Conv",
                &[&scores, &w_name, &b_name],
                "upsample.conv",
                "upsample.blocks",
                vec![ints("kernel_shape", &[2, 2]), ints("pads", &[1, 1, 1, 1])],
            );
            let pixels = g.node(
                "DepthToSpace",
                &[&blocks],
                "upsample.d2s",
                vec![int("blocksize", STRIDE), string("mode", "DCR")],
            );
            // The blocks start half a stride above and left of the image.
            let p = STRIDE / 2;
            let starts = g.int64s("upsample.starts", &[p, p]);
            let ends = g.int64s("upsample.ends", &[p + h, p + w]);
            let axes = g.int64s("upsample.axes", &[2, 3]);
            g.node_named(
                "Slice",
                &[&pixels, &starts, &ends, &axes],
                "upsample.crop",
                logits_name,
                vec![],
            );
        }
    }
    let output = match spec.head {
        Head::Logits => value_info(LOGITS_NAME, DataType::Float, &[1, c, h, w]),
        Head::ClassMap => {
            g.node_named(
                "ArgMax",
                &[logits_name],
                "argmax",
                CLASS_MAP_NAME,
                vec![int("axis", 1), int("keepdims", 0)],
            );
            value_info(CLASS_MAP_NAME, DataType::Int64, &[1, h, w])
        }
    };
    Ok(pb::ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "seg-host".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(pb::GraphProto {
            name: crate::checkpoint::ARCHITECTURE.into(),
            node: g.nodes,
            initializer: g.initializers,
            input: vec![value_info(INPUT_NAME, DataType::Float, &[1, 3, h, w])],
            output: vec![output],
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The weights of the 2×2 convolution that, followed by `DepthToSpace(s)` (DCR order)
/// and a crop of s/2, equals `ConvTranspose(k = 2s, stride s, pad s/2)`.
///
/// Output block (q, r) covers rows s·q − s/2 … and reads input rows q−1 and q (after
/// one row of zero padding). Row t of the block with kernel row a ∈ {0, 1} (input row
/// q−1+a) takes transposed-kernel row s·(1−a)+t; likewise for columns. DCR puts block
/// offset (t, u) of class o in channel (t·s + u)·C + o.
pub fn subpixel_params(up: &ConvParams, s: i64) -> ConvParams {
    let size = up.weight.size();
    let (c_in, c_out) = (size[0], size[1]);
    let weight = up
        .weight
        .view([c_in, c_out, 2, s, 2, s]) // [c, o, A, t, B, u] with A = 1 − a
        .flip([2, 4]) // [c, o, a, t, b, u]
        .permute([3, 5, 1, 0, 2, 4]) // [t, u, o, c, a, b]
        .contiguous()
        .view([s * s * c_out, c_in, 2, 2]);
    ConvParams {
        weight,
        bias: up.bias.repeat([s * s]),
    }
}

/// Nodes and initialisers as they are added; each value is named after its node.
#[derive(Default)]
struct Builder {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
}

impl Builder {
    /// A convolution with "same" padding for its odd kernel, e.g. 3×3 pad 1.
    fn conv(&mut self, x: &str, params: ConvParams, name: &str, stride: i64) -> String {
        let size = params.weight.size();
        let (kh, kw) = (size[2], size[3]);
        let (w, b) = self.params(name, params);
        self.node(
            "Conv",
            &[x, &w, &b],
            name,
            vec![
                ints("kernel_shape", &[kh, kw]),
                ints("strides", &[stride, stride]),
                ints("pads", &[kh / 2, kw / 2, kh / 2, kw / 2]),
            ],
        )
    }

    fn unary(&mut self, op: &str, x: &str, name: &str) -> String {
        self.node(op, &[x], name, vec![])
    }

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        name: &str,
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        self.node_named(op, inputs, name, name, attribute)
    }

    fn node_named(
        &mut self,
        op: &str,
        inputs: &[&str],
        name: &str,
        output: &str,
        attribute: Vec<pb::AttributeProto>,
    ) -> String {
        self.nodes.push(pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute,
            ..Default::default()
        });
        output.into()
    }

    /// Add `name.weight` and `name.bias` as initialisers; returns their names.
    fn params(&mut self, name: &str, params: ConvParams) -> (String, String) {
        let w = format!("{name}.weight");
        let b = format!("{name}.bias");
        self.initializers.push(f32_tensor(&w, &params.weight));
        self.initializers.push(f32_tensor(&b, &params.bias));
        (w, b)
    }

    fn int64s(&mut self, name: &str, values: &[i64]) -> String {
        self.initializers.push(pb::TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name.into()
    }
}

/// An f32 initialiser, its values as little-endian `raw_data`.
fn f32_tensor(name: &str, t: &Tensor) -> pb::TensorProto {
    let values: Vec<f32> = Vec::try_from(t.to_kind(Kind::Float).contiguous().flatten(0, -1))
        .expect("an f32 tensor converts to Vec<f32>");
    pb::TensorProto {
        name: name.into(),
        dims: t.size(),
        data_type: DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

pub(crate) fn value_info(name: &str, elem: DataType, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

pub(crate) fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn string(name: &str, value: &str) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DepthToSpace in DCR order: channel (t·s + u)·C + o → pixel (s·y + t, s·x + u).
    fn depth_to_space_dcr(x: &Tensor, s: i64) -> Tensor {
        let [n, cs, h, w] = x.size()[..] else {
            unreachable!()
        };
        let c = cs / (s * s);
        x.view([n, s, s, c, h, w])
            .permute([0, 3, 4, 1, 5, 2])
            .reshape([n, c, h * s, w * s])
    }

    #[test]
    fn the_subpixel_upsampler_equals_the_transposed_convolution() {
        tch::manual_seed(5);
        let opts = (Kind::Float, tch::Device::Cpu);
        for s in [4i64, 32] {
            let (c, h, w) = (3, 3, 5);
            let up = ConvParams {
                weight: Tensor::randn([c, c, 2 * s, 2 * s], opts),
                bias: Tensor::randn([c], opts),
            };
            let x = Tensor::randn([1, c, h, w], opts);
            let want = x.conv_transpose2d(
                &up.weight,
                Some(&up.bias),
                [s, s],
                [s / 2, s / 2],
                [0, 0],
                1,
                [1, 1],
            );
            let sub = subpixel_params(&up, s);
            let blocks = x.conv2d(&sub.weight, Some(&sub.bias), [1, 1], [1, 1], [1, 1], 1);
            let got = depth_to_space_dcr(&blocks, s)
                .narrow(2, s / 2, h * s)
                .narrow(3, s / 2, w * s);
            assert_eq!(got.size(), want.size());
            let diff = (got - &want).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "s = {s}: max diff {diff}");
        }
    }
}
