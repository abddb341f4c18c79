"""Settings of one slot-model training run (``config.yaml``'s ``train:`` section)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from slotmpe.constants import WINDOW_FRAMES
from slotmpe.precision import PRECISIONS


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
        windows_per_epoch: training windows per epoch: an integer; ``None`` or ``"pass"`` = the
            dataset's full pass (random windows, as many as the training split holds); ``"pass/N"``
            = a pass divided by ``N``, rounded up (``"pass/4"``: the default, a quarter pass;
            :func:`pass_divisor`).
        val_windows: validation windows (evenly thinned, fixed); ``None`` = all.
        checks_per_epoch: validations per epoch (>= 1). The last one, at the epoch's end, drives
            early stopping, the learning-rate plateau and ``model.pt``; the others only add rows
            to ``train_log.csv`` (``epoch`` fractional, ``interim`` 1), so one run also shows
            what a shorter epoch would have kept. They change nothing in the training itself.
        num_workers: DataLoader worker processes (0 = load in the main process).
        seed: seed of initialisation, sampling and dropout.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``/``"auto"`` = CUDA when available.
        threads: torch intra-op threads (``None`` = all cores).
        loss_weights: overrides of :data:`slotmpe.experiments.BASE_LOSS_WEIGHTS`.
        timbre_match_weight: weight of the timbre cosine distance in the Hungarian cost.
        activity_match_weight: weight ``w`` of ``w * softplus(-activity_logit)`` per slot in the
            Hungarian cost (issue 29; 0 = the paper's matching); a row with its own weight (4m)
            overrides it (:func:`slotmpe.experiments.resolve_activity_match_weight`).
        selection_metric: validation column for early stopping and for choosing ``model.pt``:
            ``"pitch"`` (default: the unweighted sum of the experiment's pitch-map terms, see
            :func:`slotmpe.training.steps.pitch_terms`), ``"total"`` (the paper's weighted sum of
            every term) or one of the experiment's loss terms.
        plateau_metric: validation column the learning-rate plateau steps on (``None`` = the
            selection metric).
        grad_clip: clip the global gradient norm to this value (``None`` = no clipping).
        channels_last: run the model in channels-last memory format.
        precision: ``"fp32"`` (default: the same training on every CPU kind, so seeds run on
            different machines compare), ``"bf16"`` or ``"auto"`` (bf16 autocast on CUDA and on
            CPUs with AMX / AVX-512 BF16, else float32) (:mod:`slotmpe.precision`); the losses are always
            computed in float32.
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
    windows_per_epoch: int | str | None = None
    val_windows: int | None = None
    checks_per_epoch: int = 1
    num_workers: int = 0
    seed: int = 0
    device: str | None = None
    threads: int | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    timbre_match_weight: float = 1.0
    activity_match_weight: float = 0.0
    selection_metric: str = "pitch"
    plateau_metric: str | None = None
    grad_clip: float | None = 1.0
    channels_last: bool = True
    precision: str = "fp32"
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
        if isinstance(self.windows_per_epoch, str):
            divisor = pass_divisor(self.windows_per_epoch)
            self.windows_per_epoch = None if divisor == 1 else f"pass/{divisor}"
        if self.checks_per_epoch < 1:
            raise ValueError(f"checks_per_epoch must be >= 1; got {self.checks_per_epoch}")
        for name in ("windows_per_epoch", "val_windows"):
            v = getattr(self, name)
            if isinstance(v, int) and v < 1:
                raise ValueError(f"{name} must be >= 1 or None; got {v}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}")
        if not (self.activity_match_weight >= 0 and self.activity_match_weight != float("inf")):
            raise ValueError(
                f"activity_match_weight must be a finite number >= 0; got {self.activity_match_weight}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None; got {self.grad_clip}")
        self.loss_weights = dict(self.loss_weights or {})


def pass_divisor(value: str) -> int:
    """``N`` of a ``windows_per_epoch`` written ``"pass"`` (1) or ``"pass/N"`` (``N >= 1``).

    Raises:
        ValueError: any other string, naming it.
    """
    m = re.fullmatch(r"\s*pass\s*(?:/\s*([0-9]+)\s*)?", value)
    if m is None or (m.group(1) is not None and int(m.group(1)) < 1):
        raise ValueError(
            f"windows_per_epoch must be an integer >= 1, 'pass', 'pass/N' (N >= 1) or None; "
            f"got {value!r}")
    return int(m.group(1)) if m.group(1) is not None else 1


def resolve_windows_per_epoch(value: int | str | None, windows_per_pass: int) -> int | None:
    """Windows of one training epoch: ``value`` as an integer, ``None`` for a full pass, or
    ``ceil(windows_per_pass / N)`` for ``"pass/N"`` (at least 1)."""
    if isinstance(value, str):
        divisor = pass_divisor(value)
        return None if divisor == 1 else max(1, -(-int(windows_per_pass) // divisor))
    return value


# Fields that must agree between a checkpoint and the config that resumes it (the others, e.g.
# device, threads, workers, max_epochs or patience, may change between invocations).
_IDENTITY_FIELDS = (
    "batch_size", "lr", "weight_decay", "plateau_factor", "plateau_patience", "min_lr", "window",
    "windows_per_epoch", "val_windows", "seed", "loss_weights", "timbre_match_weight",
    "selection_metric", "plateau_metric", "grad_clip", "activity_match_weight",
)  # + the *resolved* precision, added by slotmpe.training.checkpoint._identity


