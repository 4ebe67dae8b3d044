"""``python -m pipeline.export --experiment E --epoch N [--artifacts ROOT] [--force] OUT``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.export.writer import export_model


def main(argv: list[str] | None = None) -> int:
    """Run the export; print what was written, or `error: ...` on stderr and return 2."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.export",
                                     description="Export an epoch's embedding network as TorchScript plus "
                                                 "preprocessing.json.")
    parser.add_argument("--experiment", required=True, help="experiment name (folder under the artifacts root)")
    parser.add_argument("--epoch", type=int, required=True, help="trained epoch to export (0 = initial network)")
    parser.add_argument("--artifacts", default="artifacts", help="artifacts root (default: artifacts)")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    parser.add_argument("out", metavar="OUT", type=Path, help="folder to write model.pt and preprocessing.json to")
    args = parser.parse_args(argv)
    try:
        meta = export_model(args.artifacts, args.experiment, args.epoch, args.out, force=args.force)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported epoch {args.epoch} of experiment {args.experiment!r} to {args.out}: "
          f"{paths.EXPORT_MODEL_FILE} ({meta['model_settings']['arch']}, {meta['embedding_dim']}-d, input "
          f"{meta['input_size']}x{meta['input_size']} RGB in [0, 1]) and {paths.EXPORT_PREPROCESSING_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
