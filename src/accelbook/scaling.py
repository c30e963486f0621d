"""A cost model of data-parallel training: all-reduce over a cluster's two levels of links (chapter 7, "Scaling out").

A ring all-reduce of B bytes over N devices sends 2(N-1)/N x B bytes through each device's link in
2(N-1) steps (Patarasuk and Yuan, 2009), so it takes about 2(N-1) x alpha + 2(N-1)/N x B / bandwidth,
where alpha is the latency of one step. A cluster has two kinds of link: NVLink (or PCIe) between the
GPUs of one node, and a network (InfiniBand) between nodes, one NIC per GPU. The two-level ring
(Mikami et al., 2018) reduce-scatters inside each node, all-reduces each GPU's 1/g share across the
nodes (g rings in parallel, one per NIC), and all-gathers inside the node again. With a fixed batch per
device (weak scaling) a step costs compute + all-reduce when, as for a model of one DDP bucket, nothing
overlaps. The per-step latencies are those NCCL's own tuner assumes (src/graph/tuning.cc); NCCL's tree
and NVLS algorithms are not modelled beyond their latency steps (`latency_steps`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

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

# Latencies NCCL's tuner assumes for its ring algorithm and LL128 protocol (source: nccl-tuning, NCCL 2.30.7):
# a fixed cost per call, and a cost per ring step over NVLink, PCIe or the network. Estimates NCCL uses to
# choose an algorithm, not measurements; its LL protocol assumes less (0.6 us per NVLink step), Simple more.
NCCL_RING_LL128_US = {"call": 14.0, "nvlink_step": 1.9, "pcie_step": 2.5, "network_step": 4.0}


@dataclass(frozen=True)
class Fabric:
    """A cluster's links: nodes of `gpus_per_node` GPUs on one fast link each, and one network link per GPU."""

    name: str
    gpus_per_node: int
    intra_gbs: float      # per GPU and direction, inside a node (NVLink or PCIe)
    inter_gbs: float      # per GPU and direction, across nodes (one NIC per GPU)
    intra_step_s: float   # latency of one ring step inside a node
    inter_step_s: float   # latency of one ring step across nodes
    call_s: float = 0.0   # fixed latency of one all-reduce call


def _nccl_us(key: str) -> float:
    """One of NCCL's tuner latencies, in seconds."""
    return NCCL_RING_LL128_US[key] * 1e-6


# DGX H100/H200-like nodes (nvidia-dgx-basepod): 8 GPUs on NVLink 4 and NVSwitch, 8 single-port 400 Gb/s
# ConnectX-7 NICs for the compute network, one per GPU.
H100_SXM_NDR = Fabric("8 H100/H200 SXM per node on NVLink 4, one 400 Gb/s NDR NIC per GPU", 8,
                      LINKS["NVLink 4 (H100/H200 SXM)"]["gbs"], LINKS["InfiniBand NDR (400 Gb/s)"]["gbs"],
                      _nccl_us("nvlink_step"), _nccl_us("network_step"), _nccl_us("call"))
# The same nodes if their GPUs talked over PCIe Gen5 instead of NVLink (H100 PCIe boards without bridges).
H100_PCIE_NDR = Fabric("8 H100 PCIe per node on PCIe Gen5, one 400 Gb/s NDR NIC per GPU", 8,
                       LINKS["PCIe Gen5 x16"]["gbs"], LINKS["InfiniBand NDR (400 Gb/s)"]["gbs"],
                       _nccl_us("pcie_step"), _nccl_us("network_step"), _nccl_us("call"))


def ring_allreduce_s(nbytes: float, n: int, gbs: float, alpha_s: float = 0.0) -> float:
    """Seconds of a ring all-reduce of `nbytes` over `n` devices on links of `gbs` GB/s per direction."""
    if n < 1 or gbs <= 0 or nbytes < 0 or alpha_s < 0:
        raise ValueError("need n >= 1, a positive bandwidth and non-negative bytes and latency")
    if n == 1:
        return 0.0
    return 2 * (n - 1) * alpha_s + 2 * (n - 1) / n * nbytes / (gbs * 1e9)


def ring_reduce_scatter_s(nbytes: float, n: int, gbs: float, alpha_s: float = 0.0) -> float:
    """Seconds of a ring reduce-scatter (or all-gather) of `nbytes` over `n` devices: half a ring all-reduce."""
    return ring_allreduce_s(nbytes, n, gbs, alpha_s) / 2


def nodes_and_local(n: int, gpus_per_node: int) -> tuple[int, int]:
    """(nodes, GPUs per node) of `n` GPUs: one partly filled node, or whole nodes of `gpus_per_node`."""
    if n < 1 or gpus_per_node < 1:
        raise ValueError("need at least one GPU and one GPU per node")
    if n <= gpus_per_node:
        return 1, n
    if n % gpus_per_node:
        raise ValueError(f"{n} GPUs do not fill whole nodes of {gpus_per_node}: model whole nodes")
    return n // gpus_per_node, gpus_per_node


def allreduce_parts(nbytes: float, n: int, fabric: Fabric) -> dict[str, float]:
    """Seconds of a two-level ring all-reduce by part: latency, bytes inside the nodes, bytes across them."""
    nodes, local = nodes_and_local(n, fabric.gpus_per_node)
    if n == 1:
        return {"latency": 0.0, "inside": 0.0, "across": 0.0}
    intra, inter = latency_steps("two-level ring", n, fabric.gpus_per_node)
    return {"latency": fabric.call_s + intra * fabric.intra_step_s + inter * fabric.inter_step_s,
            "inside": 2 * ring_reduce_scatter_s(nbytes, local, fabric.intra_gbs),  # reduce-scatter + all-gather
            "across": ring_allreduce_s(nbytes / local, nodes, fabric.inter_gbs)}  # one ring per NIC, B/g each


def allreduce_s(nbytes: float, n: int, fabric: Fabric) -> float:
    """Seconds of a two-level ring all-reduce of `nbytes` over `n` GPUs of `fabric` (one node: NVLink only)."""
    return sum(allreduce_parts(nbytes, n, fabric).values())


def latency_steps(algorithm: str, n: int, gpus_per_node: int) -> tuple[int, int]:
    """(steps inside a node, steps across nodes) one all-reduce waits for, counted as NCCL's tuner counts them."""
    nodes, local = nodes_and_local(n, gpus_per_node)
    levels = nodes.bit_length() - 1  # log2 of the number of nodes, rounded down (NCCL's log2i)
    steps = {"ring": (2 * (n - 1) - 2 * (nodes - 1), 2 * (nodes - 1)),  # NCCL's one ring through every GPU
             "two-level ring": (2 * (local - 1), 2 * (nodes - 1)),      # this module's allreduce_s
             "tree": (2 * (local - 1), 2 * levels),                     # chain in the node, trees across
             "nvls tree": (1, 2 * levels)}                              # NVSwitch reduces in one step
    if algorithm not in steps:
        raise ValueError(f"unknown algorithm {algorithm!r}: choose one of {', '.join(steps)}")
    return steps[algorithm]


def step_s(compute_s: float, comm_s: float, overlap: float = 0.0) -> float:
    """Seconds of one data-parallel step: compute, plus the part of the communication not hidden behind it.

    `overlap` is the fraction of the compute time that communication can hide behind (DDP overlaps
    buckets with the backward pass; a model that fills a single bucket overlaps nothing: 0).
    """
    return compute_s + max(0.0, comm_s - overlap * compute_s)


def efficiency(compute_s: float, comm_s: float, overlap: float = 0.0) -> float:
    """Weak-scaling efficiency: the step time of one device over that of a device that also communicates."""
    return compute_s / step_s(compute_s, comm_s, overlap)


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
