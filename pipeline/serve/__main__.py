"""Serve the similar-image search page of one experiment.

    python -m pipeline.serve --experiment demo [--epoch 14] [--artifacts artifacts]
                             [--host 127.0.0.1] [--port 8765] [--k 10] [--max-upload-mb 10]

Prints ``serving http://127.0.0.1:PORT/`` once it listens, then serves until
interrupted (Ctrl-C or SIGTERM). Errors (no such experiment, no search index,
port taken) print ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys

from pipeline.errors import PipelineError
from pipeline.serve.app import SearchApp
from pipeline.serve.options import add_arguments, from_args
from pipeline.serve.server import make_server, server_url
from pipeline.serve.service import SearchService


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="demo", help="experiment name (default: demo)")
    parser.add_argument("--epoch", type=int, help="epoch shown first (default: the last one with a search index)")
    parser.add_argument("--artifacts", default="artifacts", help="artifacts root (default: artifacts)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = from_args(args)
        service = SearchService(args.artifacts, args.experiment, device=settings.device)
        epoch = service.latest_epoch() if args.epoch is None else args.epoch
        service.searcher(epoch)  # open it now: a missing index or epoch fails here, not on the first visit
        server = make_server(SearchApp(service, settings, epoch), settings.host, settings.port)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # SIGTERM (what `kill` and test harnesses send) ends the server like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {server_url(server)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
