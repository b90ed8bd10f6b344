import re

from conftest import SHARED

from pspnet.data.classes import DATASETS, dataset_for_classes, default_palette


def test_class_counts_and_palettes():
    assert {name: info.num_classes for name, info in DATASETS.items()} == {
        "ade20k": 150,
        "voc": 21,
        "cityscapes": 19,
        "camvid": 11,
    }
    for info in DATASETS.values():
        assert len(info.palette) == info.num_classes
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in info.palette)
        assert len(set(info.classes)) == info.num_classes
        assert info.ignore_index == 255


def test_voc_colour_map_hand_values():
    # The VOC colour map: background black, aeroplane (128,0,0), person = class 15 (192,128,128),
    # tvmonitor = class 20 (0,64,128).
    palette = default_palette(21)
    assert palette[0] == (0, 0, 0) and palette[1] == (128, 0, 0)
    assert palette[15] == (192, 128, 128) and palette[20] == (0, 64, 128)
    assert DATASETS["voc"].classes[15] == "person"
    assert len(set(default_palette(256))) == 256


def test_camvid_table_matches_the_shared_readme():
    text = (SHARED / "data" / "camvid" / "README.md").read_text()
    rows = re.findall(r"^\| (\d+) \| (\w+) \| (\d+),(\d+),(\d+) \|$", text, flags=re.MULTILINE)
    table = {int(i): (name, (int(r), int(g), int(b))) for i, name, r, g, b in rows if int(i) < 11}
    info = DATASETS["camvid"]
    assert [table[i][0] for i in range(11)] == list(info.classes)
    assert [table[i][1] for i in range(11)] == list(info.palette)


def test_known_entries():
    ade = DATASETS["ade20k"]
    assert ade.classes[:3] == ("wall", "building", "sky") and ade.classes[-1] == "flag"
    assert ade.palette[0] == (120, 120, 120)
    city = DATASETS["cityscapes"]
    assert city.classes[0] == "road" and city.palette[0] == (128, 64, 128)
    assert city.classes[18] == "bicycle" and city.palette[18] == (119, 11, 32)


def test_dataset_for_classes():
    assert dataset_for_classes(150).name == "ade20k"
    assert dataset_for_classes(19).name == "cityscapes"
    assert dataset_for_classes(7) is None
