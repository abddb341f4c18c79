"""Timbre encoder training, embedding export, retrieval metrics and the Fig. 2 UMAP plot.

Modules: :mod:`~slotmpe.timbre.config` (settings, table columns), :mod:`~slotmpe.timbre.stems`
(stem windows and the activity rule), :mod:`~slotmpe.timbre.loss`, :mod:`~slotmpe.timbre.retrieval`,
:mod:`~slotmpe.timbre.training`, :mod:`~slotmpe.timbre.export`, :mod:`~slotmpe.timbre.plot`; the
public names of all of them are re-exported here.

Paper Sections III-C and V-A. The encoder (:class:`slotmpe.models.timbre_encoder.TimbreEncoder`)
is trained on isolated-stem CQT windows with a multi-view source-identity objective, frozen, and
used to make one 128-d timbre target per pitched stem for Exp 2 and 3.

Data: the feature cache (``{piece_id}.npz`` + ``index.csv``, see docs/CONTRACTS.md); the encoder
reads the per-stem wide log-CQT ``stem_cqt`` ``(S, N_WIDE, T)`` and the pitch labels
``source_rolls`` ``(S, 72, T)``. Pieces without stem audio (``stem_cqt`` with 0 rows) are skipped
with a log line.

Activity rule (which frames of a stem count as *active*; made explicit here):

* ``L_t`` (labels): any pitch of the stem's roll is on at frame ``t``.
* ``E_t`` (energy): ``e_t > 0`` and ``e_t >= hi - energy_db / TOP_DB`` where ``e_t`` is the largest
  log-CQT value of frame ``t`` over the whole wide CQT and ``hi`` the 99th percentile of ``e_t``
  over the stem: with the features' compression (``1 + dB / TOP_DB``, floor 0) a frame is
  energy-active when its loudest bin is within ``energy_db`` (30) dB of the stem's loud frames and
  above the -80 dB floor; a silent stem has no energy-active frame.
* The labels are *reliable* when ``L`` is non-empty and labels and energy agree both ways:
  ``|L & E| / |L| >= label_agreement_min`` (labelled frames do sound) and
  ``|L & E| / |E| >= label_agreement_min`` (sounding frames are labelled; long releases, reverb
  or delay tails, as in mshoxxDB, break this). Reliable -> active = ``L`` (rule ``"labels"``);
  otherwise active = ``E`` (rule ``"energy"``), or ``L`` if ``E`` is empty (``"labels_no_energy"``);
  neither -> the stem has no active frames (``"silent"``: not used for training or retrieval; its
  export embedding is taken from evenly spaced windows).
* A window start ``s`` is *active* when at least ``min_active_frac`` of frames ``s..s+W-1`` are
  active; if no start qualifies, the starts with the largest active fraction (> 0) are used.

Training item: ``views`` (4) active windows of ``window`` (46) frames of one stem. A batch holds
``batch_size`` (32) distinct stems (fewer if the split has fewer). Augmentation per view: random
gain uniform in ``[-gain_db, gain_db]`` dB applied to the log-CQT through the log compression of
:mod:`slotmpe.features` (see :func:`apply_gain_db`), ``torchaudio.transforms.FrequencyMasking`` and
``TimeMasking`` on the wide CQT (masked cells set to the silence level), then the fast-HCQT; the
encoder normalises each window itself (:func:`slotmpe.models.timbre_encoder.normalize_window`).

Loss (:func:`multiview_timbre_loss`): supervised multi-view contrastive loss (NT-Xent / SupCon
style on the projection head, positives = the other views of the same stem, negatives = all views
of the other stems of the batch) + within-source consistency (``1 - |mean of the stem's unit
embeddings|^2``, i.e. the views' spread around their mean) + VICReg-style variance and covariance
regularisation of the unit embeddings scaled by ``sqrt(D)``.

Checkpoint selection: top-1 same-source retrieval on a fixed, seeded set of active validation
windows (:func:`build_retrieval_set`, :func:`retrieval_accuracy`): each validation stem contributes
one *key* window (the candidate set = one key per stem) and up to ``val_queries`` *query* windows;
a query is a top-k hit when its own stem's key is among the k keys most cosine-similar to it.
Chance level for top-k is ``min(k, S) / S``.
"""

from __future__ import annotations

from slotmpe.timbre.config import (
    EMBEDDING_COLUMNS,
    EMBEDDING_ID_COLUMNS,
    PAPER_TOP1,
    PAPER_TOP5,
    TimbreConfig,
)
from slotmpe.timbre.export import export_embeddings, load_embeddings, read_embeddings
from slotmpe.timbre.loss import multiview_timbre_loss
from slotmpe.timbre.plot import plot_umap
from slotmpe.timbre.retrieval import (
    RetrievalSet,
    build_retrieval_set,
    embed_windows,
    evaluate_retrieval,
    retrieval_accuracy,
)
from slotmpe.timbre.stems import (
    Stem,
    active_starts,
    apply_gain_db,
    energy_activity,
    frame_activity,
    load_stems,
    pick_starts,
    read_index,
    silence_level,
    stem_window,
    windows_to_hcqt,
)
from slotmpe.timbre.training import train_encoder, train_step

__all__ = [
    "EMBEDDING_COLUMNS", "EMBEDDING_ID_COLUMNS", "PAPER_TOP1", "PAPER_TOP5", "RetrievalSet", "Stem",
    "TimbreConfig", "active_starts", "apply_gain_db", "build_retrieval_set", "embed_windows",
    "energy_activity", "evaluate_retrieval", "export_embeddings", "frame_activity", "load_embeddings",
    "load_stems", "multiview_timbre_loss", "pick_starts", "plot_umap", "read_embeddings", "read_index",
    "retrieval_accuracy", "silence_level", "stem_window", "train_encoder", "train_step", "windows_to_hcqt",
]
