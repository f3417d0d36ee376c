//! Graphs of one int8 convolution for the tests of this backend's own passes.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tract_onnx::prelude::*;

use crate::onnx_card::pb;
use crate::testing::{int, ints, model, value_info};
use pb::tensor_proto::DataType;

/// One convolution's shape: input channels, height, width; output channels;
/// kernel, strides, pads (top, left, bottom, right), dilations, groups.
#[derive(Debug, Clone)]
pub struct Conv {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub pads: [usize; 4],
    pub dilations: [usize; 2],
    pub group: usize,
    pub signed: bool,
}

fn scalar(name: &str, dt: DataType, bytes: Vec<u8>, dims: &[usize]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: dt as i32,
        raw_data: bytes,
        ..Default::default()
    }
}

/// A graph of one QLinearConv with random weights and zero points that are not 0
/// (so that padding shows).
pub fn qlinear_conv(conv: &Conv, rng: &mut ChaCha8Rng) -> pb::ModelProto {
    let x_dt = if conv.signed {
        DataType::Int8
    } else {
        DataType::Uint8
    };
    let x_zp: u8 = if conv.signed { (-7i8) as u8 } else { 9 };
    let [kh, kw] = conv.kernel;
    let w_len = conv.o * conv.c / conv.group * kh * kw;
    let weights: Vec<u8> = (0..w_len).map(|_| rng.random::<i8>() as u8).collect();
    let f = |v: f32| v.to_le_bytes().to_vec();
    let initializer = vec![
        scalar("x_scale", DataType::Float, f(0.02), &[]),
        scalar("x_zp", x_dt, vec![x_zp], &[]),
        scalar(
            "w",
            DataType::Int8,
            weights,
            &[conv.o, conv.c / conv.group, kh, kw],
        ),
        scalar("w_scale", DataType::Float, f(0.01), &[]),
        scalar("w_zp", DataType::Int8, vec![0], &[]),
        scalar("y_scale", DataType::Float, f(0.05), &[]),
        scalar("y_zp", DataType::Uint8, vec![128], &[]),
    ];
    let node = pb::NodeProto {
        op_type: "QLinearConv".into(),
        name: "conv".into(),
        input: [
            "x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp",
        ]
        .map(String::from)
        .to_vec(),
        output: vec!["y".into()],
        attribute: vec![
            ints("kernel_shape", &wide(&conv.kernel)),
            ints("strides", &wide(&conv.strides)),
            ints("pads", &wide(&conv.pads)),
            ints("dilations", &wide(&conv.dilations)),
            int("group", conv.group as i64),
        ],
        ..Default::default()
    };
    let dims = wide(&[1, conv.c, conv.h, conv.w]);
    model(pb::GraphProto {
        name: "g".into(),
        node: vec![node],
        initializer,
        input: vec![value_info("x", x_dt, &dims)],
        output: vec![pb::ValueInfoProto {
            name: "y".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn wide(values: &[usize]) -> Vec<i64> {
    values.iter().map(|&v| v as i64).collect()
}

/// A random convolution whose output is at least one pixel.
pub fn random_conv(rng: &mut ChaCha8Rng) -> Conv {
    loop {
        let group = [1, 1, 1, 2, 3][rng.random_range(0..5)];
        let conv = Conv {
            c: group * rng.random_range(1..=4),
            h: rng.random_range(1..=30),
            w: rng.random_range(1..=40),
            o: group * rng.random_range(1..=3),
            kernel: std::array::from_fn(|_| [1, 2, 3, 5, 7][rng.random_range(0..5)]),
            strides: [rng.random_range(1..=3), rng.random_range(1..=3)],
            pads: std::array::from_fn(|_| rng.random_range(0..=3)),
            dilations: [rng.random_range(1..=2), rng.random_range(1..=2)],
            group,
            signed: rng.random(),
        };
        let fits = |size: usize, axis: usize| {
            size + conv.pads[axis] + conv.pads[axis + 2]
                > conv.dilations[axis] * (conv.kernel[axis] - 1)
        };
        if fits(conv.h, 0) && fits(conv.w, 1) {
            return conv;
        }
    }
}

/// ResNet-18's convolutions at a small size, with output widths that are and are
/// not a multiple of the panel.
pub fn resnet_convs() -> Vec<Conv> {
    let conv = |c, h, w, k, s, p| Conv {
        c,
        h,
        w,
        o: 8,
        kernel: [k, k],
        strides: [s, s],
        pads: [p; 4],
        dilations: [1, 1],
        group: 1,
        signed: false,
    };
    vec![
        conv(3, 40, 64, 7, 2, 3),
        conv(3, 37, 50, 7, 2, 3),
        conv(16, 20, 32, 3, 1, 1),
        conv(16, 15, 30, 3, 1, 1),
        conv(16, 20, 32, 3, 2, 1),
        Conv {
            signed: true,
            ..conv(8, 11, 17, 3, 1, 1)
        },
    ]
}

/// A random image for `conv`'s graph: bytes of its input type.
pub fn random_image(conv: &Conv, rng: &mut ChaCha8Rng) -> TValue {
    let bytes: Vec<u8> = (0..conv.c * conv.h * conv.w)
        .map(|_| rng.random())
        .collect();
    let shape = [1, conv.c, conv.h, conv.w];
    let image = if conv.signed {
        let values: Vec<i8> = bytes.iter().map(|&b| b as i8).collect();
        Tensor::from_shape(&shape, &values)
    } else {
        Tensor::from_shape(&shape, &bytes)
    };
    image.unwrap().into()
}

/// `conv`'s graph, optimised by tract.
pub fn optimized(conv: &Conv, rng: &mut ChaCha8Rng) -> TypedModel {
    let proto = qlinear_conv(conv, rng);
    let model = tract_onnx::onnx().model_for_proto_model(&proto).unwrap();
    model.into_optimized().unwrap()
}

/// `model`'s output for `image` on `threads` threads.
pub fn run(model: TypedModel, image: &TValue, threads: usize) -> Tensor {
    let plan = model
        .into_runnable_with_options(&super::run_options(threads))
        .unwrap();
    plan.run(tvec![image.clone()])
        .unwrap()
        .remove(0)
        .into_tensor()
}
