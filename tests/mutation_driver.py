"""Run by ``test_mutations.py`` in a fresh process: apply each edit of a batch to the project's files on
disk, import the project afresh, and check the cache keys and values on the eager path, ``.delayed``
on a 2-worker ``LocalCluster`` started (and made to import the project) before the edits, and
``persist``. Prints one JSON line: the baseline keys and one result per edit.

usage: python mutation_driver.py PROJECT_DIR ROOT MUTATIONS_JSON
"""

import importlib
import json
import os
import sys

PROJECT_MODULES = ("project", "helpers", "pkg", "pkg.sub")


def load(project_dir):
    for name in PROJECT_MODULES:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()
    return importlib.import_module("project")


def observe(project, root, ids, fields):
    """Keys of the plain fields and eager values without a cache."""
    raw = project.pipeline(os.path.join(root, "A"))._drop_cache()
    keys = {f: [getattr(raw, f).delayed(i).key for i in ids] for f in fields}
    values = {f: [getattr(raw, f)(i) for i in ids] for f in fields}
    return raw, keys, values


def distributed_values(client, pipeline, field, ids):
    return list(client.gather(client.compute([getattr(pipeline, field).delayed(i) for i in ids])))


def check(project, root, client, ids, field, base_keys, base_values, mutation):
    raw, keys, values = observe(project, root, ids, [field])
    fresh = values[field]
    result = {"name": mutation["name"], "field": field, "invalidates": mutation["invalidates"],
              "key_changed": keys[field] != base_keys[field], "value_changed": fresh != base_values[field]}
    disk = project.pipeline(os.path.join(root, "A"))
    report = disk.persist(client, fields=[field], progress=False)
    result["persist_computed"] = report.computed
    result["eager_ok"] = [getattr(disk, field)(i) for i in ids] == fresh
    lazy = project.pipeline(os.path.join(root, "B"))  # not persisted: the workers load or compute
    result["delayed_ok"] = distributed_values(client, lazy, field, ids) == fresh
    result["raw_delayed_ok"] = distributed_values(client, raw, field, ids) == fresh
    expected_computed = len(ids) if mutation["invalidates"] else 0
    result["wrong"] = [what for what, bad in [
        ("stale key" if mutation["invalidates"] else "needless new key",
         result["key_changed"] != mutation["invalidates"]),
        ("persist computed %d" % report.computed, report.computed != expected_computed),
        ("eager value", not result["eager_ok"]),
        ("delayed value", not result["delayed_ok"]),
        ("delayed value without cache", not result["raw_delayed_ok"]),
    ] if bad]
    return result


def main(project_dir, root, mutations_json):
    sys.path.insert(0, project_dir)
    with open(mutations_json) as f:
        mutations = json.load(f)
    from distributed import Client, LocalCluster

    project = load(project_dir)
    ids = list(project.pipeline(root).ids)
    fields = project.FIELDS
    env = {"PYTHONPATH": os.pathsep.join([project_dir, os.environ.get("PYTHONPATH", "")]),
           "PYTHONDONTWRITEBYTECODE": "1"}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40,
                      env=env) as cluster, Client(cluster) as client:
        # the workers hold the project's code as it is before any edit
        client.run(lambda: [importlib.import_module(m).__name__ for m in PROJECT_MODULES])
        _, base_keys, base_values = observe(project, root, ids, fields)
        baseline = {"A": project.pipeline(os.path.join(root, "A")).persist(client, progress=False).computed,
                    "B": project.pipeline(os.path.join(root, "B")).persist(client, progress=False).computed}
        results = []
        originals = {}
        for mutation in mutations:
            path = mutation["file"] and os.path.join(project_dir, mutation["file"])
            try:
                if path:
                    originals[path] = text = originals.get(path) or open(path).read()
                    for old, new in mutation["edits"]:
                        assert text.count(old) == 1, (mutation["name"], old)
                        text = text.replace(old, new)
                    with open(path, "w") as f:
                        f.write(text)
                project = load(project_dir)
                if not path:
                    exec(mutation["edits"], {"project": project, "helpers": sys.modules["helpers"]})
                results.append(check(project, root, client, ids, mutation["field"], base_keys, base_values,
                                     mutation))
            except Exception as e:  # noqa: BLE001 - reported as a wrong result
                results.append({"name": mutation["name"], "wrong": [f"{type(e).__name__}: {e}"]})
            finally:
                if path:
                    with open(path, "w") as f:
                        f.write(originals[path])
    print(json.dumps({"keys": base_keys, "baseline_computed": baseline, "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:])
