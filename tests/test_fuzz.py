"""Property-based tests of every input a user can hand pspnet, and the bugs fuzzing found.

The generators live in tests/fuzz_cases.py, shared with benchmarks/fuzz.py (10,000+ cases); here a few hundred
cases, drawn reproducibly (``derandomize=True``, no example database), check the one property of each input:
success with the right result, or a documented failure naming the file at fault; never a traceback, an escaped
exception, an unnamed error or a wrong answer. Below them, the regression tests of the bugs the fuzzing found.
"""

from __future__ import annotations

import io
import warnings

import fuzz_cases as fc
import numpy as np
import pytest
from conftest import tiny_pspnet
from hypothesis import HealthCheck, example, given, settings
from PIL import Image

from pspnet.cli import main
from pspnet.data.datasets import LayoutError, load_classes_file
from pspnet.engine.config import load_train_config
from pspnet.errors import ConfigError, DataError
from pspnet.inference import InferenceSettings
from pspnet.parsing import shown
from pspnet.segmenter import Segmenter, as_rgb_array
from pspnet.weights.model_file import make_card, read_weights_file, save_model, write_weights_file

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),  # Pillow's own notes on the damaged files made here
]

VALID_CLASSES = "classes: [road, pothole]\nignore_index: 255\n"


def fuzz(max_examples: int) -> settings:
    """Reproducible settings: the same examples on every run and machine, no database, no deadline."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> fc.Fixture:
    """The tiny model file (ResNet-18, 16-channel head, 3 classes, base size 24), a Segmenter loaded from it, small
    folder data sets."""
    return fc.make_fixture(tmp_path_factory.mktemp("fuzz"))


def _passed(outcomes: dict[str, fc.Outcome]) -> bool:
    return all(o.passed for o in outcomes.values())


# -- properties -----------------------------------------------------------------------------------------------------


@fuzz(30)
@given(case=fc.predict_cases())
@example(case=fc.PredictCase(fc.ImageCase("image", "RGB", "JPEG", 1, 300, orientation=6, seed=1), ("--mode", "slide")))
@example(case=fc.PredictCase(fc.ImageCase("image", "F", "TIFF", 3, 40, seed=2)))  # NaN and infinities
@example(case=fc.PredictCase(fc.ImageCase("empty", suffix=".png")))
def test_predict_gives_an_upright_label_map_or_names_the_photo(fixture, case):
    """pspnet predict MODEL PHOTO [OPTIONS]: exit 0 and a label map of the photo's upright size, or exit 1 with
    an error line naming it; never a traceback."""
    with fc.scratch(fixture.root) as folder:
        outcome = fc.run_image_cli(fixture, case, folder)
    assert outcome.passed, f"{outcome.kind}: {outcome.detail}"


@fuzz(80)
@given(case=fc.image_cases())
@example(case=fc.ImageCase("image", "I;16", "TIFF", 3, 40, seed=3, damage="truncate", cut=0.5))  # lazily decoded
@example(case=fc.ImageCase("image", "P", "TIFF", 2, 30, orientation=6, seed=4))  # Pillow loads it raw by name
def test_the_python_api_gives_the_upright_size_or_a_data_error_naming_the_photo(fixture, case):
    """as_rgb_array(path), Segmenter.predict(path) and Segmenter.predict(Image.open(path)): the upright size, or
    a DataError / ValueError naming the file."""
    with fc.scratch(fixture.root) as folder:
        outcomes = fc.run_image_api(fixture, case, folder)
    assert _passed(outcomes), fc.describe(outcomes)


@fuzz(30)
@given(case=fc.mask_cases())
def test_data_check_and_eval_accept_valid_masks_and_name_bad_ones(fixture, case):
    """A folder data set of one photo and its mask (any storage, size and values): data check counts a valid
    mask's pixels exactly and eval scores it; anything else is a problem or an error naming the photo or mask."""
    with fc.scratch(fixture.root) as folder:
        outcomes = {"data check": fc.run_mask_check(case, folder), "eval": fc.run_mask_eval(fixture, case, folder)}
    assert _passed(outcomes), fc.describe(outcomes)


@fuzz(40)
@given(case=fc.classes_cases())
@example(case=fc.TextCase(fc.alias_bomb("classes", 5, 10).encode(), "either", "alias bomb"))
@example(case=fc.TextCase(f"classes: [a]\nbase_size: {'9' * 5000}\n".encode(), "either", "5000 digits"))
@example(case=fc.TextCase(b"classes: [a]\nclasses: [a, b]\n", "error", "duplicate key"))
def test_classes_yaml_is_valid_or_a_data_error_naming_it(fixture, case):
    """classes.yaml through data check and build_dataset: both accept it, or both name it (bad_classes_file)."""
    with fc.scratch(fixture.root) as folder:
        outcomes = fc.run_classes(fixture, case, folder)
    assert _passed(outcomes), fc.describe(outcomes)


@fuzz(60)
@given(case=fc.config_cases())
@example(
    case=fc.TextCase(
        b"dataset: folder\nroot: x\niterations: 1\n" + fc.alias_bomb("depth", 5, 10).encode(), "either", "alias bomb"
    )
)
@example(case=fc.TextCase(b"dataset: folder\nroot: x\niterations: 1\niterations: 2\n", "error", "duplicate key"))
def test_training_configs_are_valid_or_refused_naming_the_file(fixture, case):
    """load_train_config gives a TrainConfig or a ConfigError naming the file; pspnet train refuses an invalid
    config in one line naming it (valid ones are not trained here: benchmarks/fuzz.py trains the tiny ones)."""
    with fc.scratch(fixture.root) as folder:
        outcomes = fc.run_config(fixture, case, folder, train_valid=False)
    assert _passed(outcomes), fc.describe(outcomes)


@fuzz(25)
@given(case=fc.meta_cases())
@example(case=fc.MetaCase((fc.Mutation("replace", 4, 65535, field="inference"),)))  # base size beyond the cap
@example(case=fc.MetaCase((fc.Mutation("delete", 0, field="kind"),)))
def test_model_file_metadata_loads_or_is_refused_naming_the_file(fixture, case):
    """Mutated metadata, written with a right checksum: load_model, Segmenter.from_checkpoint and pspnet predict
    all load it, or all refuse it naming the file."""
    with fc.scratch(fixture.root) as folder:
        outcomes = fc.run_meta(fixture, case, folder, fc.photo_for(fixture))
    assert _passed(outcomes), fc.describe(outcomes)


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
    assert str(caught.value).startswith(
        f"{path}: key 'classes': expected a non-empty list of {{name: ..., color: "
        "[r, g, b]}, got {'l0': ['x'], 'l1': ["
    )
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
    source = save_model(model, tmp_path / "tiny.safetensors", card=make_card(model.config, crop_size=(24, 24)))
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


def test_an_empty_data_set_root_is_refused_not_read_as_the_current_folder(tmp_path, monkeypatch, capsys):
    """A config's ``root: ''`` became Path(""), the current folder: training read whatever data set the command
    ran in (here one that is complete and valid), or failed naming a bare 'classes.yaml'."""
    from train_helpers import make_folder_dataset, write_config

    from pspnet.data.datasets import build_dataset

    make_folder_dataset(tmp_path, n_train=2, n_val=1)
    monkeypatch.chdir(tmp_path)
    for name in ("folder", "camvid"):
        with pytest.raises(LayoutError, match=r"^the data set root is empty \(''"):
            build_dataset(name, "", "train")
    config = write_config(tmp_path / "c.yaml", tmp_path, iterations=1, val_split=None)
    config.write_text(config.read_text().replace(f"root: {tmp_path}", "root: ''"))
    assert main(["train", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 1
    assert _error_line(capsys) == "error: the data set root is empty ('', the current folder); name its folder"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["", ".", "train/..", "../data/images/train", "/train"])
def test_a_split_that_is_not_a_folder_name_is_refused(tmp_path, capsys, split):
    """train_split '' (or 'train/..') read images/ and masks/ whole: every split, val included, was trained on."""
    from train_helpers import make_folder_dataset

    from pspnet.data.datasets import build_dataset

    root = make_folder_dataset(tmp_path / "data", n_train=2, n_val=1)
    words = f"{root}: split {split!r} is not a folder name (an empty, '.' or '..' part reads other splits"
    with pytest.raises(LayoutError) as caught:
        build_dataset("folder", root, split)
    assert str(caught.value).startswith(words) and caught.value.kind == "unknown_split"
    assert main(["data", "check", "--dataset", "folder", "--root", str(root), "--split", split, "--no-progress"]) == 1
    assert f"unknown_split (1):\n  error: {root}\n      {words}" in capsys.readouterr().out
