"""MARC -> Instances -> denormalized records: records/s and peak RSS at 1k, 10k and 100k records.

The 4,909 real records of bibs.mrc are repeated to reach each size. Each measurement runs in a
fresh process pinned to one core, so peak RSS is that run's own. Prints one line per size:
`records=… seconds=… records_per_s=… peak_rss_mb=…` (medians over --repeats runs).

    python benchmarks/ingest.py [--sizes 1000,10000,100000] [--repeats 3]
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

REPO = Path(__file__).resolve().parent.parent
RAW = REPO / "data" / "raw"
if not RAW.exists():
    RAW = REPO.parent / "shared" / "data" / "raw"


def write_corpus(size: int, path: Path) -> None:
    records = (RAW / "marc" / "bibs.mrc").read_bytes().split(b"\x1d")
    records = [r + b"\x1d" for r in records if r.strip()]
    with open(path, "wb") as out:
        for i in range(size):
            out.write(records[i % len(records)])


def measure(corpus: Path, work: Path) -> dict:
    from folio_llm.folio.reference import ReferenceData
    from folio_llm.params import parse_params
    from folio_llm.pipeline import denormalize_file
    from folio_llm.sources import convert, source_items
    from folio_llm.records import Denormalizer

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    params = parse_params({})
    folio = RAW / "folio"
    start = time.perf_counter()
    items = source_items("marc", [str(corpus)], str(folio / "mapping-rules" / "marc-bib.json"), str(folio / "reference-data"))
    counts = convert(items, work / "instances.jsonl", work / "rejects.jsonl")
    denormalizer = Denormalizer(ReferenceData.load(folio / "reference-data"), params.denormalize.fields,
                                params.denormalize.identifier_types)
    denormalize_file(work / "instances.jsonl", work / "denormalized.jsonl", work / "drejects.jsonl", denormalizer)
    seconds = time.perf_counter() - start
    return {"records": counts.read, "seconds": seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


@click.command()
@click.option("--sizes", default="1000,10000,100000", show_default=True, help="Corpus sizes, comma-separated.")
@click.option("--repeats", default=3, show_default=True, help="Runs per size; medians are printed.")
@click.option("--child", type=click.Path(), hidden=True)
def main(sizes, repeats, child):
    if child:
        corpus = Path(child)
        print(json.dumps(measure(corpus, corpus.parent)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for size in [int(s) for s in sizes.split(",")]:
            corpus = Path(tmp) / f"corpus-{size}.mrc"
            write_corpus(size, corpus)
            runs = []
            for _ in range(repeats):
                out = subprocess.run([sys.executable, __file__, "--child", str(corpus)],
                                     capture_output=True, text=True, check=True).stdout
                runs.append(json.loads(out.strip().splitlines()[-1]))
            seconds = statistics.median(r["seconds"] for r in runs)
            rss = statistics.median(r["peak_rss_mb"] for r in runs)
            print(f"records={runs[0]['records']} seconds={seconds:.2f} records_per_s={runs[0]['records'] / seconds:.0f} "
                  f"peak_rss_mb={rss:.0f} runs={repeats}", flush=True)
            corpus.unlink()


if __name__ == "__main__":
    main()
