"""A cost model of data-parallel training: ring all-reduce over real links (chapter 7, "Scaling out").

A ring all-reduce of B bytes over N devices sends 2(N-1)/N x B bytes through each device's link in
2(N-1) steps (Patarasuk and Yuan, 2009), so it takes about 2(N-1) x alpha + 2(N-1)/N x B / bandwidth,
where alpha is the latency of one step. Data parallelism with a fixed batch per device (weak scaling)
then costs compute + all-reduce per step when, as for a model of one DDP bucket, nothing overlaps.
"""

from __future__ import annotations

import statistics

# Per-direction bandwidth of one device's link, in GB/s, with the source (book/references.bib) that prints it.
LINKS = {
    "NVLink 4 (H100/H200 SXM)": {"gbs": 450.0, "source": "nvidia2023h100datasheet",
                                 "note": "900 GB/s per GPU, both directions together"},
    "PCIe Gen5 x16": {"gbs": 64.0, "source": "nvidia2023h100datasheet",
                      "note": "128 GB/s both directions (H100 PCIe)"},
    "PCIe Gen4 x16": {"gbs": 32.0, "source": "nvidia2021a100datasheet",
                      "note": "64 GB/s both directions (A100 PCIe)"},
    "InfiniBand NDR (400 Gb/s)": {"gbs": 50.0, "source": "nvidia-connectx7",
                                  "note": "one ConnectX-7 port per GPU, 400 Gb/s = 50 GB/s"},
}
ASSUMED_ALPHA_S = 5e-6  # latency of one ring step: an assumed order of magnitude, not a cited figure


def ring_allreduce_s(nbytes: float, n: int, gbs: float, alpha_s: float = ASSUMED_ALPHA_S) -> float:
    """Seconds of a ring all-reduce of `nbytes` over `n` devices on links of `gbs` GB/s per direction."""
    if n < 1 or gbs <= 0 or nbytes < 0 or alpha_s < 0:
        raise ValueError("need n >= 1, a positive bandwidth and non-negative bytes and latency")
    if n == 1:
        return 0.0
    return 2 * (n - 1) * alpha_s + 2 * (n - 1) / n * nbytes / (gbs * 1e9)


def step_s(compute_s: float, nbytes: float, n: int, gbs: float, alpha_s: float = ASSUMED_ALPHA_S,
           overlap: float = 0.0) -> float:
    """Seconds of one data-parallel step: compute, plus the part of the all-reduce not hidden behind it.

    `overlap` is the fraction of the compute time that communication can hide behind (DDP overlaps
    buckets with the backward pass; a model that fills a single bucket overlaps nothing: 0).
    """
    comm = ring_allreduce_s(nbytes, n, gbs, alpha_s)
    return compute_s + max(0.0, comm - overlap * compute_s)


def efficiency(compute_s: float, nbytes: float, n: int, gbs: float, alpha_s: float = ASSUMED_ALPHA_S,
               overlap: float = 0.0) -> float:
    """Weak-scaling efficiency: the step time of one device over that of `n` (1.0 is perfect)."""
    return compute_s / step_s(compute_s, nbytes, n, gbs, alpha_s, overlap)


def fit_ring(rows: list[dict]) -> tuple[float, float]:
    """(alpha seconds, bandwidth GB/s) of the ring model that best fits measured all-reduce times.

    `rows` are {"bytes", "seconds", "ranks"} (from `accelbook.ddp.time_allreduce`): the number of ranks
    comes from the measurement, never from the caller. A least-squares line seconds = a + b x bytes
    gives alpha = a / (2(n-1)) and bandwidth = 2(n-1)/n / b.
    """
    ranks = {r.get("ranks") for r in rows}
    if len(ranks) != 1 or None in ranks:
        raise ValueError(f"every row needs the same 'ranks' (the world size it was measured with); got {ranks}")
    n = ranks.pop()
    if n < 2 or len(rows) < 2:
        raise ValueError("fitting a ring needs at least 2 ranks and 2 message sizes")
    b, a = statistics.linear_regression([r["bytes"] for r in rows], [r["seconds"] for r in rows])
    if b <= 0:
        raise ValueError("all-reduce time does not grow with message size: measure larger messages")
    return max(a, 0.0) / (2 * (n - 1)), 2 * (n - 1) / n / b / 1e9


def max_params_without_sharding(memory_gb: float, bytes_per_param: int = 16) -> float:
    """Parameters whose weights, gradients and Adam state fit in `memory_gb` when every GPU holds a full copy.

    16 bytes per parameter is mixed-precision Adam as ZeRO counts it (Rajbhandari et al., 2020): fp16
    weights and gradients (2 + 2) and fp32 master weights, momentum and variance (4 + 4 + 4); activations
    come on top. Past this, shard the model (FSDP, `fully_shard`) instead of replicating it.
    """
    return memory_gb * 1e9 / bytes_per_param
