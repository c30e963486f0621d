"""Seeing where a training step's time, memory and energy go (chapter 5; the optimization chapter reuses it).

- `train_step` runs one step in named phases (data, copy, forward, backward, optimizer), each a
  `torch.profiler.record_function` range; `step_budget` times those phases and, apart, whole steps.
- `profile_training` runs `torch.profiler` over steps with a wait/warmup/active schedule;
  `profiler_overhead` times steps with and without it in one run.
- `trace_events` and `memory_curve` read the Chrome trace it exports.
- `predict_memory` predicts parameters, gradients, Adam state and saved activations from shapes alone.
- `Sampler` polls a reader (NVML's GPU utilization, power and clocks, or this process's CPU use) in a
  background thread while a block runs, and integrates power into joules.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, record_function

from .bench import synchronize
from .loaders import endless
from .pairs import verdict
from .step import make_step

PHASES = ("data", "copy", "forward", "backward", "optimizer")


@contextmanager
def _phase(name: str, device: torch.device, times: dict | None) -> Iterator[None]:
    """A `record_function` range; with `times`, also its synchronized wall seconds added to times[name]."""
    with record_function(name):
        if times is None:
            yield
            return
        synchronize(device)
        start = time.perf_counter()
        yield
        synchronize(device)
        times[name] = times.get(name, 0.0) + time.perf_counter() - start


def train_step(model: nn.Module, batches: Iterator, optimizer: torch.optim.Optimizer,
               loss_fn: nn.Module, device: torch.device,
               times: dict | None = None) -> torch.Tensor:
    """The package's one step (`step.make_step`) in named phases (PHASES); with `times`,
    each is synchronized and timed."""
    def phase(name: str):
        return _phase(name, device, times)

    with phase("data"):
        images, labels = next(batches)
    return make_step(model, optimizer, loss_fn, device, phase=phase)(images, labels)


def step_budget(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, device: torch.device, steps: int = 20,
                warmup: int = 5) -> dict:
    """Mean seconds per phase of a step (each phase synchronized), and of whole
    uninstrumented steps.

    Instrumented and whole steps alternate, so a machine that speeds up or slows down
    during the measurement affects both alike. The phases are timed with a
    synchronization around each, which serializes CPU and device; the whole steps have
    none inside. On a CPU the two should agree; on a GPU the whole step can be shorter,
    by the overlap of CPU launches with GPU work that the synchronizations remove.
    `zero_grad` counts in the forward phase.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    model.train()
    stream = endless(batches)
    for _ in range(warmup):  # first calls: allocator, kernels, Adam's state, workers
        train_step(model, stream, optimizer, loss_fn, device)
    times: dict[str, float] = {}
    whole = 0.0
    for _ in range(steps):
        train_step(model, stream, optimizer, loss_fn, device, times)
        synchronize(device)
        start = time.perf_counter()
        train_step(model, stream, optimizer, loss_fn, device)
        synchronize(device)
        whole += time.perf_counter() - start
    phases = {p: times[p] / steps for p in PHASES}
    return {"phases": phases, "step": whole / steps, "steps": steps}


# What the profiler's C++ side (Kineto) prints straight to file descriptor 2 on every start and stop, its
# notice on machines without a CUDA driver, and the CPU allocator's notice that frees of blocks allocated
# before profiling are not reported (`memory_curve` is relative for that reason): noise in a notebook, so
# `quiet_profiler_logs` drops these lines and passes every other one on.
PROFILER_NOISE = re.compile(r"^(USDT|STAGE):\S+ \S+ \d+:\d+ \w+\.cpp:\d+\]"
                            r"|^ERROR:\S+ \S+ \d+:\d+ DeviceProperties\.cpp:\d+\] gpuGetDeviceCount failed"
                            r"|^\[W\d+ \S+ CPUAllocator\.cpp:\d+\] Memory block of unknown size")


@contextmanager
def quiet_profiler_logs() -> Iterator[None]:
    """Capture what native code writes to stderr in the block; pass on every line but the profiler's noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not PROFILER_NOISE.match(line))
            if kept:
                sys.stderr.write(kept)


def activities(device: torch.device) -> list[ProfilerActivity]:
    """What torch.profiler should record on `device`: CPU always, CUDA kernels where the device is CUDA."""
    acts = [ProfilerActivity.CPU]
    if torch.device(device).type == "cuda":
        acts.append(ProfilerActivity.CUDA)
    return acts


def profile_training(model: nn.Module, batches: Iterable,
                     optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                     device: torch.device, wait: int = 1, warmup: int = 2,
                     active: int = 3, trace_path: str | Path | None = None,
                     memory: bool = False,
                     shapes: bool = True) -> torch.profiler.profile:
    """torch.profiler over wait + warmup + active training steps; the trace (of the
    active steps) to `trace_path`."""
    def on_ready(prof: torch.profiler.profile) -> None:
        if trace_path is not None:
            prof.export_chrome_trace(str(trace_path))

    model.train()
    stream = endless(batches)
    schedule = torch.profiler.schedule(wait=wait, warmup=warmup, active=active,
                                       repeat=1)
    with quiet_profiler_logs(), torch.profiler.profile(
            activities=activities(device), schedule=schedule, on_trace_ready=on_ready,
            record_shapes=shapes, profile_memory=memory) as prof:
        for _ in range(wait + warmup + active):
            with record_function("train_step"):
                train_step(model, stream, optimizer, loss_fn, device)
            synchronize(device)
            prof.step()
    return prof


def profiler_overhead(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                      device: torch.device, steps: int = 10, rounds: int = 3, warmup: int = 3,
                      shapes: bool = True) -> dict:
    """Median seconds of a training step without and with torch.profiler recording it, measured in one run.

    Blocks of `steps` plain steps and `steps` recorded steps alternate `rounds` times, in ABBA order (so a
    machine that drifts affects both alike); every step is synchronized and timed the same way. The
    profiler's start, stop and trace processing fall outside the timed steps: the ratio is the per-step
    recording cost. `round_ratios` holds each round's ratio of medians and `verdict` says whether the
    profiled step was slower in every round (`pairs.verdict`).
    """
    if steps < 1 or rounds < 1:
        raise ValueError(f"steps and rounds must be at least 1, got {steps} and {rounds}")
    model.train()
    stream = endless(batches)
    for _ in range(warmup):
        train_step(model, stream, optimizer, loss_fn, device)

    def timed() -> list[float]:
        out = []
        for _ in range(steps):
            synchronize(device)
            start = time.perf_counter()
            with record_function("train_step"):
                train_step(model, stream, optimizer, loss_fn, device)
            synchronize(device)
            out.append(time.perf_counter() - start)
        return out

    def recorded_block() -> tuple[list[float], int]:
        with quiet_profiler_logs(), torch.profiler.profile(activities=activities(device), record_shapes=shapes) as prof:
            out = timed()
        return out, sum(e.count for e in prof.key_averages() if e.key == "train_step")

    plain, profiled, recorded, ratios = [], [], 0, []
    for r in range(rounds):
        if r % 2:  # ABBA: every other round starts with the profiler
            (block, count), bare = recorded_block(), timed()
        else:
            bare, (block, count) = timed(), recorded_block()
        plain, profiled, recorded = plain + bare, profiled + block, recorded + count
        ratios.append(statistics.median(block) / statistics.median(bare))
    p, q = statistics.median(plain), statistics.median(profiled)
    return {"plain": p, "profiled": q, "ratio": q / p, "steps": steps * rounds, "recorded_steps": recorded,
            "round_ratios": ratios, "verdict": verdict([1 / x for x in ratios])}


def trace_events(path: str | Path) -> list[dict]:
    """The events of a Chrome trace file (JSON, or gzipped JSON), checking its shape on the way."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        trace = json.load(f)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    if not isinstance(events, list):
        raise ValueError(f"{path.name} is not a Chrome trace: no list of traceEvents")
    return events


def ranges(events: list[dict], category: str = "user_annotation") -> list[dict]:
    """Complete events ("ph": "X") of one category, e.g. the record_function ranges, sorted by start."""
    return sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == category), key=lambda e: e["ts"])


def memory_curve(events: list[dict], device_type: int = 0, device_id: int | None = None) -> list[tuple[float, int]]:
    """(microseconds, bytes allocated) after each allocation or free on one device type (0 CPU, 1 CUDA).

    Needs a trace recorded with `profile_memory=True`. Bytes count from just before the first event of
    the trace, so the curve shows what the traced steps allocated on top of what already lived (on the
    CPU the profiler cannot see frees of blocks allocated before it started, so a relative curve is the
    only meaningful one there). `device_id` picks one GPU where there are several.
    """
    mem = sorted((e for e in events if e.get("name") == "[memory]"
                  and e.get("args", {}).get("Device Type") == device_type
                  and (device_id is None or e["args"].get("Device Id") == device_id)), key=lambda e: e["ts"])
    if not mem:
        return []
    base = mem[0]["args"]["Total Allocated"] - mem[0]["args"]["Bytes"]
    return [(float(e["ts"]), e["args"]["Total Allocated"] - base) for e in mem]


# Modules whose backward needs no tensor of the batch's size (only shapes or nothing).
SAVES_NOTHING = (nn.Identity, nn.Flatten, nn.AdaptiveAvgPool2d)


def _saved(module: nn.Module, inp: torch.Tensor,
           out: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """(tensor, bytes) that autograd saves for `module`'s backward, for the layer types
    of the book's models."""
    size = lambda t, dtype=None: t.numel() * (dtype or t.dtype).itemsize  # noqa: E731
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        return [(inp, size(inp))]  # the weight gradient needs the input
    if isinstance(module, nn.ReLU):
        return [(out, size(out))]  # the mask comes from the output
    if isinstance(module, nn.Hardtanh):  # ReLU6 = hardtanh(0, 6): reads its input
        return [(inp, size(inp))]
    if isinstance(module, nn.MaxPool2d):
        return [(inp, size(inp)), (None, size(out, torch.int64))]  # and argmax indices
    if isinstance(module, nn.BatchNorm2d):
        return [(inp, size(inp)), (None, 2 * out.shape[1] * 4)]  # and mean, inverse std
    if isinstance(module, SAVES_NOTHING):
        return []
    raise ValueError(f"predict_memory has no rule for {type(module).__name__}: "
                     "add what its backward saves to _saved")


def predict_memory(model: nn.Module, input_shape: tuple,
                   optimizer_states: int = 2) -> dict:
    """Predicted bytes of parameters, gradients, optimizer state and saved activations
    for one batch.

    `activations` counts what the forward pass allocates and autograd keeps for
    backward; the input batch, which the first layer keeps too, exists before the
    forward pass and is left out. The model runs on the meta device (shapes only, no
    arithmetic, no memory); a tensor saved by two layers (a ReLU's output that the next
    pool also keeps) is counted once. Adam keeps two tensors per parameter
    (`optimizer_states=2`); SGD with momentum one; plain SGD none.
    """
    meta = _meta_copy(model)
    example = torch.empty(input_shape, device="meta")
    seen: dict[int, int] = {}
    extra = 0
    keep: list[torch.Tensor] = []

    def hook(module, inputs, output):
        nonlocal extra
        for tensor, nbytes in _saved(module, inputs[0], output):
            if tensor is None:
                extra += nbytes
            elif tensor is not example:  # the batch exists before the forward pass
                keep.append(tensor)
                seen.setdefault(id(tensor), nbytes)

    leaves = [m for m in meta.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(hook) for m in leaves]
    try:
        meta(example)
    finally:
        for h in hooks:
            h.remove()
    trained = [p for p in model.parameters() if p.requires_grad]
    params = sum(p.numel() * p.element_size() for p in trained)
    return {"parameters": params, "gradients": params,
            "optimizer": optimizer_states * params,
            "activations": sum(seen.values()) + extra}


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` on the meta device (same structure and shapes; no weight is copied)."""
    memo = {}
    for t in [*model.parameters(), *model.buffers()]:
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, t.requires_grad) if isinstance(t, nn.Parameter) else empty
    return copy.deepcopy(model, memo).train(model.training)


def _level(curve: list[tuple[float, int]], ts: float) -> int:
    """Bytes allocated at time `ts` on a memory curve (0 before its first event)."""
    level = 0
    for t, nbytes in curve:
        if t > ts:
            break
        level = nbytes
    return level


def step_memory(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                device: torch.device) -> dict:
    """Bytes one training step allocates, from the profiler's memory events, relative to its forward's start.

    `activations`: still allocated when the forward pass ends (what autograd saved, plus the loss's
    log-softmax output and the loss); `peak`: the most allocated at any moment of the step; `retained`:
    still allocated after the optimizer step (gradients, and optimizer state created by this step).
    On CUDA, run one step of any model first: a process's first matrix product also allocates cuBLAS's
    workspace, which would be counted here.
    """
    device = torch.device(device)
    model.train()
    stream = endless(batches)
    synchronize(device)
    with quiet_profiler_logs(), torch.profiler.profile(activities=activities(device), profile_memory=True) as prof:
        train_step(model, stream, optimizer, loss_fn, device)
        synchronize(device)
    events = _events_of(prof)
    curve = memory_curve(events, 1 if device.type == "cuda" else 0, device.index if device.type == "cuda" else None)
    spans = {r["name"]: (r["ts"], r["ts"] + r["dur"]) for r in ranges(events) if r["name"] in PHASES}
    base = _level(curve, spans["forward"][0])
    during = [b for t, b in curve if spans["forward"][0] <= t <= spans["optimizer"][1]]
    return {"activations": _level(curve, spans["forward"][1]) - base,
            "peak": max(during, default=base) - base,
            "retained": _level(curve, spans["optimizer"][1]) - base}


def _events_of(prof: torch.profiler.profile) -> list[dict]:
    """The Chrome-trace events of a finished profiler run (exported to a temporary file and read back)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        return trace_events(path)


# Sampling utilization and power while a block runs.

def cpu_reader() -> Callable[[], dict]:
    """A function reading this process's CPU use since its previous call, in % of the cores it may run on."""
    last = [time.perf_counter(), time.process_time()]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    def read() -> dict:
        now, cpu = time.perf_counter(), time.process_time()
        pct = 100 * (cpu - last[1]) / max(now - last[0], 1e-9) / cores
        last[:] = [now, cpu]
        return {"cpu_util_pct": pct}

    return read


class Sampler:
    """Poll `read()` about every `interval` seconds in a background thread while the `with` block runs.

    `samples` holds one dict per poll with its time `t` (seconds from the start of the block). With
    `read=None` (no NVIDIA GPU: see `gpu.nvml_reader`) nothing is sampled, `samples` stays empty and
    `energy_j` is None. The thread stops when the block ends, normally or by an exception; a reader that
    fails stops the sampling and leaves its exception in `error`, without hiding the block's own.
    """

    def __init__(self, read: Callable[[], dict] | None, interval: float = 0.05):
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.read, self.interval = read, interval
        self.samples: list[dict] = []
        self.seconds: float | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _sample(self) -> bool:
        """Take one sample; False (and `error` set) when the reader fails."""
        try:
            self.samples.append({"t": time.perf_counter() - self._start, **self.read()})
            return True
        except Exception as err:  # an NVML call that is not supported, a driver that went away
            self.error = err
            return False

    def _run(self) -> None:
        """The polling loop (background thread)."""
        while self._sample() and not self._stop.wait(self.interval):
            pass

    def __enter__(self) -> Sampler:
        self.samples, self.error, self.seconds = [], None, None
        self._stop.clear()
        self._start = time.perf_counter()
        if self.read is not None:
            self.thread = threading.Thread(target=self._run, daemon=True, name="accelbook-sampler")
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.thread is not None:
            self.thread.join(timeout=max(5.0, 10 * self.interval))
            if self.error is None and not self.thread.is_alive():
                self._sample()  # the state at the end of the block
        self.seconds = time.perf_counter() - self._start

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """Times and values of one quantity over the samples (samples without it left out)."""
        pairs = [(s["t"], s[key]) for s in self.samples if s.get(key) is not None]
        return [t for t, _ in pairs], [v for _, v in pairs]

    @property
    def energy_j(self) -> float | None:
        """Joules over the samples: the energy counter's difference, else power
        integrated (trapezoidal rule)."""
        t, counter = self.series("energy_mj")
        if len(t) >= 2:
            return (counter[-1] - counter[0]) / 1000
        t, watts = self.series("power_w")
        if len(t) < 2:
            return None
        steps = range(len(t) - 1)
        return sum((t[i + 1] - t[i]) * (watts[i] + watts[i + 1]) / 2 for i in steps)

    def mean(self, key: str) -> float | None:
        """Mean of one quantity over the samples; None when it was never sampled."""
        _, values = self.series(key)
        return statistics.fmean(values) if values else None


# CUDA's caching allocator.

def cuda_memory(device: torch.device | str) -> dict | None:
    """Bytes allocated to tensors, reserved by the caching allocator, and the peak allocated; None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return {"allocated": torch.cuda.memory_allocated(device), "reserved": torch.cuda.memory_reserved(device),
            "peak_allocated": torch.cuda.max_memory_allocated(device)}


@contextmanager
def memory_history(path: str | Path, device: torch.device | str, max_entries: int = 100_000) -> Iterator[bool]:
    """On CUDA, record every allocation in the block and save a snapshot for pytorch.org/memory_viz.

    Yields True when recording (CUDA), False elsewhere (nothing is recorded or written).
    """
    if torch.device(device).type != "cuda":
        yield False
        return
    torch.cuda.memory._record_memory_history(max_entries=max_entries)
    try:
        yield True
    finally:
        torch.cuda.memory._dump_snapshot(str(path))
        torch.cuda.memory._record_memory_history(enabled=None)
