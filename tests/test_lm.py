"""Chapter 10's training core (issue 23): recipes, the one step, checks, MFU, attention memory and the race."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, fields, replace

import pytest
import torch

from accelbook import lm
from accelbook.data import CharCodec, split_tokens
from accelbook.lm import (
    BASELINE,
    Corpus,
    LMRecipe,
    attention_memory,
    check_lm_change,
    first_lm_losses,
    mfu,
    race_lm,
    train_lm,
)
from accelbook.nanogpt_anchor import AnchorSettings, learning_rate
from accelbook.recipes import Rung
from accelbook.records import SCHEMA, save_record
from accelbook.step import make_step

CPU = torch.device("cpu")
TINY = replace(BASELINE, n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8, iters=40, warmup_iters=5,
               lr_decay_iters=40, learning_rate=1e-2, min_lr=1e-3, eval_interval=10, eval_iters=2)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    """A small repetitive text (no dataset needed) that a tiny model learns within a few dozen steps."""
    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 60
    codec = CharCodec(text)
    train, val = split_tokens(codec.encode(text))
    return Corpus(train, val, codec)


def test_the_baseline_is_nanogpts_cpu_recipe():
    """Every shared setting of rung 0 is the anchor's (nanoGPT at 3adf61e), with explicit attention in fp32."""
    a = AnchorSettings()
    assert (BASELINE.n_layer, BASELINE.n_head, BASELINE.n_embd, BASELINE.block_size, BASELINE.batch_size) == (4, 4, 128, 64, 12)
    assert (BASELINE.iters, BASELINE.learning_rate, BASELINE.min_lr, BASELINE.warmup_iters, BASELINE.lr_decay_iters) == \
        (a.max_iters, a.learning_rate, a.min_lr, a.warmup_iters, a.lr_decay_iters)
    assert (BASELINE.betas, BASELINE.weight_decay, BASELINE.grad_clip, BASELINE.dropout) == ((0.9, 0.99), 0.1, 1.0, 0.0)
    assert (BASELINE.attention, BASELINE.precision, BASELINE.compile, BASELINE.fused) == ("explicit", "fp32", "", False)
    assert BASELINE.changes_from(replace(BASELINE, attention="sdpa")) == {"attention": ("sdpa", "explicit")}
    assert {f.name for f in fields(LMRecipe)} >= {"grad_accum", "checkpointing", "eval_interval", "eval_iters"}


def test_a_check_passes_for_the_same_recipe_and_fails_for_a_real_change(corpus):
    assert check_lm_change(TINY, TINY, "exact", CPU, corpus)["ok"]
    wrong = check_lm_change(TINY, replace(TINY, learning_rate=TINY.learning_rate * 10), "fp32", CPU, corpus)
    assert not wrong["ok"] and wrong["max_diff"] > 1e-3
    assert check_lm_change(TINY, replace(TINY, attention="sdpa"), "fp32", CPU, corpus)["ok"]
    with pytest.raises(ValueError, match="unknown check"):
        check_lm_change(TINY, TINY, "close enough", CPU, corpus)


def test_accumulated_micro_batches_take_the_step_of_the_whole_batch(corpus):
    """Two micro-batches of 4 and one batch of 8: the same first losses to float32 round-off (not with 8 steps)."""
    whole = first_lm_losses(TINY, CPU, corpus, steps=4)
    split = first_lm_losses(replace(TINY, grad_accum=2), CPU, corpus, steps=4)
    assert max(abs(a - b) for a, b in zip(whole, split, strict=True)) < 1e-4
    assert whole[-1] < whole[0]


def test_the_step_clips_the_gradient_norm_to_the_recipes_grad_clip(corpus):
    """At its one optimizer step, two micro-batches have the whole batch's gradient, clipped to `grad_clip`."""
    x, y = lm.token_batch(corpus.train, TINY.block_size, TINY.batch_size)
    norms = {}
    for clip, accumulate in ((1e-3, 2), (None, 2), (None, 1)):
        recipe = replace(TINY, grad_clip=clip, grad_accum=accumulate)
        model, forward, optimizer, schedule, scaler = lm.build(recipe, CPU, corpus.vocab_size, seed=0)
        seen = norms.setdefault((clip, accumulate), [])

        def record_norm(*_, seen=seen, model=model):
            seen.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item())

        optimizer.register_step_pre_hook(record_norm)
        step = lm.lm_step(recipe, CPU, model, forward, optimizer, schedule, scaler)
        for xs, ys in zip(x.chunk(accumulate), y.chunk(accumulate), strict=True):
            step(xs, ys)
    assert norms[1e-3, 2] == [pytest.approx(1e-3, rel=1e-4)]  # one optimizer step, after both micro-batches
    assert norms[None, 2] == [pytest.approx(norms[None, 1][0], rel=1e-4)] and norms[None, 1][0] > 0.1


def test_training_lowers_the_loss_and_reports_consistent_fields(corpus):
    result = train_lm(TINY, CPU, corpus, seed=0, peak_flops=1e11)
    iters = [point["iter"] for point in result.curve]
    assert iters == [0, 10, 20, 30, 40] and result.iters == 40
    assert result.curve[-1]["val_loss"] < result.curve[0]["val_loss"] - 0.5
    assert result.curve[0]["val_loss"] == pytest.approx(math.log(corpus.vocab_size), abs=0.3)
    seconds = [point["seconds"] for point in result.curve]
    assert seconds == sorted(seconds) and seconds[-1] <= result.wall_s
    assert result.steady_tokens_per_s > 0 and result.peak_memory_bytes is None  # not measured on a CPU
    assert result.mfu == pytest.approx(result.steady_tokens_per_s * result.flops_per_token / 1e11)
    assert result.iters_to_target is None and result.seconds_to_target is None


def test_training_stops_at_the_first_evaluation_at_or_below_the_target(corpus):
    full = train_lm(TINY, CPU, corpus, seed=0)
    target = full.curve[2]["val_loss"] + 1e-6
    first = next(p for p in full.curve if p["val_loss"] <= target)
    stopped = train_lm(TINY, CPU, corpus, seed=0, target_loss=target)
    assert stopped.iters_to_target == first["iter"] == stopped.curve[-1]["iter"]
    assert stopped.seconds_to_target == stopped.curve[-1]["seconds"] <= stopped.wall_s


def test_the_schedule_is_nanogpts_per_optimizer_step(corpus):
    """After 3 optimizer steps of 2 micro-batches each, the learning rate is nanoGPT's get_lr(3)."""
    recipe = replace(TINY, grad_accum=2)
    model, forward, optimizer, schedule, scaler = lm.build(recipe, CPU, corpus.vocab_size, seed=0)
    step = lm.lm_step(recipe, CPU, model, forward, optimizer, schedule, scaler)
    assert optimizer.param_groups[0]["lr"] == learning_rate(0, recipe)
    x, y = lm.token_batch(corpus.train, recipe.block_size, recipe.batch_size)
    for _ in range(3):
        for xs, ys in zip(x.chunk(2), y.chunk(2), strict=True):
            step(xs, ys)
    assert [g["lr"] for g in optimizer.param_groups] == [learning_rate(3, recipe)] * 2 == [1e-2 * 4 / 6] * 2


def test_every_training_step_is_step_make_step(corpus, monkeypatch):
    made, calls = [], []

    def counting_make_step(*args, **kwargs):
        step = make_step(*args, **kwargs)
        made.append(kwargs)

        def counted(x, y):
            calls.append(x.shape)
            return step(x, y)
        return counted

    monkeypatch.setattr(lm, "make_step", counting_make_step)
    train_lm(replace(TINY, iters=6, grad_accum=2, eval_interval=3), CPU, corpus, seed=0)
    assert len(made) == 1 and made[0]["autocast"] is not None
    assert (made[0]["accumulate"], made[0]["clip"]) == (2, TINY.grad_clip)  # the recipe's knobs, make_step's work
    assert calls == [torch.Size([4, 16])] * 12  # 6 optimizer steps of two micro-batches of 4 windows


def test_mfu_is_achieved_model_flops_over_the_peak():
    assert mfu(1000.0, 6e6, 1e10) == pytest.approx(0.6)
    assert mfu(1000.0, 6e6, None) is None


def test_attention_memory_explicit_grows_quadratically_sdpa_linearly():
    """Saved-for-backward bytes: the prediction from shapes is exact (tolerance 1 %); doubling T: x4 vs x2 at large T."""
    rows = attention_memory([256, 512, 1024], CPU)
    for row in rows:
        assert row["measured"] == pytest.approx(row["predicted"], rel=0.01), row
    by = {name: [r["measured"] for r in rows if r["attention"] == name] for name in ("explicit", "sdpa")}
    explicit_growth = by["explicit"][2] / by["explicit"][1]
    sdpa_growth = by["sdpa"][2] / by["sdpa"][1]
    assert explicit_growth > 3.5 and sdpa_growth == pytest.approx(2.0, rel=0.02)
    assert by["explicit"][2] > 5 * by["sdpa"][2]


def test_the_race_interleaves_and_reports_medians_and_the_ratio(corpus):
    anchor = replace(AnchorSettings(), block_size=16, batch_size=8, n_layer=1, n_head=2, n_embd=32, max_iters=4,
                     eval_interval=2, eval_iters=2)
    recipe = replace(TINY, iters=4, eval_interval=2)
    order = []
    out = race_lm(CPU, corpus, seeds=(0, 1), recipe=recipe, target=0.0, anchor=anchor, log=order.append)
    assert [r["who"] for r in order] == ["anchor", "book", "book", "anchor"]
    assert out["all_reached"] == {"anchor": False, "book": False}  # nobody reaches loss 0: whole runs, said so
    assert out["ratio"] == pytest.approx(out["median_s"]["book"] / out["median_s"]["anchor"])
    assert all(r["iter"] == 4 for r in out["runs"])


def test_the_ladder_checks_then_times_each_rung_and_records_it(corpus, monkeypatch, tmp_path):
    """Rungs on TINY: run and timed, refused by its check, skipped on a CPU; kept replayed; a valid JSON record.

    The first rung timed is kept whatever its speed, so every later rung must build on TINY with SDPA.
    """
    wrong = Rung("lr x10", {"learning_rate": TINY.learning_rate * 10}, "round-off")
    monkeypatch.setattr(lm, "RUNGS", [lm.RUNGS[1], wrong, lm.RUNGS[5], lm.RUNGS[6]])
    lines = []
    rows = lm.climb_lm(CPU, corpus, iters=14, peak_flops={"fp32": 1e11}, base=TINY, eval_iters=2, log=lines.append)
    assert [r["rung"] for r in rows] == [r.name for r in lm.RUNGS] and len(lines) == 4
    sdpa, refused, graphs, checkpointed = rows
    assert sdpa["check"]["kind"] == "fp32" and sdpa["kept"] and sdpa["changes"] == {"attention": ["explicit", "sdpa"]}
    assert checkpointed["check"] == {"kind": "fp32", "ok": True, "max_diff": 0.0}  # exact in eager fp32
    assert refused["recipe"]["attention"] == checkpointed["recipe"]["attention"] == "sdpa"
    assert refused["skipped"].startswith("check failed") and not refused["check"]["ok"] and "wall_s" not in refused
    assert graphs["skipped"] == lm.unsupported(replace(TINY, compile="reduce-overhead"), CPU) and graphs["check"] is None
    best, best_rate = TINY, None
    for row, rung in zip(rows, lm.RUNGS, strict=True):
        recipe = replace(best, **rung.changes)
        assert row["recipe"] == json.loads(json.dumps(asdict(replace(recipe, iters=14, eval_iters=2))))
        if row["skipped"] is None:
            assert row["check"]["ok"] and row["iters"] == 14 and not row["reached"] and row["seconds_to_target"] is None
            assert row["tokens_per_s"] > 0 and row["peak_memory_bytes"] is None  # not measured on a CPU
            assert row["mfu"] == pytest.approx(row["tokens_per_s"] * row["flops_per_token"] / 1e11)
            assert row["kept"] == (best_rate is None or row["tokens_per_s"] > best_rate)
        if row["kept"]:
            best, best_rate = recipe, row["tokens_per_s"]
    rec = lm.lm_record(rows, CPU, ["--task", "shakespeare", "--quick"], quick=True)
    back = json.loads(save_record(rec, tmp_path / "r.json").read_text(encoding="utf-8"))
    json.dumps(back, allow_nan=False)
    assert back["schema"] == SCHEMA and back["kind"] == lm.RECORD_KIND and back["quick"] and back["target"] == lm.TARGET
    assert back["provenance"]["command"] == "python -m accelbook.ladder --task shakespeare --quick"
    assert back["provenance"]["device"] == "cpu" and back["provenance"]["driver"] is None
    assert back["rungs"][0]["speedup_steady"] == 1.0 and back["rungs"][0]["speedup_to_target"] is None
    assert back["rungs"][3]["speedup_steady"] == pytest.approx(checkpointed["tokens_per_s"] / sdpa["tokens_per_s"])
    assert "speedup_steady" not in back["rungs"][1] and "recipe" not in back["rungs"][0]
    assert back["top"] == [r["rung"] for r in rows if r["kept"]][-1] and list(back["recipes"]) == [r["rung"] for r in rows]


def test_a_rung_that_reaches_the_target_records_its_time_and_stays_valid_json(corpus):
    """At the first evaluation already (target 100): time to target, no timed step (tokens/s None, not NaN)."""
    rows = lm.climb_lm(CPU, corpus, rungs=[0], iters=14, base=TINY, eval_iters=2, target=100.0)
    (row,) = rows
    assert row["reached"] and row["iters_to_target"] == 0 and 0 < row["seconds_to_target"] <= row["wall_s"]
    assert row["tokens_per_s"] is None and row["mfu"] is None and not row["kept"]
    rec = lm.lm_record(rows, CPU, [], quick=False)
    assert rec["target"] == 100.0 and rec["top"] is None and "speedup_steady" not in rec["rungs"][0]
    json.dumps(rec, allow_nan=False)


def test_a_gpu_starts_from_nanogpts_shakespeare_char_recipe_and_its_target():
    recipe, target = lm.baseline_for(torch.device("cuda", 0))
    assert (recipe.n_layer, recipe.n_head, recipe.n_embd, recipe.block_size, recipe.batch_size) == (6, 6, 384, 256, 64)
    assert (recipe.dropout, recipe.learning_rate, recipe.min_lr, recipe.iters, recipe.betas) == (0.2, 1e-3, 1e-4, 5000,
                                                                                               (0.9, 0.99))
    assert target == 1.47 and lm.baseline_for(CPU) == (BASELINE, lm.TARGET)


def test_a_gpu_without_native_bf16_runs_the_mixed_precision_rung_in_fp16(corpus, monkeypatch):
    monkeypatch.setattr(lm, "bf16_supported", lambda device: False)  # a T4
    t4 = torch.device("cuda", 0)
    assert lm.for_device(replace(TINY, precision="bf16"), t4).precision == "fp16"
    assert lm.for_device(replace(TINY, precision="bf16"), CPU).precision == "bf16"
    assert lm.for_device(TINY, t4) is TINY
    # climb_lm builds every rung through for_device (here a stand-in that a CPU can run: bf16 -> fp32)
    monkeypatch.setattr(lm, "for_device", lambda r, d: replace(r, precision="fp32") if r.precision == "bf16" else r)
    (row,) = lm.climb_lm(CPU, corpus, rungs=[2], iters=4, base=TINY, eval_iters=2)
    assert lm.RUNGS[2].changes == {"precision": "bf16"} and row["recipe"]["precision"] == "fp32"


def test_checks_run_without_dropout_so_two_attentions_compare(corpus, monkeypatch):
    """With dropout the explicit and fused attentions (on a GPU) draw different masks: the check runs without it."""
    seen = []

    def first_losses(recipe, device, corpus, steps=5, seed=0):
        seen.append((recipe.attention, recipe.dropout))
        return [1.0] * steps

    monkeypatch.setattr(lm, "first_lm_losses", first_losses)
    noisy = replace(TINY, dropout=0.2)
    assert check_lm_change(noisy, replace(noisy, attention="sdpa"), "fp32", CPU, corpus)["ok"]
    assert seen == [("explicit", 0.0), ("sdpa", 0.0)]


def test_rung_0_is_named_after_the_baseline_it_runs(corpus, monkeypatch):
    assert lm.BASELINE_NAMES[lm.baseline_for(torch.device("cuda", 0))[0]] == "nanoGPT's shakespeare_char recipe"
    monkeypatch.setattr(lm, "BASELINE_NAMES", {TINY: "the tiny recipe"})
    (row,) = lm.climb_lm(CPU, corpus, rungs=[0], iters=4, base=TINY, eval_iters=2)
    assert row["rung"] == "the tiny recipe"


def test_a_rung_line_shows_peak_memory_where_it_was_measured():
    row = {"rung": "SDPA", "skipped": None, "tokens_per_s": 1e5, "mfu": 0.4, "reached": False, "wall_s": 9.0,
           "kept": True, "peak_memory_bytes": 3 * 2**30}
    assert "peak 3,072 MiB" in lm.lm_row_line(row)
    assert "MiB" not in lm.lm_row_line({**row, "peak_memory_bytes": None})  # a CPU: not measured


def test_a_same_training_rung_is_timed_in_pairs_and_kept_only_if_faster_in_each(corpus, monkeypatch):
    monkeypatch.setattr(lm, "RUNGS", [lm.RUNGS[0], lm.RUNGS[1]])
    lines = []
    base, sdpa = lm.climb_lm(CPU, corpus, iters=14, base=TINY, eval_iters=2, log=lines.append, repeats=2,
                             pair_iters=14)
    assert "repeats" not in base and len(sdpa["repeats"]["ratios"]) == 2 and sdpa["repeats"]["order"] == "ABBA"
    assert sdpa["kept"] == (sdpa["repeats"]["verdict"] == "faster")  # the pairs decide, not the long runs
    assert "paired rate" in lines[1] and all(len(line) <= 88 for line in lines[1].splitlines())


def test_a_paired_lm_run_is_timed_for_at_least_a_second(corpus, monkeypatch):
    seen = []
    monkeypatch.setattr(lm, "train_lm", lambda r, *a, **k: seen.append((r.iters, r.eval_iters, k)) or
                        lm.LMResult(1.0, r.iters, 1.0, [], None, None, None, None, 1.0, None, None))
    lm.pair_rates(TINY, TINY, CPU, corpus, repeats=1, iters=60, rate=1e6)
    steps = lm.WARM_STEPS + int(1e6 / (TINY.batch_size * TINY.block_size)) + 1
    assert seen == [(steps, 2, {"eval_every": steps})] * 2
    timed = (steps - lm.WARM_STEPS) * TINY.batch_size * TINY.block_size / 1e6  # seconds at that rate
    assert timed >= lm.MIN_STEADY_S
    seen.clear()
    lm.pair_rates(TINY, TINY, CPU, corpus, repeats=1, iters=60, rate=100.0)  # slow: the 60 steps time enough
    assert [s[0] for s in seen] == [60, 60]


def test_the_pairs_decide_where_a_rung_has_them():
    faster = {"verdict": "faster"}
    assert lm.lm_keep(90.0, 100.0, faster)  # the long run drifted slower; every pair was faster
    assert not lm.lm_keep(110.0, 100.0, {"verdict": "within the noise"})
    assert lm.lm_keep(110.0, 100.0) and not lm.lm_keep(90.0, 100.0)  # no pairs: the rates decide
    assert lm.lm_keep(5.0, None) and not lm.lm_keep(None, 100.0, faster)
    assert not lm.lm_keep(110.0, 100.0, faster, 2.5, 1.9)  # faster, but it diverged after the check
    assert lm.lm_keep(110.0, 100.0, faster, 1.9 + lm.LOSS_SLACK, 1.9)
