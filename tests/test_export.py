"""``pspnet export``: the files compute what the eager model computes, carry their model card, and a file that fails
its check never lands.

Exports take seconds each, so one ONNX file per input/output combination is made once per module (the command line
writes the default one) and several tests read it. ONNX Runtime has no float64 convolution: the files run in
float32 and are compared with a float64 eager model within the network's float32 rounding bound
(tests/rounding.py), and each bound is shown to have teeth against the mistake it is there to catch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import sys

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from conftest import tiny_pspnet
from rounding import network_rtol, probability_bound
from torch import nn

import pspnet
from pspnet import export
from pspnet.cli import main
from pspnet.errors import ExportError
from pspnet.export import CheckReport, SizeCheck, export_model, read_metadata
from pspnet.inference import normalize

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (40.0, 160.0, 90.0), (30.0, 80.0, 45.0)  # not ImageNet's: the graph must use the card's


def _model() -> pspnet.PSPNet:
    """A tiny CamVid-sized model with BatchNorm statistics far from their initial values, so folding matters."""
    torch.manual_seed(0)
    model = tiny_pspnet(11)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.card = pspnet.make_card(model.config, dataset="camvid", mean=MEAN, std=STD)
    return model.eval()


def _eager64(model: nn.Module, images: np.ndarray, *, uint8: bool, mean=MEAN, std=STD) -> np.ndarray:
    """float64 logits (N, K, H, W) of the unfolded model for uint8 NHWC images or normalised float NCHW ones."""
    x = torch.from_numpy(images)
    x = normalize(x.permute(0, 3, 1, 2), mean, std, dtype=torch.float64) if uint8 else x.double()
    with torch.no_grad():
        return copy.deepcopy(model).double()(x).numpy()


def _session(path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _images(n: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model() -> pspnet.PSPNet:
    return _model()


@pytest.fixture(scope="module")
def cli_export(tmp_path_factory, model):
    """The default export (uint8 RGB in, logits out, dynamic sizes) of a model file, written by the command line:
    (path, exit status, stdout)."""
    folder = tmp_path_factory.mktemp("cli")
    pspnet.save_model(model, folder / "model.safetensors")
    out = folder / "model.onnx"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["export", str(folder / "model.safetensors"), "--out", str(out)])
    return out, status, stdout.getvalue() + stderr.getvalue()


def test_the_command_writes_a_checked_file_and_reports_the_check(cli_export):
    path, status, output = cli_export
    assert status == 0, output
    assert path.is_file() and [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    rows = [line for line in output.splitlines() if "largest logit difference" in line]
    assert len(rows) == len(export.CHECK_SIZES)
    for row in rows:
        diff = float(row.split("largest logit difference ")[1].split()[0])
        agreement = float(row.split("labels equal on ")[1].split("%")[0])
        assert diff <= export.LOGIT_RTOL and agreement >= 100 * export.MIN_LABEL_AGREEMENT
    assert "ONNX Runtime" in output and "passed" in output


def test_metadata_round_trips_through_the_card_parser_and_onnxruntime(cli_export, model):
    path, _, _ = cli_export
    meta = read_metadata(path)
    assert meta.card == model.card  # every card field, parsed back by ModelCard.from_dict
    assert (meta.format, meta.input_kind, meta.output_kind) == ("onnx", "uint8-rgb", "logits")
    assert meta.input_shape == ("batch", "height", "width", 3)
    assert meta.output_shape == ("batch", 11, "height", "width")
    assert meta.exported_by.startswith(f"pspnet {pspnet.__version__}")
    # what a deployer reads without pspnet
    custom = _session(path).get_modelmeta().custom_metadata_map
    assert json.loads(custom["classes"]) == list(model.card.classes)
    assert json.loads(custom["palette"]) == [list(c) for c in model.card.palette]
    assert json.loads(custom["normalization"]) == {"mean": list(MEAN), "std": list(STD)}
    assert json.loads(custom["inference"]) == {"crop_size": list(model.card.crop_size), "base_size": 480}
    assert json.loads(custom["model"])["num_classes"] == 11 and custom["dataset"] == "camvid"
    assert custom["input"] == "uint8-rgb" and custom["pspnet_version"] == pspnet.__version__


def test_the_graph_is_batchnorm_folded_with_named_dynamic_sides(cli_export):
    path, _, _ = cli_export
    graph = onnx.load(str(path)).graph
    assert not [node for node in graph.node if node.op_type == "BatchNormalization"]
    sides = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert sides == ["batch", "height", "width", 3]
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8


@pytest.mark.parametrize("n, h, w", [(1, 97, 75), (3, 33, 130), (2, 9, 9), (1, 200, 41)])
def test_uint8_input_logits_match_eager_at_dynamic_sizes(cli_export, model, n, h, w):
    path, _, _ = cli_export
    images = _images(n, h, w)
    (got,) = _session(path).run(None, {"image": images})
    expected = _eager64(model, images, uint8=True)
    assert got.shape == (n, 11, h, w) and got.dtype == np.float32
    scale = np.abs(expected).max()
    bound = network_rtol(model, pixels=h * w, dtype=torch.float32) * scale
    assert np.abs(got - expected).max() <= bound
    # the bound has teeth: normalising with ImageNet's mean and std (not the card's) lies far outside it
    wrong = _eager64(model, images, uint8=True, mean=pspnet.constants.IMAGENET_MEAN, std=pspnet.constants.IMAGENET_STD)
    assert np.abs(wrong - expected).max() > 2 * bound


@pytest.fixture(scope="module")
def normalized_proba(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("proba") / "proba.onnx"
    return path, export_model(model, path, input_kind="normalized", output_kind="proba")


def test_normalized_input_and_probabilities_match_eager(normalized_proba, model):
    path, report = normalized_proba
    assert report.check.passed and report.check.logit_rdiff is not None  # the logits were read from the graph
    assert all(s.proba_diff is not None for s in report.check.sizes)
    n, h, w = 2, 45, 83
    x = normalize(torch.from_numpy(_images(n, h, w)).permute(0, 3, 1, 2), MEAN, STD).numpy()
    (got,) = _session(path).run(None, {"image": x})
    logits = _eager64(model, x, uint8=False)
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    assert got.shape == (n, 11, h, w)
    # a logit error e moves a probability by at most e / 2; then the softmax's own float32 rounding
    z = np.abs(logits).max()
    bound = 0.5 * network_rtol(model, pixels=h * w, dtype=torch.float32) * z + probability_bound(11, z)
    assert np.abs(got - expected).max() <= bound
    assert np.abs(got.sum(axis=1) - 1).max() <= probability_bound(11, z) * 11
    # the bound has teeth: a softmax over the wrong axis (the batch) lies far outside it
    assert np.abs(torch.softmax(torch.from_numpy(logits), 0).numpy() - expected).max() > 2 * bound
    meta = read_metadata(path)
    assert meta.input_shape == ("batch", 3, "height", "width") and meta.output_kind == "proba"


@pytest.fixture(scope="module")
def static_labels(tmp_path_factory, model):
    path = tmp_path_factory.mktemp("labels") / "labels.onnx"
    return path, export_model(model, path, output_kind="labels", static_size=(57, 61))


def test_static_labels_match_eager_where_the_logits_decide_them(static_labels, model):
    path, report = static_labels
    assert [(s.batch, s.height, s.width) for s in report.check.sizes] == [(1, 57, 61), (2, 57, 61)]
    images = _images(3, 57, 61)  # the batch stays dynamic
    session = _session(path)
    (got,) = session.run(None, {"image": images})
    assert got.shape == (3, 57, 61) and got.dtype == np.int64
    logits = _eager64(model, images, uint8=True)
    top2 = np.sort(logits, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    # where the best class leads by more than twice the float32 error, rounding cannot change the label
    decided = margin > 2 * network_rtol(model, pixels=57 * 61, dtype=torch.float32) * np.abs(logits).max()
    assert decided.mean() > 0.5
    assert (got == logits.argmax(axis=1))[decided].all()
    with pytest.raises(onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument):
        session.run(None, {"image": _images(1, 58, 61)})  # static: no other size
    meta = read_metadata(path)
    assert meta.input_shape == ("batch", 57, 61, 3) and meta.output_shape == ("batch", 57, 61)
    assert meta.min_size is None


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("format", ["torchscript", "exported-program"])
def test_torch_formats_reload_and_match_eager_with_their_metadata(tmp_path, model, format):
    path = tmp_path / f"model{export.SUFFIXES[format]}"
    report = export_model(model, path, format=format)
    assert report.check.passed and report.check.runtime.startswith(("torch.jit.load", "torch.export.load"))
    module = torch.jit.load(str(path)) if format == "torchscript" else torch.export.load(str(path)).module()
    for n, h, w in [(1, 97, 75), (2, 33, 130)]:
        images = _images(n, h, w)
        with torch.no_grad():
            got = module(torch.from_numpy(images)).numpy()
        expected = _eager64(model, images, uint8=True)
        bound = network_rtol(model, pixels=h * w, dtype=torch.float32) * np.abs(expected).max()
        assert got.shape == (n, 11, h, w) and np.abs(got - expected).max() <= bound
    meta = read_metadata(path)
    assert meta.card == model.card and meta.format == format


def test_options_a_format_lacks_are_named(tmp_path, model):
    with pytest.raises(ExportError, match="^opset 17: an opset is an ONNX setting"):
        export_model(model, tmp_path / "m.pt", format="torchscript", opset=17)
    with pytest.raises(ExportError, match="^output_kind 'mask': choose one of logits, proba, labels"):
        export_model(model, tmp_path / "m.onnx", output_kind="mask")
    assert list(tmp_path.iterdir()) == []


def test_command_line_usage_errors(tmp_path, model, capsys):
    pspnet.save_model(model, tmp_path / "m.safetensors")
    (tmp_path / "there.onnx").write_bytes(b"old")
    for argv, message in [
        (["--out", str(tmp_path / "m.pt")], "the onnx file must be named *.onnx"),
        (["--out", str(tmp_path / "there.onnx")], "exists; pass --force"),
        (["--out", str(tmp_path / "m.pt"), "--format", "torchscript", "--opset", "17"], "--opset is an ONNX setting"),
    ]:
        assert main(["export", str(tmp_path / "m.safetensors"), *argv]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "there.onnx").read_bytes() == b"old"


def test_without_onnx_the_command_says_how_to_install_it(tmp_path, model, capsys, monkeypatch):
    pspnet.save_model(model, tmp_path / "m.safetensors")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # "import onnxruntime" now raises ImportError
    assert main(["export", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "missing: onnxruntime" in err and "pip install 'pspnet[onnx]'" in err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("format", ["onnx", "torchscript"])
def test_a_file_that_fails_its_check_never_lands(tmp_path, model, capsys, monkeypatch, format):
    pspnet.save_model(model, tmp_path / "m.safetensors")
    out = tmp_path / f"m{export.SUFFIXES[format]}"
    out.write_bytes(b"the file from before")
    eager = export._eager_logits

    def off_by_a_little(*args, **kwargs):  # the check sees eager logits moved by 1e-3 of their largest value
        logits = eager(*args, **kwargs)
        return logits + 1e-3 * logits.abs().max() * (torch.arange(logits.shape[1]) == 0).view(1, -1, 1, 1)

    monkeypatch.setattr(export, "_eager_logits", off_by_a_little)
    argv = ["export", str(tmp_path / "m.safetensors"), "--out", str(out), "--format", format, "--force"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {out}: the exported file does not compute what the model computes")
    assert "nothing was written" in err and ("logits differ by" in err or "probabilities" in err or "labels" in err)
    assert out.read_bytes() == b"the file from before"
    assert {p.name for p in tmp_path.iterdir()} == {"m.safetensors", out.name}  # no temporary file left


def test_the_guarantee_thresholds():
    def report(rdiff, agreement):
        return CheckReport("r", (SizeCheck(1, 10, 10, rdiff, None, None, agreement, 10_000),))

    assert report(export.LOGIT_RTOL, 0.9999).passed
    assert not report(1.01 * export.LOGIT_RTOL, 1.0).passed
    assert not report(0.0, 0.9998).passed and "99.9800%" in report(0.0, 0.9998).problems()[0]
    assert not report(float("nan"), 1.0).passed
    assert report(None, 1.0).passed  # a labels file read by torch: labels only
