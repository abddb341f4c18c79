#!/usr/bin/env bash
# Clean-install check of the shipped model (issue 30): `pip install .` of this checkout into a new
# virtualenv (no system site-packages: every dependency comes from PyPI), then, from an empty
# folder, `slotmpe --version` and `slotmpe transcribe examples/two_voices.wav -o out/` with the
# shipped model: MIDI, CSV and PNG must be written, torch must not be imported, and the MIDI
# tracks must carry instrument names with their GM programs.
#
# Usage: bash benchmarks/check_clean_install.sh [MODEL.onnx]
#   MODEL.onnx   put this file into the copy's src/slotmpe/pretrained/ before installing (to check
#                the mechanism before a real model ships); default: the checkout's own
#                src/slotmpe/pretrained/model.onnx, which must then exist.
# Environment: PYTHON (default python3, >= 3.11); SLOTMPE_TORCH_INDEX, e.g.
#   https://download.pytorch.org/whl/cpu, to take torch from that index (CPU wheels, far smaller
#   than PyPI's CUDA build); KEEP=1 keeps the temporary folder.
# It downloads a few GB from PyPI the first time (torch among the dependencies): minutes to tens
# of minutes. tests/test_pretrained.py runs it when SLOTMPE_CLEAN_INSTALL_TEST=1.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python3}"
tmp="$(mktemp -d)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
echo "clean-install check in $tmp"

# the working tree as git sees it (tracked + untracked, not ignored), so an uncommitted shipped
# model is included and data/, results/ are not
mkdir "$tmp/src"
(cd "$repo" && git ls-files -z --cached --others --exclude-standard) \
  | (cd "$repo" && xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$tmp/src"
if [ $# -ge 1 ]; then
  cp "$1" "$tmp/src/src/slotmpe/pretrained/model.onnx"
fi
if [ ! -f "$tmp/src/src/slotmpe/pretrained/model.onnx" ]; then
  echo "no src/slotmpe/pretrained/model.onnx to ship: pass a model file" >&2
  exit 2
fi

"$py" -m venv "$tmp/venv"
pip="$tmp/venv/bin/python -m pip"
$pip install --quiet --upgrade pip
if [ -n "${SLOTMPE_TORCH_INDEX:-}" ]; then
  $pip install --quiet "torch==2.14.1" "torchaudio==2.11.0" --index-url "$SLOTMPE_TORCH_INDEX"
fi
$pip install --quiet --no-deps "tinysoundfont==0.3.7"
$pip install --quiet "$tmp/src"

mkdir "$tmp/run"
cp "$repo/examples/two_voices.wav" "$tmp/run/"
cd "$tmp/run"
"$tmp/venv/bin/slotmpe" --version
"$tmp/venv/bin/python" - <<'PY'
import sys

from slotmpe.cli import main

rc = main(["transcribe", "two_voices.wav", "-o", "out"])
assert rc == 0, rc
assert "torch" not in sys.modules, "torch was imported"
import pretty_midi  # noqa: E402

from slotmpe.instruments import gm_program  # noqa: E402

for suffix in (".mid", ".notes.csv", ".png"):
    with open(f"out/two_voices{suffix}", "rb") as fh:
        assert fh.read(1), suffix
pm = pretty_midi.PrettyMIDI("out/two_voices.mid")
tracks = [(i.name, i.program, len(i.notes)) for i in pm.instruments]
print("tracks:", tracks)
named = [(n, p) for n, p, _ in tracks if n != "mixture" and not n.startswith("slot ")]
assert named, f"no named instrument track: {tracks}"
for name, program in named:
    assert program == gm_program(name.rsplit(" ", 1)[0] if name[-1].isdigit() else name), name
print("clean install: OK (torch not imported)")
PY
