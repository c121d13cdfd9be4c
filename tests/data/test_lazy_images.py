"""LazyImages / UInt8Images: numpy-like indexing, laziness through views, the atomic decoded cache."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from spurlab.data.lazy_images import DecodedCache, ImageTransform, LazyImages, UInt8Images, take_rows
from spurlab.errors import SpurlabError


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, size=(9, 11, 3), dtype=np.uint8)).save(path)
        out.append(path)
    return out


def test_indexing_matches_the_materialized_array(files):
    x = LazyImages(files, ImageTransform(8), workers=2)
    whole = np.asarray(x)
    assert x.shape == whole.shape == (12, 3, 8, 8) and x.dtype == whole.dtype == np.float32 and x.ndim == 4
    mask = np.arange(12) % 3 == 0
    for key in (5, -1, slice(2, 9, 3), [7, 0, 7], np.array([3, 4]), mask, (slice(None), 1, 2, 3)):
        np.testing.assert_array_equal(x[key], whole[key])
    with pytest.raises(IndexError):
        x[12]
    with pytest.raises(IndexError):
        x[np.ones(5, bool)]


def test_views_stay_lazy_and_share_the_counters(files):
    x = LazyImages(files, ImageTransform(8))
    view = take_rows(x, np.array([4, 2, 9]))
    assert isinstance(view, LazyImages) and len(view) == 3 and x.stats.decoded == 0
    np.testing.assert_array_equal(view[1:], LazyImages(files, ImageTransform(8))[[2, 9]])
    assert x.stats.decoded == 2 and view.stats is x.stats  # the view decodes through the split
    copy = pickle.loads(pickle.dumps(view))  # DataLoader workers get a working copy
    np.testing.assert_array_equal(copy[0], view[0])


def test_uint8_images_are_floats_per_batch():
    pixels = np.arange(2 * 3 * 2 * 2, dtype=np.uint8).reshape(2, 3, 2, 2)
    x = UInt8Images(pixels)
    np.testing.assert_allclose(x[:], pixels / 255.0)
    assert isinstance(x.select([1]), UInt8Images) and x.select([1]).uint8().tolist() == pixels[1:].tolist()
    with pytest.raises(SpurlabError, match="uint8"):
        UInt8Images(pixels.astype(np.float32))


def test_an_unfinished_cache_is_never_published(tmp_path):
    cache = DecodedCache(tmp_path / "c.u8", n=4, image_size=2)
    cache.write(np.array([0, 1]), np.ones((2, 3, 2, 2), np.uint8))
    assert not cache.complete and not (tmp_path / "c.u8").exists()
    cache.discard()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone
    cache = DecodedCache(tmp_path / "c.u8", n=4, image_size=2)
    cache.write(np.array([3, 1]), np.full((2, 3, 2, 2), 7, np.uint8))
    cache.write(np.array([0, 2]), np.full((2, 3, 2, 2), 9, np.uint8))
    assert cache.complete and [p.name for p in tmp_path.iterdir()] == ["c.u8"]
    assert cache.read(np.array([2, 3]))[:, 0, 0, 0].tolist() == [9, 7]
    assert DecodedCache(tmp_path / "c.u8", n=4, image_size=2).complete


def test_transform_options_are_checked():
    with pytest.raises(SpurlabError, match="parameter 'normalize' must be one of .*got 'imagenette'"):
        ImageTransform(8, normalize="imagenette")
    with pytest.raises(SpurlabError, match="parameter 'resize' must be one of"):
        ImageTransform(8, resize="stretch")
