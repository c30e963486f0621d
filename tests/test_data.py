"""MNIST from the dataset root: real files, and the errors a reader sees when they are not right."""

import shutil

import pytest
import torch

from accelbook.data import (
    RAW_FILES,
    CorruptDatasetError,
    DatasetNotFoundError,
    mnist,
    mnist_tensors,
    raw_folder,
    verify_mnist,
)


def test_real_mnist_loads_with_canonical_sizes_and_labels():
    images, labels = mnist_tensors(train=True)
    assert images.shape == (60000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert len(mnist(train=False)) == 10000


def test_missing_data_names_the_variable_and_the_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        mnist(root=tmp_path, download=False)
    message = str(info.value)
    assert "ACCELBOOK_DATA" in message and str(tmp_path / "MNIST" / "raw") in message


def _copy_mnist(dst):
    """Link the real IDX files into a fresh root (copy the one a test will damage)."""
    folder = dst / "MNIST" / "raw"
    folder.mkdir(parents=True)
    for name in RAW_FILES:
        (folder / name).symlink_to(raw_folder() / name)
    return folder


def test_truncated_file_is_a_clear_error(tmp_path):
    folder = _copy_mnist(tmp_path)
    victim = folder / "t10k-images-idx3-ubyte"
    data = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDatasetError, match="truncated"):
        mnist(train=False, root=tmp_path)


def test_damaged_bytes_fail_the_checksum(tmp_path):
    folder = _copy_mnist(tmp_path)
    victim = folder / "t10k-labels-idx1-ubyte"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.unlink()
    victim.write_bytes(bytes(data))
    with pytest.raises(CorruptDatasetError, match="MD5"):
        verify_mnist(tmp_path)


def test_wrong_file_type_is_a_clear_error(tmp_path):
    folder = _copy_mnist(tmp_path)
    victim = folder / "train-labels-idx1-ubyte"
    victim.unlink()
    shutil.copy(__file__, victim)
    with pytest.raises(CorruptDatasetError, match="magic"):
        verify_mnist(tmp_path)
