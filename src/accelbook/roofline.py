"""FLOPs, bytes and arithmetic intensity of a model's layers, and the roofline they sit under (chapter 1)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from .bench import Measurement, tf32_mode, time_op

MATMUL_LAYERS = (nn.Conv2d, nn.Linear)


@dataclass
class LayerCost:
    """Work and traffic of one convolution or linear layer for one batch."""

    name: str
    flops: int
    bytes: int
    out_shape: tuple

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved (the roofline's x-axis)."""
        return self.flops / self.bytes


def _cost(name: str, module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> LayerCost:
    """FLOPs (2 per multiply-add) and minimum bytes (read input and weights, write output) of one call."""
    w = module.weight
    macs_per_output = w.numel() // w.shape[0]  # Conv2d: C_in/groups * kh * kw; Linear: in_features
    flops = 2 * out.numel() * macs_per_output
    params = w.numel() + (module.bias.numel() if module.bias is not None else 0)
    nbytes = (inp.numel() + params + out.numel()) * out.element_size()
    return LayerCost(name, flops, nbytes, tuple(out.shape))


def _capture(model: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]]:
    """Run `model` once and record (name, module, input, output) of every conv/linear layer."""
    seen, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, MATMUL_LAYERS):
            hooks.append(module.register_forward_hook(
                lambda m, i, o, name=name: seen.append((name, m, i[0].detach(), o.detach()))))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def layer_costs(model: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """FLOPs, bytes and intensity of each conv/linear layer of `model` on the batch `example`."""
    return [_cost(name, m, i, o) for name, m, i, o in _capture(model, example)]


def time_layers(model: nn.Module, example: torch.Tensor, warmup: int = 2, repeats: int = 5,
                tf32: bool = False) -> dict[str, float]:
    """Median forward seconds of each conv/linear layer alone, on the inputs it sees in `model`."""
    return {name: m.median for name, m in layer_measurements(model, example, warmup, repeats, tf32).items()}


def layer_measurements(model: nn.Module, example: torch.Tensor, warmup: int = 2, repeats: int = 5,
                       tf32: bool = False) -> dict[str, Measurement]:
    """Every timed forward of each conv/linear layer alone, on the inputs it sees in `model` (`time_op`).

    On CUDA, float32 layers run with TF32 explicitly off (or on, with `tf32=True`) for cuBLAS and cuDNN
    alike: cuDNN's default would otherwise put TF32 convolutions under an fp32 roof."""
    out = {}
    with torch.no_grad(), tf32_mode(tf32):
        for name, module, inp, _ in _capture(model, example):
            out[name] = time_op(lambda m=module, x=inp: m(x), example.device, warmup, repeats)
    return out


class _OpLog(TorchDispatchMode):
    """Records each aten operation run inside the block with the device types of its tensor arguments."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leaves = pytree.tree_leaves((args, kwargs or {}))
        self.ops.append((str(func), {t.device.type for t in leaves if isinstance(t, torch.Tensor)}))
        return func(*args, **(kwargs or {}))


def foreach_adam_ops(model: nn.Module) -> list[str]:
    """The operations one multi-tensor (foreach) Adam step runs on `model`'s parameters, the form PyTorch uses on
    CUDA: each is at least one kernel launch there. Counted on the meta device, which does no arithmetic."""
    meta = copy.deepcopy(model).to("meta")
    for p in meta.parameters():
        p.grad = torch.empty_like(p)
    adam = torch.optim.Adam(meta.parameters(), foreach=True)
    adam.step()  # the first step creates the moments; later steps are the steady ones
    with _OpLog() as log:
        adam.step()
    return [op for op, devices in log.ops if devices == {"meta"}]


def attainable(intensity: float, peak_flops: float, bandwidth: float) -> float:
    """Roofline bound: min(peak FLOP/s, intensity x bytes/s)."""
    return min(peak_flops, intensity * bandwidth)


def ridge_point(peak_flops: float, bandwidth: float) -> float:
    """Intensity (FLOP/byte) at which a kernel stops being memory-bound."""
    return peak_flops / bandwidth


def plot_roofline(ax, peaks: dict[str, float], bandwidth: float, xmin: float = 0.1, xmax: float = 1e4):
    """Draw one roof per peak (FLOP/s) under the bandwidth slope (bytes/s) on log-log axes."""
    import numpy as np

    x = np.logspace(np.log10(xmin), np.log10(xmax), 200)
    for label, peak in peaks.items():
        ax.plot(x, np.minimum(peak, x * bandwidth) / 1e12, lw=1.5, label=f"roof: {label}")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (FLOP/byte)", ylabel="TFLOP/s")
    ax.grid(True, which="both", alpha=0.3)
    return ax
