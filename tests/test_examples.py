"""The examples run as written: the main job persists, reads back and draws; the inverse lands on the raw grid."""

import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def run(*args, cwd=ROOT):
    env = dict(os.environ, CONNECTOME_DASK_WORKERS="2")
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=env)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out.stdout


def read_png(path):
    """(width, height, channels) of a valid 8-bit PNG: signature, chunk CRCs and image data size checked."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    assert b"IEND" in chunks
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    assert depth == 8
    assert len(zlib.decompress(chunks[b"IDAT"])) == height * (1 + width * channels)
    return width, height, channels


def test_main_job_persists_reads_back_and_draws(tmp_path):
    root, png = tmp_path / "cache", tmp_path / "montage.png"
    out = run("examples/01_persist_imaging.py", str(root), "--png", str(png))
    n = int(re.search(r"^(\d+) (MRI volumes|generated head phantoms)", out, re.M).group(1))
    assert f"persist: {n} computed, 0 already cached, 0 failed" in out
    assert f"again: persist: 0 computed, {n} already cached, 0 failed" in out  # idempotent
    assert re.search(r"disk cache hits per entry: image \d+ µs", out)
    assert re.search(r"RAM cache hits: [\d.]+ µs per field", out)
    assert re.search(r"cached values equal a fresh computation \(.*\): True", out)
    width, height, _ = read_png(png)
    assert width > 200 and height > 200

    listing = run("-m", "connectome_dask", "cache", str(root), "list")
    for field in ("image", "mask", "spacing"):
        assert re.search(rf"{field}: {n} entries", listing), listing


def test_inverse_example_maps_predictions_to_the_raw_grid():
    out = run("examples/03_inverse.py")
    lines = [line for line in out.splitlines() if "prediction mapped back to" in line]
    assert len(lines) == 3
    for line in lines:
        raw, processed, back = re.findall(r"\(\d+, \d+, \d+\)", line)
        assert processed == "(96, 96, 64)" and back == raw


@pytest.mark.cluster
def test_local_cluster_example(tmp_path):
    out = run("examples/02_local_cluster.py", str(tmp_path / "cache"))
    assert re.search(r"^2 workers", out, re.M)
    n = int(re.search(r"persist: (\d+) computed, 0 already cached, 0 failed", out).group(1))
    assert f"client.compute: {n} (image, mask) pairs of shape (96, 96, 64)" in out
    assert re.search(r"^mask-[0-9a-f]+: \d+ foreground voxels", out, re.M)


@pytest.fixture
def examples_path(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)


def test_phantom_fallback_runs_the_same_pipeline(examples_path):
    from connectome_dask import Chain
    from mri import MRI, Crop, Normalize, Zoom

    pipeline = Chain(MRI(folder=None), Zoom(), Normalize(), Crop())
    assert len(pipeline.ids) == 12
    key = pipeline.ids[0]
    image, mask, spacing = pipeline._compile(["image", "mask", "spacing"])(key)
    assert image.shape == mask.shape == (96, 96, 64) and mask.dtype == bool and 0.1 < mask.mean() < 0.9
    assert spacing == pytest.approx((2.0, 2.0, 2.0), rel=0.05)
    raw = pipeline[0].image(key)
    back = pipeline[1:]._wrap(lambda image: image > 0, "image", "mask")(image=raw, spacing=pipeline[0].spacing(key))
    assert back.shape == raw.shape


def test_montage_without_matplotlib_is_a_valid_png(examples_path, tmp_path):
    import montage

    rng = np.random.default_rng(0)
    images = [rng.random((40, 30, 8)).astype(np.float32) for _ in range(5)]
    masks = [image > 0.5 for image in images]
    path = tmp_path / "plain.png"
    assert montage.save(path, images, masks, [str(i) for i in range(5)], use_matplotlib=False) == "numpy"
    width, height, channels = read_png(path)
    assert (width, height, channels) == (4 * 80 + 5 * 4, 2 * 60 + 3 * 4, 3)  # tiles drawn at twice the size


def test_training_example_trains_from_the_cache(tmp_path):
    root = tmp_path / "cache"
    out = run("examples/04_train_from_cache.py", str(root))
    n = int(re.search(r"^(\d+) volumes", out, re.M).group(1))
    assert f"persist: {n} computed, 0 already cached, 0 failed" in out
    loss, rate = re.search(rf"^epoch 0: {n} samples, loss ([\d.]+), ([\d.]+) samples/s$", out, re.M).groups()
    assert 0 < float(loss) < 1 and float(rate) > 0
    listing = run("-m", "connectome_dask", "cache", str(root), "list")
    assert re.search(rf"image: {n} entries", listing), listing
