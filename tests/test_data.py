"""Tests of hwlearn.data: image loading, preprocessing, label files, folders, datasets, batching."""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import torch
from PIL import Image

from hwlearn.data import (
    ImageScan,
    LabeledImages,
    UnlabeledImages,
    WidthBucketSampler,
    augment_real,
    augment_real_strong,
    collate,
    check_labeled,
    for_augmenting,
    load_image,
    load_labeled,
    paper_level,
    read_labels,
    image_problem,
    scan_images,
    to_model_input,
)
from hwlearn.errors import HwlearnError

H, W = 24, 60
INK = (slice(8, 16), slice(10, 50))  # a dark bar where the "word" is


def ink_mask() -> np.ndarray:
    mask = np.zeros((H, W), bool)
    mask[INK] = True
    return mask


def word_image(ink: int = 20, paper: int = 235) -> np.ndarray:
    """A uint8 test image: a dark bar (ink) on light paper."""
    img = np.full((H, W), paper, np.uint8)
    img[INK] = ink
    return img


def assert_dark_ink(img: np.ndarray) -> None:
    assert img.dtype == np.uint8 and img.shape == (H, W)
    mask = ink_mask()
    assert img[mask].mean() < 80, "ink should be dark"
    assert img[~mask].mean() > 180, "paper should be light"


# ---- load_image: every mode and format -------------------------------------------------------


def made(array: np.ndarray, mode: str) -> Image.Image:
    """A Pillow image of ``mode`` holding ``array``'s bytes (native byte order)."""
    return Image.frombytes(mode, (array.shape[1], array.shape[0]), np.ascontiguousarray(array).tobytes())


def _rgba() -> Image.Image:
    # transparent *black* background: only compositing on white makes it paper
    a = np.zeros((H, W, 4), np.uint8)
    a[INK] = (10, 20, 30, 255)
    return made(a, "RGBA")


def _la() -> Image.Image:
    a = np.zeros((H, W, 2), np.uint8)
    a[INK] = (0, 255)
    return made(a, "LA")


def _palette() -> Image.Image:
    im = made(word_image(), "L").convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return im


def _palette_transparent() -> Image.Image:
    idx = np.where(ink_mask(), 1, 0).astype(np.uint8)
    im = made(idx, "P")
    im.putpalette([0, 0, 0, 30, 30, 90] + [0, 0, 0] * 254)  # index 0 (background) is black...
    im.info["transparency"] = 0  # ...but transparent
    return im


def _i16() -> Image.Image:
    a = np.full((H, W), 50000, np.uint16)
    a[INK] = 3000
    return made(a, "I;16")


def _i32() -> Image.Image:
    a = np.full((H, W), 900_000, np.int32)
    a[INK] = -5
    return made(a, "I")


def _float() -> Image.Image:
    a = np.full((H, W), 0.8, np.float32)
    a[INK] = 0.1
    return made(a, "F")


def _cmyk() -> Image.Image:
    a = np.zeros((H, W, 4), np.uint8)
    a[INK] = (0, 0, 0, 240)  # black ink: key channel
    return made(a, "CMYK")


def _bilevel() -> Image.Image:
    return made(word_image(ink=0, paper=255), "L").convert("1")


def _gray() -> Image.Image:
    return made(word_image(), "L")


def _rgb() -> Image.Image:
    return made(np.stack([word_image()] * 3, -1), "RGB")


CASES = [
    ("rgba.png", _rgba),
    ("la.png", _la),
    ("palette.png", _palette),
    ("palette_transparent.png", _palette_transparent),
    ("i16.png", _i16),
    ("i16.tif", _i16),
    ("i32.tif", _i32),
    ("float.tif", _float),
    ("cmyk.jpg", _cmyk),
    ("cmyk.tiff", _cmyk),
    ("bilevel.png", _bilevel),
    ("bilevel.bmp", _bilevel),
    ("gray.jpg", _gray),
    ("gray.jpeg", _gray),
    ("gray.tif", _gray),
    ("gray.bmp", _gray),
    ("gray.webp", _gray),
    ("rgb.webp", _rgb),
    ("rgba.webp", _rgba),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_load_image_every_mode_gives_dark_ink_uint8(tmp_path, name, make):
    path = tmp_path / name
    im = make()
    im.save(path, **({"quality": 95} if name.endswith((".jpg", ".jpeg")) else {}))
    assert_dark_ink(load_image(path))


def test_load_image_scales_16_bit_by_range(tmp_path):
    _i16().save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    assert img[ink_mask()].max() == 0 and img[~ink_mask()].min() == 255


def test_load_image_applies_exif_orientation(tmp_path):
    im = _gray()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    im.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "photo.jpg").shape == (W, H)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.png", b"", "empty file"),
        ("garbage.png", b"this is not an image at all" * 10, "not a recognized image format"),
    ],
)
def test_load_image_bad_files_raise_naming_the_file(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(HwlearnError) as exc:
        load_image(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: cannot read image (") and reason in message
    assert "\n" not in message


def test_load_image_truncated_and_missing(tmp_path):
    good = tmp_path / "good.png"
    _gray().save(good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(HwlearnError, match="truncated.png: cannot read image"):
        load_image(truncated)
    with pytest.raises(HwlearnError, match=r"missing.png: cannot read image \(no such file\)"):
        load_image(tmp_path / "missing.png")


# ---- to_model_input --------------------------------------------------------------------------


def test_to_model_input_shape_polarity_and_range():
    x = to_model_input(word_image(), 32)
    assert x.dtype == torch.float32 and x.shape == (1, 32, round(W * 32 / H))
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    centre = x[0, 14:18, 20:60]  # inside the bar after scaling by 32/24
    assert float(centre.min()) > 0.95
    assert float(x[0, :5].max()) < 0.05 and float(x[0, -5:].max()) < 0.05  # paper rows


def test_to_model_input_makes_faint_and_dark_ink_alike():
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 2, (H, W))
    dark = np.clip(word_image(ink=5, paper=250) + noise, 0, 255).astype(np.uint8)
    faint = np.clip(word_image(ink=150, paper=205) + noise, 0, 255).astype(np.uint8)
    a, b = to_model_input(dark, 32), to_model_input(faint, 32)
    assert a.shape == b.shape
    assert float((a - b).abs().mean()) < 0.03
    raw_gap = abs((255 - dark.astype(float)) / 255 - (255 - faint.astype(float)) / 255).mean()
    assert raw_gap > 0.1  # without the stretch they would differ a lot


def test_to_model_input_does_not_turn_blank_paper_noise_into_ink():
    rng = np.random.default_rng(1)
    blank = np.clip(rng.normal(240, 3, (H, W)), 0, 255).astype(np.uint8)
    assert float(to_model_input(blank, 32).max()) < 0.4


def test_to_model_input_pads_narrow_images_and_rejects_bad_arrays():
    narrow = word_image()[:, 10:14]  # 4 columns of ink
    x = to_model_input(narrow, 32)
    assert x.shape == (1, 32, 16)
    assert float(x[0, :, 6:].max()) == 0.0  # right padding is paper
    with pytest.raises(ValueError):
        to_model_input(word_image().astype(np.float32), 32)
    with pytest.raises(ValueError):
        to_model_input(np.zeros((0, 5), np.uint8), 32)


# ---- label files -----------------------------------------------------------------------------


def test_read_labels_tsv_relative_absolute_spaces_umlauts(tmp_path):
    nfd = unicodedata.normalize("NFD", "Köln Süd")
    absolute = tmp_path / "elsewhere" / "abs.png"
    (tmp_path / "labels").mkdir()
    label_file = tmp_path / "labels" / "train.tsv"
    label_file.write_text(
        f"path\ttext\r\nimg/a b.png\t{nfd}\r\n\r\n{absolute}\t  Straße \r\n", encoding="utf-8"
    )
    items = read_labels(label_file)
    assert items == [
        (tmp_path / "labels" / "img" / "a b.png", "Köln Süd"),
        (absolute, "Straße"),
    ]
    assert items[0][1] == unicodedata.normalize("NFC", "Köln Süd")


def test_read_labels_detects_tsv_in_txt_and_reports_bad_line(tmp_path):
    good = tmp_path / "gt.txt"
    good.write_text("a.png\tone\nb.png\ttwo\n", encoding="utf-8")
    assert [t for _, t in read_labels(good)] == ["one", "two"]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a.png\tone\nb.png\ttwo\nc.png three\n", encoding="utf-8")
    with pytest.raises(HwlearnError) as exc:
        read_labels(bad)
    assert str(exc.value).startswith(f"{bad}: line 3: expected 2 tab-separated columns")
    empty_text = tmp_path / "empty_text.tsv"
    empty_text.write_text("a.png\tone\nb.png\t \n", encoding="utf-8")
    with pytest.raises(HwlearnError, match="line 2: empty text"):
        read_labels(empty_text)


def test_read_labels_csv_with_header_and_quoting(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text(
        'image,text\n"scans/page 1.png","Smith, J."\nb.png,"He said ""hi"""\nc.png,Grüße\n', encoding="utf-8"
    )
    assert read_labels(f) == [
        (tmp_path / "scans" / "page 1.png", "Smith, J."),
        (tmp_path / "b.png", 'He said "hi"'),
        (tmp_path / "c.png", "Grüße"),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("a.png,x\nb.png,y,z\n", encoding="utf-8")
    with pytest.raises(HwlearnError, match=r"bad.csv: line 2: expected 2 comma-separated columns"):
        read_labels(bad)


IAM = """#--- words.txt ---------------------------------------------------------------#
#
# format: a01-000u-00-00 ok 154 1 408 768 27 51 AT A
#
a01-000u-00-00 ok 154 408 768 27 51 AT A
a01-000u-00-01 ok 154 507 766 213 48 NN MOVE
a01-000u-01-02 err 156 395 932 441 59 VB to
"""


def test_read_labels_iam_words_txt(tmp_path):
    f = tmp_path / "words.txt"
    f.write_text(IAM, encoding="ascii")
    items = read_labels(f)
    assert items[0] == (tmp_path / "words" / "a01" / "a01-000u" / "a01-000u-00-00.png", "A")
    assert [t for _, t in items] == ["A", "MOVE", "to"]
    assert [t for _, t in read_labels(f, ok_only=True)] == ["A", "MOVE"]


def test_read_labels_iam_download_layout_and_content_detection(tmp_path):
    (tmp_path / "ascii").mkdir()
    (tmp_path / "words").mkdir()
    f = tmp_path / "ascii" / "iam_words.txt"  # detected from the content, not the name
    f.write_text(IAM, encoding="ascii")
    assert read_labels(f)[1][0] == tmp_path / "words" / "a01" / "a01-000u" / "a01-000u-00-01.png"
    bad = tmp_path / "words.txt"
    bad.write_text(IAM + "a01-000u-02-00 maybe 1 2 3 4 5 X y\n", encoding="ascii")
    with pytest.raises(HwlearnError, match="words.txt: line 8: not an IAM words.txt line"):
        read_labels(bad)


def test_read_labels_file_errors(tmp_path):
    with pytest.raises(HwlearnError, match="nope.tsv: no such file"):
        read_labels(tmp_path / "nope.tsv")
    latin1 = tmp_path / "latin1.tsv"
    latin1.write_bytes("a.png\tKöln\n".encode("latin-1"))
    with pytest.raises(HwlearnError, match="latin1.tsv: not UTF-8 text"):
        read_labels(latin1)
    blank = tmp_path / "blank.tsv"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(HwlearnError, match="blank.tsv: empty file"):
        read_labels(blank)
    plain = tmp_path / "plain.txt"
    plain.write_text("just words\n", encoding="utf-8")
    with pytest.raises(HwlearnError, match="plain.txt: cannot tell the label format"):
        read_labels(plain)


# ---- scan_images -----------------------------------------------------------------------------


def test_scan_images_sorted_recursive_and_skips_unreadable(tmp_path):
    (tmp_path / "sub").mkdir()
    _gray().save(tmp_path / "b.png")
    _rgb().save(tmp_path / "sub" / "a.JPG")
    _gray().save(tmp_path / "a.tif")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (tmp_path / "empty.webp").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    scan = scan_images(tmp_path)
    assert isinstance(scan, ImageScan) and len(scan) == 3
    assert scan.paths == [tmp_path / "a.tif", tmp_path / "b.png", tmp_path / "sub" / "a.JPG"]
    skipped = dict(scan.skipped)
    assert set(skipped) == {tmp_path / "corrupt.png", tmp_path / "empty.webp"}
    assert skipped[tmp_path / "empty.webp"] == "empty file"


def test_scan_images_errors(tmp_path):
    with pytest.raises(HwlearnError, match="missing: no such directory"):
        scan_images(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(HwlearnError, match="no image files"):
        scan_images(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(HwlearnError, match="none of the 1 image files can be read"):
        scan_images(tmp_path)
    scan = scan_images(tmp_path, require_readable=False)  # recognize lists them with others' results
    assert scan.paths == [] and scan.skipped == [(tmp_path / "bad.png", image_problem(tmp_path / "bad.png"))]
    assert image_problem(tmp_path / "bad.png") == "not a recognized image format"
    _gray().save(tmp_path / "good.png")
    assert image_problem(tmp_path / "good.png") is None


# ---- datasets, collate, sampler --------------------------------------------------------------


def test_labeled_and_unlabeled_datasets(tmp_path):
    _gray().save(tmp_path / "w.png")
    wide = np.full((H, 3 * W), 240, np.uint8)
    wide[8:16, 5:170] = 30
    ds = LabeledImages([(tmp_path / "w.png", unicodedata.normalize("NFD", "Tür")), (wide, "wide")], 32)
    x, text = ds[0]
    assert x.shape == (1, 32, round(W * 32 / H)) and text == "Tür" and len(ds) == 2
    assert ds.widths() == [round(W * 32 / H), round(3 * W * 32 / H)] == [ds[i][0].shape[-1] for i in range(2)]
    un = UnlabeledImages([wide, str(tmp_path / "w.png")], 32)
    assert un[1][1] == 1 and torch.equal(un[1][0], x)


def test_dataset_augmentation_is_seeded_by_index_and_salt():
    ds = LabeledImages([(word_image(), "a"), (word_image(), "b")], 32, augment=augment_real, seed=3)
    a0, _ = ds.sample(0, salt=0)
    assert torch.equal(a0, ds.sample(0, salt=0)[0])
    assert not torch.equal(a0, ds.sample(0, salt=1)[0]) or a0.shape != ds.sample(0, salt=1)[0].shape
    ds.set_epoch(1)
    assert torch.equal(ds[0][0], ds.sample(0, salt=1)[0])


def test_images_taller_than_twice_the_model_height_are_augmented_at_that_height():
    tall = np.kron(word_image(), np.ones((4, 4), np.uint8))  # 96 x 240
    small = for_augmenting(tall, 16)
    assert small.shape == (32, 80) and small.dtype == np.uint8
    assert small[11:21, 14:66].mean() < 100 < min(small[:9].mean(), small[23:].mean())  # the bar where it was, scaled
    short = word_image()
    assert for_augmenting(short, 16) is short  # 24 rows: not more than 32, as it is
    ds = LabeledImages([(tall, "a")], 16, augment=augment_real_strong, seed=3)
    expected = to_model_input(augment_real_strong(small, np.random.default_rng([3, 0, 0])), 16)
    assert torch.equal(ds.sample(0, salt=0)[0], expected)
    from hwlearn.inference import AugmentedCopy  # the readings' augmented copies too

    copy = AugmentedCopy([tall], 16, lambda i, img: [5, i])
    assert torch.equal(torch.as_tensor(copy[0][0]), to_model_input(augment_real(small, np.random.default_rng([5, 0])), 16))


def test_dataset_bad_image_raises_hwlearn_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"nope")
    ds = UnlabeledImages([tmp_path / "bad.png"], 32)
    with pytest.raises(HwlearnError, match="bad.png: cannot read image"):
        ds[0]
    with pytest.raises(HwlearnError, match="bad.png: cannot read image"):
        ds.width_key(0)


def test_labeled_images_are_read_once_or_checked_and_every_unreadable_one_is_counted(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((8, 20), 200, np.uint8)).save(good)
    bad = [tmp_path / f"bad{i}.png" for i in range(5)]
    for path in bad:
        path.write_bytes(b"nope")
    items = [(good, "a")] + [(path, "b") for path in bad]
    images = load_labeled(items[:1], "l.tsv")
    assert len(images) == 1 and images[0].shape == (8, 20)
    check_labeled(items[:1], "l.tsv")
    message = (f"l.tsv: 5 of 6 labeled images cannot be read: {bad[0]} (not a recognized image format), {bad[1]} "
               f"(not a recognized image format), {bad[2]} (not a recognized image format) and 2 more "
               "(fix them or remove their lines)")
    for read in (load_labeled, check_labeled):
        with pytest.raises(HwlearnError) as err:
            read(items, "l.tsv")
        assert str(err.value) == message


def test_collate_pads_right_with_zero_and_returns_widths():
    a, b = torch.rand(1, 8, 5) + 0.1, torch.rand(1, 8, 9) + 0.1
    images, widths, extra = collate([(a, "x"), (b, "y")])
    assert images.shape == (2, 1, 8, 9) and widths.dtype == torch.long
    assert widths.tolist() == [5, 9] and extra == ["x", "y"]
    assert torch.equal(images[0, :, :, :5], a) and float(images[0, :, :, 5:].abs().sum()) == 0.0
    assert torch.equal(images[1], b)
    with pytest.raises(ValueError):
        collate([(a, 0), (torch.rand(1, 7, 5), 1)])


def _batch_spread(batches, widths) -> float:
    return float(np.mean([widths[b].max() - widths[b].min() for b in batches]))


def test_width_bucket_sampler_covers_each_index_once_and_groups_widths():
    rng = np.random.default_rng(0)
    widths = rng.integers(10, 1000, 997)
    sampler = WidthBucketSampler(widths, batch_size=16, seed=5, bucket_batches=4)
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 63
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(997))
        assert all(len(b) == 16 for b in batches[:-1] if len(b) != 997 % 16) and sum(len(b) < 16 for b in batches) == 1
        epochs.append(batches)
    assert epochs[0] != epochs[1]
    sampler.set_epoch(0)
    assert list(sampler) == epochs[0]  # deterministic per (seed, epoch)
    random_batches = [list(range(i, min(i + 16, 997))) for i in range(0, 997, 16)]
    assert _batch_spread(epochs[0], widths) < 0.15 * _batch_spread(random_batches, widths)


def test_width_bucket_sampler_drop_last_and_sorted_mode():
    widths = [5, 1, 4, 2, 3, 6, 7]
    sampler = WidthBucketSampler(widths, batch_size=3, shuffle=False, drop_last=True)
    assert list(sampler) == [[1, 3, 4], [2, 0, 5]] and len(sampler) == 2
    sampler = WidthBucketSampler(widths, batch_size=3, drop_last=True)
    assert len(list(sampler)) == 2 and all(len(b) == 3 for b in sampler)


@pytest.mark.parametrize("augment, slack", [(augment_real, (4, 16)), (augment_real_strong, (6, 22))])
def test_augment_real_is_deterministic_and_keeps_the_word(augment, slack):
    img = word_image()
    a = augment(img, np.random.default_rng([7, 1]))
    b = augment(img, np.random.default_rng([7, 1]))
    c = augment(img, np.random.default_rng([7, 2]))
    assert a.dtype == np.uint8 and a.ndim == 2
    assert np.array_equal(a, b) and not (a.shape == c.shape and np.array_equal(a, c))
    for seed in range(10):
        out = augment(img, np.random.default_rng(seed))
        assert abs(out.shape[0] - H) <= slack[0] and abs(out.shape[1] - W) <= slack[1]
        dark = (out < paper_level(out) - 40).sum()  # the bar keeps roughly its ink area (maybe fainter)
        assert 0.5 * ink_mask().sum() < dark < 2.0 * ink_mask().sum()
