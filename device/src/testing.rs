//! Helpers for tests of code that loads models, here and in the integration tests:
//! tiny ONNX models whose outputs are easy to compute by hand, and where the built
//! binaries are. Not part of the API: compiled for this crate's unit tests and with the
//! `testing` feature (this crate's integration tests, and the workspace's `tests`).

use std::path::{Path, PathBuf};

use crate::card::{ModelCard, OutputKind, Precision, CARD_VERSION};
use crate::classes::ClassList;
use crate::onnx_card::{encode, pb, set_card};
use pb::attribute_proto::AttributeType;

/// An `ints` attribute.
pub fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

/// An `int` attribute.
pub fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

/// A graph input or output of `elem`s with a fixed shape.
pub fn value_info(
    name: &str,
    elem: pb::tensor_proto::DataType,
    dims: &[i64],
) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A 1×1 convolution with `classes` outputs whose weight for class c and input
/// channel k is `c - k`, so the expected scores are easy to compute; optionally
/// followed by ArgMax over the channels.
pub fn conv_model(classes: usize, h: i64, w: i64, class_map: bool) -> pb::ModelProto {
    use pb::tensor_proto::DataType;
    let weights: Vec<f32> = (0..classes)
        .flat_map(|c| (0..3).map(move |k| c as f32 - k as f32))
        .collect();
    let mut nodes = vec![pb::NodeProto {
        op_type: "Conv".into(),
        name: "conv".into(),
        input: vec!["image".into(), "w".into()],
        output: vec!["scores".into()],
        attribute: vec![ints("kernel_shape", &[1, 1])],
        ..Default::default()
    }];
    let output = if class_map {
        nodes.push(pb::NodeProto {
            op_type: "ArgMax".into(),
            name: "argmax".into(),
            input: vec!["scores".into()],
            output: vec!["classes".into()],
            attribute: vec![int("axis", 1), int("keepdims", 0)],
            ..Default::default()
        });
        value_info("classes", DataType::Int64, &[1, h, w])
    } else {
        value_info("scores", DataType::Float, &[1, classes as i64, h, w])
    };
    model(pb::GraphProto {
        name: "g".into(),
        node: nodes,
        initializer: vec![pb::TensorProto {
            name: "w".into(),
            dims: vec![classes as i64, 3, 1, 1],
            data_type: DataType::Float as i32,
            raw_data: weights.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }],
        input: vec![value_info("image", DataType::Float, &[1, 3, h, w])],
        output: vec![output],
        ..Default::default()
    })
}

/// A model of `graph` at the ONNX opset the exporter writes (17).
pub fn model(graph: pb::GraphProto) -> pb::ModelProto {
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

/// A card for [`conv_model`]: `classes`, input `height × width`, logits (output
/// `scores`) or a class map (output `classes`).
pub fn card(classes: ClassList, height: u32, width: u32, class_map: bool) -> ModelCard {
    ModelCard {
        format_version: CARD_VERSION,
        name: "conv-test".into(),
        architecture: "1x1-conv".into(),
        classes,
        input_name: "image".into(),
        input_height: height,
        input_width: width,
        normalization: crate::IMAGENET,
        output_name: if class_map { "classes" } else { "scores" }.into(),
        output_kind: if class_map {
            OutputKind::ClassMap
        } else {
            OutputKind::Logits
        },
        precision: Precision::F32,
        training_validation: None,
        export_validation: None,
        quantization: None,
        engine: None,
        class_distribution: None,
    }
}

/// Write a [`conv_model`] with `card` (its classes and size) as `dir/name`.
pub fn write_model(dir: &Path, name: &str, card: &ModelCard) -> PathBuf {
    let class_map = card.output_kind == OutputKind::ClassMap;
    let mut model = conv_model(
        card.classes.len(),
        card.input_height as i64,
        card.input_width as i64,
        class_map,
    );
    set_card(&mut model, card);
    let path = dir.join(name);
    std::fs::write(&path, encode(&model)).expect("write the test model");
    path
}

/// The workspace's root folder (tests run from their crate's folder).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("device/ sits in the workspace")
        .to_path_buf()
}

/// The board build of seg-cam for the tests that run it on the emulated board:
/// `$SEGCAM_BOARD_BIN`, else what `just build-board` writes (under
/// `$CARGO_TARGET_DIR` when that is set). Panics with what to run when it is missing.
pub fn board_binary() -> PathBuf {
    board_build("SEGCAM_BOARD_BIN", "aarch64-unknown-linux-musl")
}

/// The glibc board build with the onnxruntime engine: `$SEGCAM_BOARD_GNU_BIN`, else
/// what `just build-board` writes.
pub fn board_gnu_binary() -> PathBuf {
    board_build("SEGCAM_BOARD_GNU_BIN", "aarch64-unknown-linux-gnu")
}

fn board_build(variable: &str, target: &str) -> PathBuf {
    let path = std::env::var_os(variable).map_or_else(
        || {
            let dir = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace().join("target"), PathBuf::from);
            dir.join(target).join("release/seg-cam")
        },
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{}: no board build of seg-cam; run `just build-board` (`just test` does)",
        path.display()
    );
    path
}
