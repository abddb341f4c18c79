"""Training protocol of the slot model (paper Section V-A), resumable and deterministic.

Protocol: 23-frame windows, batch 8, AdamW (lr 1e-3, weight decay 0.01), ReduceLROnPlateau (factor
0.5), at most ``max_epochs`` epochs, early stopping after ``patience`` epochs without improvement
of the selection metric, and the best checkpoint by that metric written to ``model.pt``.

The package, one concept a module: :mod:`.config` (:class:`TrainConfig`), :mod:`.steps` (one step,
an epoch, validation losses), :mod:`.data` (datasets, per-epoch loaders, the embeddings table),
:mod:`.checkpoint` (resume state, the log), :mod:`.determinism` and :mod:`.loop`
(:func:`train_experiment`).

Decisions (where the paper is silent):

* **Selection on the pitch losses** (``selection_metric: pitch``, round 3). The paper selects
  "primarily by total validation loss". Measured here (issue 21): with the total, early stopping
  fired on a *rising slot-activity loss* while every pitch loss still fell, and kept a 1x-budget
  model; the activity targets follow the Hungarian assignment, which is close to arbitrary between
  near-duplicate slots, so the activity head grows confident on labels it cannot predict and its
  validation BCE rises. ``pitch`` is the unweighted sum of the experiment's pitch-map terms (mix,
  fixed_slot, slot; :func:`.steps.pitch_terms`); ``total`` and any single term remain selectable.
  The learning-rate plateau steps on the same signal (``plateau_metric``, default = selection).
* **Plateau patience 2**: the learning rate halves on the third epoch without improvement, i.e.
  before early stopping ends the run, so every run that stops early has tried a smaller step.
* **Gradient clipping** at global norm 1.0 (``grad_clip``; not in the paper, not ruled out by it):
  it narrowed the seed spread of chamber 2b (README, "Training default").
* **Precision** (``precision: fp32`` by default, :mod:`slotmpe.precision`): the same training on
  every CPU kind; ``bf16`` / ``auto`` (bf16 autocast on CUDA and on CPUs with AMX / AVX-512 BF16)
  are options; losses always in float32. The resolved precision and
  the CPU (model and flags) are recorded in ``model.pt`` and in every ``train_log.csv`` row.
* **Epochs.** A training epoch is ``windows_per_epoch`` random windows (``None`` / ``"pass"``: one
  window per training position as :class:`slotmpe.data.WindowDataset` defines it, a pass;
  ``"pass/4"``: a quarter of that, the default), re-drawn every epoch from
  ``(seed, epoch)``; validation uses the dataset's fixed windows, evenly thinned to
  ``val_windows`` when that is set.
* **Determinism and resume.** Every random choice of an epoch is a function of ``(seed, epoch)``
  or of the torch/numpy/python RNG state, saved in ``checkpoint_last.pt`` after every epoch with
  the model, optimiser, scheduler and early-stopping state and the log rows. A run killed at any
  point and restarted continues after the last finished epoch and ends with the same weights as an
  uninterrupted run (same machine, device, precision and thread count). On the CPU
  ``torch.use_deterministic_algorithms(True)`` is in force during training (without the NaN fill
  of uninitialised memory: same parameters, 1.07x).
* **Outputs.** ``model.pt`` (via :func:`slotmpe.models.save_checkpoint`) and ``train_log.csv``
  appear only when the run has finished, both atomically; ``checkpoint_last.pt`` is removed then
  unless ``keep_checkpoint`` is set.
* **Speed** (``benchmarks/bench_train.py``). Data loading is far above the step rate, so
  ``num_workers: 0`` is right on small machines. Channels-last convolutions and fused AdamW are
  the defaults; ``compile`` (off by default) gave no gain under load and costs minutes.
* **GPU.** The device is CUDA when present (``device: auto``), never required. With
  ``deterministic: true`` (default) :func:`deterministic_mode` sets ``CUBLAS_WORKSPACE_CONFIG``,
  turns TF32 and cuDNN benchmarking off; ``deterministic: false`` turns them on.
"""

from slotmpe.training.checkpoint import CHECKPOINT_NAME, CHECKS_NAME, LOG_NAME, MODEL_NAME
from slotmpe.training.config import TrainConfig
from slotmpe.training.data import load_embeddings_table, make_datasets
from slotmpe.training.determinism import CUBLAS_WORKSPACE, deterministic_mode
from slotmpe.training.loop import train_experiment
from slotmpe.training.steps import (
    batch_to,
    evaluate_losses,
    forward_losses,
    logged_columns,
    make_optimizer,
    pitch_terms,
    train_one_epoch,
    train_step,
)

__all__ = [
    "CHECKPOINT_NAME", "CHECKS_NAME", "CUBLAS_WORKSPACE", "LOG_NAME", "MODEL_NAME", "TrainConfig", "batch_to",
    "deterministic_mode", "evaluate_losses", "forward_losses", "load_embeddings_table",
    "logged_columns", "make_datasets", "make_optimizer", "pitch_terms", "train_experiment",
    "train_one_epoch", "train_step",
]
