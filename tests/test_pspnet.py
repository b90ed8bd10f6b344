import pytest
import torch
from conftest import fixture_keys, tiny_pspnet
from rounding import network_rtol

from pspnet.engine.losses import pspnet_loss
from pspnet.models.build import MODELS, build_model
from pspnet.models.config import ModelConfig
from pspnet.models.pspnet import PSPNet
from pspnet.models.resnet import count_trainable
from pspnet.weights.convert import OFFICIAL_RULES, rename_keys

SIZES = [(33, 47), (65, 65), (50, 81)]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_eval_returns_logits_at_input_size(output_stride):
    model = tiny_pspnet(7, output_stride=output_stride).eval()
    with torch.no_grad():
        for size in SIZES:
            out = model(torch.randn(2, 3, *size))
            assert isinstance(out, torch.Tensor) and out.shape == (2, 7, *size)


def test_training_returns_main_and_aux_at_input_size():
    model = tiny_pspnet(4).train()
    main, aux = model(torch.randn(3, 3, 41, 58))
    assert main.shape == aux.shape == (3, 4, 41, 58)


def test_training_without_aux_returns_a_tensor():
    out = tiny_pspnet(4, aux=False).train()(torch.randn(2, 3, 33, 33))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 4, 33, 33)


def test_every_parameter_receives_a_gradient():
    model = tiny_pspnet(5).train()
    outputs = model(torch.randn(2, 3, 49, 63))
    target = torch.randint(0, 5, (2, 49, 63))
    target[:, :5] = 255
    pspnet_loss(outputs, target).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_batch_of_one_training_step():
    model = tiny_pspnet(3).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, target = torch.randn(1, 3, 45, 45), torch.randint(0, 3, (1, 45, 45))
    with pytest.warns(UserWarning, match="running statistics"):
        loss = pspnet_loss(model(x), target)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "decode_head.ppm.branches.0.conv.weight" in changed
    assert "decode_head.ppm.branches.0.bn.running_mean" not in changed  # batch of one: running stats only read
    assert "decode_head.ppm.branches.1.bn.running_mean" in changed


def test_eval_is_deterministic_and_batch_independent():
    """A batch of 3 and three batches of 1 (other kernels, other summation orders) in float64, within the
    rounding bound of this network (tests/rounding.py)."""
    model = tiny_pspnet(3).double().eval()
    x = torch.randn(3, 3, 37, 29, dtype=torch.float64)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
        again = model(x)
    assert torch.equal(together, again)  # deterministic
    bound = network_rtol(model, pixels=37 * 29) * float(alone.abs().max())
    assert float((together - alone).abs().max()) <= bound


def _trainable_in_fixture(name: str) -> int:
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    total = 0
    for key, shape in fixture_keys(name):
        if not key.endswith(buffers):
            total += int(torch.Size(shape).numel())
    return total


@pytest.mark.parametrize(
    "name, classes, aux, expected",
    [
        ("pspnet50", 150, True, 49_180_908),
        ("pspnet50", 150, False, 46_782_550),
        ("pspnet101", 150, True, 68_173_036),
        ("pspnet101", 19, True, 68_072_166),
    ],
)
def test_parameter_counts_equal_the_official_code(name, classes, aux, expected):
    with torch.device("meta"):
        model = MODELS[name](num_classes=classes, aux=aux)
    assert count_trainable(model) == expected


@pytest.mark.parametrize(
    "fixture, name, classes",
    [("official_pspnet50_keys.json", "pspnet50", 150), ("official_pspnet101_keys.json", "pspnet101", 19)],
)
def test_state_dict_maps_one_to_one_onto_official_keys(fixture, name, classes):
    official = dict(fixture_keys(fixture))
    with torch.device("meta"):
        model = MODELS[name](num_classes=classes)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapping, unmatched = rename_keys(list(official), OFFICIAL_RULES)
    assert unmatched == []
    assert len(set(mapping.values())) == len(mapping)  # injective
    assert set(mapping.values()) == set(ours)  # onto
    for key, new in mapping.items():
        assert ours[new] == official[key], key
    # the fixture's own count agrees with the parameter count
    assert count_trainable(model) == _trainable_in_fixture(fixture)


def test_model_config_round_trip():
    model = tiny_pspnet(6, output_stride=16, align_corners=False)
    rebuilt = build_model(ModelConfig(**model.config.to_dict()))
    assert type(rebuilt) is PSPNet and rebuilt.config == model.config
    assert [k for k in rebuilt.state_dict()] == [k for k in model.state_dict()]


def test_models_table_names_every_depth():
    depths = ("18", "34", "50", "101", "152")
    assert sorted(MODELS) == sorted(f"{a}{d}" for a in ("pspnet", "deeplabv3plus", "unet") for d in depths)
    with torch.device("meta"):
        assert MODELS["pspnet152"](num_classes=2).config.depth == 152
    with pytest.raises(TypeError):
        MODELS["pspnet50"](num_classes=2, typo_option=1)
