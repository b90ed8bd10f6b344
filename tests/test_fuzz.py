"""Property-based tests of every input a user can hand pspnet (issue 9, section 7), and the bugs fuzzing found.

The generators live in tests/fuzz_cases.py, shared with benchmarks/fuzz.py (10,000+ cases); here a few hundred
cases, drawn reproducibly (``derandomize=True``, no example database), check the one property of each input:
success with the right result, or a documented failure naming the file at fault; never a traceback, an escaped
exception, an unnamed error or a wrong answer. Below them, the regression tests of the bugs the fuzzing found.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from conftest import tiny_pspnet
from PIL import Image

from pspnet.cli import main
from pspnet.config import ConfigError, load_train_config, shown
from pspnet.data.datasets import LayoutError, load_classes_file
from pspnet.errors import DataError
from pspnet.inference import InferenceSettings
from pspnet.segmenter import Segmenter, as_rgb_array
from pspnet.weights.model_file import make_meta, read_weights_file, save_model, write_weights_file

pytestmark = pytest.mark.usefixtures("one_thread")

VALID_CLASSES = "classes: [road, pothole]\nignore_index: 255\n"


# -- regressions: bugs the fuzzing found ----------------------------------------------------------------------------


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_key_given_twice_in_classes_yaml_is_refused_naming_it_and_its_lines(tmp_path):
    """PyYAML keeps the last of two equal keys silently: the second 'classes' list would win unseen."""
    path = tmp_path / "classes.yaml"
    path.write_text(VALID_CLASSES + "classes: [road, crack, pothole]\n")
    with pytest.raises(LayoutError) as caught:
        load_classes_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML: duplicate key 'classes' (first given on line 1)")
    assert caught.value.kind == "bad_classes_file"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (f"classes: [a]\nbase_size: {'9' * 5000}\n", "Exceeds the limit (4300 digits) for integer string conversion"),
        (f"classes: {'[' * 5000}{']' * 5000}\n", "maximum recursion depth exceeded"),
        ("classes: [a, b\n", "expected ',' or ']', but got '<stream end>' (line 2, column 1)"),
        ("classes:\n\t- a\n", "found character '\\t' that cannot start any token (line 2, column 1)"),
    ],
    ids=["5000-digit integer", "nested 5000 deep", "unclosed list", "tab"],
)
def test_classes_yaml_that_breaks_the_yaml_reader_is_one_line_naming_the_file(tmp_path, capsys, text, words):
    """A 5000-digit integer (a ValueError from Python's int conversion limit) and nesting beyond the recursion
    limit escaped as unexpected errors; PyYAML's own messages spanned five lines."""
    root = tmp_path / "data"
    (root / "images" / "train").mkdir(parents=True)
    path = root / "classes.yaml"
    path.write_text(text)
    with pytest.raises(LayoutError) as caught:
        load_classes_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML: {words}") and "\n" not in message
    assert main(["data", "check", "--dataset", "folder", "--root", str(root), "--no-progress"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err and "unexpected" not in out.err
    assert f"bad_classes_file (1):\n  error: {path}\n      {path}: not valid YAML: {words}" in out.out


def _alias_bomb(key: str, levels: int = 5, fan: int = 10) -> str:
    """``key: {...}``: 250 bytes of YAML whose aliases stand for ``fan ** levels`` (100,000) lists."""
    items = ["l0: &b0 [x]"] + [f"l{i}: &b{i} [{', '.join([f'*b{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return f"{key}: {{{', '.join(items)}}}\n"


def test_error_messages_abbreviate_a_value_before_printing_it(tmp_path):
    """A value was printed in full into the message: 250 bytes of YAML aliases made a message of 800 kB (and
    one more level of aliases a message of gigabytes, with the memory and the time it takes)."""
    path = tmp_path / "classes.yaml"
    path.write_text(_alias_bomb("classes"))
    with pytest.raises(LayoutError) as caught:
        load_classes_file(path)
    assert str(caught.value).startswith(f"{path}: key 'classes': expected a non-empty list of {{name: ..., color: "
                                        "[r, g, b]}, got {'l0': ['x'], 'l1': [")  # fmt: skip
    assert len(str(caught.value)) <= len(str(path)) + 200
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset: folder\nroot: {tmp_path}\niterations: 1\n" + _alias_bomb("depth"))
    with pytest.raises(ConfigError) as caught:
        load_train_config(str(config))
    assert str(caught.value).startswith(f"{config}: TrainConfig.depth: expected an integer, got {{'l0': ['x'], ")
    assert len(str(caught.value)) <= len(str(config)) + 200


def test_shown_abbreviates_long_and_deep_values_before_cutting():
    assert shown([[1] * 100]) == "[[1, 1, 1, 1, 1, 1, 1, 1, ...]]"
    assert shown([[[["deep"]]]]) == "[[[[...]]]]"
    assert shown("x" * 1000).startswith("'xxxxxxxxxxxxxxxxxxxxxxxxx") and len(shown("x" * 1000)) <= 80
    assert shown((1, 2)) == "[1, 2]" and shown(7) == "7" and shown(None) == "None"


@pytest.mark.parametrize(("mode", "fmt"), [("I;16", "TIFF"), ("RGB", "PNG")])
def test_a_pil_image_that_cannot_be_decoded_is_a_data_error_naming_its_file(tmp_path, mode, fmt):
    """Image.open decodes lazily: a truncated file opened by the user reached NumPy and raised Pillow's raw
    OSError from Segmenter.predict (16-bit and RGB images; other modes were caught while converting)."""
    pixels = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    image = (
        Image.fromarray(pixels).convert(mode) if mode != "I;16" else Image.fromarray(pixels[..., 0].astype(np.uint16))
    )
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with Image.open(path) as opened, pytest.raises(DataError) as caught:
        as_rgb_array(opened)
    assert str(caught.value).startswith(f"{path}: cannot decode the PIL image: ")
    assert "truncated" in str(caught.value)


def test_a_float_image_with_infinities_is_read_without_an_overflow_warning(tmp_path):
    """NaN and infinities became 1.8e308 and overflowed when scaled to 0..255: a RuntimeWarning with a line of
    pspnet's source on the user's terminal. The pixels were right, and still are: [0, 1] scaled, the rest clipped."""
    values = np.array([[0.0, 0.5, 1.0, 2.0, -1.0, np.nan, np.inf, -np.inf, 3e38]], dtype=np.float32)
    path = tmp_path / "float.tif"
    Image.fromarray(values).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = as_rgb_array(path)[0, :, 0]
    assert grey.tolist() == [0, 128, 255, 255, 0, 0, 255, 0, 255]


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("base_size", 65535, "base size 65535 at scale 1.0 makes images up to 65535 pixels on a side"),
        ("crop_size", [5000, 5000], "crop size 5000x5000 = 25000000 pixels"),
    ],
)
def test_a_model_file_whose_sizes_exceed_the_pixel_cap_is_named_by_segmenter(tmp_path, capsys, field, value, words):
    """Sizes a model file may hold (up to 65535 a side) can still exceed the pixel cap: Segmenter.from_checkpoint
    raised a ValueError about "base size 65535" that did not say which file asked for it."""
    model = tiny_pspnet(3, head_channels=16, aux_channels=8)
    source = save_model(model, tmp_path / "tiny.safetensors", meta=make_meta(model.config, crop_size=(24, 24)))
    tensors, meta = read_weights_file(source)
    meta["inference"][field] = value
    path = write_weights_file(tmp_path / "absurd.safetensors", tensors, meta)
    with pytest.raises(ValueError) as caught:
        Segmenter.from_checkpoint(path, device="cpu")
    assert str(caught.value).startswith(f"inference settings for {path}: {words}")
    assert "above the limit of 16777216 pixels" in str(caught.value)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 6)).save(photo)
    assert main(["predict", str(path), str(photo), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    assert _error_line(capsys) == f"error: {caught.value}"


def test_a_float_image_with_signalling_nans_is_read_without_a_warning(tmp_path):
    """A damaged float TIFF held a signalling NaN (bits 0x7f800001): NumPy warned 'invalid value encountered in
    cast' while reading it. It is a NaN like the others: 0."""
    bits = np.array([[0x7F800001, 0x7FC00000, 0x3F000000]], dtype=np.uint32)
    path = tmp_path / "snan.tif"
    Image.fromarray(bits.view(np.float32)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grey = as_rgb_array(path)[0, :, 0]
    assert grey.tolist() == [0, 0, 128]


def test_segmenter_names_a_photo_above_the_pixel_cap_before_predicting_any(tmp_path, monkeypatch):
    """Segmenter.predict(path) of a photo above the pixel cap raised 'the image is 4500x4000 = ... pixels'
    without the file's name, and predict_batch raised it only after predicting the images before it."""
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (30, 20)).save(small)
    Image.new("1", (4000, 4500)).save(large)  # 18,000,000 pixels, a small file
    model = tiny_pspnet(3, head_channels=16, aux_channels=8)
    segmenter = Segmenter(model, InferenceSettings(crop_size=(24, 24), base_size=24))
    with pytest.raises(ValueError) as caught:
        segmenter.predict(large)
    assert str(caught.value).startswith(f"{large}: the image is 4500x4000 = 18000000 pixels, above the limit of ")
    with Image.open(large) as image, pytest.raises(ValueError, match=f"^{large}: the image is 4500x4000"):
        segmenter.predict(image)
    with pytest.raises(ValueError, match="^the image is 4500x4000"):
        segmenter.predict(np.zeros((4500, 4000, 3), np.uint8))
    calls = []
    monkeypatch.setattr(Segmenter, "infer", lambda self, images: calls.append(len(images)))
    with pytest.raises(ValueError, match=f"^{large}: "):
        segmenter.predict_batch([small, large])
    assert calls == []  # "a bad image raises before any is predicted"
