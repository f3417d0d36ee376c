//! The model card inside an ONNX file: decode the file, read the card from its
//! `metadata_props` (refusing files without one or with an unknown version), and put a
//! card into a model before it is written. The protobuf types are tract's, so the
//! host writes exactly what the board's engine reads.

use std::path::Path;

use prost::Message;

pub use tract_onnx::pb;

use crate::card::{ModelCard, METADATA_KEY};
use crate::error::{Error, Result};

/// Read and decode an ONNX file, refusing what is not one (another format, a
/// truncated file) with a message that names the file.
pub fn decode_file(path: &Path) -> Result<pb::ModelProto> {
    let bytes = read_model(path)?;
    decode(&bytes).map_err(|message| model_error(path, message))
}

/// The largest model file read: protobuf's own limit for one message.
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The bytes of the model file `path`, refusing what is not a regular file (a FIFO would
/// block, `/dev/zero` would fill memory) or is larger than a protobuf message can be.
pub fn read_model(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let fail = |message: String| model_error(path, message);
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(fail("is a folder, not an ONNX file".into()));
    }
    if !meta.is_file() {
        return Err(fail("is not a regular file (a device or a pipe?)".into()));
    }
    if meta.len() > MAX_MODEL_BYTES {
        return Err(fail(format!(
            "is {} bytes, more than an ONNX file can be (2 GiB)",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MODEL_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    Ok(bytes)
}

/// Decode ONNX bytes; the error says why they are not a model.
pub fn decode(bytes: &[u8]) -> std::result::Result<pb::ModelProto, String> {
    let model = pb::ModelProto::decode(bytes).map_err(|e| {
        format!(
            "not an ONNX model ({} bytes that do not decode as ONNX protobuf: {e}); is it truncated or another format?",
            bytes.len()
        )
    })?;
    // Protobuf skips unknown fields, so some foreign bytes decode as an empty message.
    let what = if model.ir_version <= 0 {
        Some("no IR version")
    } else if model.opset_import.is_empty() {
        Some("no operator set")
    } else if model.graph.as_ref().is_none_or(|g| g.node.is_empty()) {
        Some("no graph")
    } else {
        None
    };
    match what {
        Some(what) => Err(format!(
            "not an ONNX model ({what}; {} bytes); is it truncated or another format?",
            bytes.len()
        )),
        None => Ok(model),
    }
}

/// Encode a model as the bytes of an `.onnx` file.
pub fn encode(model: &pb::ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// The card of a decoded model; the error says what is missing or wrong.
pub fn card_of(model: &pb::ModelProto) -> std::result::Result<ModelCard, String> {
    let entry = model
        .metadata_props
        .iter()
        .find(|e| e.key == METADATA_KEY)
        .ok_or_else(|| {
            format!(
                "no segcam model card (metadata_props has no '{METADATA_KEY}'); export the model with `seg-host export`"
            )
        })?;
    ModelCard::from_json(&entry.value).map_err(|e| e.to_string())
}

/// Read only the card of an ONNX file.
pub fn read_card(path: &Path) -> Result<ModelCard> {
    card_of(&decode_file(path)?).map_err(|message| model_error(path, message))
}

/// Put `card` into the model's `metadata_props`, replacing an earlier card.
pub fn set_card(model: &mut pb::ModelProto, card: &ModelCard) {
    model.metadata_props.retain(|e| e.key != METADATA_KEY);
    model.metadata_props.push(pb::StringStringEntryProto {
        key: METADATA_KEY.into(),
        value: card.to_json(),
    });
}

pub(crate) fn model_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Model {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// A card for tests: `classes` VOC classes, input `height × width`, logits out.
#[cfg(test)]
pub(crate) fn test_card(classes: usize, height: u32, width: u32) -> ModelCard {
    use crate::card::{OutputKind, Precision, CARD_VERSION};
    let voc = crate::ClassList::voc();
    ModelCard {
        format_version: CARD_VERSION,
        name: "test".into(),
        architecture: "test".into(),
        classes: voc.first(classes),
        input_name: "image".into(),
        input_height: height,
        input_width: width,
        normalization: crate::IMAGENET,
        output_name: "logits".into(),
        output_kind: OutputKind::Logits,
        precision: Precision::F32,
        training_validation: None,
        export_validation: None,
        quantization: None,
        engine: None,
        class_distribution: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelCard {
        test_card(21, 320, 480)
    }

    fn tiny_model() -> pb::ModelProto {
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                name: "g".into(),
                node: vec![pb::NodeProto {
                    op_type: "Relu".into(),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_card_round_trips_and_replaces_the_previous_one() {
        let mut model = tiny_model();
        let mut card = sample();
        set_card(&mut model, &card);
        card.name = "second".into();
        set_card(&mut model, &card);
        let back = decode(&encode(&model)).unwrap();
        assert_eq!(back.metadata_props.len(), 1);
        assert_eq!(card_of(&back).unwrap(), card);
    }

    #[test]
    fn missing_cards_and_foreign_bytes_are_named() {
        let msg = card_of(&tiny_model()).unwrap_err();
        assert!(msg.contains("no segcam model card"), "{msg}");
        let msg = decode(b"hello, this is not a model").unwrap_err();
        assert!(msg.contains("not an ONNX model"), "{msg}");
        let bytes = encode(&tiny_model());
        let msg = decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(msg.contains("not an ONNX model"), "{msg}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let msg = read_card(&path).unwrap_err().to_string();
        assert!(
            msg.contains("m.onnx") && msg.contains("not an ONNX"),
            "{msg}"
        );
    }

    #[test]
    fn folders_and_devices_are_not_read_as_models() {
        let dir = tempfile::tempdir().unwrap();
        let msg = read_model(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("is a folder"), "{msg}");
        // /dev/zero would be read until memory runs out
        let msg = read_model(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(
            msg.contains("/dev/zero") && msg.contains("not a regular file"),
            "{msg}"
        );
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, encode(&tiny_model())).unwrap();
        assert_eq!(read_model(&path).unwrap(), encode(&tiny_model()));
    }
}
