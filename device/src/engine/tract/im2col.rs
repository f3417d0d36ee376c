//! The int8 convolution's im2col, panel by panel and on every thread of the run.
//!
//! tract 0.23 runs each quantized convolution as an eager `Im2Col` (the input copied
//! into the matrix kernel's packed layout) then a matmul. Its `Im2Col` fills the buffer
//! one row of `k` at a time through a scattering writer, on the calling thread while
//! the pool waits: a quarter of an int8 frame on two cores. [`PanelIm2Col`] writes the
//! same bytes in the order the kernel reads them (a panel of `r` output pixels, four
//! `k` at a time: eight-byte loads, one transposing shuffle, sequential stores) and
//! splits the panels over the run's threads. It takes tract's op's place only where
//! the layout is the int8 kernels' `PackedI8K4` and the convolution is a plain 2-D
//! one; every other `Im2Col` stays tract's.

use std::sync::Arc;

use tract_linalg::mmm::{EagerPackedInput, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::PackedI8K4;
use tract_onnx::tract_core;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::conv::Im2Col;
use tract_onnx::tract_core::ops::nn::DataFormat;

/// Columns of the packed matrix handled together: one 8-byte load per row of `k`.
const STRIP: usize = 8;

/// Replaces every `Im2Col` of `model` that [`PanelIm2Col`] can stand in for; returns
/// how many it replaced.
pub fn use_panel_im2col(model: &mut TypedModel) -> TractResult<usize> {
    super::replace_ops(model, |model, node| {
        let Some(im2col) = node.op_as::<Im2Col>() else {
            return Ok(None);
        };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(node.id.into())?;
        let op = PanelIm2Col::replacing(im2col, input, output);
        Ok(op.map(|op| Box::new(op) as Box<dyn TypedOp>))
    })
}

/// Where the input byte of one row of `k` sits, relative to an output pixel's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Tap {
    /// From the window's top-left input pixel (`y = yo·sy`, `x = xo·sx`) of the group's
    /// first channel: channel plane, then the kernel position's row and column (with
    /// padding, so possibly before the plane).
    offset: isize,
    dy: isize,
    dx: isize,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Geometry {
    height: usize,
    width: usize,
    out_width: usize,
    /// Output pixels: the packed matrix's columns.
    n: usize,
    stride_y: usize,
    stride_x: usize,
    groups: usize,
    group_len: usize,
    /// One per row of `k`, in tract's order: channel, then kernel row, then column.
    taps: Vec<Tap>,
    dy: (isize, isize),
    dx: (isize, isize),
}

/// tract's `Im2Col` for one convolution: its shape and the kernel's layout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PanelIm2Col {
    geometry: Geometry,
    format: PackedI8K4,
}

impl PanelIm2Col {
    /// The op that writes what `im2col` writes, where the input is one image of 1-byte
    /// values in channel-first layout, the convolution 2-D and the layout `PackedI8K4`.
    fn replacing(im2col: &Im2Col, input: &TypedFact, output: &TypedFact) -> Option<Self> {
        let packed = output.exotic_fact()?.downcast_ref::<PackedExoticFact>()?;
        let format = packed.format.downcast_ref::<PackedI8K4>()?.clone();
        let spec = &im2col.pool_spec;
        let shape = input.shape.as_concrete()?;
        let (channels, height, width) = match (spec.data_format, shape) {
            (DataFormat::NCHW, &[1, c, h, w]) | (DataFormat::CHW, &[c, h, w]) => (c, h, w),
            _ => return None,
        };
        if input.datum_type.size_of() != 1
            || format.r % STRIP != 0
            || spec.kernel_shape.len() != 2
            || im2col.group == 0
            || channels % im2col.group != 0
        {
            return None;
        }
        let output_shape = spec.output_shape(shape).ok()?;
        let &[out_height, out_width] = output_shape.hw_dims() else {
            return None;
        };
        let padding = spec.computed_padding(&[height, width]);
        let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
        let (dil_y, dil_x) = (spec.dilation(0), spec.dilation(1));
        let group_len = channels / im2col.group;
        let mut taps = Vec::with_capacity(group_len * kh * kw);
        for c in 0..group_len {
            for ky in 0..kh {
                for kx in 0..kw {
                    let dy = (ky * dil_y) as isize - padding[0].pad_before as isize;
                    let dx = (kx * dil_x) as isize - padding[1].pad_before as isize;
                    let offset = (c * height * width) as isize + dy * width as isize + dx;
                    taps.push(Tap { offset, dy, dx });
                }
            }
        }
        let n = out_height * out_width;
        if n == 0 || packed.k != taps.len() || packed.mn.to_usize().ok()? != n {
            return None;
        }
        let span = |d: fn(&Tap) -> isize| {
            let values = taps.iter().map(d);
            (values.clone().min().unwrap_or(0), values.max().unwrap_or(0))
        };
        let geometry = Geometry {
            height,
            width,
            out_width,
            n,
            stride_y: spec.stride(0),
            stride_x: spec.stride(1),
            groups: im2col.group,
            group_len,
            dy: span(|t| t.dy),
            dx: span(|t| t.dx),
            taps,
        };
        Some(PanelIm2Col { geometry, format })
    }

    fn k(&self) -> usize {
        self.geometry.taps.len()
    }

    /// Packs one group's channels (`plane`) into `out`, whole panels, on the run's
    /// threads (as tract splits its element-wise work).
    fn pack(&self, plane: &[u8], pad: u8, out: &mut [u8]) -> TractResult<()> {
        let panel_len = self.format.single_panel_len(self.k());
        par_chunks_mut(out, panel_len, out.len(), |first, panels| {
            self.pack_panels(plane, pad, panels, first);
            Ok(())
        })
    }

    /// Packs the panels that `out` holds, the first being panel `first`: for each strip
    /// of a panel, its eight bytes of every row of `k`, then those rows four by four
    /// into the panel.
    fn pack_panels(&self, plane: &[u8], pad: u8, out: &mut [u8], first: usize) {
        let r = self.format.r;
        let g = &self.geometry;
        let k = g.taps.len();
        let panel_len = self.format.single_panel_len(k);
        // Rows past `k` stay zero: the kernel multiplies them too.
        let mut rows = vec![0u64; k.div_ceil(4) * 4];
        for (i, panel) in out.chunks_exact_mut(panel_len).enumerate() {
            for strip in 0..r / STRIP {
                let column = (first + i) * r + strip * STRIP;
                g.strip_rows(plane, pad, column, &mut rows[..k]);
                let at = strip * STRIP * 4;
                for (quad, block) in rows.chunks_exact(4).zip(panel.chunks_exact_mut(4 * r)) {
                    interleave(
                        [quad[0], quad[1], quad[2], quad[3]],
                        &mut block[at..at + 32],
                    );
                }
            }
        }
    }
}

impl Op for PanelIm2Col {
    fn name(&self) -> StaticName {
        "PanelIm2Col".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let PanelIm2Col { geometry, format } = self;
        Ok(vec![format!(
            "k: {}, n: {}, r: {}, groups: {}",
            self.k(),
            geometry.n,
            format.r,
            geometry.groups
        )])
    }

    tract_core::op_as_typed_op!();
}

impl EvalOp for PanelIm2Col {
    tract_core::op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        self.run(inputs)
    }
}

impl TypedOp for PanelIm2Col {
    tract_core::as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let fact = inputs[0].datum_type.fact([1, self.geometry.groups]);
        Ok(tvec!(fact.with_exotic_fact(self.packed_fact())))
    }
}

impl PanelIm2Col {
    fn packed_fact(&self) -> PackedExoticFact {
        PackedExoticFact {
            format: Box::new(self.format.clone()),
            k: self.k(),
            mn: self.geometry.n.to_dim(),
        }
    }

    /// Inputs: the image, and optionally the value that pads it (the zero point); out:
    /// one packed matrix per group, as tract's `Im2Col` gives them to the matmul.
    fn run(&self, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let pad = match inputs.get(1) {
            Some(pad) => pad_byte(pad)?,
            None => 0,
        };
        let image = input.try_as_plain_ram()?.as_bytes();
        let g = &self.geometry;
        let plane_len = g.group_len * g.height * g.width;
        ensure!(
            image.len() == plane_len * g.groups,
            "PanelIm2Col: {} input bytes for {} groups of {plane_len}",
            image.len(),
            g.groups
        );
        let panel_len = self.format.single_panel_len(self.k());
        let len = g.n.div_ceil(self.format.r) * panel_len;
        let mut values: TVec<Box<dyn MMMInputValue>> = tvec![];
        for plane in image.chunks_exact(plane_len) {
            // SAFETY: `pack` writes every byte of the blob (padding lanes included).
            let mut blob = unsafe { Blob::new_for_size_and_align(len, self.format.alignment()) };
            self.pack(plane, pad, blob.as_bytes_mut())?;
            values.push(Box::new(EagerPackedInput {
                fact: self.packed_fact(),
                packed: Arc::new(blob),
                panel_bytes: panel_len,
                mn: g.n,
            }));
        }
        let storage = PackedMatrixStorage::new_batched(&[1, g.groups], values);
        Ok(tvec!(storage.into_tensor(input.datum_type()).into_tvalue()))
    }
}

/// The byte the image is padded with: tract hands the zero point over as a scalar of
/// the image's type or as an `i32`; either way the value fits the image's byte.
fn pad_byte(pad: &Tensor) -> TractResult<u8> {
    ensure!(
        pad.len() == 1,
        "PanelIm2Col: a pad value of shape {:?}",
        pad.shape()
    );
    if pad.datum_type().size_of() == 1 {
        return Ok(pad.try_as_plain_ram()?.as_bytes()[0]);
    }
    let value = *pad
        .cast_to::<i32>()?
        .try_as_plain_ram()?
        .to_scalar::<i32>()?;
    ensure!(
        (-128..=255).contains(&value),
        "PanelIm2Col: a pad value of {value}"
    );
    Ok(value as u8)
}

/// Consecutive output pixels of a strip that lie in one output row.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// The first pixel's window origin in the input (may be in the padding).
    y: isize,
    x: isize,
    /// `y · width + x`: where a tap's offset starts from.
    base: isize,
    len: usize,
    /// Where the run's bytes go in the strip's eight, in bits.
    shift: u32,
    /// Every tap of every pixel of the run reads inside the input.
    inside: bool,
}

impl Geometry {
    /// Each tap's eight bytes for the strip of output pixels from `column`.
    fn strip_rows(&self, plane: &[u8], pad: u8, column: usize, rows: &mut [u64]) {
        let mut runs = [Run::default(); STRIP];
        let count = self.runs(column, &mut runs);
        let runs = &runs[..count];
        match runs {
            // The common case: a whole strip inside one row, away from the border.
            [run] if run.len == STRIP && run.inside => {
                for (row, tap) in rows.iter_mut().zip(&self.taps) {
                    *row = load(plane, (run.base + tap.offset) as usize, self.stride_x);
                }
            }
            _ => {
                for (row, tap) in rows.iter_mut().zip(&self.taps) {
                    *row = runs.iter().fold(0, |bytes, run| {
                        bytes | self.run_bytes(plane, pad, run, tap) << run.shift
                    });
                }
            }
        }
    }

    /// Splits the strip from `column` into runs, one per output row it touches;
    /// pixels past the last have none (their bytes stay zero). Returns the count.
    fn runs(&self, column: usize, runs: &mut [Run; STRIP]) -> usize {
        let (height, width) = (self.height as isize, self.width as isize);
        let end = (column + STRIP).min(self.n);
        let (mut start, mut count) = (column, 0);
        while start < end {
            let (yo, xo) = (start / self.out_width, start % self.out_width);
            let len = (self.out_width - xo).min(end - start);
            let y = (yo * self.stride_y) as isize;
            let x = (xo * self.stride_x) as isize;
            let last_x = x + ((len - 1) * self.stride_x) as isize;
            runs[count] = Run {
                y,
                x,
                base: y * width + x,
                len,
                shift: 8 * (start - column) as u32,
                inside: y + self.dy.0 >= 0
                    && y + self.dy.1 < height
                    && x + self.dx.0 >= 0
                    && last_x + self.dx.1 < width,
            };
            start += len;
            count += 1;
        }
        count
    }

    /// One tap's bytes for a run, in its low `len` bytes.
    #[inline(always)]
    fn run_bytes(&self, plane: &[u8], pad: u8, run: &Run, tap: &Tap) -> u64 {
        let mask = u64::MAX >> (8 * (STRIP - run.len));
        let at = run.base + tap.offset;
        let first = run.x + tap.dx;
        if !run.inside {
            if !(0..self.height as isize).contains(&(run.y + tap.dy)) {
                return u64::from_le_bytes([pad; 8]) & mask;
            }
            let last = first + ((run.len - 1) * self.stride_x) as isize;
            if first < 0 || last >= self.width as isize {
                return self.run_across_border(plane, pad, run, at, first);
            }
        }
        match load_within(plane, at as usize, self.stride_x) {
            Some(bytes) => bytes & mask,
            None => self.run_across_border(plane, pad, run, at, first),
        }
    }

    /// A run's bytes pixel by pixel from `at` (input column `first`), padding those
    /// outside the input's row. The row itself is inside.
    #[inline(never)]
    fn run_across_border(&self, plane: &[u8], pad: u8, run: &Run, at: isize, first: isize) -> u64 {
        let stride = self.stride_x as isize;
        u64::from_le_bytes(std::array::from_fn(|c| {
            let c = c as isize * stride;
            if c >= run.len as isize * stride {
                0
            } else if (0..self.width as isize).contains(&(first + c)) {
                plane[(at + c) as usize]
            } else {
                pad
            }
        }))
    }
}

/// Eight input bytes `stride` apart from `at` as [`load`] reads them, if all lie in
/// `plane` (a run shorter than eight may end near it).
#[inline(always)]
fn load_within(plane: &[u8], at: usize, stride: usize) -> Option<u64> {
    (at + 7 * stride < plane.len()).then(|| load(plane, at, stride))
}

/// Eight input bytes `stride` apart from `at`, the first in the lowest byte.
#[inline(always)]
fn load(plane: &[u8], at: usize, stride: usize) -> u64 {
    match (stride, plane.get(at..at + 16)) {
        (1, _) => u64::from_le_bytes(plane[at..at + 8].try_into().unwrap()),
        (2, Some(sixteen)) => even_bytes(sixteen.try_into().unwrap()),
        _ => u64::from_le_bytes(std::array::from_fn(|c| plane[at + c * stride])),
    }
}

/// Bytes 0, 2, 4 … 14 of `bytes`, the first in the lowest byte.
#[inline(always)]
fn even_bytes(bytes: &[u8; 16]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86_64; the load reads the 16 bytes of the array.
    unsafe {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(bytes.as_ptr() as *const __m128i);
        let low = _mm_and_si128(v, _mm_set1_epi16(0xff));
        _mm_cvtsi128_si64(_mm_packus_epi16(low, low)) as u64
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of aarch64; the load reads the 16 bytes of the array.
    unsafe {
        use std::arch::aarch64::*;
        let v = vreinterpretq_u16_u8(vld1q_u8(bytes.as_ptr()));
        vget_lane_u64::<0>(vreinterpret_u64_u8(vmovn_u16(v)))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    u64::from_le_bytes(std::array::from_fn(|c| bytes[2 * c]))
}

/// `out[4·c + j]` = byte `c` of `rows[j]`: four rows of eight bytes, transposed into
/// eight groups of four.
#[inline(always)]
fn interleave(rows: [u64; 4], out: &mut [u8]) {
    assert!(out.len() >= 32);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86_64; the stores stay within the 32 bytes checked above.
    unsafe {
        use std::arch::x86_64::*;
        let row = |r: u64| _mm_cvtsi64_si128(r as i64);
        let rows01 = _mm_unpacklo_epi8(row(rows[0]), row(rows[1]));
        let rows23 = _mm_unpacklo_epi8(row(rows[2]), row(rows[3]));
        let ptr = out.as_mut_ptr() as *mut __m128i;
        _mm_storeu_si128(ptr, _mm_unpacklo_epi16(rows01, rows23));
        _mm_storeu_si128(ptr.add(1), _mm_unpackhi_epi16(rows01, rows23));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: NEON is part of aarch64; the stores stay within the 32 bytes checked above.
    unsafe {
        use std::arch::aarch64::*;
        let row = |r: u64| vreinterpretq_u8_u64(vdupq_n_u64(r));
        let rows01 = vreinterpretq_u16_u8(vzip1q_u8(row(rows[0]), row(rows[1])));
        let rows23 = vreinterpretq_u16_u8(vzip1q_u8(row(rows[2]), row(rows[3])));
        let ptr = out.as_mut_ptr();
        vst1q_u8(ptr, vreinterpretq_u8_u16(vzip1q_u16(rows01, rows23)));
        vst1q_u8(
            ptr.add(16),
            vreinterpretq_u8_u16(vzip2q_u16(rows01, rows23)),
        );
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    for (c, four) in out[..32].chunks_exact_mut(4).enumerate() {
        for (j, byte) in four.iter_mut().enumerate() {
            *byte = rows[j].to_le_bytes()[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_graph::{optimized, random_conv, random_image, resnet_convs, run, Conv};
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Whether tract packs this im2col for an int8 kernel of the `PackedI8K4` layout
    /// (every x86_64 int8 kernel of tract 0.23.9; on aarch64 the SDOT one), with whole
    /// strips in a panel.
    fn int8_k4_layout(output: &TypedFact) -> bool {
        let packed = output
            .exotic_fact()
            .and_then(|f| f.downcast_ref::<PackedExoticFact>());
        let format = packed.and_then(|p| p.format.downcast_ref::<PackedI8K4>());
        format.is_some_and(|f| f.r % STRIP == 0)
    }

    /// On x86_64 every int8 kernel packs `PackedI8K4`, so every convolution with an
    /// im2col must be compared there; elsewhere those the machine's kernel packs so.
    const ALWAYS_K4: bool = cfg!(target_arch = "x86_64");

    /// Each group's packed panels, end to end.
    type Panels = Vec<Vec<u8>>;

    /// The im2col of `conv` on a random image: tract's, and ours on `threads` threads;
    /// `None` where tract needs none (a 1×1 kernel with stride, say, is a subsampling
    /// and a matmul) or packs for a kernel of another layout.
    fn packed_both_ways(
        conv: &Conv,
        threads: usize,
        rng: &mut ChaCha8Rng,
    ) -> Option<(Panels, Panels)> {
        let model = optimized(conv, rng);
        let node = model.nodes().iter().find(|n| n.op_is::<Im2Col>())?;
        let im2col = node.op_as::<Im2Col>().unwrap();
        let input = model.outlet_fact(node.inputs[0]).unwrap();
        let output = model.outlet_fact(node.id.into()).unwrap();
        if !int8_k4_layout(output) {
            return None;
        }
        let ours = PanelIm2Col::replacing(im2col, input, output)
            .unwrap_or_else(|| panic!("not replaced: {conv:?}"));
        // What the Im2Col is given: the model up to it, on a random image.
        let mut head = model.clone();
        head.select_output_outlets(&node.inputs).unwrap();
        let image = random_image(conv, rng);
        let inputs = head.into_runnable().unwrap().run(tvec![image]).unwrap();
        let theirs = im2col.eval_out_of_plan(inputs.clone()).unwrap().unwrap();
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        let mine = multithread_tract_scope(
            if threads > 1 {
                Executor::multithread(threads)
            } else {
                Executor::SingleThread
            },
            || ours.run(inputs).unwrap(),
        );
        let panels = |t: &TValue| -> Panels {
            let storage = t.try_storage_as::<PackedMatrixStorage>().unwrap();
            (0..conv.group)
                .map(|g| {
                    let value = storage.value_at(&[0, g]);
                    let len = ours.format.single_panel_len(value.k());
                    let count = value.mn().div_ceil(ours.format.r);
                    (0..count)
                        .flat_map(|i| {
                            let ptr = value.panel_bytes(i, None).unwrap();
                            // SAFETY: an eager packed input holds `count` panels of `len`.
                            unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
                        })
                        .collect()
                })
                .collect()
        };
        Some((panels(&theirs[0]), panels(&mine[0])))
    }

    #[test]
    fn packs_the_bytes_tract_packs_for_resnet_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(18);
        for conv in resnet_convs() {
            for threads in [1, 2, 3] {
                let Some((theirs, ours)) = packed_both_ways(&conv, threads, &mut rng) else {
                    if ALWAYS_K4 {
                        panic!("no int8 im2col for {conv:?}");
                    }
                    continue;
                };
                assert!(theirs.iter().all(|g| !g.is_empty()), "{conv:?}");
                assert!(theirs == ours, "{conv:?} on {threads} threads");
            }
        }
    }

    #[test]
    fn packs_the_bytes_tract_packs_for_any_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let mut compared = 0;
        for case in 0..200 {
            let conv = random_conv(&mut rng);
            let threads = 1 + case % 3;
            if let Some((theirs, ours)) = packed_both_ways(&conv, threads, &mut rng) {
                assert!(theirs == ours, "case {case}: {conv:?} on {threads} threads");
                compared += 1;
            }
        }
        if ALWAYS_K4 {
            assert!(
                compared >= 180,
                "only {compared} of 200 convolutions had an Im2Col"
            );
        }
    }

    #[test]
    fn a_model_gives_the_same_output_with_either_im2col() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for conv in resnet_convs() {
            let tracts = optimized(&conv, &mut rng);
            let mut ours = tracts.clone();
            let replaced = use_panel_im2col(&mut ours).unwrap();
            assert!(replaced == 1 || (!ALWAYS_K4 && replaced == 0), "{conv:?}");
            let image = random_image(&conv, &mut rng);
            assert_eq!(run(tracts, &image, 2), run(ours, &image, 2), "{conv:?}");
        }
    }
}
