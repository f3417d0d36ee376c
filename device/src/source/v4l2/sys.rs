//! The few V4L2 structures and ioctls seg-cam uses, written out from the kernel's
//! `linux/videodev2.h` UAPI (stable ABI) so that no bindgen or libclang is needed and
//! the camera builds for any Linux target, musl included. Layouts are for the
//! asm-generic ioctl encoding (x86, ARM, AArch64, RISC-V); tests check the sizes and
//! request numbers against the values the kernel header gives on 64-bit Linux.

#![allow(dead_code)] // the full set of constants documents the ABI

use std::io;
use std::os::fd::RawFd;

pub const BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
pub const BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
/// Planes in a multi-planar format or buffer, at most.
pub const VIDEO_MAX_PLANES: usize = 8;
pub const MEMORY_MMAP: u32 = 1;
pub const FIELD_ANY: u32 = 0;
pub const FIELD_NONE: u32 = 1;

pub const CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
pub const CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const CAP_STREAMING: u32 = 0x0400_0000;
pub const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
/// `v4l2_captureparm.capability`: the frame interval can be set.
pub const CAP_TIMEPERFRAME: u32 = 0x1000;

pub const FRMSIZE_TYPE_DISCRETE: u32 = 1;
pub const FRMSIZE_TYPE_CONTINUOUS: u32 = 2;
pub const FRMSIZE_TYPE_STEPWISE: u32 = 3;
pub const FRMIVAL_TYPE_DISCRETE: u32 = 1;

/// The driver marks a buffer whose data may be corrupt.
pub const BUF_FLAG_ERROR: u32 = 0x40;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct FmtDesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PixFormat {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

/// `v4l2_plane_pix_format`: one plane of a multi-planar format.
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanePixFormat {
    pub sizeimage: u32,
    pub bytesperline: u32,
    pub reserved: [u16; 6],
}

/// `v4l2_pix_format_mplane` (packed in the kernel header).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default)]
pub struct PixFormatMplane {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub colorspace: u32,
    pub plane_fmt: [PlanePixFormat; VIDEO_MAX_PLANES],
    pub num_planes: u8,
    pub flags: u8,
    pub ycbcr_enc: u8,
    pub quantization: u8,
    pub xfer_func: u8,
    pub reserved: [u8; 7],
}

/// The union inside `v4l2_format`: 200 bytes, aligned like a pointer (one of its
/// members, `v4l2_window`, holds pointers).
#[repr(C)]
#[derive(Clone, Copy)]
pub union FormatUnion {
    pub pix: PixFormat,
    pub pix_mp: PixFormatMplane,
    pub raw: [u8; 200],
    _align: [usize; 0],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Format {
    pub type_: u32,
    pub fmt: FormatUnion,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Fract {
    pub numerator: u32,
    pub denominator: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct CaptureParm {
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: Fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union StreamParmUnion {
    pub capture: CaptureParm,
    pub raw: [u8; 200],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct StreamParm {
    pub type_: u32,
    pub parm: StreamParmUnion,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestBuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union BufferM {
    pub offset: u32,
    pub userptr: libc::c_ulong,
    pub planes: *mut libc::c_void,
    pub fd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: libc::timeval,
    pub timecode: Timecode,
    pub sequence: u32,
    pub memory: u32,
    pub m: BufferM,
    pub length: u32,
    pub reserved2: u32,
    pub request_fd: i32,
}

/// `v4l2_plane`: one plane of a multi-planar buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Plane {
    pub bytesused: u32,
    pub length: u32,
    pub m: PlaneM,
    /// Where the data starts in the plane (included in `bytesused`).
    pub data_offset: u32,
    pub reserved: [u32; 11],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union PlaneM {
    pub mem_offset: u32,
    pub userptr: libc::c_ulong,
    pub fd: i32,
}

/// `v4l2_queryctrl`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QueryCtrl {
    pub id: u32,
    pub type_: u32,
    pub name: [u8; 32],
    pub minimum: i32,
    pub maximum: i32,
    pub step: i32,
    pub default_value: i32,
    pub flags: u32,
    pub reserved: [u32; 2],
}

/// `v4l2_control`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Control {
    pub id: u32,
    pub value: i32,
}

/// `v4l2_querymenu` (the name member of its union).
#[repr(C, packed)]
#[derive(Clone, Copy)]
pub struct QueryMenu {
    pub id: u32,
    pub index: u32,
    pub name: [u8; 32],
    pub reserved: u32,
}

/// Ask `VIDIOC_QUERYCTRL` for the control after the given id.
pub const CTRL_FLAG_NEXT_CTRL: u32 = 0x8000_0000;
pub const CTRL_FLAG_DISABLED: u32 = 0x0001;
pub const CTRL_FLAG_READ_ONLY: u32 = 0x0004;
pub const CTRL_FLAG_INACTIVE: u32 = 0x0010;
pub const CTRL_TYPE_INTEGER: u32 = 1;
pub const CTRL_TYPE_BOOLEAN: u32 = 2;
pub const CTRL_TYPE_MENU: u32 = 3;
pub const CTRL_TYPE_BUTTON: u32 = 4;
pub const CTRL_TYPE_CTRL_CLASS: u32 = 6;
pub const CTRL_TYPE_INTEGER_MENU: u32 = 9;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FrmSizeDiscrete {
    pub width: u32,
    pub height: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FrmSizeStepwise {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union FrmSizeUnion {
    pub discrete: FrmSizeDiscrete,
    pub stepwise: FrmSizeStepwise,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrmSizeEnum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    pub size: FrmSizeUnion,
    pub reserved: [u32; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct FrmIvalStepwise {
    pub min: Fract,
    pub max: Fract,
    pub step: Fract,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub union FrmIvalUnion {
    pub discrete: Fract,
    pub stepwise: FrmIvalStepwise,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrmIvalEnum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    pub ival: FrmIvalUnion,
    pub reserved: [u32; 2],
}

/// The asm-generic `_IOC` encoding: direction, size, type 'V', number.
const fn ioc(dir: u32, nr: u32, size: usize) -> u32 {
    (dir << 30) | ((size as u32) << 16) | ((b'V' as u32) << 8) | nr
}
const WRITE: u32 = 1;
const READ: u32 = 2;
const fn ior<T>(nr: u32) -> u32 {
    ioc(READ, nr, std::mem::size_of::<T>())
}
const fn iow<T>(nr: u32) -> u32 {
    ioc(WRITE, nr, std::mem::size_of::<T>())
}
const fn iowr<T>(nr: u32) -> u32 {
    ioc(READ | WRITE, nr, std::mem::size_of::<T>())
}

pub const VIDIOC_QUERYCAP: u32 = ior::<Capability>(0);
pub const VIDIOC_ENUM_FMT: u32 = iowr::<FmtDesc>(2);
pub const VIDIOC_G_FMT: u32 = iowr::<Format>(4);
pub const VIDIOC_S_FMT: u32 = iowr::<Format>(5);
pub const VIDIOC_REQBUFS: u32 = iowr::<RequestBuffers>(8);
pub const VIDIOC_QUERYBUF: u32 = iowr::<Buffer>(9);
pub const VIDIOC_QBUF: u32 = iowr::<Buffer>(15);
pub const VIDIOC_DQBUF: u32 = iowr::<Buffer>(17);
pub const VIDIOC_S_CTRL: u32 = iowr::<Control>(28);
pub const VIDIOC_QUERYCTRL: u32 = iowr::<QueryCtrl>(36);
pub const VIDIOC_QUERYMENU: u32 = iowr::<QueryMenu>(37);
pub const VIDIOC_STREAMON: u32 = iow::<libc::c_int>(18);
pub const VIDIOC_STREAMOFF: u32 = iow::<libc::c_int>(19);
pub const VIDIOC_G_PARM: u32 = iowr::<StreamParm>(21);
pub const VIDIOC_S_PARM: u32 = iowr::<StreamParm>(22);
pub const VIDIOC_ENUM_FRAMESIZES: u32 = iowr::<FrmSizeEnum>(74);
pub const VIDIOC_ENUM_FRAMEINTERVALS: u32 = iowr::<FrmIvalEnum>(75);

/// All-zero value of a plain C structure (every type here is valid when zeroed).
pub fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for the `repr(C)` integer/union structures of this module,
    // for which all-zero bytes are a valid value (as in C's `memset(&x, 0, ...)`).
    unsafe { std::mem::zeroed() }
}

/// `ioctl(fd, request, arg)`, retried on EINTR.
pub fn ioctl<T>(fd: RawFd, request: u32, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `arg` is a live, exclusively borrowed structure of the size that
        // `request` encodes (the request constants are built from these types).
        let r = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
        if r != -1 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A NUL-padded C string field as text.
pub fn c_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn layouts_and_requests_match_the_kernel_header() {
        // Values printed by a C program including <linux/videodev2.h> on x86_64
        // (identical on aarch64: same encoding, same LP64 layouts).
        assert_eq!(size_of::<Capability>(), 104);
        assert_eq!(size_of::<FmtDesc>(), 64);
        assert_eq!(size_of::<PixFormat>(), 48);
        assert_eq!(size_of::<Format>(), 208);
        assert_eq!(size_of::<RequestBuffers>(), 20);
        assert_eq!(size_of::<Buffer>(), 88);
        assert_eq!(std::mem::offset_of!(Buffer, timestamp), 24);
        assert_eq!(std::mem::offset_of!(Buffer, sequence), 56);
        assert_eq!(std::mem::offset_of!(Buffer, m), 64);
        assert_eq!(std::mem::offset_of!(Buffer, length), 72);
        assert_eq!(std::mem::offset_of!(Format, fmt), 8);
        assert_eq!(size_of::<StreamParm>(), 204);
        assert_eq!(size_of::<FrmSizeEnum>(), 44);
        assert_eq!(size_of::<FrmIvalEnum>(), 52);
        assert_eq!(size_of::<PlanePixFormat>(), 20);
        assert_eq!(size_of::<PixFormatMplane>(), 192);
        assert_eq!(std::mem::offset_of!(PixFormatMplane, num_planes), 180);
        assert_eq!(size_of::<Plane>(), 64);
        assert_eq!(std::mem::offset_of!(Plane, data_offset), 16);
        assert_eq!(size_of::<QueryCtrl>(), 68);
        assert_eq!(size_of::<QueryMenu>(), 44);
        assert_eq!(size_of::<Control>(), 8);

        assert_eq!(VIDIOC_QUERYCAP, 0x8068_5600);
        assert_eq!(VIDIOC_ENUM_FMT, 0xc040_5602);
        assert_eq!(VIDIOC_G_FMT, 0xc0d0_5604);
        assert_eq!(VIDIOC_S_FMT, 0xc0d0_5605);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QUERYBUF, 0xc058_5609);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_DQBUF, 0xc058_5611);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_STREAMOFF, 0x4004_5613);
        assert_eq!(VIDIOC_G_PARM, 0xc0cc_5615);
        assert_eq!(VIDIOC_S_PARM, 0xc0cc_5616);
        assert_eq!(VIDIOC_ENUM_FRAMESIZES, 0xc02c_564a);
        assert_eq!(VIDIOC_ENUM_FRAMEINTERVALS, 0xc034_564b);
        assert_eq!(VIDIOC_S_CTRL, 0xc008_561c);
        assert_eq!(VIDIOC_QUERYCTRL, 0xc044_5624);
        assert_eq!(VIDIOC_QUERYMENU, 0xc02c_5625);
    }

    #[test]
    fn c_text_stops_at_the_first_nul() {
        let mut field = [0u8; 16];
        field[..4].copy_from_slice(b"uvc\0");
        assert_eq!(c_text(&field), "uvc");
        assert_eq!(c_text(b"vivid"), "vivid");
    }
}
