"""``pipeline.to_torch``: PyTorch datasets over the caches, through real DataLoaders and their workers."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np

import pytest

torch = pytest.importorskip("torch")  # the test extra installs it; `connectome_dask[torch]` for users
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402

from connectome_dask.cache.hdf5 import HDF5Store  # noqa: E402
from connectome_dask.exceptions import FieldError, InvalidArgument  # noqa: E402
from connectome_dask.training import TorchDataset, TorchEpochs  # noqa: E402
from torch_layers import Volumes, cached  # noqa: E402


def lines(path):
    with open(path) as f:
        return f.read().split()


def loader_values(dataset, **options):
    """Every item the DataLoader yields, unbatched: (id, image, label) with numpy images."""
    out = []
    for ids, images, labels in DataLoader(dataset, batch_size=3, **options):
        assert isinstance(images, torch.Tensor) and images.dtype == torch.float32
        out += zip(ids, images.numpy(), labels.tolist())
    return out


@pytest.mark.parametrize("workers, context, pin", [(0, None, False), (2, "fork", False), (2, "spawn", False),
                                                   (2, "forkserver", False), (2, "fork", True)])
def test_dataloader_values_equal_eager_calls(cache_root, workers, context, pin):
    pipeline = cached(cache_root)
    for key in pipeline.ids[:4]:
        pipeline.image(key)  # some entries on disk, the others missing
    data = pipeline.to_torch(["id", "image", "label"])
    assert isinstance(data, TorchDataset) and len(data) == 10
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*pin_memory", UserWarning)  # a CPU-only build pins nothing: it says so
        got = loader_values(data, num_workers=workers, multiprocessing_context=context, pin_memory=pin,
                            persistent_workers=pin)
    fresh = Volumes()  # no cache at all
    assert [key for key, _, _ in got] == list(fresh.ids)
    for key, image, label in got:
        assert np.array_equal(image, fresh.image(key)) and label == fresh.label(key)


def test_items_are_the_eager_values_numpy_stays_numpy(cache_root):
    pipeline = cached(cache_root)
    image = pipeline.to_torch("image")[3]
    assert type(image) is np.ndarray and image.dtype == np.float32
    assert np.array_equal(image, Volumes().image("v03"))
    assert pipeline.to_torch(["label", "id"], ids=["v05", "v01"])[1] == (1, "v01")
    item = pipeline.to_torch(["id", "label"], as_dict=True)[2]
    assert item == {"id": "v02", "label": 2} and list(item) == ["id", "label"]
    assert pipeline.to_torch("label", as_dict=True)[4] == {"label": 1}


def test_a_miss_inside_a_worker_is_computed_and_stored(cache_root, tmp_path):
    calls = str(tmp_path / "calls.txt")
    open(calls, "w").close()
    data = cached(cache_root, calls=calls).to_torch(["id", "image", "label"])
    first = loader_values(data, num_workers=2)
    assert sorted(lines(calls)) == sorted(Volumes().ids)  # each entry computed once, by a worker
    assert [field for field, *_ in HDF5Store(cache_root).entries()] == ["image"] * 10  # and stored on disk
    again = loader_values(cached(cache_root, calls=calls).to_torch(["id", "image", "label"]), num_workers=2)
    assert len(lines(calls)) == 10  # the second pass read every entry from disk
    assert all(a[0] == b[0] and np.array_equal(a[1], b[1]) for a, b in zip(first, again))


def _open_hdf5(worker_id):
    """Run in each forked worker before it reads: what it inherited from the parent."""
    import h5py

    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor of the listing itself, closed by now
            pass
    files = h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
    with open(os.environ["CDASK_TEST_HANDLES"], "a") as f:
        f.write(f"{files} {sum(p.endswith('.h5') or p.endswith('.tmp') for p in fds)}\n")


def test_no_hdf5_handle_is_open_in_the_parent_when_workers_fork(cache_root, tmp_path, monkeypatch):
    import h5py

    writer = cached(cache_root).to_torch("image")
    writer[0], writer[1]  # entries written in the parent
    pipeline = cached(cache_root)  # a new RAM cache: the parent reads those entries from disk
    data = pipeline.to_torch(["id", "image"])
    for i in (0, 1, 2):  # two disk hits, one miss written
        data[i]
    assert h5py.h5f.get_obj_count(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE) == 0
    report = tmp_path / "handles.txt"
    monkeypatch.setenv("CDASK_TEST_HANDLES", str(report))
    batches = list(DataLoader(data, batch_size=5, num_workers=2, multiprocessing_context="fork",
                              worker_init_fn=_open_hdf5))
    assert [key for ids, _ in batches for key in ids] == list(pipeline.ids)
    assert lines(report) == ["0", "0", "0", "0"]  # two workers: no HDF5 file, no .h5 descriptor inherited


def test_it_pickles_small_without_values_or_caches(cache_root):
    pipeline = cached(cache_root, n=40)
    data = pipeline.to_torch(["image", "label"])
    values = [data[i] for i in range(40)]  # the RAM and disk caches now hold 40 arrays of 480 bytes
    blob = pickle.dumps(data)
    assert len(blob) < 8000 and sum(v[0].nbytes for v in values) > 19000
    back = pickle.loads(blob)
    assert len(back) == 40 and np.array_equal(back[7][0], values[7][0]) and back[7][1] == values[7][1]


def test_pipelines_from_main_and_lambdas_reach_spawned_workers(cache_root):
    """The dataset pickles through cloudpickle: a pipeline defined in a script (or a notebook) with an
    inline Transform reaches spawn workers, which cannot import it."""
    script = f"""
import numpy as np
from torch.utils.data import DataLoader
from connectome_dask import CacheToDisk, Source, Transform, meta

class Letters(Source):
    @meta
    def ids():
        return list("abcdef")

    def code(key):
        return np.array([ord(key)])

if __name__ == "__main__":
    pipeline = Letters() >> Transform(code=lambda code: code * 2) >> CacheToDisk({cache_root!r}, "code")
    data = pipeline.to_torch("code")
    got = [int(v) for batch in DataLoader(data, batch_size=4, num_workers=2, multiprocessing_context="spawn")
           for v in batch]
    print(got == [2 * ord(c) for c in "abcdef"], sorted(pipeline.ids) == list("abcdef"))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_distributed_sampler_with_two_ranks_covers_every_id_once(cache_root):
    data = cached(cache_root, n=12).to_torch(["id", "label"])
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5)
        sampler.set_epoch(1)
        mine = [key for ids, _ in DataLoader(data, batch_size=4, sampler=sampler, num_workers=2) for key in ids]
        assert len(mine) == 6
        seen += mine
    assert sorted(seen) == sorted(data.ids)


def epoch_order(dataset, workers, batch_size=3, skip_batches=None, **options):
    """The ids the loader yields, in order (stopping after ``skip_batches`` batches if given)."""
    out = []
    for i, (ids, _) in enumerate(DataLoader(dataset, batch_size=batch_size, num_workers=workers, **options)):
        if i == skip_batches:
            break
        out += ids
    return out


def test_epochs_shuffle_by_seed_and_split_equally_by_rank_and_worker(cache_root):
    pipeline = cached(cache_root, n=11)
    ranks = [pipeline.to_torch(["id", "image"], shuffle=True, seed=7, rank=r, world_size=2, batch_size=3)
             for r in (0, 1)]
    assert all(isinstance(d, TorchEpochs) and len(d) == 6 for d in ranks)
    orders = [epoch_order(d, workers=2) for d in ranks]
    assert [len(o) for o in orders] == [6, 6]  # 11 ids padded by wrap-around: equal counts per rank
    assert set(orders[0] + orders[1]) == set(pipeline.ids) and len(set(orders[0]) & set(orders[1])) == 1
    for d, order in zip(ranks, orders):
        assert epoch_order(d, workers=0) == order  # 2 workers deal batches in the rank's order
    assert orders[0] != sorted(orders[0])
    again = pipeline.to_torch(["id", "image"], shuffle=True, seed=7, rank=0, world_size=2, batch_size=3)
    assert epoch_order(again, workers=0) == orders[0]  # the seed fixes the order
    again.set_epoch(1)
    assert epoch_order(again, workers=0) != orders[0]
    plain = pipeline.to_torch(["id", "image"], rank=1, world_size=2)  # no shuffle: the ids padded to 12, [1::2]
    assert epoch_order(plain, workers=0) == [*pipeline.ids[1::2], pipeline.ids[0]]


def test_epochs_resume_mid_epoch_in_the_same_order(cache_root):
    pipeline = cached(cache_root, n=20)

    def make():
        return pipeline.to_torch(["id", "image"], shuffle=True, seed=1, rank=1, world_size=2, batch_size=3)

    data = make()
    data.set_epoch(2)
    full = epoch_order(data, workers=2)
    assert epoch_order(data, workers=2, skip_batches=2) == full[:6]
    state = data.state_dict(samples=6)  # two batches of epoch 2 consumed
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    assert epoch_order(resumed, workers=2) == full[6:]
    resumed.set_epoch(2)  # the epoch already set: stays at the loaded position
    assert epoch_order(resumed, workers=0) == full[6:]
    resumed.set_epoch(3)  # another epoch: from its start
    fresh = make()
    fresh.set_epoch(3)
    assert epoch_order(resumed, workers=2) == epoch_order(fresh, workers=0) != full
    other = pipeline.to_torch(["id", "image"], shuffle=True, seed=2, rank=1, world_size=2)
    with pytest.raises(InvalidArgument, match="seed"):
        other.load_state_dict(state)


def test_set_epoch_reaches_persistent_workers(cache_root):
    pipeline = cached(cache_root, n=8)
    expected = []
    for epoch in range(3):
        data = pipeline.to_torch(["id", "image"], shuffle=True, seed=3, batch_size=2)
        data.set_epoch(epoch)
        expected.append(epoch_order(data, workers=0, batch_size=2))
    assert expected[0] != expected[1] != expected[2]
    for context in ("fork", "spawn"):
        data = pipeline.to_torch(["id", "image"], shuffle=True, seed=3, batch_size=2)
        loader = DataLoader(data, batch_size=2, num_workers=2, persistent_workers=True,
                            multiprocessing_context=context)
        orders = []
        for epoch in range(3):
            data.set_epoch(epoch)  # the workers started in epoch 0 and live on
            orders.append([key for ids, _ in loader for key in ids])
        assert orders == expected, context


def test_errors_name_the_argument_and_the_fix(cache_root):
    pipeline = cached(cache_root)
    with pytest.raises(FieldError, match="volume"):
        pipeline.to_torch(["image", "volume"])
    with pytest.raises(InvalidArgument, match="rank and world_size"):
        pipeline.to_torch("image", rank=0)
    with pytest.raises(InvalidArgument, match=r"rank must be an int in \[0, world_size\)"):
        pipeline.to_torch("image", rank=2, world_size=2)
    with pytest.raises(InvalidArgument, match="batch_size"):
        pipeline.to_torch("image", shuffle=True, batch_size=0)
    with pytest.raises(InvalidArgument, match="fields must be strings"):
        pipeline.to_torch(["image", 3])


def test_import_connectome_dask_does_not_import_torch():
    code = "import sys, connectome_dask; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


RANK_SCRIPT = """
import os, sys
import torch.distributed as dist
from torch_layers import cached

dist.init_process_group("gloo", init_method="env://")
data = cached(sys.argv[1], n=9).to_torch("id", shuffle=True, seed=4)
print(data.rank, data.world_size, len(data), *data)
dist.destroy_process_group()
"""


def test_epochs_take_rank_and_world_size_from_torch_distributed(cache_root):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, cache_root], stdout=subprocess.PIPE, text=True,
                              env=dict(env, RANK=str(rank))) for rank in (0, 1)]
    outs = [p.communicate(timeout=120)[0].split() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [out[:3] for out in outs] == [["0", "2", "5"], ["1", "2", "5"]]  # 9 ids padded to 10
    assert sorted(set(outs[0][3:] + outs[1][3:])) == sorted(Volumes(n=9).ids)


def test_an_item_read_from_disk_costs_one_copy_of_the_array(cache_root):
    import tracemalloc

    from connectome_dask import CacheToDisk
    from torch_layers import Big

    (Big() >> CacheToDisk(cache_root, "volume")).volume("a")  # stored
    data = (Big() >> CacheToDisk(cache_root, "volume")).to_torch("volume")
    data[1]  # a miss, computed and stored: the reads below start warm
    tracemalloc.start()
    try:
        volume = data[0]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(volume, Big().volume("a")) and volume.flags.owndata
    assert volume.nbytes <= peak < 1.1 * volume.nbytes  # the array HDF5 reads into, and nothing else
