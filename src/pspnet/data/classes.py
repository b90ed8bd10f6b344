"""Class names, palettes and inference defaults of the data sets pspnet knows by name.

One table for every module that needs them (converters, evaluation, prediction, training). Colours are RGB.
Sources: ADE20K SceneParsing 150-class list and its customary palette; Pascal VOC 2012 (21 classes with the VOC
colour map); Cityscapes 19 training ids with their official colours; CamVid 11 classes in the SegNet version.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DATASETS", "DatasetInfo", "dataset_for_classes", "default_palette"]

Color = tuple[int, int, int]


@dataclass(frozen=True)
class DatasetInfo:
    """Facts of one data set: class names, palette, ignore value and the official inference settings.

    ``crop_size`` is (height, width) of the sliding-window crop; ``base_size`` the long side images are resized to
    at scale 1.0 before inference (official test protocol).
    """

    name: str
    classes: tuple[str, ...]
    palette: tuple[Color, ...]
    crop_size: tuple[int, int]
    base_size: int
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def default_palette(num_classes: int) -> tuple[Color, ...]:
    """Distinct colours for ``num_classes`` classes: the Pascal VOC colour map (bit-interleaved class index).

    Class 0 is black; classes 1..20 get the VOC colours; works for any count up to 2**24.
    """
    colors = []
    for index in range(num_classes):
        r = g = b = 0
        code = index
        for bit in range(7, -1, -1):
            r |= (code & 1) << bit
            g |= ((code >> 1) & 1) << bit
            b |= ((code >> 2) & 1) << bit
            code >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def _hex_palette(text: str) -> tuple[Color, ...]:
    return tuple((int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)) for h in text.split())


_ADE20K_NAMES = """
wall building sky floor tree ceiling road bed windowpane grass cabinet sidewalk person earth door table mountain
plant curtain chair car water painting sofa shelf house sea mirror rug field armchair seat fence desk rock
wardrobe lamp bathtub railing cushion base box column signboard chest_of_drawers counter sand sink skyscraper
fireplace refrigerator grandstand path stairs runway case pool_table pillow screen_door stairway river bridge
bookcase blind coffee_table toilet flower book hill bench countertop stove palm kitchen_island computer
swivel_chair boat bar arcade_machine hovel bus towel light truck tower chandelier awning streetlight booth
television_receiver airplane dirt_track apparel pole land bannister escalator ottoman bottle buffet poster stage
van ship fountain conveyer_belt canopy washer plaything swimming_pool stool barrel basket waterfall tent bag
minibike cradle oven ball food step tank trade_name microwave pot animal bicycle lake dishwasher screen blanket
sculpture hood sconce vase traffic_light tray ashcan fan pier crt_screen plate monitor bulletin_board shower
radiator glass clock flag
"""

_ADE20K_PALETTE = """
787878 b47878 06e6e6 503232 04c803 787850 8c8c8c cc05ff e6e6e6 04fa07 e005ff ebff07 96053d 787846 08ff33 ff0652
8fff8c ccff04 ff3307 cc4603 0066c8 3de6fa ff0633 0b66ff ff0747 ff09e0 0907e6 dcdcdc ff095c 7009ff 08ffd6 07ffe0
ffb806 0aff47 ff290a 07ffff e0ff08 6608ff ff3d06 ffc207 ff7a08 00ff14 ff0829 ff0599 0633ff eb0cff a09614 00a3ff
8c8c8c fa0a0f 14ff00 1fff00 ff1f00 ffe000 99ff00 0000ff ff4700 00ebff 00adff 1f00ff 0bc8c8 ff5200 00fff5 003dff
00ff70 00ff85 ff0000 ffa300 ff6600 c2ff00 008fff 33ff00 0052ff 00ff29 00ffad 0a00ff adff00 00ff99 ff5c00 ff00ff
ff00f5 ff0066 ffad00 ff0014 ffb8b8 001fff 00ff3d 0047ff ff00cc 00ffc2 00ff52 000aff 0070ff 3300ff 00c2ff 007aff
00ffa3 ff9900 00ff0a ff7000 8fff00 5200ff a3ff00 ffeb00 08b8aa 8500ff 00ff5c b800ff ff001f 00b8ff 00d6ff ff0070
5cff00 00e0ff 70e0ff 46b8a0 a300ff 9900ff 47ff00 ff00a3 ffcc00 ff008f 00ffeb 85ff00 ff00eb f500ff ff007a fff500
0abed4 d6ff00 00ccff 1400ff ffff00 0099ff 0029ff 00ffcc 2900ff 29ff00 ad00ff 00f5ff 4700ff 7a00ff 00ffb8 005cff
b8ff00 0085ff ffd600 19c2c2 66ff00 5c00ff
"""

# The customary ADE20K palette gives "road" and "skyscraper" the same grey (140, 140, 140); it is kept as it is so
# that pictures match the ones people know.
ADE20K = DatasetInfo(
    name="ade20k",
    classes=tuple(name.replace("_", " ") for name in _ADE20K_NAMES.split()),
    palette=_hex_palette(_ADE20K_PALETTE),
    crop_size=(473, 473),
    base_size=512,
)

VOC = DatasetInfo(
    name="voc",
    classes=(
        "background",
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ),
    palette=default_palette(21),
    crop_size=(473, 473),
    base_size=512,
)

CITYSCAPES = DatasetInfo(
    name="cityscapes",
    classes=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    palette=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),
    crop_size=(713, 713),
    base_size=2048,
)

CAMVID = DatasetInfo(
    name="camvid",
    classes=(
        "Sky",
        "Building",
        "Pole",
        "Road",
        "Pavement",
        "Tree",
        "SignSymbol",
        "Fence",
        "Car",
        "Pedestrian",
        "Bicyclist",
    ),
    palette=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    # Not in the paper: evaluated at its native 480x360 on the whole image.
    crop_size=(360, 480),
    base_size=480,
)

DATASETS: dict[str, DatasetInfo] = {info.name: info for info in (ADE20K, VOC, CITYSCAPES, CAMVID)}


def dataset_for_classes(num_classes: int) -> DatasetInfo | None:
    """The one known data set with exactly ``num_classes`` classes, or None when none or several match."""
    matches = [info for info in DATASETS.values() if info.num_classes == num_classes]
    return matches[0] if len(matches) == 1 else None
