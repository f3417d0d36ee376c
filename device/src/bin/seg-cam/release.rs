//! `seg-cam release`: make a signing key, sign a release folder, verify one. The
//! workstation signs (`just keygen`, `deploy/deploy`); a board verifies with the copy
//! of seg-cam that provisioning installed, never with the release's own.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use segcam::provenance::Provenance;
use segcam::release::{self, ModelSummary, ReleaseManifest, TrustedKeys};

use crate::whole::write_whole;

/// Exit status of `verify` when the release is refused (1 is any other error).
pub const REFUSED: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "seg-cam release",
    about = "Signed releases: make a key pair, sign a release folder, verify one as a board does",
    after_help = "Examples:\n  \
        seg-cam release keygen --key ~/.config/segcam/release.key\n  \
        seg-cam release sign RELEASE_DIR --key ~/.config/segcam/release.key --board aarch64-linux\n  \
        seg-cam release verify RELEASE_DIR --keys /etc/segcam/keys --board aarch64-linux --counter-file /var/lib/segcam/counter"
)]
pub struct ReleaseCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Make an Ed25519 key pair in minisign's format: KEY (secret, mode 0600) and
    /// KEY's name with .pub (public, for the boards' key folder).
    Keygen {
        /// The secret key file to write (refused if it exists).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Write release.json (every file's size and SHA-256, the counter, the boards, the
    /// model) and its signature release.json.minisig into a release folder.
    Sign {
        /// The release folder (plain files: seg-cam, model.onnx, seg-cam.toml, …).
        dir: PathBuf,
        /// The secret key (`seg-cam release keygen`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// A board kind the release is for (repeat for several).
        #[arg(long = "board", value_name = "KIND", required = true)]
        boards: Vec<String>,
        /// The counter [default: above the last one this key signed, kept in KEY's
        /// name with .counter, and at least the time in seconds since 1970].
        #[arg(long)]
        counter: Option<u64>,
    },
    /// Check a release folder as a board does, in order: signed, by a trusted key,
    /// signature holds, for this board, counter above the last accepted, every file
    /// as signed. Exit status 3 when refused, with the reason.
    Verify {
        dir: PathBuf,
        /// The folder of trusted public keys (*.pub).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// This board's kind.
        #[arg(long, value_name = "KIND")]
        board: String,
        /// The file holding the last counter this board accepted (none: no check).
        #[arg(long, value_name = "FILE")]
        counter_file: Option<PathBuf>,
        /// On success, record the release's counter in --counter-file.
        #[arg(long, requires = "counter_file")]
        accept: bool,
        /// On success, write how it was verified (key id, counter) to FILE as JSON
        /// (the board keeps it as the release's verification.json for /metrics).
        #[arg(long, value_name = "FILE")]
        record: Option<PathBuf>,
    },
}

pub fn main(cli: ReleaseCli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Keygen { key } => keygen(&key),
        Command::Sign {
            dir,
            key,
            boards,
            counter,
        } => sign(&dir, &key, boards, counter),
        Command::Verify {
            dir,
            keys,
            board,
            counter_file,
            accept,
            record,
        } => verify(
            &dir,
            &keys,
            &board,
            counter_file.as_deref(),
            accept,
            record.as_deref(),
        ),
    }
}

fn keygen(key: &Path) -> anyhow::Result<ExitCode> {
    let public_path = key.with_extension("pub");
    for path in [key, public_path.as_path()] {
        if path.exists() {
            bail!(
                "{}: already exists; a new key would orphan every board that trusts the old one (remove it yourself to replace it)",
                path.display()
            );
        }
    }
    if let Some(dir) = key.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let (public, secret, id) = release::generate_key_pair()?;
    // The secret: its owner's only, from the first byte on.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("{}: cannot create", key.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write", key.display()))?;
    write_whole(&public_path, public.as_bytes())?;
    println!("key {id}");
    println!("secret: {} (keep it on this workstation)", key.display());
    println!(
        "public: {} (what boards trust: `seg-cam release verify --keys DIR` reads every *.pub of DIR)",
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(
    dir: &Path,
    key: &Path,
    boards: Vec<String>,
    counter: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let secret = std::fs::read_to_string(key)
        .with_context(|| format!("{}: cannot read the secret key", key.display()))?;
    if let Some(bad) = boards.iter().find(|b| !release::valid_board_kind(b)) {
        bail!("--board {bad:?}: use letters, digits and . _ -");
    }
    let counter_path = key.with_extension("counter");
    let last = read_counter(&counter_path)?;
    let counter = match counter {
        Some(c) => c,
        None => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            release::next_counter(last, now)
        }
    };
    let model = model_summary(dir)?;
    let manifest = ReleaseManifest::of_folder(dir, counter, boards, model)?;
    let signature = release::sign(&manifest, &secret)
        .with_context(|| format!("{}: cannot sign with it", key.display()))?;
    write_whole(&dir.join(release::MANIFEST), &manifest.to_bytes())?;
    write_whole(&dir.join(release::SIGNATURE), signature.as_bytes())?;
    // Only now: a failed signing leaves the counter as it was.
    if last.is_none_or(|last| counter > last) {
        write_whole(&counter_path, format!("{counter}\n").as_bytes())?;
    }
    println!(
        "signed {} ({} files, counter {counter}, boards {})",
        dir.display(),
        manifest.files.len(),
        manifest.boards.join(",")
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(
    dir: &Path,
    keys: &Path,
    board: &str,
    counter_file: Option<&Path>,
    accept: bool,
    record: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let trusted = TrustedKeys::load(keys)?;
    if trusted.ids().next().is_none() {
        bail!("{}: no trusted key (*.pub) in it", keys.display());
    }
    let last = match counter_file {
        Some(path) => read_counter(path)?,
        None => None,
    };
    match release::verify(dir, &trusted, board, last)? {
        Ok(verified) => {
            let m = &verified.manifest;
            println!(
                "verified {}: key {}, counter {}, {} files{}",
                dir.display(),
                verified.key_id,
                m.counter,
                m.files.len(),
                m.model
                    .as_ref()
                    .map(|model| format!(", model {}", model.name))
                    .unwrap_or_default()
            );
            if let Some(path) = record {
                let provenance = Provenance {
                    release: String::new(),
                    verification: "signed".into(),
                    key_id: Some(verified.key_id.clone()),
                    counter: Some(m.counter),
                };
                write_whole(path, &serde_json::to_vec(&provenance)?)?;
            }
            if let (true, Some(path)) = (accept, counter_file) {
                write_whole(path, format!("{}\n", m.counter).as_bytes())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(refusal) => {
            eprintln!("seg-cam: refused {}: {refusal}", dir.display());
            Ok(ExitCode::from(REFUSED))
        }
    }
}

/// The model's name and figures from the card of the folder's model.onnx, if any.
fn model_summary(dir: &Path) -> anyhow::Result<Option<ModelSummary>> {
    let path = dir.join("model.onnx");
    if !path.is_file() {
        return Ok(None);
    }
    let card = segcam::onnx_card::read_card(&path)?;
    Ok(Some(ModelSummary {
        figures: card.export_validation.or(card.training_validation),
        name: card.name,
    }))
}

/// A counter file's number; `None` when there is no file.
fn read_counter(path: &Path) -> anyhow::Result<Option<u64>> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{}: not a counter: {:?}", path.display(), text.trim())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}: cannot read", path.display())),
    }
}
