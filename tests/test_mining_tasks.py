"""Mined triplet lists in the Luigi graph, and comparing experiments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from luigi.execution_summary import LuigiStatusCode

import tasks
from tests.support import assert_succeeded, build, fast_config


def _with(cfg: dict, section: str, **values) -> dict:
    cfg = {k: dict(v) for k, v in cfg.items()}
    cfg.setdefault(section, {}).update(values)
    return cfg


def test_mined_list_requires_previous_epoch_embeddings(configure, tmp_path, tiny_imagenet):
    configure(_with(fast_config(tmp_path, tiny_imagenet), "TripletList", strategy="semihard"))
    deps = tasks.TripletList(epoch=3).requires()
    assert deps["embeddings"] == tasks.EmbedEpoch(experiment="test", epoch=2)
    assert tasks.TripletList(epoch=1).requires()["embeddings"] == tasks.EmbedEpoch(experiment="test", epoch=0)


def test_uniform_list_and_unmined_first_epoch_need_no_embeddings(configure, tmp_path, tiny_imagenet):
    configure(fast_config(tmp_path, tiny_imagenet))
    assert "embeddings" not in tasks.TripletList(epoch=2).requires()
    configure(_with(fast_config(tmp_path, tiny_imagenet), "TripletList", strategy="semihard",
                    mine_first_epoch="false"))
    assert "embeddings" not in tasks.TripletList(epoch=1).requires()
    assert "embeddings" in tasks.TripletList(epoch=2).requires()


def test_run_all_interleaves_training_and_mining(configure, tmp_path, tiny_imagenet):
    configure(_with(fast_config(tmp_path, tiny_imagenet), "TripletList", strategy="mixed", mined_share=0.5,
                    mined_strategy="semihard"))
    result = build([tasks.RunAll()])
    assert_succeeded(result)
    exp = tmp_path / "artifacts" / "test"
    for epoch in (1, 2):
        df = pd.read_parquet(exp / "triplets" / f"epoch-{epoch:03d}")
        kinds = set(df["strategy"].astype(str))
        assert "uniform" in kinds and kinds - {"uniform"}, kinds
        mined = df[df["strategy"].astype(str) != "uniform"]
        assert np.isfinite(mined[["d_qp", "d_qn"]].to_numpy()).all()


def test_compare_two_experiments(configure, tmp_path, tiny_imagenet):
    cfg = fast_config(tmp_path, tiny_imagenet)
    configure(cfg)
    assert_succeeded(build([tasks.RunAll(experiment="uni")]))
    configure(_with(cfg, "TripletList", strategy="semihard"))
    assert_succeeded(build([tasks.RunAll(experiment="semi")]))
    result = build([tasks.Compare(experiments=["uni", "semi"])])
    assert_succeeded(result)
    out = Path(tmp_path / "artifacts" / "compare" / "uni--semi" / "epochs-002")
    html = (out / "index.html").read_text()
    assert "uni" in html and "semi" in html and "data:image/png;base64" in html
    assert (out / "compare.png").stat().st_size > 1000


def test_compare_names_a_missing_experiment(configure, tmp_path, tiny_imagenet):
    configure(fast_config(tmp_path, tiny_imagenet))
    result = build([tasks.Compare(experiments=["never-ran"])])
    assert result.status == LuigiStatusCode.MISSING_EXT
    assert "never-ran" in result.summary_text
