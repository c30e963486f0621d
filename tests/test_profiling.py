"""The profiling chapter's tools measure what they claim: memory predicted from shapes equals the profiler's
count, the exported trace is a real Chrome trace of a training step, the step budget adds up, and the
sampler degrades to nothing (not zero, not an error) without an NVIDIA GPU."""

import json
import threading
import time

import pytest
import torch
from torch import nn

from accelbook.data import mnist_tensors
from accelbook.gpu import nvml_reader
from accelbook.loaders import DeviceLoader, endless
from accelbook.models import ConvNet
from accelbook.profiling import (
    PHASES,
    Sampler,
    activities,
    cpu_reader,
    predict_memory,
    profile_training,
    profiler_overhead,
    ranges,
    step_budget,
    step_memory,
    trace_events,
)
from accelbook.seed import set_seed

CPU = torch.device("cpu")


def _recipe(batch_size: int, n: int = 1024, **model_kwargs):
    """The corrected model, Adam 1e-3 and real MNIST batches on the CPU (fresh, seeded)."""
    set_seed(0)
    model = ConvNet(**model_kwargs)
    images, labels = mnist_tensors(train=True)
    loader = DeviceLoader(images[:n], labels[:n], batch_size, CPU)
    return model, loader, torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()


# The prediction counts exactly the tensors autograd keeps; the measurement also holds the loss's log-softmax
# output and the loss (batch x 10 x 4 bytes + a few), about 0.01 % here. 1 % leaves room for allocator rounding elsewhere.
@pytest.mark.parametrize("batch_size, model_kwargs", [
    (32, {}), (128, {}), (64, {"batchnorm": True, "activation": "relu6"})])  # ReLU6 keeps its input, ReLU its output
def test_predicted_activation_memory_matches_the_profiler(batch_size, model_kwargs):
    model, loader, optimizer, loss_fn = _recipe(batch_size, **model_kwargs)
    predicted = predict_memory(model, (batch_size, 1, 28, 28))
    measured = step_memory(model, loader, optimizer, loss_fn, CPU)
    assert measured["activations"] == pytest.approx(predicted["activations"], rel=0.01)
    # The first step creates the gradients and Adam's two moments: that is what stays allocated.
    assert measured["retained"] == pytest.approx(predicted["gradients"] + predicted["optimizer"], rel=0.01)
    assert measured["peak"] >= measured["activations"]


def test_activation_memory_grows_linearly_with_the_batch():
    model = ConvNet()
    one, many = (predict_memory(model, (b, 1, 28, 28))["activations"] for b in (1, 100))
    assert many == 100 * one
    assert predict_memory(model, (8, 1, 28, 28))["parameters"] == 4 * sum(p.numel() for p in model.parameters())


def test_the_exported_trace_is_a_chrome_trace_of_a_training_step(tmp_path):
    model, loader, optimizer, loss_fn = _recipe(64)
    path = tmp_path / "trace.json"
    profile_training(model, loader, optimizer, loss_fn, CPU, wait=1, warmup=1, active=2, trace_path=path)
    raw = json.loads(path.read_text())
    assert isinstance(raw["traceEvents"], list)
    events = trace_events(path)
    for e in events:
        if e.get("ph") == "X":
            assert isinstance(e["ts"], (int, float)) and e["dur"] >= 0 and "name" in e
    ops = {e["name"] for e in events if e.get("cat") == "cpu_op"}
    assert "aten::convolution" in ops and "aten::convolution_backward" in ops, sorted(ops)[:20]
    names = [r["name"] for r in ranges(events)]
    assert names.count("train_step") == 2  # the active steps only: wait and warm-up are not traced
    assert all(names.count(p) == 2 for p in PHASES), names


def test_the_step_budget_adds_up_to_the_step_time():
    model, loader, optimizer, loss_fn = _recipe(64)
    budget = step_budget(model, loader, optimizer, loss_fn, CPU, steps=20, warmup=3)
    assert set(budget["phases"]) == set(PHASES) and all(t > 0 for t in budget["phases"].values())
    # On a CPU the per-phase synchronization costs nothing, so the phases should account for the whole
    # step; 25 % allows for a noisy two-core machine (the measured gap is a few percent).
    assert sum(budget["phases"].values()) == pytest.approx(budget["step"], rel=0.25)
    assert budget["phases"]["forward"] + budget["phases"]["backward"] > budget["phases"]["copy"]


def test_endless_starts_new_epochs_and_refuses_an_empty_loader():
    stream = endless([1, 2])
    assert [next(stream) for _ in range(5)] == [1, 2, 1, 2, 1]
    with pytest.raises(ValueError, match="no batches"):
        next(endless([]))


def test_activities_on_cpu():
    assert activities(CPU) == [torch.profiler.ProfilerActivity.CPU]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without an NVIDIA GPU")
def test_sampler_without_an_nvidia_gpu_yields_nothing():
    read = nvml_reader()
    assert read is None
    with Sampler(read) as sampler:
        time.sleep(0.05)
    assert sampler.samples == [] and sampler.energy_j is None and sampler.mean("gpu_util_pct") is None
    assert sampler.thread is None and sampler.seconds > 0


def test_sampler_stops_its_thread_when_the_block_raises():
    before = threading.active_count()
    with pytest.raises(ZeroDivisionError):
        with Sampler(cpu_reader(), interval=0.01) as sampler:
            time.sleep(0.05)
            raise ZeroDivisionError("the block fails")
    assert not sampler.thread.is_alive() and threading.active_count() == before
    assert len(sampler.samples) >= 3 and all(s["cpu_util_pct"] >= 0 for s in sampler.samples)


def test_sampler_integrates_power_into_joules():
    # A constant 100 W reader: the energy must be 100 W x the sampled time (trapezoidal rule is exact here).
    with Sampler(lambda: {"power_w": 100.0}, interval=0.01) as sampler:
        time.sleep(0.2)
    t, _ = sampler.series("power_w")
    assert sampler.energy_j == pytest.approx(100.0 * (t[-1] - t[0]), rel=1e-9)
    assert sampler.energy_j == pytest.approx(100.0 * sampler.seconds, rel=0.2)
    assert Sampler(lambda: {"power_w": 1.0}).energy_j is None  # never entered: no samples, no energy
    with pytest.raises(ValueError):
        Sampler(None, interval=0)


def test_profiler_noise_is_dropped_and_other_native_errors_pass(capfd):
    import os

    from accelbook.profiling import quiet_profiler_logs

    with quiet_profiler_logs():
        os.write(2, b"USDT:2026-11-29 00:19:39 3103:3103 SyncActivityProfilerHandler.cpp:39] profiler_start\n"
                    b"a native error the reader must see\n")
    err = capfd.readouterr().err
    assert err == "a native error the reader must see\n"


def test_cuda_only_memory_tools_do_nothing_on_cpu(tmp_path):
    from accelbook.profiling import cuda_memory, memory_history

    assert cuda_memory(CPU) is None
    with memory_history(tmp_path / "snapshot.pickle", CPU) as recording:
        pass
    assert recording is False and not (tmp_path / "snapshot.pickle").exists()


def test_a_failing_reader_stops_sampling_without_hiding_the_blocks_exception():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("NVML: not supported")
        return {"power_w": 50.0}

    with pytest.raises(KeyError):  # the block's own exception comes through, not the reader's
        with Sampler(flaky, interval=0.01) as sampler:
            time.sleep(0.1)
            raise KeyError("the block failed")
    assert isinstance(sampler.error, RuntimeError) and len(sampler.samples) == 2
    assert not sampler.thread.is_alive()
    with Sampler(lambda: {"power_w": 1.0}, interval=0.01) as again:  # a sampler can be entered again
        time.sleep(0.05)
    with again:
        time.sleep(0.03)
    assert again.samples[0]["t"] < 0.02 and again.error is None


def test_energy_prefers_the_drivers_energy_counter():
    start = time.perf_counter()
    # 1,000 mJ per second of counter (1 W), while the (lagging) power reading says 100 W.
    with Sampler(lambda: {"power_w": 100.0, "energy_mj": 1000 * (time.perf_counter() - start)}, interval=0.01) as s:
        time.sleep(0.2)
    assert s.energy_j == pytest.approx(s.seconds, rel=0.2)


def test_memory_prediction_refuses_a_layer_it_has_no_rule_for_and_leaves_the_model_alone():
    with pytest.raises(ValueError, match="GELU"):
        predict_memory(nn.Sequential(nn.Conv2d(1, 4, 3), nn.GELU()), (2, 1, 8, 8))
    model = ConvNet()
    before = [p.clone() for p in model.parameters()]
    predict_memory(model, (4, 1, 28, 28))
    assert all(p.device.type == "cpu" and torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_step_budget_needs_a_step():
    model, loader, optimizer, loss_fn = _recipe(64)
    with pytest.raises(ValueError, match="steps"):
        step_budget(model, loader, optimizer, loss_fn, CPU, steps=0)


def test_profiler_overhead_times_plain_and_recorded_steps_in_one_run():
    model, loader, optimizer, loss_fn = _recipe(16, n=256)
    result = profiler_overhead(model, loader, optimizer, loss_fn, CPU, steps=2, rounds=2, warmup=1)
    assert result["steps"] == 4 and result["plain"] > 0 and result["profiled"] > 0
    assert result["ratio"] == pytest.approx(result["profiled"] / result["plain"])
    assert result["recorded_steps"] == 4  # the profiler saw the profiled steps, and only those
    assert len(result["round_ratios"]) == 2 and result["verdict"] in ("slower", "faster", "within the noise")
    with pytest.raises(ValueError):
        profiler_overhead(model, loader, optimizer, loss_fn, CPU, steps=0)


def test_profiler_overhead_rounds_alternate_which_block_runs_first(monkeypatch):
    """ABBA: round 0 runs the plain block first, round 1 the profiled block first."""
    import accelbook.profiling as profiling

    order = []
    real = torch.profiler.profile

    def spy(*args, **kwargs):
        order.append("profiled")
        return real(*args, **kwargs)

    steps = []
    monkeypatch.setattr(torch.profiler, "profile", spy)
    monkeypatch.setattr(profiling, "train_step", lambda *a, **k: steps.append(len(order)))
    model, loader, optimizer, loss_fn = _recipe(16, n=256)
    profiler_overhead(model, loader, optimizer, loss_fn, CPU, steps=1, rounds=2, warmup=0)
    # the number of profiled blocks opened when each timed step ran: plain, profiled | profiled, plain
    assert steps == [0, 1, 2, 2]
