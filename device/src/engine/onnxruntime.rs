//! The onnxruntime backend (feature `onnxruntime`): the `ort` crate with the library
//! opened at run time, so the binary links nothing and runs where no library is found
//! (with tract). The library is looked for, in order: `--onnxruntime-lib`,
//! `ORT_DYLIB_PATH`, beside the binary, and the PyTorch venv's onnxruntime wheel.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::ep::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::check::{check_output, Element};
use super::{Provider, Raw};
use crate::card::ModelCard;

/// The file names of the library (Linux first).
const LIBRARY_NAMES: [&str; 2] = ["libonnxruntime.so", "libonnxruntime.dylib"];

/// The library this process opened; onnxruntime can be loaded once per process.
static LOADED: OnceLock<(PathBuf, String)> = OnceLock::new();

#[derive(Debug)]
pub(super) struct Onnxruntime {
    // `Session::run` takes `&mut`; the engine is shared by reference.
    session: Mutex<Session>,
    input: String,
}

impl Onnxruntime {
    pub fn load(
        bytes: &[u8],
        card: &ModelCard,
        threads: usize,
        provider: Provider,
        library: Option<&Path>,
    ) -> Result<Self, String> {
        let (lib, _) = load_library(library)?;
        let environment = environment(&lib)?;
        let fail = |e: ort::Error| format!("onnxruntime cannot prepare the graph: {e}");
        let mut builder = Session::builder(environment)
            .map_err(fail)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(|e| fail(e.into()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| fail(e.into()))?
            // The pool spins between the steps of a run (the model's own speed, as
            // onnxruntime's default) and stops at its end, so that between frames the
            // rest of the pipeline has the cores: as many frames/s as no spinning at all.
            .with_intra_op_spinning(true)
            .map_err(|e| fail(e.into()))?
            .with_config_entry("session.force_spinning_stop", "1")
            .map_err(|e| fail(e.into()))?;
        builder = register_provider(builder, provider, &lib)?;
        let session = builder.commit_from_memory(bytes).map_err(fail)?;
        let input = card.input_name.clone();
        let engine = Self {
            session: Mutex::new(session),
            input,
        };
        // The card against what the library computes for its input size.
        let (h, w) = (card.input_height as usize, card.input_width as usize);
        let (shape, element) = engine.run(&vec![0.0; 3 * h * w], h, w, |raw| {
            let element = match &raw {
                Raw::Scores(..) => Element::F32,
                Raw::Classes(..) => Element::Integer,
            };
            (raw.shape().to_vec(), element)
        })?;
        check_output(&shape, element, card)?;
        Ok(engine)
    }

    pub fn run<R>(
        &self,
        chw: &[f32],
        h: usize,
        w: usize,
        read: impl FnOnce(Raw<'_>) -> R,
    ) -> Result<R, String> {
        let fail = |e: ort::Error| format!("inference failed: {e}");
        let tensor = TensorRef::from_array_view(([1usize, 3, h, w], chw)).map_err(fail)?;
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![self.input.as_str() => tensor])
            .map_err(fail)?;
        let value = &outputs[0];
        let element = match value.dtype() {
            ValueType::Tensor { ty, .. } => *ty,
            other => return Err(format!("the output is {other:?}, expected a tensor")),
        };
        let shape_of = |s: &ort::value::Shape| s.iter().map(|&d| d.max(0) as usize).collect();
        match element {
            TensorElementType::Float32 => {
                let (shape, values) = value.try_extract_tensor::<f32>().map_err(fail)?;
                Ok(read(Raw::Scores(shape_of(shape), values)))
            }
            TensorElementType::Int64 => {
                let (shape, values) = value.try_extract_tensor::<i64>().map_err(fail)?;
                Ok(read(Raw::Classes(shape_of(shape), Cow::Borrowed(values))))
            }
            TensorElementType::Int32 => {
                let (shape, values) = value.try_extract_tensor::<i32>().map_err(fail)?;
                let wide = values.iter().map(|&v| i64::from(v)).collect();
                Ok(read(Raw::Classes(shape_of(shape), Cow::Owned(wide))))
            }
            other => Err(format!(
                "the output is {other:?}, expected f32 scores or integer classes"
            )),
        }
    }
}

/// The process's onnxruntime environment: onnxruntime allows one per process, ever.
fn environment(lib: &Path) -> Result<&'static ort::environment::Environment, String> {
    static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = ENVIRONMENT.get() {
        return Ok(e);
    }
    let built = ort::init()
        .with_name("segcam")
        .build()
        .map_err(|e| format!("onnxruntime ({}): {e}", lib.display()))?;
    Ok(ENVIRONMENT.get_or_init(|| built))
}

/// The provider on the builder, or an error naming the provider and the library.
fn register_provider(
    builder: ort::session::builder::SessionBuilder,
    provider: Provider,
    lib: &Path,
) -> Result<ort::session::builder::SessionBuilder, String> {
    let (available, dispatch) = match provider {
        Provider::Cpu => return Ok(builder),
        Provider::Cuda => (
            ort::ep::CUDA::is_available(),
            ort::ep::CUDA::default().build().error_on_failure(),
        ),
        Provider::Tensorrt => (
            ort::ep::TensorRT::is_available(),
            ort::ep::TensorRT::default().build().error_on_failure(),
        ),
    };
    if !available.unwrap_or(false) {
        return Err(format!(
            "provider {provider}: the onnxruntime library {} was built without it (it has {}); use one built with {provider}, e.g. onnxruntime-gpu or JetPack's",
            lib.display(),
            providers().join(", ")
        ));
    }
    builder
        .with_execution_providers([dispatch])
        .map_err(|e| format!("provider {provider} of {}: {e}", lib.display()))
}

/// The execution providers the loaded library was built with.
pub fn providers() -> Vec<String> {
    let mut names = Vec::new();
    for (name, available) in [
        ("cpu", ort::ep::CPU::is_available()),
        ("cuda", ort::ep::CUDA::is_available()),
        ("tensorrt", ort::ep::TensorRT::is_available()),
    ] {
        if available.unwrap_or(false) {
            names.push(name.to_string());
        }
    }
    names
}

/// Open the library (once per process) and return its path and version. `explicit` is
/// `--onnxruntime-lib`; without it the usual places are tried in order.
pub fn load_library(explicit: Option<&Path>) -> Result<(PathBuf, String), String> {
    if let Some((path, version)) = LOADED.get() {
        if explicit.is_some_and(|e| e != path) {
            tracing::warn!(
                "onnxruntime is already loaded from {}; {} is not loaded as well",
                path.display(),
                explicit.unwrap_or(path).display()
            );
        }
        return Ok((path.clone(), version.clone()));
    }
    let candidates = candidates(explicit);
    let mut tried = Vec::new();
    for (path, from) in &candidates {
        if !path.exists() {
            tried.push(format!("{} ({from}: no such file)", path.display()));
            if explicit.is_some() {
                break;
            }
            continue;
        }
        match ort::init_from(path) {
            Ok(_) => {
                let version = library_version(path).unwrap_or_else(|| "(version unknown)".into());
                let loaded = LOADED.get_or_init(|| (path.clone(), version));
                return Ok(loaded.clone());
            }
            Err(e) => {
                tried.push(format!("{} ({from}: {e})", path.display()));
                if explicit.is_some() {
                    break;
                }
            }
        }
    }
    Err(format!(
        "no usable onnxruntime library (onnxruntime ≥ 1.{} is needed); looked at: {}. Pass --onnxruntime-lib PATH or set ORT_DYLIB_PATH, put libonnxruntime.so beside the binary, or use --engine tract",
        ort::MINOR_VERSION,
        if tried.is_empty() {
            "nothing (no candidate)".to_string()
        } else {
            tried.join("; ")
        }
    ))
}

/// The version the library reports (`OrtGetApiBase()->GetVersionString()`).
fn library_version(path: &Path) -> Option<String> {
    type ApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: the library is already open (ort opened it; this adds a reference) and
    // exports OrtGetApiBase, whose GetVersionString returns a static C string.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<ApiBase> = lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let version = ((*base).GetVersionString)();
        if version.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(version)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Where the library may be, with how each place was found.
fn candidates(explicit: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    if let Some(path) = explicit {
        return vec![(path.to_owned(), "--onnxruntime-lib")];
    }
    let mut out = Vec::new();
    if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        out.push((PathBuf::from(path), "ORT_DYLIB_PATH"));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        let beside = versioned_in(&dir);
        if beside.is_empty() {
            out.push((dir.join(LIBRARY_NAMES[0]), "beside the binary"));
        }
        out.extend(beside.into_iter().map(|p| (p, "beside the binary")));
    }
    let cache = std::env::var_os("SEGCAM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/segcam")));
    if let Some(venv) = cache.map(|c| c.join("venv")) {
        let wheels: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("site-packages/onnxruntime/capi"))
            .flat_map(|dir| versioned_in(&dir))
            .collect();
        if wheels.is_empty() {
            out.push((
                venv.join("lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*"),
                "the segcam venv",
            ));
        }
        out.extend(wheels.into_iter().map(|p| (p, "the segcam venv")));
    }
    out
}

/// `libonnxruntime.so` and `libonnxruntime.so.1.N.M` in `dir`, the plain name first.
fn versioned_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| LIBRARY_NAMES.iter().any(|l| n.starts_with(l)))
        })
        .collect();
    found.sort_by_key(|p| p.as_os_str().len());
    found
}
