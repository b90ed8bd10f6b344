"""Data set readers on tiny trees in each official layout, image/mask file reading, seeded samples, collate."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from pspnet.data.classes import DATASETS, default_palette
from pspnet.data.datasets import (
    DATASET_READERS,
    VOC,
    CamVid,
    FolderDataset,
    LayoutError,
    build_dataset,
    collate,
)
from pspnet.data.io import read_image, read_image_and_orientation, read_mask, write_mask_png
from pspnet.errors import DataError

SHARED_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"

H, W = 6, 8


def photo(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save(path: Path, array: np.ndarray, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **options)
    return path


def opened(path: Path) -> Image.Image:
    """The image at ``path``, loaded and its file closed."""
    with Image.open(path) as image:
        image.load()
    return image


def label(values, h: int = H, w: int = W, dtype=np.uint8) -> np.ndarray:
    """A mask whose first pixels hold ``values`` in order, the rest the first value."""
    mask = np.full(h * w, values[0], dtype=dtype)
    mask[: len(values)] = values
    return mask.reshape(h, w)


# -- io ---------------------------------------------------------------------------------------------------------


def test_read_image_converts_every_mode_to_rgb8(tmp_path):
    rgb = photo()
    grey = rgb[:, :, 0]
    cases = {
        "grey.png": Image.fromarray(grey),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full((H, W), 7, np.uint8)])),
        "palette.png": Image.fromarray(rgb).quantize(16),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
        "g16.png": Image.fromarray(grey.astype(np.uint16) * 257),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        out = read_image(tmp_path / name)
        assert out.dtype == np.uint8 and out.shape == (H, W, 3), name
    assert (read_image(tmp_path / "grey.png") == grey[:, :, None]).all()
    assert (read_image(tmp_path / "rgba.png") == rgb).all()  # alpha dropped, colours untouched
    assert opened(tmp_path / "g16.png").mode.startswith("I")
    assert (read_image(tmp_path / "g16.png") == grey[:, :, None]).all()  # 16-bit scaled, not clipped
    quantized = np.asarray(cases["palette.png"].convert("RGB"))
    assert (read_image(tmp_path / "palette.png") == quantized).all()  # colours, not indices


def test_read_image_applies_exif_orientation(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was rotated: show rotated 90 degrees clockwise
    Image.fromarray(image).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    upright, orientation = read_image_and_orientation(tmp_path / "phone.jpg")
    assert orientation == 6 and upright.shape == (40, 20, 3)
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the white half is now on top


# An eXIf chunk that is no TIFF structure: Pillow's getexif and exif_transpose raise SyntaxError on it.
MALFORMED_EXIF = b"Exif\x00\x00garbage"


def test_a_malformed_exif_block_is_ignored_with_a_warning_naming_the_file(tmp_path):
    pixels = photo(seed=3, h=20, w=40)
    path = save(tmp_path / "odd exif.png", pixels, exif=MALFORMED_EXIF)
    with Image.open(path) as opened, pytest.raises(SyntaxError):
        ImageOps.exif_transpose(opened)  # Pillow itself refuses the block
    words = re.escape(f"{path}: malformed EXIF block") + r".*its orientation was ignored, the pixels are used as stored"
    with pytest.warns(UserWarning, match=words):
        image, orientation = read_image_and_orientation(path)
    assert orientation == 1
    np.testing.assert_array_equal(image, pixels)  # lossless PNG: exactly the stored pixels
    with pytest.warns(UserWarning, match=re.escape(str(path))):
        np.testing.assert_array_equal(read_image(path), pixels)


def test_an_orientation_pillow_cannot_apply_is_ignored_with_a_warning_naming_the_file(tmp_path, monkeypatch):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(tmp_path / "phone.png", photo(seed=4, h=20, w=40), exif=exif)

    def refuse(image: Image.Image, **options: object) -> Image.Image:
        raise ValueError("broken IFD")

    monkeypatch.setattr(ImageOps, "exif_transpose", refuse)
    with pytest.warns(UserWarning, match=re.escape(f"{path}: malformed EXIF block (broken IFD); its orientation")):
        image, orientation = read_image_and_orientation(path)
    assert orientation == 1 and image.shape == (20, 40, 3)  # as stored, not turned


def test_truncated_and_missing_images_raise_data_error_naming_the_file(tmp_path):
    for suffix in (".jpg", ".png"):
        whole = io.BytesIO()
        Image.fromarray(photo(h=64, w=64)).save(whole, format="JPEG" if suffix == ".jpg" else "PNG")
        path = tmp_path / f"cut{suffix}"
        path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
        with pytest.raises(DataError, match=f"{path}.*truncated"):
            read_image(path)
    (tmp_path / "text.png").write_text("not an image")
    for path in (tmp_path / "text.png", tmp_path / "absent.png"):
        with pytest.raises(DataError, match=str(path)):
            read_image(path)
        with pytest.raises(DataError, match=str(path)):
            read_mask(path)


def test_read_mask_modes_and_write_mask_png_round_trip(tmp_path):
    mask = label([0, 1, 15, 255])
    write_mask_png(tmp_path / "deep" / "m.png", mask, DATASETS["voc"].palette)
    image = opened(tmp_path / "deep" / "m.png")
    assert image.mode == "P" and image.getpalette()[3 * 15 : 3 * 16] == list(default_palette(16)[15])
    assert (read_mask(tmp_path / "deep" / "m.png") == mask).all()  # indices, not colours
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["m.png"]  # no temporary file left
    write_mask_png(tmp_path / "plain.png", mask)
    assert opened(tmp_path / "plain.png").mode == "L"
    save(tmp_path / "m16.png", label([0, 300, 65535], dtype=np.uint16))
    wide = read_mask(tmp_path / "m16.png")
    assert wide.dtype == np.int32 and wide.flat[1] == 300 and wide.flat[2] == 65535
    save(tmp_path / "rgb.png", photo())
    assert read_mask(tmp_path / "rgb.png").shape == (H, W, 3)
    with pytest.raises(ValueError, match="0..255"):
        write_mask_png(tmp_path / "bad.png", label([0, 256], dtype=np.int32))


# -- ADE20K -----------------------------------------------------------------------------------------------------


def make_ade(root: Path) -> Path:
    base = root / "ADEChallengeData2016"
    for folder, prefix, count in (("training", "ADE_train", 3), ("validation", "ADE_val", 2)):
        for i in range(1, count + 1):
            save(base / "images" / folder / f"{prefix}_{i:08d}.jpg", photo(i))
            save(base / "annotations" / folder / f"{prefix}_{i:08d}.png", label([0, 1, 2, 150]))
    return base


def test_ade20k_layout_and_label_mapping(tmp_path):
    base = make_ade(tmp_path)
    train = build_dataset("ade20k", tmp_path, "train")
    assert len(train) == 3 and train.samples[0].name == "ADE_train_00000001"
    assert train.info.num_classes == 150
    image, mask = train.load(0)
    assert image.shape == (H, W, 3) and mask.dtype == np.uint8
    assert mask.flat[:4].tolist() == [255, 0, 1, 149]  # 0 -> ignore, others minus 1
    assert len(build_dataset("ade20k", base, "val")) == 2  # ROOT may be ADEChallengeData2016 itself
    save(base / "annotations" / "training" / "ADE_train_00000002.png", label([151, 3]))
    with pytest.raises(DataError, match=r"ADE_train_00000002\.png.*151"):
        train.load(1)
    with pytest.raises(LayoutError, match="unknown split"):
        build_dataset("ade20k", tmp_path, "test")


def test_missing_root_and_split_folders_name_the_path(tmp_path):
    with pytest.raises(LayoutError, match=str(tmp_path / "nowhere")) as caught:
        build_dataset("camvid", tmp_path / "nowhere", "train")
    assert caught.value.kind == "missing_root"
    make_ade(tmp_path)
    (tmp_path / "ADEChallengeData2016" / "annotations" / "validation").rename(tmp_path / "moved")
    with pytest.raises(LayoutError, match="annotations/validation") as caught:
        build_dataset("ade20k", tmp_path, "val")
    assert caught.value.kind == "missing_folder"
    with pytest.raises(ValueError, match="unknown data set"):
        build_dataset("coco", tmp_path, "train")
    assert set(DATASET_READERS) == {"ade20k", "cityscapes", "voc", "camvid", "folder"}


# -- Cityscapes -------------------------------------------------------------------------------------------------


def make_cityscapes(root: Path) -> None:
    label_ids = label([7, 8, 26, 33, 0, 1, 6, 34])
    for city, frame in (("aachen", "aachen_000000_000019"), ("bonn", "bonn_000001_000019")):
        save(root / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png", photo())
        save(root / "gtFine" / "train" / city / f"{frame}_gtFine_labelIds.png", label_ids)
        save(root / "gtFine" / "train" / city / f"{frame}_gtFine_color.png", photo())
    # aachen also has the trainIds file, with other values: it must win
    save(root / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png", label([5, 255]))
    save(root / "leftImg8bit" / "test" / "berlin" / "berlin_000000_000019_leftImg8bit.png", photo())
    save(root / "gtFine" / "test" / "berlin" / "berlin_000000_000019_gtFine_labelIds.png", label([0]))


def test_cityscapes_layout_label_ids_and_train_ids_preference(tmp_path):
    make_cityscapes(tmp_path)
    train = build_dataset("cityscapes", tmp_path, "train")
    assert [s.name for s in train.samples] == [
        "aachen/aachen_000000_000019_leftImg8bit",
        "bonn/bonn_000001_000019_leftImg8bit",
    ]
    assert train.samples[0].mask.name.endswith("_labelTrainIds.png")
    assert train.load(0)[1].flat[:2].tolist() == [5, 255]
    # labelIds -> trainIds: 7 road 0, 8 sidewalk 1, 26 car 13, 33 bicycle 18; 0, 1, 6, 34 -> 255
    assert train.load(1)[1].flat[:8].tolist() == [0, 1, 13, 18, 255, 255, 255, 255]
    test = build_dataset("cityscapes", tmp_path, "test")
    assert len(test) == 1 and test.samples[0].mask is None
    sample = test[0]
    assert sample["mask"] is None and sample["image"].shape == (H, W, 3)


# -- Pascal VOC -------------------------------------------------------------------------------------------------


def make_voc(base: Path) -> Path:
    names = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033"]}
    border = label([0, 15, 255, 1])
    for split, listed in names.items():
        for name in listed:
            save(base / "JPEGImages" / f"{name}.jpg", photo())
            write_mask_png(base / "SegmentationClass" / f"{name}.png", border, DATASETS["voc"].palette)
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(listed) + "\n")
    return base


@pytest.mark.parametrize("layout", ["VOCdevkit/VOC2012", "VOC2012", "."])
def test_voc_layouts_and_palette_masks_read_as_indices(tmp_path, layout):
    make_voc(tmp_path / layout)
    train = build_dataset("voc", tmp_path, "train")
    assert [s.name for s in train.samples] == ["2007_000032", "2007_000039"]
    _, mask = train.load(1)
    assert mask.flat[:4].tolist() == [0, 15, 255, 1]  # palette indices are class ids, 255 border kept
    assert len(build_dataset("voc", tmp_path, "val")) == 1
    with pytest.raises(LayoutError, match=r"train_aug\.txt.*prepare voc-aug") as caught:
        build_dataset("voc", tmp_path, "train_aug")
    assert caught.value.kind == "missing_list"


def test_voc_train_aug_and_missing_files(tmp_path):
    base = make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    save(base / "JPEGImages" / "2008_000001.jpg", photo())
    for name in ("2007_000032", "2008_000001"):
        save(base / "SegmentationClassAug" / f"{name}.png", label([0, 20, 255]))
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2007_000032\n2008_000001\n")
    aug = VOC(tmp_path, "train_aug")
    assert len(aug) == 2 and aug.samples[1].mask.parent.name == "SegmentationClassAug"
    assert aug.load(1)[1].flat[:3].tolist() == [0, 20, 255]
    save(base / "SegmentationClassAug" / "2008_000001.png", label([0, 21]))
    with pytest.raises(DataError, match=r"2008_000001\.png.*21"):
        aug[1]
    (base / "SegmentationClass" / "2007_000039.png").unlink()
    with pytest.raises(LayoutError, match="2007_000039") as caught:
        VOC(tmp_path, "train")
    assert caught.value.kind == "image_without_mask"
    lenient = VOC(tmp_path, "train", strict=False)
    assert [p.kind for p in lenient.layout_problems] == ["image_without_mask"]


# -- CamVid -----------------------------------------------------------------------------------------------------


def make_camvid(root: Path, count: int = 3) -> Path:
    for split in ("train", "val"):
        for i in range(count):
            name = f"0001TP_{i:06d}.png"
            save(root / split / name, photo(i))
            save(root / f"{split}annot" / name, label([0, 10, 11, 3]))
    return root


def test_camvid_layout_void_becomes_ignore(tmp_path):
    make_camvid(tmp_path)
    train = build_dataset("camvid", tmp_path, "train")
    assert len(train) == 3 and train.samples[0].name == "0001TP_000000"
    assert train.load(0)[1].flat[:4].tolist() == [0, 10, 255, 3]
    save(tmp_path / "trainannot" / "0001TP_000001.png", label([12, 200]))
    with pytest.raises(DataError, match=r"0001TP_000001\.png.*12, 200"):
        train.load(1)
    (tmp_path / "valannot" / "0001TP_000002.png").rename(tmp_path / "valannot" / "other.png")
    with pytest.raises(LayoutError, match="0001TP_000002"):
        CamVid(tmp_path, "val")
    kinds = sorted(p.kind for p in CamVid(tmp_path, "val", strict=False).layout_problems)
    assert kinds == ["image_without_mask", "mask_without_image"]


@pytest.mark.skipif(not SHARED_CAMVID.is_dir(), reason="shared CamVid copy not present")
def test_camvid_shared_copy():
    train = build_dataset("camvid", SHARED_CAMVID, "train")
    val = build_dataset("camvid", SHARED_CAMVID, "val")
    assert len(train) == 367 and len(val) == 101
    sample = train[0]
    assert sample["image"].shape == (360, 480, 3) and sample["image"].dtype == np.uint8
    assert sample["mask"].shape == (360, 480) and sample["mask"].dtype == np.uint8
    values = set(np.unique(sample["mask"]).tolist())
    assert values <= set(range(11)) | {255} and 255 in values


# -- folder data set --------------------------------------------------------------------------------------------

CLASSES_YAML = """\
classes:
  - {name: road, color: [128, 64, 128]}
  - {name: pothole, color: [255, 0, 0]}
  - crack
ignore_index: 255
ignore_color: [255, 255, 255]
"""


def make_folder(root: Path, classes_yaml: str = CLASSES_YAML) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text(classes_yaml)
    save(root / "images" / "train" / "city" / "a.jpg", photo(1))
    save(root / "masks" / "train" / "city" / "a.png", label([0, 1, 2, 255]))
    save(root / "images" / "train" / "b.png", photo(2))
    write_mask_png(root / "masks" / "train" / "b.png", label([2, 1]), [(9, 9, 9)] * 3)  # palette: indices count
    return root


def test_folder_index_masks(tmp_path):
    make_folder(tmp_path)
    save(tmp_path / "images" / "train" / ".ipynb_checkpoints" / "b-checkpoint.png", photo())  # hidden: no sample
    (tmp_path / "images" / "train" / "notes.txt").write_text("not an image")
    data = build_dataset("folder", tmp_path, "train")
    assert data.info.classes == ("road", "pothole", "crack") and data.info.ignore_index == 255
    assert data.info.palette[2] == default_palette(3)[2]  # no colour given: the default palette's
    assert [s.name for s in data.samples] == ["b", "city/a"]
    assert data.load(1)[1].flat[:4].tolist() == [0, 1, 2, 255]
    assert data.load(0)[1].flat[:2].tolist() == [2, 1]
    save(tmp_path / "masks" / "train" / "b.png", label([3, 7]))
    with pytest.raises(DataError, match=r"b\.png.*3, 7"):
        data.load(0)


def test_folder_rgb_masks_through_colours(tmp_path):
    make_folder(tmp_path)
    colours = np.zeros((H, W, 3), np.uint8)
    colours[:] = (128, 64, 128)
    colours[0, 0] = (255, 0, 0)
    colours[0, 1] = default_palette(3)[2]
    colours[0, 2] = (255, 255, 255)  # ignore_color
    save(tmp_path / "masks" / "train" / "b.png", colours)
    mask = build_dataset("folder", tmp_path, "train").load(0)[1]
    assert mask.flat[:4].tolist() == [1, 2, 255, 0]
    colours[1, 1] = (1, 2, 3)
    save(tmp_path / "masks" / "train" / "b.png", colours)
    with pytest.raises(DataError, match=r"b\.png.*\(1, 2, 3\)"):
        build_dataset("folder", tmp_path, "train")[0]


def test_folder_wide_class_tables_use_int32(tmp_path):
    names = "\n".join(f"  - c{i}" for i in range(300))
    make_folder(tmp_path, f"classes:\n{names}\nignore_index: 1000\n")
    save(tmp_path / "masks" / "train" / "b.png", label([299, 1000, 5], dtype=np.uint16))
    data = build_dataset("folder", tmp_path, "train")
    mask = data.load(0)[1]
    assert mask.dtype == np.int32 and mask.flat[:3].tolist() == [299, 1000, 5]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("classes: [a, b]\nignore_idx: 3\n", "unknown key.*'ignore_idx'"),
        ("classes: []\n", "key 'classes'"),
        ("classes: [{name: a, color: [1, 2]}]\n", r"key 'classes\[0\]\.color'"),
        ("classes: [{name: a, color: [1, 2, 300]}]\n", r"key 'classes\[0\]\.color'"),
        ("classes: [a, a]\n", r"key 'classes\[1\]\.name'.*unique"),
        ("classes: [{name: a, colour: [1, 2, 3]}]\n", r"key 'classes\[0\]'.*'colour'"),
        ("classes: [a, b]\nignore_index: 1\n", "key 'ignore_index'"),
        ("classes: [{name: a, color: [0, 0, 0]}]\nignore_color: [0, 0, 0]\n", "key 'ignore_color'.*'a'"),
        ("classes: [a\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_classes_yaml_errors_name_file_and_key(tmp_path, text, pattern):
    make_folder(tmp_path, text)
    with pytest.raises(LayoutError, match=pattern) as caught:
        build_dataset("folder", tmp_path, "train")
    assert str(tmp_path / "classes.yaml") in str(caught.value) and caught.value.kind == "bad_classes_file"


def test_folder_missing_classes_file_and_unlabelled_split(tmp_path):
    make_folder(tmp_path)
    save(tmp_path / "images" / "predict" / "c.webp", photo())
    unlabelled = build_dataset("folder", tmp_path, "predict")
    assert len(unlabelled) == 1 and unlabelled[0]["mask"] is None
    (tmp_path / "classes.yaml").unlink()
    with pytest.raises(LayoutError, match=r"classes\.yaml") as caught:
        build_dataset("folder", tmp_path, "train")
    assert caught.value.kind == "missing_classes_file"


def test_bad_files_raise_data_error_at_load(tmp_path):
    make_folder(tmp_path)
    data = FolderDataset(tmp_path, "train")
    path = tmp_path / "images" / "train" / "city" / "a.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=f"{path}.*truncated"):
        data[1]
    save(tmp_path / "masks" / "train" / "b.png", label([0], h=H + 1))
    with pytest.raises(DataError, match=r"b\.png is 6x8.*b\.png is 7x8"):
        data[0]


# -- samples, seeds, batches ------------------------------------------------------------------------------------


def draw(image, mask, rng):
    return image, rng.random(4)


def test_getitem_rng_depends_on_seed_epoch_and_index_only(tmp_path):
    make_camvid(tmp_path)
    data = build_dataset("camvid", tmp_path, "train", transform=draw, seed=3)
    first = data[1]["mask"]
    assert (data[1]["mask"] == first).all()
    assert (first == np.random.default_rng([3, 0, 1]).random(4)).all()
    assert not np.allclose(data[2]["mask"], first)
    data.set_epoch(1)
    assert data.epoch == 1 and not np.allclose(data[1]["mask"], first)
    data.set_epoch(0)
    assert (data[-2]["mask"] == first).all() and data[-2]["index"] == 1
    other = build_dataset("camvid", tmp_path, "train", transform=draw, seed=4)
    assert not np.allclose(other[1]["mask"], first)
    # the same draws through DataLoader workers
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=2)
    through_workers = [item["mask"] for item in loader]
    assert all(np.allclose(a, data[i]["mask"]) for i, a in enumerate(through_workers))


def test_collate(tmp_path):
    make_camvid(tmp_path)
    data = build_dataset("camvid", tmp_path, "train")
    batch = collate([data[0], data[2]])
    assert batch["image"].shape == (2, 3, H, W) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (2, H, W) and batch["mask"].dtype == torch.int64
    assert batch["name"] == ["0001TP_000000", "0001TP_000002"] and batch["index"].tolist() == [0, 2]
    assert (batch["image"][1] == torch.from_numpy(data[2]["image"]).permute(2, 0, 1)).all()
    odd = dict(data[1], image=photo(h=H + 2), mask=label([0], h=H + 2))
    with pytest.raises(ValueError, match=r"differ in size.*0001TP_000001 \(8, 8\)"):
        collate([data[0], odd])
