//! The model card: everything the board must know about a model, embedded in the ONNX
//! file's `metadata_props` so that it can never go out of sync with the weights.

use serde::{Deserialize, Serialize};

use crate::classes::ClassList;
use crate::error::{Error, Result};
use crate::preprocess::Normalization;

/// The `metadata_props` key under which the card's JSON is stored.
pub const METADATA_KEY: &str = "segcam.model_card";
/// The card format this library reads and writes.
pub const CARD_VERSION: u32 = 1;
/// The longest side a card may give its input: far above any camera model, far below
/// what would exhaust a board's memory per frame.
pub const MAX_SIDE: u32 = 8192;
/// The smallest standard deviation a card may normalise by.
pub const MIN_STD: f32 = 1e-6;

/// Element type of the model's weights and arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Int8,
}

/// The engines that run a model on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// tract: pure Rust, in every build (the static board binary included).
    Tract,
    /// onnxruntime through its shared library (the `onnxruntime` feature).
    #[cfg_attr(feature = "clap", value(alias = "ort"))]
    Onnxruntime,
}

impl EngineKind {
    pub const ALL: [EngineKind; 2] = [EngineKind::Tract, EngineKind::Onnxruntime];

    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Tract => "tract",
            EngineKind::Onnxruntime => "onnxruntime",
        }
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tract" => Ok(EngineKind::Tract),
            "onnxruntime" | "ort" => Ok(EngineKind::Onnxruntime),
            _ => Err(format!("engine '{s}': expected tract or onnxruntime")),
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How an int8 graph is written: each engine runs one form with integer kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum QuantFormat {
    /// QuantizeLinear/DequantizeLinear pairs around f32 Conv, Add and MaxPool, uint8
    /// activations, int8 per-channel weights: onnxruntime fuses these into its integer
    /// kernels (tract runs them in f32).
    Qdq,
    /// `QLinearConv` nodes with int8 activations: tract's integer kernels.
    Qlinear,
}

impl QuantFormat {
    /// The engine that runs this form fastest.
    pub fn engine(self) -> EngineKind {
        match self {
            QuantFormat::Qdq => EngineKind::Onnxruntime,
            QuantFormat::Qlinear => EngineKind::Tract,
        }
    }

    /// The form `engine` runs fastest.
    pub fn for_engine(engine: EngineKind) -> Self {
        match engine {
            EngineKind::Tract => QuantFormat::Qlinear,
            EngineKind::Onnxruntime => QuantFormat::Qdq,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantFormat::Qdq => "qdq",
            QuantFormat::Qlinear => "qlinear",
        }
    }
}

/// What the output tensor holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// 1×C×H×W class scores.
    Logits,
    /// 1×H×W class indices (ArgMax in the graph).
    ClassMap,
}

/// Pixel accuracy and mean IoU on a named split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub pixel_accuracy: f64,
    pub mean_iou: f64,
    pub images: usize,
}

/// How an int8 model was calibrated and what it lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantization {
    /// `minmax` or `percentile:<p>`.
    pub calibration: String,
    pub calibration_images: usize,
    /// The f32 model's figures on the same validation images.
    pub f32_validation: Option<Figures>,
    /// The int8 form of the graph (cards written before it existed: `qlinear`).
    #[serde(default = "qlinear")]
    pub format: QuantFormat,
    /// Convolutions whose weights have one scale per tensor (the rest: per output channel).
    #[serde(default)]
    pub per_tensor_weights: usize,
    /// Convolutions left in f32 because int8 cost a class too much.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub float_layers: Vec<String>,
}

fn qlinear() -> QuantFormat {
    QuantFormat::Qlinear
}

/// The card. Serialised as JSON into the ONNX file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format_version: u32,
    pub name: String,
    pub architecture: String,
    pub classes: ClassList,
    /// Input tensor: `input_name`, f32 1×3×H×W, RGB, 0..1 scaled then normalised.
    pub input_name: String,
    pub input_height: u32,
    pub input_width: u32,
    pub normalization: Normalization,
    pub output_name: String,
    pub output_kind: OutputKind,
    pub precision: Precision,
    /// Figures recorded by training for the exported weights (validation split).
    pub training_validation: Option<Figures>,
    /// Figures measured at export through the board's engine.
    pub export_validation: Option<Figures>,
    pub quantization: Option<Quantization>,
    /// The engine the model was made for (an int8 form runs fast on one engine only);
    /// `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineKind>,
    /// Each class's share of the training labels' pixels (void left out), the
    /// reference the board's drift score compares its recent class maps with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_distribution: Option<Vec<f64>>,
}

impl ModelCard {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a model card serialises")
    }

    /// Parse a card, refusing other format versions with a message that says which.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("the model card is not JSON: {e}")))?;
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == CARD_VERSION as u64 => {}
            Some(v) => {
                return Err(Error::Invalid(format!(
                    "model card format version {v}; this segcam reads version {CARD_VERSION} (update seg-cam or re-export the model)"
                )))
            }
            None => return Err(Error::Invalid("the model card has no format_version".into())),
        }
        let card: Self = serde_json::from_value(value)
            .map_err(|e| Error::Invalid(format!("invalid model card: {e}")))?;
        if let Some(shares) = &card.class_distribution {
            let valid = shares.iter().all(|s| s.is_finite() && *s >= 0.0)
                && shares.iter().sum::<f64>() > 0.0;
            if shares.len() != card.classes.len() || !valid {
                return Err(Error::Invalid(format!(
                    "the model card's class_distribution has {} values for {} classes, or a value that is not a share (want one non-negative number per class)",
                    shares.len(),
                    card.classes.len()
                )));
            }
        }
        let n = card.normalization;
        // A std near zero turns every pixel into inf/NaN: class 0 everywhere, silently.
        if !(n.std.iter().all(|s| s.is_finite() && *s >= MIN_STD)
            && n.mean.iter().all(|m| m.is_finite()))
        {
            return Err(Error::Invalid(format!(
                "the model card's normalisation (mean {:?}, std {:?}) needs finite means and standard deviations of at least {MIN_STD}",
                n.mean, n.std
            )));
        }
        // The card's size sizes every frame's buffers (and a graph with symbolic sides
        // takes it as is): a side of 0 or of 65536 is a broken card, not a big model.
        for (name, side) in [
            ("input_height", card.input_height),
            ("input_width", card.input_width),
        ] {
            if !(1..=MAX_SIDE).contains(&side) {
                return Err(Error::Invalid(format!(
                    "the model card's {name} is {side}; a side must be 1 to {MAX_SIDE} pixels"
                )));
            }
        }
        Ok(card)
    }

    /// The engine this model was made for: the card's, or for int8 cards written before
    /// engines were recorded, the one their form runs in.
    pub fn made_for(&self) -> Option<EngineKind> {
        self.engine
            .or_else(|| self.quantization.as_ref().map(|q| q.format.engine()))
    }

    /// Check the card against what the graph says: its input shape and the number of
    /// classes it outputs (`None` when the graph does not fix it).
    pub fn check_graph(&self, input_shape: &[usize], output_channels: Option<usize>) -> Result<()> {
        let want = [1, 3, self.input_height as usize, self.input_width as usize];
        if input_shape != want {
            return Err(Error::Invalid(format!(
                "the model card says input 1×3×{}×{}, the graph's input '{}' is {:?}",
                self.input_height, self.input_width, self.input_name, input_shape
            )));
        }
        if let Some(c) = output_channels {
            if c != self.classes.len() {
                return Err(Error::Invalid(format!(
                    "the model card lists {} classes, the graph outputs {c} channels",
                    self.classes.len()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn sample() -> ModelCard {
        ModelCard {
            format_version: CARD_VERSION,
            name: "demo".into(),
            architecture: "fcn-resnet18".into(),
            classes: ClassList::voc(),
            input_name: "image".into(),
            input_height: 320,
            input_width: 480,
            normalization: crate::IMAGENET,
            output_name: "logits".into(),
            output_kind: OutputKind::Logits,
            precision: Precision::F32,
            training_validation: Some(Figures {
                pixel_accuracy: 0.85,
                mean_iou: 0.5,
                images: 1078,
            }),
            export_validation: None,
            quantization: None,
            engine: None,
            class_distribution: None,
        }
    }

    #[test]
    fn round_trips_through_json() {
        let card = sample();
        assert_eq!(ModelCard::from_json(&card.to_json()).unwrap(), card);
        let mut int8 = sample();
        int8.precision = Precision::Int8;
        int8.engine = Some(EngineKind::Onnxruntime);
        int8.quantization = Some(Quantization {
            calibration: "minmax".into(),
            calibration_images: 8,
            f32_validation: None,
            format: QuantFormat::Qdq,
            per_tensor_weights: 0,
            float_layers: vec!["/upsample/Conv".into()],
        });
        assert_eq!(ModelCard::from_json(&int8.to_json()).unwrap(), int8);
    }

    #[test]
    fn the_class_distribution_travels_and_must_fit_the_classes() {
        let mut card = sample();
        let mut shares = vec![0.0; 21];
        (shares[0], shares[15]) = (0.7, 0.3);
        card.class_distribution = Some(shares);
        assert_eq!(ModelCard::from_json(&card.to_json()).unwrap(), card);
        for bad in [vec![0.5, 0.5], vec![-0.1; 21], vec![0.0; 21]] {
            card.class_distribution = Some(bad);
            let msg = ModelCard::from_json(&card.to_json())
                .unwrap_err()
                .to_string();
            assert!(msg.contains("class_distribution"), "{msg}");
        }
    }

    #[test]
    fn a_normalisation_that_divides_by_zero_or_nan_is_refused() {
        for (mean, std) in [
            ([0.5; 3], [0.2, 0.0, 0.2]),
            ([0.5; 3], [0.2, -1.0, 0.2]),
            ([f32::NAN, 0.5, 0.5], [0.2; 3]),
            ([0.5; 3], [0.2, 1e-30, 0.2]),
        ] {
            let mut card = sample();
            card.normalization = Normalization { mean, std };
            // JSON has no NaN: write the value a hand-edited card would carry.
            let mut v: serde_json::Value = serde_json::from_str(&card.to_json()).unwrap();
            v["normalization"]["mean"][0] =
                serde_json::json!(if mean[0].is_nan() { 1e39 } else { 0.5 });
            let msg = ModelCard::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(msg.contains("normalisation"), "{msg}");
        }
    }

    #[test]
    fn input_sides_of_zero_or_beyond_the_limit_are_refused() {
        for (key, side) in [
            ("input_height", 0),
            ("input_width", 0),
            ("input_width", MAX_SIDE + 1),
            ("input_height", 65536),
        ] {
            let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
            v[key] = side.into();
            let msg = ModelCard::from_json(&v.to_string())
                .unwrap_err()
                .to_string();
            assert!(
                msg.contains(key) && msg.contains(&side.to_string()),
                "{msg}"
            );
        }
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["input_width"] = MAX_SIDE.into();
        assert_eq!(
            ModelCard::from_json(&v.to_string()).unwrap().input_width,
            MAX_SIDE
        );
    }

    #[test]
    fn cards_written_before_engines_read_as_tract_qlinear() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["precision"] = "int8".into();
        v["quantization"] = serde_json::json!({
            "calibration": "minmax", "calibration_images": 4, "f32_validation": null
        });
        let card = ModelCard::from_json(&v.to_string()).unwrap();
        let q = card.quantization.clone().unwrap();
        assert_eq!(q.format, QuantFormat::Qlinear);
        assert_eq!(q.format.engine(), EngineKind::Tract);
        assert_eq!(card.engine, None);
        assert_eq!(card.made_for(), Some(EngineKind::Tract));
        assert_eq!(sample().made_for(), None, "an f32 card runs anywhere");
    }

    #[test]
    fn unknown_versions_and_contradictions_are_named() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["format_version"] = 99.into();
        let msg = ModelCard::from_json(&v.to_string())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("version 99"), "{msg}");
        let card = sample();
        assert!(card.check_graph(&[1, 3, 320, 480], Some(21)).is_ok());
        let msg = card
            .check_graph(&[1, 3, 320, 480], Some(5))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("21 classes") && msg.contains("5 channels"),
            "{msg}"
        );
        let msg = card
            .check_graph(&[1, 3, 224, 224], Some(21))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("320×480"), "{msg}");
    }
}
