"""Records with provenance: the probe writes them, the chapters find and read them, NVML degrades."""

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from accelbook import pairs, probe, records
from accelbook.gpu import NO_GPU, describe, nvidia_smi, nvml_snapshot
from accelbook.records import SCHEMA, load_records, no_records_message, results_dir, save_record

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _gpu_record(when="2026-01-01T00:00:00Z"):
    prov = {"device": "cuda:0", "device_name": "NVIDIA H200", "driver": "1.0", "cuda_runtime": "13.0",
            "torch": "2.14.0", "datetime_utc": when, "command": "python -m accelbook.probe"}
    return {"kind": "probe", "provenance": prov, "matmul": [], "copy": {}, "transfer": []}


def test_probe_cli_writes_a_record_with_provenance(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "sizes_for", lambda device, quick: [64])
    out = tmp_path / "rec.json"
    probe.main(["--quick", "--device", "cpu", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert rec["schema"] == SCHEMA and rec["kind"] == "probe"
    assert {"device_name", "torch", "driver", "cuda_runtime", "datetime_utc", "command"} <= set(rec["provenance"])
    assert "--out" in rec["provenance"]["command"]
    assert {r["format"] for r in rec["matmul"]} == {"fp32", "bf16", "fp16"} and rec["copy"]["gbps"] > 0


def test_a_second_record_of_the_day_does_not_overwrite_the_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = records.default_path("ladder", torch.device("cpu"))
    first.parent.mkdir()
    first.write_text("{}")
    second = records.default_path("ladder", torch.device("cpu"))
    assert second != first and second.name == first.name.replace(".json", "-2.json") and not second.exists()


def test_load_keeps_gpu_records_oldest_first(tmp_path):
    save_record(_gpu_record("2026-02-01T00:00:00Z"), tmp_path / "b.json")
    save_record(_gpu_record("2026-01-01T00:00:00Z"), tmp_path / "a.json")
    cpu = _gpu_record()
    cpu["provenance"]["device"] = "cpu"
    save_record(cpu, tmp_path / "c.json")
    found = load_records("probe", tmp_path)
    assert [r["file"] for r in found] == ["a.json", "b.json"]
    assert len(load_records("probe", tmp_path, gpu_only=False)) == 3


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELBOOK_RESULTS", str(tmp_path))
    assert results_dir() == tmp_path


def test_without_a_clone_the_message_says_so(monkeypatch):
    monkeypatch.setattr(records, "results_dir", lambda: None)
    assert load_records() == [] and "not a clone" in no_records_message()


def test_repository_results_folder_is_found_and_valid(monkeypatch):
    monkeypatch.delenv("ACCELBOOK_RESULTS", raising=False)
    monkeypatch.chdir(RESULTS.parent / "notebooks")
    assert results_dir() == RESULTS
    for rec in load_records(gpu_only=False):
        assert {"device_name", "driver", "cuda_runtime", "torch", "datetime_utc", "command"} <= set(rec["provenance"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has an NVIDIA GPU")
def test_nvml_degrades_to_a_clear_message(capsys):
    assert nvml_snapshot() is None
    describe()
    assert NO_GPU in capsys.readouterr().out


def test_nvidia_smi_missing_is_none(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert nvidia_smi() is None


def test_probe_command_line_errors_are_one_line_with_status_2():
    import subprocess
    import sys

    for args in (["--device", "tpu"], ["--device", "cuda:7"], ["--bogus"]):
        done = subprocess.run([sys.executable, "-m", "accelbook.probe", *args], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("python -m accelbook.probe: error:"), done.stderr


COMMITTED = sorted(RESULTS.glob("*.json"))
PROVENANCE_KEYS = {"device", "device_name", "torch", "python", "driver", "cuda_runtime", "datetime_utc", "command"}


def test_results_holds_committed_records():
    assert COMMITTED, "results/ holds no record (chapter 6 shows the committed ladder record)"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_each_committed_record_is_valid_and_readable(path):
    """A committed record has the schema, its provenance, the name the writing command gives it, and is read back."""
    from datetime import datetime

    rec = json.loads(path.read_text(encoding="utf-8"))
    assert rec["schema"] == SCHEMA and rec["kind"] in records.COMMANDS
    prov = rec["provenance"]
    assert PROVENANCE_KEYS <= set(prov), PROVENANCE_KEYS - set(prov)
    assert prov["command"].startswith(records.COMMANDS[rec["kind"]].split(" -m ")[0])
    words = prov["command"].split()  # the writing command's module and its fixed options (lm-ladder: --task shakespeare)
    assert all(w in words for w in ["-m", *records.COMMANDS[rec["kind"]].split(" -m ")[1].split()])
    when = datetime.strptime(prov["datetime_utc"], "%Y-%m-%dT%H:%M:%SZ")
    stem = f"{rec['kind']}-{records.slug(prov['device_name'])}-{when.date().isoformat()}"
    assert re.fullmatch(re.escape(stem) + r"(-[2-9]|-[1-9][0-9]+)?\.json", path.name), path.name
    if prov["device"].startswith("cuda"):
        assert prov["driver"] and prov["cuda_runtime"], "a GPU record names its driver and CUDA runtime"
    line = records.provenance_line(rec)
    assert all(str(prov[k]) in line for k in ("device_name", "torch", "command")) and prov["datetime_utc"][:10] in line
    found = [r for r in load_records(rec["kind"], RESULTS, gpu_only=False) if r["file"] == path.name]
    assert len(found) == 1 and found[0]["provenance"] == prov
    if rec["kind"] == "ladder":
        _check_ladder(path, rec)
    if rec["kind"] == "lm-ladder":
        _check_lm_ladder(rec)


def _check_lm_ladder(rec):
    """A Shakespeare ladder record: each decision the ladder's rule (`lm.lm_keep`), each verdict its pairs'."""
    from accelbook import lm

    best = best_val = None
    for r in rec["rungs"]:
        if "wall_s" not in r:
            assert r["skipped"] and not r["kept"], r
            continue
        paired = r.get("repeats")
        if paired:  # records that time rungs in pairs
            ratios = [a / b for a, b in zip(paired["after"], paired["before"], strict=True)]
            assert paired["ratios"] == pytest.approx(ratios) and paired["verdict"] == pairs.verdict(ratios)
        rate = r["tokens_per_s"]
        assert r["kept"] == lm.lm_keep(rate, best, paired, r.get("val_loss"), best_val), r["rung"]
        if r["kept"]:
            best, best_val = rate, r.get("val_loss")


# The rungs of earlier ladder records: 2026-12-02 and the first of 2026-12-04, before each rung changed one knob;
# the second of 2026-12-04, whose one-cycle rung also cut the epochs to 2; the third of 2026-12-04, which tried
# the schedule at 10 epochs before cutting them. These earlier ladders kept a faster rung within SLACK of the
# best recipe before it (`chained_keep`); today's bar does not move (`ladder.keep`). The fourth, the first
# with today's rungs and bar, also asked a paired rung to be faster in its one full run
# (`wall_and_pairs_keep`); records with `keep_rule` let the pairs decide.
EARLIER_RUNGS = ["article recipe", "device-resident data", "batch 256 + one-cycle", "channels_last", "mixed precision",
                 "cudnn.benchmark + TF32", "fused Adam", "torch.compile", "CUDA graphs", "right-sized model"]
ONE_CYCLE_IN_2_EPOCHS = ["article recipe", "device-resident data", "one-cycle, 2 epochs", "batch 256", "channels_last",
                         "mixed precision", "cudnn.benchmark", "TF32 matmuls", "fused Adam", "torch.compile",
                         "CUDA graphs", "right-sized model", "Adam betas (0.7, 0.9)", "1.5 epochs"]
SCHEDULE_AT_10_EPOCHS = ["article recipe", "device-resident data", "one-cycle schedule", "2 epochs", "batch 256",
                         "channels_last", "mixed precision", "cudnn.benchmark", "TF32 matmuls", "fused Adam",
                         "torch.compile", "CUDA graphs", "right-sized model", "Adam betas (0.7, 0.9)", "1.5 epochs"]


def chained_keep(wall, acc, best_wall, best_acc, verdict, same_cost):
    """The earlier ladders' rule: faster, and on the target or within SLACK of the best recipe so far."""
    from accelbook import ladder

    if best_wall is None:
        return True
    if same_cost:
        return acc >= best_acc + ladder.SLACK
    faster = wall < best_wall and verdict in (None, "faster")
    return faster and (acc >= ladder.TARGET or acc >= best_acc - ladder.SLACK)


def wall_and_pairs_keep(wall, acc, best_wall, best_acc, verdict, same_cost, base_acc):
    """The fourth 2026-12-04 record's rule: today's one bar, but "faster" in its full run as well as its pairs."""
    from accelbook import ladder

    if best_wall is None:
        return True
    if same_cost:
        return acc >= best_acc + ladder.SLACK
    faster = wall < best_wall and verdict in (None, "faster")
    return faster and acc >= ladder.bar(best_acc if base_acc is None else base_acc)


def _check_ladder(path, rec):
    """A ladder record: its rungs in the ladder's order, each decision the ladder's rule, the table prints it."""
    from accelbook import ladder

    assert ladder.load_record(path) == rec
    rungs = [s["rung"] for s in rec["rungs"]]
    ladders = [[r.name for r in ladder.RUNGS], SCHEDULE_AT_10_EPOCHS, ONE_CYCLE_IN_2_EPOCHS, EARLIER_RUNGS]
    ran = [n for n in ladders if set(rungs) <= set(n) and rungs == [x for x in n if x in rungs]]
    assert ran, "rungs missing from every ladder or out of its order"
    rule = ladder.keep if ran[0] == ladders[0] else chained_keep  # the ladder the record ran, and its rule
    assert set(rec["recipes"]) == set(rungs) and rec["target"] == ladder.TARGET
    best_wall = best_acc = base_acc = None
    run = [s for s in rec["rungs"] if s.get("wall_s") is not None]
    assert run, "no rung ran"
    for s in rec["rungs"]:
        if s.get("wall_s") is None:
            assert s["skipped"] and not s["kept"], s
            continue
        assert s["check"]["ok"] and s["seeds"] >= 1 and s["steady_images_per_s"] > 0 and 0 <= s["val_accuracy"] <= 1
        paired = s.get("repeats")
        if paired:  # records that time rungs in pairs: same-training rungs timed in alternating pairs too
            ratios = [a / b for a, b in zip(paired["after"], paired["before"], strict=True)]
            assert paired["ratios"] == pytest.approx(ratios) and len(ratios) >= 2, s["rung"]
            assert paired["verdict"] == pairs.verdict(ratios) and s["check"]["kind"] != "recipe"
        verdict = paired["verdict"] if paired else None
        same_cost = ladder.same_cost(s["changes"])
        args = (s["wall_s"], s["val_accuracy"], best_wall, best_acc, verdict, same_cost)
        if rule is ladder.keep:  # today's rungs: the rule the record names, or the one before it named any
            today = {None: wall_and_pairs_keep, ladder.KEEP_RULE: ladder.keep}[rec.get("keep_rule")]
            extra = {"pays_once": ladder.pays_once(s["changes"])} if today is ladder.keep else {}
            assert s["kept"] == today(*args, base_acc=base_acc, **extra), s["rung"]
        else:
            assert "keep_rule" not in rec, "an earlier ladder's record names no rule"
            assert s["kept"] == chained_keep(*args), s["rung"]
        base_acc = s["val_accuracy"] if base_acc is None else base_acc
        if s["kept"]:
            best_wall, best_acc = s["wall_s"], s["val_accuracy"]
        assert s["speedup_wall"] == pytest.approx(run[0]["wall_s"] / s["wall_s"])
    top = rec["top"]
    assert top["rung"] == [s["rung"] for s in rec["rungs"] if s["kept"]][-1] and 0 < top["test_accuracy"] <= 1
    text = ladder.table(rec)
    assert all(name in text for name in rungs)
    last = " ".join(text.splitlines()[-2:])  # the top rung's test line, wrapped in two within 88 characters
    assert top["rung"] in last and f"{top['test_accuracy']:.2%}" in last
    paired = [s["rung"] for s in rec["rungs"] if s.get("repeats")]
    # header, one line per rung, the paired repeats (a heading and a line each), the test accuracy (two lines)
    assert len(text.splitlines()) == 1 + len(rec["rungs"]) + (1 + len(paired) if paired else 0) + 2


def test_a_cpu_record_names_its_processor_and_its_matrix_features():
    """Two CPUs with the same core count differ by 2x in bf16 and int8: a CPU record says which ran it."""
    from accelbook.formats import cpu_flags

    prov = records.provenance(torch.device("cpu"), [], kind="ladder")
    assert prov["cpu_model"] == records.cpu_model()
    if not prov["cpu_model"]:
        pytest.skip("this platform names no processor model")
    assert prov["cpu_features"] == [f for f in records.CPU_FEATURES if f in cpu_flags()]
    line = records.provenance_line({"provenance": prov})
    assert line.startswith(f"{prov['device_name']} ({prov['cpu_model']}) |")
    old = {k: v for k, v in prov.items() if k not in ("cpu_model", "cpu_features")}  # records before 2026-12-04
    assert records.provenance_line({"provenance": old}).startswith(f"{prov['device_name']} |")


@pytest.mark.parametrize("prov, name", [
    ({"device": "cpu", "cpu_model": "AMD EPYC", "cpu_features": ["avx2", "avx512f", "avx512_bf16"]},
     "AMD EPYC (bf16 instructions: avx512_bf16)"),
    ({"device": "cpu", "cpu_model": "Intel(R) Xeon(R) Processor",
      "cpu_features": ["avx512_bf16", "amx_tile", "amx_bf16"]},
     "Intel(R) Xeon(R) Processor (bf16 instructions: amx_bf16, avx512_bf16)"),
    ({"device": "cpu", "cpu_model": "Old CPU", "cpu_features": ["avx2"]}, "Old CPU (bf16 instructions: none)"),
    ({"device": "cpu", "device_name": "CPU x86_64, 2 logical cores"}, None),  # before 2026-12-04
    ({"device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "cpu_model": "AMD EPYC"},
     "NVIDIA H100 80GB HBM3"),
    ({"device": "mps", "device_name": "Apple GPU (MPS) on arm64", "cpu_model": "Apple M2"},
     "Apple GPU (MPS) on arm64"),
    ({"device": "cuda", "cpu_model": "AMD EPYC"}, None),  # a GPU record that names no GPU
])
def test_a_records_processor_is_its_gpu_or_its_cpu_model_with_bf16_instructions(prov, name):
    """Chapter 10 compares its run's processor with the record's by these names (None: not named)."""
    assert records.processor(prov) == name


def test_this_machine_is_named_the_way_its_own_record_would_be():
    """`processor_here` and `processor` of a fresh provenance agree, so equal machines compare equal."""
    cpu = torch.device("cpu")
    here = records.processor_here(cpu)
    assert here == records.processor(records.provenance(cpu, [], kind="lm-ladder"))
    if records.cpu_model():
        assert here.startswith(records.cpu_model()) and "(bf16 instructions: " in here


def test_every_format_flag_is_a_feature_records_keep():
    """A record names a CPU's bf16 instructions from its `cpu_features`: each one must be kept there."""
    from accelbook.formats import CPU_FORMAT_FLAGS

    assert set().union(*CPU_FORMAT_FLAGS.values()) <= set(records.CPU_FEATURES)


def test_a_ladder_table_over_seeds_shows_each_rungs_spread_within_88_columns():
    """`--seeds 3` rows are means: the table says so and prints the accuracy's standard deviation."""
    import copy

    from accelbook import ladder
    from bookfacts import ROOT

    rec = json.loads(sorted((ROOT / "results").glob("ladder-cpu-*.json"))[0].read_text())
    ran = [s for s in rec["rungs"] if s.get("wall_s")]
    for s in ran:
        s.update(seeds=1, val_accuracy_std=None)
    one = ladder.table(rec)
    assert "± pts" not in one and "means over" not in one
    rec = copy.deepcopy(rec)
    ran = [s for s in rec["rungs"] if s.get("wall_s")]
    for i, s in enumerate(ran):
        s.update(seeds=3, val_accuracy_std=0.0001 * (i + 1))
    text = ladder.table(rec)
    lines = text.splitlines()
    assert "± pts" in lines[0] and "(wall s, images/s, s/epoch, val acc: means over 3 seeds a rung)" in lines
    assert f"{ran[-1]['val_accuracy']:>9.2%}{0.01 * len(ran):>7.2f}" in text
    assert max(map(len, lines)) <= 88


def _rungs(*spec):
    """Ladder rungs from (name, kept, skipped) triples."""
    return [{"rung": n, "kept": k, "skipped": s} for n, k, s in spec]


def test_a_rung_is_named_by_the_recipe_it_was_added_to():
    rungs = _rungs(("base", True, None), ("SDPA", True, None), ("fused", False, None),
                   ("mixed precision", True, None), ("compile", False, "CPU"))
    assert records.kept_before(rungs, "mixed precision") == "base with SDPA"
    rungs[2]["kept"] = True
    assert records.kept_before(rungs, "mixed precision") == "base with SDPA and fused"
    rungs[2]["kept"] = False
    assert records.kept_before(rungs[:1] + rungs[2:], "mixed precision") == "base alone"
    assert records.kept_before(rungs, "compile") is None and records.kept_before(rungs, "absent") is None


def test_chapter_10s_comparison_says_what_differs_and_what_is_missing():
    """Same or other recipe, same or other processor, a rung missing on one side or both, no record."""
    mine = _rungs(("base", True, None), ("SDPA", True, None), ("mixed precision", False, None))
    cpu = {"device": "cpu", "device_name": "x86-64", "cpu_model": "AMD EPYC", "cpu_features": ["avx512_bf16"]}
    rec = {"provenance": cpu, "rungs": copy.deepcopy(mine)}
    here = records.processor(cpu)
    same = records.compared(mine, rec, "mixed precision", "bf16", here)
    assert same.startswith("Both timed bf16 against one recipe, base with SDPA. Both report the same processor")
    assert same.endswith("Why the two gains differ, where they do, these runs do not measure.")
    rec["rungs"][1]["kept"] = False
    other = records.compared(mine, rec, "mixed precision", "bf16", "Intel Xeon")
    assert "this page's run added it to base with SDPA, the record to base alone" in other
    assert "this page on Intel Xeon, the record on AMD EPYC" in other
    assert "The record does not name its processor." in records.compared(
        mine, {**rec, "provenance": {"device": "cpu", "device_name": "x86-64"}}, "mixed precision", "bf16", here)
    assert "This machine does not name its processor." in records.compared(mine, rec, "mixed precision", "bf16",
                                                                            None)
    assert records.compared(mine[:2], rec, "mixed precision", "bf16", here) == (
        "This page's run did not time bf16, so there is nothing to compare.")
    assert records.compared(mine[:2], {**rec, "rungs": mine[:2]}, "mixed precision", "bf16", here) == (
        "Neither this page's run nor the record timed bf16.")
    assert records.compared(mine, None, "mixed precision", "bf16", here) == "There is no record to compare with."
