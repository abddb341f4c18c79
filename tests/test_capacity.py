"""Capacity accounting (slotmpe.results.capacity) and the width presets (model.widths)."""

from __future__ import annotations

import pytest

from slotmpe.experiments import EXPERIMENTS
from slotmpe.models import WIDTH_PRESETS, build_model, count_parameters
from slotmpe.results.capacity import COMPONENTS, component_params, forward_mflops, grad_params


@pytest.mark.parametrize("preset", sorted(WIDTH_PRESETS))
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_both_widths_match_table1(preset: str, name: str) -> None:
    model = build_model(name, preset=preset)
    n = count_parameters(model)
    paper = EXPERIMENTS[name].paper_params
    assert abs(n - paper) / paper < 0.01, (preset, name, n, paper)
    comp = component_params(model)
    assert set(comp) == set(COMPONENTS) and sum(comp.values()) == n


def test_wide_moves_the_weights_into_the_convolutions() -> None:
    eff, wide = (component_params(build_model("1c", preset=p)) for p in ("efficient", "wide"))
    conv = ("trunk", "global_branch", "slot_branch")
    assert sum(eff[c] for c in conv) < 0.02 * sum(eff.values())
    assert eff["ffn"] > 0.75 * sum(eff.values())
    assert sum(wide[c] for c in conv) > 0.5 * sum(wide.values())
    assert wide["ffn"] < 0.15 * sum(wide.values())


def test_unknown_preset() -> None:
    with pytest.raises(KeyError, match="huge"):
        build_model("1a", preset="huge")


def test_trained_parameters_follow_the_losses() -> None:
    m1a = build_model("1a")
    comp = component_params(m1a)
    # 1a trains only the mixture path: trunk + global branch
    assert grad_params(m1a, "1a") == comp["trunk"] + comp["global_branch"]
    m3a = build_model("3a")
    # 3a: everything but the polyphony head (present, evaluated, no loss)
    assert grad_params(m3a, "3a") == count_parameters(m3a) - sum(
        p.numel() for p in m3a.poly_head.parameters())
    m3c = build_model("3c")
    assert grad_params(m3c, "3c") == count_parameters(m3c)


def test_forward_mflops_grow_with_the_configuration() -> None:
    f1a, f1c = forward_mflops(build_model("1a")), forward_mflops(build_model("1c"))
    assert 50 < f1a < f1c < 1000
    assert forward_mflops(build_model("1a", preset="wide")) > 10 * f1a
