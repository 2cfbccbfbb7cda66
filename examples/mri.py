"""The example pipeline: real MRI volumes shipped inside nibabel's wheel (no downloads), resampled to a
common grid, normalized and cropped, with an inverse for the crop. Falls back to generated phantoms
when nibabel is not installed."""

import os

import numpy as np
from scipy import ndimage

from connectome_dask import Source, Transform, inverse, meta

GRID = (48, 48, 24)
CROP = (40, 40, 20)


def _volumes():
    """``{id: (file, time index or None)}`` of the 3D volumes nibabel ships."""
    try:
        import nibabel
    except ImportError:
        return {f"phantom{i:02d}": (None, i) for i in range(12)}
    folder = os.path.join(os.path.dirname(nibabel.__file__), "tests", "data")
    out = {}
    for name in ("example4d.nii.gz", "anatomical.nii", "reoriented_anat_moved.nii", "example_nifti2.nii.gz",
                 "functional.nii"):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        shape = nibabel.load(path).shape
        stem = name.split(".")[0]
        if len(shape) == 4:
            out.update({f"{stem}-t{t:02d}": (path, t) for t in range(shape[3])})
        else:
            out[stem] = (path, None)
    return out


def _phantom(seed):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:30, :64, :64]
    blob = ((x - 32) ** 2 / 400 + (y - 32) ** 2 / 300 + (z - 15) ** 2 / 80) < 1 + 0.2 * rng.random()
    return (blob * 100 + rng.normal(0, 5, blob.shape)).astype(np.float32).transpose(2, 1, 0)


class MRI(Source):
    """3D MRI volumes: ``image`` (float32) and ``spacing`` (mm)."""

    @meta
    def ids():
        return sorted(_volumes())

    def image(key):
        path, t = _volumes()[key]
        if path is None:
            return _phantom(t)
        import nibabel

        data = np.asarray(nibabel.load(path).dataobj, dtype=np.float32)
        return data[..., t] if t is not None else data

    def spacing(key):
        path, _ = _volumes()[key]
        if path is None:
            return (1.0, 1.0, 2.0)
        import nibabel

        return tuple(float(s) for s in nibabel.load(path).header.get_zooms()[:3])


class Zoom(Transform):
    """Resample every volume onto the same grid (linear interpolation)."""

    __inherit__ = True
    _grid: tuple = GRID

    def image(image, _grid):
        return ndimage.zoom(image, [g / s for g, s in zip(_grid, image.shape)], order=1)

    def spacing(spacing, image, _grid):
        return tuple(sp * s / g for sp, s, g in zip(spacing, image.shape, _grid))


class Normalize(Transform):
    __inherit__ = True

    def image(image):
        return ((image - image.mean()) / (image.std() + 1e-6)).astype(np.float32)

    def mask(image):
        return image > image.mean() + 0.5 * image.std()


class Crop(Transform):
    """Center crop; the inverse pads a prediction back to the uncropped grid."""

    __inherit__ = True
    _size: tuple = CROP

    def _box(image, _size):
        start = [(s - c) // 2 for s, c in zip(image.shape, _size)]
        return tuple(slice(b, b + c) for b, c in zip(start, _size)), image.shape

    def image(image, _box):
        return image[_box[0]]

    def mask(mask, _box):
        return mask[_box[0]]

    @inverse
    def mask(mask, _box):
        out = np.zeros(_box[1], dtype=mask.dtype)
        out[_box[0]] = mask
        return out
