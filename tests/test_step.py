"""The one training step and the one accuracy count (issue 24): what they do, and that the package has no other."""

from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest
import torch
from torch import nn

from accelbook.step import accuracy, count_correct, make_step
from accelbook.train import WeightAverage

CPU = torch.device("cpu")
PACKAGE = Path(__file__).resolve().parents[1] / "src" / "accelbook"
# Comparison-only re-implementations of other people's recipes keep their authors' loops (see their docstrings).
ANCHORS = {"anchors.py", "nanogpt_anchor.py"}


def _model_and_batch(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = torch.randn(12, 1, 4, 4), torch.randint(0, 3, (12,))
    return model, x, y


def _hand_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def test_the_step_is_the_textbook_step():
    a, x, y = _model_and_batch()
    b, _, _ = _model_and_batch()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    step = make_step(a, opt_a, nn.CrossEntropyLoss(), CPU)
    for _ in range(3):
        assert torch.equal(step(x, y), _hand_step(b, opt_b, x, y))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_the_step_prepares_inputs_steps_the_schedule_then_the_average():
    model, x, y = _model_and_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 ** i)
    average = WeightAverage(model, decay=0.5)
    seen = []
    step = make_step(model, optimizer, nn.CrossEntropyLoss(), CPU, prepare=lambda t: seen.append(t) or t * 0,
                     schedule=schedule, average=average)
    step(x, y)
    assert seen and torch.equal(seen[0], x)
    assert optimizer.param_groups[0]["lr"] == 0.5  # one schedule step per optimizer step
    assert average.updates == 1  # the average took the weights after the step
    assert all(torch.equal(p, q) for p, q in zip(average.module.parameters(), model.parameters(), strict=True))


def test_the_step_runs_its_forward_under_autocast_and_names_its_phases():
    model, x, y = _model_and_batch()
    entered, phases = [], []

    @contextlib.contextmanager
    def precision():
        entered.append(torch.is_autocast_enabled("cpu"))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield

    def forward(t):
        out = model(t)
        entered.append(out.dtype)
        return out

    @contextlib.contextmanager
    def phase(name):
        phases.append(name)
        yield

    step = make_step(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), CPU,
                     forward=forward, autocast=precision, phase=phase)
    step(x, y)
    assert entered == [False, torch.bfloat16]
    assert phases == ["copy", "forward", "backward", "optimizer"]


def test_the_step_with_a_scaler_scales_the_backward_and_skips_an_overflowing_step():
    model, x, y = _model_and_batch()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=1e10)

    def huge_loss(out, target):  # times the scale, beyond float32's largest: the gradients overflow
        return nn.functional.cross_entropy(out, target) * 1e30

    step = make_step(model, torch.optim.SGD(model.parameters(), lr=0.1), huge_loss, CPU, scaler=scaler)
    step(x, y)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))  # step skipped
    assert scaler.get_scale() < 1e10  # and the scale came down


def test_count_correct_counts_and_sums_the_loss():
    model, x, y = _model_and_batch()
    logits = model(x)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    counts = count_correct(model, batches, CPU, loss_fn=nn.CrossEntropyLoss())
    assert counts["count"] == 12 and counts["correct"].item() == (logits.argmax(1) == y).sum().item()
    assert counts["loss_sum"].item() == pytest.approx(nn.functional.cross_entropy(logits, y).item() * 12, rel=1e-5)
    assert accuracy(counts) == counts["correct"].item() / 12
    assert not model.training


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _calls(node: ast.AST, attribute: str):
    return [c for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
            and c.func.attr == attribute]


def _innermost(path: Path, attribute: str) -> set[str]:
    """`file:function` of the functions whose own body (not a nested function's) calls `.attribute(...)`."""
    found = set()
    for fn in _functions(ast.parse(path.read_text())):
        nested = {id(c) for sub in _functions(fn) if sub is not fn for c in _calls(sub, attribute)}
        if any(id(c) not in nested for c in _calls(fn, attribute)):
            found.add(f"{path.name}:{fn.name}")
    return found


def test_the_package_has_one_training_step():
    """Only `step.make_step`'s step both runs a backward pass and steps an optimizer (or a scaler for one)."""
    places = set()
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name not in ANCHORS:
            places |= _innermost(path, "backward") & _innermost(path, "step")
    assert places == {"step.py:step"}, places


# Functions that compare predictions for another purpose than counting right answers.
NOT_ACCURACY = {"inference.py:measure_paths": "how often two models' predictions agree",
                "robust.py:pgd": "which images an attack has fooled, image by image"}


def test_the_package_has_one_accuracy_count():
    """Only `step.count_correct` both takes an argmax and compares predictions (== or !=) in its own body."""
    places = set()
    for path in sorted(PACKAGE.glob("*.py")):
        for fn in _functions(ast.parse(path.read_text())):
            own = [n for n in ast.walk(fn) if not any(n in set(ast.walk(sub)) for sub in _functions(fn) if sub is not fn)]
            argmax = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "argmax"
                         for n in own)
            compares = any(isinstance(n, ast.Compare) and isinstance(n.ops[0], (ast.Eq, ast.NotEq)) for n in own)
            if argmax and compares:
                places.add(f"{path.name}:{fn.name}")
    assert places - set(NOT_ACCURACY) == {"step.py:count_correct"}, places


def test_no_module_imports_another_modules_private_names():
    bad = []
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                bad += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad, bad
