//! A V4L2 capture device: capabilities, the formats, sizes and rates it offers,
//! setting a format and a rate, and mmap streaming, through the single-planar API
//! (USB cameras) or the multi-planar one (SoC ISPs such as the Raspberry Pi 5's,
//! whose frames come one buffer per plane).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::sys::{self, ioctl, zeroed};
use crate::source::pixfmt::FourCc;

/// The sizes a device offers for one format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sizes {
    Discrete(Vec<(u32, u32)>),
    /// Any size from `min` to `max` in `step`s (continuous: step 1).
    Range {
        min: (u32, u32),
        max: (u32, u32),
        step: (u32, u32),
    },
}

/// An open V4L2 device node.
#[derive(Debug)]
pub struct Device {
    path: PathBuf,
    fd: OwnedFd,
    /// `BUF_TYPE_VIDEO_CAPTURE` or `BUF_TYPE_VIDEO_CAPTURE_MPLANE`.
    buf_type: u32,
}

/// The format the driver set: size, one stride (`bytesperline`) per plane buffer, and
/// its colorimetry fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetFormat {
    pub fourcc: FourCc,
    pub width: u32,
    pub height: u32,
    pub strides: Vec<usize>,
    /// `sizeimage` of each plane buffer.
    pub sizes: Vec<usize>,
    pub colorspace: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
}

impl Device {
    /// Open `path` read-write, non-blocking (frames are waited for with `poll`).
    pub fn open(path: &Path) -> io::Result<Self> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in the path"))?;
        // SAFETY: a valid NUL-terminated path; the returned descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            path: path.to_owned(),
            fd,
            buf_type: sys::BUF_TYPE_VIDEO_CAPTURE,
        })
    }

    /// Use the multi-planar API (for devices that offer only it).
    pub fn multiplanar(mut self, on: bool) -> Self {
        self.buf_type = if on {
            sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE
        } else {
            sys::BUF_TYPE_VIDEO_CAPTURE
        };
        self
    }

    /// Whether frames come through the multi-planar API.
    pub fn is_multiplanar(&self) -> bool {
        self.buf_type == sys::BUF_TYPE_VIDEO_CAPTURE_MPLANE
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn capability(&self) -> io::Result<sys::Capability> {
        let mut cap: sys::Capability = zeroed();
        ioctl(self.raw(), sys::VIDIOC_QUERYCAP, &mut cap)?;
        Ok(cap)
    }

    /// Capture formats offered: FourCC and the driver's description.
    pub fn formats(&self) -> Vec<(FourCc, String)> {
        let mut out = Vec::new();
        for index in 0.. {
            let mut desc: sys::FmtDesc = zeroed();
            desc.index = index;
            desc.type_ = self.buf_type;
            if ioctl(self.raw(), sys::VIDIOC_ENUM_FMT, &mut desc).is_err() {
                break;
            }
            out.push((FourCc(desc.pixelformat), sys::c_text(&desc.description)));
        }
        out
    }

    /// Frame sizes offered for `fourcc` (an empty discrete list when the driver does
    /// not enumerate them).
    pub fn sizes(&self, fourcc: FourCc) -> Sizes {
        let mut discrete = Vec::new();
        for index in 0.. {
            let mut e: sys::FrmSizeEnum = zeroed();
            e.index = index;
            e.pixel_format = fourcc.0;
            if ioctl(self.raw(), sys::VIDIOC_ENUM_FRAMESIZES, &mut e).is_err() {
                break;
            }
            if e.type_ == sys::FRMSIZE_TYPE_DISCRETE {
                // SAFETY: the driver filled the union member its type names.
                let d = unsafe { e.size.discrete };
                discrete.push((d.width, d.height));
            } else {
                // SAFETY: as above; continuous ranges use the stepwise member too.
                let s = unsafe { e.size.stepwise };
                return Sizes::Range {
                    min: (s.min_width, s.min_height),
                    max: (s.max_width, s.max_height),
                    step: (s.step_width.max(1), s.step_height.max(1)),
                };
            }
        }
        Sizes::Discrete(discrete)
    }

    /// Frame rates offered for `fourcc` at `width × height`, fastest first. A
    /// stepwise interval range gives its two ends.
    pub fn rates(&self, fourcc: FourCc, width: u32, height: u32) -> Vec<f32> {
        let mut out = Vec::new();
        for index in 0.. {
            let mut e: sys::FrmIvalEnum = zeroed();
            e.index = index;
            e.pixel_format = fourcc.0;
            e.width = width;
            e.height = height;
            if ioctl(self.raw(), sys::VIDIOC_ENUM_FRAMEINTERVALS, &mut e).is_err() {
                break;
            }
            if e.type_ == sys::FRMIVAL_TYPE_DISCRETE {
                // SAFETY: the driver filled the member its type names.
                out.extend(fps(unsafe { e.ival.discrete }));
            } else {
                // SAFETY: as above.
                let s = unsafe { e.ival.stepwise };
                out.extend(fps(s.min));
                out.extend(fps(s.max));
                break;
            }
        }
        out.sort_by(|a, b| b.total_cmp(a));
        out.dedup();
        out
    }

    /// Set the capture format; returns what the driver actually chose (it may adjust
    /// the size, and the strides are its own).
    pub fn set_format(&self, fourcc: FourCc, width: u32, height: u32) -> io::Result<SetFormat> {
        let mut f: sys::Format = zeroed();
        f.type_ = self.buf_type;
        if self.is_multiplanar() {
            f.fmt.pix_mp = sys::PixFormatMplane {
                width,
                height,
                pixelformat: fourcc.0,
                field: sys::FIELD_NONE,
                ..Default::default()
            };
        } else {
            f.fmt.pix = sys::PixFormat {
                width,
                height,
                pixelformat: fourcc.0,
                field: sys::FIELD_NONE,
                ..Default::default()
            };
        }
        ioctl(self.raw(), sys::VIDIOC_S_FMT, &mut f)?;
        Ok(if self.is_multiplanar() {
            // SAFETY: multi-planar capture formats fill the `pix_mp` member.
            let mp = unsafe { f.fmt.pix_mp };
            let planes = (mp.num_planes as usize).clamp(1, sys::VIDEO_MAX_PLANES);
            let plane_fmt = mp.plane_fmt;
            SetFormat {
                fourcc: FourCc(mp.pixelformat),
                width: mp.width,
                height: mp.height,
                strides: plane_fmt[..planes]
                    .iter()
                    .map(|p| p.bytesperline as usize)
                    .collect(),
                sizes: plane_fmt[..planes]
                    .iter()
                    .map(|p| p.sizeimage as usize)
                    .collect(),
                colorspace: mp.colorspace,
                ycbcr_enc: mp.ycbcr_enc.into(),
                quantization: mp.quantization.into(),
            }
        } else {
            // SAFETY: capture formats fill the `pix` member.
            let pix = unsafe { f.fmt.pix };
            SetFormat {
                fourcc: FourCc(pix.pixelformat),
                width: pix.width,
                height: pix.height,
                strides: vec![pix.bytesperline as usize],
                sizes: vec![pix.sizeimage as usize],
                colorspace: pix.colorspace,
                ycbcr_enc: pix.ycbcr_enc,
                quantization: pix.quantization,
            }
        })
    }

    /// Ask for `rate` frames per second; returns the rate the driver set, or `None`
    /// when the device has no settable frame interval.
    pub fn set_rate(&self, rate: f32) -> io::Result<Option<f32>> {
        let mut p: sys::StreamParm = zeroed();
        p.type_ = self.buf_type;
        ioctl(self.raw(), sys::VIDIOC_G_PARM, &mut p)?;
        // SAFETY: capture parameters fill the `capture` member.
        if unsafe { p.parm.capture.capability } & sys::CAP_TIMEPERFRAME == 0 {
            return Ok(None);
        }
        // Rates like 29.97 as 1000/29970.
        let denominator = (rate.max(0.1) * 1000.0).round() as u32;
        p.parm.capture.timeperframe = sys::Fract {
            numerator: 1000,
            denominator,
        };
        ioctl(self.raw(), sys::VIDIOC_S_PARM, &mut p)?;
        // SAFETY: as above.
        Ok(fps(unsafe { p.parm.capture.timeperframe }))
    }

    /// Map `count` driver buffers (each plane of each), queue them and start
    /// streaming.
    pub fn stream(self, count: u32) -> io::Result<Stream> {
        let mut req = sys::RequestBuffers {
            count,
            type_: self.buf_type,
            memory: sys::MEMORY_MMAP,
            ..Default::default()
        };
        ioctl(self.raw(), sys::VIDIOC_REQBUFS, &mut req)?;
        if req.count == 0 {
            return Err(io::Error::other("the driver gave no mmap buffers"));
        }
        let mut buffers = Vec::with_capacity(req.count as usize);
        for index in 0..req.count {
            let mut planes = [zeroed::<sys::Plane>(); sys::VIDEO_MAX_PLANES];
            let mut buf = self.buffer(index, &mut planes);
            ioctl(self.raw(), sys::VIDIOC_QUERYBUF, &mut buf)?;
            let maps = if self.is_multiplanar() {
                let n = (buf.length as usize).min(sys::VIDEO_MAX_PLANES);
                planes[..n]
                    .iter()
                    .map(|p| {
                        // SAFETY: MMAP planes carry their mmap offset in `m.mem_offset`.
                        let offset = unsafe { p.m.mem_offset };
                        Mapping::new(self.raw(), p.length as usize, offset as libc::off_t)
                    })
                    .collect::<io::Result<Vec<_>>>()?
            } else {
                // SAFETY: MMAP buffers carry their mmap offset in `m.offset`.
                let offset = unsafe { buf.m.offset };
                vec![Mapping::new(
                    self.raw(),
                    buf.length as usize,
                    offset as libc::off_t,
                )?]
            };
            buffers.push(maps);
            let mut buf = self.buffer(index, &mut planes);
            ioctl(self.raw(), sys::VIDIOC_QBUF, &mut buf)?;
        }
        let mut kind = self.buf_type as libc::c_int;
        ioctl(self.raw(), sys::VIDIOC_STREAMON, &mut kind)?;
        Ok(Stream {
            buffers,
            device: self,
        })
    }

    /// A buffer request for `index`; multi-planar requests point at `planes`, which
    /// must outlive the ioctl.
    fn buffer(&self, index: u32, planes: &mut [sys::Plane; sys::VIDEO_MAX_PLANES]) -> sys::Buffer {
        let mut buf: sys::Buffer = zeroed();
        buf.index = index;
        buf.type_ = self.buf_type;
        buf.memory = sys::MEMORY_MMAP;
        if self.is_multiplanar() {
            buf.m.planes = planes.as_mut_ptr().cast();
            buf.length = sys::VIDEO_MAX_PLANES as u32;
        }
        buf
    }

    /// The controls the driver offers (brightness, exposure, white balance…), as
    /// `VIDIOC_QUERYCTRL` walks them; control classes and disabled ones left out.
    pub fn controls(&self) -> Vec<ControlInfo> {
        let mut out = Vec::new();
        let mut id = 0;
        loop {
            let mut q: sys::QueryCtrl = zeroed();
            q.id = id | sys::CTRL_FLAG_NEXT_CTRL;
            if ioctl(self.raw(), sys::VIDIOC_QUERYCTRL, &mut q).is_err() || q.id == id {
                break;
            }
            id = q.id;
            // Only what VIDIOC_S_CTRL sets with one integer (no strings, 64-bit or
            // compound controls), and no class headings or disabled controls.
            let simple = matches!(
                q.type_,
                sys::CTRL_TYPE_INTEGER
                    | sys::CTRL_TYPE_BOOLEAN
                    | sys::CTRL_TYPE_MENU
                    | sys::CTRL_TYPE_BUTTON
                    | sys::CTRL_TYPE_INTEGER_MENU
            );
            if !simple || q.flags & sys::CTRL_FLAG_DISABLED != 0 {
                continue;
            }
            let menu = if matches!(q.type_, sys::CTRL_TYPE_MENU | sys::CTRL_TYPE_INTEGER_MENU) {
                self.menu(&q)
            } else {
                Vec::new()
            };
            out.push(ControlInfo {
                id: q.id,
                name: sys::c_text(&q.name),
                kind: q.type_,
                minimum: q.minimum,
                maximum: q.maximum,
                default: q.default_value,
                read_only: q.flags & sys::CTRL_FLAG_READ_ONLY != 0,
                menu,
            });
        }
        out
    }

    fn menu(&self, q: &sys::QueryCtrl) -> Vec<(i32, String)> {
        let mut items = Vec::new();
        // Menus are short; a driver claiming a huge range is not walked to its end.
        for index in q.minimum.max(0)..=q.maximum.clamp(0, 255) {
            let mut m: sys::QueryMenu = zeroed();
            m.id = q.id;
            m.index = index as u32;
            if ioctl(self.raw(), sys::VIDIOC_QUERYMENU, &mut m).is_ok() {
                let name = if q.type_ == sys::CTRL_TYPE_INTEGER_MENU {
                    // SAFETY: integer menus hold an i64 where names would be.
                    let value: i64 = unsafe { std::ptr::read_unaligned(m.name.as_ptr().cast()) };
                    value.to_string()
                } else {
                    sys::c_text(&{ m.name })
                };
                items.push((index, name));
            }
        }
        items
    }

    /// Set control `id` to `value`.
    pub fn set_control(&self, id: u32, value: i32) -> io::Result<()> {
        let mut c = sys::Control { id, value };
        ioctl(self.raw(), sys::VIDIOC_S_CTRL, &mut c)
    }
}

/// One control a driver offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlInfo {
    pub id: u32,
    pub name: String,
    /// `V4L2_CTRL_TYPE_*`.
    pub kind: u32,
    pub minimum: i32,
    pub maximum: i32,
    pub default: i32,
    pub read_only: bool,
    /// Menu controls: index and name (or value) of each item.
    pub menu: Vec<(i32, String)>,
}

fn fps(interval: sys::Fract) -> Option<f32> {
    (interval.numerator > 0 && interval.denominator > 0)
        .then(|| interval.denominator as f32 / interval.numerator as f32)
}

/// One driver buffer mapped into this process.
#[derive(Debug)]
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the driver writes it only
// while the buffer is queued, and it is read only between DQBUF and QBUF.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: RawFd, len: usize, offset: libc::off_t) -> io::Result<Self> {
        // SAFETY: mapping a buffer the driver just described; checked for failure.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { ptr, len })
    }

    fn bytes(&self, used: usize) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for the life of `self`.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, used.min(self.len)) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// A streaming device. Dropping it stops the stream and unmaps the buffers.
#[derive(Debug)]
pub struct Stream {
    // Declared first: unmapped before the device closes. One mapping per plane.
    buffers: Vec<Vec<Mapping>>,
    device: Device,
}

/// What waiting for a frame gave.
pub enum Dequeued<R> {
    Frame(R),
    /// No frame within the timeout.
    Timeout,
}

impl Stream {
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Wait up to `timeout` for the next filled buffer, hand the bytes of its planes
    /// and its flags to `read`, and give the buffer back to the driver.
    pub fn next<R>(
        &mut self,
        timeout: Duration,
        read: impl FnOnce(&[&[u8]], u32) -> R,
    ) -> io::Result<Dequeued<R>> {
        let fd = self.device.raw();
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut poll, 1, ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted {
                Ok(Dequeued::Timeout)
            } else {
                Err(err)
            };
        }
        if n == 0 {
            return Ok(Dequeued::Timeout);
        }
        if poll.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
            && poll.revents & libc::POLLIN == 0
        {
            return Err(io::Error::other(
                "the device reported an error (unplugged?)",
            ));
        }
        let mut planes = [zeroed::<sys::Plane>(); sys::VIDEO_MAX_PLANES];
        let mut buf = self.device.buffer(0, &mut planes);
        match ioctl(fd, sys::VIDIOC_DQBUF, &mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Dequeued::Timeout),
            Err(e) => return Err(e),
        }
        let maps = self
            .buffers
            .get(buf.index as usize)
            .ok_or_else(|| io::Error::other(format!("the driver returned buffer {}", buf.index)))?;
        let bytes: Vec<&[u8]> = if self.device.is_multiplanar() {
            maps.iter()
                .zip(&planes)
                .map(|(map, p)| {
                    // The plane's data starts `data_offset` in; `bytesused` counts it.
                    let used = map.bytes(p.bytesused as usize);
                    used.get(p.data_offset as usize..).unwrap_or_default()
                })
                .collect()
        } else {
            vec![maps[0].bytes(buf.bytesused as usize)]
        };
        let result = read(&bytes, buf.flags);
        let index = buf.index;
        let mut buf = self.device.buffer(index, &mut planes);
        ioctl(fd, sys::VIDIOC_QBUF, &mut buf)?;
        Ok(Dequeued::Frame(result))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let mut kind = self.device.buf_type as libc::c_int;
        // Best effort: an unplugged device fails here, and closing frees it anyway.
        let _ = ioctl(self.device.raw(), sys::VIDIOC_STREAMOFF, &mut kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_missing_device_fails_with_not_found() {
        let err = Device::open(Path::new("/dev/video-does-not-exist")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_file_that_is_not_a_camera_refuses_the_capability_query() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let device = Device::open(file.path()).unwrap();
        assert!(device.capability().is_err());
        assert!(device.formats().is_empty());
        assert_eq!(device.sizes(FourCc::new(b"YUYV")), Sizes::Discrete(vec![]));
    }

    #[test]
    fn rates_from_intervals() {
        let f = |numerator, denominator| sys::Fract {
            numerator,
            denominator,
        };
        assert_eq!(fps(f(1, 30)), Some(30.0));
        assert_eq!(fps(f(1001, 30000)), Some(30000.0 / 1001.0));
        assert_eq!(fps(f(0, 30)), None);
    }
}
