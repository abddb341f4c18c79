"""Training protocol of the slot model (paper Section V-A), resumable and deterministic.

Protocol: 23-frame windows, batch 8, AdamW (lr 1e-3, weight decay 0.01), ReduceLROnPlateau (factor
0.5) on the *total* validation loss, at most ``max_epochs`` epochs, early stopping after
``patience`` epochs without improvement of the selection metric, and the best checkpoint by that
metric written to ``model.pt``.

Decisions (where the paper is silent):

* **Plateau patience 2.** ``ReduceLROnPlateau(patience=2)`` halves the learning rate on the third
  epoch without improvement of the total validation loss, i.e. before early stopping (patience 6)
  ends the run, so every run that stops early has tried a smaller step first.
* **Selection.** ``TrainConfig.selection_metric`` names the validation column used for early
  stopping and for choosing ``model.pt`` (default ``"total"``). The total is the weighted sum of the
  experiment's loss terms, so the auxiliary timbre and polyphony losses of 2a-3c *are* considered,
  with their config weights, exactly as they are trained. Terms with weight 0 (the polyphony
  losses of 3a, 3b's slot polyphony) are logged in ``train_log.csv`` but do not influence the
  choice unless ``selection_metric`` names one of them.
* **Epochs.** A training epoch is ``windows_per_epoch`` random windows (``None``: one window per
  training position as :class:`slotmpe.data.WindowDataset` defines it), re-drawn every epoch from
  ``(seed, epoch)``; validation uses the dataset's fixed windows, evenly thinned to
  ``val_windows`` when that is set.
* **Determinism and resume.** Every random choice of an epoch is a function of ``(seed, epoch)``
  (dataset windows via ``set_epoch``, batch order and worker seeds via a per-epoch generator) or of
  the torch/numpy/python RNG state, which is saved in ``checkpoint_last.pt`` after every epoch
  together with the model, optimiser, scheduler and early-stopping state and the log rows. A run
  killed at any point and restarted continues after the last finished epoch and ends with the
  same weights as an uninterrupted run (same machine, device and thread count). On the CPU
  ``torch.use_deterministic_algorithms(True)`` is in force during training.
* **Outputs.** ``model.pt`` (via :func:`slotmpe.models.save_checkpoint`) and ``train_log.csv``
  appear only when the run has finished, both atomically; ``checkpoint_last.pt`` is removed then
  unless ``keep_checkpoint`` is set.
* **Speed (CPU, 2 threads, batch 8; ``benchmarks/bench_train.py``).** Data loading runs at
  ~3600 windows/s in the main process, far above the step rate, so ``num_workers: 0`` is right on
  small machines. On a 2-core AMD EPYC (AVX2, no native bf16) one full 3c step (forward, Hungarian
  matching, every loss term, backward, AdamW) ran at ~25 windows/s and 1a at ~130-170 windows/s
  with the plain layout. The profile is dominated by convolutions (forward and backward ~30 %),
  ``mm``/``bmm`` (~25 %: token projection, folded attention, FiLM decoder) and BatchNorm; the
  Hungarian matching (one batched cost matrix by ``bmm``, one host copy, scipy on 8 x <= 8
  matrices) does not appear among the top ops. Defaults: channels-last
  convolutions (``channels_last: true``, same outputs within float tolerance) and fused AdamW
  (:func:`make_optimizer`): 1.12x for 3c and 1.35x for 1a, measured interleaved in one process on
  a loaded machine. ``compile`` (off by default) gave 1.3-1.4x for 3c on an idle machine but no
  gain under load, costs minutes of compilation per model and recompiles for eval mode; ``bf16``
  autocast is CUDA-only (it was ~9x *slower* on this CPU, which lacks AVX512-BF16/AMX).
* **GPU.** The device is CUDA when present (``device: auto``), never required. With
  ``deterministic: true`` (default) :func:`deterministic_mode` sets ``CUBLAS_WORKSPACE_CONFIG``,
  turns TF32 and cuDNN benchmarking off; ``deterministic: false`` turns them on.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import functools
import math
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from slotmpe.constants import EMBED_DIM, WINDOW_FRAMES
from slotmpe.experiments import Experiment, default_loss_weights, get_experiment
from slotmpe.losses import compute_losses, logged_terms
from slotmpe.utils import atomic_path, get_logger, resolve_device, seed_everything, set_threads

log = get_logger(__name__)

CHECKPOINT_NAME = "checkpoint_last.pt"
MODEL_NAME = "model.pt"
LOG_NAME = "train_log.csv"
_CKPT_VERSION = 1


@dataclass
class TrainConfig:
    """Settings of one training run (``config.yaml``'s ``train:`` section maps onto these names).

    Attributes:
        max_epochs: upper bound on epochs (paper: 100).
        patience: early-stopping patience in epochs without improvement of ``selection_metric``
            (paper: 6).
        batch_size: windows per batch (paper: 8).
        lr: AdamW initial learning rate (paper: 1e-3).
        weight_decay: AdamW weight decay (torch's default 0.01).
        plateau_factor: ReduceLROnPlateau factor on the total validation loss (paper: 0.5).
        plateau_patience: ReduceLROnPlateau patience in epochs (2, see the module docstring).
        min_lr: lower bound of the learning rate.
        window: window length in frames (paper: 23).
        windows_per_epoch: training windows per epoch; ``None`` = the dataset's full pass.
        val_windows: validation windows (evenly thinned, fixed); ``None`` = all.
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seed of initialisation, sampling and dropout.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``/``"auto"`` = CUDA when available.
        threads: torch intra-op threads (``None`` = all cores).
        loss_weights: overrides of :data:`slotmpe.experiments.BASE_LOSS_WEIGHTS`.
        timbre_match_weight: weight of the timbre cosine distance in the Hungarian cost.
        selection_metric: validation column for early stopping and for choosing ``model.pt``:
            ``"total"`` or one of the experiment's loss terms.
        grad_clip: clip the global gradient norm to this value (``None`` = no clipping).
        channels_last: run the model in channels-last memory format.
        bf16: bfloat16 autocast of the forward pass (the losses are computed in float32); CUDA
            only: on the CPU it is ignored with a warning (measured ~9x slower without native bf16).
        compile: wrap the model in ``torch.compile`` (see the module docstring for its cost).
        deterministic: deterministic algorithms during the run; on CUDA also
            ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, TF32 off and cuDNN benchmarking off. ``False``
            allows TF32 and cuDNN benchmarking on CUDA (faster, not bit-reproducible).
        keep_checkpoint: keep ``checkpoint_last.pt`` after a finished run.
        progress: show a tqdm progress bar.
        widths: width preset of the model (``slotmpe.models.WIDTH_PRESETS``: efficient, wide).
    """

    max_epochs: int = 100
    patience: int = 6
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-6
    window: int = WINDOW_FRAMES
    windows_per_epoch: int | None = None
    val_windows: int | None = None
    num_workers: int = 0
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    timbre_match_weight: float = 1.0
    selection_metric: str = "total"
    grad_clip: float | None = None
    channels_last: bool = True
    bf16: bool = False
    compile: bool = False
    deterministic: bool = True
    keep_checkpoint: bool = False
    progress: bool = True
    widths: str = "efficient"

    def __post_init__(self) -> None:
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError(
                f"max_epochs, patience and batch_size must be >= 1; got {self.max_epochs}, "
                f"{self.patience}, {self.batch_size}"
            )
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1); got {self.plateau_factor}")
        for name in ("windows_per_epoch", "val_windows"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 or None; got {v}")
        self.loss_weights = dict(self.loss_weights or {})


# Fields that must agree between a checkpoint and the config that resumes it (the others, e.g.
# device, threads, workers, max_epochs or patience, may change between invocations).
_IDENTITY_FIELDS = (
    "batch_size", "lr", "weight_decay", "plateau_factor", "plateau_patience", "min_lr", "window",
    "windows_per_epoch", "val_windows", "seed", "loss_weights", "timbre_match_weight",
    "selection_metric", "grad_clip", "bf16",
)


# ----------------------------------------------------------------------------- embeddings


def load_embeddings_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``embeddings.parquet`` (columns ``track_id``, ``e0``..``e127``) into ``{track_id: (128,)}``.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file for a missing file, missing columns,
    duplicated track ids or non-finite values.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"timbre embeddings file {path} does not exist")
    df = pd.read_parquet(path)
    cols = [f"e{i}" for i in range(EMBED_DIM)]
    missing = [c for c in ["track_id", *cols] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing[:5]}{'...' if len(missing) > 5 else ''}")
    ids = df["track_id"].astype(str)
    if ids.duplicated().any():
        raise ValueError(f"{path}: duplicated track_id(s) {sorted(set(ids[ids.duplicated()]))[:5]}")
    mat = df[cols].to_numpy(dtype=np.float32)
    if not np.isfinite(mat).all():
        raise ValueError(f"{path}: non-finite embedding values")
    return {t: mat[i] for i, t in enumerate(ids)}


# ----------------------------------------------------------------------------- steps


def batch_to(batch: Mapping[str, Any], device: torch.device | str, channels_last: bool = False
             ) -> dict[str, Any]:
    """Move every tensor of a collated batch to ``device`` (``x`` optionally channels-last)."""
    out: dict[str, Any] = {}
    non_blocking = torch.device(device).type == "cuda"
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=non_blocking)
            if k == "x" and channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; on any other device a no-op (with a one-time warning)."""
    if not enabled:
        return contextlib.nullcontext()
    kind = torch.device(device).type
    if kind != "cuda":
        _warn_bf16_off(kind)
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)


@functools.cache
def _warn_bf16_off(kind: str) -> None:
    log.warning("bf16 autocast is a CUDA-only option; ignored on %s (float32 is used)", kind)


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.01
                   ) -> torch.optim.Optimizer:
    """AdamW over ``model``'s parameters, with the fused kernel (one kernel for all parameters,
    same update rule, deterministic on CPU and CUDA) where the device supports it."""
    params = [p for p in model.parameters() if p.requires_grad]
    dev = params[0].device.type if params else "cpu"
    fused = dev in ("cpu", "cuda")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def _float_outputs(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Outputs in float32 (after bf16 autocast the losses still run in full precision)."""
    return {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in outputs.items()}


def forward_losses(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    exp: Experiment,
    weights: Mapping[str, float],
    match_emb_weight: float = 1.0,
    bf16: bool = False,
) -> dict[str, torch.Tensor]:
    """Forward ``batch["x"]`` ``(B, 12, 216, W)`` and return :func:`compute_losses`'s dict."""
    x = batch["x"]
    with _autocast(x.device, bf16):
        outputs = model(x)
    return compute_losses(exp, _float_outputs(outputs), batch, weights, match_emb_weight)


def train_step(
    model: torch.nn.Module,
    batch: Mapping[str, torch.Tensor],
    exp: Experiment,
    weights: Mapping[str, float],
    optimizer: torch.optim.Optimizer,
    match_emb_weight: float = 1.0,
    grad_clip: float | None = None,
    bf16: bool = False,
) -> dict[str, torch.Tensor]:
    """One optimisation step on one batch (already on the model's device); returns the losses."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    losses = forward_losses(model, batch, exp, weights, match_emb_weight, bf16)
    total = losses["total"]
    if not torch.isfinite(total):
        raise FloatingPointError(f"non-finite training loss: { {k: float(v) for k, v in losses.items()} }")
    total.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    return losses


def _accumulate(
    acc: torch.Tensor | None, losses: Mapping[str, torch.Tensor], keys: tuple[str, ...], n: int
) -> torch.Tensor:
    vals = torch.stack([losses[k].detach().float() for k in keys]) * n
    return vals if acc is None else acc + vals


def train_one_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    exp: Experiment,
    weights: Mapping[str, float],
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """One pass over ``loader``; returns the window-weighted mean of every logged term + total."""
    keys = (*logged_terms(exp), "total")
    acc, n = None, 0
    for batch in loader:
        b = batch_to(batch, device, cfg.channels_last)
        losses = train_step(model, b, exp, weights, optimizer, cfg.timbre_match_weight,
                            cfg.grad_clip, cfg.bf16)
        bs = int(b["x"].shape[0])
        acc, n = _accumulate(acc, losses, keys, bs), n + bs
    if acc is None:
        raise RuntimeError("the training loader yielded no batch")
    return dict(zip(keys, (acc / n).tolist(), strict=True))


@torch.no_grad()
def evaluate_losses(
    model: torch.nn.Module,
    loader: DataLoader,
    exp: Experiment,
    weights: Mapping[str, float],
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Mean validation losses (eval mode, no gradient), window-weighted over ``loader``."""
    model.eval()
    keys = (*logged_terms(exp), "total")
    acc, n = None, 0
    for batch in loader:
        b = batch_to(batch, device, cfg.channels_last)
        losses = forward_losses(model, b, exp, weights, cfg.timbre_match_weight, cfg.bf16)
        bs = int(b["x"].shape[0])
        acc, n = _accumulate(acc, losses, keys, bs), n + bs
    if acc is None:
        raise RuntimeError("the validation loader yielded no batch")
    return dict(zip(keys, (acc / n).tolist(), strict=True))


# ----------------------------------------------------------------------------- data


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(epoch), 0x5107]).generate_state(1)[0])


def _worker_init(worker_id: int) -> None:
    """Seed numpy/python in a DataLoader worker from torch's per-worker seed."""
    s = torch.initial_seed() % (2**32)
    np.random.seed(s)
    random.seed(s)


def _epoch_loader(ds: Dataset, cfg: TrainConfig, epoch: int, shuffle: bool, pin: bool) -> DataLoader:
    """A loader whose order and worker seeds depend only on ``(cfg.seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed(_epoch_seed(cfg.seed, epoch))
    return DataLoader(
        ds,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=cfg.num_workers,
        worker_init_fn=_worker_init if cfg.num_workers else None,
        pin_memory=pin,
        drop_last=False,
        persistent_workers=False,
    )


def make_datasets(
    feature_dir: Path, cfg: TrainConfig, embeddings: dict[str, np.ndarray] | None
) -> tuple[Any, Any]:
    """Training :class:`slotmpe.data.WindowDataset` (random windows) and the fixed validation
    windows (``cfg.val_windows`` evenly spaced ones, or all)."""
    from slotmpe.data import WindowDataset

    train = WindowDataset(feature_dir, "train", train=True, window=cfg.window,
                          windows_per_epoch=cfg.windows_per_epoch, seed=cfg.seed,
                          embeddings=embeddings)
    val = WindowDataset(feature_dir, "val", train=False, window=cfg.window,
                        windows_per_epoch=cfg.val_windows, seed=cfg.seed, embeddings=embeddings)
    if len(train) == 0:
        raise ValueError(f"{feature_dir}: no training windows (split 'train' is empty or too short)")
    if len(val) == 0:
        raise ValueError(f"{feature_dir}: no validation windows (split 'val' is empty or too short)")
    return train, val


# ----------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "gauss": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["gauss"]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # different GPU count: keep the current state
            torch.cuda.set_rng_state_all(state["cuda"])


def _identity(exp_name: str, cfg: TrainConfig) -> dict[str, Any]:
    d = dataclasses.asdict(cfg)
    return {"exp": exp_name, **{k: d[k] for k in _IDENTITY_FIELDS}}


def _save_last(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_last(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report any unreadable file the same way
        raise RuntimeError(f"cannot read resume checkpoint {path}: {e}; delete it to start over") from e
    if state.get("version") != _CKPT_VERSION:
        raise RuntimeError(f"{path}: checkpoint version {state.get('version')} != {_CKPT_VERSION}")
    if state["identity"] != identity:
        diff = {k: (state["identity"].get(k), v) for k, v in identity.items()
                if state["identity"].get(k) != v}
        raise RuntimeError(
            f"{path} was written by a different configuration {diff} (checkpoint, now); "
            "delete it to start over"
        )
    return state


def _write_log(path: Path, rows: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})


# ----------------------------------------------------------------------------- the run


CUBLAS_WORKSPACE = ":4096:8"


@contextlib.contextmanager
def deterministic_mode(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """Reproducible numerics for the duration of a run; everything is restored afterwards.

    ``enabled``: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops without a
    deterministic implementation warn); on CUDA also ``CUBLAS_WORKSPACE_CONFIG`` (set to
    ``:4096:8`` unless already set; cuBLAS reads it when it first initialises, so set it in the
    environment to be sure), TF32 off for matmuls and cuDNN, cuDNN deterministic and not
    benchmarking. Not ``enabled`` on CUDA: TF32 and cuDNN benchmarking on (fast, not reproducible).
    On the CPU, disabled means torch's defaults.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    prev_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    prev_env = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if cuda:
        if enabled and prev_env is None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not enabled
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = enabled, not enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev_cudnn
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev_tf32
        if cuda and enabled and prev_env is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def train_experiment(
    exp_name: str,
    feature_dir: Path,
    out_dir: Path,
    cfg: TrainConfig,
    embeddings_path: Path | None = None,
    dataset: str | None = None,
) -> Path:
    """Train experiment ``exp_name`` on the feature cache ``feature_dir``; returns ``out_dir/model.pt``.

    Writes ``out_dir/model.pt`` (best epoch by ``cfg.selection_metric`` on the validation windows;
    ``extra`` holds the experiment, dataset, seed, best epoch, its validation losses and the config)
    and ``out_dir/train_log.csv`` (``epoch``, ``train_<term>``, ``val_<term>`` for every logged term
    and ``total``, ``lr``, ``seconds``). Resumes from ``out_dir/checkpoint_last.pt`` when present.

    Args:
        exp_name: "1a".."3c".
        feature_dir: folder with ``index.csv`` and the piece ``.npz`` files.
        out_dir: output folder (created).
        cfg: the training settings.
        embeddings_path: ``embeddings.parquet`` of the timbre encoder; required by experiments with
            a timbre head (2a-3c), ignored otherwise.
        dataset: dataset name, recorded in the checkpoint (informational).
    """
    from tqdm.auto import tqdm

    from slotmpe.models import build_model, save_checkpoint

    exp = get_experiment(exp_name)
    feature_dir, out_dir = Path(feature_dir), Path(out_dir)
    if exp.target_kind == "family":
        from slotmpe.data import check_family_labels

        check_family_labels(feature_dir, ("train", "val"), f"experiment {exp.name}")
    weights = default_loss_weights(exp, cfg.loss_weights)
    terms = logged_terms(exp)
    if cfg.selection_metric != "total" and cfg.selection_metric not in terms:
        raise ValueError(
            f"selection_metric {cfg.selection_metric!r} is not logged for experiment {exp.name}; "
            f"use 'total' or one of {list(terms)}"
        )
    embeddings = None
    if exp.timbre_head:
        if embeddings_path is None:
            raise ValueError(
                f"experiment {exp.name} trains a timbre head against source embeddings: pass "
                "embeddings_path=results/<dataset>/timbre/embeddings.parquet"
            )
        embeddings = load_embeddings_table(embeddings_path)

    threads = set_threads(cfg.threads)
    device = torch.device(resolve_device(cfg.device))
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, model_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / MODEL_NAME, out_dir / LOG_NAME
    identity = _identity(exp.name, cfg)

    if cfg.bf16 and device.type != "cuda":
        log.warning("train.bf16 is a CUDA-only option; training on %s in float32", device)
    with deterministic_mode(device, cfg.deterministic):
        seed_everything(cfg.seed)
        model = build_model(exp.name, preset=cfg.widths).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience,
            min_lr=cfg.min_lr,
        )
        train_ds, val_ds = make_datasets(feature_dir, cfg, embeddings)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("exp %s on %s: device %s, %d torch threads, %d workers, %d parameters, "
                 "%d train windows/epoch, %d val windows, terms %s",
                 exp.name, dataset or feature_dir, device, threads, cfg.num_workers, n_params,
                 len(train_ds), len(val_ds), {t: weights[t] for t in terms})

        start_epoch, rows = 0, []
        best: dict[str, Any] = {"value": math.inf, "epoch": 0, "bad_epochs": 0,
                                "state": None, "val": {}}
        finished = False
        if ckpt_path.exists():
            state = _load_last(ckpt_path, identity)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best, rows, start_epoch = state["best"], state["log"], int(state["epoch"])
            finished = bool(state["finished"])
            _set_rng_state(state["rng"])
            log.info("resuming %s from %s after epoch %d", exp.name, ckpt_path, start_epoch)

        step_model = torch.compile(model) if cfg.compile else model
        pin = device.type == "cuda"
        val_loader = _epoch_loader(val_ds, cfg, 0, shuffle=False, pin=pin)
        bar = tqdm(total=cfg.max_epochs, initial=start_epoch, desc=f"train {exp.name}",
                   unit="epoch", disable=not cfg.progress, dynamic_ncols=True)
        try:
            epoch = start_epoch
            while not finished and epoch < cfg.max_epochs and best["bad_epochs"] < cfg.patience:
                t0 = time.perf_counter()
                lr = optimizer.param_groups[0]["lr"]
                if hasattr(train_ds, "set_epoch"):
                    train_ds.set_epoch(epoch)
                loader = _epoch_loader(train_ds, cfg, epoch, shuffle=True, pin=pin)
                tr = train_one_epoch(step_model, loader, exp, weights, optimizer, cfg, device)
                va = evaluate_losses(step_model, val_loader, exp, weights, cfg, device)
                if not math.isfinite(va["total"]):
                    raise FloatingPointError(f"non-finite validation loss in epoch {epoch + 1}: {va}")
                scheduler.step(va["total"])
                epoch += 1
                sel = va[cfg.selection_metric]
                if sel < best["value"]:
                    best = {"value": sel, "epoch": epoch, "bad_epochs": 0, "val": va,
                            "state": {k: v.detach().cpu().clone()
                                      for k, v in model.state_dict().items()}}
                else:
                    best["bad_epochs"] += 1
                row: dict[str, float] = {"epoch": epoch}
                row.update({f"train_{k}": v for k, v in tr.items()})
                row.update({f"val_{k}": v for k, v in va.items()})
                row.update({"lr": lr, "seconds": time.perf_counter() - t0})
                rows.append(row)
                finished = epoch >= cfg.max_epochs or best["bad_epochs"] >= cfg.patience
                _save_last(ckpt_path, {
                    "version": _CKPT_VERSION, "identity": identity, "epoch": epoch,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "best": best, "log": rows,
                    "rng": _rng_state(), "finished": finished,
                })
                log.info("epoch %d/%d  train %.4f  val %.4f  (%s %.4f, best epoch %d)  lr %.2e  %.1fs",
                         epoch, cfg.max_epochs, tr["total"], va["total"], cfg.selection_metric,
                         sel, best["epoch"], lr, row["seconds"])
                bar.set_postfix(train=f"{tr['total']:.4f}", val=f"{va['total']:.4f}",
                                best=best["epoch"])
                bar.update(1)
        finally:
            bar.close()

    if best["state"] is None:
        raise RuntimeError(f"{exp.name}: no epoch was trained (max_epochs={cfg.max_epochs})")
    model.load_state_dict(best["state"])
    extra = {
        "exp": exp.name, "dataset": dataset, "seed": cfg.seed, "best_epoch": best["epoch"],
        "selection_metric": cfg.selection_metric, "best_value": best["value"],
        "val_losses": best["val"], "epochs_trained": len(rows),
        "train_config": copy.deepcopy(dataclasses.asdict(cfg)), "loss_weights": weights,
        "device": str(device), "threads": threads,
    }
    save_checkpoint(model_path, model.cpu().to(memory_format=torch.contiguous_format), extra)
    _write_log(log_path, rows)
    if not cfg.keep_checkpoint:
        ckpt_path.unlink(missing_ok=True)
    log.info("%s: best epoch %d (%s %.4f) of %d; wrote %s", exp.name, best["epoch"],
             cfg.selection_metric, best["value"], len(rows), model_path)
    return model_path
