//! Files the commands write (reports, keys, counters), written whole.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Write a file whole: a temporary name beside it, then a rename. What exists and is
/// not a regular file (`/dev/stdout`, a pipe) is written to as it is.
pub fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if path.metadata().is_ok_and(|m| !m.is_file()) && !path.is_dir() {
        return std::fs::write(path, bytes)
            .with_context(|| format!("{}: cannot write", path.display()));
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    // Flushed before the rename: after a power loss the counter or record is the old
    // one or the new one, never an empty file.
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("{}: cannot write", path.display()))
}
