"""Training recipes under label noise, side by side in one run, on the embedded dataset.

    .venv/bin/python bench/bench_noise.py                                  # everything below, 14 epochs
    .venv/bin/python bench/bench_noise.py --noise sym0.2,sym0.4 --recipes audit,pml-all,pml-semihard
    .venv/bin/python bench/bench_noise.py --noise 0 --recipes default,audit --seed 1   # another seed
    .venv/bin/python bench/bench_noise.py --quick                          # 2 epochs: a smoke test

Noise settings (``--noise``): ``0`` (clean), ``symS`` (share S of the training labels
flipped uniformly to another class) and ``pairsS`` (each flipped label goes to the
next class, the asymmetric noise of the literature); the flips are ``[run]
label_noise`` / ``label_noise_kind``'s, seeded by ``[run] seed``.

Recipes (``--recipes``):

* ``uniform``: the course protocol (``strategy = uniform``, the loss averaged over
  all listed triplets), 2 triplets per training image: 36k images forwarded per epoch.
* ``default``: the shipped luigi.cfg (batched lists mined offline, 42k images).
* ``audit``: the default with ``[TripletList] suspects = exclude``: from ``audit_from``
  on, each epoch's list leaves out the suspects of the previous epoch's audit.
* ``pml-all`` / ``pml-semihard``: pytorch-metric-learning's recipe
  (``MPerClassSampler`` with the default's classes and images per batch,
  ``TripletMarginLoss(margin=1)`` on unsquared L2, all in-batch triplets or a
  semihard ``TripletMarginMiner``) on the same network, initial weights, optimiser,
  schedule, augmentation and images per epoch as the default, trained on the same
  flipped labels.

Ours run the real command (``luigi --module tasks RunAll``) with the shipped luigi.cfg
and an override file, into ``--artifacts`` (kept: a rerun skips the experiments that
are complete, so an interrupted bench resumes). Every recipe is scored on the
validation split against the training gallery's *true* labels (``precision_at_30_val_true``).
The audit recipe's detection of the flipped labels at the last epoch is compared with
cleanlab's ``Datalab.find_issues(features=...)`` on the same embeddings
(``bench_audit.compare_detectors``). Results also go to ``<artifacts>/bench-noise-*.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo on sys.path)
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("uniform", "default", "audit", "pml-all", "pml-semihard")
OURS = {
    "uniform": {"TripletList": {"strategy": "uniform", "triplets_per_query": 2}, "loss": {"reduce": "mean"}},
    "default": {},
    "audit": {"TripletList": {"suspects": "exclude"}},
}


def parse_noise(token: str) -> tuple[float, str]:
    """``0`` | ``symS`` | ``pairsS`` -> (share, kind)."""
    for kind, prefix in (("symmetric", "sym"), ("pairs", "pairs")):
        if token.startswith(prefix):
            return float(token[len(prefix):]), kind
    if float(token) != 0:
        raise ValueError(f"noise {token!r}: write 0, symS or pairsS (e.g. sym0.2)")
    return 0.0, "symmetric"


def experiment_name(recipe: str, token: str, seed: int) -> str:
    return f"noise-{recipe}-{'clean' if parse_noise(token)[0] == 0 else token}" + (f"-seed{seed}" if seed else "")


def shipped(section: str, key: str) -> str:
    import configparser

    parser = configparser.ConfigParser()
    parser.read(REPO / "luigi.cfg")
    return parser[section][key]


def run_ours(recipe: str, token: str, root: Path, epochs: int, seed: int, log: Path) -> dict:
    """RunAll for one recipe and noise setting; returns its curve and seconds per epoch."""
    share, kind = parse_noise(token)
    name = experiment_name(recipe, token, seed)
    sections: dict[str, dict[str, object]] = {
        "artifacts": {"root": root},
        "core": {"lock_pid_dir": root / "luigi-locks"},
        "run": {"experiment": name, "epochs": epochs, "seed": seed, "label_noise": share, "label_noise_kind": kind},
    }
    for section, values in OURS[recipe].items():
        sections.setdefault(section, {}).update(values)
    config = root / f"{name}.cfg"
    config.write_text("\n".join(f"[{s}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                                for s, values in sections.items()))
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with log.open("a") as out:
        done = subprocess.run([sys.executable, "-m", "luigi", "--module", "tasks", "RunAll"], cwd=REPO, env=env,
                              stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise SystemExit(f"{name}: RunAll exited {done.returncode}; see {log}")
    curve, seconds = [], []
    for epoch in range(epochs + 1):
        metrics = json.loads((root / name / "metrics" / f"epoch-{epoch:03d}.json").read_text())
        curve.append(metrics.get("precision_at_30_val_true", metrics["precision_at_30_val"]))
        if epoch:
            seconds.append(json.loads((root / name / "train" / f"epoch-{epoch:03d}" / "_summary.json").read_text())
                           ["seconds"])
    print(f"  {name}: precision@30 (true) {curve[-1]:.3f}, {time.perf_counter() - started:.0f} s", flush=True)
    return {"curve": curve, "seconds": seconds}


def run_pml(recipe: str, token: str, data, epochs: int, seed: int) -> dict:
    """pytorch-metric-learning's recipe (bench_recipes.pml) on the flipped labels."""
    import torch
    from bench_recipes import BASE, MODEL, pml

    from pipeline.data.label_noise import LabelNoise, flip_labels
    from pipeline.network import build_model
    from pipeline.seeds import initial_network_seed
    from pipeline.training.optimization import make_lr_scheduler, make_optimizer

    share, kind = parse_noise(token)
    given = flip_labels(data.labels, LabelNoise(share, kind), seed)
    per_class = int(shipped("TripletList", "batch_seeds"))
    batch = per_class * int(shipped("TripletList", "batch_classes"))
    images = int(shipped("TripletList", "image_passes")) * len(data.ids)
    torch.manual_seed(initial_network_seed(seed))  # the initial weights of our runs with this seed
    net = build_model(MODEL).to(memory_format=torch.channels_last)
    optimizer = make_optimizer(net, BASE)
    scheduler = make_lr_scheduler(optimizer, BASE)
    curve, seconds = [data.evaluate(net)[0]], []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        pml(recipe, data, net, optimizer, epoch, labels=given, per_class=per_class, batch=batch, images=images,
            seed=seed)
        scheduler.step()
        seconds.append(time.perf_counter() - started)
        curve.append(data.evaluate(net)[0])
    print(f"  {experiment_name(recipe, token, seed)}: precision@30 (true) {curve[-1]:.3f}, "
          f"{sum(seconds):.0f} s training", flush=True)
    return {"curve": curve, "seconds": seconds}


def report(results: dict, noises: list[str], recipes: list[str], detection: dict, epochs: int) -> list[str]:
    lines = ["validation precision@30 against the true gallery labels, last epoch (best epoch in brackets)", "",
             "| recipe | " + " | ".join(noises) + " |", "|---|" + "---|" * len(noises)]
    for r in recipes:
        cells = [f"{results[r][n]['curve'][-1]:.3f} ({max(results[r][n]['curve'][1:]):.3f})" for n in noises]
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    lines += ["", "seconds of training per epoch (mean)", "",
              "| recipe | " + " | ".join(noises) + " |", "|---|" + "---|" * len(noises)]
    for r in recipes:
        lines.append(f"| {r} | " + " | ".join(f"{np.mean(results[r][n]['seconds']):.1f}" for n in noises) + " |")
    for n in noises:
        lines += ["", f"by epoch, noise {n}", "", "| epoch | " + " | ".join(recipes) + " |",
                  "|---|" + "---|" * len(recipes)]
        lines += [f"| {e} | " + " | ".join(f"{results[r][n]['curve'][e]:.3f}" for r in recipes) + " |"
                  for e in range(epochs + 1)]
    pmls = [r for r in recipes if r.startswith("pml")]
    if "audit" in recipes and pmls:
        lines += ["", "audit minus the better PML recipe, last epoch"]
        lines += [f"- {n}: {results['audit'][n]['curve'][-1] - max(results[r][n]['curve'][-1] for r in pmls):+.3f}"
                  for n in noises]
    if "audit" in recipes and "default" in recipes:
        lines += ["", "audit minus default, last epoch"]
        lines += [f"- {n}: {results['audit'][n]['curve'][-1] - results['default'][n]['curve'][-1]:+.3f}"
                  for n in noises]
    if detection:
        from bench_audit import detection_table

        lines += ["", f"detection of the flipped labels at epoch {epochs}", "", *detection_table(detection)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--noise", default="0,sym0.2,sym0.4,pairs0.2", help="comma-separated: 0, symS, pairsS")
    ap.add_argument("--recipes", default=",".join(RECIPES), help=f"comma-separated subset of {RECIPES}")
    ap.add_argument("--epochs", type=int, default=int(shipped("run", "epochs")))
    ap.add_argument("--seed", type=int, default=int(shipped("run", "seed")), help="[run] seed of every recipe")
    ap.add_argument("--artifacts", type=Path, default=REPO / "artifacts" / "bench-noise",
                    help="artifacts root of our runs (kept; complete experiments are not rerun)")
    ap.add_argument("--quick", action="store_true", help="2 epochs (a smoke test, not a result)")
    a = ap.parse_args()
    recipes = [r.strip() for r in a.recipes.split(",") if r.strip()]
    if sorted(set(recipes) - set(RECIPES)):
        ap.error(f"unknown recipes {sorted(set(recipes) - set(RECIPES))}; choose from {RECIPES}")
    noises = [n.strip() for n in a.noise.split(",") if n.strip()]
    for n in noises:
        try:
            parse_noise(n)
        except ValueError as err:
            ap.error(str(err))
    epochs = 2 if a.quick else a.epochs
    root = a.artifacts.resolve()
    root.mkdir(parents=True, exist_ok=True)
    log = root / "bench-noise.log"
    print(f"{len(recipes)} recipes x {len(noises)} noise settings, {epochs} epochs, seed {a.seed}; "
          f"our runs under {root} (log: {log})", flush=True)
    results: dict[str, dict[str, dict]] = {r: {} for r in recipes}
    data = None
    for n in noises:
        for r in recipes:
            if r in OURS:
                results[r][n] = run_ours(r, n, root, epochs, a.seed, log)
                continue
            if data is None:
                from bench_recipes import Data

                data = Data(root / "pml-dataset", 1.0)
            results[r][n] = run_pml(r, n, data, epochs, a.seed)
    detection = {}
    if "audit" in recipes:
        from bench_audit import compare_detectors

        from pipeline.audit.settings import AuditSettings

        for n in noises:
            if parse_noise(n)[0] > 0:
                detection[n] = compare_detectors(root, experiment_name("audit", n, a.seed), epochs,
                                                 AuditSettings.epochs)
    lines = report(results, noises, recipes, detection, epochs)
    print("\n" + "\n".join(lines))
    (root / f"bench-noise-{'-'.join(noises)}-seed{a.seed}.json").write_text(
        json.dumps({"epochs": epochs, "seed": a.seed, "results": results, "detection": detection}, indent=1))


if __name__ == "__main__":
    main()
