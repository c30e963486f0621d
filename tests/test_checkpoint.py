"""Checkpoints: round trip, atomic replacement, and refusal of pickled code."""

import pickle

import pytest
import torch

import accelbook.checkpoint as ckpt
from accelbook.checkpoint import load_checkpoint, save_checkpoint
from accelbook.models import ConvNet

RAN = []


def _mark_ran():
    """What a malicious payload would do; here it only leaves a trace."""
    RAN.append(True)


class Payload:
    """An object whose unpickling calls `_mark_ran` (a harmless stand-in for arbitrary code)."""

    def __reduce__(self):
        return (_mark_ran, ())


def _state(seed=0):
    torch.manual_seed(seed)
    model = ConvNet()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "history": [{"epoch": 1, "val_accuracy": 0.98}], "config": {"lr": 1e-3, "batch_size": 64}}


def test_round_trip_restores_model_and_optimizer(tmp_path):
    state = _state()
    save_checkpoint(state, tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    model = ConvNet()
    model.load_state_dict(loaded["model"])
    for k, v in state["model"].items():
        assert torch.equal(model.state_dict()[k], v)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    opt.load_state_dict(loaded["optimizer"])
    assert opt.state_dict()["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
    assert loaded["epoch"] == 3 and loaded["history"] == state["history"] and loaded["config"] == state["config"]


def test_pickled_payload_is_refused_and_not_run(tmp_path):
    torch.save({"model": _state()["model"], "extra": Payload()}, tmp_path / "evil.pt")
    RAN.clear()
    with pytest.raises(pickle.UnpicklingError, match="_mark_ran"):
        load_checkpoint(tmp_path / "evil.pt")
    assert RAN == []


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_docstring_says_where_all_or_nothing_holds():
    """The promise carries its condition: os.replace is atomic where POSIX rename is, on one file system."""
    doc = save_checkpoint.__doc__
    assert "POSIX" in doc and "one file system" in doc


def test_failed_write_leaves_old_checkpoint_intact(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(_state(0), path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 -- any error: a lambda cannot be pickled, torch.save fails midway
        save_checkpoint({**_state(1), "schedule": lambda epoch: 0.1}, path)
    assert path.read_bytes() == before and _files(tmp_path) == ["c.pt"]


def test_interrupt_mid_write_leaves_old_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    save_checkpoint(_state(0), path)
    before = path.read_bytes()

    def half_write(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", half_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(1), path)
    assert path.read_bytes() == before and _files(tmp_path) == ["c.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["fc.bias"], _state(0)["model"]["fc.bias"])


def test_verified_load_uses_the_bytes_it_hashed(tmp_path, monkeypatch):
    # A file replaced between the checksum and the load must not get loaded: hash the bytes that are loaded.
    path = tmp_path / "c.pt"
    save_checkpoint({"w": torch.arange(4)}, path)
    digest = ckpt.sha256(path)
    save_checkpoint({"w": torch.full((4,), 7)}, tmp_path / "other.pt")
    swap = (tmp_path / "other.pt").read_bytes()
    real = ckpt.hashlib.sha256

    class SwapAfterHashing:
        """hashlib.sha256 whose hexdigest replaces the file on disk, as a second writer might."""

        def __init__(self, *args):
            self.inner = real(*args)

        def update(self, data):
            self.inner.update(data)

        def hexdigest(self):
            path.write_bytes(swap)
            return self.inner.hexdigest()

    monkeypatch.setattr(ckpt.hashlib, "sha256", SwapAfterHashing)
    loaded = load_checkpoint(path, expected_sha256=digest)
    assert torch.equal(loaded["w"], torch.arange(4)), "loaded a file other than the one verified"
