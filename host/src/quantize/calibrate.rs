//! Calibration: the f32 model run by tract on sample images with the values to be
//! quantised exposed as extra outputs, and their ranges estimated from what they hold.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use segcam::onnx_card::pb;
use tract_onnx::prelude::*;

use super::rewrite::QParams;

/// How a value's range is chosen from the calibration images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// The smallest and largest value seen.
    MinMax,
    /// The given percentile at the top (and its mirror at the bottom): outliers are
    /// clipped so that the common values get finer steps.
    Percentile(f64),
}

impl Method {
    /// `minmax`, `percentile` (99.99) or `percentile:P`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "minmax" => Ok(Self::MinMax),
            None if text == "percentile" => Ok(Self::Percentile(99.99)),
            Some(("percentile", p)) => match p.parse::<f64>() {
                Ok(p) if p > 50.0 && p <= 100.0 => Ok(Self::Percentile(p)),
                _ => Err(format!("'{p}': the percentile must be a number in (50, 100]")),
            },
            _ => Err(format!(
                "'{text}': calibration is 'minmax', 'percentile' or 'percentile:P' (e.g. percentile:99.99)"
            )),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MinMax => write!(f, "minmax"),
            Self::Percentile(p) => write!(f, "percentile:{p}"),
        }
    }
}

/// The f32 model with `values` as its outputs, ready to run.
pub struct Observer {
    values: Vec<String>,
    plan: Arc<TypedRunnableModel>,
    shape: [usize; 4],
}

impl Observer {
    pub fn new(
        model: &pb::ModelProto,
        values: &[String],
        shape: [usize; 4],
        threads: usize,
    ) -> Result<Self> {
        let mut proto = model.clone();
        let graph = proto.graph.as_mut().context("the model has no graph")?;
        graph.output = values
            .iter()
            .map(|v| pb::ValueInfoProto {
                name: v.clone(),
                ..Default::default()
            })
            .collect();
        let options = segcam::engine::run_options(threads);
        let plan = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .and_then(|mut m| {
                m.set_input_fact(0, f32::fact(shape).into())?;
                m.into_optimized()?.into_runnable_with_options(&options)
            })
            .map_err(|e| anyhow::anyhow!("tract cannot prepare the calibration graph: {e:#}"))?;
        Ok(Self {
            values: values.to_vec(),
            plan,
            shape,
        })
    }

    /// Every observed value's numbers for one normalised CHW input.
    fn observe(&self, chw: &[f32], mut each: impl FnMut(usize, &[f32])) -> Result<()> {
        let input = Tensor::from_shape(&self.shape, chw)?;
        let outputs = self
            .plan
            .run(tvec![input.into()])
            .map_err(|e| anyhow::anyhow!("calibration run failed: {e:#}"))?;
        for (i, out) in outputs.iter().enumerate() {
            let view = out.try_as_plain_ram()?;
            each(i, view.as_slice::<f32>()?);
        }
        Ok(())
    }
}

/// Bins of the histograms percentile calibration builds between each value's extremes.
const BINS: usize = 4096;

/// The quantisation parameters of every observed value over `inputs`.
pub fn calibrate(
    observer: &Observer,
    inputs: &mut dyn Iterator<Item = Result<Vec<f32>>>,
    method: Method,
    progress: &dyn Fn(),
) -> Result<HashMap<String, QParams>> {
    let n = observer.values.len();
    let mut lo = vec![f32::INFINITY; n];
    let mut hi = vec![f32::NEG_INFINITY; n];
    let mut kept = Vec::new();
    for chw in inputs {
        let chw = chw?;
        observer.observe(&chw, |i, xs| {
            for &x in xs {
                lo[i] = lo[i].min(x);
                hi[i] = hi[i].max(x);
            }
        })?;
        if matches!(method, Method::Percentile(_)) {
            kept.push(chw);
        }
        progress();
    }
    if lo.iter().any(|v| !v.is_finite()) || hi.iter().any(|v| !v.is_finite()) {
        bail!("calibration saw no images, or values that are not finite");
    }
    let ranges: Vec<(f32, f32)> = match method {
        Method::MinMax => lo.into_iter().zip(hi).collect(),
        Method::Percentile(p) => {
            let mut hists = vec![vec![0u64; BINS]; n];
            for chw in &kept {
                observer.observe(chw, |i, xs| {
                    let width = (hi[i] - lo[i]).max(f32::MIN_POSITIVE);
                    for &x in xs {
                        let b = (((x - lo[i]) / width) * BINS as f32) as usize;
                        hists[i][b.min(BINS - 1)] += 1;
                    }
                })?;
                progress();
            }
            (0..n)
                .map(|i| percentile_range(&hists[i], lo[i], hi[i], p))
                .collect()
        }
    };
    Ok(observer
        .values
        .iter()
        .cloned()
        .zip(ranges.into_iter().map(|(lo, hi)| QParams::covering(lo, hi)))
        .collect())
}

/// The range between the (100 − p)th and the pth percentile of a histogram of `BINS`
/// equal bins spanning `lo..=hi`.
fn percentile_range(hist: &[u64], lo: f32, hi: f32, p: f64) -> (f32, f32) {
    let total: u64 = hist.iter().sum();
    let cut = ((1.0 - p / 100.0) * total as f64).floor() as u64;
    let width = (hi - lo) / hist.len() as f32;
    let mut below = 0;
    let mut first = 0;
    for (b, &count) in hist.iter().enumerate() {
        below += count;
        if below > cut {
            first = b;
            break;
        }
    }
    let mut above = 0;
    let mut last = hist.len() - 1;
    for (b, &count) in hist.iter().enumerate().rev() {
        above += count;
        if above > cut {
            last = b;
            break;
        }
    }
    (lo + first as f32 * width, lo + (last + 1) as f32 * width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_and_print() {
        assert_eq!(Method::parse("minmax"), Ok(Method::MinMax));
        assert_eq!(Method::parse("percentile"), Ok(Method::Percentile(99.99)));
        assert_eq!(
            Method::parse("percentile:99.9"),
            Ok(Method::Percentile(99.9))
        );
        assert_eq!(Method::Percentile(99.9).to_string(), "percentile:99.9");
        assert!(Method::parse("percentile:20").is_err());
        assert!(Method::parse("entropy").unwrap_err().contains("minmax"));
    }

    #[test]
    fn the_percentile_range_clips_rare_outliers() {
        // 1000 values spread over 0..10 in bins 0..1000, one outlier in the last bin.
        let mut hist = vec![0u64; BINS];
        hist[..1000].fill(1);
        hist[BINS - 1] = 1;
        let (lo, hi) = (0.0, BINS as f32 / 100.0);
        let near = |x: f32, y: f32| (x - y).abs() < 1e-4;
        let (a, b) = percentile_range(&hist, lo, hi, 100.0);
        assert!(near(a, lo) && near(b, hi), "{a}..{b}");
        let (a, b) = percentile_range(&hist, lo, hi, 99.9);
        assert!(
            near(a, 0.01),
            "one value below the cut moves the bottom one bin: {a}"
        );
        assert!(
            near(b, 10.0),
            "the outlier is clipped to the end of the spread: {b}"
        );
    }
}
