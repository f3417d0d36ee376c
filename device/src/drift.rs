//! Drift: the share of each class in the recent class maps, and how far it lies from
//! the training set's (recorded in the model card), so a fleet dashboard sees a camera
//! that moved or a scene the model was not trained for.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::classes::{ClassCounts, ClassList};

/// Frames the shares are taken over by default (10 s at 30 frames/s).
pub const DEFAULT_WINDOW: usize = 300;

/// Pixel counts per class over the last `window` frames. Void and labels beyond the
/// class list are left out, as they are from the training set's distribution.
#[derive(Debug, Clone)]
pub struct ClassWindow {
    window: usize,
    frames: VecDeque<Vec<u64>>,
    sums: Vec<u64>,
}

impl ClassWindow {
    /// A window over `window` frames (at least one) of a model with `classes` classes.
    pub fn new(classes: usize, window: usize) -> Self {
        Self {
            window: window.max(1),
            frames: VecDeque::new(),
            sums: vec![0; classes],
        }
    }

    /// Take one frame's counts, forgetting the oldest frame once the window is full.
    pub fn push(&mut self, counts: &ClassCounts) {
        let frame: Vec<u64> = (0..self.sums.len())
            .map(|c| u8::try_from(c).map_or(0, |c| counts.get(c) as u64))
            .collect();
        if self.frames.len() == self.window {
            if let Some(old) = self.frames.pop_front() {
                for (s, o) in self.sums.iter_mut().zip(old) {
                    *s -= o;
                }
            }
        }
        for (s, f) in self.sums.iter_mut().zip(&frame) {
            *s += f;
        }
        self.frames.push_back(frame);
    }

    /// Frames in the window now.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }

    /// Each class's share of the window's counted pixels (all zero before any).
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.sums.iter().sum();
        self.sums
            .iter()
            .map(|&s| {
                if total == 0 {
                    0.0
                } else {
                    s as f64 / total as f64
                }
            })
            .collect()
    }
}

/// What `/metrics` and `/stats.json` report: the window's class shares and its drift.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DriftStats {
    /// Frames the shares are over.
    pub frames: u64,
    /// Every class of the model with its share of the window's pixels (void left out).
    pub shares: Vec<ClassShare>,
    /// Total-variation distance from the training set's shares (the model card's);
    /// `None` when the card has none or no pixel was counted yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// One class's share of the window's pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassShare {
    pub name: String,
    pub share: f32,
}

impl ClassWindow {
    /// The window's shares with `classes`' names, and the drift score against
    /// `trained` (the training set's shares) when there is one.
    pub fn stats(&self, classes: &ClassList, trained: Option<&[f64]>) -> DriftStats {
        let shares = self.shares();
        let counted = self.sums.iter().any(|&s| s > 0);
        DriftStats {
            frames: self.frames.len() as u64,
            score: trained
                .filter(|_| counted)
                .and_then(|t| total_variation(&shares, t))
                .map(|d| d as f32),
            shares: classes
                .names
                .iter()
                .zip(&shares)
                .map(|(name, &share)| ClassShare {
                    name: name.clone(),
                    share: share as f32,
                })
                .collect(),
        }
    }
}

/// Total-variation distance between two distributions over the same classes: half the
/// sum of the absolute differences; 0 for the same shares, 1 for shares with no class
/// in common. `None` when the lengths differ or either has nothing counted.
pub fn total_variation(p: &[f64], q: &[f64]) -> Option<f64> {
    let (sp, sq) = (p.iter().sum::<f64>(), q.iter().sum::<f64>());
    if p.len() != q.len() || sp <= 0.0 || sq <= 0.0 {
        return None;
    }
    // Each normalised, so a distribution rounded in the card still compares exactly.
    let d = p
        .iter()
        .zip(q)
        .map(|(a, b)| (a / sp - b / sq).abs())
        .sum::<f64>();
    Some((0.5 * d).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::VOID;
    use image::GrayImage;

    fn counts(labels: &[u8]) -> ClassCounts {
        ClassCounts::of(&GrayImage::from_raw(labels.len() as u32, 1, labels.to_vec()).unwrap())
    }

    #[test]
    fn total_variation_of_known_distributions() {
        assert_eq!(total_variation(&[0.5, 0.5], &[0.5, 0.5]), Some(0.0));
        assert_eq!(total_variation(&[1.0, 0.0], &[0.0, 1.0]), Some(1.0));
        let d = total_variation(&[0.7, 0.2, 0.1], &[0.5, 0.3, 0.2]).unwrap();
        assert!((d - 0.2).abs() < 1e-12, "{d}");
        // Counts or unnormalised shares compare as their distributions.
        assert_eq!(total_variation(&[2.0, 2.0], &[0.5, 0.5]), Some(0.0));
        assert_eq!(total_variation(&[1.0], &[0.5, 0.5]), None);
        assert_eq!(total_variation(&[0.0, 0.0], &[0.5, 0.5]), None);
    }

    #[test]
    fn the_window_forgets_old_frames_and_skips_void() {
        let mut w = ClassWindow::new(3, 2);
        assert_eq!(w.shares(), vec![0.0; 3]);
        w.push(&counts(&[0, 0, 0, 0])); // all background
        w.push(&counts(&[1, 1, VOID, 7])); // void and an unknown label are not counted
        assert_eq!(w.frames(), 2);
        assert_eq!(w.shares(), vec![4.0 / 6.0, 2.0 / 6.0, 0.0]);
        // A third frame pushes out the first.
        w.push(&counts(&[2, 2, 2, 2]));
        assert_eq!(w.frames(), 2);
        assert_eq!(w.shares(), vec![0.0, 2.0 / 6.0, 4.0 / 6.0]);
        let trained = [0.9, 0.05, 0.05];
        let drift = total_variation(&w.shares(), &trained).unwrap();
        assert!((drift - 0.9).abs() < 1e-12, "{drift}");

        let classes = crate::scene::scene_classes();
        let mut w = ClassWindow::new(classes.len(), DEFAULT_WINDOW);
        let uniform = vec![1.0; classes.len()];
        assert_eq!(
            w.stats(&classes, Some(&uniform)).score,
            None,
            "nothing seen yet"
        );
        w.push(&counts(&[0, 1]));
        let stats = w.stats(&classes, Some(&uniform));
        assert_eq!((stats.frames, stats.shares.len()), (1, classes.len()));
        assert_eq!(stats.shares[1].name, classes.names[1]);
        assert_eq!(stats.shares[1].share, 0.5);
        let n = classes.len() as f64;
        let expected = 0.5 * (2.0 * (0.5 - 1.0 / n) + (n - 2.0) / n);
        assert!((stats.score.unwrap() as f64 - expected).abs() < 1e-6);
        assert_eq!(w.stats(&classes, None).score, None, "a card without shares");
    }
}
