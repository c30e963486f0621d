"""Chapter 9's parts: augmentation per image, early stopping, attacks within their budget, calibration, checksums."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from accelbook import robust
from accelbook.checkpoint import ChecksumError, load_checkpoint, save_checkpoint, sha256, verify
from accelbook.data import STD, mnist_tensors, normalize
from accelbook.loaders import AugmentedLoader
from accelbook.models import ConvNet


@pytest.fixture(scope="module")
def digits():
    """The first 64 MNIST test images (uint8) and labels."""
    images, labels = mnist_tensors(train=False)
    return images[:64], labels[:64]


def test_augmented_loader_draws_per_image_and_leaves_global_rng_alone(digits):
    images, labels = digits
    same = images[:1].repeat(8, 1, 1)
    loader = AugmentedLoader(same, labels[:8], 8, robust.augmentation("affine+crop"), seed=1)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    (x, y), = list(loader)
    assert torch.equal(torch.rand(3), expected_next)  # the loader did not consume the global generator
    assert x.shape == (8, 1, 28, 28) and len({tuple(img.flatten().tolist()) for img in x}) == 8
    (again, _), = list(AugmentedLoader(same, labels[:8], 8, robust.augmentation("affine+crop"), seed=1))
    assert torch.equal(x, again)  # reproducible from the seed
    with pytest.raises(ValueError, match="unknown augmentation"):
        robust.augmentation("AdaptiveCrop")


def test_early_stop_keeps_the_best_epoch():
    acc = [0.50, 0.60, 0.55, 0.58, 0.59, 0.61, 0.40]
    assert robust.early_stop(acc, patience=3) == (5, 2)  # epochs 3, 4, 5 bring nothing better than epoch 2
    assert robust.early_stop(acc, patience=4) == (7, 6)  # epoch 6 beats epoch 2 in time; runs to the end
    assert robust.early_stop([0.5, 0.6, 0.6, 0.6], patience=2) == (4, 2)  # a tie is no new best
    with pytest.raises(ValueError):
        robust.early_stop(acc, patience=0)


def test_attacks_stay_within_budget_and_raise_the_loss(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = ConvNet().eval()
    x, eps = normalize(images), 0.1
    clean = F.cross_entropy(model(x), labels).item()
    for attack in (robust.fgsm, robust.pgd):
        adv = attack(model, x, labels, eps)
        pixels_moved = (adv - x).abs().max().item() * STD
        assert pixels_moved <= eps + 1e-5
        assert adv.min() >= robust.LOW - 1e-6 and adv.max() <= robust.HIGH + 1e-6
        assert F.cross_entropy(model(adv), labels).item() > clean
    assert torch.equal(robust.fgsm(model, x, labels, 0.0), x)


def test_adversarial_batches_pair_clean_and_attacked(digits):
    images, labels = digits
    model = ConvNet()
    batches = [(normalize(images[:16]), labels[:16])]
    (x, y), = list(robust.AdversarialBatches(batches, model, 0.1))
    assert x.shape[0] == 32 and torch.equal(y, torch.cat([labels[:16], labels[:16]]))
    assert torch.equal(x[:16], batches[0][0]) and not torch.equal(x[16:], batches[0][0])


def test_calibration_error_and_temperature():
    torch.manual_seed(0)
    # Labels drawn from softmax(z): probabilities softmax(z) are calibrated; logits 3z are overconfident.
    z = torch.randn(20000, 10) * 2
    labels = torch.multinomial(F.softmax(z, 1), 1).squeeze(1)
    assert robust.ece(F.softmax(z, 1), labels) < 0.02
    assert robust.ece(F.softmax(3 * z, 1), labels) > 0.05
    assert robust.fit_temperature(3 * z, labels) == pytest.approx(3.0, rel=0.1)
    # All confident and half right: ECE is the gap.
    probs = F.one_hot(torch.zeros(100, dtype=torch.long), 10).float()
    assert robust.ece(probs, torch.tensor([0, 1] * 50)) == pytest.approx(0.5)


def test_one_hot_bce_matches_the_formula():
    logits, labels = torch.randn(5, 10), torch.tensor([0, 3, 9, 3, 1])
    target = F.one_hot(labels, 10).float()
    manual = -(target * F.logsigmoid(logits) + (1 - target) * F.logsigmoid(-logits)).mean()
    assert robust.OneHotBCE()(logits, labels).item() == pytest.approx(manual.item(), rel=1e-5)


def test_checksum_verification(tmp_path):
    path = tmp_path / "w.pt"
    save_checkpoint({"w": torch.arange(4)}, path)
    digest = sha256(path)
    assert verify(path, digest.upper()) == path
    assert torch.equal(load_checkpoint(path, expected_sha256=digest)["w"], torch.arange(4))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="does not match"):
        load_checkpoint(path, expected_sha256=digest)


def test_train_tracked_keeps_what_early_stop_keeps(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = ConvNet()
    loader = AugmentedLoader(images[:32], labels[:32], 8, None, seed=0)
    held_out = [(normalize(images[32:]), labels[32:])]
    history, best = robust.train_tracked(model, loader, torch.optim.Adam(model.parameters(), lr=1e-2),
                                         torch.nn.CrossEntropyLoss(), torch.device("cpu"), 8, held_out,
                                         [(normalize(images[:32]), labels[:32])], patience=2)
    val = [r["val_accuracy"] for r in history]
    assert (best["stopped_at"], best["epoch"]) == robust.early_stop(val, patience=2)
    assert best["val_accuracy"] == val[best["epoch"] - 1] and all("train_accuracy" in r for r in history)
    assert best["epoch"] < len(history)  # this seed and rate stop early: the kept weights are not the last ones
    kept = ConvNet()
    kept.load_state_dict(best["state"])  # the weights of the kept epoch, not the last epoch's
    with torch.no_grad():
        accuracy = (kept.eval()(held_out[0][0]).argmax(1) == held_out[0][1]).float().mean().item()
    assert accuracy == pytest.approx(best["val_accuracy"])
    # every epoch ran (early stopping is reported, not applied), and each curve is measured on its own images:
    # the last epoch's accuracies are the trained model's on the training images and on the held-out ones
    assert [r["epoch"] for r in history] == list(range(1, 9))
    with torch.no_grad():
        model.eval()
        on = {name: (model(x).argmax(1) == y).float().mean().item() for name, (x, y) in
              {"train": (normalize(images[:32]), labels[:32]), "val": held_out[0]}.items()}
    assert history[-1]["train_accuracy"] == pytest.approx(on["train"])
    assert history[-1]["val_accuracy"] == pytest.approx(on["val"])
    assert any(r["train_accuracy"] != r["val_accuracy"] for r in history)  # two curves, not one measured twice
    # what early stopping keeps, stated without early_stop: the best validation accuracy up to the stop (its
    # first epoch), and the stop `patience` epochs after it or at the end
    seen = val[:best["stopped_at"]]
    assert best["epoch"] == seen.index(max(seen)) + 1
    assert best["stopped_at"] - best["epoch"] == 2 or best["stopped_at"] == len(history)


def test_augmentation_does_not_change_which_batches_come(digits):
    # "Same batches": the augmented run must shuffle exactly as the plain run does, epoch after epoch.
    images, labels = digits
    plain = AugmentedLoader(images, labels, 16, None, seed=3)
    augmented = AugmentedLoader(images, labels, 16, robust.augmentation("affine"), seed=3)
    for epoch in range(3):
        assert [y.tolist() for _, y in plain] == [y.tolist() for _, y in augmented], f"epoch {epoch + 1}"


class Masked(torch.nn.Module):
    """A model whose loss gradient is zero at the clean image (a masked gradient) and informative elsewhere.

    It predicts the label from the first pixel's sign, flattened to a plateau within 0.05 of the clean value:
    a start at the clean image sees no gradient, a random start in the ball does.
    """

    def __init__(self, clean: torch.Tensor):
        super().__init__()
        self.clean = clean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = (x - self.clean).flatten(1)[:, 0]
        off = torch.where(d.abs() < 0.05, torch.zeros_like(d), d)
        return torch.stack([10 - 20 * off.abs(), 20 * off.abs()], 1)


def test_pgd_random_start_escapes_a_masked_gradient():
    x = torch.zeros(64, 1, 2, 2)
    y = torch.zeros(64, dtype=torch.long)
    model = Masked(x)
    assert (model(robust.fgsm(model, x, y, 0.3)).argmax(1) == 0).all()  # FGSM sees no gradient
    torch.manual_seed(0)
    adv = robust.pgd(model, x, y, 0.3, steps=10, restarts=1)
    assert (adv - x).abs().max().item() * STD <= 0.3 + 1e-5
    assert (model(adv).argmax(1) == 1).float().mean() > 0.9  # the random start finds the slope


def test_pgd_restarts_keep_the_worst_case_per_image(digits):
    images, labels = digits
    torch.manual_seed(0)
    model = ConvNet().eval()
    x = normalize(images)
    torch.manual_seed(1)
    one = robust.pgd(model, x, labels, 0.1, steps=5, restarts=1)
    torch.manual_seed(1)
    three = robust.pgd(model, x, labels, 0.1, steps=5, restarts=3)
    with torch.no_grad():
        wrong_one = model(one).argmax(1) != labels
        wrong_three = model(three).argmax(1) != labels
    assert (wrong_three | ~wrong_one).all()  # an image fooled by the first restart stays fooled
    assert (three - x).abs().max().item() * STD <= 0.1 + 1e-5
