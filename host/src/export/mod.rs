//! `seg-host export`: a checkpoint → one ONNX file with the model card inside,
//! checked by running it through the board's engine before it is given its name.
//!
//! The file is written under a temporary name, loaded by the engine (which checks
//! the card against the graph), compared with tch's forward pass on sample images and
//! only then renamed; any failure removes it, so no partial or unverified file is left.

pub mod fold;
pub mod graph;
pub mod verify;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use segcam::card::{Figures, ModelCard, OutputKind, Precision, CARD_VERSION};
use segcam::onnx_card;
use tch::nn::VarStore;

use crate::atomic::{self, Pending};
use crate::checkpoint::{self, CheckpointInfo, Expect, ARCHITECTURE};
use crate::dataset::{BadFiles, VocDataset};
use crate::eval;
use crate::model::{self, Fcn};

pub use graph::{Head, Upsampler};
pub use verify::Agreement;

/// Largest absolute logit difference between the engine and tch that export accepts.
pub const TOLERANCE: f32 = 1e-3;

/// What to export and how to check it.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A checkpoint written by `seg-host train` (`.safetensors` beside its `.json`).
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub height: u32,
    pub width: u32,
    pub upsampler: Upsampler,
    /// A VOC-layout dataset: sample images for the check, and the split whose figures
    /// go into the card's `export_validation`.
    pub data: Option<PathBuf>,
    pub split: String,
    pub skip_bad: bool,
    /// Sample images compared with tch.
    pub samples: usize,
    /// Threads for the engine.
    pub threads: usize,
    /// Largest accepted logit difference between the engine and tch.
    pub tolerance: f32,
}

impl ExportOptions {
    pub fn new(checkpoint: PathBuf, out: PathBuf) -> Self {
        Self {
            checkpoint,
            out,
            height: 320,
            width: 480,
            upsampler: Upsampler::DepthToSpace,
            data: None,
            split: "val".into(),
            skip_bad: false,
            samples: 3,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tolerance: TOLERANCE,
        }
    }
}

/// What was written and how well it agreed.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    pub card: ModelCard,
    pub bytes: usize,
    pub samples: usize,
    pub agreement: Agreement,
}

/// Export, verify and write `opts.out`; nothing is left at `opts.out` (or beside it)
/// when this fails.
pub fn export(opts: &ExportOptions) -> Result<ExportReport> {
    model::check_size(opts.height, opts.width)?;
    if opts.samples == 0 {
        bail!("--samples must be at least 1: the export is checked against tch on them");
    }
    let description = checkpoint::info_path(&opts.checkpoint);
    atomic::check_output(&opts.out, &[&opts.checkpoint, &description])?;
    let info = checkpoint::read_info(&opts.checkpoint)?;
    let mut vs = VarStore::new(tch::Device::Cpu);
    let net = Fcn::new(&vs.root(), info.classes.len() as i64);
    let tensors = checkpoint::read_weights(&opts.checkpoint, &info)?;
    checkpoint::copy_into(&mut vs, &tensors, Expect::All, &opts.checkpoint)?;
    let spec = graph::GraphSpec {
        height: opts.height,
        width: opts.width,
        classes: info.classes.len(),
        upsampler: opts.upsampler,
        head: Head::Logits,
    };
    let mut model = graph::build(&vs.variables(), &spec)
        .with_context(|| format!("{}: cannot build the graph", opts.checkpoint.display()))?;

    // Named after the file the user asked for ("demo.onnx" → "demo"), not the
    // checkpoint, whose name is usually just "best".
    let name = opts
        .out
        .file_stem()
        .map_or_else(|| ARCHITECTURE.into(), |s| s.to_string_lossy().into_owned());
    let mut card = card(&info, name, &spec);
    onnx_card::set_card(&mut model, &card);

    let bad = BadFiles::skip_if(opts.skip_bad);
    let dataset = match &opts.data {
        Some(root) => {
            let mut ds = VocDataset::open(root, &opts.split, Some(info.classes.clone()), bad)?;
            ds.keep_at_least(opts.height, opts.width, bad)?;
            if ds.samples.is_empty() {
                bail!(
                    "{}: no '{}' image is at least {}×{} (height×width); export at a smaller size",
                    root.display(),
                    opts.split,
                    opts.height,
                    opts.width
                );
            }
            Some(ds)
        }
        None => None,
    };

    atomic::create_parent(&opts.out)?;
    atomic::remove_stale_beside(&opts.out);
    let pending = Pending::beside(&opts.out)?;
    pending.write(&onnx_card::encode(&model))?;
    let engine = verify::load(pending.path(), opts.threads)?;
    let images =
        verify::sample_images(dataset.as_ref(), opts.samples, opts.width, opts.height, bad)?;
    let inputs = verify::normalised(&images, &info.normalization);
    let reference = verify::tch_logits(&net, &inputs, opts.width, opts.height);
    let agreement = verify::compare(&engine, &inputs, &reference)?;
    if !verify::within(&agreement, opts.tolerance) {
        bail!(
            "{}: not written: the board's engine differs from tch by {:e} (max abs; logits up to {:.3}; tolerance {:e}) on {} sample images",
            opts.out.display(),
            agreement.max_abs_diff,
            agreement.max_abs_logit,
            opts.tolerance,
            inputs.len()
        );
    }
    tracing::info!(
        "engine vs tch: max abs diff {:.2e} (logits up to {:.2}), {:.4}% of pixels the same class",
        agreement.max_abs_diff,
        agreement.max_abs_logit,
        100.0 * agreement.class_agreement
    );

    if let Some(ds) = &dataset {
        let figures = eval::engine::evaluate(&engine, ds, bad, 0)?;
        card.export_validation = Some(Figures {
            pixel_accuracy: figures.matrix.pixel_accuracy(),
            mean_iou: figures.matrix.mean_iou(),
            images: figures.images,
        });
        onnx_card::set_card(&mut model, &card);
    }
    drop(engine);
    let bytes = onnx_card::encode(&model);
    pending.write(&bytes)?;
    // The card is the one thing that changed since the check: read it back.
    let written = onnx_card::read_card(pending.path())?;
    anyhow::ensure!(
        written == card,
        "{}: the card did not read back",
        pending.path().display()
    );
    pending.persist()?;
    Ok(ExportReport {
        out: opts.out.clone(),
        card,
        bytes: bytes.len(),
        samples: inputs.len(),
        agreement,
    })
}

/// The card of a model built from a checkpoint described by `info` as `spec`; no
/// export figures yet.
pub fn card(info: &CheckpointInfo, name: String, spec: &graph::GraphSpec) -> ModelCard {
    let (output_name, output_kind) = match spec.head {
        Head::Logits => (graph::LOGITS_NAME, OutputKind::Logits),
        Head::ClassMap => (graph::CLASS_MAP_NAME, OutputKind::ClassMap),
    };
    ModelCard {
        format_version: CARD_VERSION,
        name,
        architecture: ARCHITECTURE.into(),
        classes: info.classes.clone(),
        input_name: graph::INPUT_NAME.into(),
        input_height: spec.height,
        input_width: spec.width,
        normalization: info.normalization,
        output_name: output_name.into(),
        output_kind,
        precision: Precision::F32,
        training_validation: info.history.last().map(|r| Figures {
            pixel_accuracy: r.val_pixel_acc,
            mean_iou: r.val_miou,
            images: r.val_images,
        }),
        export_validation: None,
        quantization: None,
        engine: None,
        class_distribution: info.class_distribution.clone(),
    }
}
