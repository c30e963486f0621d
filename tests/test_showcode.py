"""accelbook.showcode: the lines a rung changes, as the package's source has them."""

import inspect
import sys
import textwrap

import pytest

from accelbook import ladder, showcode


def knobs(recipe, device):
    """A stand-in step builder: every kind of statement knob_lines must find, or leave out."""
    model = make(device)
    if recipe.channels_last:
        model = model.to("channels_last")
    dtype = {"bf16": 1}.get(recipe.precision)
    scale = 2 if dtype else 1
    forward = compile_(model) if recipe.compile else model
    if recipe.cuda_graphs:
        forward = graphs(model)
    elif recipe.compile:
        forward = compile_(model, recipe.compile)
    return model, forward, scale


def make(device): ...
def compile_(model, mode=None): ...
def graphs(model): ...


def shown(*names):
    return [(s.line - inspect.getsourcelines(knobs)[1], s.text) for s in showcode.knob_lines(knobs, names)]


def test_a_compound_statement_comes_with_its_body_and_an_elif_alone():
    assert shown("cuda_graphs") == [(8, "if recipe.cuda_graphs:\n    forward = graphs(model)")]
    assert shown("compile") == [(7, "forward = compile_(model) if recipe.compile else model"),
                                (10, "elif recipe.compile:\n    forward = compile_(model, recipe.compile)")]


def test_a_name_derived_from_a_knob_is_followed_but_not_a_reassigned_one():
    assert shown("precision") == [(5, 'dtype = {"bf16": 1}.get(recipe.precision)'), (6, "scale = 2 if dtype else 1")]
    assert shown("channels_last") == [(3, 'if recipe.channels_last:\n    model = model.to("channels_last")')]


def test_a_tuple_handed_back_is_left_out():
    assert all("return" not in text for _, text in shown("precision", "compile", "cuda_graphs"))


@pytest.mark.parametrize("task", ["mnist", "shakespeare"])
def test_every_rung_shows_code_and_the_shown_code_is_the_source(task):
    functions, aliases = showcode.step_sources(task)
    for rung in showcode.task_rungs(task):
        if not rung.changes:
            continue
        snippets = showcode.rung_code(rung.changes, functions, aliases)
        assert snippets, f"rung {rung.name!r} shows no code"
        names = set(rung.changes) | {a for k in rung.changes for a in aliases.get(k, ())}
        assert any(f".{name}" in s.text for s in snippets for name in names), rung.name
        for s in snippets:
            module = sys.modules[f"accelbook.{s.function.split('.')[0]}"]
            lines = inspect.getsource(module).splitlines()[s.line - 1:s.line - 1 + len(s.text.splitlines())]
            assert textwrap.dedent("\n".join(lines)) == s.text, s.function


def test_ladder_code_names_each_rung_with_its_changes():
    text = showcode.ladder_code("mnist")
    index = {r.name: i for i, r in enumerate(ladder.RUNGS)}
    assert f"=== rung {index['channels_last']}: channels_last (channels_last=True)" in text
    assert f"=== rung {index['1.5 epochs']}: 1.5 epochs (epochs=1.5)\n# recipes.steps_for" in text
    assert f"=== rung {index['one-cycle schedule']}: one-cycle schedule (schedule='onecycle', lr=0.01)" in text
    assert "if recipe.channels_last:" in text and "fused=True" in text


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="unknown task 'cifar'"):
        showcode.step_sources("cifar")
