"""Code written for connectome runs unchanged (issue 13): the way its users and the dataset zoos built
on it write datasets — ``ExternalBase`` subclasses over folders of NIfTI files and CSV tables,
``Source``s whose functions name the key as they like — chained with ``Transform``, ``Filter``,
``GroupBy``, ``Join``, ``CheckIds`` and the caches.

The datasets live in a helper module written to ``tmp_path`` and imported as a module, as a user's
own package would be; calls of their functions are counted through a file.
"""

import datetime
import decimal
import os
import pathlib
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
import zoneinfo

import dask
import h5py
import nibabel
import numpy as np
import pytest

from connectome_dask import (CacheColumns, CacheToDisk, CacheToRam, CheckIds, Filter, GroupBy, Join, Source,
                             Transform, meta)
from connectome_dask.exceptions import DependencyError, FieldError, UnknownKey
from connectome_dask.layers.external import ExternalBase
from connectome_dask.serializers import ChainSerializer, JsonSerializer, NumpySerializer, PickleSerializer

ZOO = '''
import csv
import datetime
import decimal
import pathlib
import typing
import uuid
import zoneinfo

import nibabel
import numpy as np

from connectome_dask import Source, meta
from connectome_dask.layers.external import ExternalBase


def count(calls, what):
    with open(calls, "a") as f:
        f.write(what + "\\n")


class Acquisition(typing.NamedTuple):
    scanner: str
    date: datetime.date


class Scans(ExternalBase):
    """A zoo dataset: NIfTI images in a folder, their metadata in a CSV table."""

    def __init__(self, root, calls):
        super().__init__(fields=["image", "affine", "patient", "site", "acquisition"], inputs=["id"],
                         properties=["ids"], inherit=["id"])
        self.root, self.calls = pathlib.Path(root), calls

    @property
    def ids(self):
        return tuple(sorted(p.name[:-4] for p in self.root.glob("*.nii")))

    def _row(self, i):
        with open(self.root / "meta.csv") as f:
            return next(row for row in csv.DictReader(f) if row["id"] == i)

    def image(self, i):
        count(self.calls, "image " + i)
        return np.asanyarray(nibabel.load(self.root / f"{i}.nii").dataobj)  # an np.memmap

    def affine(self, i):
        return nibabel.load(self.root / f"{i}.nii").affine

    def patient(self, i):
        return self._row(i)["patient"]

    def site(self, i):
        return self._row(i)["site"]

    def acquisition(self, i):
        count(self.calls, "acquisition " + i)
        row = self._row(i)
        return Acquisition(row["scanner"], datetime.date.fromisoformat(row["date"]))


class Patients(Source):
    """A Source over a CSV table; each function names the key as it likes."""

    _root: str
    _calls: str

    @meta
    def ids(_root):
        with open(pathlib.Path(_root) / "patients.csv") as f:
            return sorted(row["patient"] for row in csv.DictReader(f))

    def _row(key, _root):
        with open(pathlib.Path(_root) / "patients.csv") as f:
            return next(row for row in csv.DictReader(f) if row["patient"] == key)

    def patient(i):
        return i

    def birth(_row, _calls):
        count(_calls, "birth")
        return datetime.date.fromisoformat(_row["birth"])

    def registered(pid, _row):
        return datetime.datetime.fromisoformat(_row["registered"])

    def registered_utc(patient_id, _row):
        return datetime.datetime.fromisoformat(_row["registered"]).replace(tzinfo=datetime.timezone.utc)

    def registered_local(k, _row):
        zone = zoneinfo.ZoneInfo("Europe/Berlin")
        return datetime.datetime.fromisoformat(_row["registered"]).replace(tzinfo=zone)

    def visit_time(key, _row):
        return datetime.time.fromisoformat(_row["time"])

    def follow_up(key, _row):
        return datetime.timedelta(days=int(_row["follow_up_days"]))

    def weight(key, _row):
        return decimal.Decimal(_row["weight"])

    def folder(key, _root):
        return pathlib.Path(_root) / key

    def uid(key):
        return uuid.uuid5(uuid.NAMESPACE_URL, key)

    def visits(key, _row):
        return np.array(_row["visits"].split(";"), dtype="datetime64[D]")

    def last_visit(key, _row):
        return np.datetime64(_row["visits"].split(";")[-1], "D")

    def lag(key):
        return np.timedelta64(len(key), "h")

    def history(key, _row):
        first = datetime.date.fromisoformat(_row["birth"])
        return [first, {"weight": decimal.Decimal(_row["weight"]), "at": datetime.time(8, 30)}]
'''

PATIENTS_CSV = """patient,birth,registered,time,follow_up_days,weight,visits
p1,1980-02-03,2020-01-02T03:04:05.000006,08:30:00,30,71.50,2020-01-02;2020-03-04
p2,1975-06-07,2021-05-06T07:08:09,14:00:00,7,80.25,2021-05-06
p4,1990-10-11,2022-09-10T11:12:13,09:15:30,0,65.00,2022-09-10;2022-10-10;2022-11-11
"""


@pytest.fixture
def zoo(tmp_path, monkeypatch):
    """The helper module ``zoo`` (on ``sys.path``) and a data folder: three NIfTI scans, two sites."""
    (tmp_path / "zoo.py").write_text(ZOO)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("zoo", None)
    import zoo

    data = tmp_path / "data"
    data.mkdir()
    rows = ["id,patient,site,scanner,date"]
    for i, (patient, site) in enumerate([("p1", "A"), ("p2", "A"), ("p3", "B")]):
        image = np.arange(24, dtype=np.int16).reshape(2, 3, 4) * (i + 1)
        nibabel.save(nibabel.Nifti1Image(image, np.diag([1.0, 1.0, 2.5, 1.0])), data / f"s{i}.nii")
        rows.append(f"s{i},{patient},{site},scanner-{i % 2},2020-0{i + 1}-15")
    (data / "meta.csv").write_text("\n".join(rows) + "\n")
    (data / "patients.csv").write_text(PATIENTS_CSV)
    zoo.data = data
    zoo.calls_file = tmp_path / "calls.txt"
    zoo.calls_file.touch()
    yield zoo
    sys.modules.pop("zoo", None)


def calls(zoo, what=None):
    lines = zoo.calls_file.read_text().splitlines()
    return len(lines) if what is None else lines.count(what)


def scans(zoo):
    return zoo.Scans(zoo.data, str(zoo.calls_file))


def patients(zoo):
    return zoo.Patients(root=str(zoo.data), calls=str(zoo.calls_file))


# 1. a Source's functions may each name the key ----------------------------------------------------

def test_source_functions_name_the_key_differently(zoo):
    ds = patients(zoo)
    assert ds.ids == ["p1", "p2", "p4"]
    assert (ds.patient("p2"), ds.birth("p2"), ds.weight("p2")) == ("p2", datetime.date(1975, 6, 7),
                                                                    decimal.Decimal("80.25"))
    assert ds.uid("p1") == uuid.uuid5(uuid.NAMESPACE_URL, "p1")

    with pytest.raises(FieldError, match="'title' takes several key arguments"):
        class Books(Source):
            def title(i, key):  # one function, two key arguments
                return i


# 2. GroupBy, Join and CheckIds after an ExternalBase ----------------------------------------------

def test_dataset_layers_after_an_external_base(zoo):
    for ds in (scans(zoo), scans(zoo) >> Filter(lambda site: site in "AB"),
               scans(zoo) >> Transform(__inherit__=True), scans(zoo) >> CacheToRam()):
        by_site = ds >> GroupBy("site")
        assert by_site.ids == ("A", "B")
        assert by_site.patient("A") == {"s0": "p1", "s1": "p2"}
        checked = ds >> CheckIds()
        assert checked.patient("s2") == "p3"
        with pytest.raises(UnknownKey):
            checked.patient("s9")

    joined = Join(scans(zoo), patients(zoo), on="patient")  # p3 has no row, p4 no scan
    assert joined.ids == ("p1", "p2")
    assert (joined.site("p2"), joined.birth("p1")) == ("A", datetime.date(1980, 2, 3))
    assert (joined.image("p2") == np.arange(24).reshape(2, 3, 4) * 2).all()


# 3. numpy array subclasses (nibabel's memmaps) are arrays ----------------------------------------

def test_a_memmap_from_nibabel_is_cached_as_an_array(zoo, tmp_path):
    assert type(scans(zoo).image("s1")) is np.memmap
    root = tmp_path / "cache"
    first = scans(zoo) >> CacheToDisk.simple("image", "affine", root=root)
    for key in first.ids:
        first.image(key), first.affine(key)
    assert calls(zoo) == 1 + 3

    again = scans(zoo) >> CacheToDisk.simple("image", "affine", root=root)  # a new pipeline object
    image = again.image("s2")
    assert calls(zoo) == 1 + 3  # read from disk
    assert type(image) is np.ndarray and image.dtype == np.int16 and image.shape == (2, 3, 4)
    assert (image == np.arange(24).reshape(2, 3, 4) * 3).all()
    assert (again.affine("s0") == np.diag([1.0, 1.0, 2.5, 1.0])).all()


def test_each_field_of_an_external_base_entry_is_cached_apart(zoo, tmp_path):
    """connectome's disk cache returns one value for every field of an ExternalBase entry (its methods
    share the class's hash); ours keeps them apart, and apart per data folder."""
    root = tmp_path / "cache"
    first = scans(zoo) >> CacheToDisk.simple("patient", "site", "image", root=root)
    assert (first.patient("s0"), first.site("s0")) == ("p1", "A")
    again = scans(zoo) >> CacheToDisk.simple("patient", "site", "image", root=root)
    assert (again.patient("s0"), again.site("s0")) == ("p1", "A")

    other = tmp_path / "other"
    shutil.copytree(zoo.data, other)
    nibabel.save(nibabel.Nifti1Image(np.ones((2, 2, 2), np.int16), np.eye(4)), other / "s0.nii")
    elsewhere = zoo.Scans(other, str(zoo.calls_file)) >> CacheToDisk.simple("image", root=root)
    assert (elsewhere.image("s0") == 1).all() and (again.image("s0") == np.arange(24).reshape(2, 3, 4)).all()


# 4. dates, decimals, paths, UUIDs, numpy datetimes and namedtuples, without pickle ---------------

EXPECTED = {
    "birth": datetime.date(1980, 2, 3),
    "registered": datetime.datetime(2020, 1, 2, 3, 4, 5, 6),
    "registered_utc": datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=datetime.timezone.utc),
    "registered_local": datetime.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin")),
    "visit_time": datetime.time(8, 30),
    "follow_up": datetime.timedelta(days=30),
    "weight": decimal.Decimal("71.50"),
    "uid": uuid.uuid5(uuid.NAMESPACE_URL, "p1"),
    "last_visit": np.datetime64("2020-03-04"),
    "lag": np.timedelta64(2, "h"),
    "history": [datetime.date(1980, 2, 3), {"weight": decimal.Decimal("71.50"), "at": datetime.time(8, 30)}],
}


def test_common_value_types_are_stored_natively(zoo, tmp_path):
    root = tmp_path / "cache"
    names = [*EXPECTED, "folder", "visits"]
    first = patients(zoo) >> CacheToDisk.simple(*names, root=root)
    for name in names:
        getattr(first, name)("p1")
    assert calls(zoo, "birth") == 1

    again = patients(zoo) >> CacheToDisk.simple(*names, root=root)
    for name, expected in EXPECTED.items():
        value = getattr(again, name)("p1")
        assert value == expected and type(value) is type(expected), name
        if name == "registered_local":
            assert str(value.tzinfo) == "Europe/Berlin"
    assert again.folder("p1") == zoo.data / "p1" and type(again.folder("p1")) is type(zoo.data)
    visits = again.visits("p1")
    assert visits.dtype == np.dtype("datetime64[D]") and list(visits) == [np.datetime64("2020-01-02"),
                                                                          np.datetime64("2020-03-04")]
    assert calls(zoo, "birth") == 1  # read back, not recomputed

    tags = set()
    for path in root.rglob("*.h5"):
        with h5py.File(path, "r") as f:
            f.visit(lambda name, f=f: tags.add(f[name].attrs.get("t")))
            tags.add(f["value"].attrs["t"])
    assert b"pickle" not in tags and {b"date", b"datetime", b"decimal", b"uuid", b"path", b"timearray"} <= tags


def test_a_namedtuple_reads_back_without_importing_the_users_module(zoo, tmp_path):
    root = tmp_path / "cache"
    ds = scans(zoo) >> CacheToDisk.simple("acquisition", root=root)
    stored = ds.acquisition("s1")
    assert stored == zoo.Acquisition("scanner-1", datetime.date(2020, 2, 15))

    again = scans(zoo) >> CacheToDisk.simple("acquisition", root=root)
    value = again.acquisition("s1")
    assert calls(zoo, "acquisition s1") == 1
    assert value == stored and type(value).__name__ == "Acquisition" and value._fields == ("scanner", "date")
    assert value.date == datetime.date(2020, 2, 15)
    assert pickle.loads(pickle.dumps(value)) == value

    # another process, where the module `zoo` cannot be imported, decodes the entry
    script = textwrap.dedent(f"""
        import sys
        from connectome_dask.cache.hdf5 import HDF5Store
        store = HDF5Store({str(root)!r})
        (field, token, *_), = store.entries()
        value = store.get(field, token)
        print(type(value).__name__, value._fields, value.scanner, value.date.isoformat(), "zoo" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and p != str(tmp_path))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd="/",
                         timeout=120)
    assert out.stdout.split() == ["Acquisition", "('scanner',", "'date')", "scanner-1", "2020-02-15", "False"], \
        out.stderr


# 5. field functions stay on the class -------------------------------------------------------------

def test_field_functions_are_class_attributes(zoo):
    ds = patients(zoo)
    assert zoo.Patients.birth.__name__ == "birth" and zoo.Patients.uid("p1") == uuid.uuid5(uuid.NAMESPACE_URL, "p1")
    assert ds.birth != zoo.Patients.birth and ds.birth("p4") == datetime.date(1990, 10, 11)
    assert pickle.loads(pickle.dumps(zoo.Patients.birth)) is zoo.Patients.birth
    assert pickle.loads(pickle.dumps(ds.birth))("p1") == datetime.date(1980, 2, 3)
    assert zoo.Scans.image.__name__ == "image" and scans(zoo).image != zoo.Scans.image


# 6. _wrap / _decorate with a name that is not a field ---------------------------------------------

def test_wrap_and_decorate_of_an_unknown_name_raise_field_error(zoo):
    pipeline = patients(zoo) >> Transform(__inherit__=True)
    with pytest.raises(FieldError, match="'bmi'"):
        pipeline._wrap(lambda bmi: bmi, "bmi")
    with pytest.raises(FieldError):
        pipeline._decorate("bmi")
    with pytest.raises(DependencyError):  # what it raised before stays true
        pipeline._decorate("bmi")


# 7. CacheColumns with the serializers connectome users pass ---------------------------------------

@pytest.mark.parametrize("serializer", [JsonSerializer(), ChainSerializer(JsonSerializer(), NumpySerializer()),
                                        [NumpySerializer(), JsonSerializer()], PickleSerializer()],
                         ids=["json", "chain", "list", "pickle"])
def test_cache_columns_with_connectome_serializers(zoo, tmp_path, serializer):
    long = CacheColumns(tmp_path / "index", tmp_path / "storage", serializer, ["patient", "site"])
    ds = scans(zoo) >> long
    assert [ds.patient(k) for k in ds.ids] == ["p1", "p2", "p3"]
    assert sorted(f for f, *_ in long._store.entries()) == ["patient"]  # one shard file
    again = scans(zoo) >> CacheColumns(tmp_path / "index", tmp_path / "storage", serializer, ["patient"])
    assert again.patient("s2") == "p3"


def test_cache_columns_numpy_serializer_and_arrays(zoo, tmp_path):
    ds = scans(zoo) >> CacheColumns(None, tmp_path / "storage", NumpySerializer(), ["image"], shard_size=2)
    assert (ds.image("s2") == np.arange(24).reshape(2, 3, 4) * 3).all()
    assert calls(zoo) == 1  # the shard of s2 alone
    again = scans(zoo) >> CacheColumns(None, tmp_path / "storage", NumpySerializer(), ["image"], shard_size=2)
    assert (again.image("s2") == ds.image("s2")).all() and calls(zoo) == 1
    with pytest.raises(TypeError, match="NumpySerializer"):  # a str is not an array: the value is judged
        (scans(zoo) >> CacheColumns(None, tmp_path / "other", NumpySerializer(), ["patient"])).patient("s0")


def test_cache_columns_empty_names_and_unreachable_inputs(zoo, tmp_path):
    ds = scans(zoo) >> CacheColumns(None, tmp_path / "storage", None, [])  # accepted: caches nothing
    ds.image("s0"), ds.image("s0")
    assert calls(zoo, "image s0") == 2

    needs_label = scans(zoo) >> Transform(__inherit__=True, score=lambda image, label: image.sum() * label)
    with pytest.raises(DependencyError, match="'score' needs \\['label'\\]"):
        needs_label >> CacheColumns(None, tmp_path / "storage", None, ["score"])  # at >>, not at first access


# 8. nothing runs in the background after a call returns -------------------------------------------

def test_temporary_cache_roots_are_removed_right_after_use(zoo):
    for _ in range(10):
        with tempfile.TemporaryDirectory() as root:  # cleanup failed one time in four
            ds = scans(zoo) >> CacheToDisk.simple("image", "patient", "site", root=root)
            for key in ds.ids:
                ds.image(key), ds.patient(key), ds.site(key)
            assert sorted(os.listdir(os.path.join(root, "site"))) == sorted(
                {name[0] for name in os.listdir(os.path.join(root, "site")) if len(name) == 1})
            assert len(os.listdir(os.path.join(root, "site"))) <= 3  # only the folders of the entries


# 9. a cache root whose marker was deleted ---------------------------------------------------------

def test_a_cache_removed_while_the_pipeline_lives(zoo, tmp_path):
    root = tmp_path / "cache"
    ds = scans(zoo) >> CacheToDisk.simple("image", root=root)
    ds.image("s0")
    shutil.rmtree(root)  # rm -rf cache
    ds.image("s1")  # computed and stored again: the writer remakes the folders
    assert calls(zoo) == 2
    again = scans(zoo) >> CacheToDisk.simple("image", root=root)  # not refused as a foreign folder
    again.image("s1")
    assert calls(zoo) == 2


# 10. ds.image.delayed(key) on an ExternalBase -----------------------------------------------------

def test_external_base_methods_are_fields(zoo):
    ds = scans(zoo)
    expected = np.arange(24).reshape(2, 3, 4) * 2
    assert (ds.image("s1") == expected).all() and calls(zoo, "image s1") == 1  # the user's method, same argument
    (image,) = dask.compute(ds.image.delayed("s1"), scheduler="sync")
    assert (image == expected).all() and calls(zoo, "image s1") == 2
    assert (ds.image.delayed(i="s1").compute(scheduler="sync") == expected).all()
    assert (pickle.loads(pickle.dumps(ds.image))("s1") == expected).all()
    assert (ds._compile("image")("s1") == expected).all()
    assert ds.image.__connectome_token__() == ds._compile("image").__connectome_token__()
    assert ds.image.__name__ == "image" and list(ds.image.__signature__.parameters) == ["i"]
    cached = ds >> CacheToDisk.simple("image", root=zoo.data.parent / "cache")
    assert (cached.image.delayed("s0").compute(scheduler="sync") == expected / 2).all()
