//! Batches for training and evaluation, decoded and cropped by worker threads ahead of
//! the training loop so that a GPU never waits for JPEG decoding.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Result;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use segcam::preprocess::{Normalization, Rect};

use crate::dataset::{BadFiles, VocDataset};

/// How batches are cut from a dataset.
#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch: usize,
    /// Crop height and width: random windows for training, the centre for evaluation.
    pub crop: (u32, u32),
    /// Shuffle, random crops and (with `flip`) random horizontal flips.
    pub random: bool,
    pub flip: bool,
    /// Leave out the last incomplete batch (training: batch norm needs full batches).
    pub drop_last: bool,
    pub workers: usize,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
    pub bad: BadFiles,
    pub norm: Normalization,
}

/// Normalised images (N×3×H×W) and labels (N×H×W, 255 = void) of one batch.
#[derive(Debug)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub len: usize,
    pub height: u32,
    pub width: u32,
    /// Sample indices in the dataset, in batch order.
    pub indices: Vec<usize>,
    /// Samples of this batch skipped as unreadable (`--skip-bad`).
    pub skipped: usize,
}

impl Batch {
    /// The batch as tensors on `device`: images N×3×H×W (f32) and labels N×H×W (i64).
    pub fn to_tensors(&self, device: tch::Device) -> (tch::Tensor, tch::Tensor) {
        let (n, h, w) = (self.len as i64, self.height as i64, self.width as i64);
        let xs = tch::Tensor::from_slice(&self.images)
            .view([n, 3, h, w])
            .to_device(device);
        let ys = tch::Tensor::from_slice(&self.labels)
            .view([n, h, w])
            .to_kind(tch::Kind::Int64)
            .to_device(device);
        (xs, ys)
    }
}

/// The batches of one epoch, in order, produced by worker threads.
pub struct Batches {
    rx: Receiver<(usize, Result<Batch>)>,
    pending: BTreeMap<usize, Result<Batch>>,
    next: usize,
    count: usize,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

/// Number of batches an epoch over `samples` samples gives.
pub fn batch_count(samples: usize, cfg: &LoaderConfig) -> usize {
    if cfg.drop_last {
        samples / cfg.batch
    } else {
        samples.div_ceil(cfg.batch)
    }
}

/// Start the workers for epoch `epoch` (which seeds shuffling and crops).
pub fn batches(ds: Arc<VocDataset>, cfg: &LoaderConfig, epoch: u64) -> Batches {
    let mut order: Vec<usize> = (0..ds.samples.len()).collect();
    if cfg.random {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(cfg.seed, epoch)));
    }
    let count = batch_count(order.len(), cfg);
    let order = Arc::new(order);
    let (tx, rx) = sync_channel(cfg.prefetch.max(1));
    let next_job = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = (0..cfg.workers.max(1))
        .map(|_| {
            let (ds, cfg, order, next_job, stop, tx) = (
                ds.clone(),
                cfg.clone(),
                order.clone(),
                next_job.clone(),
                stop.clone(),
                tx.clone(),
            );
            std::thread::spawn(move || loop {
                let b = next_job.fetch_add(1, Ordering::SeqCst);
                if b >= count || stop.load(Ordering::SeqCst) {
                    return;
                }
                let end = ((b + 1) * cfg.batch).min(order.len());
                let batch = make_batch(&ds, &cfg, epoch, &order[b * cfg.batch..end]);
                if tx.send((b, batch)).is_err() {
                    return;
                }
            })
        })
        .collect();
    Batches {
        rx,
        pending: BTreeMap::new(),
        next: 0,
        count,
        stop,
        workers,
    }
}

impl Batches {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.count {
            return None;
        }
        // Workers finish out of order; hand batches out in order so runs repeat.
        while !self.pending.contains_key(&self.next) {
            match self.rx.recv() {
                Ok((b, batch)) => {
                    self.pending.insert(b, batch);
                }
                Err(_) => {
                    return Some(Err(anyhow::anyhow!(
                        "data loader workers stopped unexpectedly"
                    )))
                }
            }
        }
        let batch = self.pending.remove(&self.next);
        self.next += 1;
        batch
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock workers waiting on a full channel, then wait for them.
        while self.rx.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            while !w.is_finished() {
                while self.rx.try_recv().is_ok() {}
                std::thread::yield_now();
            }
            let _ = w.join();
        }
    }
}

fn make_batch(ds: &VocDataset, cfg: &LoaderConfig, epoch: u64, indices: &[usize]) -> Result<Batch> {
    let (h, w) = cfg.crop;
    let plane = (h * w) as usize;
    let mut batch = Batch {
        images: Vec::with_capacity(indices.len() * 3 * plane),
        labels: Vec::with_capacity(indices.len() * plane),
        len: 0,
        height: h,
        width: w,
        indices: Vec::with_capacity(indices.len()),
        skipped: 0,
    };
    for &i in indices {
        let (image, label) = match ds.load(i) {
            Ok(pair) => pair,
            Err(e) if cfg.bad == BadFiles::Skip => {
                tracing::warn!("skipping: {e:#}");
                batch.skipped += 1;
                continue;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "{e:#}; pass --skip-bad to leave unreadable samples out"
                ))
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(cfg.seed, epoch), i as u64));
        let window = if cfg.random {
            Rect::random(&mut rng, image.width(), image.height(), w, h)
        } else {
            Rect::centre(image.width(), image.height(), w, h)
        };
        let Some(window) = window else {
            anyhow::bail!(
                "{}: {}×{} is smaller than the {w}×{h} crop (the dataset should have been filtered)",
                ds.samples[i].image.display(),
                image.width(),
                image.height()
            );
        };
        let (mut image, mut label) = (window.crop(&image), window.crop(&label));
        if cfg.random && cfg.flip && rng.random_bool(0.5) {
            image::imageops::flip_horizontal_in_place(&mut image);
            image::imageops::flip_horizontal_in_place(&mut label);
        }
        let start = batch.images.len();
        batch.images.resize(start + 3 * plane, 0.0);
        cfg.norm.to_chw(&image, &mut batch.images[start..]);
        batch.labels.extend_from_slice(label.as_raw());
        batch.indices.push(i);
        batch.len += 1;
    }
    Ok(batch)
}

/// Combine two seeds into one (splitmix64's finaliser), so each (epoch, sample) pair
/// gets its own independent random stream.
fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(a << 6)
        .wrapping_add(a >> 2);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
