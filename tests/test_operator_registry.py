"""Operators are plug-ins: the three the loop ships are registered like any user's would be, and
one new function with `register_operator` is all a config, the loop's choice and the pictures
need to know an operator."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from agent.loop import operators
from agent.loop.config import ConfigError, from_dict
from agent.loop.operators import Child, choose_operator, get_operator, register_operator
from agent.loop.operators import registry as registry_module
from archive.drawing import view
from archive.drawing.view import OTHER_STYLE, OperatorStyle, operator_style


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test disappear with it."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    monkeypatch.setattr(view, "OPERATOR_STYLES", dict(view.OPERATOR_STYLES))


def test_the_shipped_operators_are_registered_in_cycle_order_with_their_styles():
    specs = operators.registered()
    assert list(specs) == ["es_step", "scaffold_edit", "both"]
    assert {k: s.weight for k, s in specs.items()} == {
        "es_step": 0.5,
        "scaffold_edit": 0.5,
        "both": 0.0,
    }
    shapes = {operator_style(name).shape for name in specs}
    assert len(shapes) == 3 and OTHER_STYLE.shape not in shapes
    assert operator_style("root").shape == "square"
    config = from_dict({}, "t")
    assert config.operators.weights == {"es_step": 0.5, "scaffold_edit": 0.5, "both": 0.0}
    assert config.operators.steps_weights and config.operators.edits
    edit_only = from_dict({"operators": {"es_step": 0}}, "t").operators
    assert not edit_only.steps_weights and edit_only.edits


def test_a_new_operator_is_one_function(scratch_registry):
    made = []

    @register_operator("resample", style=OperatorStyle("hexagon", "#123456", "resample"), rank=5)
    def resample(rt, parent_id, iteration, rng) -> Child:
        made.append((parent_id, iteration))
        return Child("resample", metadata={"note": "same pair, judged again"})

    config = from_dict({"operators": {"es_step": 0, "resample": 2, "order": "cycle"}}, "t")
    assert config.operators.weights["resample"] == 2.0
    rt = SimpleNamespace(config=config)
    chosen = [choose_operator(rt, random.Random(0), {}, i) for i in range(1, 5)]
    assert chosen == ["scaffold_edit", "resample", "scaffold_edit", "resample"]
    child = get_operator("resample").make(rt, "n0000", 2, random.Random(0))
    assert child.operator == "resample" and made == [("n0000", 2)]
    assert operator_style("resample").color == "#123456"
    saved = from_dict(json.loads(config.to_json()), "config.json")
    assert saved.operators.weights == config.operators.weights  # a resume reads it back


def test_an_unknown_operator_or_no_weight_at_all_fails_at_load():
    with pytest.raises(ConfigError, match=r"\[operators\].*unknown operator es_stp.*es_step"):
        from_dict({"operators": {"es_stp": 1}}, "run.toml")
    with pytest.raises(ConfigError, match="run.toml: .*greater than or equal to 0"):
        from_dict({"operators": {"both": -1}}, "run.toml")
    with pytest.raises(ConfigError, match="at least one operator weight must be > 0"):
        from_dict({"operators": {"es_step": 0, "scaffold_edit": 0}}, "run.toml")


def test_a_name_is_registered_once(scratch_registry):
    style = OperatorStyle("circle", "#000000", "x")
    with pytest.raises(ValueError, match="registered already"):
        register_operator("es_step", style=style)(lambda rt, p, i, rng: Child("es_step"))
    with pytest.raises(KeyError, match="unknown operator 'nope'"):
        get_operator("nope")


def test_a_selection_strategy_and_its_params_are_checked_at_load():
    config = from_dict({"selection": {"strategy": "power_law", "params": {"alpha": 2.0}}}, "t")
    assert config.selection.params == {"alpha": 2.0}
    with pytest.raises(ConfigError, match="run.toml: .*selection.*unknown strategy 'bestt'"):
        from_dict({"selection": {"strategy": "bestt"}}, "run.toml")
    with pytest.raises(ConfigError, match="run.toml: .*refuses params"):
        from_dict({"selection": {"strategy": "best", "params": {"gain": 3}}}, "run.toml")
