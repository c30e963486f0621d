"""The device-resident loader yields exactly what the torchvision DataLoader path yields."""

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from accelbook.data import mnist, mnist_tensors, mnist_transform
from accelbook.loaders import DeviceLoader, iterate_seconds, train_val_split

CPU = torch.device("cpu")


def test_split_is_disjoint_complete_and_reproducible():
    train, val = train_val_split(60000, 5000, seed=0)
    assert len(train) == 55000 and len(val) == 5000
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(60000))
    again, _ = train_val_split(60000, 5000, seed=0)
    other, _ = train_val_split(60000, 5000, seed=1)
    assert torch.equal(train, again) and not torch.equal(train, other)


def _pair(n=700, batch_size=64, **kwargs):
    """The two data paths over the same n training images of a validation-style subset."""
    index, _ = train_val_split(60000, 5000, seed=0)
    index = index[:n]
    images, labels = mnist_tensors(train=True)
    fast = DeviceLoader(images[index], labels[index], batch_size, CPU, **kwargs)
    dataset = Subset(mnist(train=True, transform=mnist_transform()), index.tolist())
    return fast, dataset


@pytest.mark.parametrize("shuffle", [False, True])
def test_device_loader_yields_the_dataloader_samples(shuffle):
    fast, dataset = _pair(shuffle=shuffle)
    fast_batches = list(fast)  # sets fast.order for this epoch
    slow = DataLoader(dataset, batch_size=fast.batch_size, sampler=fast.order.tolist())
    assert len(fast_batches) == len(slow) == 11
    for (x, y), (x_ref, y_ref) in zip(fast_batches, slow, strict=True):
        assert x.shape == x_ref.shape and x.dtype == x_ref.dtype == torch.float32
        torch.testing.assert_close(x, x_ref, rtol=0, atol=1e-6)
        assert torch.equal(y, y_ref)


def test_each_epoch_is_a_new_permutation_and_seeded():
    fast, _ = _pair(shuffle=True, seed=3)
    list(fast)
    first = fast.order.clone()
    list(fast)
    assert torch.equal(first.sort().values, torch.arange(700)) and not torch.equal(first, fast.order)
    replay, _ = _pair(shuffle=True, seed=3)
    list(replay)
    assert torch.equal(replay.order, first)


def test_drop_last_and_length():
    fast, _ = _pair(n=130, batch_size=64, drop_last=True)
    assert len(fast) == 2 and [len(y) for _, y in fast] == [64, 64]
    fast.drop_last = False
    assert len(fast) == 3 and [len(y) for _, y in fast] == [64, 64, 2]


def test_refuses_float_images():
    with pytest.raises(ValueError, match="uint8"):
        DeviceLoader(torch.zeros(4, 28, 28), torch.zeros(4, dtype=torch.long), 2, CPU)


def test_iterate_seconds_times_a_whole_epoch():
    """Every batch is drawn, and the time of drawing them is what is returned."""
    import time

    drawn = []

    def slow_batches():
        for i in range(5):
            time.sleep(0.02)
            drawn.append(i)
            yield torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)

    seconds = iterate_seconds(slow_batches(), CPU)
    assert drawn == [0, 1, 2, 3, 4]
    assert 0.1 <= seconds < 5


def test_iterate_seconds_moves_every_batch_to_the_device():
    """Each batch's images and labels go to the device asked for (the loader's cost includes the copy)."""
    moved = []

    class Recorded:
        def __init__(self, name):
            self.name = name

        def to(self, device, non_blocking=False):
            moved.append((self.name, device, non_blocking))
            return self

    batches = [(Recorded(f"images {i}"), Recorded(f"labels {i}")) for i in range(3)]
    iterate_seconds(batches, CPU)
    assert moved == [(f"{kind} {i}", CPU, True) for i in range(3) for kind in ("images", "labels")]
