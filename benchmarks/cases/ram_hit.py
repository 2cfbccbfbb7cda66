"""``CacheToRam`` hit time per field."""

from common import args, per_call, report
import pipelines


def main():
    a = args()
    number = 2000 if a.quick else 20000
    if a.lib == "raw":
        cache = {7: 41}
        report({"us_per_hit": per_call(lambda: cache[7], number) * 1e6})
        return
    c = pipelines.load(a.lib)
    ds = pipelines.cheap(a.lib) >> c.CacheToRam()
    ds.value(7)
    report({"us_per_hit": per_call(lambda: ds.value(7), number) * 1e6})


main()
