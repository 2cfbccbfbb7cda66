"""Train from the cache: the MRI pipeline persisted, then one epoch of a tiny 3D CNN fed by ``to_torch``.

    python examples/04_train_from_cache.py [CACHE_ROOT] [--epochs N]      # needs connectome_dask[torch]

The pipeline is the main job's (``examples/mri.py``: ``MRI >> Zoom >> Normalize >> Crop``, cached with
``CacheToDisk``), persisted in parallel on the embedded local cluster; that cluster is then closed, which
frees the cores for training. ``pipeline.to_torch(["image", "mask"])`` is a map-style PyTorch dataset whose
items are read from the HDF5 entries (an entry missing from the cache would be computed and stored by the
DataLoader worker that needs it). A ``DataLoader`` with 2 workers feeds a small 3D CNN that learns the
foreground mask from the image; the loss and the samples/s of each epoch are printed.

The DataLoader's workers come from a fork server: this process ran dask (``persist``) and still has its
threads, which a forked child must not inherit. In a script that only trains, the default (fork) is fine.
"""

import argparse
import os
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # mri.py; the DataLoader's and dask's worker processes inherit this path

from connectome_dask import CacheToDisk, Chain  # noqa: E402
from connectome_dask.cluster import close_embedded  # noqa: E402
from mri import MRI, Crop, Normalize, Zoom, sample_folder  # noqa: E402


def model():
    """Image (1 channel) -> foreground logits at a quarter of its resolution (tiny: it runs on a CPU)."""
    return nn.Sequential(nn.AvgPool3d(4), nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 1, 3, padding=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default=os.path.join(HERE, "output", "cache"), help="the cache root")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)

    pipeline = Chain(MRI(folder=sample_folder()), Zoom(), Normalize(), Crop(),
                     CacheToDisk.simple("image", "mask", "spacing", root=args.root))
    print(f"{len(pipeline.ids)} volumes, cache root {os.path.abspath(args.root)}")
    print(pipeline.persist(progress=False))
    close_embedded()  # persist's cluster is not needed for training

    data = pipeline.to_torch(["image", "mask"])
    loader = DataLoader(data, batch_size=4, shuffle=True, num_workers=2, persistent_workers=True,
                        multiprocessing_context="forkserver")
    torch.manual_seed(0)
    net = model()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_of = nn.BCEWithLogitsLoss()
    for epoch in range(args.epochs):
        start, samples, total = time.perf_counter(), 0, 0.0
        for image, mask in loader:  # float32 (B, 96, 96, 64) and bool (B, 96, 96, 64) tensors
            logits = net(image[:, None])
            loss = loss_of(logits, F.avg_pool3d(mask[:, None].float(), 4))  # foreground fraction per block
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            samples += len(image)
            total += loss.item() * len(image)
        seconds = time.perf_counter() - start
        print(f"epoch {epoch}: {samples} samples, loss {total / samples:.3f}, {samples / seconds:.1f} samples/s")
    return 0


if __name__ == "__main__":  # persist and the DataLoader start worker processes, which import this file
    sys.exit(main())
