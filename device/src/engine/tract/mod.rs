//! The tract backend: pure Rust, in every build. The graph is fixed to the card's input
//! size and optimised once; tract's shape inference checks the outputs against the card
//! before any frame is run.

mod fold;
mod im2col;
mod pool;
mod quantize;
#[cfg(test)]
mod test_graph;

use std::borrow::Cow;

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use super::check::{argmax_scores, check_output, Element};
use super::Raw;
use crate::card::{ModelCard, OutputKind};
use crate::onnx_card::pb;

/// tract's version, as linked.
pub const VERSION: &str = "0.23.9";

/// Set to `1` to run the graph as tract optimises it, without this crate's own passes
/// (`fold`, `im2col`, `quantize`, `pool`): to compare the two in one run; the output is the
/// same.
pub const TRACT_AS_IS: &str = "SEGCAM_TRACT_AS_IS";

#[derive(Debug)]
pub(super) struct Tract {
    plan: Arc<TypedRunnableModel>,
}

impl Tract {
    pub fn load(proto: &pb::ModelProto, card: &ModelCard, threads: usize) -> Result<Self, String> {
        let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
        let (h, w) = (card.input_height as usize, card.input_width as usize);
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(|e| format!("tract cannot read the graph: {e:#}"))?;
        let tract = |e: TractError| format!("tract cannot prepare the graph: {e:#}");
        model
            .set_input_fact(0, f32::fact([1, 3, h, w]).into())
            .map_err(tract)?;
        // A class map hides the channel count behind ArgMax: expose the scores too,
        // long enough to check them against the card.
        let scores =
            match card.output_kind {
                OutputKind::Logits => None,
                OutputKind::ClassMap => {
                    let label = argmax_scores(graph, card)?;
                    Some(model.find_outlet_label(label).ok_or_else(|| {
                        format!("the ArgMax's input '{label}' is not in the graph")
                    })?)
                }
            };
        let output = model.output_outlets().map_err(tract)?[0];
        if let Some(s) = scores {
            model.select_output_outlets(&[output, s]).map_err(tract)?;
        }
        let mut typed = model.into_typed().map_err(tract)?;
        check_typed_outputs(&typed, card)?;
        if scores.is_some() {
            let output = typed.output_outlets().map_err(tract)?[0];
            typed.select_output_outlets(&[output]).map_err(tract)?;
        }
        let mut optimized = typed.into_optimized().map_err(tract)?;
        if std::env::var_os(TRACT_AS_IS).is_none_or(|v| v != "1") {
            let folded = fold::fold_constants(&mut optimized).map_err(tract)?;
            let replaced = im2col::use_panel_im2col(&mut optimized).map_err(tract)?;
            let quantized = quantize::use_quantize_i8(&mut optimized).map_err(tract)?;
            let pooled = pool::pool_before_dequantize(&mut optimized).map_err(tract)?;
            tracing::debug!(
                "{folded} constants folded; {replaced} int8 convolutions pack their input \
                 panel by panel; {quantized} quantizations branch-free; {pooled} max pools \
                 on int8"
            );
        }
        let plan = optimized
            .into_runnable_with_options(&run_options(threads))
            .map_err(tract)?;
        Ok(Self { plan })
    }

    pub fn run<R>(
        &self,
        chw: &[f32],
        h: usize,
        w: usize,
        read: impl FnOnce(Raw<'_>) -> R,
    ) -> Result<R, String> {
        let fail = |e: TractError| format!("inference failed: {e:#}");
        let input = Tensor::from_shape(&[1, 3, h, w], chw).map_err(fail)?;
        let mut outputs = self.plan.run(tvec![input.into()]).map_err(fail)?;
        let output = outputs.remove(0);
        let shape = output.shape().to_vec();
        if output.datum_type() == DatumType::F32 {
            let view = output.try_as_plain_ram().map_err(fail)?;
            return Ok(read(Raw::Scores(
                shape,
                view.as_slice::<f32>().map_err(fail)?,
            )));
        }
        let indices = output.cast_to::<i64>().map_err(fail)?;
        let view = indices.try_as_plain_ram().map_err(fail)?;
        let values = view.as_slice::<i64>().map_err(fail)?;
        Ok(read(Raw::Classes(shape, Cow::Borrowed(values))))
    }
}

/// Puts the op `replacement` gives for a node in that node's place, for every node it
/// gives one for; returns how many. The replacement takes the same inputs and gives
/// the same output fact, so the rest of the optimised graph is untouched.
fn replace_ops(
    model: &mut TypedModel,
    replacement: impl Fn(&TypedModel, &TypedNode) -> TractResult<Option<Box<dyn TypedOp>>>,
) -> TractResult<usize> {
    let mut replaced = 0;
    for id in 0..model.nodes().len() {
        if let Some(op) = replacement(model, model.node(id))? {
            model.node_mut(id).op = op;
            replaced += 1;
        }
    }
    Ok(replaced)
}

/// How many class channels the graph's scores have at a `height × width` input, as
/// tract infers them: for a card of a graph that does not declare it. For a class map
/// (`class_map`), the scores the ArgMax that makes `output` reads.
pub(crate) fn class_channels(
    proto: &pb::ModelProto,
    output: &str,
    class_map: bool,
    height: usize,
    width: usize,
) -> Result<usize, String> {
    let tract = |e: TractError| format!("tract cannot infer the graph's shapes: {e:#}");
    let mut model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .map_err(|e| format!("tract cannot read the graph: {e:#}"))?;
    model
        .set_input_fact(0, f32::fact([1, 3, height, width]).into())
        .map_err(tract)?;
    let label = if class_map {
        let graph = proto.graph.as_ref().ok_or("the model has no graph")?;
        let argmax = graph
            .node
            .iter()
            .find(|n| n.op_type == "ArgMax" && n.output.iter().any(|o| o == output))
            .ok_or_else(|| format!("no ArgMax node makes the class map '{output}'"))?;
        // ONNX's default axis is 0; channels-last graphs take the last one
        let axis = argmax
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(0, |a| a.i);
        if axis != 1 && axis != -3 {
            return Err(format!(
                "the ArgMax that makes '{output}' runs over axis {axis}, not the channels of 1×C×H×W scores"
            ));
        }
        argmax
            .input
            .first()
            .ok_or("the ArgMax has no input")?
            .as_str()
    } else {
        output
    };
    let outlet = model
        .find_outlet_label(label)
        .ok_or_else(|| format!("'{label}' is not in the graph"))?;
    model.select_output_outlets(&[outlet]).map_err(tract)?;
    let typed = model.into_typed().map_err(tract)?;
    let fact = typed.output_fact(0).map_err(tract)?;
    fact.shape
        .as_concrete()
        .filter(|s| s.len() == 4 && s[0] == 1 && s[2..] == [height, width])
        .map(|s| s[1])
        .ok_or_else(|| {
            format!(
                "the scores '{label}' are {:?}, not 1×C×{height}×{width}",
                fact.shape
            )
        })
}

/// tract's run options for `threads`: ≤ 1 runs on the calling thread, more on a private
/// pool of that many threads.
pub fn run_options(threads: usize) -> RunOptions {
    let executor = if threads > 1 {
        Executor::multithread(threads)
    } else {
        Executor::SingleThread
    };
    RunOptions {
        executor: Some(executor),
        ..Default::default()
    }
}

/// The shapes tract infers for the card's input size against the card; for a class
/// map, the scores behind its ArgMax (the second output while checking) too.
fn check_typed_outputs(model: &TypedModel, card: &ModelCard) -> Result<(), String> {
    let shape = |ix: usize| -> Result<(Vec<usize>, Element), String> {
        let fact = model.output_fact(ix).map_err(|e| format!("{e:#}"))?;
        let shape = fact.shape.as_concrete().ok_or_else(|| {
            format!(
                "the graph's output shape {:?} is not fixed by a 1×3×{}×{} input",
                fact.shape, card.input_height, card.input_width
            )
        })?;
        let element = match fact.datum_type {
            DatumType::F32 => Element::F32,
            dt if dt.is_integer() => Element::Integer,
            dt => Element::Other(format!("{dt:?}")),
        };
        Ok((shape.to_vec(), element))
    };
    if card.output_kind == OutputKind::ClassMap {
        let (scores, element) = shape(1)?;
        let as_logits = ModelCard {
            output_kind: OutputKind::Logits,
            ..card.clone()
        };
        check_output(&scores, element, &as_logits)?;
    }
    let (out, element) = shape(0)?;
    check_output(&out, element, card)
}
