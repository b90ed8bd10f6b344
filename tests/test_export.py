"""``pspnet export``: the files compute what the eager model computes, carry their model card, and a file that fails
its check never lands.

Exports take seconds each, so one ONNX file per input/output combination is made once per module (the command line
writes the default one) and several tests read it. ONNX Runtime has no float64 convolution: the files run in
float32 and are compared with a float64 eager model within the network's float32 rounding bound
(tests/rounding.py), and each bound is shown to have teeth against the mistake it is there to catch. A float16 file
is compared within a bound derived from float16's unit roundoff, as written and with its float16 storage emulated.
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
from rounding import network_rtol, probability_bound, unit_roundoff
from torch import nn

import pspnet
from pspnet import export
from pspnet.cli import main
from pspnet.errors import ExportError
from pspnet.export import CheckReport, SizeCheck, export_model, fp16_storage_emulated, read_metadata
from pspnet.inference import normalize
from pspnet.weights.exported import parse_metadata

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


def _session(path, *, optimize: bool = True) -> onnxruntime.InferenceSession:
    """ONNX Runtime's CPU session of a file (or serialised model bytes), one thread; ``optimize=False`` turns graph
    optimisations off (they would fold the Cast pairs of fp16_storage_emulated away)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    source = path if isinstance(path, bytes) else str(path)
    return onnxruntime.InferenceSession(source, options, providers=["CPUExecutionProvider"])


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
    with pytest.raises(ExportError, match="^precision 'bf16': choose one of fp32, fp16"):
        export_model(model, tmp_path / "m.onnx", precision="bf16")
    with pytest.raises(ExportError, match="^precision 'fp16': a float16 graph is written as ONNX"):
        export_model(model, tmp_path / "m.pt", format="torchscript", precision="fp16")
    with pytest.raises(ExportError, match="^precision 'fp16': a file is float16 .* or int8 .*, not both"):
        export_model(model, tmp_path / "m.onnx", precision="fp16", calibration=_images(2, 33, 33))
    assert list(tmp_path.iterdir()) == []


def test_command_line_usage_errors(tmp_path, model, capsys):
    pspnet.save_model(model, tmp_path / "m.safetensors")
    (tmp_path / "there.onnx").write_bytes(b"old")
    for argv, message in [
        (["--out", str(tmp_path / "m.pt")], "the onnx file must be named *.onnx"),
        (["--out", str(tmp_path / "there.onnx")], "exists; pass --force"),
        (["--out", str(tmp_path / "m.pt"), "--format", "torchscript", "--opset", "17"], "--opset is an ONNX setting"),
        (["--out", str(tmp_path / "m.pt"), "--format", "torchscript", "--fp16"], "--format torchscript has no fp16"),
        (["--out", str(tmp_path / "m.onnx"), "--fp16", "--int8", "--calib", str(tmp_path)], "choose one"),
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

    def fp16(rdiff, agreement, decided):  # a float16 check: its own bound, only the clearly decided labels required
        size = SizeCheck(1, 10, 10, rdiff, None, None, agreement, 100, "float16 emulated", 40, decided)
        return CheckReport("r", (size,), logit_rtol=0.05, min_label_agreement=None)

    assert fp16(0.05, 0.9, 1.0).passed  # near-ties may flip
    assert not fp16(0.051, 1.0, 1.0).passed
    problems = fp16(0.01, 0.99, 0.975).problems()
    assert problems == [
        "at 1x10x10 (float16 emulated) the labels differ on 2.5000% of the 40 clearly decided pixels (none may)"
    ]
    assert not fp16(float("nan"), 1.0, None).passed


# -- float16 ---------------------------------------------------------------------------------------------------------


def _fp16_bound(model: nn.Module) -> float:
    """The float16 file's logit bound derived here, apart from pspnet.export: each convolution of the forward pass
    (the aux head's excepted) rounds its input, weights and output to float16 and is followed by at most one more
    rounding step (4 u, u = 2^-11), the layers' errors adding up; the head's 3x3 conv is two (on layer4, and on the
    pooled grids a 1x1 map with two interpolation products); plus the float32 file's guarantee for the rest."""
    convs = [m for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and not name.startswith("aux_head")]
    return 4 * (len(convs) + 1) * unit_roundoff(torch.float16) + export.LOGIT_RTOL


@pytest.fixture(scope="module")
def cli_fp16(tmp_path_factory, model):
    """The float16 export (uint8 RGB in, logits out, dynamic sizes) written by the command line: (path, exit status,
    stdout and stderr)."""
    folder = tmp_path_factory.mktemp("fp16")
    pspnet.save_model(model, folder / "model.safetensors")
    out = folder / "model.onnx"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = main(["export", str(folder / "model.safetensors"), "--out", str(out), "--fp16"])
    return out, status, stdout.getvalue() + stderr.getvalue()


def test_fp16_file_is_float16_inside_with_the_ends_of_a_float32_file(cli_fp16, cli_export, model):
    path, status, output = cli_fp16
    assert status == 0, output
    assert export.fp16_logit_rtol(model) == pytest.approx(_fp16_bound(model))  # 30 layers: 0.0587
    rows = [line for line in output.splitlines() if "largest logit difference" in line]
    assert len(rows) == 2 * len(export.CHECK_SIZES)  # each size as written and with float16 storage emulated
    assert sum("(float16 emulated)" in row for row in rows) == len(export.CHECK_SIZES)
    for row in rows:
        assert float(row.split("largest logit difference ")[1].split()[0]) <= _fp16_bound(model)
        assert "on 100.0000% of the" in row and "clearly decided" in row
    assert f"passed: logits within {_fp16_bound(model):.3g} of the largest logit" in output
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    initializers = {t.name: t.data_type for t in graph.initializer}
    conv_weights = [initializers[node.input[1]] for node in graph.node if node.op_type == "Conv"]
    assert len(conv_weights) == 30 and set(conv_weights) == {onnx.TensorProto.FLOAT16}  # the head's conv as two
    assert path.stat().st_size < 0.55 * cli_export[0].stat().st_size  # the weights, half the bytes
    meta = read_metadata(path)
    assert meta.precision == "fp16" and meta.card == model.card and meta.input_kind == "uint8-rgb"
    assert read_metadata(cli_export[0]).precision == "fp32"  # a file without the entry is float32
    props = _session(path).get_modelmeta().custom_metadata_map
    assert (
        props["precision"] == "fp16" and "precision" not in _session(cli_export[0]).get_modelmeta().custom_metadata_map
    )
    with pytest.raises(ExportError, match="metadata precision must be one of fp32, fp16, got 'fp8'"):
        parse_metadata({**props, "precision": "fp8"}, path)


@pytest.mark.parametrize("n, h, w", [(1, 97, 75), (2, 9, 9), (1, 64, 200)])
def test_fp16_logits_are_within_the_float16_bound_as_written_and_emulated(cli_fp16, model, n, h, w):
    path, _, _ = cli_fp16
    images = _images(n, h, w, seed=5)
    expected = _eager64(model, images, uint8=True)
    bound = _fp16_bound(model) * np.abs(expected).max()
    (as_written,) = _session(path).run(None, {"image": images})
    emulated_model = fp16_storage_emulated(onnx.load(str(path)))
    (emulated,) = _session(emulated_model.SerializeToString(), optimize=False).run(None, {"image": images})
    for got in (as_written, emulated):
        assert got.shape == (n, 11, h, w) and got.dtype == np.float32
        assert np.abs(got - expected).max() <= bound
    # the bound has teeth: normalising with ImageNet's mean and std (not the card's) lies far outside it
    wrong = _eager64(model, images, uint8=True, mean=pspnet.constants.IMAGENET_MEAN, std=pspnet.constants.IMAGENET_STD)
    assert np.abs(wrong - expected).max() > 2 * bound


def test_fp16_normalized_input_and_labels_equal_eager_where_clearly_decided(tmp_path, model):
    path = tmp_path / "labels16.onnx"
    report = export_model(model, path, input_kind="normalized", output_kind="labels", precision="fp16")
    assert report.precision == "fp16" and report.check.passed and report.check.min_label_agreement is None
    assert {s.variant for s in report.check.sizes} == {"as written", "float16 emulated"}
    assert all(s.logit_rdiff is not None and s.decided_agreement == 1.0 for s in report.check.sizes)
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in, cast inside
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    n, h, w = 2, 45, 83
    x = normalize(torch.from_numpy(_images(n, h, w)).permute(0, 3, 1, 2), MEAN, STD).numpy()
    (got,) = _session(path).run(None, {"image": x})
    logits = _eager64(model, x, uint8=False)
    top2 = np.sort(logits, axis=1)[:, -2:]
    # a lead of more than twice the bound survives any error within it
    decided = top2[:, 1] - top2[:, 0] > 2 * _fp16_bound(model) * np.abs(logits).max()
    assert got.shape == (n, h, w) and decided.mean() > 0.2
    assert (got == logits.argmax(axis=1))[decided].all()


def test_fp16_storage_emulation_rounds_every_float16_tensor_and_names_what_it_cannot_type():
    """x (float32) -> Cast to float16 -> Add a float16 constant -> Cast to float32: the emulated copy gives numpy's
    float16 arithmetic, rounding and overflow included."""
    helper, tp = onnx.helper, onnx.TensorProto
    constant = onnx.numpy_helper.from_array(np.array([1000.0, 0.5, 60000.0, 3.0], np.float16), "c")
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["x16"], to=tp.FLOAT16),
            helper.make_node("Add", ["x16", "c"], ["y16"]),
            helper.make_node("Cast", ["y16"], ["y"], to=tp.FLOAT),
        ],
        "g",
        [helper.make_tensor_value_info("x", tp.FLOAT, [4])],
        [helper.make_tensor_value_info("y", tp.FLOAT, [4])],
        [constant],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    x = np.array([0.4, 1.0001, 10000.0, 2049.0], np.float32)
    with np.errstate(over="ignore"):  # 10000 + 60000 is beyond float16's 65504
        expected = (x.astype(np.float16) + onnx.numpy_helper.to_array(constant)).astype(np.float32)
    assert list(expected) == [1000.5, 1.5, np.inf, 2052.0]  # float32 arithmetic would give 1000.4, 1.5001, 70000, 2052
    (got,) = _session(fp16_storage_emulated(proto).SerializeToString(), optimize=False).run(None, {"x": x})
    np.testing.assert_array_equal(got, expected)
    unknown = copy.deepcopy(proto)
    unknown.graph.node[1].domain = "an.unknown.domain"  # shape inference cannot type its output
    unknown.opset_import.append(helper.make_opsetid("an.unknown.domain", 1))
    with pytest.raises(ExportError, match=r"^m\.onnx: cannot emulate float16 storage: the type of 'y16' \(Add\)"):
        fp16_storage_emulated(unknown, where="m.onnx")


def test_fp16_overflow_fails_the_check_and_nothing_lands(tmp_path, model):
    """Logits beyond float16's largest number (65,504) are inf in any float16 runtime. ONNX Runtime's CPU provider
    computes this graph's arithmetic in float32 and may not show it; the emulated float16 storage does."""
    loud = copy.deepcopy(model)
    with torch.no_grad():
        biggest = float(np.abs(_eager64(loud, _images(1, 97, 75), uint8=True)).max())
        loud.decode_head.classifier.weight.mul_(4 * 65504 / biggest)  # the largest logit about 4 x 65,504
        loud.decode_head.classifier.bias.mul_(4 * 65504 / biggest)
    out = tmp_path / "loud.onnx"
    with pytest.raises(ExportError) as error:
        export_model(loud, out, precision="fp16")
    message = str(error.value)
    assert message.startswith(f"{out}: the exported file does not compute what the model computes")
    assert (
        "(float16 emulated) the logits differ by nan" in message
        or "(float16 emulated) the logits differ by inf" in message
    )
    assert message.endswith("nothing was written") and list(tmp_path.iterdir()) == []
