"""The shared training loop learns on real MNIST; its helpers count correctly."""

import pytest
import torch
from torch import nn

from accelbook.data import mnist_tensors
from accelbook.loaders import DeviceLoader
from accelbook.models import ConvNet
from accelbook.roofline import _OpLog  # records each operation with the devices of its tensors
from accelbook.seed import set_seed
from accelbook.train import (
    confusion_matrix,
    evaluate,
    fit,
    logits_and_labels,
    train_one_epoch,
    weight_average,
)

CPU = torch.device("cpu")


def test_short_run_lowers_the_loss_on_real_mnist():
    images, labels = mnist_tensors(train=True)
    set_seed(0)
    train = DeviceLoader(images[:1024], labels[:1024], 64, CPU, shuffle=True)
    held_out = DeviceLoader(images[1024:1536], labels[1024:1536], 256, CPU)
    model, loss_fn = ConvNet(), nn.CrossEntropyLoss()
    before = evaluate(model, held_out, CPU, loss_fn)
    history = fit(model, train, torch.optim.Adam(model.parameters(), 1e-3), loss_fn, CPU, epochs=3,
                  val_batches=held_out)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.5 * before["loss"]
    assert history[-1]["val_accuracy"] > 0.6 > before["accuracy"]


def test_fit_calls_back_once_per_epoch():
    x, y = torch.randint(0, 256, (32, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (32,))
    seen = []
    model = ConvNet()
    fit(model, DeviceLoader(x, y, 16, CPU), torch.optim.SGD(model.parameters(), 0.01), nn.CrossEntropyLoss(),
        CPU, epochs=2, on_epoch_end=seen.append)
    assert [r["epoch"] for r in seen] == [1, 2] and all(r["seconds"] > 0 for r in seen)


def test_logits_and_labels_and_confusion_matrix_agree_with_evaluate():
    images, labels = mnist_tensors(train=False)
    batches = DeviceLoader(images[:300], labels[:300], 128, CPU)
    torch.manual_seed(0)
    model = ConvNet()
    logits, target = logits_and_labels(model, batches, CPU)
    assert logits.shape == (300, 10) and torch.equal(target, labels[:300])
    cm = confusion_matrix(logits.argmax(1), target)
    assert cm.sum() == 300 and torch.equal(cm.sum(1), torch.bincount(target, minlength=10))
    assert abs(cm.trace().item() / 300 - evaluate(model, batches, CPU)["accuracy"]) < 1e-6


def test_confusion_matrix_layout():
    cm = confusion_matrix(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 2]), num_classes=3)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]


def _tiny_run(with_average: bool):
    """A seeded two-epoch run on 96 real training digits: the model, its weight average (or None), the history."""
    images, labels = mnist_tensors(train=True)
    set_seed(0)
    model = ConvNet()
    average = weight_average(model, decay=0.9) if with_average else None
    train = DeviceLoader(images[:96], labels[:96], 32, CPU, shuffle=True)
    held_out = DeviceLoader(images[96:160], labels[96:160], 64, CPU)
    history = fit(model, train, torch.optim.Adam(model.parameters(), 1e-3), nn.CrossEntropyLoss(), CPU, epochs=2,
                  val_batches=held_out, average=average)
    return model, average, history


def test_weight_average_leaves_the_training_run_unchanged():
    plain, _, plain_history = _tiny_run(with_average=False)
    trained, average, history = _tiny_run(with_average=True)
    for (name, p), q in zip(plain.state_dict().items(), trained.state_dict().values(), strict=True):
        assert torch.equal(p, q), f"{name} differs: averaging must not touch the run"
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in plain_history]
    assert {"avg_val_loss", "avg_val_accuracy"} <= set(history[-1]) and "avg_val_loss" not in plain_history[-1]
    assert not torch.equal(average.module.fc.weight, trained.fc.weight)


def test_weight_average_is_the_exponential_moving_average_of_the_steps():
    images, labels = mnist_tensors(train=True)
    set_seed(0)
    model, decay = ConvNet(), 0.8
    average = weight_average(model, decay)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    steps = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: steps.append(model.fc.weight.detach().clone()))
    train_one_epoch(model, DeviceLoader(images[:160], labels[:160], 32, CPU), optimizer, nn.CrossEntropyLoss(), CPU,
                    average=average)
    expected = steps[0]  # the first update copies the weights, then each step moves the average by (1 - decay)
    for w in steps[1:]:
        expected = decay * expected + (1 - decay) * w
    assert len(steps) == 5 and average.updates == 5
    torch.testing.assert_close(average.module.fc.weight, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_weight_average_refuses_a_decay_outside_0_1(decay):
    with pytest.raises(ValueError, match="decay"):
        weight_average(ConvNet(), decay)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_weight_average_update_stays_on_the_models_device(batchnorm):
    # The model lives on the meta device, a stand-in for a GPU that a CPU can run: any host tensor in an
    # update (a CPU-side step counter copied over each step) or a read back to the host
    # (_local_scalar_dense: .item(), bool(), `if tensor`) would make every training step wait for the GPU.
    model = ConvNet(batchnorm=batchnorm).to("meta")
    average = weight_average(model)
    with _OpLog() as log:
        for _ in range(3):
            average.update_parameters(model)
    assert log.ops, "the update ran no tensor operation"
    assert not [op for op, _ in log.ops if "_local_scalar_dense" in op], "the update reads a value back to the host"
    assert {d for _, devices in log.ops for d in devices} == {"meta"}, log.ops
    assert all(t.device.type == "meta" for t in average.state_dict().values() if isinstance(t, torch.Tensor))


def test_weight_average_resumes_from_its_state_dict():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    average = weight_average(model, decay=0.5)
    average.update_parameters(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    restored = weight_average(nn.Linear(3, 2), decay=0.5)
    restored.load_state_dict(average.state_dict())
    for avg in (average, restored):
        avg.update_parameters(model)  # a second update averages (a fresh average would copy instead)
    torch.testing.assert_close(restored.module.weight, average.module.weight, rtol=0, atol=0)
    torch.testing.assert_close(restored.module.weight, model.weight - 0.5, rtol=0, atol=1e-6)


def test_weight_average_averages_buffers_too():
    """BatchNorm's running statistics are averaged like the weights; the step counter is copied."""
    set_seed(0)
    model = ConvNet(batchnorm=True).train()
    avg = weight_average(model, 0.5)
    model(torch.randn(8, 1, 28, 28))
    avg.update_parameters(model)
    first = model.norms[0].running_mean.clone()
    model(torch.randn(8, 1, 28, 28))
    avg.update_parameters(model)
    torch.testing.assert_close(avg.module.norms[0].running_mean,
                               0.5 * first + 0.5 * model.norms[0].running_mean)
    assert avg.module.norms[0].num_batches_tracked == model.norms[0].num_batches_tracked == 2
