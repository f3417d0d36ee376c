//! libjpeg-turbo's TurboJPEG API, opened at run time: about 2.5× faster than
//! jpeg-encoder per 640×480 frame here (SIMD Huffman coding and chroma subsampling as
//! well as the DCT), and NEON on ARM where jpeg-encoder has no SIMD at all. Opened rather
//! than linked so that every build (the static musl one included, where opening always
//! fails) runs without it: [`super::JpegEncoder`] falls back to jpeg-encoder.
//!
//! Only the TurboJPEG 2.0 functions are used; libjpeg-turbo 3 still exports them.

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::path::PathBuf;
use std::sync::OnceLock;

use libloading::Library;

/// Debian's, Ubuntu's, JetPack's and Raspberry Pi OS's name (package libturbojpeg0).
const LIBRARY: &str = "libturbojpeg.so.0";
/// Set to a library's path to open that one, or to `off` to encode with jpeg-encoder.
pub const ENV: &str = "SEGCAM_TURBOJPEG";

const TJPF_RGB: c_int = 0;
const TJSAMP_420: c_int = 2;
/// Write into the caller's buffer (sized by `tjBufSize`) instead of allocating.
const TJFLAG_NOREALLOC: c_int = 1024;

type Handle = *mut c_void;

/// The opened library and the functions seg-cam calls.
struct Api {
    init_compress: unsafe extern "C" fn() -> Handle,
    #[allow(clippy::type_complexity)]
    compress2: unsafe extern "C" fn(
        Handle,
        *const u8,
        c_int,
        c_int,
        c_int,
        c_int,
        *mut *mut u8,
        *mut c_ulong,
        c_int,
        c_int,
        c_int,
    ) -> c_int,
    buf_size: unsafe extern "C" fn(c_int, c_int, c_int) -> c_ulong,
    destroy: unsafe extern "C" fn(Handle) -> c_int,
    error_str2: unsafe extern "C" fn(Handle) -> *mut c_char,
    /// Where it was opened from, for logs.
    origin: String,
    /// Kept open for the process's life: the function pointers above point into it.
    _library: Library,
}

/// Where to look, in order: the environment's choice, beside the binary (a release may
/// carry the library), then the system's library path.
fn candidates(
    env: Option<std::ffi::OsString>,
) -> std::result::Result<Vec<(PathBuf, &'static str)>, String> {
    match env {
        Some(v) if v == "off" => return Err(format!("{ENV}=off")),
        Some(v) if !v.is_empty() => return Ok(vec![(PathBuf::from(v), ENV)]),
        _ => {}
    }
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(PathBuf::from))
    {
        let beside = dir.join(LIBRARY);
        if beside.exists() {
            out.push((beside, "beside the binary"));
        }
    }
    out.push((PathBuf::from(LIBRARY), "the system's library path"));
    Ok(out)
}

fn open(candidates: Vec<(PathBuf, &'static str)>) -> std::result::Result<Api, String> {
    let mut failures = Vec::new();
    for (path, from) in candidates {
        // A library that opens but is not the right one (a stale copy beside the
        // binary) does not hide the next candidate.
        // SAFETY: libjpeg-turbo's initialisers only set up its own tables.
        let opened = unsafe { Library::new(&path) }
            .map_err(|e| e.to_string())
            .and_then(|library| bind(library, format!("{} ({from})", path.display())));
        match opened {
            Ok(api) => return Ok(api),
            Err(e) => failures.push(format!("{} ({from}): {e}", path.display())),
        }
    }
    Err(failures.join("; "))
}

fn bind(library: Library, origin: String) -> std::result::Result<Api, String> {
    /// A function of the library, or an error naming it.
    fn function<T: Copy>(library: &Library, name: &str) -> std::result::Result<T, String> {
        let symbol = format!("{name}\0");
        // SAFETY: the caller names the function's type as turbojpeg.h declares it.
        unsafe { library.get::<T>(symbol.as_bytes()) }
            .map(|f| *f)
            .map_err(|e| format!("no {name} in it ({e}): not libjpeg-turbo's TurboJPEG ≥ 2.0"))
    }
    Ok(Api {
        init_compress: function(&library, "tjInitCompress")?,
        compress2: function(&library, "tjCompress2")?,
        buf_size: function(&library, "tjBufSize")?,
        destroy: function(&library, "tjDestroy")?,
        error_str2: function(&library, "tjGetErrorStr2")?,
        origin,
        _library: library,
    })
}

/// The library, opened once per process; `Err` says where it was looked for.
fn api() -> std::result::Result<&'static Api, &'static str> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| open(candidates(std::env::var_os(ENV))?))
        .as_ref()
        .map_err(String::as_str)
}

/// One TurboJPEG compressor: a handle is used by one thread at a time.
pub struct Compressor {
    api: &'static Api,
    handle: Handle,
}

// SAFETY: a TurboJPEG handle belongs to no thread; `&mut self` keeps its use exclusive.
unsafe impl Send for Compressor {}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("library", &self.api.origin)
            .finish()
    }
}

impl Compressor {
    /// A compressor, or why libjpeg-turbo is not available.
    pub fn new() -> std::result::Result<Self, String> {
        let api = api().map_err(str::to_string)?;
        // SAFETY: no arguments; a null handle is the documented failure.
        let handle = unsafe { (api.init_compress)() };
        if handle.is_null() {
            return Err(format!("{}: tjInitCompress failed", api.origin));
        }
        Ok(Self { api, handle })
    }

    /// Where the library was opened from.
    pub fn origin(&self) -> &str {
        &self.api.origin
    }

    /// `rgb` (`width × height` pixels, rows without padding) as a 4:2:0 baseline JPEG of
    /// `quality` (1–100), replacing the contents of `out`.
    pub fn compress_rgb(
        &mut self,
        rgb: &[u8],
        width: u16,
        height: u16,
        quality: u8,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), String> {
        let (w, h) = (c_int::from(width), c_int::from(height));
        let pitch = w * 3;
        let expected = pitch as usize * height as usize;
        if rgb.len() != expected {
            return Err(format!(
                "{} bytes for {width}×{height} RGB pixels, expected {expected}",
                rgb.len()
            ));
        }
        // SAFETY: plain arithmetic on the sizes.
        let bound = unsafe { (self.api.buf_size)(w, h, TJSAMP_420) };
        if bound == c_ulong::MAX || bound == 0 {
            return Err(format!("no JPEG size bound for {width}×{height}"));
        }
        out.clear();
        out.reserve(bound as usize);
        let mut buffer = out.as_mut_ptr();
        let mut size: c_ulong = out.capacity() as c_ulong;
        // SAFETY: `rgb` holds `pitch × height` bytes (checked above); with NOREALLOC the
        // library writes at most `tjBufSize` bytes into `buffer`, which has that capacity,
        // and leaves the pointer as it is.
        let status = unsafe {
            (self.api.compress2)(
                self.handle,
                rgb.as_ptr(),
                w,
                pitch,
                h,
                TJPF_RGB,
                &mut buffer,
                &mut size,
                TJSAMP_420,
                c_int::from(quality.clamp(1, 100)),
                TJFLAG_NOREALLOC,
            )
        };
        if status != 0 {
            return Err(self.last_error());
        }
        if buffer != out.as_mut_ptr() || size as usize > out.capacity() {
            // Not what NOREALLOC promises: do not trust the bytes.
            return Err("the library moved or overran the output buffer".into());
        }
        // SAFETY: the library wrote `size` bytes (within the capacity) at the start.
        unsafe { out.set_len(size as usize) };
        Ok(())
    }

    fn last_error(&self) -> String {
        // SAFETY: the handle is live; the library returns a NUL-terminated string it owns.
        let text = unsafe { (self.api.error_str2)(self.handle) };
        if text.is_null() {
            return "tjCompress2 failed".into();
        }
        // SAFETY: non-null and NUL-terminated, read before the next call on this handle.
        unsafe { CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        // SAFETY: the handle came from tjInitCompress and is destroyed once.
        unsafe { (self.api.destroy)(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_picks_a_library_or_turns_it_off() {
        assert_eq!(candidates(Some("off".into())), Err(format!("{ENV}=off")));
        let chosen = candidates(Some("/opt/tj/libturbojpeg.so".into())).unwrap();
        assert_eq!(
            chosen,
            vec![(PathBuf::from("/opt/tj/libturbojpeg.so"), ENV)]
        );
        let usual = candidates(None).unwrap();
        assert_eq!(usual.last().unwrap().0, PathBuf::from(LIBRARY));
        assert_eq!(candidates(Some("".into())).unwrap(), usual);
    }

    #[test]
    fn a_library_that_does_not_open_is_named_in_the_error() {
        let missing = PathBuf::from("/nonexistent/libturbojpeg.so.0");
        let err = open(vec![(missing, ENV)]).err().unwrap();
        assert!(err.contains("/nonexistent/libturbojpeg.so.0"), "{err}");
        assert!(err.contains(ENV), "{err}");
        // A library without TurboJPEG's functions is refused, not called.
        let libc = PathBuf::from("libc.so.6");
        let err = open(vec![(libc, "test")]).err().unwrap();
        assert!(err.contains("tjInitCompress"), "{err}");
    }
}
