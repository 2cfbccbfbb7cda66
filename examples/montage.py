"""A PNG montage of processed slices: matplotlib if installed, else a small numpy + zlib PNG writer."""

import struct
import zlib

import numpy as np


def tiles(images, masks):
    """The middle axial slice of each volume as an RGB tile: grey image, mask outline in orange."""
    out = []
    for image, mask in zip(images, masks):
        z = image.shape[2] // 2
        grey = image[:, :, z].T[::-1]  # x to the right, y (anterior) up
        low, high = np.percentile(grey, [1, 99])
        grey = np.clip((grey - low) / (high - low + 1e-6), 0, 1)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        inside = mask[:, :, z].T[::-1]
        edge = inside & ~_erode(inside)
        rgb[edge] = (1.0, 0.6, 0.1)
        out.append((rgb * 255).astype(np.uint8))
    return out


def _erode(mask):
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def save(path, images, masks, titles, use_matplotlib=True):
    """Write the montage to ``path``; returns the backend used (``"matplotlib"`` or ``"numpy"``)."""
    rgb = tiles(images, masks)
    if use_matplotlib:
        try:
            import matplotlib
        except ImportError:
            pass
        else:
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            columns = min(4, len(rgb))
            rows = -(-len(rgb) // columns)
            fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.9 * rows), squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, tile, title in zip(axes.flat, rgb, titles):
                ax.imshow(tile)
                ax.set_title(title, fontsize=7)
            fig.tight_layout()
            fig.savefig(path, dpi=100)
            plt.close(fig)
            return "matplotlib"
    write_png(path, _grid([tile.repeat(2, axis=0).repeat(2, axis=1) for tile in rgb], columns=min(4, len(rgb))))
    return "numpy"


def _grid(tiles, columns, gap=4):
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + gap) + gap, columns * (width + gap) + gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        top = gap + (i // columns) * (height + gap)
        left = gap + (i % columns) * (width + gap)
        canvas[top:top + tile.shape[0], left:left + tile.shape[1]] = tile
    return canvas


def write_png(path, rgb):
    """Write an ``(h, w, 3)`` uint8 array as an 8-bit RGB PNG (no filtering, zlib-compressed)."""
    height, width, _ = rgb.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in np.ascontiguousarray(rgb, np.uint8))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))
