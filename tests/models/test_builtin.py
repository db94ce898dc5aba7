"""The built-in model with its real weights, on real photos.

The model is built once per module. Its class-prompt cache lives in the default cache
directory (``CLIPSERVE_CACHE_DIR`` or ~/.cache/clipserve), so only the very first run on a
machine pays for the 1000-class prompt embeddings.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_images

from clipserve.errors import InvalidInputError
from clipserve.models.builtin.model import BUILTIN_NAME, BuiltinModel

pytestmark = pytest.mark.timeout(900)  # a cold cache on a busy CPU takes minutes


@pytest.fixture(scope="module")
def builtin_model() -> BuiltinModel:
    return BuiltinModel()


@pytest.fixture(scope="module")
def builtin_photos() -> dict[str, np.ndarray]:
    samples = load_sample_images()
    return {
        "cat": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "rocket": skimage.data.rocket(),
        "astronaut": skimage.data.astronaut(),
        "cameraman": skimage.data.camera(),  # greyscale [H, W]
        "temple": samples.images[0],
        "flower": samples.images[1],
        "motorcycle": skimage.data.stereo_motorcycle()[0],
        "clock": skimage.data.clock(),  # greyscale
    }


CAPTIONS = {
    "cat": "a photo of a cat",
    "coffee": "a cup of coffee",
    "rocket": "a rocket",
    "astronaut": "an astronaut",
    "cameraman": "a man with a camera",
    "temple": "a temple",
    "flower": "a flower",
    "motorcycle": "a motorcycle",
    "clock": "a clock",
}


def _ranking_report(names: list[str], captions: list[str], scores: np.ndarray) -> str:
    lines = []
    for name, row in zip(names, scores, strict=True):
        order = np.argsort(-row)[:3]
        best = ", ".join(f"{captions[i]!r} {row[i]:.3f}" for i in order)
        lines.append(f"{name:>11}: {best}")
    return "\n".join(lines)


def test_identity(builtin_model: BuiltinModel) -> None:
    assert builtin_model.name == BUILTIN_NAME == "builtin"
    assert builtin_model.dim == 384
    assert builtin_model.backend == "torch"


def test_right_caption_ranks_first_for_real_photos(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    names = list(builtin_photos)
    captions = [CAPTIONS[name] for name in names]
    images = builtin_model.encode_images([builtin_photos[name] for name in names])
    texts = builtin_model.encode_texts(captions)
    scores = images @ texts.T
    hits = int((scores.argmax(axis=1) == np.arange(len(names))).sum())
    assert hits >= len(names) - 1, f"{hits}/{len(names)} right:\n" + _ranking_report(
        names, captions, scores
    )


def test_crops_and_encoded_files_still_rank_right(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    crops = {
        "cat": builtin_photos["cat"][30:250, 100:330],
        "coffee": builtin_photos["coffee"][:, :400],
        "flower": builtin_photos["flower"][100:400, 150:550],
        "motorcycle": builtin_photos["motorcycle"][100:450, 150:650],
    }
    names = list(crops)
    files = [_png(crops[name]) for name in names]  # bytes path, not arrays
    images = builtin_model.encode_images(files)
    captions = [CAPTIONS[name] for name in CAPTIONS]
    scores = images @ builtin_model.encode_texts(captions).T
    best = [captions[i] for i in scores.argmax(axis=1)]
    assert best == [CAPTIONS[name] for name in names], _ranking_report(names, captions, scores)


def test_outputs_are_unit_float32(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    texts = builtin_model.encode_texts(["a dog", "", "ünïcödé — 猫 🐈"])
    images = builtin_model.encode_images([builtin_photos["cat"], builtin_photos["temple"]])
    for vectors, count in ((texts, 3), (images, 2)):
        assert vectors.dtype == np.float32
        assert vectors.shape == (count, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_text_embeddings_are_deterministic_and_padding_invariant(
    builtin_model: BuiltinModel,
) -> None:
    alone = builtin_model.encode_texts(["a cup of coffee"])
    again = builtin_model.encode_texts(["a cup of coffee"])
    long_text = "the quick brown fox jumps over the lazy dog " * 40
    batched = builtin_model.encode_texts([long_text, "a cup of coffee", "hi"])
    np.testing.assert_array_equal(alone, again)
    np.testing.assert_allclose(batched[1], alone[0], atol=1e-5)
    tokens = builtin_model.prepare_texts(["hi", "a slightly longer sentence here"])
    assert tokens.input_ids.shape[1] < 20  # padded to the batch's longest, not a fixed size


def test_megabyte_text_is_truncated(builtin_model: BuiltinModel) -> None:
    """(How long it takes: benchmarks/bench_responsiveness.py.)"""
    head = "a photo of a cat sitting on a mat. " * 20
    huge = head + "lorem ipsum " * 90_000  # > 1 MB
    vectors = builtin_model.encode_texts([huge, "short"])
    tokens = builtin_model.prepare_texts([huge])
    assert tokens.input_ids.shape[1] == 256
    # truncation keeps the start: same vector as the first 256 tokens' worth of text
    long_only_words = head * 10
    same_start = builtin_model.encode_texts([long_only_words + " more words" * 100_000])
    np.testing.assert_allclose(
        same_start[0], builtin_model.encode_texts([long_only_words])[0], atol=1e-5
    )
    one_giant_word = builtin_model.encode_texts(["x" * 1_000_000])  # one [UNK], not an error
    assert np.isfinite(vectors).all() and np.isfinite(one_giant_word).all()


def test_image_kinds_are_accepted(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    cat = builtin_photos["cat"]
    grey = skimage.data.camera()
    rgba = np.dstack([cat, np.full(cat.shape[:2], 255, dtype=np.uint8)])
    as_float = cat.astype(np.float32) / 255.0
    sources = [cat, grey, grey[:, :, None], rgba, as_float, _png(cat), _png(skimage.data.logo())]
    prepared = [builtin_model.prepare_image(source) for source in sources]
    for pixels in prepared:
        assert pixels.shape == (3, 224, 224) and pixels.dtype == np.float32
    vectors = builtin_model.forward_images(np.stack(prepared))
    # an opaque RGBA, a float tensor and a PNG of the cat all embed like the cat itself
    for index in (3, 4, 5):
        np.testing.assert_allclose(vectors[index], vectors[0], atol=1e-4)


def test_bad_images_raise_invalid_input(builtin_model: BuiltinModel) -> None:
    for bad in (b"", b"not an image", np.zeros((4, 4, 2), dtype=np.uint8)):
        with pytest.raises(InvalidInputError):
            builtin_model.prepare_image(bad)


def test_prepare_image_is_thread_safe(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    sources = [_png(photo) for photo in builtin_photos.values()] * 3
    expected = [builtin_model.prepare_image(source) for source in sources]
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(builtin_model.prepare_image, sources))
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_second_start_reuses_the_class_cache(builtin_model: BuiltinModel) -> None:
    cache_file = builtin_model.class_cache_file
    assert cache_file.is_file()
    written = cache_file.stat().st_mtime_ns
    second = BuiltinModel(cache_dir=builtin_model.cache_dir)
    assert second.class_cache_hit
    assert second.class_cache_file == cache_file
    assert cache_file.stat().st_mtime_ns == written  # read, not rewritten
    np.testing.assert_array_equal(
        second.encode_texts(["a rocket"]), builtin_model.encode_texts(["a rocket"])
    )


def test_other_backends_are_refused() -> None:
    with pytest.raises(ValueError, match="backend"):
        BuiltinModel(backend="tensorrt")


def test_onnx_backend_matches_torch(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    onnx_model = BuiltinModel(backend="onnx", cache_dir=builtin_model.cache_dir)
    assert onnx_model.backend == "onnx"
    texts = ["a photo of a cat", "hi", "the quick brown fox jumps over the lazy dog " * 60]
    np.testing.assert_allclose(
        onnx_model.encode_texts(texts), builtin_model.encode_texts(texts), atol=1e-4
    )
    photos = [builtin_photos["cat"], builtin_photos["cameraman"], builtin_photos["temple"]]
    np.testing.assert_allclose(
        onnx_model.encode_images(photos), builtin_model.encode_images(photos), atol=1e-4
    )
    for exported in onnx_model.onnx_files:
        assert exported.is_file() and exported.parent == builtin_model.cache_dir


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_shipped_class_table_matches_the_current_recipe(tmp_path) -> None:
    """The package ships the class table for the pinned wheels, so a fresh machine starts in
    seconds. If this fails, the recipe or a wheel changed: regenerate the table by building
    ``BuiltinModel(cache_dir=d)`` once and copying ``d/builtin-classes-*.npy`` into
    ``clipserve/models/data/`` (removing the old file)."""
    from clipserve.models.builtin.classes import SHIPPED_DIR

    fresh = BuiltinModel(cache_dir=tmp_path)
    assert fresh.class_cache_hit
    assert fresh.class_cache_file.parent == SHIPPED_DIR
    assert not list(tmp_path.glob("builtin-classes-*.npy"))  # nothing recomputed


def test_int8_text_tower_keeps_the_rankings(
    builtin_model: BuiltinModel, builtin_photos: dict[str, np.ndarray]
) -> None:
    int8 = BuiltinModel(backend="onnx", cache_dir=builtin_model.cache_dir, precision="int8")
    assert int8.precision == "int8" and int8.onnx_files[0].parent.name == "int8"
    names = list(builtin_photos)
    captions = [CAPTIONS[name] for name in names]
    texts = int8.encode_texts(captions)
    exact = builtin_model.encode_texts(captions)
    # both unit length; measured 0.9908 at worst, the same on AVX-512 VNNI and AVX2 (emulated)
    assert (texts * exact).sum(axis=1).min() >= 0.99
    scores = int8.encode_images([builtin_photos[name] for name in names]) @ texts.T
    hits = int((scores.argmax(axis=1) == np.arange(len(names))).sum())
    assert hits >= len(names) - 1, f"{hits}/{len(names)} right:\n" + _ranking_report(
        names, captions, scores
    )
