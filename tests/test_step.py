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


def _steps_counted(optimizer):
    """The optimizer, with a list that grows by one at each of its steps."""
    counted = []
    optimizer.register_step_post_hook(lambda *_: counted.append(1))
    return counted


def test_accumulated_micro_batches_take_the_step_of_the_whole_batch():
    """accumulate=3 over three micro-batches of 4 (mean losses, SGD): one step on the 12, to fp32 round-off."""
    a, x, y = _model_and_batch()
    b, _, _ = _model_and_batch()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    steps = _steps_counted(opt_a)
    schedule = torch.optim.lr_scheduler.StepLR(opt_a, step_size=1, gamma=0.5)
    step = make_step(a, opt_a, nn.CrossEntropyLoss(), CPU, accumulate=3, schedule=schedule)
    first = [p.detach().clone() for p in a.parameters()]
    for group in range(2):
        losses = [step(xs, ys) for xs, ys in zip(x.chunk(3), y.chunk(3), strict=True)]
        whole = _hand_step(b, opt_b, x, y)
        opt_b.param_groups[0]["lr"] *= 0.5  # the schedule, stepped once per optimizer step
        assert len(steps) == group + 1  # one optimizer step per group of micro-batches
        assert torch.stack(losses).mean().item() == pytest.approx(whole.item(), rel=1e-6)  # each its own loss
        for p, q in zip(a.parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt_a.param_groups[0]["lr"] == 0.125
    step(x[:4], y[:4])
    assert len(steps) == 2 and all(p.grad is not None for p in a.parameters())  # a micro-batch only accumulates
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), first, strict=True))


def test_clipping_bounds_the_global_gradient_norm_just_before_the_step():
    model, x, y = _model_and_batch()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    norms, step_once = [], optimizer.step

    def step_recording_the_norm(*args, **kwargs):
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())
        return step_once(*args, **kwargs)

    optimizer.step = step_recording_the_norm

    def big_loss(out, target):
        return nn.functional.cross_entropy(out, target) * 1e3

    step = make_step(model, optimizer, big_loss, CPU, clip=0.25, accumulate=2)
    for _ in range(2):
        step(x[:6], y[:6])
        step(x[6:], y[6:])
    assert norms == pytest.approx([0.25, 0.25], rel=1e-5)  # the whole gradient's norm, not each parameter's


class _Dot(nn.Module):
    """x . p for a weight vector p that starts at zero."""

    def __init__(self):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(4))

    def forward(self, x):
        return (x * self.p).sum()


def test_clipping_comes_after_the_scaler_unscales_the_gradients(monkeypatch):
    """fp16's GradScaler on the CPU: clipped to norm 1 after unscaling, the SGD step moves each weight by 0.5."""
    model = _Dot()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    order, unscale, clip = [], scaler.unscale_, nn.utils.clip_grad_norm_
    scaler.unscale_ = lambda opt: order.append(("unscale", model.p.grad.norm().item())) or unscale(opt)
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda params, max_norm: order.append(
        ("clip", model.p.grad.norm().item())) or clip(params, max_norm))
    step = make_step(model, optimizer, lambda out, _: 100.0 * out, CPU, scaler=scaler, clip=1.0, accumulate=2)
    step(torch.ones(4), torch.zeros(()))
    assert order == [] and torch.equal(model.p.detach(), torch.zeros(4))  # a micro-batch only accumulates
    step(torch.ones(4), torch.zeros(()))
    # two micro-batches of 100 x ones / 2, scaled by 1,024: unscaled to norm 200, then clipped to 1
    assert order == [("unscale", pytest.approx(200 * 1024)), ("clip", pytest.approx(200))]
    torch.testing.assert_close(model.p.detach(), torch.full((4,), -0.5))


def test_the_defaults_neither_accumulate_nor_clip(monkeypatch):
    """With accumulate=1 and clip=None the step is the textbook one under a GradScaler too, bit for bit."""
    model, x, y = _model_and_batch()
    reference, _, _ = _model_and_batch()
    optimizer, ref_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(reference.parameters(), lr=0.1)
    scaler, ref_scaler = torch.amp.GradScaler("cpu", init_scale=4.0), torch.amp.GradScaler("cpu", init_scale=4.0)
    steps = _steps_counted(optimizer)
    monkeypatch.setattr(nn.utils, "clip_grad_norm_", lambda *a, **k: pytest.fail("clipped without clip"))
    step = make_step(model, optimizer, nn.CrossEntropyLoss(), CPU, scaler=scaler)
    for _ in range(2):
        loss = step(x, y)
        ref_opt.zero_grad(set_to_none=True)
        ref_loss = nn.functional.cross_entropy(reference(x), y)
        ref_scaler.scale(ref_loss).backward()
        ref_scaler.step(ref_opt)
        ref_scaler.update()
        assert torch.equal(loss, ref_loss.detach())
    assert len(steps) == 2  # an optimizer step per call
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), reference.parameters(), strict=True))


@pytest.mark.parametrize("knobs", [{"accumulate": 0}, {"accumulate": 2.0}, {"clip": 0.0}, {"clip": -1.0},
                                   {"clip": float("nan")}])
def test_bad_knobs_are_refused_in_one_message(knobs):
    model, _, _ = _model_and_batch()
    with pytest.raises(ValueError, match=r"accumulate >= 1 and a clip > 0 \(or None\), got accumulate="):
        make_step(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), CPU, **knobs)


def test_a_ddp_model_all_reduces_after_the_last_micro_batch_only():
    """One process (gloo): the micro-batches before a group's last run under no_sync; the result is the plain one's."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_available() or dist.is_initialized():
        pytest.skip("needs torch.distributed and no process group already in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model, x, y = _model_and_batch()
        plain, _, _ = _model_and_batch()
        ddp = DistributedDataParallel(model)
        unsynced, no_sync = [], ddp.no_sync

        @contextlib.contextmanager
        def recording_no_sync():
            unsynced.append(len(unsynced))
            with no_sync():
                yield

        ddp.no_sync = recording_no_sync
        step = make_step(ddp, torch.optim.SGD(ddp.parameters(), lr=0.5), nn.CrossEntropyLoss(), CPU, accumulate=3)
        reference = make_step(plain, torch.optim.SGD(plain.parameters(), lr=0.5), nn.CrossEntropyLoss(), CPU,
                              accumulate=3)
        for xs, ys in zip(x.chunk(3), y.chunk(3), strict=True):
            step(xs, ys)
            reference(xs, ys)
        assert len(unsynced) == 2  # the first two of three micro-batches
        for p, q in zip(model.parameters(), plain.parameters(), strict=True):
            torch.testing.assert_close(p, q)
    finally:
        dist.destroy_process_group()


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
NOT_ACCURACY = {"inference.py:check_int8": "how often two models' predictions agree",
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
