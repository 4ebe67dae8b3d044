"""``python -m pipeline.search``: the nearest indexed images of image files or of dataset images.

    python -m pipeline.search --experiment demo --epoch 14 shoe.jpg bag.png
    python -m pipeline.search --experiment demo --epoch 14 --id 123 --k 5 --json
    python -m pipeline.search --experiment demo --epoch 14 --html results.html shoe.jpg

Build the epoch's index first: ``luigi --module tasks SearchIndex --experiment demo --epoch 14
--local-scheduler``. Bad input (an unreadable image, an unknown experiment, an epoch
that is not trained or not indexed) prints ``error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.data.pixel_store import open_store
from pipeline.errors import PipelineError
from pipeline.experiment_config import RunSettings
from pipeline.search.index import read_search_meta
from pipeline.search.locate import dataset_folder, locate
from pipeline.search.preprocess import decode_inputs, input_name, pixels_png
from pipeline.search.results_page import QueryResult, write_results_page

if TYPE_CHECKING:  # imported in main(), after the input checks: it loads torch
    from pipeline.search.searcher import Hit, Searcher

THUMBNAIL = 96


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__.split("\n\n")[0],
                                epilog="Indexed images are found with the network of the chosen epoch; "
                                       "query images are decoded and embedded exactly as validation images are.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files to query with (JPEG, PNG, any size)")
    p.add_argument("--experiment", default=RunSettings.experiment, help="experiment name (default: %(default)s)")
    p.add_argument("--epoch", type=_non_negative, required=True, help="trained and indexed epoch")
    p.add_argument("--k", type=_positive, default=10, help="neighbours per query (default: %(default)s)")
    p.add_argument("--id", type=_non_negative, action="append", default=[], dest="ids", metavar="ID",
                   help="query with the dataset image of this id (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    p.add_argument("--html", metavar="OUT", help="also write a page with thumbnails to OUT")
    p.add_argument("--artifacts", default="artifacts", help="artifacts root (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device for the network (default: %(default)s)")
    return p


def checked_inputs(args: argparse.Namespace) -> np.ndarray:
    """Check that the experiment, epoch and index exist and decode every image file at the
    dataset's stored size; raise the error naming what is wrong. Needs no torch, so bad
    input is refused at once, before the network loads."""
    found = locate(args.artifacts, args.experiment, args.epoch)
    meta = read_search_meta(found.search_dir)
    size = int(open_store(dataset_folder(args.artifacts, args.experiment, meta)).shape[1])
    return decode_inputs(args.images, size)


def run_queries(searcher: Searcher, ids: list[int], images: list[str], pixels: np.ndarray,
                k: int) -> list[QueryResult]:
    """Search every ``--id`` and then every image file (``pixels``: the files decoded)."""
    results = []
    for image_id in ids:
        label = int(searcher.describe(image_id)["label"])
        results.append(QueryResult(f"id {image_id}", searcher.thumbnail_png(image_id, THUMBNAIL),
                                   searcher.search_id(image_id, k), image_id=image_id, label=label))
    hits = searcher.search_vectors(searcher.embed_pixels(pixels), k)
    for name, image, found in zip(images, pixels, hits):
        results.append(QueryResult(input_name(name), pixels_png(image, THUMBNAIL), found))
    return results


def to_json(searcher: Searcher, results: list[QueryResult], k: int) -> dict[str, Any]:
    """The ``--json`` document."""
    def hit(rank: int, h: Hit) -> dict[str, Any]:
        source = searcher.source_path(h)
        return {"rank": rank, **asdict(h), "source_path": str(source) if source else None}

    return {
        "experiment": searcher.experiment, "epoch": searcher.epoch, "k": k,
        "indexed": {"count": searcher.count, "splits": list(searcher.meta["splits"]),
                    "dataset_dir": str(searcher.dataset_dir)},
        "queries": [{"query": q.name, "kind": "file" if q.image_id is None else "id", "image_id": q.image_id,
                     "label": q.label, "hits": [hit(r, h) for r, h in enumerate(q.hits, 1)]} for q in results],
    }


def format_text(searcher: Searcher, results: list[QueryResult]) -> str:
    """One table per query: rank, image id, class, distance, source path ("-" if none)."""
    head = ("rank", "image_id", "class", "distance", "source")
    right = {0, 1, 3}  # numbers align right
    out = [f"{searcher.experiment}, epoch {searcher.epoch}: {searcher.count} indexed "
           + "+".join(searcher.meta["splits"]) + " images"]
    for q in results:
        rows = [(str(r), str(h.image_id), h.class_name, f"{h.distance:.4f}", str(searcher.source_path(h) or "-"))
                for r, h in enumerate(q.hits, 1)]
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        out += ["", f"query: {q.name}"]
        out += ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                .rstrip() for row in [head, *rows]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Run the command; 0 on success, 2 with ``error: ...`` on stderr for bad input."""
    args = parser().parse_args(argv)
    if not args.images and not args.ids:
        parser().error("give at least one IMAGE or --id ID to query with")
    try:
        pixels = checked_inputs(args)
        from pipeline.search.searcher import Searcher

        searcher = Searcher.from_artifacts(args.artifacts, args.experiment, args.epoch, device=args.device)
        results = run_queries(searcher, args.ids, args.images, pixels, args.k)
        if args.html:
            write_results_page(args.html, searcher, results)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(to_json(searcher, results, args.k), indent=2) if args.json else format_text(searcher, results))
        if args.html and not args.json:
            print(f"\nwrote {args.html}")
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader stopped early (`| head`): that is not an error. Point stdout at
        # /dev/null so Python's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
