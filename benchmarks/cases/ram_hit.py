"""``CacheToRam`` hit time per field: Source + 3 Transforms >> CacheToRam(), warmed, then hits.

raw: a dict lookup of the same keys."""

from common import args, per_call, report
import pipelines


def main():
    a = args()
    keys = list(range(1000))
    repeat = 5 if a.quick else 30
    if a.lib == "raw":
        cache = {k: pipelines.raw_value(k) for k in keys}
        call = cache.__getitem__
    else:
        ds = pipelines.cheap(a.lib) >> pipelines.load(a.lib).CacheToRam()
        call = ds.value
    assert [call(k) for k in keys] == [pipelines.raw_value(k) for k in keys]  # warms the cache
    report({"us_per_hit": per_call(call, keys, repeat) * 1e6}, a.json)


if __name__ == "__main__":
    main()
