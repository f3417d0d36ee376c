//! Where the running release came from: the record a board's root helper writes into a
//! release once it has verified it (`verification.json`), read by seg-cam at start and
//! shown by `/metrics` and `/stats.json`, so a fleet dashboard sees which key signed
//! what each board runs.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The record's file name, in the release folder beside `model.onnx`.
pub const RECORD: &str = "verification.json";

/// How a release was verified on the board before it could run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The release id (the name of the release's folder).
    #[serde(default)]
    pub release: String,
    /// `signed`: the signature by a trusted key and every file checked; `unsigned`:
    /// every file checked against MANIFEST.sha256 on a board that trusts no key.
    pub verification: String,
    /// The id of the key that signed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The release counter it was signed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
}

impl Provenance {
    /// The record of the release holding `model` (the folder's `verification.json`,
    /// the release id from the folder's real name): `Ok(None)` when there is none,
    /// `Err` naming the file when it is unreadable.
    pub fn of_model(model: &Path) -> Result<Option<Self>, String> {
        let Some(folder) = model
            .canonicalize()
            .ok()
            .and_then(|m| m.parent().map(Path::to_path_buf))
        else {
            return Ok(None);
        };
        let path = folder.join(RECORD);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut record: Provenance =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(name) = folder.file_name() {
            record.release = name.to_string_lossy().into_owned();
        }
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_beside_a_model_names_its_release_folder() {
        let dir = tempfile::tempdir().unwrap();
        let release = dir.path().join("0123abcd");
        std::fs::create_dir(&release).unwrap();
        let model = release.join("model.onnx");
        std::fs::write(&model, b"x").unwrap();
        assert_eq!(Provenance::of_model(&model), Ok(None));

        std::fs::write(
            release.join(RECORD),
            r#"{"verification":"signed","key_id":"ABCDEF0123456789","counter":42}"#,
        )
        .unwrap();
        // through a link, as the service reaches it (current -> 0123abcd)
        let current = dir.path().join("current");
        std::os::unix::fs::symlink("0123abcd", &current).unwrap();
        let record = Provenance::of_model(&current.join("model.onnx"))
            .unwrap()
            .unwrap();
        assert_eq!(record.release, "0123abcd");
        assert_eq!(record.verification, "signed");
        assert_eq!(record.key_id.as_deref(), Some("ABCDEF0123456789"));
        assert_eq!(record.counter, Some(42));

        std::fs::write(release.join(RECORD), "{").unwrap();
        let err = Provenance::of_model(&model).unwrap_err();
        assert!(err.contains(RECORD), "{err}");
    }
}
