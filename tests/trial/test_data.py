"""Image sources, conversions, caching (layersearch.trial.data), crops and the SR degradation
(layersearch.trial.transforms)."""

from __future__ import annotations

import math
import os
import struct
import zlib
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from layersearch.config import load_settings
from layersearch.settings import DataSettings
from layersearch.trial import data as D
from layersearch.trial import transforms as T
from layersearch.trial.data import DataError


def _chw(a: np.ndarray, white: float) -> torch.Tensor:
    """``H x W x C`` array -> the ``C x H x W`` float32 tensor load_image should give."""
    return torch.from_numpy(a.astype(np.float32) / np.float32(white)).permute(2, 0, 1)


def _write_png16(path: Path, a: np.ndarray) -> None:
    """Minimal 16-bit PNG encoder: Pillow (and so imageio) cannot write 16-bit colour PNGs."""
    h, w, c = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )


@pytest.fixture
def rgb8() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (12, 17, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------- load_image


def test_png_8bit_round_trip_exact(tmp_path, rgb8):
    iio.imwrite(tmp_path / "a.png", rgb8)
    img = D.load_image(tmp_path / "a.png")
    assert img.dtype == torch.float32 and img.shape == (3, 12, 17)
    assert torch.equal(img, _chw(rgb8, 255))


def test_grayscale_becomes_three_equal_channels(tmp_path, rgb8):
    gray = rgb8[..., 0]
    iio.imwrite(tmp_path / "g.png", gray)
    img = D.load_image(tmp_path / "g.png")
    assert img.shape == (3, 12, 17)
    for c in range(3):
        assert torch.equal(img[c], torch.from_numpy(gray.astype(np.float32) / 255))


def test_rgba_alpha_is_dropped_not_composited(tmp_path, rgb8):
    alpha = np.zeros(rgb8.shape[:2] + (1,), np.uint8)  # fully transparent: compositing would change colours
    iio.imwrite(tmp_path / "a.png", np.concatenate([rgb8, alpha], axis=-1))
    assert torch.equal(D.load_image(tmp_path / "a.png"), _chw(rgb8, 255))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_16bit_keeps_16_bits(tmp_path, channels):
    a = np.random.default_rng(1).integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    _write_png16(tmp_path / "d.png", a)
    expected = _chw(np.repeat(a, 3, axis=-1) if channels == 1 else a[..., :3], 65535)
    assert torch.equal(D.load_image(tmp_path / "d.png"), expected)


def test_palette_png_gives_palette_colours(tmp_path):
    im = Image.new("P", (3, 2))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    im.putdata([0, 1, 2, 2, 1, 0])
    im.save(tmp_path / "p.png")
    img = D.load_image(tmp_path / "p.png")
    red, green, blue = [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]
    expected = torch.tensor([[red, green, blue], [blue, green, red]]).permute(2, 0, 1)
    assert torch.equal(img, expected)


def test_jpeg_readable(tmp_path):
    smooth = np.linspace(0, 255, 32 * 32 * 3).reshape(32, 32, 3).astype(np.uint8)
    iio.imwrite(tmp_path / "a.JPG", smooth, quality=95)
    img = D.load_image(tmp_path / "a.JPG")
    assert img.shape == (3, 32, 32)
    assert (img - _chw(smooth, 255)).abs().mean() < 0.02


def test_animated_gif_first_frame(tmp_path):
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[0, ..., 0] = 255  # red, then blue
    frames[1, ..., 2] = 255
    iio.imwrite(tmp_path / "a.gif", frames)
    img = D.load_image(tmp_path / "a.gif")
    assert img.shape == (3, 4, 5)
    assert torch.equal(img, _chw(frames[0], 255))


def test_float_tiff_is_clipped(tmp_path):
    a = np.array([[[-0.5, 0.25, 1.5]]], np.float32).repeat(4, 0).repeat(5, 1)
    iio.imwrite(tmp_path / "f.tif", a)
    img = D.load_image(tmp_path / "f.tif")
    assert img.shape == (3, 4, 5)
    assert img[:, 0, 0].tolist() == [0.0, 0.25, 1.0]


@pytest.mark.parametrize("ext", ["png", "jpg"])
@pytest.mark.parametrize("lenient_pillow", [False, True])
def test_truncated_image_is_an_error(tmp_path, monkeypatch, ext, lenient_pillow):
    # Even when someone has told Pillow to accept truncated files, a half image must not be used.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", lenient_pillow)
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / f"full.{ext}", noise)
    blob = (tmp_path / f"full.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=r"cannot read image .*cut\." + ext):
        D.load_image(tmp_path / f"cut.{ext}")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is lenient_pillow  # restored


def test_truncated_16bit_png_is_an_error(tmp_path):
    _write_png16(
        tmp_path / "d.png", np.random.default_rng(3).integers(0, 65536, (64, 64, 3), dtype=np.uint16)
    )
    blob = (tmp_path / "d.png").read_bytes()
    (tmp_path / "d.png").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="cannot read image .*d.png"):
        D.load_image(tmp_path / "d.png")


@pytest.mark.parametrize("content", [b"not an image at all\n", b""])
def test_non_image_is_an_error(tmp_path, content):
    (tmp_path / "x.png").write_bytes(content)
    with pytest.raises(DataError, match="cannot read image .*x.png") as err:
        D.load_image(tmp_path / "x.png")
    assert "\n" not in str(err.value)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="cannot read image .*nope.png: no such file"):
        D.load_image(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------------- folder_images


def test_folder_images_recursive_sorted_filtered(tmp_path, rgb8):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    iio.imwrite(tmp_path / "b.png", rgb8)
    iio.imwrite(tmp_path / "a.JPEG", rgb8)
    iio.imwrite(tmp_path / "sub" / "c.bmp", rgb8[:5])
    iio.imwrite(tmp_path / ".hidden" / "d.png", rgb8)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "._b.png").write_bytes(b"macOS resource fork")
    got = D.folder_images(tmp_path)
    assert [name for name, _ in got] == ["a.JPEG", "b.png", "sub/c.bmp"]
    assert got[2][1].shape == (3, 5, 17)
    assert torch.equal(got[1][1], _chw(rgb8, 255))


def test_folder_images_cached_until_file_changes(tmp_path, rgb8):
    iio.imwrite(tmp_path / "a.png", rgb8)
    first = D.folder_images(tmp_path)[0][1]
    assert D.folder_images(str(tmp_path))[0][1] is first
    iio.imwrite(tmp_path / "a.png", 255 - rgb8)
    st = (tmp_path / "a.png").stat()
    os.utime(tmp_path / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = D.folder_images(tmp_path)[0][1]
    assert second is not first and torch.equal(second, _chw(255 - rgb8, 255))


def test_folder_images_missing_and_empty(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'missing'}.* does not exist"):
        D.folder_images(tmp_path / "missing")
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=f"no images in folder {tmp_path}.*\\.png, \\.jpg"):
        D.folder_images(tmp_path)


# ------------------------------------------------------------------------------------------------- samples


def test_sample_splits_disjoint_and_loadable():
    assert set(D.SAMPLE_TRAIN).isdisjoint(D.SAMPLE_VAL)
    assert len(D.SAMPLE_TRAIN) >= 4 and len(D.SAMPLE_VAL) >= 2
    for name, img in D.sample_images(D.SAMPLE_TRAIN + D.SAMPLE_VAL + D.SAMPLE_STYLE):
        assert img.dtype == torch.float32 and img.ndim == 3 and img.shape[0] == 3, name
        assert min(img.shape[1:]) >= 256, name
        assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0, name
    for name in D.SAMPLE_TRAIN + D.SAMPLE_VAL:  # colour photos, not grey ones
        img = D.sample_image(name)
        assert not torch.equal(img[0], img[1]), name
    gravel = D.sample_image("gravel")  # grey sample -> three equal channels
    assert torch.equal(gravel[0], gravel[1]) and torch.equal(gravel[1], gravel[2])


def test_unknown_sample_lists_names():
    with pytest.raises(DataError, match="unknown sample image 'lena'.*astronaut.*chelsea"):
        D.sample_image("lena")
    with pytest.raises(DataError, match="'lena'.*choose from"):
        D.sample_images(["chelsea", "lena"])


def test_samples_cached_identical_objects():
    first = D.sample_images(["chelsea"])[0][1]
    assert D.sample_image("chelsea") is first
    assert D.sample_images(D.SAMPLE_VAL)[0][1] is first


def test_load_split(tmp_path, rgb8):
    assert [n for n, _ in D.load_split(DataSettings(source="samples", on_device="auto", train=None, val=None),
                                       "val")] == list(D.SAMPLE_VAL)
    assert [n for n, _ in D.load_split(DataSettings(source="samples", on_device="auto", val=["coffee"]),
                                       "val")] == ["coffee"]
    iio.imwrite(tmp_path / "a.png", rgb8)
    # data=folder with data.val_dir left at conf's "???" (unset)
    folder = load_settings(["data=folder", f"data.train_dir={tmp_path}"]).data
    got = D.load_split(folder, "train")
    assert [n for n, _ in got] == ["a.png"]
    with pytest.raises(DataError, match="data.val_dir is not set"):
        D.load_split(folder, "val")
    with pytest.raises(DataError, match="unknown data.source 'web'"):
        D.load_split(DataSettings(source="web", on_device="auto"), "train")


# --------------------------------------------------------------------------------------------------- crops


def test_check_min_size_message():
    imgs = [
        ("ok.png", torch.zeros(3, 64, 64)),
        ("a.png", torch.zeros(3, 40, 30)),
        ("b.png", torch.zeros(3, 64, 10)),
    ]
    T.check_min_size(imgs[:1], 64, "the training set")  # no error
    with pytest.raises(DataError) as err:
        T.check_min_size(imgs, 64, "the training set")
    assert str(err.value).startswith(
        "2 images in the training set are smaller than the 64px crop: a.png (30x40), b.png (10x64)"
    )
    many = [(f"{i}.png", torch.zeros(3, 8, 8)) for i in range(7)]
    with pytest.raises(DataError, match="7 images .*4.png \\(8x8\\), and 2 more"):
        T.check_min_size(many, 16, "x")


def test_random_crops_windows_and_determinism():
    # Pixel values encode (image, row, column), so every crop can be located in its source image.
    images = [
        torch.arange(3 * 20 * 30, dtype=torch.float32).reshape(3, 20, 30) + k * 10_000 for k in range(2)
    ]
    crops = T.random_crops(images, 8, 64, torch.Generator().manual_seed(0))
    assert crops.shape == (64, 3, 8, 8)
    flipped = 0
    for crop in crops:
        k, rem = divmod(int(crop.min()), 10_000)
        y, x = divmod(rem, 30)
        window = images[k][:, y : y + 8, x : x + 8]
        if not torch.equal(crop, window):
            assert torch.equal(crop, window.flip(-1))
            flipped += 1
    assert 0 < flipped < 64
    assert {int(c.min()) // 10_000 for c in crops} == {0, 1}

    again = T.random_crops(images, 8, 64, torch.Generator().manual_seed(0))
    other = T.random_crops(images, 8, 64, torch.Generator().manual_seed(1))
    assert torch.equal(crops, again) and not torch.equal(crops, other)
    with pytest.raises(ValueError, match="smaller than the 32px crop"):
        T.random_crops(images, 32, 1, torch.Generator())


def test_center_crop_and_crop_to_multiple():
    img = torch.arange(3 * 10 * 13, dtype=torch.float32).reshape(3, 10, 13)
    assert T.center_crop(img, None) is img
    assert torch.equal(T.center_crop(img, 4), img[:, 3:7, 4:8])
    with pytest.raises(ValueError):
        T.center_crop(img, 11)
    cut = T.crop_to_multiple(img, 4)
    assert torch.equal(cut, img[:, :8, :12])
    assert T.crop_to_multiple(img[None], 5).shape == (1, 3, 10, 10)


# ----------------------------------------------------------------------------------------------- degrade


def test_degrade_shape_range_constant():
    hr = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    lr = T.degrade(hr, 4)
    assert lr.shape == (2, 3, 8, 12)
    assert float(lr.min()) >= 0.0 and float(lr.max()) <= 1.0
    assert T.degrade(hr[0], 2).shape == (3, 16, 24)
    const = torch.full((1, 3, 16, 16), 0.3)
    for sigma in (0.0, 1.0):
        torch.testing.assert_close(T.degrade(const, 4, sigma), torch.full((1, 3, 4, 4), 0.3))


def test_degrade_is_pil_bicubic():
    # The documented kernel: PIL's BICUBIC resize (Keys a=-0.5, antialiased) on float images.
    hr = torch.rand(1, 3, 24, 36, generator=torch.Generator().manual_seed(1))
    lr = T.degrade(hr, 4)
    for c in range(3):
        pil = Image.fromarray(hr[0, c].numpy(), mode="F").resize((9, 6), Image.BICUBIC)
        torch.testing.assert_close(lr[0, c], torch.from_numpy(np.array(pil)).clamp(0, 1), atol=1e-5, rtol=0)


def test_degrade_blur_kernel_as_documented():
    # With scale 1 only the blur acts; an impulse response is the 2-D kernel itself.
    sigma = 1.0
    k = 2 * math.ceil(3 * sigma) + 1
    hr = torch.zeros(1, 3, 15, 15)
    hr[..., 7, 7] = 1.0
    out = T.degrade(hr, 1, sigma)
    t = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    r = k // 2
    torch.testing.assert_close(out[0, 0, 7 - r : 7 + r + 1, 7 - r : 7 + r + 1], g[:, None] * g[None, :])
    assert float(out[0, 0, 0, 0]) == 0.0  # nothing beyond the 7x7 support


def test_degrade_blur_softens_edge():
    hr = torch.zeros(1, 3, 16, 16)
    hr[..., 8:] = 1.0  # sharp vertical edge between LR columns 1 and 2
    sharp, blurred = T.degrade(hr, 4), T.degrade(hr, 4, blur_sigma=1.0)
    # The blur carries more light across the edge: the dark LR column next to it gets brighter.
    assert float(blurred[0, 0, 0, 1]) > float(sharp[0, 0, 0, 1]) + 0.02
    assert float(blurred[0, 0, 0, 2]) < float(sharp[0, 0, 0, 2]) - 0.02


def test_degrade_rejects_bad_sizes():
    with pytest.raises(ValueError, match="not divisible by scale 4"):
        T.degrade(torch.zeros(1, 3, 30, 32), 4)
    with pytest.raises(ValueError):
        T.degrade(torch.zeros(1, 3, 32, 32), 4, blur_sigma=-1.0)
