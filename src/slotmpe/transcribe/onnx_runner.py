"""Whole-file inference of an exported ONNX model with onnxruntime: no torch needed.

:class:`OnnxModel` loads a file written by :func:`slotmpe.transcribe.onnx_export.export_onnx` into
one ``InferenceSession`` (reused for every file) and reproduces :meth:`SlotMPE.forward
<slotmpe.models.slotmpe.SlotMPE.forward>` in eval mode stage by stage:

1. ``encode`` over time chunks of :data:`CHUNK_FRAMES` frames with ``enc_halo`` frames of context on
   each side (exact: the halo covers the receptive field), the fast-HCQT of each chunk sliced from
   the wide CQT just before it is needed (the ``(12, 216, T)`` input is never held whole);
2. ``n_iters`` slot-attention iterations, each accumulating the attention numerators and
   denominators over token chunks of ``token_frames`` frames;
3. the heads (activity, timbre, FiLM) on the final slots;
4. ``decode`` over time chunks with ``dec_halo`` frames of context.

Files longer than ``max_frames`` are cut into overlapping passes and stitched exactly as the torch
path does (:mod:`slotmpe.stitching`). Outputs equal the torch path's within float tolerance
(``tests/test_transcribe_onnx.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from slotmpe.cqt import hcqt_np
from slotmpe.stitching import chunk_bounds, stitch
from slotmpe.transcribe.errors import TranscriptionError
from slotmpe.utils import clamp_threads

METADATA_KEY: str = "slotmpe"
# Frames per stage call. Any length gives the same result (the halos cover the receptive fields);
# 256 keeps the largest activations (the decoder's, ~K x 16 x 72 floats per frame) near 40 MB.
CHUNK_FRAMES: int = 256


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``slotmpe`` metadata (JSON) of an exported model; :class:`TranscriptionError` if absent."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                    sess_options=_session_options(None))
    except Exception as exc:  # onnxruntime raises its own exception types
        raise TranscriptionError(f"{path}: cannot load ONNX model ({_first_line(exc)})") from exc
    return _metadata(sess, path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    # no busy-waiting worker threads: on a shared or loaded machine spinning burns CPU time that
    # the other threads (and processes) need
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        # at most one thread a CPU, as the torch path (slotmpe.utils.set_threads): more only
        # oversubscribes (--threads 4000 took 22.7 s and 1 GB; 100000 hung)
        so.intra_op_num_threads = clamp_threads(threads)
        so.inter_op_num_threads = 1
    return so


def _metadata(sess: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise TranscriptionError(f"{path}: not a slotmpe ONNX export (no '{METADATA_KEY}' metadata)")
    try:
        info = json.loads(raw)
    except ValueError as exc:
        raise TranscriptionError(f"{path}: unreadable slotmpe metadata ({exc})") from exc
    if not isinstance(info, dict) or info.get("format") != "slotmpe-onnx":
        raise TranscriptionError(f"{path}: not a slotmpe ONNX export (wrong format marker)")
    return info


class OnnxModel:
    """An exported slotmpe model in one onnxruntime session.

    Attributes: ``info`` (the metadata dict), ``uses_slots``, ``experiment`` (name or None).
    """

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None,
                 chunk_frames: int = CHUNK_FRAMES) -> None:
        import onnxruntime as ort

        p = Path(path)
        try:
            self.session = ort.InferenceSession(str(p), sess_options=_session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise TranscriptionError(f"{p}: cannot load ONNX model ({_first_line(exc)})") from exc
        self.path = p
        self.info = _metadata(self.session, p)
        try:
            self._setup(chunk_frames)
        except (KeyError, TypeError, ValueError) as exc:
            raise TranscriptionError(f"{p}: incomplete slotmpe metadata ({exc!r})") from exc

    def _setup(self, chunk_frames: int) -> None:
        """Read the stage settings from :attr:`info` (KeyError/TypeError/ValueError if damaged)."""
        self.uses_slots = bool(self.info.get("uses_slots"))
        self.experiment = self.info.get("experiment")
        self.has_poly = bool(self.info.get("has_poly"))
        self._placeholders = {
            i.name: np.zeros([d if isinstance(d, int) and d > 0 else 1 for d in i.shape],
                             dtype=np.float32)
            for i in self.session.get_inputs()
        }
        self.chunk_frames = int(chunk_frames)
        self.enc_halo = int(self.info["enc_halo"])
        self.dec_halo = int(self.info["dec_halo"])
        if self.uses_slots:
            self.queries = np.asarray(self.info["queries"], dtype=np.float32)[None]  # (1, K, d)
            self.n_iters = int(self.info["n_iters"])
            self.token_frames = min(int(self.info["token_frames"]), self.chunk_frames)
            self.heads = list(self.info["heads"])
            self.film = bool(self.info["film"])

    def _run(self, stage: str, outputs: list[str], feeds: dict[str, np.ndarray]
             ) -> list[np.ndarray]:
        """Run the outputs of one stage graph; other stages' inputs get one-frame placeholders."""
        given = {f"{stage}/{k}": v for k, v in feeds.items()}
        return self.session.run([f"{stage}/{o}" for o in outputs], {**self._placeholders, **given})

    def _chunks(self, n: int, halo: int) -> list[tuple[int, int, int, int]]:
        """``(a, b, lo, hi)``: frames ``[a, b)`` are computed from the context ``[lo, hi)``."""
        if n <= self.chunk_frames:
            return [(0, n, 0, n)]
        out = []
        for a in range(0, n, self.chunk_frames):
            b = min(a + self.chunk_frames, n)
            out.append((a, b, max(0, a - halo), min(n, b + halo)))
        return out

    def encode(self, cqt: np.ndarray) -> dict[str, np.ndarray]:
        """``mix`` ``(72, T)`` [, ``feat`` ``(Cs, 72, T)``] [, ``poly`` ``(8, T)``] of a wide CQT
        ``(N_WIDE, T)``."""
        n = cqt.shape[-1]
        names = ["mix"] + (["feat"] if self.uses_slots else []) + (["poly"] if self.has_poly else [])
        out: dict[str, np.ndarray] = {}
        for a, b, lo, hi in self._chunks(n, self.enc_halo):
            x = hcqt_np(cqt[:, lo:hi])[None]
            res = self._run("encode", names, {"x": x})
            for name, r in zip(names, res, strict=True):
                if name not in out:
                    out[name] = np.empty(r.shape[1:-1] + (n,), dtype=np.float32)
                out[name][..., a:b] = r[0][..., a - lo : b - lo]
        return out

    def attend(self, feat: np.ndarray) -> dict[str, np.ndarray]:
        """Final slots and heads for a slot-branch map ``feat`` ``(Cs, 72, T)``."""
        n = feat.shape[-1]
        slots = self.queries
        for _ in range(self.n_iters):
            qk, qb = self._run("query", ["qk", "qb"], {"slots": slots})
            num = np.zeros_like(slots)
            den = np.zeros(slots.shape[:2] + (1,), dtype=np.float32)
            for a in range(0, n, self.token_frames):
                f = np.ascontiguousarray(feat[None, ..., a : a + self.token_frames])
                dn, dd = self._run("accumulate", ["num", "den"], {"feat": f, "qk": qk, "qb": qb})
                num += dn
                den += dd
            (slots,) = self._run("update", ["slots_out"], {"slots": slots, "num": num, "den": den})
        heads = self._run("heads", self.heads, {"slots": slots})
        out = {"slots_vec": slots, **dict(zip(self.heads, heads, strict=True))}
        return out

    def decode(self, feat: np.ndarray, att: dict[str, np.ndarray]) -> np.ndarray:
        """Slot probabilities ``(K, 72, T)`` of ``feat`` ``(Cs, 72, T)`` given :meth:`attend`'s
        result."""
        n = feat.shape[-1]
        k = att["slots_vec"].shape[1]
        out = np.empty((k, feat.shape[1], n), dtype=np.float32)
        feeds = {"slots": att["slots_vec"], "activity_logits": att["activity_logits"]}
        if self.film:
            feeds.update(gamma=att["gamma"], beta=att["beta"])
        for a, b, lo, hi in self._chunks(n, self.dec_halo):
            f = np.ascontiguousarray(feat[None, ..., lo:hi])
            (p,) = self._run("decode", ["slots_prob"], {"feat": f, **feeds})
            out[..., a:b] = p[0][..., a - lo : b - lo]
        return out

    def forward(self, cqt: np.ndarray) -> dict[str, np.ndarray]:
        """One pass over a wide CQT ``(N_WIDE, T)``: the probabilities of
        :func:`slotmpe.inference.predict` (``mix``, ``slots``, ``activity``, ``timbre``, ``poly``)."""
        enc = self.encode(cqt)
        probs = {"mix": enc["mix"]}
        if "poly" in enc:
            probs["poly"] = enc["poly"]
        if self.uses_slots:
            feat = enc.pop("feat")
            att = self.attend(feat)
            probs["slots"] = self.decode(feat, att)
            del feat
            probs["activity"] = (1.0 / (1.0 + np.exp(-att["activity_logits"][0]))).astype(
                np.float32)
            if "timbre" in att:
                probs["timbre"] = att["timbre"][0]
        return probs

    def predict(self, cqt: np.ndarray, max_frames: int | None = None) -> dict[str, np.ndarray]:
        """Whole-file probabilities of a wide CQT ``(N_WIDE, T)``; files longer than
        ``max_frames`` are run in overlapping passes and stitched (:mod:`slotmpe.stitching`)."""
        n = cqt.shape[-1]
        if max_frames is None or n <= max_frames:
            return self.forward(cqt)
        bounds = chunk_bounds(n, max_frames)
        return stitch([self.forward(cqt[:, s:e]) for s, e in bounds], bounds, n)
