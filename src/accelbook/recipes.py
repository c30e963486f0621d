"""A training recipe as one description, and one function that trains it (chapter 6, the optimization ladder).

A `Recipe` holds every knob of a run (model, data path, batch, schedule, memory format, precision,
backend flags, fused optimizer, compilation, CUDA graphs). `train_recipe` trains one on a device and
reports its wall time, steady-state throughput, accuracy and (with NVML) energy. `check_change`
compares the first steps of two recipes on the same batches, so a rung is checked before it is timed.

Both data paths normalize on the device with `data.normalize`, so they compute the same numbers on
every device: CUDA divides by a Python scalar as a multiply by its float32 reciprocal (one ulp off
true division for many pixel values), so a host-side `Normalize` and a device-side one differ there.
Training batches are full batches only (the partial last batch is dropped): every step has one
shape, so `torch.compile` does not recompile and CUDA graphs can replay.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields

import torch
from torch import nn

from .bench import backend_flags, synchronize
from .config import progress_bars
from .data import Data, mnist, normalize
from .formats import bf16_supported
from .loaders import DeviceLoader, endless
from .models import ConvNet, SmallNet
from .profiling import Sampler
from .step import accuracy as step_accuracy
from .step import count_correct, make_step

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
MODELS: dict[str, Callable[[], nn.Module]] = {
    "convnet": ConvNet,                     # the article's model, corrected (chapter 3)
    "small": SmallNet,                      # right-sized: 16 and 32 channels, 256 hidden units
    "anchor": lambda: SmallNet(c1=24),      # the public anchor's layer stack (accelbook.anchors), for tuning
}
# How close the first steps' losses of a rung must stay to the previous rung's, by the kind of change: the same
# arithmetic ("exact"), round-off of float32, of fp16 (10-bit mantissa) or of bf16 (7-bit), a new recipe (None).
# "tf32": float32 on a GPU whose cuDNN convolutions run in TF32 by default (10-bit mantissa, like fp16).
LOSS_TOLERANCE = {"exact": 0.0, "fp32": 1e-4, "tf32": 1e-2, "fp16": 1e-2, "bf16": 5e-2, "recipe": None}


@dataclass(frozen=True)
class Rung:
    """One change to the best recipe so far: its name, the fields it sets, how its first steps are checked, why."""

    name: str
    changes: dict = field(default_factory=dict)
    check: str = "round-off"        # "exact", "round-off" (of the recipe's precision) or "recipe"
    why: str = ""


def json_fields(d: dict) -> dict:
    """`d` as a JSON record keeps it: its values that are tuples as lists (one level deep)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class Recipe:
    """Every knob of one training run; a rung of the ladder changes one of them
    (or one related group)."""

    model: str = "convnet"          # a key of MODELS
    # "dataloader" (PIL images one by one, the article's) or "device" (chapter 4's)
    loader: str = "dataloader"
    batch_size: int = 64
    epochs: float = 10.0            # a fraction stops part-way through the last epoch
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"      # or "onecycle" (peak `lr`, no momentum cycling)
    channels_last: bool = False
    precision: str = "fp32"         # "bf16" or "fp16": autocast (fp16 scales the loss)
    # CUDA: TF32 for fp32 matmuls too (PyTorch's default: convolutions only)
    tf32: bool = False
    # CUDA: time cuDNN's algorithms on the first call of each shape
    cudnn_benchmark: bool = False
    # fused Adam; else PyTorch's default (foreach on CUDA, a for-loop on CPU)
    fused: bool = False
    # "" or a torch.compile mode ("default", "max-autotune-no-cudagraphs", ...)
    compile: str = ""
    # CUDA: torch.compile(mode="reduce-overhead"), which replays CUDA graphs
    cuda_graphs: bool = False
    train_images: str = "split"     # "split": chapter 4's 55,000; "all": all 60,000

    def changes_from(self, other: Recipe) -> dict:
        """The fields where this recipe differs from `other`, as {name: (other's value, this value)}."""
        return {f.name: (getattr(other, f.name), getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}

    def as_record(self) -> dict:
        """The recipe's fields as a ladder record keeps them: JSON values, tuples as lists."""
        return json_fields({f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def from_record(cls, kept: dict) -> Recipe:
        """The recipe a ladder record kept (`as_record`'s inverse); its missing fields take today's defaults,
        and a field this version does not know is one clear error."""
        unknown = sorted(set(kept) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"the record's recipe has fields this version does not know: {', '.join(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kept.items()})


# The article's corrected model trained fast (the ladder's one-cycle, "2 epochs" and "batch 256" rungs, fp32,
# default layout):
# the trained model that the inference and robustness chapters start from.
FAST = Recipe(loader="device", batch_size=256, schedule="onecycle", lr=1e-2, epochs=2.0)


@dataclass
class Result:
    """What one training run of a recipe measured."""

    wall_s: float                   # from building the loader and model to the test accuracy (compile included)
    warmup_s: float                 # the first steps (allocation, autotuning, compilation)
    steady_images_per_s: float      # after the warm-up, synchronized at both ends
    epoch_s: float                  # one epoch at the steady rate
    steps: int
    test_accuracy: float
    val_accuracy: float | None
    energy_j: float | None = None
    losses: list[float] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False, compare=False)  # the trained model itself

    def as_dict(self) -> dict:
        """A JSON-ready dict (the losses and the model left out)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("losses", "model")}


def unsupported(recipe: Recipe, device: torch.device) -> str | None:
    """Why `recipe` cannot run on `device` (one line), or None when it can."""
    cuda = device.type == "cuda"
    if not cuda and (recipe.tf32 or recipe.cudnn_benchmark or recipe.cuda_graphs):
        return "skipped: needs CUDA"
    if recipe.tf32 and not tf32_convolutions(device):
        return "skipped: TF32 needs compute capability 8.0 (Ampere) or newer"
    if recipe.precision == "fp16" and not cuda:
        return "skipped: fp16 training with GradScaler needs CUDA"
    if recipe.precision == "bf16" and cuda and not bf16_supported(device):
        return "skipped: this GPU has no native bf16 (compute capability < 8.0); use fp16 (--precision fp16)"
    if recipe.fused and device.type not in ("cuda", "cpu", "mps"):
        return f"skipped: fused Adam is not available on {device.type}"
    if recipe.model not in MODELS:
        return f"unknown model {recipe.model!r}"
    return None


class OnDevice:
    """A DataLoader's uint8 batches, copied to `device` and normalized there, as `DeviceLoader` does it."""

    def __init__(self, loader, device: torch.device):
        self.loader, self.device = loader, torch.device(device)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(normalized float images, labels) on the device, one batch at a time."""
        for images, labels in self.loader:
            yield normalize(images.to(self.device, non_blocking=True)), labels.to(self.device, non_blocking=True)


def make_loader(
    recipe: Recipe,
    data: Data,
    device: torch.device,
    seed: int,
    index: torch.Tensor | None = None,
    shuffle: bool = True,
):
    """Training batches for `recipe` (of `index`, default its training images): full
    batches only, normalized on `device`.

    The "dataloader" path converts PIL images one by one in a DataLoader (uint8,
    `PILToTensor`) and normalizes each batch on the device with the same function as
    the "device" path.
    """
    index = data.train_index(recipe.train_images) if index is None else index
    if recipe.loader == "device":
        images, labels = data.images[index], data.labels[index]
        return DeviceLoader(
            images, labels, recipe.batch_size, device,
            shuffle=shuffle, drop_last=True, seed=seed,
        )
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    pil = mnist(train=True, transform=transforms.PILToTensor())
    dataset = Subset(pil, index.tolist())
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    loader = DataLoader(
        dataset, batch_size=recipe.batch_size, shuffle=shuffle, drop_last=True,
        generator=generator,
    )
    return OnDevice(loader, device)


def tf32_convolutions(device: torch.device) -> bool:
    """True where PyTorch's default lets float32 convolutions run in TF32: CUDA, compute capability 8.0 and newer."""
    device = torch.device(device)
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def adam_implementation(recipe: Recipe, device: torch.device) -> str:
    """Which Adam runs: "fused" (asked), else PyTorch's default: "foreach" on CUDA, "for-loop" on a CPU."""
    if recipe.fused:
        return "fused"
    return {"cuda": "foreach", "cpu": "for-loop"}.get(torch.device(device).type, "default")


def fresh_compilation(recipe: Recipe) -> None:
    """Forget what Dynamo compiled in this process, so a compiled recipe pays its own compilation.

    `torch._dynamo.reset()` clears the in-memory caches (an earlier model of the same class would
    otherwise reuse their code). Inductor's on-disk caches (FX graphs, AOTAutograd, compiled kernels, in
    the system's temp folder) survive it: a repeat run there still skips part of the work a first ever
    compilation does.
    """
    if recipe.compile or recipe.cuda_graphs:
        torch._dynamo.reset()


def build(recipe: Recipe, device: torch.device, steps: int, seed: int):
    """Model, optimizer, schedule, loss scaler and the callable the loop runs (compiled
    where asked)."""
    torch.manual_seed(seed)
    model = MODELS[recipe.model]().to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=recipe.lr, betas=recipe.betas,
        **({"fused": True} if recipe.fused else {}),
    )
    schedule = None
    if recipe.schedule == "onecycle":
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=recipe.lr, total_steps=steps, cycle_momentum=False
        )
    elif recipe.schedule != "constant":
        raise ValueError(f"unknown schedule {recipe.schedule!r}: use constant or onecycle")
    scaler = torch.amp.GradScaler(device.type) if recipe.precision == "fp16" else None
    forward = model
    if recipe.cuda_graphs:
        forward = torch.compile(model, mode="reduce-overhead")
    elif recipe.compile:
        forward = torch.compile(model, mode=recipe.compile)
    return model, forward, optimizer, schedule, scaler


def backend_settings(recipe: Recipe, backends=torch.backends):
    """`bench.backend_flags` for a recipe: PyTorch's float32 defaults, TF32 matmuls if it
    asks, its cudnn.benchmark.

    PyTorch's defaults: cuDNN may run float32 convolutions in TF32 (on Ampere and newer),
    float32 matmuls stay in full precision (`torch.get_float32_matmul_precision() ==
    "highest"`); a recipe with `tf32` sets the matmul precision to "high" (TF32).
    """
    return backend_flags(
        tf32_matmul=recipe.tf32, tf32_conv=True, benchmark=recipe.cudnn_benchmark,
        backends=backends,
    )


def autocast(recipe: Recipe, device: torch.device):
    """The autocast context of the recipe's precision (a no-op for fp32)."""
    dtype = PRECISIONS[recipe.precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def step_fn(
    recipe: Recipe, device: torch.device, forward, optimizer, schedule, scaler, loss_fn
) -> Callable:
    """`step.make_step` with the recipe's knobs: channels_last inputs, its autocast, scaler
    and schedule."""
    prepare = (
        (lambda x: x.contiguous(memory_format=torch.channels_last))
        if recipe.channels_last else None
    )
    return make_step(
        forward, optimizer, loss_fn, device, prepare=prepare,
        autocast=lambda: autocast(recipe, device), scaler=scaler, schedule=schedule,
    )


def steps_for(recipe: Recipe, batches_per_epoch: int) -> int:
    """Optimizer steps of a recipe: epochs x batches per epoch, rounded down (at least one)."""
    return max(1, int(recipe.epochs * batches_per_epoch))


def accuracy(model: nn.Module, recipe: Recipe, images: torch.Tensor, labels: torch.Tensor, device: torch.device,
             batch_size: int = 2000) -> float:
    """Accuracy of `model` on uint8 `images` (normalized here), evaluated as the recipe trains (precision, layout)."""
    def prepare(x: torch.Tensor) -> torch.Tensor:
        x = normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if recipe.channels_last else x

    batches = ((images[i:i + batch_size], labels[i:i + batch_size]) for i in range(0, len(labels), batch_size))
    counts = count_correct(model, batches, device, prepare=prepare, autocast=lambda: autocast(recipe, device))
    model.train()
    return step_accuracy(counts)


def train_recipe(recipe: Recipe, device: torch.device, data: Data, seed: int = 0, sampler_read=None,
                 progress: bool = False, record_losses: int = 0) -> Result:
    """Train `recipe` on `device` from `seed`; time it honestly; evaluate it on validation and test.

    `wall_s` runs from building the loader and the model to the test accuracy (compilation and warm-up
    included; a compiled recipe starts from `fresh_compilation`). The steady rate is timed between two
    synchronizations after the first `max(1, steps // 10)` steps, at most 20, so warm-up and
    compilation stay out of it. `sampler_read` (e.g. `profiling.nvml_reader()`) samples power for `energy_j`.
    """
    device = torch.device(device)
    loss_fn = nn.CrossEntropyLoss()
    fresh_compilation(recipe)
    with backend_settings(recipe), Sampler(sampler_read) as sampler:
        synchronize(device)
        start = time.perf_counter()
        loader = make_loader(recipe, data, device, seed)
        steps = steps_for(recipe, len(loader))
        model, forward, optimizer, schedule, scaler = build(recipe, device, steps, seed)
        step = step_fn(recipe, device, forward, optimizer, schedule, scaler, loss_fn)
        warm = min(max(1, steps // 10), 20)
        losses, stream = [], itertools.islice(endless(loader), steps)
        if progress and progress_bars():
            from tqdm.auto import tqdm

            stream = tqdm(stream, total=steps, desc="steps", leave=False)
        for i, (images, labels) in enumerate(stream):
            loss = step(images, labels)
            if i < record_losses:
                losses.append(loss.item())
            if i == warm - 1:
                synchronize(device)
                steady_start = time.perf_counter()
        synchronize(device)
        trained = time.perf_counter()
        test = accuracy(model, recipe, data.test_images, data.test_labels, device)
        wall = time.perf_counter() - start
        val = accuracy(model, recipe, data.images[data.val_idx], data.labels[data.val_idx], device) \
            if recipe.train_images == "split" else None
    steady_steps = steps - warm
    steady_s = trained - steady_start
    rate = steady_steps * recipe.batch_size / steady_s if steady_steps else float("nan")
    return Result(wall_s=wall, warmup_s=steady_start - start, steady_images_per_s=rate,
                  epoch_s=len(data.train_index(recipe.train_images)) / rate, steps=steps, test_accuracy=test,
                  val_accuracy=val, energy_j=sampler.energy_j, losses=losses, model=model)


def settle_loss_scale(scaler, model: nn.Module, batch_losses: list[Callable[[], torch.Tensor]], tries: int = 40,
                      margin: float = 2.0) -> float:
    """Halve an fp16 loss scale until no batch's backward pass overflows (no optimizer step), then `margin` lower.

    GradScaler starts high and skips the steps whose gradients overflow while it settles. A check that
    compares the first steps must start from a settled scale, or its skipped steps read as a difference;
    the margin leaves room for gradients that grow over those steps.
    """
    def finite() -> bool:
        for loss in batch_losses:
            model.zero_grad(set_to_none=True)
            scaler.scale(loss()).backward()
            if not all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters()):
                return False
        return True

    for _ in range(tries):
        if finite():
            break
        scaler.update(scaler.get_scale() / 2)
    scaler.update(scaler.get_scale() / margin)
    model.zero_grad(set_to_none=True)
    return scaler.get_scale()


def first_losses(recipe: Recipe, device: torch.device, data: Data, steps: int = 5, seed: int = 0) -> list[float]:
    """The losses of a recipe's first `steps` steps on the first batches of the split, in order (no shuffling)."""
    device = torch.device(device)
    loader = make_loader(recipe, data, device, seed, index=data.train_idx[:steps * recipe.batch_size], shuffle=False)
    loss_fn = nn.CrossEntropyLoss()
    fresh_compilation(recipe)
    with backend_settings(recipe):
        model, forward, optimizer, schedule, scaler = build(recipe, device, steps_for(recipe, 1000), seed)
        step = step_fn(recipe, device, forward, optimizer, schedule, scaler, loss_fn)
        batches = list(loader)
        if scaler is not None:
            def batch_loss(x: torch.Tensor, y: torch.Tensor) -> Callable[[], torch.Tensor]:
                def loss() -> torch.Tensor:
                    with autocast(recipe, device):
                        return loss_fn(forward(x), y)
                return loss

            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # no draw moves
                settle_loss_scale(scaler, model, [batch_loss(x, y) for x, y in batches])
        return [step(x, y).item() for x, y in batches]


def deterministic(enabled: bool = True):
    """`bench.backend_flags` with deterministic algorithms (cuDNN's among them) when `enabled`; else nothing changes.

    Some cuDNN backward algorithms add with atomics, so two identical runs on a GPU can differ in the last bits.
    """
    return backend_flags(deterministic=True if enabled else None)


def check_change(before: Recipe, after: Recipe, kind: str, device: torch.device,
                 data: Data, steps: int = 5) -> dict:
    """Run the first steps of both recipes on the same batches; their losses must
    agree within LOSS_TOLERANCE[kind].

    kind "exact" asks for identical losses (both runs with deterministic
    algorithms), "fp32", "tf32", "fp16" and "bf16" for the round-off of that
    format; "recipe" marks a change of the optimization itself (model, batch,
    schedule), which only the accuracy of the full run can check.
    """
    if kind not in LOSS_TOLERANCE:
        raise ValueError(f"unknown check {kind!r}: use one of {sorted(LOSS_TOLERANCE)}")
    if LOSS_TOLERANCE[kind] is None:
        return {"kind": kind, "ok": True, "max_diff": None}
    with deterministic(kind == "exact"):
        a = first_losses(before, device, data, steps)
        b = first_losses(after, device, data, steps)
    diff = max(abs(x - y) for x, y in zip(a, b, strict=True))
    ok = diff <= LOSS_TOLERANCE[kind]
    return {"kind": kind, "ok": ok, "max_diff": diff, "before": a, "after": b}
