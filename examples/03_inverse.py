"""Map a prediction made on processed data back to the raw image space with ``_decorate``.

    python examples/03_inverse.py

A segmentation model sees resampled, normalized, cropped volumes; its mask must be compared with the
raw scan. ``pipeline[1:]._decorate("image", "mask")`` turns a function of the processed image into a
function of the raw inputs: the image goes forward through Zoom, Normalize and Crop, the returned mask
goes backward through Crop's inverse (uncrop), Normalize's (identity) and Zoom's (back to the raw grid).
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from connectome_dask import Chain  # noqa: E402
from mri import MRI, Crop, Normalize, Zoom  # noqa: E402

# A flat Chain, so that pipeline[1:] is the transforms (a Source passes nothing backward).
pipeline = Chain(MRI(), Zoom(), Normalize(), Crop())


@pipeline[1:]._decorate("image", "mask")
def segment(image):
    """A stand-in for a model: the bright voxels of the processed image."""
    return image > 1.0


for key in pipeline.ids[:3]:
    raw, spacing = pipeline[0].image(key), pipeline[0].spacing(key)  # the Source: raw data
    mask = segment(image=raw, spacing=spacing)  # the raw inputs of the transforms, by name
    processed = pipeline.image(key)
    assert processed.shape == (96, 96, 64) and mask.shape == raw.shape and mask.dtype == bool
    # the inverse lands on the raw grid: its foreground is where the raw image is bright too
    print(f"{key}: raw {raw.shape} -> processed {processed.shape}; prediction mapped back to {mask.shape}, "
          f"{mask.mean():.0%} of voxels, mean raw intensity inside {raw[mask].mean():.0f} vs {raw[~mask].mean():.0f}")
