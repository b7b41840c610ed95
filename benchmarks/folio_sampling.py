"""Drawing a random sample from a FOLIO inventory: random UUID boundaries vs random offsets.

Cost: folioclient for real against the loopback tenant of tests/folio_server.py, holding a
synthetic inventory (the 132 real sample instances repeated under random v4 ids). Each
strategy draws the same sample; the table gives requests, records transferred, the rows a
PostgreSQL index scan on `id` would visit (counted by the server: an offset walks past every
row before it, an exact count visits all), and wall time. The seconds are this Python
server's, which filters in memory: compare requests and rows, not seconds.

Uniformity: the same sampler code over an in-memory page source, one draw per seed. How evenly
records are drawn (coefficient of variation of the inclusion counts; a perfectly uniform
sampler shows the binomial CV), how many records were never drawn, and, for an inventory
whose ids are half sequential (like mod-search's synthetic set), the share of the sample
taken from that half (a uniform sampler: 50%), and how often the manifest's id_spread check
calls the ids not random, for random and for half-sequential ids.

    python benchmarks/folio_sampling.py [--size 20000] [--sample 1000] [--population 2000] [--seeds 300]
"""
from __future__ import annotations

import bisect
import random
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

CONFIGS = [("uuid", 1), ("uuid", 10), ("offset", 1), ("offset", 10)]


def random_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(count)]


class CountingPages:
    """InstancePages that also counts the records it received."""

    def __init__(self, pages):
        self.pages = pages
        self.records = 0

    def count(self, cql, exact):
        return self.pages.count(cql, exact)

    def page(self, cql, limit, offset=0):
        batch = self.pages.page(cql, limit, offset)
        self.records += len(batch)
        return batch


class MemoryPages:
    """The sampler's page source over a sorted id list, for the unfiltered queries it sends."""

    def __init__(self, ids: list[str]):
        self.ids = sorted(ids)
        self.records = [{"id": i} for i in self.ids]

    def count(self, cql, exact):
        return len(self.ids)

    def page(self, cql, limit, offset=0):
        start = 0
        if m := re.search(r'id>="([^"]+)"', cql):
            start = bisect.bisect_left(self.ids, m.group(1))
        elif m := re.search(r'id>"([^"]+)"', cql):
            start = bisect.bisect_right(self.ids, m.group(1))
        return self.records[start + offset:start + offset + limit]


def cost(size: int, sample: int) -> list[dict]:
    from conftest import RAW, REFERENCE
    from folio_llm.folio.api import Credentials, FolioApi, RetryPolicy
    from folio_llm.folio.reference import ReferenceData
    from folio_llm.folio.snapshot import InstancePages, draw_sample, read_by_id
    from folio_llm.sources import iter_json_instances
    from folio_server import FolioServer, Tenant

    real = [item.instance for item in iter_json_instances([RAW / "folio" / "instances"])]
    records = [{**real[i % len(real)], "id": rid} for i, rid in enumerate(random_ids(size, 0))]
    tenant = Tenant(records, ReferenceData.load(REFERENCE).entries, None)
    rows = []
    with FolioServer(tenant) as url:
        credentials = Credentials(url, tenant.tenant, tenant.username, tenant.password)
        with FolioApi.connect(credentials, RetryPolicy(attempts=1, timeout=120)) as api:
            runs = [(f"{strategy}, page {page}", strategy, page) for strategy, page in CONFIGS] + [("read all", None, 0)]
            for label, strategy, page in runs:
                pages = CountingPages(InstancePages(api))
                requests, scanned = api.requests, tenant.rows_scanned
                started = time.perf_counter()
                if strategy:
                    drawn = len(list(draw_sample(pages, sample, 42, strategy=strategy, page_size=page).records))
                else:
                    drawn = sum(1 for _ in read_by_id(pages.page))
                rows.append({"strategy": label, "drawn": drawn, "requests": api.requests - requests,
                             "records": pages.records, "rows_scanned": tenant.rows_scanned - scanned,
                             "seconds": round(time.perf_counter() - started, 2)})
    return rows


def _alarm(sample) -> bool:
    """Whether the id_spread check calls the ids not random (pages of 1 give it no gaps)."""
    from folio_llm.folio.snapshot import ids_look_random

    return sample.spread is not None and not ids_look_random(sample.spread, sample.gaps)


def uniformity(population: int, sample: int, seeds: int) -> list[dict]:
    from folio_llm.folio.snapshot import draw_sample

    random_population = random_ids(population, 1)
    half = population // 2
    clustered = random_ids(population - half, 2) + [f"{i + 1:08x}-0000-4000-8000-000000000000" for i in range(half)]
    sequential = set(clustered[population - half:])
    p = sample / population
    ideal_cv = ((1 - p) / (seeds * p)) ** 0.5
    rows = []
    for strategy, page in CONFIGS:
        counts = dict.fromkeys(random_population, 0)
        for seed in range(seeds):
            for record in draw_sample(MemoryPages(random_population), sample, seed, strategy=strategy,
                                      page_size=page).records:
                counts[record["id"]] += 1
        values = list(counts.values())
        cv = statistics.pstdev(values) / statistics.mean(values)
        alarms_random = sum(_alarm(draw_sample(MemoryPages(random_population), sample, seed, strategy=strategy,
                                               page_size=page)) for seed in range(seeds))
        from_sequential = total = alarms_clustered = 0
        for seed in range(seeds):
            drawn = draw_sample(MemoryPages(clustered), sample, seed, strategy=strategy, page_size=page)
            alarms_clustered += _alarm(drawn)
            for record in drawn.records:
                total += 1
                from_sequential += record["id"] in sequential
        rows.append({"strategy": f"{strategy}, page {page}", "cv": round(cv, 3), "ideal_cv": round(ideal_cv, 3),
                     "never_drawn": round(values.count(0) / population, 4),
                     "max_over_mean": round(max(values) / statistics.mean(values), 2),
                     "sequential_share": round(from_sequential / total, 3),
                     "alarm": "n/a" if page == 1 else f"{alarms_random / seeds:.0%} / {alarms_clustered / seeds:.0%}"})
    return rows


def project(size: int, sample: int, page: int) -> dict:
    """Rows an index scan visits for one sample of ``sample`` from ``size`` records."""
    draws = -(-sample // page)
    return {"offset": size + draws * (size // 2 + page), "uuid": draws * page}


@click.command()
@click.option("--size", default=20000, show_default=True, help="Inventory served over HTTP (cost).")
@click.option("--sample", default=1000, show_default=True, help="Sample size for the cost runs.")
@click.option("--population", default=2000, show_default=True, help="Inventory for the uniformity runs.")
@click.option("--uniform-sample", default=100, show_default=True, help="Sample size for the uniformity runs.")
@click.option("--seeds", default=300, show_default=True, help="Draws (seeds) per uniformity run.")
def main(size, sample, population, uniform_sample, seeds):
    click.echo(f"cost: {sample} of {size} records over HTTP (loopback, folioclient)")
    click.echo("| strategy | drawn | requests | records received | index rows visited | seconds |")
    click.echo("|---|---:|---:|---:|---:|---:|")
    for r in cost(size, sample):
        click.echo(f"| {r['strategy']} | {r['drawn']} | {r['requests']} | {r['records']:,} | {r['rows_scanned']:,} "
                   f"| {r['seconds']} |")
    click.echo(f"\nuniformity: {uniform_sample} of {population} records, {seeds} seeds")
    click.echo("| strategy | CV of inclusion (binomial ideal) | never drawn | most drawn / mean "
               "| share from the sequential half | id_spread alarm: random / half-sequential ids |")
    click.echo("|---|---:|---:|---:|---:|---:|")
    for r in uniformity(population, uniform_sample, seeds):
        click.echo(f"| {r['strategy']} | {r['cv']} ({r['ideal_cv']}) | {r['never_drawn']:.2%} | {r['max_over_mean']} "
                   f"| {r['sequential_share']:.1%} | {r['alarm']} |")
    click.echo("\nprojected index rows visited for 1,000 of 10,000,000 (count + draws):")
    for page in (1, 10):
        figures = project(10_000_000, 1000, page)
        click.echo(f"page {page}: offset {figures['offset']:,}, uuid {figures['uuid']:,}")


if __name__ == "__main__":
    main()
