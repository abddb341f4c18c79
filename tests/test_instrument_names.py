"""Calibrated instrument names (issue 29): the confidence score, its fit on validation slots, the
"unknown" rule and its way into transcribe's tracks, the CSV and the ONNX metadata."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from slotmpe import instruments as I
from slotmpe.transcribe import Note, Track, TranscribeOptions

ROOT = Path(__file__).resolve().parents[1]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _protos() -> dict:
    """violin and viola nearly alike (cos ~0.97), flute apart."""
    rng = np.random.default_rng(0)
    base = _unit(rng.standard_normal((3, 128)))
    viola = _unit(base[0] + 0.25 * base[1])
    return {"names": ["flute", "viola", "violin"], "families": ["woodwinds", "strings", "strings"],
            "vectors": [base[2].tolist(), viola.tolist(), base[0].tolist()], "source": "test"}


def test_probabilities_and_their_margin() -> None:
    sim = np.array([[0.99, 0.98, 0.10], [0.99, 0.50, 0.10]])
    p = I.name_probabilities(sim, 0.05)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    # the same best cosine, a larger margin: a more confident name
    assert p[1].max() > 0.99 > 0.7 > p[0].max()
    assert I.name_probabilities(sim, 100.0).max() < 0.35  # high temperature: nearly uniform


def test_fit_temperature_recovers_the_true_one() -> None:
    rng = np.random.default_rng(1)
    sim = rng.uniform(0.8, 1.0, size=(4000, 6))
    p = I.name_probabilities(sim, 0.04)
    labels = np.array([rng.choice(6, p=row) for row in p])
    labels[:100] = -1  # instruments without a prototype do not enter the fit
    assert I.fit_temperature(sim, labels) == pytest.approx(0.04, rel=0.1)
    with pytest.raises(ValueError, match="no slot"):
        I.fit_temperature(sim[:3], np.array([-1, -1, -1]))


def test_min_confidence_maximises_right_minus_wrong() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    right = np.array([True, True, False, True, False, False])
    # net gains from the top: 1, 2, 1, 2, 1, 0 -> both 0.8 and 0.6 give 2; the lower cut wins,
    # midway to the next confidence left unknown (0.5)
    assert I.tune_min_confidence(conf, right) == pytest.approx(0.55)
    # equal confidences go together: the group at 0.5 is net -1, so the cut stays above it
    assert I.tune_min_confidence(np.array([0.9, 0.5, 0.5, 0.5]),
                                 np.array([True, True, False, False])) == pytest.approx(0.7)
    # every slot right: the cut is the lowest confidence (all named)
    assert I.tune_min_confidence(conf, np.ones(6, bool)) == 0.4
    # nothing to gain: every slot unknown
    cut = I.tune_min_confidence(np.array([0.6, 0.3]), np.array([False, False]))
    assert cut > 0.6
    with pytest.raises(ValueError, match="equal"):
        I.tune_min_confidence(conf, right[:3])


def _validation(protos: dict, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Validation slots: flutes and violins near their prototypes (right), and slots of an
    instrument without a prototype ("cello") between violin and viola (always wrong). Every best
    cosine lies in 0.96-1.0, right or wrong."""
    v = np.asarray(protos["vectors"])
    emb, labels = [], []
    for _ in range(40):
        emb.append(_unit(v[0] + 0.05 * _unit(rng.standard_normal(128))))
        labels.append("flute")
        emb.append(_unit(v[2] + 0.05 * _unit(rng.standard_normal(128))))
        labels.append("violin")
        emb.append(_unit(v[1] + v[2] + 0.05 * _unit(rng.standard_normal(128))))
        labels.append("cello")
    return I.similarities(np.stack(emb), protos), labels


def test_calibration_separates_right_from_wrong_where_the_cosine_does_not() -> None:
    protos = _protos()
    sims, labels = _validation(protos, np.random.default_rng(2))
    assert sims.max(axis=1).min() > 0.96  # the raw cosine says "sure" everywhere
    cal = I.calibrate(protos, sims, labels, source="synthetic")
    c = cal["calibration"]
    assert c["n_slots"] == 120 and c["n_unseen"] == 40 and c["source"] == "synthetic"
    assert c["accuracy"] == pytest.approx(80 / 120)
    assert c["named_accuracy"] == 1.0 and c["unknown_rate"] == pytest.approx(40 / 120)
    test_sims, test_labels = _validation(protos, np.random.default_rng(3))
    named = I.names_from_similarities(test_sims, cal)
    for n, lab in zip(named, test_labels, strict=True):
        assert n.confidence is not None
        assert n.instrument == (I.UNKNOWN if lab == "cello" else lab), (lab, n)
        assert n.nearest in protos["names"]
    # without the calibration every slot is named, the cellos wrongly
    plain = I.names_from_similarities(test_sims, protos)
    assert all(n.instrument != I.UNKNOWN and n.confidence is None for n in plain)


def test_calibration_is_checked_and_travels_with_the_prototypes() -> None:
    protos = _protos()
    cal = {"temperature": 0.02, "min_confidence": 0.6, "n_slots": 5}
    checked = I.check_prototypes({**protos, "calibration": cal})
    assert checked["calibration"] == cal
    assert "calibration" not in I.check_prototypes(protos)
    for bad in ({"temperature": 0.0, "min_confidence": 0.5}, {"temperature": 0.1},
                {"temperature": 0.1, "min_confidence": 1.5}, "x"):
        with pytest.raises(ValueError, match="calibration"):
            I.check_prototypes({**protos, "calibration": bad})


def test_uncalibrated_names_are_unchanged() -> None:
    """name_slots of prototypes without calibration: nearest prototype, unknown below the cosine
    cut-off, as before issue 29."""
    protos = _protos()
    v = np.asarray(protos["vectors"])
    timbre = np.stack([v[0], -v[0], v[2]])
    assert [n for n, _ in I.name_slots(timbre, protos)] == ["flute", I.UNKNOWN, "violin"]
    s = I.score_slots(timbre, protos)
    assert [x.confidence for x in s] == [None] * 3 and s[1].nearest != I.UNKNOWN


def test_transcribe_tracks_and_csv_use_the_calibration(tmp_path: Path) -> None:
    from slotmpe.transcribe.naming import name_tracks
    from slotmpe.transcribe.writers import write_notes_csv

    protos = _protos()
    sims, labels = _validation(protos, np.random.default_rng(4))
    cal = I.calibrate(protos, sims, labels)
    v = np.asarray(protos["vectors"])
    timbre = np.stack([v[0], _unit(v[1] + v[2]), v[2]])  # flute, between viola/violin, violin
    tracks = [Track(k, f"slot {k}", [Note(k, 0, 1, 60, 0.9)]) for k in (1, 2, 3)]
    out = name_tracks(tracks, {"timbre": timbre}, None, {"extra": {"instrument_prototypes": cal}},
                      TranscribeOptions())
    assert [t.name for t in out] == ["flute", "slot 2 (unknown)", "violin"]
    assert out[1].similarity > 0.96 and out[1].name_confidence < cal["calibration"][
        "min_confidence"] <= out[0].name_confidence
    lines = write_notes_csv(tmp_path / "x.csv", out).read_text().splitlines()
    assert lines[0].split(",")[-3:] == ["instrument", "similarity", "name_confidence"]
    row = lines[2].split(",")
    assert row[5] == I.UNKNOWN and float(row[7]) == pytest.approx(out[1].name_confidence, abs=1e-4)


def test_bench_separation_and_figures() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_instrument_names as bn

    protos = _protos()
    sims, labels = _validation(protos, np.random.default_rng(5))
    cal = I.calibrate(protos, sims, labels)
    sep = bn.separation(sims, labels, cal)
    assert sep["confidence"] > 0.95 and sep["margin"] > 0.95
    fam = ["strings" if lab != "flute" else "woodwinds" for lab in labels]
    act = np.ones(len(labels))
    act[:3] = 0.1  # not written
    fig = bn.name_figures(sims, labels, fam, act, cal, I.DEFAULT_MIN_SIMILARITY)
    assert fig["all"]["pairs"] == 120 and fig["written"]["pairs"] == 117
    assert fig["all"]["unknown_rate"] == pytest.approx(40 / 120)
    assert fig["all"]["named_accuracy"] == 1.0
    assert fig["all"]["instrument_accuracy"] == pytest.approx(80 / 120)
    plain = bn.name_figures(sims, labels, fam, act, protos, I.DEFAULT_MIN_SIMILARITY)
    assert plain["all"]["unknown_rate"] == 0.0 and plain["all"]["named_accuracy"] < 0.7


def test_family_fallback_names_slots_below_the_instrument_cut_by_family() -> None:
    """Cellos (no prototype) lie between violin and viola: unknown as instruments, but surely
    strings. Calibrated with the families, they are written "strings"; a slot halfway between
    flute and violin (family unsure) stays unknown; flutes and violins keep their names."""
    protos = _protos()
    sims, labels = _validation(protos, np.random.default_rng(2))
    fams = [{"flute": "woodwinds"}.get(lab, "strings") for lab in labels]
    cal = I.calibrate(protos, sims, labels, families=fams)
    cut = cal["calibration"][I.FAMILY_CUT_KEY]
    assert cut is not None and 0.5 < cut <= 1.0
    assert I.FAMILY_CUT_KEY not in I.calibrate(protos, sims, labels)["calibration"]
    test_sims, test_labels = _validation(protos, np.random.default_rng(3))
    v = np.asarray(protos["vectors"])
    between = I.similarities(_unit(v[0] + v[2])[None], protos)
    named = I.names_from_similarities(np.concatenate([test_sims, between]), cal)
    for n, lab in zip(named[:-1], test_labels, strict=True):
        assert n.instrument == ("strings" if lab == "cello" else lab), (lab, n)
    assert named[-1].instrument == I.UNKNOWN
    cello = named[test_labels.index("cello")]
    assert cello.confidence is not None and cello.confidence >= cut and cello.nearest != "strings"
    assert I.family_of("strings", cal) == "strings" and I.gm_program("strings") == 48
    # figures: a family name counts as right at the level written
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_instrument_names as bn

    tf = [{"flute": "woodwinds"}.get(lab, "strings") for lab in test_labels]
    fig = bn.name_figures(test_sims, test_labels, tf, np.ones(len(tf)), cal,
                          I.DEFAULT_MIN_SIMILARITY)["all"]
    assert fig["unknown_rate"] == 0.0 and fig["family_named_rate"] == pytest.approx(40 / 120)
    assert fig["named_accuracy"] == 1.0 and fig["instrument_accuracy"] == pytest.approx(80 / 120)
    for bad in (1.5, "x"):
        with pytest.raises(ValueError, match="family_min_confidence"):
            I.check_calibration({"temperature": 0.1, "min_confidence": 0.5,
                                 I.FAMILY_CUT_KEY: bad})


def test_name_is_right_at_the_level_written() -> None:
    from slotmpe.instruments import UNKNOWN, name_is_right

    assert name_is_right("violin", "violin") and not name_is_right("viola", "violin")
    assert name_is_right("strings", "viola") and not name_is_right("brass", "viola")
    assert name_is_right("woodwinds", "x", family="woodwinds")  # the source's own family label
    assert not name_is_right(UNKNOWN, "violin") and not name_is_right(UNKNOWN, UNKNOWN)
