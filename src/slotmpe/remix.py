"""Remix augmentation (extension 4i, issue 23): new training mixtures from the cached stem CQTs.

:class:`RemixDataset` wraps the training :class:`slotmpe.data.WindowDataset`. Item ``idx`` of
epoch ``e`` is, with probability :data:`REMIX_PROB`, a *remix*, otherwise the wrapped dataset's
window ``idx`` unchanged (real, musically coherent mixtures stay in the diet). All randomness comes
from ``numpy.random.default_rng([seed, e, idx, REMIX_TAG])``, so an epoch is reproducible and
independent of worker count and order.

A remix of ``W`` frames:

1. **How many stems**: the number of pitched sources of a uniformly drawn training piece (capped at
   ``max_sources`` and the number of stems available), so remixes follow the split's polyphony.
2. **Which stems**: that many distinct (piece, stem) pairs drawn uniformly from every pitched stem
   of the training pieces that have stem audio (stems of one piece may meet again, usually they
   come from different pieces).
3. **Time offsets**: each stem gets its own window start, drawn uniformly among the starts whose
   window contains at least one active frame of that stem (so every drawn stem sounds).
4. **Gains**: each stem's linear magnitude (:func:`slotmpe.stem_masks.log_expand` of its cached
   CQT times its gain on its own mixture's scale, :func:`slotmpe.stem_masks.estimate_stem_gains`)
   is scaled by ``10 ** (u / 20)``, ``u ~ U(-GAIN_DB, GAIN_DB)`` (6 dB).
5. **Sum and input**: the magnitudes are summed (linear magnitude domain; the phase interference
   this ignores is measured by ``benchmarks/bench_remix.py``) and log-compressed
   (:func:`slotmpe.cqt.log_compress`) with a reference chosen so that the remix's loudest bin sits
   as far below 0 dB as the loudest bin of a uniformly drawn real training window sits below its
   file's maximum (real windows are compressed with the *file's* maximum, so they rarely reach
   1.0). The result is rounded to float16 like the cache and turned into the fast-HCQT input with
   :func:`slotmpe.features.hcqt_from_cqt` (the same shift/mask construction as every input).
6. **Targets**: the stems' pitch-roll windows give ``sources``; family rolls, mixture roll,
   polyphony classes and per-source polyphony follow from them with
   :func:`slotmpe.targets.targets_from_rolls` (the same derivation as the cache's); ``source_emb``
   is each stem's own timbre embedding; with ``mask_targets`` the ratio masks are those of the
   gained stem magnitudes (:mod:`slotmpe.stem_masks`).

Items have exactly the keys, dtypes and shapes of :class:`~slotmpe.data.WindowDataset` items,
plus ``remixed`` (bool ``()``; the wrapped dataset's own items say False).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slotmpe.constants import EMBED_DIM, N_PITCHES
from slotmpe.cqt import N_WIDE, log_compress
from slotmpe.data import WindowDataset
from slotmpe.experiments import Experiment
from slotmpe.features import hcqt_from_cqt
from slotmpe.stem_masks import log_expand, pitch_energy, ratio_masks
from slotmpe.targets import targets_from_rolls

REMIX_PROB: float = 0.5  # share of training items that are remixes
GAIN_DB: float = 6.0  # per-stem random gain range (+-, dB)
REMIX_TAG: int = 0x4E1  # separates the remix random stream from the window draws


@dataclass(frozen=True)
class _Stem:
    piece: int  # index into the wrapped dataset's pieces
    source: int  # row of the piece's source_rolls / stem_cqt
    starts: np.ndarray  # int64 (N,): window starts whose window holds an active frame


class RemixDataset(Dataset):
    """Training windows, a share of them remixed from stems of different pieces (module doc).

    Args:
        base: the training :class:`~slotmpe.data.WindowDataset` (``train=True``); its windows,
            epoch, seed, embeddings, ``max_sources`` and ``mask_targets`` are used.
        prob: probability that an item is a remix (0: the base unchanged, 1: only remixes).
        gain_db: per-stem random gain range in dB (``U(-gain_db, gain_db)``).
    """

    def __init__(
        self, base: WindowDataset, prob: float = REMIX_PROB, gain_db: float = GAIN_DB
    ) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"remix probability must be in [0, 1], got {prob}")
        if gain_db < 0:
            raise ValueError(f"gain_db must be >= 0, got {gain_db}")
        self.base = base
        base.mark_remix = True  # real windows say remixed=False, remixes True
        self.prob = float(prob)
        self.gain_db = float(gain_db)
        self._stems: list[_Stem] | None = None
        self._counts: np.ndarray | None = None

    # ------------------------------------------------------------------ epoch protocol
    @property
    def epoch(self) -> int:
        """The current epoch (that of the wrapped dataset)."""
        return self.base.epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw the windows of ``epoch`` (the wrapped dataset's and the remixes')."""
        self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.base)

    # ------------------------------------------------------------------ stems
    def stems(self) -> list[_Stem]:
        """Every remixable stem of the split (pieces with stem audio), built once per process."""
        if self._stems is None:
            w = self.base.window
            stems: list[_Stem] = []
            counts: list[int] = []
            for i in range(len(self.base.piece_ids)):
                piece = self.base._piece(i)
                counts.append(int(piece["source_rolls"].shape[0]))
                if self.base.stem_gains(i) is None:
                    continue
                rolls = np.asarray(piece["source_rolls"])  # (S, 72, T)
                for s in range(rolls.shape[0]):
                    active = rolls[s].any(axis=0)  # (T,)
                    # start a is valid when active[a : a + w] has an active frame
                    hits = np.convolve(active.astype(np.int64), np.ones(w, dtype=np.int64), "valid")
                    starts = np.flatnonzero(hits > 0)
                    if len(starts):
                        stems.append(_Stem(i, s, starts.astype(np.int64)))
            if not stems:
                raise ValueError(
                    f"{self.base.feature_dir}: no training piece has stem audio with notes; "
                    "remix augmentation needs the cached stem CQTs"
                )
            self._stems = stems
            self._counts = np.asarray(counts, dtype=np.int64)
        return self._stems

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # the wrapped dataset drops its open memory maps itself

    # ------------------------------------------------------------------ items
    def __getitem__(self, idx: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.base.seed, self.base.epoch, int(idx), REMIX_TAG])
        if rng.random() >= self.prob:
            return self.base[idx]
        return self.remix(rng)

    def remix(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """One remixed window (see the module docstring) drawn with ``rng``."""
        base, w, k = self.base, self.base.window, self.base.max_sources
        stems = self.stems()
        assert self._counts is not None
        n_pieces = len(base.piece_ids)
        n = int(min(max(1, self._counts[rng.integers(n_pieces)]), k, len(stems)))
        picks = [stems[j] for j in rng.choice(len(stems), size=n, replace=False)]
        lin = np.zeros((n, N_WIDE, w), dtype=np.float32)
        rolls = np.zeros((n, N_PITCHES, w), dtype=bool)
        families: list[str] = []
        emb = np.zeros((k, EMBED_DIM), dtype=np.float32)
        for j, st in enumerate(picks):
            piece = base._piece(st.piece)
            a = int(st.starts[rng.integers(len(st.starts))])
            gain = float(base.stem_gains(st.piece)[st.source])  # type: ignore[index]
            gain *= 10.0 ** (rng.uniform(-self.gain_db, self.gain_db) / 20.0)
            lin[j] = log_expand(piece["stem_cqt"][st.source, :, a : a + w]) * np.float32(gain)
            rolls[j] = piece["source_rolls"][st.source, :, a : a + w]
            families.append(str(piece["families"][st.source]))
            emb[j] = piece["emb"][st.source]
        mix_lin = lin.sum(axis=0)  # (N_WIDE, W)
        ref = self._reference(rng, float(mix_lin.max()))
        cqt = log_compress(mix_lin, ref)
        x = hcqt_from_cqt(cqt.astype(np.float16).astype(np.float32))  # (12, 216, W)
        tg = targets_from_rolls(rolls, families)
        present = np.zeros(k, dtype=bool)
        present[:n] = rolls.any(axis=(1, 2))
        sources = np.zeros((k, N_PITCHES, w), dtype=np.float32)
        sources[:n] = rolls
        source_poly = np.zeros((k, w), dtype=np.float32)
        source_poly[:n] = tg.source_poly
        item = {
            "x": torch.from_numpy(x),
            "mix": torch.from_numpy(tg.mix_roll.astype(np.float32)),
            "family": torch.from_numpy(tg.family_rolls.astype(np.float32)),
            "sources": torch.from_numpy(sources),
            "source_present": torch.from_numpy(present),
            "source_emb": torch.from_numpy(emb),
            "poly": torch.from_numpy(tg.poly.astype(np.int64)),
            "source_poly": torch.from_numpy(source_poly),
        }
        if base.mask_targets:
            masks = np.zeros((k, N_PITCHES, w), dtype=np.float32)
            scale = np.float32(1.0 / ref) if ref > 0 else np.float32(0.0)  # as the cache's
            masks[:n], valid = ratio_masks(pitch_energy(lin * scale), present[:n])
            item["mask_target"] = torch.from_numpy(masks)
            item["mask_valid"] = torch.from_numpy(valid)
        item["remixed"] = torch.tensor(True)
        return item

    def _reference(self, rng: np.random.Generator, peak: float) -> float:
        """Compression reference: the remix's ``peak`` sits as far below the reference as the
        loudest bin of a random real training window sits below its file's maximum."""
        base = self.base
        i = int(rng.integers(len(base.piece_ids)))
        a = int(rng.integers(int(base.n_frames[i]) - base.window + 1))
        top = float(np.max(base._piece(i)["cqt"][:, a : a + base.window]))
        level = float(log_expand(np.array([top], dtype=np.float32))[0])
        return peak / level if level > 0 and peak > 0 else peak


def experiment_datasets(exp: Experiment, train: WindowDataset, val: WindowDataset
                        ) -> tuple[Dataset, WindowDataset]:
    """The training and validation datasets an experiment's row asks for.

    ``exp.mask_target`` (4h): both datasets add the stems' ratio masks to their items.
    ``exp.remix`` (4i): the training dataset is wrapped in :class:`RemixDataset` (validation stays
    on real mixtures) and every item carries ``remixed``, which
    :func:`slotmpe.losses.compute_losses` requires of such a row, so a training loop that forgot
    the wrapping fails instead of silently training the base. Any other row gets ``(train, val)``
    unchanged.
    """
    if exp.mask_target:
        train.mask_targets = True
        val.mask_targets = True
    if not exp.remix:
        return train, val
    val.mark_remix = True
    return RemixDataset(train), val
