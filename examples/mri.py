"""The example dataset and its preprocessing, shared by the examples.

``MRI`` is a ``Source`` over real MRI files that ship inside nibabel's wheel (``nibabel/tests/data``:
NIfTI-1, AFNI and Philips PAR/REC files of brains and a phantom), so nothing is downloaded. Each 3D
volume is an entry; 4D files (fMRI, dynamic scans) give one entry per time point. Without nibabel,
``MRI()`` falls back to generated 3D head phantoms, so the examples still run. Its ``@files``
function names the raw files of each entry, so the caches follow the data as well as the code: a
scan that is replaced or fixed on disk is recomputed, and only its entries.

The preprocessing is what a segmentation model usually gets:

* ``Zoom``: resample to isotropic 2 mm voxels (``scipy.ndimage.zoom``), inverse for predicted masks;
* ``Normalize``: zero mean, unit variance; a foreground ``mask``;
* ``Crop``: center crop (or pad) to one shape, so entries stack into batches; inverse too.

This module's code travels to the workers by value with the tasks (it is the user's own module, not
an installed one), so the workers need not import it, and workers started before an edit run the
edited code.
"""

import os
import warnings

import numpy as np
from scipy import ndimage

from connectome_dask import Source, Transform, files, inverse, meta

# nibabel's sample files that hold 3D or 4D brain or phantom volumes: {entry prefix: file name}
FILES = {
    "anatomical": "anatomical.nii",  # T1 brain, NIfTI-1
    "epi": "example4d.nii.gz",  # fMRI, 2 volumes
    "functional": "functional.nii",  # fMRI, 20 volumes of 3 slices
    "moved": "reoriented_anat_moved.nii",  # T1 brain, another orientation
    "tlrc": "scaled+tlrc.HEAD",  # brain in Talairach space, AFNI
    "afni": "example4d+orig.HEAD",  # 3 volumes, AFNI
    "phantom": "phantom_EPI_asc_CLEAR_2_1.PAR",  # EPI of a phantom, Philips PAR/REC, 3 dynamics
}


def sample_folder():
    """nibabel's folder of sample files, or None if nibabel is not installed."""
    try:
        import nibabel
    except ImportError:
        return None
    return os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")


def _load(path):
    """A nibabel image in the closest canonical (RAS+) orientation."""
    import nibabel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PAR/REC headers warn about rounding of their timings
        return nibabel.as_closest_canonical(nibabel.load(path))


def _split(key):
    """``"epi-t01"`` → ``("epi", 1)``; ``"anatomical"`` → ``("anatomical", None)``."""
    prefix, _, time = key.partition("-t")
    return prefix, int(time) if time else None


def phantom(seed, shape=(60, 72, 40)):
    """A 3D head phantom: a skull shell, brain tissue, two ventricles, smooth bias and noise."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    scale = 0.85 + 0.1 * rng.random(3)

    def ellipsoid(cx, cy, cz, rx, ry, rz):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 < 1

    head = ellipsoid(0, 0, 0, *scale)
    brain = ellipsoid(0, 0, 0, *(scale - 0.12))
    ventricles = ellipsoid(-0.18, 0.05, 0.1, 0.1, 0.3, 0.2) | ellipsoid(0.18, 0.05, 0.1, 0.1, 0.3, 0.2)
    image = 300.0 * (head & ~brain) + 700.0 * brain - 500.0 * ventricles
    image *= 1 + 0.15 * x + 0.1 * rng.standard_normal()
    return (image + rng.normal(0, 20, shape)).astype(np.float32)


class MRI(Source):
    """One entry per 3D volume of nibabel's sample MRI files in ``folder`` (4D files are split by
    time: ``epi-t00``, ``epi-t01``); ``folder=None`` gives 12 generated head phantoms.

    Fields: ``image`` (float32, RAS+ orientation) and ``spacing`` (voxel size in mm).
    """

    _folder: str = sample_folder()

    @meta
    def ids(_folder):
        if _folder is None:
            return [f"phantom{i:02d}" for i in range(12)]
        ids = []
        for prefix, name in FILES.items():
            path = os.path.join(_folder, name)
            if os.path.exists(path):
                shape = _load(path).shape
                ids.extend([f"{prefix}-t{t:02d}" for t in range(shape[3])] if len(shape) == 4 else [prefix])
        return sorted(ids)

    @files
    def _files(key, _folder):
        """The raw files of an entry (the header first): replacing or editing one invalidates the
        cached fields of exactly the entries read from it."""
        if _folder is None:
            return []
        path = os.path.join(_folder, FILES[_split(key)[0]])
        stem, ext = os.path.splitext(path)
        data = {".HEAD": [stem + ".BRIK", stem + ".BRIK.gz"], ".PAR": [stem + ".REC"]}.get(ext, [])
        return [path] + [p for p in data if os.path.exists(p)]

    def image(key, _files):
        if not _files:
            return phantom(int(key[len("phantom"):]))
        data = np.asarray(_load(_files[0]).dataobj, dtype=np.float32)
        time = _split(key)[1]
        return data if time is None else data[..., time]

    def spacing(_files):
        if not _files:
            return (3.0, 3.0, 3.0)
        return tuple(float(z) for z in _load(_files[0]).header.get_zooms()[:3])


def _resize(array, shape, order):
    """``array`` resampled to exactly ``shape`` (``order=0``: nearest, for masks)."""
    return ndimage.zoom(array, [n / s for n, s in zip(shape, array.shape)], order=order)


class Zoom(Transform):
    """Resample to isotropic voxels of ``spacing`` mm (cubic spline); the inverse maps a mask
    predicted on the resampled grid back to the original grid (nearest neighbour)."""

    __inherit__ = True
    _spacing: float = 2.0

    def _shape(image, spacing, _spacing):
        return tuple(max(1, round(n * s / _spacing)) for n, s in zip(image.shape, spacing))

    def _original(image):
        return image.shape

    def image(image, _shape):
        return _resize(image, _shape, order=3)

    def spacing(spacing, _shape, _original):
        return tuple(s * n / m for s, n, m in zip(spacing, _original, _shape))

    @inverse
    def mask(mask, _original):
        return _resize(mask, _original, order=0)


class Normalize(Transform):
    """Zero mean and unit variance over the volume; ``mask``: the foreground (above the mean,
    holes filled). A layer that defines a field forward does not pass it backward by inheritance, so
    the identity inverse of ``mask`` lets a predicted mask travel back through this layer."""

    __inherit__ = True

    def image(image):
        return ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)

    def mask(image):
        return ndimage.binary_fill_holes(image > image.mean())

    @inverse
    def mask(mask):
        return mask  # a predicted mask is on the same grid before and after normalization


def _slices(shape, size):
    """Per axis: the slice of the input that is kept and where it lands in the output."""
    source, target = [], []
    for n, m in zip(shape, size):
        start = abs(n - m) // 2
        keep = min(n, m)
        inner = slice(start, start + keep)
        source.append(inner if n > m else slice(0, keep))
        target.append(inner if m > n else slice(0, keep))
    return tuple(source), tuple(target)


class Crop(Transform):
    """Center crop, or pad, to ``size`` voxels (images are padded with their minimum, masks with
    False); the inverse puts a prediction back on the uncropped grid (zeros outside the crop)."""

    __inherit__ = True
    _size: tuple = (96, 96, 64)

    def _box(image, _size):
        return image.shape, _slices(image.shape, _size)

    def image(image, _box, _size):
        shape, (source, target) = _box
        out = np.full(_size, image.min(), image.dtype)  # pad with the background
        out[target] = image[source]
        return out

    def mask(mask, _box, _size):
        shape, (source, target) = _box
        out = np.zeros(_size, mask.dtype)
        out[target] = mask[source]
        return out

    @inverse
    def mask(mask, _box):
        shape, (source, target) = _box
        out = np.zeros(shape, mask.dtype)
        out[source] = mask[target]
        return out
