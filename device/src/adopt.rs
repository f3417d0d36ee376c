//! A model card for an ONNX segmentation model made elsewhere (a torchvision export,
//! tf2onnx, onnxruntime's quantizer): what the graph says (tensor names, input size,
//! output kind, class count, int8 form) joined with what only its maker knows (class
//! names and colours, normalisation), the way jetson-inference's `segnet` takes a
//! custom model with `--labels` and `--colors`.

use std::path::Path;

use crate::card::{ModelCard, OutputKind, Precision, QuantFormat, Quantization, CARD_VERSION};
use crate::classes::{voc_colour, ClassList};
use crate::engine::check::{declared_dims, declared_element, fed_inputs};
use crate::error::{Error, Result};
use crate::onnx_card::pb;
use crate::preprocess::Normalization;

/// What the graph cannot say.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub name: String,
    /// The classes in output-channel order; `None`: VOC's for 21 channels, else
    /// numbered names (`class-0`, …).
    pub classes: Option<ClassList>,
    /// (height, width), needed where the graph leaves the input size open.
    pub size: Option<(u32, u32)>,
    pub normalization: Normalization,
}

/// The card that runs `model` as `given` describes; the error says what does not fit.
pub fn card_for(model: &pb::ModelProto, given: Adoption) -> Result<ModelCard> {
    let bad = |why: String| Error::Invalid(why);
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| bad("the model has no graph".into()))?;
    let inputs = fed_inputs(graph);
    let [input] = inputs[..] else {
        return Err(bad(format!(
            "the graph has {} inputs; seg-cam runs models of one image input (1×3×H×W)",
            inputs.len()
        )));
    };
    let [output] = &graph.output[..] else {
        return Err(bad(format!(
            "the graph has {} outputs; seg-cam runs models of one output (export without auxiliary heads)",
            graph.output.len()
        )));
    };
    let dims = declared_dims(input);
    let open = |d: Option<usize>, want: usize| d.is_none_or(|d| d == want);
    if dims.len() != 4 || !open(dims[0], 1) || !open(dims[1], 3) {
        return Err(bad(format!(
            "the graph's input '{}' is {}, seg-cam feeds 1×3×H×W RGB images",
            input.name,
            shape_text(&dims)
        )));
    }
    let side = |d: usize| {
        u32::try_from(d).map_err(|_| bad(format!("the graph's input side {d} is out of range")))
    };
    let (height, width) = match (dims[2], dims[3], given.size) {
        (Some(h), Some(w), None) => (side(h)?, side(w)?),
        (Some(h), Some(w), Some(size)) if size == (side(h)?, side(w)?) => size,
        (Some(h), Some(w), Some((gh, gw))) => {
            return Err(bad(format!(
                "the graph's input is fixed at {h}×{w} (height×width), not the {gh}×{gw} given"
            )))
        }
        (h, w, Some((gh, gw))) if open(h, gh as usize) && open(w, gw as usize) => (gh, gw),
        (_, _, Some((gh, gw))) => {
            return Err(bad(format!(
                "the graph's input '{}' is {}, which {gh}×{gw} does not fit",
                input.name,
                shape_text(&dims)
            )))
        }
        _ => {
            return Err(bad(format!(
                "the graph's input '{}' is {}: give the size the model runs at (--size HxW)",
                input.name,
                shape_text(&dims)
            )))
        }
    };
    let element = declared_element(output);
    let output_kind = match element {
        Some(pb::tensor_proto::DataType::Float) => OutputKind::Logits,
        Some(pb::tensor_proto::DataType::Int64 | pb::tensor_proto::DataType::Int32) => {
            OutputKind::ClassMap
        }
        other => {
            let what = other.map_or("of an undeclared type".into(), |t| {
                t.as_str_name().to_lowercase()
            });
            return Err(bad(format!(
                "the graph's output '{}' is {what}; seg-cam reads f32 class scores (1×C×H×W) or an integer class map",
                output.name
            )));
        }
    };
    let out_dims = declared_dims(output);
    let declared = match output_kind {
        OutputKind::Logits if out_dims.len() == 4 => out_dims[1],
        _ => None,
    };
    // Not declared (symbolic sizes, a class map): as tract infers it at this size.
    let inferred = || {
        let class_map = output_kind == OutputKind::ClassMap;
        crate::engine::tract::class_channels(
            model,
            &output.name,
            class_map,
            height as usize,
            width as usize,
        )
    };
    let channels = match declared {
        Some(c) => Some(c),
        None => match inferred() {
            Ok(c) => Some(c),
            Err(why) if given.classes.is_none() => {
                return Err(bad(format!(
                    "the graph does not say how many classes its output '{}' holds ({why}): give them (--labels FILE)",
                    output.name
                )))
            }
            Err(_) => None,
        },
    };
    if let Some(c @ (0 | 1)) = channels {
        return Err(bad(format!(
            "the graph's output '{}' has {c} score channel(s): seg-cam takes the largest of one score per class, so a single-channel (sigmoid) mask needs a second channel (export 1−p and p, or a class map)",
            output.name
        )));
    }
    let classes = match (given.classes, channels) {
        (Some(classes), Some(c)) if classes.len() != c => {
            return Err(bad(format!(
                "{} classes given, the graph's output '{}' has {c} channels",
                classes.len(),
                output.name
            )))
        }
        (Some(classes), _) => classes,
        (None, Some(21)) => ClassList::voc(),
        (None, Some(c)) => numbered(c)?,
        (None, None) => unreachable!("no classes given and none inferred returned above"),
    };
    let form = int8_form(graph);
    let card = ModelCard {
        format_version: CARD_VERSION,
        name: given.name,
        architecture: if graph.name.is_empty() {
            "external".into()
        } else {
            format!("external: {}", graph.name)
        },
        classes,
        input_name: input.name.clone(),
        input_height: height,
        input_width: width,
        normalization: given.normalization,
        output_name: output.name.clone(),
        output_kind,
        precision: if form.is_some() {
            Precision::Int8
        } else {
            Precision::F32
        },
        training_validation: None,
        export_validation: None,
        quantization: form.map(|format| Quantization {
            calibration: "external".into(),
            calibration_images: 0,
            f32_validation: None,
            format,
            per_tensor_weights: 0,
            float_layers: Vec::new(),
        }),
        engine: form.map(QuantFormat::engine),
        class_distribution: None,
    };
    // The checks every card read from a file gets (sizes, normalisation).
    ModelCard::from_json(&card.to_json())
}

/// Whether the graph is int8, and in which form: QLinear operators are tract's,
/// QuantizeLinear/DequantizeLinear pairs onnxruntime's.
fn int8_form(graph: &pb::GraphProto) -> Option<QuantFormat> {
    let has = |ops: &[&str]| graph.node.iter().any(|n| ops.contains(&n.op_type.as_str()));
    if has(&[
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
    ]) {
        Some(QuantFormat::Qlinear)
    } else if has(&["QuantizeLinear", "DequantizeLinear"]) {
        Some(QuantFormat::Qdq)
    } else {
        None
    }
}

fn shape_text(dims: &[Option<usize>]) -> String {
    if dims.is_empty() {
        return "of unknown shape".into();
    }
    let d: Vec<String> = dims
        .iter()
        .map(|d| d.map_or("?".into(), |d| d.to_string()))
        .collect();
    d.join("×")
}

/// `class-0` … with VOC's palette.
fn numbered(count: usize) -> Result<ClassList> {
    ClassList::new(
        (0..count)
            .map(|i| (format!("class-{i}"), voc_colour(i.min(255) as u8)))
            .collect(),
    )
}

/// The classes of a labels file: a VOC `labelmap.txt` (`name:r,g,b::`), or one name
/// per line (jetson-inference's `classes.txt`) with colours from `colours` (one
/// `R G B` line per class, as its `colors.txt`) or VOC's palette.
pub fn read_labels(labels: &Path, colours: Option<&Path>) -> Result<ClassList> {
    let text = read_text(labels)?;
    let lines = meaningful_lines(&text);
    if colours.is_none() && lines.iter().any(|(_, l)| l.contains(':')) {
        return ClassList::read_labelmap(labels);
    }
    let palette = match colours {
        Some(path) => read_colours(path)?,
        None => (0..lines.len())
            .map(|i| voc_colour(i.min(255) as u8))
            .collect(),
    };
    if palette.len() != lines.len() {
        return Err(Error::Invalid(format!(
            "{}: {} colours for the {} classes of {}",
            colours.unwrap_or(labels).display(),
            palette.len(),
            lines.len(),
            labels.display()
        )));
    }
    let names = lines.into_iter().map(|(_, l)| l.to_string());
    ClassList::new(names.zip(palette).collect()).map_err(|e| {
        let files = match colours {
            Some(c) => format!("{} with {}", labels.display(), c.display()),
            None => labels.display().to_string(),
        };
        Error::Invalid(format!("{files}: {e}"))
    })
}

/// A text file without the byte-order mark editors on Windows put first.
fn read_text(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// Non-empty lines that are not `#` comments, trimmed, with their line numbers.
fn meaningful_lines(text: &str) -> Vec<(usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn read_colours(path: &Path) -> Result<Vec<[u8; 3]>> {
    let text = read_text(path)?;
    meaningful_lines(&text)
        .into_iter()
        .map(|(line, l)| {
            let values: Vec<&str> = l
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|v| !v.is_empty())
                .collect();
            // R G B, or R G B A (the alpha is the overlay's business)
            let rgb: Option<Vec<u8>> = match values.len() {
                3 | 4 => values[..3].iter().map(|v| v.parse().ok()).collect(),
                _ => None,
            };
            rgb.map(|c| [c[0], c[1], c[2]])
                .ok_or_else(|| Error::ClassFile {
                    path: path.to_owned(),
                    line,
                    message: format!("'{l}' is not a colour (want R G B, each 0-255)"),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::conv_model;

    fn given() -> Adoption {
        Adoption {
            name: "theirs".into(),
            classes: None,
            size: None,
            normalization: crate::IMAGENET,
        }
    }

    #[test]
    fn what_the_graph_says_fills_the_card() {
        let model = conv_model(21, 24, 32, false);
        let card = card_for(&model, given()).unwrap();
        assert_eq!((card.input_height, card.input_width), (24, 32));
        assert_eq!(card.classes, ClassList::voc());
        assert_eq!(card.output_kind, OutputKind::Logits);
        assert_eq!(card.precision, Precision::F32);
        assert_eq!(card.input_name, "image");
        // a size the graph fixes otherwise is refused
        let msg = card_for(
            &model,
            Adoption {
                size: Some((48, 64)),
                ..given()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("fixed at 24×32"), "{msg}");
        // classes that do not match the channels
        let msg = card_for(
            &model,
            Adoption {
                classes: Some(ClassList::voc().first(5)),
                ..given()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("5 classes given") && msg.contains("21 channels"),
            "{msg}"
        );
    }

    #[test]
    fn open_sizes_and_class_maps_need_what_the_graph_leaves_out() {
        use pb::tensor_shape_proto::dimension::Value;
        let mut model = conv_model(5, 24, 32, true);
        let graph = model.graph.as_mut().unwrap();
        let Some(pb::type_proto::Value::TensorType(t)) =
            graph.input[0].r#type.as_mut().unwrap().value.as_mut()
        else {
            unreachable!()
        };
        for d in &mut t.shape.as_mut().unwrap().dim[2..] {
            d.value = Some(Value::DimParam("side".into()));
        }
        let msg = card_for(&model, given()).unwrap_err().to_string();
        assert!(msg.contains("1×3×?×?") && msg.contains("--size"), "{msg}");
        let sized = Adoption {
            size: Some((48, 64)),
            ..given()
        };
        // the ArgMax's scores say 5 classes
        let card = card_for(&model, sized.clone()).unwrap();
        assert_eq!(card.classes.len(), 5);
        let msg = card_for(
            &model,
            Adoption {
                classes: Some(ClassList::voc().first(4)),
                ..sized.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("4 classes given") && msg.contains("5 channels"),
            "{msg}"
        );
        let card = card_for(
            &model,
            Adoption {
                classes: Some(ClassList::voc().first(5)),
                ..sized.clone()
            },
        )
        .unwrap();
        assert_eq!(card.output_kind, OutputKind::ClassMap);
        assert_eq!((card.input_height, card.input_width), (48, 64));

        // an ArgMax over another axis than the channels is no class map of ours
        let graph = model.graph.as_mut().unwrap();
        let argmax = graph
            .node
            .iter_mut()
            .find(|n| n.op_type == "ArgMax")
            .unwrap();
        argmax.attribute[0].i = 3;
        let msg = card_for(&model, sized).unwrap_err().to_string();
        assert!(msg.contains("axis 3"), "{msg}");
    }

    #[test]
    fn a_single_score_channel_is_refused_with_the_reason() {
        let msg = card_for(&conv_model(1, 24, 32, false), given())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("1 score channel") && msg.contains("sigmoid"),
            "{msg}"
        );
    }

    #[test]
    fn labels_come_as_names_with_colours_or_as_a_labelmap() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("classes.txt");
        std::fs::write(&labels, "\u{feff}# ours\nbackground\nroad\n\nperson\n").unwrap();
        let list = read_labels(&labels, None).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list.colour_of(1), voc_colour(1));
        let colours = dir.path().join("colors.txt");
        std::fs::write(&colours, "0 0 0\n128 64 128 255\n220,20,60\n").unwrap();
        let list = read_labels(&labels, Some(&colours)).unwrap();
        assert_eq!(list.colour_of(1), [128, 64, 128]);
        std::fs::write(&colours, "0 0 0\n128 64\n220 20 60\n").unwrap();
        let msg = read_labels(&labels, Some(&colours))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("colors.txt") && msg.contains("line 2"),
            "{msg}"
        );
        std::fs::write(&colours, "0 0 0\n").unwrap();
        let msg = read_labels(&labels, Some(&colours))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("1 colours for the 3 classes"), "{msg}");
        let labelmap = dir.path().join("labelmap.txt");
        std::fs::write(&labelmap, ClassList::voc().first(4).to_labelmap()).unwrap();
        assert_eq!(
            read_labels(&labelmap, None).unwrap(),
            ClassList::voc().first(4)
        );
    }
}
