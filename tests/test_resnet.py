import math

import pytest
import torch

from pspnet.models.resnet import STEMS, ResNet, stage_plan


def test_stage_plan_values():
    assert stage_plan(8) == [(1, 1), (2, 1), (1, 2), (1, 4)]
    assert stage_plan(16) == [(1, 1), (2, 1), (2, 1), (1, 2)]
    assert stage_plan(32) == [(1, 1), (2, 1), (2, 1), (2, 1)]


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_stage_plan_keeps_the_receptive_field(output_stride):
    plan = stage_plan(output_stride)
    assert 4 * math.prod(stride for stride, _ in plan) == output_stride
    # Each removed stride doubles the dilation of later stages: stride x dilation grows as in the undilated net.
    undilated = [1, 2, 4, 8]
    cumulative = 1
    for (stride, dilation), expected in zip(plan, undilated):
        cumulative *= stride
        assert cumulative * dilation == expected


@pytest.mark.parametrize("bad", [4, 12, 64, 0])
def test_stage_plan_rejects_other_strides(bad):
    with pytest.raises(ValueError, match="output_stride"):
        stage_plan(bad)


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("size", [(33, 47), (65, 65), (97, 75), (50, 81)])
def test_feature_shapes_at_odd_sizes(depth, output_stride, size):
    with torch.device("meta"):  # shapes only: no weights allocated
        net = ResNet(depth=depth, output_stride=output_stride)
        features = net(torch.empty(2, 3, *size))
    reductions = [4, 8, min(16, output_stride), output_stride]
    assert net.reductions == reductions
    for feature, channels, reduction in zip(features, net.channels, reductions):
        assert tuple(feature.shape) == (2, channels, math.ceil(size[0] / reduction), math.ceil(size[1] / reduction))


def test_published_channels():
    with torch.device("meta"):
        assert ResNet(depth=18).channels == [64, 128, 256, 512]
        assert ResNet(depth=34).channels == [64, 128, 256, 512]
        for depth in (50, 101, 152):
            assert ResNet(depth=depth).channels == [256, 512, 1024, 2048]


@pytest.mark.parametrize(
    "depth, blocks", [(18, (2, 2, 2, 2)), (34, (3, 4, 6, 3)), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3))]
)
def test_blocks_per_stage(depth, blocks):
    with torch.device("meta"):
        net = ResNet(depth=depth)
    assert tuple(len(getattr(net, f"layer{i}")) for i in range(1, 5)) == blocks


def test_dilation_official_and_contracted():
    with torch.device("meta"):
        official = ResNet(depth=50)
        contracted = ResNet(depth=50, contract_dilation=True)
    for block in official.layer3:
        assert block.conv2.dilation == (2, 2) and block.conv2.stride == (1, 1) and block.conv2.padding == (2, 2)
    for block in official.layer4:
        assert block.conv2.dilation == (4, 4)
    assert contracted.layer3[0].conv2.dilation == (1, 1)
    assert contracted.layer4[0].conv2.dilation == (2, 2)
    assert all(b.conv2.dilation == (2, 2) for b in contracted.layer3[1:])
    assert all(b.conv2.dilation == (4, 4) for b in contracted.layer4[1:])
    assert official.layer3[0].downsample[0].stride == (1, 1)
    assert official.layer2[0].conv2.stride == (2, 2) and official.layer2[0].conv1.stride == (1, 1)


def test_basic_blocks_dilate_both_convs():
    with torch.device("meta"):
        net = ResNet(depth=18, output_stride=8)
    assert net.layer4[1].conv1.dilation == (4, 4) and net.layer4[1].conv2.dilation == (4, 4)


@pytest.mark.parametrize("stem", sorted(STEMS))
def test_stems(stem):
    with torch.device("meta"):
        net = ResNet(depth=50, stem=stem)
    convs = [m for m in net.stem if isinstance(m, torch.nn.Conv2d)]
    assert tuple(c.out_channels for c in convs) == STEMS[stem]
    assert convs[0].kernel_size == ((7, 7) if stem == "basic" else (3, 3))
    assert net.layer1[0].conv1.in_channels == STEMS[stem][-1]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="stem"):
        ResNet(depth=50, stem="wide")
