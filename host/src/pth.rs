//! Reader for state dicts written by Python's `torch.save` (the zip format of torch >= 1.6),
//! without libtorch.
//!
//! tch's `Tensor::load_multi` only reads TorchScript archives, but torchvision publishes its
//! weights (e.g. `resnet18-f37072fd.pth`) as pickled state dicts. Such a file is a zip archive
//! holding `<prefix>/data.pkl` (a pickle of the dict, in which every tensor refers to a storage
//! by key), one `<prefix>/data/<key>` entry of raw bytes per storage, and `<prefix>/byteorder`
//! in newer files. This module runs a small pickle VM over `data.pkl` that understands only
//! what state dicts need, then cuts each tensor's bytes out of its storage.
//!
//! Nothing in the pickle is executed: globals are names, matched against a short list.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Element type of a tensor, as torch names it in its storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// The storage type in a persistent id: torch.save writes a legacy class such as
    /// `torch FloatStorage`; an untyped storage is raw bytes, which torch.load reads as uint8.
    /// A plain dtype global (`torch float32`) is accepted too.
    fn from_storage_global(module: &str, name: &str) -> Option<DType> {
        if !module.starts_with("torch") {
            return None;
        }
        Some(match name {
            "DoubleStorage" | "float64" | "double" => DType::F64,
            "FloatStorage" | "float32" | "float" => DType::F32,
            "HalfStorage" | "float16" | "half" => DType::F16,
            "BFloat16Storage" | "bfloat16" => DType::BF16,
            "LongStorage" | "int64" | "long" => DType::I64,
            "IntStorage" | "int32" | "int" => DType::I32,
            "ShortStorage" | "int16" | "short" => DType::I16,
            "CharStorage" | "int8" => DType::I8,
            "ByteStorage" | "UntypedStorage" | "uint8" => DType::U8,
            "BoolStorage" | "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // torch's names, so messages read like the Python side.
        f.write_str(match self {
            DType::F64 => "float64",
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        })
    }
}

/// One tensor of a state dict.
#[derive(Debug, Clone, PartialEq)]
pub struct PthTensor {
    /// Key in the state dict; keys of nested dicts are joined with `.`.
    pub name: String,
    pub dtype: DType,
    /// Empty for a scalar (0-d) tensor.
    pub shape: Vec<usize>,
    /// Little-endian elements, contiguous in row-major order.
    pub data: Vec<u8>,
}

impl PthTensor {
    /// Number of elements (1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as f32, for floating-point dtypes; `None` for integer and bool tensors.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        let d = &self.data;
        Some(match self.dtype {
            DType::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F64 => d
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunk of 8")) as f32)
                .collect(),
            DType::F16 => d
                .chunks_exact(2)
                .map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
            // bfloat16 is the top half of an f32.
            DType::BF16 => d
                .chunks_exact(2)
                .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                .collect(),
            _ => return None,
        })
    }
}

/// IEEE binary16 to f32; exact, since every half value is an f32 value.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    match exp {
        // Zero and subnormals: mant * 2^-24.
        0 => {
            let v = mant as f32 * f32::powi(2.0, -24);
            if sign != 0 {
                -v
            } else {
                v
            }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (mant << 13)),
        // Rebias the exponent from 15 to 127.
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (mant << 13)),
    }
}

/// Why a `.pth` file could not be read; every message starts with the file's path.
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("{}: cannot read file: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    #[error(
        "{}: not a zip archive (torch.save's zip format expected), found leading bytes {found}",
        path.display()
    )]
    NotZip { path: PathBuf, found: String },
    #[error(
        "{}: legacy torch.save format (torch < 1.6, not a zip archive) is not supported; \
         re-save it with a newer torch",
        path.display()
    )]
    LegacyFormat { path: PathBuf },
    #[error("{}: damaged zip archive (truncated or corrupt?): {err}", path.display())]
    BadZip {
        path: PathBuf,
        err: zip::result::ZipError,
    },
    #[error("{}: zip entry `{entry}`: {err}", path.display())]
    Entry {
        path: PathBuf,
        entry: String,
        err: std::io::Error,
    },
    /// The archive's entries are not those of a torch.save file.
    #[error("{}: {what}", path.display())]
    Layout { path: PathBuf, what: String },
    #[error(
        "{}: data.pkl: unsupported pickle opcode 0x{opcode:02x} at offset {offset}",
        path.display()
    )]
    UnsupportedOpcode {
        path: PathBuf,
        opcode: u8,
        offset: usize,
    },
    #[error("{}: data.pkl: {what} (opcode at offset {offset})", path.display())]
    Pickle {
        path: PathBuf,
        offset: usize,
        what: String,
    },
    /// The pickle ran, but its result is not a dict of tensors.
    #[error("{}: {what}", path.display())]
    Content { path: PathBuf, what: String },
    #[error("{}: tensor `{name}`: {what}", path.display())]
    Tensor {
        path: PathBuf,
        name: String,
        what: String,
    },
}

/// Read every tensor of a state dict saved with `torch.save`, in the dict's order.
///
/// Values that are not tensors (e.g. an `epoch` int beside the weights) are skipped, and
/// nested dicts are flattened with `.`-joined keys. Errors name the file and what was wrong.
pub fn read_pth(path: &Path) -> Result<Vec<PthTensor>, PthError> {
    let file = File::open(path).map_err(|err| PthError::Io {
        path: path.to_owned(),
        err,
    })?;
    let mut archive = match zip::ZipArchive::new(BufReader::new(file)) {
        Ok(a) => a,
        Err(err) => return Err(classify_non_zip(path, err)),
    };

    let names: Vec<String> = archive
        .file_names_raw()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let prefix = archive_prefix(path, &names)?;

    let pickle =
        read_entry(&mut archive, path, &format!("{prefix}/data.pkl"))?.expect("data.pkl is listed");
    let big_endian = match read_entry(&mut archive, path, &format!("{prefix}/byteorder"))? {
        // Files from before torch 1.12 have no byteorder entry and are little-endian.
        None => false,
        Some(b) => match b.trim_ascii() {
            b"little" => false,
            b"big" => true,
            other => {
                return Err(PthError::Layout {
                    path: path.to_owned(),
                    what: format!(
                        "byteorder entry holds {:?}, expected \"little\" or \"big\"",
                        String::from_utf8_lossy(other)
                    ),
                })
            }
        },
    };

    let root = Unpickler::new(path, &pickle).run()?;
    let mut found = Vec::new();
    match &root {
        Value::Dict(_) => collect_tensors(path, &root, "", &mut found)?,
        other => {
            return Err(PthError::Content {
                path: path.to_owned(),
                what: format!(
                    "data.pkl holds {}, expected a dict of tensors (a state dict)",
                    other.kind()
                ),
            })
        }
    }

    // Views share storages (e.g. a weight and its transpose): read each entry once.
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(found.len());
    for (name, t) in found {
        let terr = |what: String| PthError::Tensor {
            path: path.to_owned(),
            name: name.clone(),
            what,
        };
        let entry = format!("{prefix}/data/{}", t.storage.key);
        if !storages.contains_key(&entry) {
            let bytes = read_entry(&mut archive, path, &entry)?.ok_or_else(|| {
                terr(format!(
                    "storage entry `{entry}` is missing from the archive"
                ))
            })?;
            storages.insert(entry.clone(), bytes);
        }
        let bytes = &storages[&entry];
        let data = t
            .gather(bytes, big_endian)
            .map_err(|what| terr(format!("storage `{entry}`: {what}")))?;
        tensors.push(PthTensor {
            name,
            dtype: t.storage.dtype,
            shape: t.shape.clone(),
            data,
        });
    }
    Ok(tensors)
}

/// Turn zip's refusal into a message that says what the file looks like instead.
fn classify_non_zip(path: &Path, err: zip::result::ZipError) -> PthError {
    let mut head = Vec::with_capacity(8);
    if let Ok(f) = File::open(path) {
        let _ = f.take(8).read_to_end(&mut head);
    }
    if head.starts_with(b"PK") {
        return PthError::BadZip {
            path: path.to_owned(),
            err,
        };
    }
    // Pre-1.6 torch.save starts with PROTO 2 and LONG1 of a 10-byte magic number.
    if head.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        return PthError::LegacyFormat {
            path: path.to_owned(),
        };
    }
    let found = if head.is_empty() {
        "none (empty file)".to_owned()
    } else {
        head.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    PthError::NotZip {
        path: path.to_owned(),
        found,
    }
}

/// The directory that holds `data.pkl`; torch names it after the file it saved to.
fn archive_prefix(path: &Path, names: &[String]) -> Result<String, PthError> {
    let layout = |what: String| PthError::Layout {
        path: path.to_owned(),
        what,
    };
    let prefixes: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_suffix("/data.pkl"))
        .filter(|p| !p.is_empty() && !p.contains('/'))
        .collect();
    match prefixes.as_slice() {
        [p] => {
            // TorchScript archives also hold data.pkl, but pickle `__torch__` modules.
            let code = format!("{p}/code/");
            if names.iter().any(|n| n.starts_with(&code)) {
                return Err(layout(
                    "a TorchScript archive (torch.jit.save), not a torch.save state dict".into(),
                ));
            }
            Ok((*p).to_owned())
        }
        [] => {
            let mut listed: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
            if names.len() > 5 {
                listed.push("…");
            }
            Err(layout(format!(
                "zip archive without a `<prefix>/data.pkl` entry, so not from torch.save \
                 (found entries: {})",
                listed.join(", ")
            )))
        }
        many => Err(layout(format!(
            "expected one `<prefix>/data.pkl` entry, found {}: {}",
            many.len(),
            many.join(", ")
        ))),
    }
}

/// The bytes of one entry, or `None` if the archive has no such entry.
fn read_entry<R: std::io::Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    path: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, PthError> {
    let entry_err = |err: std::io::Error| PthError::Entry {
        path: path.to_owned(),
        entry: name.to_owned(),
        err,
    };
    let mut file = match archive.by_name(name) {
        Ok(f) => f,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(entry_err(e.into())),
    };
    let mut bytes = Vec::new();
    // The zip reader checks the CRC at the end, which catches damaged data.
    file.read_to_end(&mut bytes).map_err(entry_err)?;
    Ok(Some(bytes))
}

/// Walk dicts depth-first, in order, collecting tensors under dotted names.
fn collect_tensors(
    path: &Path,
    value: &Value,
    prefix: &str,
    out: &mut Vec<(String, Rc<TensorRef>)>,
) -> Result<(), PthError> {
    let Value::Dict(items) = value else {
        return Ok(());
    };
    for (k, v) in items.borrow().iter() {
        let key = match k {
            Value::Str(s) => s.clone(),
            // Optimizer states use integer keys.
            Value::Int(i) => i.to_string(),
            other => {
                return Err(PthError::Content {
                    path: path.to_owned(),
                    what: format!("dict key is {}, expected a string", other.kind()),
                })
            }
        };
        let name = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            Value::Tensor(t) => out.push((name, t.clone())),
            Value::Dict(_) => collect_tensors(path, v, &name, out)?,
            _ => {}
        }
    }
    Ok(())
}

/// A storage named by a persistent id: `('storage', type, key, location, numel)`.
#[derive(Debug)]
struct StorageRef {
    key: String,
    dtype: DType,
    /// In elements of `dtype`.
    numel: usize,
}

/// A view into a storage, from `_rebuild_tensor_v2`; strides and offset are in elements.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorRef {
    /// Copy the view's elements out of the storage's bytes, row-major and little-endian.
    fn gather(&self, bytes: &[u8], big_endian: bool) -> Result<Vec<u8>, String> {
        let dtype = self.storage.dtype;
        let es = dtype.size();
        let expected = self.storage.numel.checked_mul(es).ok_or("size overflows")?;
        if bytes.len() != expected {
            return Err(format!(
                "holds {} bytes, expected {} {dtype} elements ({expected} bytes)",
                bytes.len(),
                self.storage.numel
            ));
        }
        let numel = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or("size overflows")?;
        if numel == 0 {
            return Ok(Vec::new());
        }
        // Index of the view's last element; every other one lies below it.
        let last = self
            .shape
            .iter()
            .zip(&self.stride)
            .try_fold(self.offset, |a, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|x| x.checked_add(a))
            })
            .ok_or("view offset overflows")?;
        if last >= self.storage.numel {
            return Err(format!(
                "view (offset {}, shape {:?}, stride {:?}) reaches element {last}, \
                 but the storage has {}",
                self.offset, self.shape, self.stride, self.storage.numel
            ));
        }

        let mut out = if is_contiguous(&self.shape, &self.stride) {
            bytes[self.offset * es..(self.offset + numel) * es].to_vec()
        } else {
            // Odometer over the index, last dimension fastest, tracking the source element.
            let mut out = Vec::with_capacity(numel * es);
            let mut idx = vec![0usize; self.shape.len()];
            let mut src = self.offset;
            for _ in 0..numel {
                out.extend_from_slice(&bytes[src * es..(src + 1) * es]);
                for d in (0..self.shape.len()).rev() {
                    idx[d] += 1;
                    src += self.stride[d];
                    if idx[d] < self.shape[d] {
                        break;
                    }
                    src -= self.stride[d] * self.shape[d];
                    idx[d] = 0;
                }
            }
            out
        };
        if big_endian && es > 1 {
            out.chunks_exact_mut(es).for_each(<[u8]>::reverse);
        }
        Ok(out)
    }
}

/// Row-major contiguous; strides of size-1 dimensions do not matter.
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected *= d;
    }
    true
}

/// A pickled value, as far as state dicts need. Lists and dicts are shared, because the
/// memo hands out references that later opcodes may still fill.
#[derive(Debug, Clone)]
enum Value {
    None,
    // Values no state dict reading depends on are kept only as their kind.
    Bool,
    Int(i64),
    Float,
    Str(String),
    Bytes,
    Tuple(Vec<Value>),
    List(Rc<RefCell<Vec<Value>>>),
    /// Insertion-ordered, like the OrderedDict a state dict is.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<(String, String)>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    /// The result of calling a global we don't interpret (e.g. in training metadata), kept
    /// only by name: nothing is executed.
    Object(Rc<str>),
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool => "a bool".into(),
            Value::Int(_) => "an int".into(),
            Value::Float => "a float".into(),
            Value::Str(_) => "a str".into(),
            Value::Bytes => "bytes".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(g) => format!("the global {}.{}", g.0, g.1),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
            Value::Object(c) => format!("a {c} object"),
        }
    }

    fn new_dict() -> Value {
        Value::Dict(Rc::new(RefCell::new(Vec::new())))
    }
}

/// The pickle VM: a stack, a stack of MARK positions, and the memo.
struct Unpickler<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run, for messages.
    op_at: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Unpickler<'a> {
    fn new(path: &'a Path, data: &'a [u8]) -> Self {
        Unpickler {
            path,
            data,
            pos: 0,
            op_at: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
        }
    }

    fn err(&self, what: impl Into<String>) -> PthError {
        PthError::Pickle {
            path: self.path.to_owned(),
            offset: self.op_at,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PthError> {
        let left = self.data.len() - self.pos;
        if n > left {
            return Err(self.err(format!(
                "truncated: opcode needs {n} more bytes, {left} left"
            )));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, PthError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, PthError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, PthError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PthError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A length prefix, checked against what is left so a bad one cannot allocate wildly.
    fn len_bytes(&mut self, len: u64) -> Result<&'a [u8], PthError> {
        let len = usize::try_from(len).map_err(|_| self.err("length overflows"))?;
        self.take(len)
    }

    fn utf8(&self, b: &[u8]) -> Result<String, PthError> {
        String::from_utf8(b.to_vec()).map_err(|_| self.err("string is not valid UTF-8"))
    }

    fn line(&mut self) -> Result<String, PthError> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("truncated: GLOBAL name without newline"))?;
        let s = self.utf8(&rest[..n])?;
        self.pos += n + 1;
        Ok(s)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    /// Pop, but never below the innermost MARK (as CPython's unpickler checks).
    fn pop(&mut self) -> Result<Value, PthError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&self) -> Result<&Value, PthError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err(self.err("stack underflow"));
        }
        Ok(self.stack.last().expect("checked"))
    }

    /// Everything pushed since the innermost MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>, PthError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(m))
    }

    fn memo_put(&mut self, idx: u32) -> Result<(), PthError> {
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<(), PthError> {
        let v = self
            .memo
            .get(&idx)
            .cloned()
            .ok_or_else(|| self.err(format!("memo key {idx} was never stored")))?;
        self.push(v);
        Ok(())
    }

    /// Little-endian two's complement, as LONG1/LONG4 store it.
    fn long(&self, b: &[u8]) -> Result<Value, PthError> {
        if b.is_empty() {
            return Ok(Value::Int(0));
        }
        if b.len() > 8 {
            return Err(self.err(format!("{}-byte integer does not fit in i64", b.len())));
        }
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut buf = [fill; 8];
        buf[..b.len()].copy_from_slice(b);
        Ok(Value::Int(i64::from_le_bytes(buf)))
    }

    fn setitems(&self, target: &Value, kv: Vec<Value>) -> Result<(), PthError> {
        let Value::Dict(d) = target else {
            return Err(self.err(format!("SETITEM(S) on {}, expected a dict", target.kind())));
        };
        if !kv.len().is_multiple_of(2) {
            return Err(self.err("SETITEMS with an odd number of items"));
        }
        let mut d = d.borrow_mut();
        let mut it = kv.into_iter();
        // The pickler walks a real dict, so keys never repeat; no need to look them up.
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn appends(&self, target: &Value, items: Vec<Value>) -> Result<(), PthError> {
        let Value::List(l) = target else {
            return Err(self.err(format!("APPEND(S) on {}, expected a list", target.kind())));
        };
        l.borrow_mut().extend(items);
        Ok(())
    }

    fn run(mut self) -> Result<Value, PthError> {
        loop {
            self.op_at = self.pos;
            if self.pos >= self.data.len() {
                return Err(self.err("data ended without a STOP opcode"));
            }
            let op = self.byte()?;
            match op {
                // PROTO: any protocol up to 5 uses only opcodes handled here or refused below.
                0x80 => {
                    let v = self.byte()?;
                    if v > 5 {
                        return Err(self.err(format!("pickle protocol {v}, expected 2 to 5")));
                    }
                }
                // FRAME (protocol 4): just a length hint.
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 | 0x89 => self.push(Value::Bool),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()));
                }
                0x8a => {
                    let n = self.byte()?;
                    let b = self.take(n.into())?;
                    let v = self.long(b)?;
                    self.push(v);
                }
                0x8b => {
                    let n = self.u32()?;
                    let b = self.len_bytes(n.into())?;
                    let v = self.long(b)?;
                    self.push(v);
                }
                // BINFLOAT: 8 bytes, not needed for tensors.
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Float);
                }
                // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8.
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()?.into(),
                        0x8c => self.byte()?.into(),
                        _ => self.u64()?,
                    };
                    let b = self.len_bytes(n)?;
                    let s = self.utf8(b)?;
                    self.push(Value::Str(s));
                }
                // BINSTRING, SHORT_BINSTRING: Python 2 str; torch.load decodes them as text.
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        self.u32()?.into()
                    } else {
                        self.byte()?.into()
                    };
                    let b = self.len_bytes(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(b).into_owned()));
                }
                // BINBYTES, SHORT_BINBYTES.
                b'B' | b'C' => {
                    let n = if op == b'B' {
                        self.u32()?.into()
                    } else {
                        self.byte()?.into()
                    };
                    self.len_bytes(n)?;
                    self.push(Value::Bytes);
                }
                b')' => self.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let floor = self.marks.last().copied().unwrap_or(0);
                    if self.stack.len() < floor + n {
                        return Err(self.err("stack underflow"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items));
                }
                b']' => self.push(Value::List(Rc::new(RefCell::new(Vec::new())))),
                b'}' => self.push(Value::new_dict()),
                b'a' => {
                    let v = self.pop()?;
                    let target = self.top()?;
                    self.appends(target, vec![v])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let target = self.top()?;
                    self.appends(target, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let target = self.top()?;
                    self.setitems(target, vec![k, v])?;
                }
                b'u' => {
                    let kv = self.pop_mark()?;
                    let target = self.top()?;
                    self.setitems(target, kv)?;
                }
                b'q' => {
                    let i = self.byte()?;
                    self.memo_put(i.into())?;
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?;
                }
                // MEMOIZE (protocol 4): the next free index.
                0x94 => {
                    let i = u32::try_from(self.memo.len()).map_err(|_| self.err("memo full"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.byte()?;
                    self.memo_get(i.into())?;
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(Rc::new((module, name))));
                }
                // STACK_GLOBAL (protocol 4).
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(self.err("STACK_GLOBAL needs two strings"));
                    };
                    self.push(Value::Global(Rc::new((module, name))));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v);
                }
                // REDUCE and NEWOBJ: call(args); we only interpret the callables we know.
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let Value::Tuple(args) = args else {
                        return Err(self.err(format!("call arguments are {}", args.kind())));
                    };
                    let v = self.call(func, args)?;
                    self.push(v);
                }
                // BUILD sets an object's state, e.g. the `_metadata` attribute of a
                // module's state dict; tensors don't depend on it, so drop it.
                b'b' => {
                    self.pop()?;
                    self.top()?;
                }
                _ => {
                    return Err(PthError::UnsupportedOpcode {
                        path: self.path.to_owned(),
                        opcode: op,
                        offset: self.op_at,
                    })
                }
            }
        }
    }

    /// `('storage', storage_type, key, location, numel)`, as torch.save's persistent_id writes.
    fn persistent_load(&self, pid: Value) -> Result<Value, PthError> {
        let bad = |what: &str| self.err(format!("persistent id {what}"));
        let Value::Tuple(t) = pid else {
            return Err(bad(&format!("is {}, expected a tuple", pid.kind())));
        };
        let [Value::Str(tag), ty, key, _location, Value::Int(numel)] = t.as_slice() else {
            return Err(bad(
                "is not ('storage', storage_type, key, location, numel)",
            ));
        };
        if tag != "storage" {
            return Err(bad(&format!("tagged {tag:?}, expected \"storage\"")));
        }
        let dtype = match ty {
            Value::Global(g) => DType::from_storage_global(&g.0, &g.1)
                .ok_or_else(|| bad(&format!("has unsupported storage type {}.{}", g.0, g.1)))?,
            other => return Err(bad(&format!("has {} as storage type", other.kind()))),
        };
        let key = match key {
            Value::Str(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            other => return Err(bad(&format!("has {} as key", other.kind()))),
        };
        // Keys become entry names; refuse anything that could leave `data/`.
        if key.is_empty() || key.contains(['/', '\\']) || key == ".." {
            return Err(bad(&format!("has bad key {key:?}")));
        }
        let numel = usize::try_from(*numel).map_err(|_| bad("has a negative size"))?;
        Ok(Value::Storage(Rc::new(StorageRef { key, dtype, numel })))
    }

    fn call(&self, func: Value, args: Vec<Value>) -> Result<Value, PthError> {
        let Value::Global(g) = func else {
            return Err(self.err(format!("cannot call {}", func.kind())));
        };
        match (g.0.as_str(), g.1.as_str()) {
            ("collections", "OrderedDict") | ("builtins", "dict") if args.is_empty() => {
                Ok(Value::new_dict())
            }
            ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") => {
                self.rebuild_tensor(&args)
            }
            // nn.Parameter (state_dict(keep_vars=True)): the data is the tensor we want.
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                match args.first() {
                    Some(t @ Value::Tensor(_)) => Ok(t.clone()),
                    _ => Err(self.err(format!("{}.{} without a tensor", g.0, g.1))),
                }
            }
            // A tensor subclass: (func, type, args, state); keep the plain tensor.
            ("torch._tensor", "_rebuild_from_type_v2") => match args.as_slice() {
                [f, _, Value::Tuple(inner), _] => self.call(f.clone(), inner.clone()),
                _ => Err(self.err("_rebuild_from_type_v2 expects (func, type, args, state)")),
            },
            (m, n) if m.starts_with("torch") && n.starts_with("_rebuild") => Err(self.err(
                format!("unsupported tensor kind {m}.{n} (only dense tensors are read)"),
            )),
            (m, n) => Ok(Value::Object(format!("{m}.{n}").into())),
        }
    }

    /// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
    /// backward_hooks[, metadata])`; only the first four matter for the data.
    fn rebuild_tensor(&self, args: &[Value]) -> Result<Value, PthError> {
        let [Value::Storage(storage), offset, size, stride, ..] = args else {
            return Err(
                self.err("_rebuild_tensor_v2 expects (storage, storage_offset, size, stride, ...)")
            );
        };
        let usizes = |v: &Value, what: &str| -> Result<Vec<usize>, PthError> {
            let Value::Tuple(items) = v else {
                return Err(self.err(format!("tensor {what} is {}, expected a tuple", v.kind())));
            };
            items
                .iter()
                .map(|i| match i {
                    Value::Int(i) => usize::try_from(*i).ok(),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.err(format!("tensor {what} holds a non-natural number")))
        };
        let offset = match offset {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
        .ok_or_else(|| self.err("tensor storage offset is not a natural number"))?;
        let shape = usizes(size, "size")?;
        let stride = usizes(stride, "stride")?;
        if shape.len() != stride.len() {
            return Err(self.err(format!(
                "tensor has {} sizes but {} strides",
                shape.len(),
                stride.len()
            )));
        }
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: storage.clone(),
            offset,
            shape,
            stride,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;

    /// Made by `testdata/make_tiny_state_dict.py` with torch 2.13.0.
    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tiny_state_dict.pth");

    fn fixture() -> Vec<PthTensor> {
        read_pth(Path::new(FIXTURE)).expect("fixture reads")
    }

    fn get<'a>(ts: &'a [PthTensor], name: &str) -> &'a PthTensor {
        ts.iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    fn f32s(ts: &[PthTensor], name: &str) -> Vec<f32> {
        get(ts, name).to_f32().expect("floating point")
    }

    /// The fixture's entries, to rebuild variants of it.
    fn fixture_entries() -> Vec<(String, Vec<u8>)> {
        let mut a = zip::ZipArchive::new(File::open(FIXTURE).unwrap()).unwrap();
        (0..a.len())
            .map(|i| {
                let mut f = a.by_index(i).unwrap();
                let mut b = Vec::new();
                f.read_to_end(&mut b).unwrap();
                (f.name().unwrap().into_owned(), b)
            })
            .collect()
    }

    fn write_zip(entries: &[(String, Vec<u8>)]) -> tempfile::NamedTempFile {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let mut w = zip::ZipWriter::new(tmp.as_file_mut());
        let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
        tmp
    }

    /// A one-entry archive `x/data.pkl` holding `pickle`.
    fn pickle_zip(pickle: &[u8]) -> tempfile::NamedTempFile {
        write_zip(&[("x/data.pkl".to_owned(), pickle.to_vec())])
    }

    fn write_file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        tmp
    }

    fn err_of(path: &Path) -> String {
        let e = read_pth(path).expect_err("should fail");
        let msg = e.to_string();
        assert!(
            msg.starts_with(&path.display().to_string()),
            "message does not name the file: {msg}"
        );
        msg
    }

    #[test]
    fn reads_names_dtypes_and_shapes_in_dict_order() {
        let ts = fixture();
        let got: Vec<(&str, DType, &[usize])> = ts
            .iter()
            .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice()))
            .collect();
        let want: Vec<(&str, DType, &[usize])> = vec![
            ("conv.weight", DType::F32, &[2, 3, 3, 3]),
            ("conv.bias", DType::F32, &[2]),
            ("bn.num_batches_tracked", DType::I64, &[]),
            ("a", DType::F32, &[2, 3]),
            ("b", DType::F32, &[3, 2]),
            ("c", DType::F32, &[4]),
            ("half", DType::F16, &[6]),
            ("bf16", DType::BF16, &[3]),
            ("f64", DType::F64, &[2]),
            ("i32", DType::I32, &[1, 2]),
            ("u8", DType::U8, &[3]),
            ("empty", DType::F32, &[0, 3]),
            ("param", DType::F32, &[2]),
        ];
        assert_eq!(got, want);
        for t in &ts {
            assert_eq!(t.data.len(), t.numel() * t.dtype.size(), "{}", t.name);
        }
    }

    #[test]
    fn float_values_match_python() {
        let ts = fixture();
        let want: Vec<f32> = (0..54).map(|i| i as f32 / 8.0).collect();
        assert_eq!(f32s(&ts, "conv.weight"), want);
        assert_eq!(f32s(&ts, "conv.bias"), [-1.5, 2.25]);
        assert_eq!(f32s(&ts, "param"), [3.5, -0.25]);
        assert_eq!(f32s(&ts, "empty"), Vec::<f32>::new());
    }

    #[test]
    fn int_scalar_keeps_its_bytes_and_has_no_f32_view() {
        let ts = fixture();
        let n = get(&ts, "bn.num_batches_tracked");
        assert_eq!(n.numel(), 1);
        assert_eq!(n.data, 7i64.to_le_bytes());
        assert_eq!(n.to_f32(), None);
        let i = get(&ts, "i32");
        let mut want = (-7i32).to_le_bytes().to_vec();
        want.extend(i32::MAX.to_le_bytes());
        assert_eq!(i.data, want);
        assert_eq!(get(&ts, "u8").data, [0, 200, 255]);
    }

    #[test]
    fn views_of_a_shared_storage_are_gathered() {
        let ts = fixture();
        assert_eq!(f32s(&ts, "a"), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        // base.t(): strides (1, 3) over the same six floats.
        assert_eq!(f32s(&ts, "b"), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // arange(10) * 0.5, elements 3..7: storage offset 3.
        assert_eq!(f32s(&ts, "c"), [1.5, 2.0, 2.5, 3.0]);
    }

    #[test]
    fn half_bf16_and_f64_convert_exactly() {
        let ts = fixture();
        let half = f32s(&ts, "half");
        assert_eq!(
            half,
            [
                1.0,
                -2.5,
                0.333_251_95,
                65504.0,
                f32::powi(2.0, -24),
                f32::NEG_INFINITY
            ]
        );
        assert_eq!(f32s(&ts, "bf16"), [1.0, -3.0, 0.100_097_656]);
        let f64s = get(&ts, "f64");
        assert_eq!(f64s.data[..8], 0.1f64.to_le_bytes());
        assert_eq!(f32s(&ts, "f64"), [0.1, -2.0]);
    }

    #[test]
    fn f16_conversion_covers_special_values() {
        assert_eq!(f16_to_f32(0x0000).to_bits(), 0.0f32.to_bits());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * f32::powi(2.0, -24));
        assert_eq!(f16_to_f32(0x0400), f32::powi(2.0, -14));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn errors_work_with_anyhow() {
        fn send_sync_static<T: Send + Sync + 'static>() {}
        send_sync_static::<PthError>();
    }

    #[test]
    fn missing_file_is_named() {
        let msg = err_of(Path::new("/nonexistent/x.pth"));
        assert!(msg.contains("cannot read file"), "{msg}");
    }

    #[test]
    fn non_zip_file_is_named_with_what_was_expected() {
        let tmp = write_file(b"hello, not a checkpoint");
        let msg = err_of(tmp.path());
        assert!(
            msg.contains("not a zip archive (torch.save's zip format expected)"),
            "{msg}"
        );
        assert!(msg.contains("68 65 6c 6c"), "shows the bytes found: {msg}");
        let empty = write_file(b"");
        assert!(err_of(empty.path()).contains("empty file"));
    }

    #[test]
    fn legacy_format_is_recognised() {
        let tmp = write_file(&[0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20]);
        assert!(err_of(tmp.path()).contains("legacy torch.save format"));
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let full = std::fs::read(FIXTURE).unwrap();
        for len in (0..full.len()).step_by(7).chain([full.len() - 1]) {
            let tmp = write_file(&full[..len]);
            let msg = err_of(tmp.path());
            if len >= 2 {
                assert!(msg.contains("damaged zip archive"), "len {len}: {msg}");
            }
        }
    }

    #[test]
    fn unsupported_opcode_reports_its_offset() {
        let tmp = pickle_zip(&[0x80, 0x02, 0xff, b'.']);
        let msg = err_of(tmp.path());
        assert!(
            msg.ends_with("data.pkl: unsupported pickle opcode 0xff at offset 2"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_pickle_and_non_dict_are_refused() {
        // BINUNICODE claiming 100 bytes.
        let tmp = pickle_zip(&[0x80, 0x02, b'X', 100, 0, 0, 0, b'a']);
        assert!(err_of(tmp.path()).contains("truncated: opcode needs 100 more bytes, 1 left"));
        let tmp = pickle_zip(&[0x80, 0x02, b'K', 5]);
        assert!(err_of(tmp.path()).contains("without a STOP"));
        let tmp = pickle_zip(&[0x80, 0x02, b'K', 5, b'.']);
        assert!(err_of(tmp.path()).contains("data.pkl holds an int, expected a dict"));
    }

    #[test]
    fn missing_or_short_storage_is_named() {
        let entries = fixture_entries();
        let without: Vec<_> = entries
            .iter()
            .filter(|(n, _)| n != "tiny_state_dict/data/3")
            .cloned()
            .collect();
        let tmp = write_zip(&without);
        let msg = err_of(tmp.path());
        assert!(
            msg.contains("tensor `a`: storage entry `tiny_state_dict/data/3` is missing"),
            "{msg}"
        );

        let short: Vec<_> = entries
            .iter()
            .map(|(n, b)| {
                let b = if n == "tiny_state_dict/data/0" {
                    b[..8].to_vec()
                } else {
                    b.clone()
                };
                (n.clone(), b)
            })
            .collect();
        let tmp = write_zip(&short);
        let msg = err_of(tmp.path());
        assert!(
            msg.contains("tensor `conv.weight`: storage `tiny_state_dict/data/0`: holds 8 bytes, expected 54 float32 elements (216 bytes)"),
            "{msg}"
        );
    }

    #[test]
    fn big_endian_storages_are_swapped() {
        let entries: Vec<_> = fixture_entries()
            .into_iter()
            .map(|(n, b)| {
                let b = if n.ends_with("/byteorder") {
                    b"big".to_vec()
                } else {
                    b
                };
                (n, b)
            })
            .collect();
        let tmp = write_zip(&entries);
        let big = read_pth(tmp.path()).unwrap();
        let little = fixture();
        assert_eq!(big.len(), little.len());
        for (b, l) in big.iter().zip(&little) {
            let mut swapped = l.data.clone();
            swapped
                .chunks_exact_mut(l.dtype.size())
                .for_each(<[u8]>::reverse);
            assert_eq!(b.data, swapped, "{}", l.name);
        }
    }

    #[test]
    fn torchscript_and_foreign_zips_are_refused() {
        let ts = write_zip(&[
            ("m/data.pkl".to_owned(), b"\x80\x02}.".to_vec()),
            ("m/code/__torch__.py".to_owned(), Vec::new()),
        ]);
        assert!(err_of(ts.path()).contains("TorchScript archive"));
        let other = write_zip(&[("readme.txt".to_owned(), b"hi".to_vec())]);
        let msg = err_of(other.path());
        assert!(msg.contains("without a `<prefix>/data.pkl` entry"), "{msg}");
        assert!(msg.contains("readme.txt"), "{msg}");
    }

    #[test]
    fn non_contiguous_gather_handles_three_dims() {
        // A permuted 2x3x4 arange: shape (4, 2, 3), strides (1, 12, 4).
        let bytes: Vec<u8> = (0u8..24).collect();
        let t = TensorRef {
            storage: Rc::new(StorageRef {
                key: "0".into(),
                dtype: DType::U8,
                numel: 24,
            }),
            offset: 0,
            shape: vec![4, 2, 3],
            stride: vec![1, 12, 4],
        };
        let got = t.gather(&bytes, false).unwrap();
        let mut want = Vec::new();
        for k in 0..4u8 {
            for i in 0..2u8 {
                for j in 0..3u8 {
                    want.push(i * 12 + j * 4 + k);
                }
            }
        }
        assert_eq!(got, want);
        let oob = TensorRef { offset: 1, ..t };
        assert!(oob
            .gather(&bytes, false)
            .unwrap_err()
            .contains("reaches element 24"));
    }
}
