"""One optimiser step of the training engine (pspnet.engine.train.train_step), as a benchmark calls it: a model, an
SGD optimiser from param_groups, a disabled GradScaler and synthetic batches, without a data set, a run directory
or a process group.

The step is checked against a hand-written one: the gradient of ``loss_sum / labelled pixels`` of the whole batch
by torch.autograd on a copy of the model, then SGD's first update ``p - lr * (grad + weight_decay * p)`` (the
momentum buffer starts as that term). Both run in float64, so they differ by rounding alone (tests/rounding.py).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from rounding import network_rtol, unit_roundoff
from torch import nn
from train_helpers import make_folder_dataset, tiny_config, train_records

from pspnet.engine import train as train_module
from pspnet.engine.losses import loss_sum
from pspnet.engine.train import NonFiniteLossError, StepSettings, param_groups, train, train_step
from pspnet.models.pspnet import PSPNet
from pspnet.weights.model_file import IMAGENET_MEAN, IMAGENET_STD

pytestmark = pytest.mark.usefixtures("one_thread")

LR, HEAD_LR_MULT, MOMENTUM, WEIGHT_DECAY = 0.01, 10.0, 0.9, 1e-4
SIZE = 33  # odd: the strided layers round their output sizes


def tiny_model() -> PSPNet:
    """The tests' tiny PSPNet (ResNet-18 widths, 16/8-channel heads) in float64, without dropout (whose masks
    would come from the random stream, not from the step)."""
    return PSPNet(num_classes=3, depth=18, head_channels=16, aux_channels=8, dropout=0.0).double()


def synthetic_batch(images: int, seed: int) -> dict[str, torch.Tensor]:
    """A collated batch: uint8 RGB images (N, 3, 33, 33) and int64 masks (N, 33, 33) of classes 0-2, some 255."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (images, 3, SIZE, SIZE), generator=generator, dtype=torch.uint8)
    mask = torch.randint(0, 3, (images, SIZE, SIZE), generator=generator)
    mask[torch.rand(images, SIZE, SIZE, generator=generator) < 0.2] = 255
    return {"image": image, "mask": mask}


def sgd(model: PSPNet) -> torch.optim.SGD:
    return torch.optim.SGD(
        param_groups(model, lr=LR, head_lr_mult=HEAD_LR_MULT), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )


def reference_step(
    model: PSPNet,
    micro_batches: list[dict[str, torch.Tensor]],
    *,
    aux_weight: float,
    class_weights: torch.Tensor | None,
    freeze_bn: bool,
) -> tuple[PSPNet, float]:
    """(a copy of ``model`` after one hand-written SGD step on all micro-batches as one batch, the step's loss)."""
    ref = copy.deepcopy(model)
    ref.train()
    if freeze_bn:
        for module in ref.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
    images = torch.cat([m["image"] for m in micro_batches]).double()
    target = torch.cat([m["mask"] for m in micro_batches])
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    outputs = ref((images - mean) / std)
    labels = target[target != 255]
    divisor = labels.numel() if class_weights is None else float(class_weights[labels].sum())
    loss = loss_sum(outputs, target, aux_weight=aux_weight, ignore_index=255, class_weights=class_weights) / divisor
    params = dict(ref.named_parameters())
    grads = torch.autograd.grad(loss, list(params.values()))
    with torch.no_grad():
        for (name, p), g in zip(params.items(), grads):
            lr = LR if name.startswith("backbone.") else LR * HEAD_LR_MULT
            p -= lr * (g + WEIGHT_DECAY * p)
    return ref, float(loss.detach())


@pytest.mark.parametrize(
    "images, accumulate, freeze_bn, weighted",
    [(2, 1, False, False), (4, 2, True, True)],
    ids=["one-micro-batch-live-bn", "two-micro-batches-frozen-bn-class-weights"],
)
def test_train_step_equals_a_hand_written_sgd_step(images, accumulate, freeze_bn, weighted):
    """Parameters, BatchNorm statistics and the returned loss equal those of the hand-written step within the
    rounding bound of one float64 step of this network; gradients left over from before do not leak in, and the
    step keeps the optimiser's learning rates. Two micro-batches of two images each give the step of the batch of
    four (frozen BN: live BN would normalise each micro-batch by its own statistics)."""
    torch.manual_seed(0)
    model = tiny_model()
    optimizer = sgd(model)
    batch = synthetic_batch(images, seed=1)
    per = images // accumulate
    micro = [{key: value[j * per : (j + 1) * per] for key, value in batch.items()} for j in range(accumulate)]
    class_weights = torch.tensor([0.5, 2.0, 1.25], dtype=torch.float64) if weighted else None
    aux_weight = 0.25 if weighted else 0.4
    expected, expected_loss = reference_step(
        model, micro, aux_weight=aux_weight, class_weights=class_weights, freeze_bn=freeze_bn
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e3)  # a stale gradient: the step must clear it
    settings = StepSettings(aux_weight=aux_weight, class_weights=class_weights, freeze_bn=freeze_bn)

    loss = train_step(model, optimizer, torch.amp.GradScaler("cpu", enabled=False), micro, settings)

    rtol = network_rtol(model, pixels=images * SIZE * SIZE, steps=1, dtype=torch.float64)
    assert loss == pytest.approx(expected_loss, rel=rtol, abs=0)
    assert [g["lr"] for g in optimizer.param_groups] == [LR, LR * HEAD_LR_MULT]
    u = unit_roundoff(torch.float64)
    got, want = dict(model.named_parameters()), dict(expected.named_parameters())
    bad = []
    for name, p in before.items():
        update, expected_update = got[name].detach() - p, want[name].detach() - p
        scale = float(expected_update.abs().max())
        assert scale > 0, name  # every parameter moves in this step
        diff = float((update - expected_update).abs().max())
        if not diff <= rtol * scale + 4 * u * float(p.abs().max()):  # the update, beside p's own rounding
            bad.append(f"{name}: max|update - expected| {diff:.3g}, max|expected| {scale:.3g}")
    assert not bad, "\n".join(bad[:20])
    buffers, expected_buffers = dict(model.named_buffers()), dict(expected.named_buffers())
    initial = dict(tiny_model().named_buffers())  # BN starts at mean 0, variance 1, 0 batches tracked
    assert sorted(buffers) == sorted(expected_buffers)
    for name, value in buffers.items():
        if not value.is_floating_point():
            assert torch.equal(value, expected_buffers[name]), name
            assert int(value) == (0 if freeze_bn else 1), name
            continue
        if freeze_bn:
            assert torch.equal(value, initial[name]), name
        scale = float(expected_buffers[name].abs().max())
        assert float((value - expected_buffers[name]).abs().max()) <= rtol * scale, name


def test_train_step_refuses_a_non_finite_loss_before_stepping():
    model = tiny_model()
    optimizer = sgd(model)
    with torch.no_grad():
        model.decode_head.classifier.bias[0] = math.inf
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with pytest.raises(NonFiniteLossError, match="the loss became nan") as caught:
        train_step(
            model, optimizer, torch.amp.GradScaler("cpu", enabled=False), [synthetic_batch(2, 3)], StepSettings()
        )
    assert caught.value.loss is not None and math.isnan(caught.value.loss)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert not optimizer.state  # no step taken: no momentum buffers


def test_step_settings_from_config(tmp_path):
    config = tiny_config(tmp_path, precision="bf16", freeze_bn=True, channels_last=True, aux_weight=0.3, iterations=1)
    weights = torch.ones(3)
    settings = StepSettings.from_config(config, world_size=2, class_weights=weights)
    assert settings.autocast_dtype is torch.bfloat16 and settings.freeze_bn and settings.channels_last
    assert settings.aux_weight == 0.3 and settings.ignore_index == 255 and settings.world_size == 2
    assert settings.class_weights is weights
    assert StepSettings.from_config(tiny_config(tmp_path, iterations=1)).autocast_dtype is None


def test_pspnet_train_runs_its_steps_through_train_step(tmp_path, monkeypatch):
    """The loop of train() calls train_step once per optimiser step, with accumulate micro-batches and the
    config's settings, and logs the loss it returns."""
    root = make_folder_dataset(tmp_path / "data", n_train=4, n_val=0)
    calls = []

    def recording(net, optimizer, scaler, micro_batches, settings, *, forward=None):
        loss = train_step(net, optimizer, scaler, micro_batches, settings, forward=forward)
        calls.append(([tuple(m["image"].shape) for m in micro_batches], settings, loss))
        return loss

    monkeypatch.setattr(train_module, "train_step", recording)
    config = tiny_config(root, iterations=2, checkpoint_every=2, accumulate=2, freeze_bn=True, val_split=None)
    train(config, tmp_path / "run", progress=False)
    assert [shapes for shapes, _, _ in calls] == [[(2, 3, 48, 48)] * 2] * 2
    assert all(s.freeze_bn and s.autocast_dtype is None and s.world_size == 1 for _, s, _ in calls)
    assert [r["loss"] for r in train_records(tmp_path / "run")] == [loss for _, _, loss in calls]
