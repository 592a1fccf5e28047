"""Image sources and in-memory caching (crops and the SR degradation are in ``transforms``).

Images are float32 torch tensors, RGB, values in [0, 1], ``3 x H x W`` (or ``N x 3 x H x W`` for batches)
at every public boundary. Sources: files (:func:`load_image`), folders (:func:`folder_images`) and photos
that ship inside scikit-image's wheel (:func:`sample_images`; nothing is downloaded).

Decoded images are cached for the life of the process and the same tensor objects are returned on every
call, so a sweep of many trials decodes each image once. Callers must not modify them in place.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import LayersearchError
from ..settings import DataSettings

__all__ = [
    "IMAGE_EXTENSIONS",
    "SAMPLE_NAMES",
    "SAMPLE_STYLE",
    "SAMPLE_TRAIN",
    "SAMPLE_VAL",
    "DataError",
    "clear_cache",
    "folder_images",
    "load_image",
    "load_split",
    "sample_image",
    "sample_images",
]


class DataError(LayersearchError, ValueError):
    """Bad data input: an unreadable image, a missing or empty folder, images too small for the crop."""


# --------------------------------------------------------------------------------------------------------
# Decoding


#: File extensions :func:`folder_images` picks up (compared case-insensitively).
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_bit_depth(path: Path) -> int | None:
    """Bit depth from a PNG's IHDR chunk, or None when the file is not a PNG."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24]


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    # Pillow silently fills a truncated file's missing rows with black when this global flag is set
    # (some libraries set it); a half-decoded training image is worse than an error, so force it off.
    from PIL import ImageFile

    saved = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(path: Path) -> np.ndarray:
    """The first frame of ``path`` as decoded by its library, any dtype and channel layout."""
    if _png_bit_depth(path) == 16:
        # Pillow (and so imageio) reduces 16-bit colour PNGs to 8 bits; libpng via torchvision keeps them.
        from torchvision.io import ImageReadMode, decode_png, read_file

        return decode_png(read_file(str(path)), mode=ImageReadMode.UNCHANGED).permute(1, 2, 0).numpy()
    import imageio.v3 as iio

    if path.suffix.lower() in (".tif", ".tiff"):
        # tifffile's ``index`` selects a series (all pages stacked); ``page`` selects one page.
        return np.asarray(iio.imread(path, page=0))
    return np.asarray(iio.imread(path, index=0))


def _to_rgb(array: np.ndarray, what: str) -> torch.Tensor:
    """``H x W [x C]`` array of any common dtype -> ``3 x H x W`` float32 tensor in [0, 1]."""
    a = np.asarray(array)
    # Planar images (e.g. some TIFFs) come channels-first.
    if a.ndim == 3 and a.shape[0] <= 4 < a.shape[-1]:
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or not 1 <= a.shape[-1] <= 4:
        raise DataError(f"cannot read image {what}: unsupported array shape {a.shape}")
    # Drop alpha (LA, RGBA) without compositing: a training image has no background to composite onto.
    a = a[..., :1] if a.shape[-1] <= 2 else a[..., :3]
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / np.float32(255)
    elif a.dtype == np.uint16:
        a = a.astype(np.float32) / np.float32(65535)
    elif np.issubdtype(a.dtype, np.floating):
        a = np.clip(np.nan_to_num(a.astype(np.float32), nan=0.0), 0.0, 1.0)
    else:
        # int32 and friends have no agreed white level; guessing one would silently rescale the image.
        raise DataError(f"cannot read image {what}: unsupported pixel type {a.dtype}")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


def load_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read one image file as RGB.

    Grayscale is repeated to three channels; an alpha channel is dropped (no compositing is attempted);
    palette images are expanded to their colours; only the first frame of an animated or multi-page file
    is read. 8-bit values are divided by 255, 16-bit by 65535 (16-bit colour PNGs keep their 16 bits);
    float images are clipped to [0, 1]. EXIF orientation is not applied.

    Args:
        path: an image file (PNG, JPEG, BMP, TIFF, WebP, GIF, ...).

    Returns:
        ``3 x H x W`` float32 tensor in [0, 1].

    Raises:
        DataError: the file is missing, unreadable, truncated or not an image.
    """
    path = Path(path)
    try:
        with _strict_truncation():
            array = _decode(path)
    except DataError:
        raise
    except Exception as err:  # each decoder raises its own types: OSError, ValueError, RuntimeError, ...
        raise DataError(f"cannot read image {path}: {_reason(err)}") from err
    return _to_rgb(array, str(path))


def _reason(err: Exception) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file"
    if isinstance(err, IsADirectoryError):
        return "is a directory"
    text = str(err).strip()
    # imageio's wording for "no plugin could decode it", followed by lines of plugin advice.
    if text.startswith("Could not find a backend"):
        return "not a supported image format, or the file is corrupt"
    line = text.splitlines()[0] if text else type(err).__name__
    # torchvision prefixes its C++ source location: "decode_png, /path/decode_png.cpp:79, Out of bound ...".
    line = re.sub(r"^.*\.cpp:\d+, ", "", line)
    return line[:200]


# --------------------------------------------------------------------------------------------------------
# Caching: one decode per file (or sample) per process.

_FILE_CACHE: dict[str, tuple[int, int, torch.Tensor]] = {}  # resolved path -> (mtime_ns, size, image)
_SAMPLE_CACHE: dict[str, torch.Tensor] = {}


def clear_cache() -> None:
    """Forget every decoded image (frees the memory; the next call decodes again)."""
    _FILE_CACHE.clear()
    _SAMPLE_CACHE.clear()


def _cached_file(path: Path) -> torch.Tensor:
    # Keyed on mtime and size too, so an image edited while the process runs is read again.
    st = path.stat()
    key = str(path.resolve())
    hit = _FILE_CACHE.get(key)
    if hit is not None and hit[:2] == (st.st_mtime_ns, st.st_size):
        return hit[2]
    image = load_image(path)
    _FILE_CACHE[key] = (st.st_mtime_ns, st.st_size, image)
    return image


def folder_images(directory: str | os.PathLike[str]) -> list[tuple[str, torch.Tensor]]:
    """All images under ``directory``, recursively, sorted by relative path.

    Files whose extension is not in :data:`IMAGE_EXTENSIONS` are ignored, as are hidden files and folders
    (names starting with ``.``, e.g. macOS ``._x.png`` resource forks). Results are cached per file
    (path, modification time, size); the returned tensors are shared and must not be modified in place.

    Args:
        directory: the folder to scan.

    Returns:
        ``(name, image)`` pairs; ``name`` is the posix path relative to ``directory``, ``image`` is
        ``3 x H x W`` float32 RGB in [0, 1].

    Raises:
        DataError: the folder does not exist, holds no images, or an image cannot be read.
    """
    root = Path(directory)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise DataError(f"image folder {root} is not a directory")
    files = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
            files.append((rel.as_posix(), p))
    if not files:
        raise DataError(f"no images in folder {root} (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    files.sort(key=lambda item: item[0])
    return [(name, _cached_file(p)) for name, p in files]


# --------------------------------------------------------------------------------------------------------
# Samples shipped inside scikit-image's wheel (skimage/data/*.png|jpg): available offline, no pooch.


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()

    return load


def _motorcycle_left() -> np.ndarray:
    import skimage.data

    return skimage.data.stereo_motorcycle()[0]


# name -> loader. Sizes (H x W) noted for choosing crops; all RGB unless marked grey.
_SAMPLES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),  # 512 x 512, portrait (Eileen Collins)
    "rocket": _skimage("rocket"),  # 427 x 640, launch pad, sky
    "motorcycle_left": _motorcycle_left,  # 500 x 741, motorcycle in a workshop (left stereo view)
    "immunohistochemistry": _skimage("immunohistochemistry"),  # 512 x 512, stained tissue micrograph
    "retina": _skimage("retina"),  # 1411 x 1411, fundus photograph, black corners
    "hubble_deep_field": _skimage("hubble_deep_field"),  # 872 x 1000, galaxies on black
    "chelsea": _skimage("chelsea"),  # 300 x 451, cat
    "coffee": _skimage("coffee"),  # 400 x 600, coffee cup on a table
    "gravel": _skimage("gravel"),  # 512 x 512, grey texture
    "brick": _skimage("brick"),  # 512 x 512, grey texture
    "grass": _skimage("grass"),  # 512 x 512, grey texture
}

#: Training split of the bundled samples: six colour images of different kinds (portrait, outdoor scene,
#: indoor object, micrograph, fundus photograph, telescope image) so that crops vary.
SAMPLE_TRAIN: tuple[str, ...] = (
    "astronaut",
    "rocket",
    "motorcycle_left",
    "immunohistochemistry",
    "retina",
    "hubble_deep_field",
)
#: Validation split: two everyday colour photos that are not in the training split (the smallest is
#: 300 x 451, so validation crops up to 300 px fit).
SAMPLE_VAL: tuple[str, ...] = ("chelsea", "coffee")
#: Images usable as a style image: three grey textures (loaded as grey RGB) and one colour image. A style
#: image is only a loss target, so its also being a training content image (hubble_deep_field) is harmless.
SAMPLE_STYLE: tuple[str, ...] = ("gravel", "brick", "grass", "hubble_deep_field")
#: Every valid sample name.
SAMPLE_NAMES: tuple[str, ...] = tuple(_SAMPLES)


def sample_image(name: str) -> torch.Tensor:
    """One of scikit-image's bundled images (see :data:`SAMPLE_NAMES`), converted like :func:`load_image`.

    Cached: the same tensor object is returned on every call; do not modify it in place.

    Returns:
        ``3 x H x W`` float32 RGB in [0, 1] (grey samples repeated to three channels).

    Raises:
        DataError: ``name`` is not a known sample; the message lists the valid names.
    """
    image = _SAMPLE_CACHE.get(name)
    if image is None:
        if name not in _SAMPLES:
            raise DataError(f"unknown sample image {name!r}; choose from: {', '.join(SAMPLE_NAMES)}")
        image = _to_rgb(_SAMPLES[name](), f"sample:{name}")
        _SAMPLE_CACHE[name] = image
    return image


def sample_images(names: Sequence[str]) -> list[tuple[str, torch.Tensor]]:
    """``(name, image)`` pairs for ``names`` (e.g. :data:`SAMPLE_TRAIN`); see :func:`sample_image`."""
    if isinstance(names, str):  # a lone name would otherwise be split into letters
        names = [names]
    unknown = [n for n in names if n not in _SAMPLES]
    if unknown:
        raise DataError(f"unknown sample image(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(SAMPLE_NAMES)}")
    if not names:
        raise DataError(f"no sample images requested; choose from: {', '.join(SAMPLE_NAMES)}")
    return [(n, sample_image(n)) for n in names]


def load_split(data: DataSettings, split: str) -> list[tuple[str, torch.Tensor]]:
    """The ``train`` or ``val`` images described by the ``data`` settings (``conf/data/``).

    ``source: samples`` reads ``data.train`` / ``data.val`` (sample names; null means :data:`SAMPLE_TRAIN` /
    :data:`SAMPLE_VAL`); ``source: folder`` reads ``data.train_dir`` / ``data.val_dir`` with
    :func:`folder_images`.

    Raises:
        DataError: unknown source, a folder not given, or any error of the source itself.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    source = data.source
    if source == "samples":
        names = data.train if split == "train" else data.val
        return sample_images(list(names) if names is not None else (SAMPLE_TRAIN if split == "train" else SAMPLE_VAL))
    if source == "folder":
        directory = data.train_dir if split == "train" else data.val_dir
        if directory is None:
            raise DataError(f"data.{split}_dir is not set: pass data.{split}_dir=/path/to/images")
        return folder_images(str(directory))
    raise DataError(f"unknown data.source {source!r}; choose from: samples, folder")


