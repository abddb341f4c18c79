#!/usr/bin/env bash
# Install slotmpe and everything it needs into the current Python (>=3.11) environment.
# torch 2.14.1 + torchaudio 2.11.0 are known to work together; tinysoundfont is installed
# with --no-deps because its declared pyaudio dependency does not build (only needed for
# live playback, which slotmpe never uses).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --upgrade pip
python -m pip install "torch==2.14.1" "torchaudio==2.11.0"
python -m pip install --no-deps "tinysoundfont==0.3.7"
python -m pip install -e ".[dev]"
python -c "import slotmpe, torch, torchaudio, tinysoundfont; print('slotmpe', slotmpe.__version__, 'torch', torch.__version__)"
