//! Files written under a temporary name beside their destination and renamed only
//! when complete, so that a failure never leaves a partial file under the real name.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A file being written under a temporary name beside its destination; removed on
/// drop unless persisted.
pub struct Pending {
    path: PathBuf,
    persisted: bool,
}

impl Pending {
    pub fn beside(out: &Path) -> Result<Self> {
        let Some(file_name) = out.file_name() else {
            bail!("{}: not a file name", out.display());
        };
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
        }
        let mut name = file_name.to_os_string();
        name.push(format!(".{}.tmp", std::process::id()));
        Ok(Self {
            path: out.with_file_name(name),
            persisted: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&self, bytes: &[u8]) -> Result<()> {
        std::fs::write(&self.path, bytes)
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }

    pub fn persist(mut self, to: &Path) -> Result<()> {
        std::fs::rename(&self.path, to).with_context(|| {
            format!("cannot rename {} to {}", self.path.display(), to.display())
        })?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_file_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sub/m.onnx");
        let p = Pending::beside(&out).unwrap();
        p.write(b"x").unwrap();
        assert!(p.path().exists());
        drop(p);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            0
        );
        let p = Pending::beside(&out).unwrap();
        p.write(b"y").unwrap();
        p.persist(&out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"y");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
