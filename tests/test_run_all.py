"""The whole job on tiny data: every stage's artifacts appear and the report is complete."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

import tasks
from tests.support import assert_succeeded, build


def test_run_all_writes_every_artifact(fast_pipeline, tmp_path: Path):
    result = build([tasks.RunAll()])
    assert_succeeded(result)
    exp = tmp_path / "artifacts" / "test"
    for epoch in (1, 2):
        trip = pd.read_parquet(exp / "triplets" / f"epoch-{epoch:03d}")
        assert len(trip) == 36 and set(trip["epoch"]) == {epoch}
        assert (exp / "train" / f"epoch-{epoch:03d}" / "_checkpoint.pt").is_file()
        assert (exp / "embeddings" / f"epoch-{epoch:03d}" / "_manifest.json").is_file()
    metrics = [json.loads((exp / "metrics" / f"epoch-{e:03d}.json").read_text()) for e in range(3)]
    for m in metrics:
        for key in ("precision_at_30_val", "precision_at_30_train", "precision_at_1_val", "r_precision_val",
                    "map_at_r_val", "triplet_precision_val"):
            assert 0.0 <= m[key] <= 1.0, key
    report = exp / "report" / "epochs-002"
    html = (report / "index.html").read_text()
    for name in ("loss.png", "accuracy.png", "nearest.png", "farthest.png", "embedding_map.png", "summary.md"):
        assert (report / name).is_file(), name
    assert "embedding_map.png" in (report / "summary.md").read_text()
    assert "data:image/png;base64" in html
