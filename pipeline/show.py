"""Look at pipeline artifacts from the command line.

    python -m pipeline.show triplets --experiment demo --epoch 3
    python -m pipeline.show dataset
    python -m pipeline.show audit --experiment demo --epoch 5

Prints a triplet list's row count, per-class query and negative counts, query
coverage, mining-time distance statistics and a sample with class names.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pipeline import paths
from pipeline.audit.epoch import read_audit, top_suspects
from pipeline.data.pixel_store import read_index
from pipeline.data.settings import recorded_dataset_dir
from pipeline.errors import PipelineError
from pipeline.paths import DATASET_SUMMARY_FILE as SUMMARY_FILE
from pipeline.paths import SKIPPED_FILE
from pipeline.sampling.list_files import read_triplet_meta, read_triplets
from pipeline.sampling.mining_summary import summarize_triplets


def triplet_report(triplets: pd.DataFrame, index: pd.DataFrame, *, margin: float = 1.0, sample: int = 8,
                   seed: int = 0) -> str:
    """The text that ``show triplets`` prints."""
    names = index.set_index("image_id")["class_name"]
    train = index[index["split"] == "train"]
    class_names = train.drop_duplicates("label").set_index("label")["class_name"].sort_index()
    per_class = pd.DataFrame({
        "class": class_names,
        "queries": triplets["query_label"].value_counts().reindex(class_names.index, fill_value=0),
        "as_negative": triplets["negative_label"].value_counts().reindex(class_names.index, fill_value=0),
        "train_images": train["label"].value_counts().reindex(class_names.index, fill_value=0),
    })
    covered = triplets["query"].nunique()
    lines = [
        f"rows: {len(triplets)}",
        f"queries covered: {covered} of {len(train)} training images ({covered / max(len(train), 1):.1%})",
        f"queries per image: min {triplets['query'].value_counts().min()}, "
        f"max {triplets['query'].value_counts().max()}",
        "",
        "per class:",
        per_class.to_string(),
        "",
    ]
    summary = summarize_triplets(triplets, margin)
    lines.append("strategy: " + ", ".join(f"{k} {v:.1%}" for k, v in summary["strategy_share"].items()))
    if summary["rows_with_distances"]:
        lines.append(f"at mining time: {summary['satisfied_share']:.1%} already satisfied "
                     f"(d_qn > d_qp + {margin:g}), {summary['active_share']:.1%} active (non-zero loss)")
        q = pd.DataFrame(summary["quantiles"]).T
        lines += ["distance quantiles:", q.to_string(float_format=lambda v: f"{v:.3f}")]
    else:
        lines.append("no mining-time distances (uniform sampling)")
    if "batches" in summary:
        b = summary["batches"]
        fmt = lambda d: f"min {d['min']}, median {d['median']:g}, max {d['max']}"  # noqa: E731
        lines += [f"batches: {b['batches']} (each distinct image forwarded once per batch)",
                  f"triplets per batch: {fmt(b['triplets_per_batch'])}",
                  f"distinct images per batch: {fmt(b['images_per_batch'])}",
                  f"triplets per image forwarded: {b['triplets_per_image']:.2f} (a plain list: 0.33)"]
    else:
        lines.append("no batch structure: each row forwards its own three images")
    rows = triplets.sample(min(sample, len(triplets)), random_state=seed)
    shown = pd.DataFrame({
        "query": rows["query"], "query_class": names.reindex(rows["query"]).to_numpy(),
        "positive": rows["positive"], "positive_class": names.reindex(rows["positive"]).to_numpy(),
        "negative": rows["negative"], "negative_class": names.reindex(rows["negative"]).to_numpy(),
        "strategy": rows["strategy"].astype(str),
    })
    if "batch" in rows.columns:
        shown.insert(0, "batch", rows["batch"].to_numpy())
    lines += ["", "sample:", shown.to_string(index=False)]
    return "\n".join(lines)


def audit_report(audit_file: Path, index: pd.DataFrame, *, top: int = 15) -> str:
    """The text that ``show audit`` prints: the summary, the most suspect labels (lowest
    quality first) with class names, and the duplicates that leak validation into training."""
    summary, images, pairs = read_audit(audit_file)
    names = index.drop_duplicates("label").set_index("label")["class_name"]
    lines = [f"{audit_file}", json.dumps(summary, indent=2), ""]
    suspects = top_suspects(images, top)
    shown = pd.DataFrame({"image_id": suspects["image_id"],
                          "given": names.reindex(suspects["given_label"]).to_numpy(),
                          "suggested": names.reindex(suspects["suggested_label"]).to_numpy(),
                          "quality": suspects["quality"].round(3)})
    if "flipped" in suspects.columns:
        shown["flipped"] = suspects["flipped"].to_numpy()
    lines += [f"most suspect labels ({len(suspects)} of {int(images['suspect'].sum())}):",
              shown.to_string(index=False) if len(shown) else "none", ""]
    leaks = pairs[pairs["leakage"]].head(top)
    lines += [f"validation images that duplicate a training image ({int(pairs['leakage'].sum())}):",
              leaks.to_string(index=False) if len(leaks) else "none"]
    return "\n".join(lines)


def _dataset_dir(root: str, dataset: str | None, experiment: str | None = None) -> Path:
    """The named dataset; else the one ``experiment`` was created on; else the only one there is."""
    base = paths.datasets_dir(root)
    if dataset:
        return base / dataset
    recorded = recorded_dataset_dir(root, experiment) if experiment else None
    if recorded is not None:
        return recorded
    found = sorted(p for p in base.glob("*") if (p / SUMMARY_FILE).is_file()) if base.is_dir() else []
    if len(found) != 1:
        raise PipelineError(f"found {len(found)} indexed datasets under {base}; name one with --dataset "
                            f"({', '.join(p.name for p in found) or 'none: run IndexDataset first'})")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.show", description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", default="artifacts", help="artifacts root (default: artifacts)")
    parser.add_argument("--dataset", help="dataset folder name under artifacts/datasets (default: the only one)")
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("triplets", help="summarise one epoch's triplet list")
    t.add_argument("--experiment", default="demo")
    t.add_argument("--epoch", type=int, required=True)
    t.add_argument("--sample", type=int, default=8, help="rows to show")
    d = sub.add_parser("dataset", help="summarise the dataset index and skipped files")
    a = sub.add_parser("audit", help="summarise one epoch's label audit (AuditEpoch)")
    a.add_argument("--experiment", default="demo")
    a.add_argument("--epoch", type=int, required=True)
    a.add_argument("--top", type=int, default=15, help="suspects and leaks to list")
    for p in (t, d, a):  # accept the common options after the subcommand too
        p.add_argument("--artifacts", default=argparse.SUPPRESS)
        p.add_argument("--dataset", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        ds = _dataset_dir(args.artifacts, args.dataset, getattr(args, "experiment", None))
        if args.what == "dataset":
            print(json.dumps(json.loads((ds / SUMMARY_FILE).read_text()), indent=2))
            skipped = pd.read_parquet(ds / SKIPPED_FILE)
            if len(skipped):
                print("skipped files:\n" + skipped.to_string(index=False))
            return 0
        if args.what == "audit":
            index = read_index(ds, ["image_id", "label", "class_name"])
            print(audit_report(paths.audit_file(args.artifacts, args.experiment, args.epoch), index, top=args.top))
            return 0
        tdir = paths.triplets_dir(args.artifacts, args.experiment, args.epoch)
        meta = read_triplet_meta(tdir) if (tdir / paths.TRIPLET_LIST_FILE).is_file() else {}
        margin = float(meta.get("settings", {}).get("margin", 1.0))
        print(f"{tdir}  (strategy {meta.get('strategy', '?')}, seed {meta.get('seed', '?')})")
        print(triplet_report(read_triplets(tdir), read_index(ds), margin=margin, sample=args.sample))
        return 0
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
