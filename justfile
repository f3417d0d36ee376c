# segcam — the user's entry points. `just --list` shows them all.
#
# libtorch comes from $LIBTORCH when set, else from a PyTorch 2.13.0 venv that
# `just setup` makes in ~/.cache/segcam (scripts/setup-venv).

set shell := ["bash", "-euo", "pipefail", "-c"]

torch_env := "scripts/torch-env"
seg_host := "target/release/seg-host"
# seg-host and seg-cam in one build, so that they share their compiled dependencies.
# segcam/onnxruntime: the workstation's seg-cam has both engines (the board's static build: tract).
build_release := torch_env + " cargo build --release -q -p seg-host -p segcam --features segcam/onnxruntime --bins"
board_target := "aarch64-unknown-linux-musl"
board_bin := "target/" + board_target + "/release/seg-cam"
board_gnu_target := "aarch64-unknown-linux-gnu"
board_gnu_bin := "target/" + board_gnu_target + "/release/seg-cam"

# Show the recipes.
default:
    @just --list

# Make the libtorch venv (once) and build seg-host in release mode.
setup:
    {{build_release}}
    {{seg_host}} info

# libtorch version, CUDA availability, GPUs, threads.
info: setup

# Write a synthetic VOC-layout dataset: just synth data/synth 200
synth out="data/synth" count="200" *args="":
    {{build_release}}
    {{seg_host}} synth --out {{out}} --count {{count}} {{args}}

# Train the FCN (d2l's recipe by default) on a VOC-layout dataset; extra flags go to `seg-host train`.
train data="data/VOCdevkit/VOC2012" *args="":
    {{build_release}}
    {{seg_host}} train --data {{data}} {{args}}

# Evaluate a checkpoint: pixel accuracy, mIoU, per-class IoU, confusion matrix.
eval checkpoint="runs/train/best.safetensors" data="data/VOCdevkit/VOC2012" *args="":
    {{build_release}}
    {{seg_host}} eval --checkpoint {{checkpoint}} --data {{data}} {{args}}

# Download torchvision's ImageNet ResNet-18 weights (needs internet) and convert them once to models/resnet18-f37072fd.safetensors.
fetch-weights:
    scripts/fetch https://download.pytorch.org/models/resnet18-f37072fd.pth models/resnet18-f37072fd.pth f37072fd
    scripts/convert-weights models/resnet18-f37072fd.pth models/resnet18-f37072fd.safetensors

# Convert any PyTorch weights file to the .safetensors --pretrained reads: just convert-weights my.pth [out.safetensors]
convert-weights pth out="":
    scripts/convert-weights {{pth}} {{out}}

# Download and unpack Pascal VOC 2012 (2 GB, needs internet) into data/VOCdevkit/VOC2012.
fetch-voc:
    scripts/fetch http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar data/VOCtrainval_11-May-2012.tar
    tar -xf data/VOCtrainval_11-May-2012.tar -C data
    @echo "VOC 2012 is in data/VOCdevkit/VOC2012"

# Export a checkpoint as one ONNX file with its model card, verified through the board's engine (figures from DATA's val split when it exists).
export checkpoint="runs/train/best.safetensors" out="models/fcn.onnx" data="data/VOCdevkit/VOC2012" *args="":
    {{build_release}}
    {{seg_host}} export --checkpoint {{checkpoint}} --out {{out}} $([ -d "{{data}}" ] && echo --data "{{data}}") {{args}}

# Quantize an exported model to int8: calibrated on CALIB's training images, refused if it loses accuracy on the val split.
quantize model="models/fcn.onnx" calib="data/VOCdevkit/VOC2012" out="models/fcn.int8.onnx" *args="":
    {{build_release}}
    {{seg_host}} quantize --model {{model}} --calib {{calib}} --out {{out}} {{args}}

# Rebuild the demo model from nothing (generated scenes, CPU, fixed seeds): just demo-model models/demo.int8.onnx
# The int8 file is for tract (qlinear), the engine of the static board binary; QDQ=FILE
# also writes the form onnxruntime runs fastest.
demo-model out="models/demo.int8.onnx" qdq="":
    {{build_release}}
    {{seg_host}} synth --out runs/demo/data --count 200 --size 224x288 --seed 7
    {{seg_host}} train --data runs/demo/data --out runs/demo/train --overwrite --epochs 10 --batch 8 --crop 192x256 --lr 0.01 --momentum 0.9 --poly --flip --seed 1 --device cpu
    {{seg_host}} export --checkpoint runs/demo/train/best.safetensors --out runs/demo/demo.onnx --height 224 --width 288 --data runs/demo/data
    {{seg_host}} quantize --model runs/demo/demo.onnx --calib runs/demo/data --images 32 --engine tract --out {{out}}
    {{ if qdq != "" { seg_host + " quantize --model runs/demo/demo.onnx --calib runs/demo/data --images 32 --engine onnxruntime --out " + qdq } else { "true" } }}

# The whole chain on this machine with no data and no camera: synth → train → export → quantize (both int8 forms) → eval → seg-cam bench → seg-cam on the test scene with the fastest.
demo seconds="60": (demo-model "runs/demo/demo.int8.onnx" "runs/demo/demo.qdq.onnx")
    {{seg_host}} eval --model runs/demo/demo.qdq.onnx --data runs/demo/data --out runs/demo/eval
    target/release/seg-cam bench --model runs/demo/demo.onnx --model runs/demo/demo.int8.onnx --model runs/demo/demo.qdq.onnx --runs 10 --seconds 10 --json runs/demo/bench.json
    scripts/demo-live runs/demo {{seconds}}

# Training images/s of seg-host vs PyTorch Python, side by side: just bench-train 320x480 8 2
bench-train crop="320x480" batch="8" rounds="2":
    {{build_release}}
    {{torch_env}} bench/train-speed {{crop}} {{batch}} {{rounds}}

# Every speed figure side by side in one run (tract vs onnxruntime, pipeline, training): bench/results.md, .json, .png
bench rounds="3":
    {{build_release}}
    JUST={{just_executable()}} {{torch_env}} bench/run {{rounds}}

# Cross-compile seg-cam for aarch64 boards: a static (musl) binary with tract for any L4T or Raspberry Pi OS, and a glibc one with the onnxruntime engine too (plus PyPI's aarch64 libonnxruntime.so).
build-board:
    scripts/setup-cross
    cargo build --release --target {{board_target}} -p segcam --bin seg-cam
    cargo build --release --target {{board_gnu_target}} -p segcam --features onnxruntime --bin seg-cam
    board/fetch-onnxruntime
    @echo "board binaries: {{board_bin}} ($(du -h {{board_bin}} | cut -f1), static aarch64, tract)"
    @echo "                {{board_gnu_bin}} ($(du -h {{board_gnu_bin}} | cut -f1), aarch64 glibc, tract + onnxruntime with ${SEGCAM_CACHE:-$HOME/.cache/segcam}/board/onnxruntime/libonnxruntime.so)"

# A release signing key pair (Ed25519, minisign's format): the secret stays on this workstation (mode 0600, never in the repo), boards trust the .pub; `just deploy` signs with it: just keygen [key=~/.config/segcam/release.key]
keygen *settings:
    #!/usr/bin/env bash
    set -euo pipefail
    key=${SEGCAM_RELEASE_KEY:-${XDG_CONFIG_HOME:-$HOME/.config}/segcam/release.key}
    for s in {{settings}}; do
      case $s in
        key=*) key=${s#key=} ;;
        *) echo "just keygen: unknown setting '$s' (key=)" >&2; exit 2 ;;
      esac
    done
    {{build_release}}
    target/release/seg-cam release keygen --key "${key/#\~/$HOME}"

# Once per board (again to rotate keys), as root or an account with sudo: the unit, the root helper, the verifier (the static board build), the trusted release keys and the sudoers rules: just provision board=pi@raspberrypi.local [user=pi] [keys=FILE.pub,…] [kind=aarch64-linux]
provision *settings: build-board
    deploy/deploy provision {{settings}}

# Ship seg-cam, a model, a config and a golden set to a board over SSH (signed when there is a key), checked before the switch, health-checked after: just deploy board=pi@raspberrypi.local [model=FILE] [config=FILE] [golden=off|DIR] [key=FILE] [boards=KIND,…]
deploy *settings: build-board
    {{build_release}}
    deploy/deploy deploy {{settings}}

# Put the board back on the release it ran before: just rollback board=pi@raspberrypi.local
rollback *settings:
    deploy/deploy rollback {{settings}}

# The board's release, uptime and frames/s: just status board=pi@raspberrypi.local
status *settings:
    deploy/deploy status {{settings}}

# The last lines of seg-cam's log on the board: just logs board=pi@raspberrypi.local [lines=100]
logs *settings:
    deploy/deploy logs {{settings}}

# A bootable aarch64 disk image: Debian arm64, seg-cam as its provisioned service, your ssh key for the deploy account. board=generic-efi (UEFI boards, qemu) or rpi (Raspberry Pi 4/5): just image ssh_key=~/.ssh/id_ed25519.pub [board=generic-efi] [model=FILE] [config=FILE] [user=segcam] [hostname=segcam] [suite=trixie] [out=images] [size=auto]
image *settings: build-board
    #!/usr/bin/env bash
    set -euo pipefail
    ssh_key= board=generic-efi model=models/demo.int8.onnx config=deploy/seg-cam.toml out=images size=auto
    user=segcam hostname=segcam suite=trixie
    for s in {{settings}}; do
      case $s in
        key=*) ssh_key=${s#*=} ;;
        ssh_key=*|board=*|model=*|config=*|out=*|size=*|user=*|hostname=*|suite=*) declare "${s%%=*}=${s#*=}" ;;
        *) echo "just image: unknown setting '$s' (ssh_key=, board=, model=, config=, user=, hostname=, suite=, out=, size=)" >&2; exit 2 ;;
      esac
    done
    [ -n "$ssh_key" ] || { echo "just image: ssh_key=FILE.pub is needed: the ssh key the board's deploy account accepts" >&2; exit 2; }
    sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo env BOARD="$board" DEPLOY_USER="$user" HOSTNAME_="$hostname" SUITE="$suite" \
      SEGCAM_CACHE="${SEGCAM_CACHE:-$HOME/.cache/segcam}" ${SEGCAM_PYTHON:+SEGCAM_PYTHON="$SEGCAM_PYTHON"} \
      ${BASE_CACHE:+BASE_CACHE="$BASE_CACHE"} ${SOURCE_DATE_EPOCH:+SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH"} \
      scripts/build-image {{board_bin}} "$model" "$config" "${ssh_key/#\~/$HOME}" "$out" "$size"

# Write an image to a card, refusing a mounted disk, the system's own, or one over max=256G; asks unless yes=1; reads it back against the .sha256: just flash image=images/segcam-generic-efi-ID.img device=/dev/sdX [yes=1] [max=64G] [force=1]
flash *settings:
    #!/usr/bin/env bash
    set -euo pipefail
    image= device=
    for s in {{settings}}; do
      case $s in
        image=*) image=${s#*=} ;;
        device=*) device=${s#*=} ;;
        yes=*) export FLASH_YES=${s#*=} ;;
        max=*) export FLASH_MAX=${s#*=} ;;
        force=*) export FLASH_FORCE=${s#*=} ;;
        *) echo "just flash: unknown setting '$s' (image=, device=, yes=1, max=, force=1)" >&2; exit 2 ;;
      esac
    done
    [ -n "$image" ] && [ -n "$device" ] || { echo "just flash: image=FILE.img and device=/dev/sdX are needed" >&2; exit 2; }
    sudo=; [ "$(id -u)" = 0 ] || [ -w "$device" ] || sudo="sudo --preserve-env=FLASH_YES,FLASH_MAX,FLASH_FORCE"
    $sudo scripts/flash "$image" "$device"

# Boot an image in qemu (software emulation) and check it: page, frames, grown disk, ssh with the key: just image-check image=images/segcam-generic-efi-ID.img key=~/.ssh/id_ed25519
image-check *settings:
    #!/usr/bin/env bash
    set -euo pipefail
    image= key=
    for s in {{settings}}; do
      case $s in
        image=*|key=*) declare "${s%%=*}=${s#*=}" ;;
        *) echo "just image-check: unknown setting '$s' (image=, key=)" >&2; exit 2 ;;
      esac
    done
    [ -n "$image" ] && [ -n "$key" ] || { echo "just image-check: image=FILE.img and key=PRIVATE_KEY are needed" >&2; exit 2; }
    board/image-check "$image" "${key/#\~/$HOME}"


# N emulated boards on this machine (the deploy test's qemu board, vivid camera unless nocamera=I,…), provisioned (keys= as provision), and their Ansible inventory: just fleet-up 3 [inventory=runs/fleet/inventory.ini] [nocamera=2] [keys=FILE.pub]
fleet-up n *settings: build-board
    scripts/fleet up {{n}} {{settings}}

# Stop the boards of just fleet-up.
fleet-down:
    scripts/fleet down

# One release to every board of an Ansible inventory (INI or YAML) in stages, canary first, stopping at the first board that refuses or fails its checks and rolling back the boards it had updated: just fleet-deploy inventory=FILE [model=] [config=] [key=] [golden=] [stages=1,25%,100%] [max_fail=0] [rollback=yes|no]
fleet-deploy *settings: build-board
    scripts/fleet deploy {{settings}}

# One line per board of an inventory: release, verification and key, golden set, frames/s, uptime, restarts: just fleet-status inventory=FILE
fleet-status *settings:
    scripts/fleet status {{settings}}
# Every test of the workspace (installs the test tools and builds what the tests run first).
test:
    scripts/setup-test-tools
    # --no-run first: a compile error shows before the board builds. The test build also
    # builds the binaries the end-to-end tests run; a separate `cargo build --bins` would
    # compile tract and segcam twice (the tests' dev-dependencies change their features).
    {{torch_env}} cargo test --workspace --no-run
    {{just_executable()}} build-board
    {{torch_env}} cargo test --workspace

# Formatting and lints, as CI's reviewers expect them.
lint:
    cargo fmt --all -- --check
    scripts/module-cycles host/src
    scripts/module-cycles device/src
    cargo clippy -p segcam --no-default-features -- -D warnings
    cargo clippy -p segcam --no-default-features --features clap,onnxruntime -- -D warnings
    {{torch_env}} cargo clippy --workspace --all-targets -- -D warnings
