//! A run's figures, written after every epoch so they exist even if training is
//! stopped: `metrics.json`, `metrics.csv`, and PNG plots a user would rather look at.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use segcam::ClassList;

use crate::atomic;
use crate::checkpoint::EpochRecord;
use crate::eval::Evaluation;
use crate::plots::{self, EpochPoint};

/// Write `metrics.json`, `metrics.csv`, `curves.png`, `predictions.png` and
/// `confusion.png` into `out`.
pub fn write_run_report(
    out: &Path,
    history: &[EpochRecord],
    last: &Evaluation,
    classes: &ClassList,
) -> Result<()> {
    atomic::write_json(&out.join("metrics.json"), &history)?;
    atomic::write(
        &out.join("metrics.csv"),
        metrics_csv(history, classes).as_bytes(),
    )?;
    let points: Vec<EpochPoint> = history
        .iter()
        .map(|r| EpochPoint {
            epoch: r.epoch,
            train_loss: r.train_loss,
            train_acc: r.train_pixel_acc,
            val_acc: r.val_pixel_acc,
            val_miou: r.val_miou,
        })
        .collect();
    plots::plot_curves(&points, &out.join("curves.png"))?;
    if !last.grid.is_empty() {
        plots::prediction_grid(&last.grid, &out.join("predictions.png"))?;
    }
    plots::confusion_png(
        &last.matrix.rows(),
        &classes.names,
        &out.join("confusion.png"),
    )
}

/// One row per epoch; per-class IoU columns named after the classes (empty = absent).
pub fn metrics_csv(history: &[EpochRecord], classes: &ClassList) -> String {
    let mut csv = String::from(
        "epoch,lr,train_loss,train_pixel_acc,images_per_sec,val_pixel_acc,val_miou,seconds",
    );
    for name in &classes.names {
        let _ = write!(csv, ",iou_{name}");
    }
    csv.push('\n');
    for r in history {
        let _ = write!(
            csv,
            "{},{},{:.6},{:.6},{:.3},{:.6},{:.6},{:.2}",
            r.epoch,
            r.lr,
            r.train_loss,
            r.train_pixel_acc,
            r.images_per_sec,
            r.val_pixel_acc,
            r.val_miou,
            r.seconds
        );
        for iou in &r.val_class_iou {
            match iou {
                Some(v) => {
                    let _ = write!(csv, ",{v:.6}");
                }
                None => csv.push(','),
            }
        }
        csv.push('\n');
    }
    csv
}
