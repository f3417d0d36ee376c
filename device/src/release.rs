//! Signed releases: the manifest a workstation signs and the checks a board makes
//! before anything of a release runs.
//!
//! The manifest (`release.json`) lists every file of the release folder (name, size,
//! SHA-256), a counter that only goes up, the board kinds the release is for and the
//! model card's name and figures. Its bytes are signed with minisign (Ed25519;
//! `release.json.minisig`), so `minisign -V -p KEY.pub -m release.json` checks it too.
//! A board checks, in this order: a signature is there, its key is one the board
//! trusts, the signature holds, the release is for this board, its counter is above
//! the last one the board accepted, and every file is the one signed (no file missing,
//! changed or added).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::card::Figures;

/// The signed manifest's file name in a release folder.
pub const MANIFEST: &str = "release.json";
/// The minisign signature of [`MANIFEST`].
pub const SIGNATURE: &str = "release.json.minisig";
/// The manifest format this segcam writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

/// The model a release runs, as its card names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: String,
    /// The card's figures on the validation split (export's, else training's).
    pub figures: Option<Figures>,
}

/// What a workstation signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseManifest {
    pub format_version: u32,
    /// Above every counter a board accepted before, or the board refuses the release.
    pub counter: u64,
    /// Board kinds (`aarch64-linux`, a fleet's own names): a board refuses a release
    /// whose list lacks its kind.
    pub boards: Vec<String>,
    /// Sorted by name.
    pub files: Vec<FileEntry>,
    pub model: Option<ModelSummary>,
}

/// Why a board refuses a release. Each says which rule failed, for `just status`,
/// the deploy's output and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unsigned: no {SIGNATURE}")]
    Unsigned,
    #[error("the signature cannot be read: {0}")]
    Unreadable(String),
    #[error("signed with key {0}, which this board does not trust")]
    UnknownKey(String),
    #[error("the signature does not match {MANIFEST} (changed after signing?)")]
    BadSignature,
    #[error("{MANIFEST}: {0}")]
    BadManifest(String),
    #[error("made for boards {boards:?}, not for this board ({board})")]
    WrongBoard { board: String, boards: Vec<String> },
    #[error(
        "counter {counter} is not above {last}, the last this board accepted (an older release?)"
    )]
    OlderCounter { counter: u64, last: u64 },
    #[error("{0}: missing")]
    FileMissing(String),
    #[error("{name}: changed after signing ({what})")]
    FileChanged { name: String, what: String },
    #[error("{0}: not in the signed manifest (added after signing)")]
    FileAdded(String),
}

/// A release that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The signing key's id, as minisign prints it (16 hex digits).
    pub key_id: String,
    pub manifest: ReleaseManifest,
}

/// A key id as minisign shows it: the 8 key-number bytes as a little-endian u64 in hex.
fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The release folder's files, sorted: regular files only, the manifest and its
/// signature aside. Anything else (a folder, a link) is refused: a release is flat.
fn release_files(dir: &Path) -> crate::Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| crate::Error::io(dir, e))? {
        let entry = entry.map_err(|e| crate::Error::io(dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == MANIFEST || name == SIGNATURE {
            continue;
        }
        let kind = entry.file_type().map_err(|e| crate::Error::io(&path, e))?;
        if !kind.is_file() {
            return Err(crate::Error::Invalid(format!(
                "{}: a release holds plain files only",
                path.display()
            )));
        }
        files.push((name, path));
    }
    files.sort();
    Ok(files)
}

impl ReleaseManifest {
    /// The manifest of the files in `dir` (hashed now).
    pub fn of_folder(
        dir: &Path,
        counter: u64,
        boards: Vec<String>,
        model: Option<ModelSummary>,
    ) -> crate::Result<Self> {
        let mut files = Vec::new();
        for (name, path) in release_files(dir)? {
            let bytes = std::fs::read(&path).map_err(|e| crate::Error::io(&path, e))?;
            files.push(FileEntry {
                name,
                size: bytes.len() as u64,
                sha256: sha256_hex(&bytes),
            });
        }
        Ok(Self {
            format_version: MANIFEST_VERSION,
            counter,
            boards,
            files,
            model,
        })
    }

    /// The bytes that are signed and written as [`MANIFEST`].
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(self).expect("a manifest serialises");
        text.push('\n');
        text.into_bytes()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Refusal> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Refusal::BadManifest(e.to_string()))?;
        match value.get("format_version").and_then(|v| v.as_u64()) {
            Some(v) if v == MANIFEST_VERSION as u64 => {}
            other => {
                return Err(Refusal::BadManifest(format!(
                    "format version {other:?}; this segcam reads {MANIFEST_VERSION}"
                )))
            }
        }
        serde_json::from_value(value).map_err(|e| Refusal::BadManifest(e.to_string()))
    }
}

/// A new key pair in minisign's text formats: (public key file, secret key file, key
/// id). The secret key is not encrypted (releases are signed by scripts and CI): keep
/// its file to its owner (mode 0600), off the boards and out of the repository.
pub fn generate_key_pair() -> crate::Result<(String, String, String)> {
    let minisign::KeyPair { pk, sk } = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| crate::Error::Invalid(format!("cannot make a key pair: {e}")))?;
    let id = key_id(pk.keynum());
    let public = pk
        .to_box()
        .map_err(|e| crate::Error::Invalid(e.to_string()))?
        .to_string();
    let secret = sk
        .to_box(Some(&format!("segcam release key {id}")))
        .map_err(|e| crate::Error::Invalid(e.to_string()))?
        .to_string();
    Ok((public, secret, id))
}

/// Sign `manifest` with the secret key in minisign's text format; the signature file's
/// text. The trusted (signed) comment names the counter, as `minisign -V` prints it.
pub fn sign(manifest: &ReleaseManifest, secret_key: &str) -> crate::Result<String> {
    let bad_key = |e: minisign::PError| crate::Error::Invalid(format!("the secret key: {e}"));
    let sk = minisign::SecretKeyBox::from_string(secret_key)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(bad_key)?;
    let signature = minisign::sign(
        None,
        &sk,
        Cursor::new(manifest.to_bytes()),
        Some(&format!("segcam release, counter {}", manifest.counter)),
        Some("signature from a segcam release key"),
    )
    .map_err(bad_key)?;
    Ok(signature.to_string())
}

/// The counter of the next release signed with a key whose last was `last`: above it,
/// and at least `now` (seconds since 1970), so that workstations sharing a key still
/// count up without sharing the counter file.
pub fn next_counter(last: Option<u64>, now: u64) -> u64 {
    last.map_or(0, |l| l.saturating_add(1)).max(now)
}

/// A board kind as a manifest lists it and a board names itself: letters, digits, `.`,
/// `_` and `-` (it travels through shell scripts and file names).
pub fn valid_board_kind(kind: &str) -> bool {
    !kind.is_empty()
        && !kind.starts_with('-')
        && kind
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The public keys a board trusts: every `*.pub` (minisign format) of one folder, so
/// that keys can be added before a rotation and removed after it.
#[derive(Debug, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<String, minisign::PublicKey>,
}

impl TrustedKeys {
    pub fn load(dir: &Path) -> crate::Result<Self> {
        let mut keys = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| crate::Error::io(dir, e))? {
            let path = entry.map_err(|e| crate::Error::io(dir, e))?.path();
            if path.extension().is_none_or(|e| e != "pub") {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| crate::Error::io(&path, e))?;
            let key = Self::parse(&text).map_err(|e| {
                crate::Error::Invalid(format!(
                    "{}: not a minisign public key: {e}",
                    path.display()
                ))
            })?;
            keys.insert(key_id(key.keynum()), key);
        }
        Ok(Self { keys })
    }

    fn parse(text: &str) -> Result<minisign::PublicKey, minisign::PError> {
        // minisign writes two lines (comment, key); `-P` prints the bare key
        match text.lines().count() {
            1 => minisign::PublicKey::from_base64(text.trim()),
            _ => minisign::PublicKeyBox::from_string(text)?.into_public_key(),
        }
    }

    /// Trust one more key (its public key file's text).
    pub fn add(&mut self, public_key: &str) -> crate::Result<String> {
        let key = Self::parse(public_key)
            .map_err(|e| crate::Error::Invalid(format!("not a minisign public key: {e}")))?;
        let id = key_id(key.keynum());
        self.keys.insert(id.clone(), key);
        Ok(id)
    }

    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// Check the release in `dir` for `board`, `last_counter` being the highest counter
/// this board accepted (None: none yet). Reads only `dir`; runs nothing from it.
pub fn verify(
    dir: &Path,
    trusted: &TrustedKeys,
    board: &str,
    last_counter: Option<u64>,
) -> crate::Result<Result<Verified, Refusal>> {
    let read = |name: &str| -> crate::Result<Option<Vec<u8>>> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crate::Error::io(&path, e)),
        }
    };
    let Some(signature) = read(SIGNATURE)? else {
        return Ok(Err(Refusal::Unsigned));
    };
    let Some(manifest_bytes) = read(MANIFEST)? else {
        return Ok(Err(Refusal::BadManifest("missing".into())));
    };
    Ok(check(
        dir,
        &manifest_bytes,
        &signature,
        trusted,
        board,
        last_counter,
    ))
}

fn check(
    dir: &Path,
    manifest_bytes: &[u8],
    signature: &[u8],
    trusted: &TrustedKeys,
    board: &str,
    last_counter: Option<u64>,
) -> Result<Verified, Refusal> {
    let signature = std::str::from_utf8(signature)
        .map_err(|_| Refusal::Unreadable("not text".into()))
        .and_then(|text| {
            minisign::SignatureBox::from_string(text)
                .map_err(|e| Refusal::Unreadable(e.to_string()))
        })?;
    let id = key_id(signature.keynum());
    let key = trusted
        .keys
        .get(&id)
        .ok_or_else(|| Refusal::UnknownKey(id.clone()))?;
    minisign::verify(
        key,
        &signature,
        Cursor::new(manifest_bytes),
        true,
        false,
        false,
    )
    .map_err(|_| Refusal::BadSignature)?;

    let manifest = ReleaseManifest::from_bytes(manifest_bytes)?;
    if !manifest.boards.iter().any(|b| b == board) {
        return Err(Refusal::WrongBoard {
            board: board.into(),
            boards: manifest.boards,
        });
    }
    if let Some(last) = last_counter.filter(|&last| manifest.counter <= last) {
        return Err(Refusal::OlderCounter {
            counter: manifest.counter,
            last,
        });
    }
    check_files(dir, &manifest)?;
    Ok(Verified {
        key_id: id,
        manifest,
    })
}

/// Every file as signed, and no other.
fn check_files(dir: &Path, manifest: &ReleaseManifest) -> Result<(), Refusal> {
    let present = release_files(dir).map_err(|e| Refusal::BadManifest(e.to_string()))?;
    for (name, _) in &present {
        if !manifest.files.iter().any(|f| &f.name == name) {
            return Err(Refusal::FileAdded(name.clone()));
        }
    }
    for file in &manifest.files {
        // a name with a path in it would reach outside the folder
        if file.name.contains('/') || file.name == ".." || file.name.is_empty() {
            return Err(Refusal::BadManifest(format!("file name {:?}", file.name)));
        }
        let path = dir.join(&file.name);
        let mut bytes = Vec::new();
        match std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => {}
            Err(_) => return Err(Refusal::FileMissing(file.name.clone())),
        }
        if bytes.len() as u64 != file.size {
            return Err(Refusal::FileChanged {
                name: file.name.clone(),
                what: format!("{} bytes, signed {}", bytes.len(), file.size),
            });
        }
        if sha256_hex(&bytes) != file.sha256 {
            return Err(Refusal::FileChanged {
                name: file.name.clone(),
                what: "SHA-256 differs".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_go_up_and_board_kinds_are_plain_words() {
        assert_eq!(next_counter(None, 1_000), 1_000);
        assert_eq!(
            next_counter(Some(5_000), 1_000),
            5_001,
            "a clock behind the file"
        );
        assert_eq!(next_counter(Some(999), 1_000), 1_000);
        assert_eq!(next_counter(Some(u64::MAX), 0), u64::MAX);
        for ok in ["aarch64-linux", "pi5", "jetson.orin_nx"] {
            assert!(valid_board_kind(ok), "{ok}");
        }
        for bad in ["", "-rf", "a b", "a/b", "pi;reboot", "ü"] {
            assert!(!valid_board_kind(bad), "{bad}");
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        keys: TrustedKeys,
        secret: String,
    }

    /// A signed release of two files for board `pi`, counter 7.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("seg-cam"), b"\x7fELF the board binary").unwrap();
        std::fs::write(dir.path().join("model.onnx"), b"the model's bytes").unwrap();
        let (public, secret, _) = generate_key_pair().unwrap();
        let mut keys = TrustedKeys::default();
        keys.add(&public).unwrap();
        sign_folder(dir.path(), &secret, 7, "pi");
        Fixture { dir, keys, secret }
    }

    fn sign_folder(dir: &Path, secret: &str, counter: u64, board: &str) {
        let manifest = ReleaseManifest::of_folder(dir, counter, vec![board.into()], None).unwrap();
        std::fs::write(dir.join(MANIFEST), manifest.to_bytes()).unwrap();
        std::fs::write(dir.join(SIGNATURE), sign(&manifest, secret).unwrap()).unwrap();
    }

    fn refusal(f: &Fixture, board: &str, last: Option<u64>) -> Refusal {
        verify(f.dir.path(), &f.keys, board, last)
            .unwrap()
            .expect_err("refused")
    }

    #[test]
    fn a_signed_release_passes_with_its_key_id() {
        let f = fixture();
        let verified = verify(f.dir.path(), &f.keys, "pi", Some(6))
            .unwrap()
            .unwrap();
        assert_eq!(verified.manifest.counter, 7);
        assert_eq!(verified.manifest.files.len(), 2);
        assert_eq!(
            f.keys.ids().collect::<Vec<_>>(),
            vec![verified.key_id.as_str()]
        );
        assert_eq!(verified.key_id.len(), 16);
    }

    #[test]
    fn a_flipped_byte_in_a_file_or_the_manifest_is_refused() {
        let f = fixture();
        let model = f.dir.path().join("model.onnx");
        let mut bytes = std::fs::read(&model).unwrap();
        bytes[3] ^= 1;
        std::fs::write(&model, &bytes).unwrap();
        assert!(matches!(
            refusal(&f, "pi", None),
            Refusal::FileChanged { name, .. } if name == "model.onnx"
        ));

        let f = fixture();
        let manifest = f.dir.path().join(MANIFEST);
        let text = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, text.replace("\"counter\": 7", "\"counter\": 9")).unwrap();
        assert_eq!(refusal(&f, "pi", None), Refusal::BadSignature);
    }

    #[test]
    fn a_missing_or_added_file_is_refused() {
        let f = fixture();
        std::fs::write(f.dir.path().join("extra.so"), b"injected").unwrap();
        assert_eq!(
            refusal(&f, "pi", None),
            Refusal::FileAdded("extra.so".into())
        );
        let f = fixture();
        std::fs::remove_file(f.dir.path().join("seg-cam")).unwrap();
        assert_eq!(
            refusal(&f, "pi", None),
            Refusal::FileMissing("seg-cam".into())
        );
    }

    #[test]
    fn an_unknown_key_and_an_unsigned_release_are_refused() {
        let f = fixture();
        let (_, other_secret, other_id) = generate_key_pair().unwrap();
        sign_folder(f.dir.path(), &other_secret, 8, "pi");
        assert_eq!(refusal(&f, "pi", None), Refusal::UnknownKey(other_id));

        std::fs::remove_file(f.dir.path().join(SIGNATURE)).unwrap();
        assert_eq!(refusal(&f, "pi", None), Refusal::Unsigned);
    }

    #[test]
    fn the_counter_must_go_up_and_the_board_must_be_listed() {
        let f = fixture();
        assert_eq!(
            refusal(&f, "pi", Some(7)),
            Refusal::OlderCounter {
                counter: 7,
                last: 7
            }
        );
        assert_eq!(
            refusal(&f, "pi", Some(9)),
            Refusal::OlderCounter {
                counter: 7,
                last: 9
            }
        );
        assert!(matches!(
            refusal(&f, "jetson", None),
            Refusal::WrongBoard { .. }
        ));
        // re-signed for the next counter, the same files pass again
        sign_folder(f.dir.path(), &f.secret, 10, "pi");
        assert!(verify(f.dir.path(), &f.keys, "pi", Some(9))
            .unwrap()
            .is_ok());
    }

    #[test]
    fn trusted_keys_load_from_a_folder_of_public_keys() {
        let dir = tempfile::tempdir().unwrap();
        let (public, _, id) = generate_key_pair().unwrap();
        std::fs::write(dir.path().join("ci.pub"), &public).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        let keys = TrustedKeys::load(dir.path()).unwrap();
        assert_eq!(keys.ids().collect::<Vec<_>>(), vec![id.as_str()]);
        std::fs::write(
            dir.path().join("bad.pub"),
            "untrusted comment: x\nnot base64\n",
        )
        .unwrap();
        let err = TrustedKeys::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("bad.pub") && err.contains("not a minisign public key"),
            "{err}"
        );
    }
}
