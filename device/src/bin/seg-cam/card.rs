//! `seg-cam card`: show a model's card, or give a model made elsewhere the card that
//! lets seg-cam run it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;

use segcam::adopt::{self, Adoption};
use segcam::card::EngineKind;
use segcam::engine::{Engine, EngineChoice, EngineOptions};
use segcam::onnx_card;
use segcam::preprocess::Normalization;

use crate::whole::write_whole;

#[derive(Debug, Parser)]
#[command(
    name = "seg-cam card",
    about = "Show a model's card, or give an ONNX segmentation model made elsewhere (a torchvision export, tf2onnx, onnxruntime's quantizer) the card seg-cam runs it by",
    after_help = "Examples:\n  \
        seg-cam card --model models/fcn.onnx\n  \
        seg-cam card --model fcn_resnet50.onnx --out models/fcn50.onnx                  (21 outputs: VOC's classes)\n  \
        seg-cam card --model road.onnx --labels classes.txt --colors colors.txt --size 512x1024 --out models/road.onnx\n\n\
        The input and output names, the input size, class scores or class map, and the int8 form come\n\
        from the graph; --labels takes one class name per line (jetson-inference's classes.txt) or a\n\
        VOC labelmap.txt, --colors one \"R G B\" line per class (its colors.txt). The model is loaded\n\
        and run once with the new card (in tract, or onnxruntime for a QDQ int8 graph) before the file appears."
)]
pub struct CardCli {
    /// The ONNX model.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Write the model with a new card here [without: print the model's card].
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    overwrite: bool,
    /// Class names, one per line, in output-channel order, or a VOC labelmap.txt
    /// [default: VOC's for 21 outputs, else class-0, class-1, …].
    #[arg(long, value_name = "FILE", requires = "out")]
    labels: Option<PathBuf>,
    /// Class colours, one "R G B" line per class [default: the labelmap's, else VOC's palette].
    #[arg(long, value_name = "FILE", requires = "labels")]
    colors: Option<PathBuf>,
    /// The input size as HEIGHTxWIDTH, where the graph leaves it open.
    #[arg(long, value_name = "HxW", value_parser = parse_size, requires = "out")]
    size: Option<(u32, u32)>,
    /// Per-channel mean of the 0–1 RGB input.
    #[arg(long, value_name = "R,G,B", default_value = "0.485,0.456,0.406", value_parser = parse_triple)]
    mean: [f32; 3],
    /// Per-channel standard deviation of the 0–1 RGB input.
    #[arg(long, value_name = "R,G,B", default_value = "0.229,0.224,0.225", value_parser = parse_triple)]
    std: [f32; 3],
    /// The model's name on the page and in releases [default: --out's file stem].
    #[arg(long, requires = "out", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    name: Option<String>,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (h, w) = text
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("'{text}': want HEIGHTxWIDTH, e.g. 320x480"))?;
    let side = |s: &str| {
        s.trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(|| format!("'{text}': '{s}' is not a positive whole number"))
    };
    Ok((side(h)?, side(w)?))
}

fn parse_triple(text: &str) -> Result<[f32; 3], String> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("'{text}': {e}"))?;
    <[f32; 3]>::try_from(values).map_err(|v| format!("'{text}': {} values, want 3", v.len()))
}

pub fn main(cli: CardCli) -> anyhow::Result<ExitCode> {
    let proto = onnx_card::decode_file(&cli.model)?;
    let Some(out) = &cli.out else {
        let card = onnx_card::card_of(&proto)
            .map_err(|m| anyhow::anyhow!("{}: {m}", cli.model.display()))
            .context("give it one with --out FILE (seg-cam card --help)")?;
        let json: serde_json::Value = serde_json::from_str(&card.to_json())?;
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    };
    if out.exists() && !cli.overwrite {
        bail!("{}: exists (--overwrite replaces it)", out.display());
    }
    let folder = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        bail!("{}: no folder {}", out.display(), folder.display());
    }
    let classes = cli
        .labels
        .as_deref()
        .map(|labels| adopt::read_labels(labels, cli.colors.as_deref()))
        .transpose()?;
    let name = cli.name.clone().unwrap_or_else(|| {
        out.file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned())
    });
    let given = Adoption {
        name,
        classes,
        size: cli.size,
        normalization: Normalization {
            mean: cli.mean,
            std: cli.std,
        },
    };
    let card = adopt::card_for(&proto, given)
        .with_context(|| format!("{}: no card fits", cli.model.display()))?;
    let mut proto = proto;
    onnx_card::set_card(&mut proto, &card);
    // Loaded and run with its card under a name of its own first: a card that does
    // not fit the graph never reaches --out.
    let bytes = onnx_card::encode(&proto);
    let trial = Trial(trial_path(out));
    std::fs::write(&trial.0, &bytes).with_context(|| format!("{}: cannot write", out.display()))?;
    let tried = try_model(&trial.0, &card);
    drop(trial);
    tried.with_context(|| {
        format!(
            "{}: the model does not run with this card",
            cli.model.display()
        )
    })?;
    write_whole(out, &bytes)?;
    println!(
        "{}: {} classes, input '{}' 1×3×{}×{}, output '{}' ({:?}, {:?}), made for {}",
        out.display(),
        card.classes.len(),
        card.input_name,
        card.input_height,
        card.input_width,
        card.output_name,
        card.output_kind,
        card.precision,
        card.engine.map_or("any engine".into(), |e| e.to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// The file a card is tried in, removed however the try ends.
struct Trial(PathBuf);

impl Drop for Trial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn trial_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or("model".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".{name}.trial-{}", std::process::id()))
}

/// Load `path` and run one grey frame: in tract, whose load checks the scores' shape
/// against the card, unless the card is onnxruntime's (an int8 QDQ graph).
fn try_model(path: &Path, card: &segcam::card::ModelCard) -> anyhow::Result<()> {
    let engine = match card.made_for() {
        Some(EngineKind::Onnxruntime) => EngineChoice::Auto,
        _ => EngineChoice::Tract,
    };
    let engine = Engine::open(path, &EngineOptions::tract(1).with_engine(engine))?;
    let (w, h) = engine.input_size();
    engine.classify(&image::RgbImage::from_pixel(w, h, image::Rgb([128; 3])))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_triples_parse_or_say_why_not() {
        assert_eq!(parse_size("320x480"), Ok((320, 480)));
        assert_eq!(parse_size("320×480"), Ok((320, 480)));
        assert!(parse_size("320").unwrap_err().contains("HEIGHTxWIDTH"));
        assert!(parse_size("0x480").unwrap_err().contains("positive"));
        assert_eq!(parse_triple("0.5, 0.5,0.5"), Ok([0.5; 3]));
        assert!(parse_triple("0.5,0.5").unwrap_err().contains("2 values"));
        assert!(parse_triple("a,b,c").is_err());
    }
}
