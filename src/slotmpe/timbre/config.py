"""Settings and table layout of the timbre encoder (:class:`TimbreConfig`, embedding columns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slotmpe.constants import EMBED_DIM, TIMBRE_VIEWS, TIMBRE_WINDOW_FRAMES

PAPER_TOP1 = 71.52
PAPER_TOP5 = 92.36
EMBEDDING_ID_COLUMNS: tuple[str, ...] = ("track_id", "piece_id", "split", "instrument", "family")
EMBEDDING_COLUMNS: tuple[str, ...] = EMBEDDING_ID_COLUMNS + tuple(f"e{i}" for i in range(EMBED_DIM))


@dataclass
class TimbreConfig:
    """Settings of :func:`train_encoder` (config.yaml section ``timbre``; keys = field names).

    Defaults follow the paper (Sec. V-A) where it gives a value; the rest are our choices.
    """

    max_epochs: int = 100
    patience: int = 6  # epochs without a better selection score before stopping
    batch_size: int = 32  # sources (stems) per batch; each gives `views` windows
    views: int = TIMBRE_VIEWS  # positive views per source
    window: int = TIMBRE_WINDOW_FRAMES  # frames per view (46 ~ 1.47 s)
    lr: float = 5e-4  # AdamW
    weight_decay: float = 1e-2
    min_lr: float = 1e-6  # floor of the cosine annealing (per step, over max_epochs)
    items_per_epoch: int | None = None  # training items (sources) per epoch; None: one per stem
    temperature: float = 0.1  # contrastive temperature
    w_contrastive: float = 1.0
    w_consistency: float = 0.5
    w_variance: float = 1.0
    w_covariance: float = 0.04
    variance_target: float = 1.0  # hinge target of the per-dimension std of sqrt(D) * embedding
    gain_db: float = 3.0  # random gain in [-gain_db, gain_db] dB
    freq_mask_bins: int = 24  # FrequencyMasking max width (wide-CQT bins; 36 = one octave)
    time_mask_frames: int = 8  # TimeMasking max width (frames)
    min_active_frac: float = 0.5  # a window is active when >= this fraction of frames is active
    energy_db: float = 30.0  # energy rule: within this many dB of the stem's loud frames
    label_agreement_min: float = 0.5
    val_queries: int = 8  # query windows per validation stem (plus one key window)
    export_windows: int = 8  # windows averaged per stem by export_embeddings
    seed: int = 0
    device: str | None = None  # None/"auto": cuda if available
    threads: int | None = None  # torch intra-op threads (None: leave as is)
    progress: bool = True  # tqdm progress bars
    model: dict[str, Any] = field(default_factory=dict)  # TimbreEncoder kwargs overrides
    channels_last: bool = True  # channels-last convolutions in training (same result, faster)
    precision: str = "fp32"  # fp32 | bf16 | auto autocast of training steps (slotmpe.precision)

    def __post_init__(self) -> None:
        if self.views < 2:
            raise ValueError(f"TimbreConfig.views must be >= 2 (positives), got {self.views}")
        if self.batch_size < 1 or self.max_epochs < 1 or self.window < 8:
            raise ValueError(
                "TimbreConfig needs batch_size >= 1, max_epochs >= 1 and window >= 8; got "
                f"{self.batch_size}, {self.max_epochs}, {self.window}"
            )

