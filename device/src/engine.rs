//! The board's engine: an exported ONNX model run by tract. Loading reads the model
//! card from the file and refuses a model whose graph contradicts it, then fixes the
//! input shape from the card and optimises the graph for that shape once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{GrayImage, RgbImage};
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use crate::card::{ModelCard, OutputKind};
use crate::error::{Error, Result};
use crate::onnx_card::{self, model_error, pb};

/// What one run of the model gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// C×H×W class scores, planar (channel-major), as [`OutputKind::Logits`] models give.
    Logits(Vec<f32>),
    /// H×W class indices, as [`OutputKind::ClassMap`] models (ArgMax in the graph) give.
    ClassMap(GrayImage),
}

/// A loaded, optimised model with its card.
#[derive(Debug)]
pub struct Engine {
    path: PathBuf,
    card: ModelCard,
    plan: Arc<TypedRunnableModel>,
}

impl Engine {
    /// Load `path`, check its card against the graph, and optimise it for the card's
    /// input size. `threads` ≤ 1 runs on the calling thread; more uses a private pool.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        let proto = onnx_card::decode_file(path)?;
        let fail = |message: String| model_error(path, message);
        let card = onnx_card::card_of(&proto).map_err(fail)?;
        let graph = proto.graph.as_ref().expect("decode checks the graph");
        check_declared_io(graph, &card).map_err(fail)?;

        let (h, w) = (card.input_height as usize, card.input_width as usize);
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(|e| fail(format!("tract cannot read the graph: {e:#}")))?;
        let tract = |e: TractError| fail(format!("tract cannot prepare the graph: {e:#}"));
        model
            .set_input_fact(0, f32::fact([1, 3, h, w]).into())
            .map_err(tract)?;
        // A class map hides the channel count behind ArgMax: expose the scores too,
        // long enough to check them against the card.
        let scores = match card.output_kind {
            OutputKind::Logits => None,
            OutputKind::ClassMap => Some(scores_outlet(graph, &model, &card).map_err(fail)?),
        };
        let output = model.output_outlets().map_err(tract)?[0];
        if let Some(s) = scores {
            model.select_output_outlets(&[output, s]).map_err(tract)?;
        }
        let mut typed = model.into_typed().map_err(tract)?;
        check_outputs(&typed, &card).map_err(fail)?;
        if scores.is_some() {
            let output = typed.output_outlets().map_err(tract)?[0];
            typed.select_output_outlets(&[output]).map_err(tract)?;
        }
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable_with_options(&run_options(threads)))
            .map_err(tract)?;
        Ok(Self {
            path: path.to_owned(),
            card,
            plan,
        })
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input size the model was fixed to, as (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        (self.card.input_width, self.card.input_height)
    }

    /// Run on one normalised image, planar CHW (3 × height × width values).
    pub fn run(&self, chw: &[f32]) -> Result<Output> {
        let (w, h) = self.input_size();
        let (w, h) = (w as usize, h as usize);
        if chw.len() != 3 * h * w {
            return Err(Error::Invalid(format!(
                "{}: input of {} values, the model takes 3×{h}×{w} = {}",
                self.path.display(),
                chw.len(),
                3 * h * w
            )));
        }
        let fail = |e: TractError| model_error(&self.path, format!("inference failed: {e:#}"));
        let input = Tensor::from_shape(&[1, 3, h, w], chw).map_err(fail)?;
        let mut outputs = self.plan.run(tvec![input.into()]).map_err(fail)?;
        let output = outputs.remove(0).into_tensor();
        match self.card.output_kind {
            OutputKind::Logits => {
                let view = output.try_as_plain_ram().map_err(fail)?;
                Ok(Output::Logits(
                    view.as_slice::<f32>().map_err(fail)?.to_vec(),
                ))
            }
            OutputKind::ClassMap => {
                let indices = output.cast_to::<i64>().map_err(fail)?;
                let view = indices.try_as_plain_ram().map_err(fail)?;
                let pixels = view.as_slice::<i64>().map_err(fail)?;
                let bytes = pixels.iter().map(|&c| c.clamp(0, 255) as u8).collect();
                let map = GrayImage::from_raw(w as u32, h as u32, bytes)
                    .expect("the output shape was checked at load");
                Ok(Output::ClassMap(map))
            }
        }
    }

    /// The class map of an image already at the model's input size.
    pub fn classify(&self, image: &RgbImage) -> Result<GrayImage> {
        let (w, h) = self.input_size();
        if image.dimensions() != (w, h) {
            return Err(Error::Invalid(format!(
                "{}: the model takes {w}×{h} images, got {}×{}",
                self.path.display(),
                image.width(),
                image.height()
            )));
        }
        let mut chw = vec![0.0; 3 * (w * h) as usize];
        self.card.normalization.to_chw(image, &mut chw);
        Ok(match self.run(&chw)? {
            Output::Logits(scores) => argmax(&scores, self.card.classes.len(), w, h),
            Output::ClassMap(map) => map,
        })
    }
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

/// Per-pixel index of the largest of `classes` planar score planes; ties go to the
/// lower index, as PyTorch's `argmax` does.
pub fn argmax(scores: &[f32], classes: usize, width: u32, height: u32) -> GrayImage {
    let plane = (width * height) as usize;
    assert_eq!(scores.len(), classes * plane, "scores vs classes × pixels");
    let mut best = scores[..plane].to_vec();
    let mut index = vec![0u8; plane];
    for c in 1..classes {
        let row = &scores[c * plane..(c + 1) * plane];
        for ((b, i), &s) in best.iter_mut().zip(&mut index).zip(row) {
            if s > *b {
                *b = s;
                *i = c as u8;
            }
        }
    }
    GrayImage::from_raw(width, height, index).expect("plane size")
}

/// The graph's declared input and output against the card: names and input shape.
fn check_declared_io(graph: &pb::GraphProto, card: &ModelCard) -> Result<(), String> {
    let initialised: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<&pb::ValueInfoProto> = graph
        .input
        .iter()
        .filter(|i| !initialised.contains(&i.name.as_str()))
        .collect();
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

/// The dimensions of a declared tensor; `None` for symbolic ones.
fn declared_dims(info: &pb::ValueInfoProto) -> Vec<Option<usize>> {
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

/// The scores a class-map model's ArgMax reads.
fn scores_outlet(
    graph: &pb::GraphProto,
    model: &InferenceModel,
    card: &ModelCard,
) -> Result<OutletId, String> {
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
    let scores = argmax.input.first().map(String::as_str).unwrap_or("");
    model
        .find_outlet_label(scores)
        .ok_or_else(|| format!("the ArgMax's input '{scores}' is not in the graph"))
}

/// The shapes tract infers for the card's input size against the card: logits are
/// 1×C×H×W (C = the card's classes); a class map is 1×H×W (or 1×1×H×W) of integers
/// computed from 1×C×H×W scores (the second output while checking).
fn check_outputs(model: &TypedModel, card: &ModelCard) -> Result<(), String> {
    let (h, w) = (card.input_height as usize, card.input_width as usize);
    let input = [1, 3, h, w];
    let shape = |ix: usize| -> Result<(Vec<usize>, DatumType), String> {
        let fact = model.output_fact(ix).map_err(|e| format!("{e:#}"))?;
        let shape = fact.shape.as_concrete().ok_or_else(|| {
            format!(
                "the graph's output shape {:?} is not fixed by a 1×3×{h}×{w} input",
                fact.shape
            )
        })?;
        Ok((shape.to_vec(), fact.datum_type))
    };
    let scores_ix = match card.output_kind {
        OutputKind::Logits => 0,
        OutputKind::ClassMap => 1,
    };
    let (scores, dt) = shape(scores_ix)?;
    if scores.len() != 4 || scores[0] != 1 || scores[2..] != [h, w] {
        return Err(format!(
            "the graph's class scores are {scores:?}, expected 1×C×{h}×{w} for the card's input size"
        ));
    }
    if dt != DatumType::F32 {
        return Err(format!("the graph's class scores are {dt:?}, expected f32"));
    }
    card.check_graph(&input, Some(scores[1]))
        .map_err(|e| e.to_string())?;
    if card.output_kind == OutputKind::ClassMap {
        let (map, dt) = shape(0)?;
        if !(map == [1, h, w] || map == [1, 1, h, w]) || !dt.is_integer() {
            return Err(format!(
                "the model card says the output '{}' is a 1×{h}×{w} class map, the graph gives {dt:?} {map:?}",
                card.output_name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_card::{encode, set_card, test_card};
    use crate::testing::conv_model;

    fn write(dir: &Path, name: &str, model: &pb::ModelProto) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, encode(model)).unwrap();
        path
    }

    fn card_for(classes: usize, class_map: bool) -> ModelCard {
        let mut card = test_card(classes, 4, 6);
        card.output_name = if class_map { "classes" } else { "scores" }.into();
        if class_map {
            card.output_kind = OutputKind::ClassMap;
        }
        card
    }

    #[test]
    fn logits_and_class_maps_agree_with_the_arithmetic() {
        let dir = tempfile::tempdir().unwrap();
        // Pixel p has channels (x, y, z): score of class c = c(x+y+z) - (y + 2z).
        let chw: Vec<f32> = (0..3 * 24).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let expect = |c: usize, p: usize| {
            (0..3)
                .map(|k| (c as f32 - k as f32) * chw[k * 24 + p])
                .sum::<f32>()
        };
        for class_map in [false, true] {
            let mut model = conv_model(3, 4, 6, class_map);
            set_card(&mut model, &card_for(3, class_map));
            let engine = Engine::load(&write(dir.path(), "m.onnx", &model), 2).unwrap();
            let out = engine.run(&chw).unwrap();
            let want: Vec<f32> = (0..3)
                .flat_map(|c| (0..24).map(move |p| (c, p)))
                .map(|(c, p)| expect(c, p))
                .collect();
            let map = match out {
                Output::Logits(scores) => {
                    for (a, b) in scores.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "{scores:?} vs {want:?}");
                    }
                    argmax(&scores, 3, 6, 4)
                }
                Output::ClassMap(map) => map,
            };
            assert_eq!(map, argmax(&want, 3, 6, 4), "class_map {class_map}");
        }
    }

    #[test]
    fn contradictions_between_card_and_graph_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = |model: &pb::ModelProto| {
            let path = write(dir.path(), "bad.onnx", model);
            let msg = Engine::load(&path, 1).unwrap_err().to_string();
            assert!(msg.contains("bad.onnx"), "{msg}");
            msg
        };
        let mut model = conv_model(3, 4, 6, false);
        let msg = err(&model);
        assert!(msg.contains("no segcam model card"), "{msg}");

        set_card(&mut model, &card_for(5, false));
        let msg = err(&model);
        assert!(
            msg.contains("5 classes") && msg.contains("3 channels"),
            "{msg}"
        );

        let mut card = card_for(3, false);
        card.input_width = 8;
        set_card(&mut model, &card);
        let msg = err(&model);
        assert!(
            msg.contains("1×3×4×8") && msg.contains("[1, 3, 4, 6]"),
            "{msg}"
        );

        let mut card = card_for(3, false);
        card.input_name = "pixels".into();
        set_card(&mut model, &card);
        assert!(err(&model).contains("'pixels'"));

        let mut class_map = conv_model(3, 4, 6, true);
        set_card(&mut class_map, &card_for(4, true));
        let msg = err(&class_map);
        assert!(
            msg.contains("4 classes") && msg.contains("3 channels"),
            "{msg}"
        );

        let mut card = card_for(3, true);
        card.output_name = "scores".into();
        set_card(&mut model, &card);
        let msg = err(&model);
        assert!(msg.contains("class map") && msg.contains("ArgMax"), "{msg}");

        model.metadata_props[0].value = model.metadata_props[0]
            .value
            .replace("\"format_version\":1", "\"format_version\":99");
        assert!(err(&model).contains("version 99"));
        model.metadata_props[0].value = "{not json".into();
        assert!(err(&model).contains("not JSON"));
    }

    #[test]
    fn inputs_of_the_wrong_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = conv_model(3, 4, 6, false);
        set_card(&mut model, &card_for(3, false));
        let engine = Engine::load(&write(dir.path(), "m.onnx", &model), 1).unwrap();
        let msg = engine.run(&[0.0; 10]).unwrap_err().to_string();
        assert!(msg.contains("3×4×6"), "{msg}");
        let msg = engine
            .classify(&RgbImage::new(5, 4))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("6×4") && msg.contains("5×4"), "{msg}");
        assert_eq!(
            engine.classify(&RgbImage::new(6, 4)).unwrap().dimensions(),
            (6, 4)
        );
    }
}
