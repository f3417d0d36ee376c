//! The one way seg-host writes a file: under a unique temporary name beside it, flushed
//! to disk and only then renamed over the destination. A failure, or a [`Pending`]
//! dropped before [`Pending::persist`], removes the temporary file, so a kill or a
//! full disk leaves neither a partial file under the real name nor litter beside it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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
        Ok(Self {
            tmp: dest.with_file_name(tmp),
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
    }
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
