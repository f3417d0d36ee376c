//! Segmentation metrics from a confusion matrix, as torchvision's references compute
//! them: global pixel accuracy, per-class IoU and their mean.

use serde::{Deserialize, Serialize};

use crate::classes::VOID;

/// Counts of (ground truth, prediction) pixel pairs; void pixels are not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row-major: `counts[truth * classes + predicted]`.
    counts: Vec<u64>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![0; classes * classes],
        }
    }

    /// Build from row-major counts (e.g. a bincount computed on the GPU).
    pub fn from_counts(classes: usize, counts: Vec<u64>) -> Self {
        assert_eq!(counts.len(), classes * classes, "confusion matrix size");
        Self { classes, counts }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Count one image: labels and predictions of equal length; void labels skipped.
    pub fn add(&mut self, labels: &[u8], predictions: &[u8]) {
        assert_eq!(labels.len(), predictions.len(), "labels vs predictions");
        for (&t, &p) in labels.iter().zip(predictions) {
            if t != VOID && (t as usize) < self.classes && (p as usize) < self.classes {
                self.counts[t as usize * self.classes + p as usize] += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &Self) {
        assert_eq!(self.classes, other.classes, "merging confusion matrices");
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    pub fn get(&self, truth: usize, predicted: usize) -> u64 {
        self.counts[truth * self.classes + predicted]
    }

    /// Rows of the matrix (truth → counts per prediction).
    pub fn rows(&self) -> Vec<Vec<u64>> {
        self.counts
            .chunks(self.classes.max(1))
            .map(|r| r.to_vec())
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Fraction of counted pixels predicted right (0 when nothing was counted).
    pub fn pixel_accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.get(c, c)).sum();
        ratio(correct, self.total())
    }

    /// IoU per class; `None` for a class absent from both truth and prediction.
    pub fn class_iou(&self) -> Vec<Option<f64>> {
        (0..self.classes)
            .map(|c| {
                let tp = self.get(c, c);
                let truth: u64 = (0..self.classes).map(|p| self.get(c, p)).sum();
                let predicted: u64 = (0..self.classes).map(|t| self.get(t, c)).sum();
                let union = truth + predicted - tp;
                (union > 0).then(|| ratio(tp, union))
            })
            .collect()
    }

    /// Mean IoU over the classes that occur in truth or prediction.
    pub fn mean_iou(&self) -> f64 {
        let present: Vec<f64> = self.class_iou().into_iter().flatten().collect();
        if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_iou_from_known_counts() {
        let mut m = ConfusionMatrix::new(3);
        // truth:  0 0 0 1 1 2 void
        // pred:   0 0 1 1 1 0 2
        m.add(&[0, 0, 0, 1, 1, 2, VOID], &[0, 0, 1, 1, 1, 0, 2]);
        assert_eq!(m.total(), 6);
        assert!((m.pixel_accuracy() - 4.0 / 6.0).abs() < 1e-12);
        let iou = m.class_iou();
        // class 0: tp 2, truth 3, predicted 3 → 2/4; class 1: tp 2, truth 2, pred 3 → 2/3; class 2: 0/1
        assert_eq!(iou, vec![Some(0.5), Some(2.0 / 3.0), Some(0.0)]);
        assert!((m.mean_iou() - (0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
    }

    #[test]
    fn absent_classes_do_not_count_in_the_mean() {
        let mut m = ConfusionMatrix::new(4);
        m.add(&[0, 1], &[0, 1]);
        assert_eq!(m.class_iou()[2], None);
        assert_eq!(m.mean_iou(), 1.0);
    }
}
