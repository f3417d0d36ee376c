//! The model card against the graph, for every backend: the declared input and output
//! names and the input shape (from the file), then the shapes the backend computes.

use crate::card::{ModelCard, OutputKind};
use crate::onnx_card::pb;

/// The graph's declared input and output against the card: names and input shape.
pub(super) fn check_declared_io(graph: &pb::GraphProto, card: &ModelCard) -> Result<(), String> {
    let inputs = fed_inputs(graph);
    let [input] = inputs[..] else {
        return Err(format!(
            "the graph has {} inputs, a segcam model has one ('{}')",
            inputs.len(),
            card.input_name
        ));
    };
    if input.name != card.input_name {
        return Err(format!(
            "the model card names the input '{}', the graph's input is '{}'",
            card.input_name, input.name
        ));
    }
    let [output] = &graph.output[..] else {
        return Err(format!(
            "the graph has {} outputs, a segcam model has one ('{}')",
            graph.output.len(),
            card.output_name
        ));
    };
    if output.name != card.output_name {
        return Err(format!(
            "the model card names the output '{}', the graph's output is '{}'",
            card.output_name, output.name
        ));
    }
    // Symbolic dimensions take the card's value; fixed ones must agree with it.
    let want = [1, 3, card.input_height as usize, card.input_width as usize];
    let dims = declared_dims(input);
    if dims.len() != 4 {
        return Err(format!(
            "the graph's input '{}' has {} dimensions, expected 4 (1×3×H×W)",
            input.name,
            dims.len()
        ));
    }
    let shape: Vec<usize> = dims.iter().zip(want).map(|(d, w)| d.unwrap_or(w)).collect();
    card.check_graph(&shape, None).map_err(|e| e.to_string())
}

/// The graph's inputs that are fed (older exporters also list the weights as inputs).
pub(crate) fn fed_inputs(graph: &pb::GraphProto) -> Vec<&pb::ValueInfoProto> {
    let initialised: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    graph
        .input
        .iter()
        .filter(|i| !initialised.contains(&i.name.as_str()))
        .collect()
}

/// The element type of a declared tensor, where it is declared.
pub(crate) fn declared_element(info: &pb::ValueInfoProto) -> Option<pb::tensor_proto::DataType> {
    match info.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => {
            pb::tensor_proto::DataType::try_from(t.elem_type).ok()
        }
        _ => None,
    }
}

/// The dimensions of a declared tensor; `None` for symbolic ones.
pub(crate) fn declared_dims(info: &pb::ValueInfoProto) -> Vec<Option<usize>> {
    use pb::tensor_shape_proto::dimension::Value;
    let Some(pb::type_proto::Value::TensorType(t)) =
        info.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return vec![];
    };
    t.shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(Value::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The ArgMax node that makes a class-map model's output, and the scores it reads.
pub(super) fn argmax_scores<'g>(
    graph: &'g pb::GraphProto,
    card: &ModelCard,
) -> Result<&'g str, String> {
    let argmax = graph
        .node
        .iter()
        .find(|n| n.op_type == "ArgMax" && n.output.contains(&card.output_name))
        .ok_or_else(|| {
            format!(
                "the model card says the output '{}' is a class map, but no ArgMax node produces it",
                card.output_name
            )
        })?;
    Ok(argmax.input.first().map(String::as_str).unwrap_or(""))
}

/// The element type of a computed output.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Element {
    F32,
    Integer,
    Other(String),
}

/// The shape of a computed output against the card: 1×C×H×W f32 logits (C = the
/// card's classes), or a 1×H×W (or 1×1×H×W) integer class map.
pub(super) fn check_output(
    shape: &[usize],
    element: Element,
    card: &ModelCard,
) -> Result<(), String> {
    let (h, w) = (card.input_height as usize, card.input_width as usize);
    match card.output_kind {
        OutputKind::Logits => {
            if shape.len() != 4 || shape[0] != 1 || shape[2..] != [h, w] {
                return Err(format!(
                    "the graph's class scores are {shape:?}, expected 1×C×{h}×{w} for the card's input size"
                ));
            }
            if element != Element::F32 {
                return Err(format!(
                    "the graph's class scores are {element:?}, expected f32"
                ));
            }
            card.check_graph(&[1, 3, h, w], Some(shape[1]))
                .map_err(|e| e.to_string())
        }
        OutputKind::ClassMap => {
            if !(shape == [1, h, w] || shape == [1, 1, h, w]) || element != Element::Integer {
                return Err(format!(
                    "the model card says the output '{}' is a 1×{h}×{w} class map, the graph gives {element:?} {shape:?}",
                    card.output_name
                ));
            }
            Ok(())
        }
    }
}
