"""Tiny Shakespeare from the dataset root: found, checked, split and batched as nanoGPT's shakespeare_char."""

from __future__ import annotations

import io
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from accelbook import data
from accelbook.data import (
    SHAKESPEARE_SHA256,
    CharCodec,
    CorruptDatasetError,
    DatasetNotFoundError,
    shakespeare,
    shakespeare_path,
    split_tokens,
    token_batch,
)


@pytest.fixture(scope="module")
def text() -> str:
    """The corpus from $ACCELBOOK_DATA (skips where the dataset root lacks it)."""
    if not shakespeare_path().is_file():
        pytest.skip(f"Tiny Shakespeare is not under the dataset root ({shakespeare_path()})")
    return shakespeare(download=False)


def test_the_corpus_is_the_published_one(text):
    assert len(text) == 1_115_394
    assert len(CharCodec(text)) == 65


def test_codec_round_trips_and_split_is_ninety_ten(text):
    codec = CharCodec(text)
    tokens = codec.encode(text[:5000])
    assert codec.decode(tokens) == text[:5000]
    train, val = split_tokens(tokens)
    assert (len(train), len(val)) == (4500, 500)
    assert torch.equal(torch.cat([train, val]), tokens)


def test_targets_are_the_inputs_shifted_by_one():
    tokens = torch.arange(100)
    x, y = token_batch(tokens, block_size=8, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y, x + 1) and int(x.max()) < 99
    with pytest.raises(ValueError, match="window"):
        token_batch(tokens[:8], block_size=8, batch_size=1)


def test_missing_corpus_offline_names_the_file_variable_and_checksum(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        shakespeare(root=tmp_path, download=False)
    message = str(err.value)
    assert str(tmp_path / "tinyshakespeare" / "input.txt") in message
    assert "ACCELBOOK_DATA" in message and SHAKESPEARE_SHA256 in message


def test_a_corrupt_corpus_is_refused(tmp_path, text):
    path = tmp_path / "tinyshakespeare" / "input.txt"
    path.parent.mkdir()
    path.write_text(text.replace("ROMEO", "ROMEE", 1), encoding="utf-8")
    with pytest.raises(CorruptDatasetError, match=SHAKESPEARE_SHA256):
        shakespeare(root=tmp_path)


def test_failed_download_is_one_message_and_a_wrong_download_is_not_kept(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading it failed .network unreachable"):
        shakespeare(root=tmp_path)

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the corpus"))
    with pytest.raises(CorruptDatasetError, match="does not match"):
        shakespeare(root=tmp_path)
    assert not data.shakespeare_path(tmp_path).exists()


def test_two_readers_at_once_download_the_corpus_once(text, tmp_path, monkeypatch):
    """Test workers or notebooks that start together: the second waits for the first's download, then reads it."""
    fetched = []

    def slow_download(path):
        fetched.append(path)
        time.sleep(0.5)  # long enough for the other reader to find the file missing too
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    monkeypatch.setattr(data, "download_shakespeare", slow_download)
    with ThreadPoolExecutor(2) as pool:
        texts = list(pool.map(lambda _: shakespeare(root=tmp_path), range(2)))
    assert texts == [text, text] and len(fetched) == 1
