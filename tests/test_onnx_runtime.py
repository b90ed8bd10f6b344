"""The test protocol on ONNX Runtime: a ``.onnx`` file in Segmenter and ``pspnet predict`` gives the labels the
PyTorch model gives, in every mode, on real CamVid images.

One tiny CamVid-shaped model is exported once per module (``--input normalized --output logits``). Both backends
run the same :func:`pspnet.inference.infer_proba` in float32 on the same images; only the network's forward
differs (ONNX Runtime's kernels and fusions against PyTorch's), by rounding alone. The bound on that difference is
derived (tests/rounding.py): logits within ``network_rtol(float32)`` of the largest logit, so every probability
within half of that (plus the softmax's own rounding), and averaging over windows, flips and scales keeps the
bound. A pixel whose two best probabilities are further apart than twice it must keep its label; the labels may
differ only on near-ties, which must stay below 0.01% of the pixels (the deployment guarantee).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED, tiny_pspnet
from PIL import Image
from rounding import network_rtol, probability_bound

from pspnet.cli import main
from pspnet.errors import CheckpointError, ExportError, InputError
from pspnet.export import export_model, read_metadata
from pspnet.segmenter import Segmenter
from pspnet.weights.model_file import make_card, save_model

pytestmark = pytest.mark.usefixtures("one_thread")

CAMVID_VAL = SHARED / "data" / "camvid" / "val"
SIZE = (120, 90)  # CamVid's 480x360 downscaled 4x (width, height): small enough to keep the tests fast
CROP, BASE = (64, 64), 96  # slide windows on the 96x72 image at scale 1, on every scale of the multi-scale run
MODES = {
    "whole": {"mode": "whole"},
    "slide": {"mode": "slide"},
    "multi-scale+flip": {"mode": "auto", "scales": (0.75, 1.0, 1.5), "flip": True},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path, torch.nn.Module]:
    """(model file, its ONNX export with normalised input and logits, the model)."""
    torch.manual_seed(3)
    model = tiny_pspnet(11).eval()
    model.card = make_card(model.config, dataset="camvid", crop_size=CROP, base_size=BASE)
    folder = tmp_path_factory.mktemp("ort")
    save_model(model, folder / "tiny.safetensors", card=model.card)
    export_model(model, folder / "tiny.onnx", input_kind="normalized", output_kind="logits")
    return folder / "tiny.safetensors", folder / "tiny.onnx", model


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Three CamVid val images, downscaled to SIZE, as PNG files."""
    names = sorted(CAMVID_VAL.glob("*.png"))[:3]
    assert len(names) == 3, f"CamVid val images missing under {CAMVID_VAL}"
    folder = tmp_path_factory.mktemp("camvid")
    out = []
    for name in names:
        path = folder / name.name
        Image.open(name).convert("RGB").resize(SIZE, Image.BILINEAR).save(path)
        out.append(path)
    return out


def test_the_onnx_segmenter_reads_its_card_and_settings_from_the_file(files):
    model_file, onnx_file, model = files
    torch_seg = Segmenter.from_checkpoint(model_file, device="cpu")
    onnx_seg = Segmenter.from_checkpoint(onnx_file)
    assert (torch_seg.backend, onnx_seg.backend) == ("torch", "onnxruntime")
    assert onnx_seg.card == torch_seg.card == model.card
    assert onnx_seg.settings == torch_seg.settings
    assert (onnx_seg.num_classes, onnx_seg.classes, onnx_seg.palette) == (11, torch_seg.classes, torch_seg.palette)
    assert onnx_seg.device == torch.device("cpu") and onnx_seg.settings.precision == "fp32"
    assert onnx_seg.model.threads == torch.get_num_threads()


@pytest.mark.parametrize("mode", list(MODES))
def test_onnx_runtime_gives_the_labels_pytorch_gives(files, images, mode):
    model_file, onnx_file, _ = files
    torch_seg = Segmenter.from_checkpoint(model_file, device="cpu", **MODES[mode])
    onnx_seg = Segmenter.from_checkpoint(onnx_file, **MODES[mode])
    largest = [0.0]  # the largest logit any forward of the protocol makes

    def record(module, inputs, output):
        largest[0] = max(largest[0], float(output.abs().max()))

    torch_seg.model.register_forward_hook(record)
    expected = torch_seg.predict_proba_batch(images)  # (K, H, W) each
    got = onnx_seg.predict_proba_batch(images)
    pixels = max(SIZE[0] * SIZE[1], BASE * BASE * 3)  # the largest image a forward sees (scale 1.5 of 96)
    logit_error = network_rtol(torch_seg.model, pixels=pixels, dtype=torch.float32) * largest[0]
    proba_error = 0.5 * logit_error + probability_bound(11, largest[0], averaged=2 * 4 * 3)
    equal = total = 0
    for p, q in zip(expected, got):
        assert np.abs(p - q).max() <= proba_error
        top2 = np.sort(p, axis=0)[-2:]
        clear = (top2[1] - top2[0]) > 2 * proba_error  # pixels no rounding can flip
        same = p.argmax(0) == q.argmax(0)
        assert same[clear].all()
        equal, total = equal + int(same.sum()), total + same.size
    assert equal / total >= 0.9999, f"labels equal on {100 * equal / total:.4f}% of {total} pixels"


def test_a_file_of_another_kind_is_refused_with_the_command_that_exports_the_right_one(files, tmp_path):
    _, _, model = files
    path = tmp_path / "uint8.onnx"
    export_model(model, path, input_kind="uint8-rgb", output_kind="labels")
    with pytest.raises(CheckpointError) as caught:
        Segmenter.from_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: exported with --input uint8-rgb --output labels")
    assert "pspnet export MODEL --out FILE.onnx --input normalized --output logits" in message


def test_onnx_files_run_in_fp32_on_the_cpu_and_say_so(files):
    _, onnx_file, _ = files
    with pytest.raises(InputError, match=r"^precision 'bf16': an ONNX file runs in fp32 on ONNX Runtime"):
        Segmenter.from_checkpoint(onnx_file, precision="bf16")
    with pytest.raises(InputError, match=r"^device 'cuda'"):
        Segmenter.from_checkpoint(onnx_file, device="cuda")


def test_without_onnxruntime_the_error_says_how_to_install_it(files, monkeypatch):
    _, onnx_file, _ = files
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    with pytest.raises(CheckpointError, match=r"pip install 'pspnet\[onnx\]'") as caught:
        Segmenter.from_checkpoint(onnx_file)
    assert str(caught.value).startswith(str(onnx_file))


def test_a_file_that_is_not_onnx_is_named(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a protobuf")
    with pytest.raises(CheckpointError, match=r"broken\.onnx: ONNX Runtime cannot load it"):
        Segmenter.from_checkpoint(path)


def test_an_onnx_file_without_pspnet_metadata_is_named(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "plain.onnx"
    value = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["logits"])], "plain", [value], [logits])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(CheckpointError, match=r"plain\.onnx: not a pspnet export \(no pspnet metadata\)"):
        Segmenter.from_checkpoint(path)


def _outputs(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predict_with_the_onnx_file_writes_what_the_model_file_writes(files, images, tmp_path, capsys):
    model_file, onnx_file, _ = files
    inputs = [str(p) for p in images]
    flags = ["--overlay", "--mode", "slide", "--no-progress"]
    assert main(["predict", str(model_file), *inputs, "--out", str(tmp_path / "torch"), *flags]) == 0
    assert main(["predict", str(onnx_file), *inputs, "--out", str(tmp_path / "onnx"), *flags]) == 0
    assert "onnxruntime" in capsys.readouterr().err
    torch_out, onnx_out = _outputs(tmp_path / "torch"), _outputs(tmp_path / "onnx")
    assert list(torch_out) == list(onnx_out)
    assert {name for name in torch_out} >= {f"{p.stem}{s}.png" for p in images for s in ("", "_color", "_overlay")}
    for name, path in torch_out.items():
        if name.endswith(".png") and not name.endswith(("_color.png", "_overlay.png")):
            a, b = np.asarray(Image.open(path)), np.asarray(Image.open(onnx_out[name]))
            assert Image.open(path).getpalette() == Image.open(onnx_out[name]).getpalette()  # the card's palette
            assert a.shape == b.shape and (a == b).mean() >= 0.9999
    assert (tmp_path / "onnx" / "predictions.csv").read_text().splitlines()[0] == (
        (tmp_path / "torch" / "predictions.csv").read_text().splitlines()[0]
    )
    assert read_metadata(onnx_file).card.classes[:2] == ("Sky", "Building")


# -- int8 -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_export(files, images, tmp_path_factory) -> tuple[Path, int, str]:
    """(the int8 file written by 'pspnet export --int8 --calib', exit status, stdout)."""
    model_file, _, _ = files
    path = tmp_path_factory.mktemp("int8") / "tiny_int8.onnx"
    argv = ["export", str(model_file), "--out", str(path), "--input", "normalized", "--output", "logits"]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main([*argv, "--int8", "--calib", str(images[0].parent)])
    return path, status, stdout.getvalue()


def test_int8_export_keeps_the_card_says_it_is_quantised_and_runs_in_the_segmenter(files, images, int8_export):
    import onnx

    _, onnx_file, model = files
    path, status, stdout = int8_export
    assert status == 0, stdout
    assert "quantised to int8" in stdout and "clearly decided pixels" in stdout
    meta = read_metadata(path)
    assert meta.quantization == "int8 static, 3 calibration images"
    assert meta.card == model.card and (meta.input_kind, meta.output_kind) == ("normalized", "logits")
    assert read_metadata(onnx_file).quantization is None
    graph = onnx.load(str(path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8 = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    weights = [t for t in int8 if len(t.dims) == 4]
    zero_points = [t for t in int8 if len(t.dims) == 1]  # one per output channel: per-channel quantisation
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert len(weights) == len(zero_points) == len(convs) - 1  # all but the first, on the image, which stays float
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 4}
    assert convs[0].input[1] in floats and not any(conv.input[1] in floats for conv in convs[1:])
    assert sorted(w.dims[0] for w in weights) == sorted(z.dims[0] for z in zero_points)
    # activations stay uint8 between the convolutions: every ReLU after a quantised one is folded into its output,
    # and the residual Adds, the Add of the head conv's two parts, the pyramid's Concat of its grids (each padded onto
    # the diagonal of one grid), the final Resize and the max pooling read dequantised uint8 tensors; the pooling and
    # interpolation matrices (computed from the input size) stay float32, so no MatMul reads two of them
    producer = {output: node.op_type for node in graph.node for output in node.output}
    feeds = {op: [[producer.get(i) for i in n.input if i] for n in graph.node if n.op_type == op] for op in ops}
    relus = [node.input[0] for node in graph.node if node.op_type == "Relu"]
    assert relus == [convs[0].output[0]]  # the float first convolution's
    pyramid = [inputs for inputs in feeds["Concat"] if inputs and set(inputs) == {"DequantizeLinear"}]
    assert [len(inputs) for inputs in pyramid] == [4]  # one grid per bin
    assert all(inputs[0] == "DequantizeLinear" for inputs in feeds["Resize"] + feeds["MaxPool"] + feeds["Pad"])
    assert sum(inputs == ["DequantizeLinear"] * 2 for inputs in feeds["Add"]) == 9  # ResNet-18's 8 blocks + head
    assert feeds["MatMul"] and all(inputs.count("DequantizeLinear") < 2 for inputs in feeds["MatMul"])
    seg = Segmenter.from_checkpoint(path, mode="slide")
    assert seg.backend == "onnxruntime" and "int8 static" in seg.precision_reason
    labels = seg.predict_batch(images)
    assert [a.shape for a in labels] == [(SIZE[1], SIZE[0])] * 3


def test_int8_of_a_uint8_input_proba_file_is_checked_on_its_logits(files, images, tmp_path):
    from pspnet import export

    _, _, model = files
    calibration = export.calibration_images(images[0].parent, CROP)
    report = export_model(model, tmp_path / "p.onnx", output_kind="proba", calibration=calibration)
    check = report.int8
    assert check is not None and check.passed and (check.images, check.pixels) == (3, 3 * CROP[0] * CROP[1])
    assert check.logit_rdiff is not None and check.logit_rdiff > 0  # the logits, read from before the Softmax
    assert read_metadata(report.path).input_kind == "uint8-rgb"
    assert report.metadata["quantization"] == "int8 static, 3 calibration images"


def test_an_int8_file_that_fails_its_check_is_not_written(files, images, tmp_path, monkeypatch):
    from pspnet import export

    _, _, model = files
    monkeypatch.setattr(export, "INT8_MIN_LABEL_AGREEMENT", 1.01)  # no file can pass
    calibration = export.calibration_images(images[0].parent, CROP)
    assert calibration.shape == (3, *CROP, 3) and calibration.dtype == np.uint8
    with pytest.raises(ExportError, match="the int8 file does not compute what the model computes") as caught:
        export_model(model, tmp_path / "x.onnx", input_kind="normalized", calibration=calibration)
    assert "clearly decided pixels" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failing_int8_pre_processing_is_an_export_error_and_leaves_no_files(files, tmp_path, monkeypatch):
    """ONNX Runtime's shape inference, when it fails, saves its model and weights in the working directory and raises
    a bare Exception: quantize_int8 runs it in a scratch folder and names the failure."""
    from onnxruntime.quantization import shape_inference

    from pspnet import export

    _, onnx_file, model = files

    def failing(input_model, output_model, **options):
        Path("sym_shape_infer_temp.onnx").write_bytes(b"left behind")  # as ONNX Runtime does, in the cwd
        raise Exception("Incomplete symbolic shape inference")  # noqa: TRY002 - what ONNX Runtime raises

    monkeypatch.setattr(shape_inference, "quant_pre_process", failing)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "out" / "x_int8.onnx"
    out.parent.mkdir()
    images = np.zeros((1, *CROP, 3), dtype=np.uint8)
    with pytest.raises(ExportError, match="int8 pre-processing failed .*Incomplete symbolic shape inference"):
        export.quantize_int8(onnx_file, out, images, card=model.card, input_kind="normalized", metadata={})
    assert list(work.iterdir()) == [] and list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--int8"], "--int8 and --calib DIR go together"),
        (["--calib", "."], "--int8 and --calib DIR go together"),
        (["--int8", "--calib", ".", "--format", "torchscript"], "--int8 quantises ONNX files"),
    ],
)
def test_int8_options_are_checked_before_any_work(files, tmp_path, capsys, extra, message):
    model_file, _, _ = files
    out = tmp_path / ("x.pt" if "torchscript" in extra else "x.onnx")
    assert main(["export", str(model_file), "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err


def test_calibration_needs_images(tmp_path):
    from pspnet.export import calibration_images

    with pytest.raises(ExportError, match=r"^calib .*: no images"):
        calibration_images(tmp_path, CROP)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")  # httpx still works (test_serve.py)
def test_pspnet_serve_answers_with_an_onnx_file(files, images):
    """serve holds whatever Segmenter.from_checkpoint loads, so an .onnx file is served like a model file."""
    pytest.importorskip("starlette")
    pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx (the 'test' extra)")
    from starlette.testclient import TestClient

    from pspnet.serve.app import create_app

    model_file, onnx_file, _ = files
    expected = Segmenter.from_checkpoint(model_file, device="cpu", precision="fp32").predict(images[0])
    with TestClient(create_app(Segmenter.from_checkpoint(onnx_file))) as client:
        answer = client.post("/v1/segment", content=images[0].read_bytes())
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    labels = np.asarray(Image.open(io.BytesIO(answer.content)))
    assert labels.shape == expected.shape and (labels == expected).mean() >= 0.9999
