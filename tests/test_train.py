"""The shared training loop learns on real MNIST; its helpers count correctly."""

import torch
from torch import nn

from accelbook.data import mnist_tensors
from accelbook.loaders import DeviceLoader
from accelbook.models import ConvNet
from accelbook.seed import set_seed
from accelbook.train import confusion_matrix, evaluate, fit, predict

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


def test_predict_and_confusion_matrix_agree_with_evaluate():
    images, labels = mnist_tensors(train=False)
    batches = DeviceLoader(images[:300], labels[:300], 128, CPU)
    torch.manual_seed(0)
    model = ConvNet()
    logits, target = predict(model, batches, CPU)
    assert logits.shape == (300, 10) and torch.equal(target, labels[:300])
    cm = confusion_matrix(logits.argmax(1), target)
    assert cm.sum() == 300 and torch.equal(cm.sum(1), torch.bincount(target, minlength=10))
    assert abs(cm.trace().item() / 300 - evaluate(model, batches, CPU)["accuracy"]) < 1e-6


def test_confusion_matrix_layout():
    cm = confusion_matrix(torch.tensor([1, 1, 2]), torch.tensor([0, 1, 2]), num_classes=3)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
