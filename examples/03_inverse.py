"""Map a prediction made on processed (cropped) data back to the raw grid with ``_decorate``."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from connectome_dask import Chain  # noqa: E402
from mri import CROP, GRID, MRI, Crop, Normalize, Zoom  # noqa: F401  # noqa: E402

pipeline = Chain(MRI(), Zoom(), Normalize(), Crop())
key = pipeline.ids[0]


@pipeline[3:]._decorate("image", "mask")  # the crop: Sources pass nothing back, Normalize creates mask
def predict(image):
    return image > 0  # a "segmentation" of the processed (cropped) image


normalized = Chain(MRI(), Zoom(), Normalize()).image(key)  # what the crop receives
prediction = predict(normalized)  # runs on the cropped image, returns the mask on the uncropped grid
assert pipeline.image(key).shape == CROP and prediction.shape == GRID
print(f"{key}: processed {pipeline.image(key).shape}, prediction mapped back to {prediction.shape}")
