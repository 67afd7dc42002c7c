"""WebDataset shards: the writer (atomic, manifest, index files) and the DALI loader reading them (CPU)."""
import json

import pytest
import torch

from conftest import require
from loaders.shards import main as shards_main, read_manifest, write_shards
from sdmp_fast.data.folders import DataError, scan_folder
from sdmp_fast.augment.recipes import mocov3_recipe

pytestmark = pytest.mark.dali
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def shards(image_folder, tmp_path_factory):
    require("nvidia.dali", "dali")
    out = tmp_path_factory.mktemp("shards")
    assert shards_main([str(image_folder), str(out), "--per-shard", "10"]) == 0
    return out


def test_writer_manifest_and_refusals(shards, image_folder, capsys):
    m = read_manifest(shards / "train")
    split = scan_folder(image_folder / "train")[0]
    assert m["num_samples"] == len(split) and m["classes"] == list(split.classes)
    assert [s["count"] for s in m["shards"]] == [10, 10, 10, 6] and (shards / "val" / "manifest.json").is_file()
    assert not list(shards.glob("*.partial"))
    with pytest.raises(DataError, match="already exists; pass --overwrite"):
        write_shards(image_folder / "train", shards, progress=False)
    assert shards_main([str(image_folder), str(shards)]) == 2 and "already exists" in capsys.readouterr().err
    (shards / "broken").mkdir()
    with pytest.raises(DataError, match="no manifest.json"):
        read_manifest(shards / "broken")


def test_dali_reads_shards_disjoint_per_rank_with_true_labels(shards, image_folder):
    import loaders.dali as dali
    split = scan_folder(image_folder / "train")[0]
    m = read_manifest(shards / "train")
    recipe = mocov3_recipe(16, 0.2, MEAN, STD)
    per_rank, orders = [], []
    for rank in range(2):
        ld = dali.DaliLoader(None, recipe, 8, rank, 2, torch.device("cpu"), seed=0, threads=1, manifest=m)
        epochs = []
        for epoch in range(2):
            ld.set_epoch(epoch)
            batches = list(ld)
            assert len(batches) == len(ld) == len(split) // 8
            for b in batches:
                b.check()
                assert b.label.tolist() == [split.samples[i][1] for i in b.index.tolist()]
            epochs.append([i for b in batches for i in b.index.tolist()])
        per_rank.append(set(epochs[0]) | set(epochs[1]))
        orders.append(epochs)
        ld.set_epoch(1, start_step=1)  # resume: the epoch's batches from step 1 on
        assert [i for b in ld for i in b.index.tolist()] == epochs[1][4:]
    assert not per_rank[0] & per_rank[1]              # ranks read disjoint halves
    assert orders[0][0] != orders[0][1]               # reshuffled every epoch


def test_webdataset_cli_run(shards, tmp_path):
    """(Its config errors, data.format=webdataset with another loader or with run.knn, are in test_check_config.py.)"""
    from pathlib import Path

    from sdmp_fast.pretrain import run
    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    summary = run(["--config", smoke, "--loader", "dali", "--data", str(shards), "--out", str(tmp_path / "run"),
                   "data.format=webdataset", "data.dali_threads=1", "sdmp.enabled=true"], progress=False)
    assert summary["steps"] == 2
    assert "shards in" in json.dumps(json.loads((tmp_path / "run" / "config.yaml").read_text().splitlines()[-1]))
