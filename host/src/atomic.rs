//! The one way seg-host writes a file: under a unique temporary name beside it, flushed
//! to disk and only then renamed over the destination. A failure, or a [`Pending`]
//! dropped before [`Pending::persist`], removes the temporary file, so a kill or a
//! full disk leaves neither a partial file under the real name nor litter beside it:
//! Ctrl-C and SIGTERM remove the unfinished files ([`remove_pending_on_signal`]), and
//! what a harder kill leaves is swept by a later run ([`remove_stale`]).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// A file being written under a temporary name beside its destination.
pub struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    persisted: bool,
}

impl Pending {
    /// A hidden temporary name in `dest`'s folder, unique to this process and call (so
    /// threads writing the same destination never share one). The folder must exist.
    pub fn beside(dest: &Path) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let Some(name) = dest.file_name() else {
            bail!("{}: not a file name", dest.display());
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = format!(".{}.{}-{n}.tmp", name.to_string_lossy(), std::process::id());
        let tmp = dest.with_file_name(tmp);
        UNFINISHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tmp.clone());
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            persisted: false,
        })
    }

    /// Where to write (for writers that take a path, such as tch's).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Make `bytes` the temporary file's content (it may be rewritten before persisting).
    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        std::fs::write(&self.tmp, bytes)
            .with_context(|| format!("{}: cannot write", self.dest.display()))
    }

    /// Flush the temporary file to disk and rename it to its destination.
    pub fn persist(mut self) -> Result<()> {
        File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("{}: cannot flush to disk", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!(
                "{}: cannot move the finished file into place from {}",
                self.dest.display(),
                self.tmp.display()
            )
        })?;
        self.persisted = true;
        // The rename itself reaches the disk with the folder's own sync (best effort).
        if let Some(dir) = self.dest.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.tmp);
        }
        let mut unfinished = UNFINISHED.lock().unwrap_or_else(|e| e.into_inner());
        unfinished.retain(|p| p != &self.tmp);
    }
}

/// The temporary files of every [`Pending`] alive in this process.
static UNFINISHED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// On Ctrl-C or SIGTERM, remove the unfinished files, then end by the signal: a
/// stopped export or training run leaves its earlier outputs and nothing else.
pub fn remove_pending_on_signal() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install the Ctrl-C handler")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let unfinished = UNFINISHED.lock().unwrap_or_else(|e| e.into_inner());
                for path in unfinished.iter() {
                    let _ = std::fs::remove_file(path);
                }
                let what = if signal == SIGINT {
                    "interrupted"
                } else {
                    "terminated"
                };
                eprintln!(
                    "seg-host: {what}; {} unfinished file(s) removed, finished ones untouched",
                    unfinished.len()
                );
                // End as the signal would have (a shell shows 130 for Ctrl-C): no
                // exit handlers, which would tear libtorch down under its own threads.
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::abort();
            }
        })
        .context("cannot start the Ctrl-C handler")?;
    Ok(())
}

/// Remove from `dir` the temporary files of [`Pending`]s whose process is gone (a run
/// killed mid-write): only names of this module's form whose process id does not
/// run, so a user's own `.tmp` files and another running seg-host's stay. The count.
pub fn remove_stale(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?
    {
        let path = entry?.path();
        let Some(pid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(pending_pid)
        else {
            continue;
        };
        // A process id this machine does not run may be another machine's or
        // container's (a shared folder): only files left alone a while are stale.
        let running = Path::new("/proc").join(pid.to_string()).exists();
        let idle = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age >= STALE_AFTER));
        if !running && idle && path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: cannot remove", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`remove_stale`] in the folder `dest` goes to; a failure there only warns.
pub fn remove_stale_beside(dest: &Path) {
    let dir = dest
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match remove_stale(dir) {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            "removed {n} unfinished file(s) a stopped run left in {}",
            dir.display()
        ),
        Err(e) => tracing::warn!("{e:#}"),
    }
}

/// How long a temporary file of a process this machine does not run must have been
/// left unchanged before [`remove_stale`] takes it for a stopped run's.
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// The process id in a [`Pending`]'s temporary name (`.NAME.PID-N.tmp`).
fn pending_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, ids) = inner.rsplit_once('.')?;
    let (pid, n) = ids.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Write `bytes` to `path` atomically.
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let pending = Pending::beside(path)?;
    pending.write(bytes)?;
    pending.persist()
}

/// Write `path` atomically through a buffered writer that `fill` writes into.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let pending = Pending::beside(path)?;
    let written = (|| -> Result<()> {
        let mut out = BufWriter::new(File::create(pending.path())?);
        fill(&mut out)?;
        out.flush()?;
        Ok(())
    })();
    written.with_context(|| format!("{}: cannot write", path.display()))?;
    pending.persist()
}

/// Serialise `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write(path, serde_json::to_string_pretty(value)?.as_bytes())
}

/// Refuse, before any work, an output file that cannot be written or would replace
/// one of the command's own `inputs` (the same file by device and inode, whatever
/// the path says): a folder, or `--out` naming the model or checkpoint read.
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(out) else {
        return Ok(()); // not there yet: nothing to replace
    };
    if meta.is_dir() {
        bail!("{}: is a folder; --out takes a file name", out.display());
    }
    for input in inputs {
        if std::fs::metadata(input).is_ok_and(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino())) {
            bail!(
                "{}: is this command's input {}; write the output to another file",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Create the folder `path` will be written to, naming it if that fails.
pub fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_pending_file_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.onnx");
        let p = Pending::beside(&out).unwrap();
        p.write(b"x").unwrap();
        assert!(p.path().exists() && p.path() != out);
        drop(p);
        assert!(names(dir.path()).is_empty());
        let p = Pending::beside(&out).unwrap();
        p.write(b"y").unwrap();
        p.persist().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"y");
        assert_eq!(names(dir.path()), ["m.onnx"]);
    }

    #[test]
    fn a_failed_fill_or_rename_leaves_the_old_file_and_no_litter() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txt");
        write(&path, b"old").unwrap();
        let err = write_with(&path, |w| {
            w.write_all(b"half")?;
            bail!("disk on fire")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("x.txt"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names(dir.path()), ["x.txt"]);
        // A folder where the file should go makes the rename fail.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        let err = write(&blocked, b"z").unwrap_err();
        assert!(format!("{err:#}").contains("blocked"), "{err:#}");
        assert_eq!(names(dir.path()), ["blocked", "x.txt"]);
        // A missing folder is an error, not created behind the caller's back.
        assert!(write(&dir.path().join("no/such.txt"), b"z").is_err());
        create_parent(&dir.path().join("no/such.txt")).unwrap();
        write(&dir.path().join("no/such.txt"), b"z").unwrap();
    }

    #[test]
    fn an_output_may_not_be_an_input_or_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("m.onnx");
        std::fs::write(&input, b"model").unwrap();
        let other = dir.path().join("other.onnx");
        std::fs::write(&other, b"old output").unwrap();
        check_output(&dir.path().join("new.onnx"), &[&input]).unwrap();
        check_output(&other, &[&input]).unwrap();
        let same = dir.path().join("./m.onnx");
        let err = check_output(&same, &[&input]).unwrap_err().to_string();
        assert!(err.contains("input"), "{err}");
        std::fs::hard_link(&input, dir.path().join("link.onnx")).unwrap();
        assert!(check_output(&dir.path().join("link.onnx"), &[&input]).is_err());
        let err = check_output(dir.path(), &[&input]).unwrap_err().to_string();
        assert!(err.contains("folder"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), b"model");
    }

    #[test]
    fn only_pending_files_of_processes_that_are_gone_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        // pid_max is at most 2^22: this process id runs nowhere.
        let gone = dir.path().join(".best.safetensors.4999999-0.tmp");
        let ours = Pending::beside(&dir.path().join("m.onnx")).unwrap();
        ours.write(b"x").unwrap();
        for keep in ["draft.tmp", ".notes.tmp", ".a.b.12x-1.tmp", "m.onnx"] {
            std::fs::write(dir.path().join(keep), b"user's").unwrap();
        }
        std::fs::write(&gone, b"half").unwrap();
        assert_eq!(pending_pid(".m.onnx.4999999-12.tmp"), Some(4999999));
        // Written just now: perhaps another machine's run, writing still.
        assert_eq!(remove_stale(dir.path()).unwrap(), 0);
        let long_ago = std::time::SystemTime::now() - 2 * STALE_AFTER;
        for path in [&gone, &ours.path().to_path_buf()] {
            let file = std::fs::File::options().write(true).open(path).unwrap();
            file.set_modified(long_ago).unwrap();
        }
        assert_eq!(remove_stale(dir.path()).unwrap(), 1);
        assert!(!gone.exists() && ours.path().exists());
        assert_eq!(names(dir.path()).len(), 5);
    }

    #[test]
    fn concurrent_writers_of_one_file_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.json");
        std::thread::scope(|s| {
            for i in 0..8 {
                let path = &path;
                s.spawn(move || write_json(path, &vec![i; 1000]).unwrap());
            }
        });
        let back: Vec<u32> = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(back.len(), 1000);
        assert!(
            back.iter().all(|&v| v == back[0]),
            "one writer's whole file"
        );
        assert_eq!(names(dir.path()), ["shared.json"]);
    }
}
