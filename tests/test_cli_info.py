"""Tests of ``slotmpe --version`` and ``slotmpe info`` (issue 30): the package version, the shipped
model's identity, the onnxruntime / torch versions and the CPU's precision support, so that a bug
report carries them; ``--version`` never imports torch."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import slotmpe
import slotmpe.cpu as cpu
import slotmpe.pretrained as pre
from slotmpe.cli import main, version_lines

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], code_prefix: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    code = (code_prefix + "import sys\nfrom slotmpe.cli import main\n"
            f"try:\n    rc = main({args!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print('TORCH_IMPORTED' if 'torch' in sys.modules else 'TORCH_NOT_IMPORTED')\n"
            "sys.exit(rc)\n")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep
                + os.environ.get("PYTHONPATH", ""), **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=full_env)


def test_version_lines_say_everything_a_bug_report_needs(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    monkeypatch.delenv(pre.MODEL_ENV, raising=False)
    monkeypatch.setattr(pre, "PACKAGE_DIR", tmp_path)  # no model ships here
    lines = version_lines()
    assert lines[0] == f"slotmpe {slotmpe.__version__}"
    assert lines[1].startswith("shipped model: none shipped")
    ort = importlib.metadata.version("onnxruntime")
    assert f"onnxruntime {ort}" in lines[2]
    assert f"torch {importlib.metadata.version('torch')}" in lines[2]
    info = cpu.cpu_info()
    assert lines[3].startswith(f"CPU: {info['model']} [")
    for flag in info["flags"]:  # type: ignore[union-attr]
        assert flag in lines[3]
    assert ("native bf16" in lines[3]) and (
        ("no native bf16" in lines[3]) != cpu.cpu_native_bf16(info))


def test_cpu_precision_support_from_flags() -> None:
    assert cpu.cpu_native_bf16({"model": "x", "flags": ["avx2", "avx512f", "amx_bf16"]})
    assert cpu.cpu_native_bf16({"model": "x", "flags": ["avx512_bf16"]})
    assert not cpu.cpu_native_bf16({"model": "x", "flags": ["avx2", "avx512f"]})
    from slotmpe import precision

    assert precision.cpu_info is cpu.cpu_info  # one reader of /proc/cpuinfo


def test_version_is_fast_and_never_imports_torch(tmp_path: Path) -> None:
    res = _run(["--version"], **{pre.MODEL_ENV: str(tmp_path / "none.onnx")})
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0] == f"slotmpe {slotmpe.__version__}"
    assert any(ln.startswith("CPU: ") for ln in out) and any("onnxruntime" in ln for ln in out)
    assert out[-1] == "TORCH_NOT_IMPORTED"


def test_version_shows_the_shipped_model_identity(tmp_path: Path) -> None:
    """An ONNX model with release metadata as the default model: --version names its run, commit
    and hash (the model is an untrained tiny 1a export: identity, not quality, is tested)."""
    torch = pytest.importorskip("torch")
    from slotmpe.models import build_model, save_checkpoint
    from slotmpe.pretrained.card import stamp_release
    from slotmpe.transcribe.onnx_export import export_onnx

    torch.manual_seed(0)
    pt = tmp_path / "run" / "model.pt"
    save_checkpoint(pt, build_model("1a"), {"exp": "1a", "dataset": "electro", "seed": 2})
    export_onnx(pt, tmp_path / "run" / "model.onnx")
    shipped = stamp_release(tmp_path / "run" / "model.onnx", tmp_path / "model.onnx",
                            {"format": "slotmpe-pretrained", "commit": "abcdef0123456789" * 2 + "abcdef01",
                             "run": {"exp": "1a", "dataset": "electro", "seed": 2}})
    sha = pre.file_sha256(shipped)
    res = _run(["--version"], **{pre.MODEL_ENV: str(shipped)})
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("shipped model: "))
    assert line.startswith("shipped model: 1a electro seed 2, commit abcdef0, sha256 " + sha[:12])
    assert res.stdout.splitlines()[-1] == "TORCH_NOT_IMPORTED"
    # a plain export (no release entry) still shows its run from the export's own metadata
    ident = pre.model_identity(tmp_path / "run" / "model.onnx")
    assert (ident["exp"], ident["dataset"], ident["seed"], ident["commit"]) == (
        "1a", "electro", 2, None)
    assert "commit not recorded" in pre.identity_line(ident)


def test_version_with_an_unreadable_model(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not an onnx file")
    res = _run(["--version"], **{pre.MODEL_ENV: str(bad)})
    assert res.returncode == 0, res.stderr
    assert "shipped model: unreadable: " in res.stdout and "cannot load ONNX model" in res.stdout


def test_info_with_torch(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}; CPU threads" in out
    assert "shipped model: " in out and "onnxruntime " in out and "CPU: " in out
    assert "16000 Hz" in out and "3c" in out


def test_info_without_torch() -> None:
    """With torch not importable, info still reports everything else."""
    block = ("import sys, importlib.abc\n"
             "class Block(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'torch' or name.startswith('torch.'):\n"
             "            raise ImportError('torch is blocked in this test')\n"
             "sys.meta_path.insert(0, Block())\n")
    res = _run(["info"], code_prefix=block)
    assert res.returncode == 0, res.stderr
    assert "torch: not installed" in res.stdout and "CPU: " in res.stdout
    assert "16000 Hz" in res.stdout and res.stdout.splitlines()[-1] == "TORCH_NOT_IMPORTED"
