"""``slotmpe export``: a trained checkpoint as one ONNX file that transcription runs without torch.

The model's forward pass has data-dependent loops (exact time chunking of the time-local stages,
slot attention accumulated over token chunks, see :class:`slotmpe.models.slotmpe.SlotMPE`), so it is
exported as separate stage graphs that :class:`slotmpe.transcribe.onnx_runner.OnnxModel` drives
with the same loops in NumPy:

====================  ========================================================  ======================
graph (name prefix)   inputs -> outputs                                         stage of ``SlotMPE``
====================  ========================================================  ======================
``encode/``           ``x (1,12,216,t)`` -> ``mix (1,72,t)`` probabilities,     ``encode`` (trunk and
                      [``feat (1,Cs,72,t)``], [``poly (1,8,t)`` softmax]        branches)
``query/``            ``slots (1,K,d)`` -> ``qk (1,K,d)``, ``qb (1,K,1)``        one attention step:
``accumulate/``       ``feat, qk, qb`` -> ``num (1,K,d)``, ``den (1,K,1)``       folded keys, softmax
``update/``           ``slots, num, den`` -> ``slots``                           over slots, FFN
``heads/``            ``slots`` -> ``activity_logits (1,K)`` [, ``timbre``]      activity, timbre, FiLM
                      [, ``gamma``, ``beta``]
``decode/``           ``feat, slots, activity_logits`` [, ``gamma, beta``] ->   mask decoder and the
                      ``slots_prob (1,K,72,t)``                                 gated output
====================  ========================================================  ======================

1a-type models (no slots) have only ``encode/``. All graphs live in one ONNX model (merged with
prefixes); the runner feeds the stage it runs and one-frame placeholders for the inputs of the
other stages (onnxruntime requires every graph input), which costs a few milliseconds per call. The ONNX ``metadata_props`` entry ``slotmpe`` holds JSON:
the experiment, stage sizes, receptive-field halos, chunk sizes, the learned initial slot queries,
whether the activity output is trained, the source checkpoint's versions and identity (file name,
size and SHA-256 of the ``.pt``: :func:`slotmpe.transcribe.runners.checkpoint_identity`, which
``slotmpe transcribe --model model.pt`` compares before it runs a sibling ``model.onnx``), the tuned
thresholds (``thresholds.json`` beside the checkpoint, when present) and the named-instrument
prototypes of the checkpoint (``extra["instrument_prototypes"]``, :mod:`slotmpe.instruments`).
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from slotmpe.transcribe.model_identity import identity_of_meta
from slotmpe.transcribe.options import thresholds_beside
from slotmpe.utils import atomic_path

ONNX_OPSET: int = 17
METADATA_KEY: str = "slotmpe"
FORMAT_VERSION: int = 1


class _Encode(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mix, feat, poly = self.m.encode(x)
        outs = [torch.sigmoid(mix)]
        if feat is not None:
            outs.append(feat)
        if poly is not None:
            outs.append(torch.softmax(poly.float(), dim=1))
        return tuple(outs)


class _Query(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.sa = m.slot_attention

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = self.sa
        q = sa.to_q(sa.slot_norm(slots)) * sa.scale
        return torch.matmul(q, sa.to_k.weight), torch.matmul(q, sa.to_k.bias).unsqueeze(-1)


class _Accumulate(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.sa = m.slot_attention

    def forward(self, feat: torch.Tensor, qk: torch.Tensor, qb: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.sa.tokens(feat)
        z = z.reshape(z.shape[0], -1, z.shape[-1])  # (1, 72 t, d)
        attn = torch.softmax(torch.matmul(qk, z.transpose(1, 2)) + qb, dim=1)
        return torch.matmul(attn, z), attn.sum(-1, keepdim=True)


class _AccumulateFolded(nn.Module):
    """:class:`_Accumulate` with the token map never built: the attention logits and numerators are
    computed in the ``Cs``-channel space of the slot-branch map (exact algebra, ~5x fewer
    operations per token than projecting every token to ``d`` channels).

    With ``f`` the channel-normalised map, ``y = W f + c_p`` (projection plus bias and pitch
    embedding) and ``z = gamma (y - mean(y)) / sigma(y) + beta`` (the token LayerNorm):
    ``q . z = (f . W^T(q gamma) + (q gamma) . c_p - sum(q gamma) mean) / sigma + q . beta``, where
    ``mean`` and ``sigma^2 = |y|^2 / d - mean^2`` need only ``f^T (W^T W) f`` (computed in float64);
    ``sum_j a_j z_j = gamma (W sum_j (a_j / sigma_j) f_j + sum_p c_p sum_{j in p} a_j / sigma_j
    - sum_j a_j mean_j / sigma_j) + beta sum_j a_j``.
    """

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        sa = m.slot_attention
        self.sa = sa
        w = sa.token_proj.weight.detach()  # (d, Cs)
        c = (sa.token_proj.bias.detach()[None, :] + sa.pitch_emb.detach())  # (72, d)
        self.register_buffer("w", w)
        self.register_buffer("c", c)
        self.register_buffer("gram", (w.double().T @ w.double()))  # (Cs, Cs) float64
        self.register_buffer("wbar", w.mean(0))  # (Cs,)
        self.register_buffer("cbar", c.mean(1))  # (72,)
        self.register_buffer("wc", (c.double() @ w.double()))  # (72, Cs): W^T c_p
        self.register_buffer("cc", (c.double() ** 2).sum(1))  # (72,)
        self.d = float(w.shape[0])
        self.eps = float(sa.input_norm.eps)

    def forward(self, feat: torch.Tensor, qk: torch.Tensor, qb: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        sa = self.sa
        gamma, beta = sa.input_norm.weight, sa.input_norm.bias
        f = sa.token_norm(feat.permute(0, 2, 3, 1))  # (1, 72, t, Cs)
        p, t, cs = f.shape[1], f.shape[2], f.shape[3]
        mean = torch.matmul(f, self.wbar) + self.cbar[:, None]  # (1, 72, t)
        fd = f.double()
        sq = ((torch.matmul(fd, self.gram) * fd).sum(-1) + 2.0 * (fd * self.wc[:, None, :]).sum(-1)
              + self.cc[:, None])  # |y|^2, (1, 72, t)
        var = (sq / self.d - mean.double() ** 2).clamp(min=0.0)
        inv = torch.rsqrt(var + self.eps).float().reshape(1, 1, -1)  # (1, 1, N)
        meanf = mean.reshape(1, 1, -1)
        qg = qk * gamma  # (1, K, d)
        fl = f.reshape(1, -1, cs)  # (1, N, Cs)
        k = qk.shape[1]
        vp = torch.matmul(qg, self.c.T)  # (1, K, 72)
        logits = (torch.matmul(torch.matmul(qg, self.w), fl.transpose(1, 2))
                  + vp[:, :, :, None].expand(1, k, p, t).reshape(1, k, -1)
                  - qg.sum(-1, keepdim=True) * meanf) * inv
        logits = logits + (torch.matmul(qk, beta)[..., None] + qb)
        attn = torch.softmax(logits, dim=1)  # (1, K, N)
        aw = attn * inv
        a_f = torch.matmul(aw, fl)  # (1, K, Cs)
        a_p = aw.reshape(1, k, p, t).sum(-1)  # (1, K, 72)
        a_m = (aw * meanf).sum(-1, keepdim=True)  # (1, K, 1)
        den = attn.sum(-1, keepdim=True)
        num = gamma * (torch.matmul(a_f, self.w.T) + torch.matmul(a_p, self.c) - a_m) + beta * den
        return num, den


class _Update(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.sa = m.slot_attention

    def forward(self, slots: torch.Tensor, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        sa = self.sa
        upd = torch.nn.functional.linear(num, sa.to_v.weight) + den * sa.to_v.bias
        slots = slots + upd / (den + sa.eps)
        return slots + sa.ffn(sa.ffn_norm(slots))


class _Heads(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = [self.m.decoder.activity_logits(slots)]
        if self.m.timbre_head is not None:
            timbre = self.m.timbre_head(slots)
            outs.append(timbre)
            if self.m.film is not None:
                outs.extend(self.m.film(timbre))
        return tuple(outs)


class _Decode(nn.Module):
    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, feat: torch.Tensor, slots: torch.Tensor, act: torch.Tensor,
                *film: torch.Tensor) -> torch.Tensor:
        from slotmpe.models.decoder import gated_slot_logits

        tokens = self.m.slot_attention.tokens(feat)
        film_t = (film[0], film[1]) if film else None
        _, z = self.m.decoder(tokens, slots, torch.sigmoid(act), film_t)
        return torch.sigmoid(gated_slot_logits(z, act))


def _export(module: nn.Module, args: tuple[torch.Tensor, ...], inputs: list[str],
            outputs: list[str], time_axes: dict[str, int], prefix: str) -> Any:
    import onnx
    from onnx import compose

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        torch.onnx.export(
            module, args, buf, input_names=inputs, output_names=outputs,
            dynamic_axes={n: {ax: f"t_{prefix.rstrip('/')}"} for n, ax in time_axes.items()},
            opset_version=ONNX_OPSET, dynamo=False,
        )
    return compose.add_prefix(onnx.load_from_string(buf.getvalue()), prefix)


def build_onnx(model: nn.Module, meta: dict[str, Any] | None = None,
               thresholds: dict[str, float] | None = None,
               identity: dict[str, Any] | None = None) -> Any:
    """The merged stage graphs of a :class:`~slotmpe.models.slotmpe.SlotMPE` as an ONNX model.

    ``identity`` (:func:`~slotmpe.transcribe.runners.checkpoint_identity` of the source file) and
    the checkpoint's ``extra["instrument_prototypes"]`` (from ``meta``) go into the metadata.
    """
    from onnx import compose, helper

    from slotmpe.notes import activity_is_trained
    from slotmpe.transcribe.notes import experiment_of

    model = model.eval().cpu()
    exp = experiment_of(model, meta or {})
    uses_slots = bool(getattr(exp, "uses_slots", False)) and model.n_slots > 0
    t = 40
    x = torch.rand(1, 12, 216, t)
    enc_out = ["mix"]
    with torch.no_grad():
        _, feat, poly = model.encode(x)
    if uses_slots:
        enc_out.append("feat")
    if poly is not None:
        enc_out.append("poly")
    graphs = [_export(_Encode(model), (x,), ["x"], enc_out,
                      {"x": 3, **{n: 3 if n == "feat" else 2 for n in enc_out}}, "encode/")]
    info: dict[str, Any] = {
        "format": "slotmpe-onnx", "format_version": FORMAT_VERSION,
        "experiment": getattr(exp, "name", None), "uses_slots": uses_slots,
        "has_poly": poly is not None, "enc_halo": int(model._enc_halo),
        "dec_halo": int(model._dec_halo), "chunk_frames": int(model.chunk_frames),
    }
    if uses_slots:
        assert feat is not None
        sa = model.slot_attention
        k, d = sa.n_slots, sa.dim
        feat = feat.detach()
        slots = sa.queries.detach()[None]
        with torch.no_grad():
            qk, qb = _Query(model)(slots)
            heads = _Heads(model)(slots)
        head_names = ["activity_logits"]
        if model.timbre_head is not None:
            head_names.append("timbre")
            if model.film is not None:
                head_names += ["gamma", "beta"]
        film_args = tuple(heads[2:]) if model.film is not None else ()
        graphs += [
            _export(_Query(model), (slots,), ["slots"], ["qk", "qb"], {}, "query/"),
            _export(_AccumulateFolded(model), (feat, qk, qb), ["feat", "qk", "qb"], ["num", "den"],
                    {"feat": 3}, "accumulate/"),
            _export(_Update(model), (slots, qk, qb), ["slots", "num", "den"], ["slots_out"], {},
                    "update/"),
            _export(_Heads(model), (slots,), ["slots"], head_names, {}, "heads/"),
            _export(_Decode(model), (feat, slots, heads[0], *film_args),
                    ["feat", "slots", "activity_logits", *(["gamma", "beta"] if film_args else [])],
                    ["slots_prob"], {"feat": 3, "slots_prob": 3}, "decode/"),
        ]
        info.update(
            n_slots=k, slot_dim=d, n_iters=sa.n_iters, token_frames=sa._frames_per_chunk(),
            queries=sa.queries.detach().cpu().numpy().astype(np.float32).tolist(),
            heads=head_names, film=bool(film_args), activity_trained=activity_is_trained(exp),
        )
    merged = graphs[0]
    for g in graphs[1:]:
        merged = compose.merge_models(merged, g, io_map=[])
    info["thresholds"] = dict(thresholds or {})
    info["source"] = {k: v for k, v in (meta or {}).items() if k in ("versions", "experiment")}
    info["source"].update(identity_of_meta(meta))  # the run: exp, dataset, seed (model_identity)
    if identity:
        info["source"]["identity"] = dict(identity)
    protos = ((meta or {}).get("extra") or {}).get("instrument_prototypes")
    if protos:
        from slotmpe.instruments import check_prototypes

        info["instrument_prototypes"] = check_prototypes(protos)
    helper.set_model_props(merged, {METADATA_KEY: json.dumps(info)})
    return merged


def export_onnx(model_path: str | os.PathLike[str], out_path: str | os.PathLike[str]) -> Path:
    """Export the checkpoint ``model_path`` to the ONNX file ``out_path`` (atomically).

    The tuned thresholds (``thresholds.json`` beside the checkpoint), the checkpoint's identity and
    its instrument prototypes are embedded in the metadata; the thresholds are also copied beside ``out_path`` when that folder has no ``thresholds.json`` yet. Raises
    :class:`TranscriptionError` for a checkpoint that cannot be loaded and
    :class:`slotmpe.thresholds.ThresholdsError` for a damaged ``thresholds.json``.
    """
    import onnx

    from slotmpe.transcribe.runners import checkpoint_identity, load_torch_model

    model, meta = load_torch_model(model_path)
    # the checkpoint's own thresholds.json (a damaged one is an error naming it)
    thresholds = {k: v for k, v in (thresholds_beside(model_path) or {}).items()
                  if v is not None}
    onnx_model = build_onnx(model, meta, thresholds, checkpoint_identity(model_path))
    out = Path(out_path)
    with atomic_path(out) as tmp:
        onnx.save(onnx_model, str(tmp))
    src_thr = Path(model_path).with_name("thresholds.json")
    dst_thr = out.with_name("thresholds.json")
    if src_thr.is_file() and not dst_thr.exists() and src_thr.resolve() != dst_thr.resolve():
        with atomic_path(dst_thr) as tmp:
            tmp.write_bytes(src_thr.read_bytes())
    return out
