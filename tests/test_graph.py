"""Pipelines as dask graphs: keys from code hashes, `.delayed`, `to_dask`, every scheduler."""

import dataclasses
import os
import subprocess
import sys
import textwrap

import cloudpickle
import dask
import numpy as np
import pytest
from dask.utils import key_split

from connectome_dask import Transform
from graph_layers import Crop, Fails, Noise, Volumes


@pytest.fixture
def ds(counter):
    return Volumes(log=counter.path) >> Crop(log=counter.path)


def test_delayed_equals_eager_on_local_schedulers(ds):
    expected = ds.image("v2")
    for scheduler in ("sync", "threads", "processes"):
        np.testing.assert_array_equal(ds.image.delayed("v2").compute(scheduler=scheduler), expected)


@pytest.mark.cluster
def test_delayed_on_distributed(ds, client):
    d = ds.mask.delayed("v3")
    np.testing.assert_array_equal(client.compute(d).result(), ds.mask("v3"))
    np.testing.assert_array_equal(d.compute(scheduler=client.get), ds.mask("v3"))


def test_key_names_the_field_and_is_shared_across_pipeline_objects(counter):
    a = (Volumes(log=counter.path) >> Crop(log=counter.path)).image.delayed("v1")
    b = (Volumes(log=counter.path) >> Transform(__inherit__=True) >> Crop(log=counter.path)).image.delayed("v1")
    assert key_split(a.key) == "image"
    assert a.key == b.key
    assert a.key != (Volumes(log=counter.path) >> Crop(log=counter.path)).image.delayed("v2").key


def test_key_is_stable_across_processes_and_hash_seeds(ds, counter, tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from graph_layers import Volumes, Crop
        ds = Volumes(log={counter.path!r}) >> Crop(log={counter.path!r})
        print(ds.image.delayed(("v1", 2)).key)
    """)
    keys = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        keys.add(out.stdout.strip())
    assert keys == {ds.image.delayed(("v1", 2)).key}


def test_shared_parameter_runs_once_per_entry(ds, counter):
    both = ds._compile(["image", "mask"]).delayed("v0")
    image, mask = both.compute(scheduler="sync")
    np.testing.assert_array_equal(image, ds.image("v0"))
    counter.reset()
    both.compute(scheduler="threads")
    assert counter.count("box") == 1
    assert counter.count("image") == 1


def _separate_values(ds, key):
    return ds.image.delayed(key), ds.mask.delayed(key)


def test_separately_built_values_of_an_entry_share_its_work(ds, counter):
    counter.reset()
    image, mask = dask.compute(*_separate_values(ds, "v1"), scheduler="sync")
    assert counter.count("image") == 1 and counter.count("box") == 1  # the source's image, Crop._box
    np.testing.assert_array_equal(image, ds.image("v1"))
    np.testing.assert_array_equal(mask, ds.mask("v1"))
    counter.reset()
    dask.compute(*_separate_values(ds, "v1"), *_separate_values(ds, "v2"), scheduler="threads")
    assert counter.count("image") == 2 and counter.count("box") == 2


@pytest.mark.cluster
def test_separately_built_values_share_work_on_distributed(ds, counter, client):
    counter.reset()
    image, mask = client.gather(client.compute(list(_separate_values(ds, "v3"))))
    assert counter.count("image") == 1 and counter.count("box") == 1
    np.testing.assert_array_equal(mask, ds.mask("v3"))


def test_tasks_are_cut_only_where_fields_meet(ds, counter):
    assert len(dict(Volumes(log=counter.path).image.delayed("v1").dask)) == 1  # a field nothing else needs
    assert len(dict(ds.to_dask(["image", "mask"]).__dask_graph__())) == 6  # one task per entry


@pytest.mark.cluster
def test_bulk_graph_dedupes_shared_work_on_distributed(ds, counter, client):
    entries = ds.to_dask(["image", "mask"])
    assert len(entries) == 6
    results = client.compute(entries).result()
    assert len(results) == 6
    for key, (image, mask) in zip(ds.ids, results):
        np.testing.assert_array_equal(image, ds.image(key))
        np.testing.assert_array_equal(mask, ds.mask(key))
    counter.reset()
    dask.compute(entries, scheduler="threads")
    assert counter.count("box") == 6 and counter.count("image") == 6


def test_bulk_single_field_and_to_delayed(ds):
    values = ds.to_dask("image", ids=["v1", "v2"]).compute()
    np.testing.assert_array_equal(values[1], ds.image("v2"))
    delayed = ds.to_dask(["image", "mask"], ids=["v4", "v5"]).to_delayed()
    (image, mask), _ = dask.compute(*delayed)
    np.testing.assert_array_equal(image, ds.image("v4"))


def test_transform_only_pipeline_and_delayed_input(counter):
    crop = Crop(log=counter.path)
    raw = np.ones((4, 4))
    np.testing.assert_array_equal(crop.image.delayed(image=raw).compute(), crop.image(raw))
    upstream = dask.delayed(np.zeros)((4, 4))
    assert crop.image.delayed(image=upstream).compute().shape == (2, 4)


def test_graph_pickles_with_cloudpickle(ds):
    d = ds.image.delayed("v5")
    graph = cloudpickle.loads(cloudpickle.dumps(dict(d.dask)))
    np.testing.assert_array_equal(dask.get(graph, d.key), ds.image("v5"))


@pytest.mark.cluster
def test_user_exception_reaches_the_caller(counter, client):
    ds = Volumes(log=counter.path) >> Fails()
    with pytest.raises(ZeroDivisionError, match="cannot process image"):
        client.compute(ds.image.delayed("v1")).result()
    with pytest.raises(ZeroDivisionError, match="cannot process image"):
        ds.image.delayed("v1").compute(scheduler="sync")


def test_impure_is_shared_within_one_compute_and_fresh_across(counter):
    ds = Volumes(log=counter.path) >> Noise()
    pair = ds._compile(["image", "mask"])
    (image, seed), = dask.compute(pair.delayed("v0"), scheduler="threads")
    np.testing.assert_allclose(image, ds.image("v0") * 0 + Volumes(log=counter.path).image("v0")
                               + np.random.default_rng(seed).random())
    first = ds.mask.delayed("v0")
    second = ds.mask.delayed("v0")
    assert first.key != second.key
    assert first.compute() != second.compute()


@pytest.mark.cluster
def test_main_module_and_closure_functions_run_on_workers(tmp_path):
    module = tmp_path / "userpipe.py"
    module.write_text("def offset(x):\n    return x + 100\n")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from distributed import Client, LocalCluster
        from connectome_dask import Source, Transform, meta
        import userpipe

        factor = 3
        def scale(x):
            return x * factor

        class Numbers(Source):
            @meta
            def ids():
                return [1, 2, 3]
            def value(i):
                return scale(i)

        ds = Numbers() >> Transform(value=lambda value: userpipe.offset(value))
        if __name__ == "__main__":
            with LocalCluster(n_workers=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as c:
                print(c.compute(ds.to_dask("value")).result())
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "main.py").write_text(script)
    out = subprocess.run([sys.executable, str(tmp_path / "main.py")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[103, 106, 109]"


def test_readme_architecture_prints_what_it_shows(tmp_path):
    """The README's "How it works" block, run alone as a script, prints the output shown under it."""
    readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")).read()
    section = readme[readme.index("## How it works"):]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = section.split("```text\n", 1)[1].split("```", 1)[0]
    (tmp_path / "how_it_works.py").write_text(code)
    out = subprocess.run([sys.executable, str(tmp_path / "how_it_works.py")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == shown


def test_plan_is_frozen_and_derived_with_replace(ds):
    plan = ds._plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.fields = {}
    derived = dataclasses.replace(plan, metas=["ids", "mask"])
    assert derived.metas == frozenset({"ids", "mask"}) and derived.fields is plan.fields
    assert "Crop._box(Volumes.image, _log=" in repr(plan)
