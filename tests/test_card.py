"""Dataset cards: facts from the data, Hub-valid front matter, reports, curation, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from alldata.card import UNKNOWN, CardError, Selection, _md, gather_facts, read_benchmark, size_category, write_card
from alldata.cli import app
from alldata.config import home
from alldata.curation import REJECT_TAG
from alldata.imageio import inspect_image
from alldata.schema import Box, CellType, Diagnosis, F, Provenance, Sample
from alldata.synthetic import make_synthetic_sample
from tests._fixtures import write_image
from tests.test_benchmark import make_cells_dataset, tiny_recipe

runner = CliRunner()
GAN_SHA = "ab" * 32
OVL_SHA = "cd" * 32


def _real(tmp: Path, source: str, sid: str, licence: str, seed: int, **labels) -> Sample:
    path = write_image(tmp / source / f"{sid}.png", (24, 24), seed=seed)
    info = inspect_image(path)
    return Sample(
        filepath=str(path), source=source, source_id=sid, sha256=info.sha256, license=licence, citation=f"{source} paper",
        group_id=f"{source}/{sid}", image_kind=labels.pop("image_kind", "cell"), width=info.width, height=info.height,
        size_bytes=info.size_bytes, mime_type=info.mime_type, num_channels=info.num_channels, **labels,
    )


def make_card_dataset(name: str, tmp: Path) -> dict[str, list[str]]:
    """A tiny dataset: 3 BCCD smears (boxes), 4 PBC cells (one tagged reject), 2 ALL-IDB2 cells,
    2 GAN cells and 1 overlap composite made from an ALL-IDB2 donor. Returns keys by source."""
    from alldata.store import open_dataset, to_fiftyone

    samples = []
    for i in range(3):
        samples.append(_real(tmp, "bccd", f"BloodImage_{i:05d}", "MIT", i, image_kind="smear",
                             cells=[Box(label=CellType.wbc, bbox=(0.1, 0.2, 0.3, 0.4)), Box(label=CellType.rbc, bbox=(0.5, 0.5, 0.2, 0.2))]))
    for i, ct in enumerate([CellType.lymphocyte, CellType.neutrophil, CellType.neutrophil, CellType.monocyte]):
        samples.append(_real(tmp, "pbc", f"{ct.value}/PB_{i}.jpg", "CC BY 4.0", 10 + i, cell_type=ct, diagnosis=Diagnosis.healthy))
    for i in range(2):
        samples.append(_real(tmp, "all_idb2", f"Im00{i}_1", "ALL-IDB terms", 20 + i, cell_type=CellType.lymphoblast,
                             diagnosis=Diagnosis.ALL))
    for i in range(2):
        p = write_image(tmp / "gan" / f"g{i}.png", (16, 16), seed=30 + i)
        samples.append(make_synthetic_sample(
            p, family="gan", source_id=f"g{i}", cell_type=CellType.lymphoblast,
            provenance=Provenance(generator="gan", checkpoint_sha256=GAN_SHA, seed=i, condition={"cell_type": "lymphoblast", "batch_index": 0}),
        ))
    recipe = json.dumps({"background": {"key": "bccd/BloodImage_00000"}, "cells": [{"donor": "all_idb2/Im000_1"}]})
    p = write_image(tmp / "overlap" / "o0.png", (24, 24), seed=40)
    samples.append(make_synthetic_sample(
        p, family="overlap", source_id="0_0", image_kind="smear", cells=[Box(label=CellType.lymphoblast, bbox=(0.2, 0.2, 0.4, 0.4))],
        provenance=Provenance(generator="overlap", checkpoint_sha256=OVL_SHA, seed=0, condition={"overlap_range": [0.1, 0.5]}, recipe=recipe),
    ))
    ds = open_dataset(name)
    ds.add_samples([to_fiftyone(s) for s in samples], progress=False)
    keys = ds.values(F.KEY)
    order = ["train", "val", "test"]
    ds.set_values(F.SPLIT, {k: order[i % 3] for i, k in enumerate(sorted(keys))}, key_field=F.KEY)
    ds.match({F.KEY: "pbc/monocyte/PB_3.jpg"}).tag_samples(REJECT_TAG)
    out: dict[str, list[str]] = {}
    for k in keys:
        out.setdefault(k.rsplit("/", 1)[0] if k.startswith("synthetic/") else k.split("/")[0], []).append(k)
    return out


@pytest.fixture
def card_ds(dataset_name, tmp_path):
    make_card_dataset(dataset_name, tmp_path / "img")
    return dataset_name


@pytest.fixture
def bench_run(dataset_name, tmp_path):
    """A real run of the tiny benchmark engine (two classes of drawn cells, 2 folds, 1 seed)."""
    import fiftyone as fo
    import torch

    from alldata.benchmark.engine import run_benchmark

    torch.set_num_threads(1)
    name = f"{dataset_name}-cells"
    try:
        make_cells_dataset(tmp_path / "cells", name)
        recipe = tiny_recipe(arms=("real", "oracle", "oversample"), seeds=[0])
        yield run_benchmark(recipe, name, tmp_path / "bench", progress=False, write_back=False)
    finally:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def _write_reports(dataset: str) -> None:
    d = home() / "datasets" / dataset
    d.mkdir(parents=True, exist_ok=True)
    base = {"dataset": dataset, "synthetic_view": "generator=gan", "real_view": "split=train", "n_real": 5, "n_fake": 2,
            "encoder": {"kind": "cnn"}}
    (d / "score-20200101-000000.json").write_text(json.dumps({**base, "created": "2020-01-01T00:00:00", "metrics": {"fd": 999.0}}))
    (d / "score-20200102-000000.json").write_text(json.dumps({**base, "created": "2020-01-02T00:00:00", "metrics": {
        "fd": 12.5, "kid_mean": 0.25, "kid_std": 0.01, "precision": 0.75, "recall": 0.5, "copy_rate": 0.0}}))


def test_card_front_matter_is_hub_valid_and_sections_come_from_the_data(card_ds, bench_run, tmp_path):
    _write_reports(card_ds)
    path = write_card(card_ds, tmp_path / "card", benchmarks=[bench_run.out_dir])
    card = DatasetCard.load(path)
    d = card.data.to_dict()
    # front matter: keys and types the Hub expects
    assert isinstance(d["license"], list) and {"mit", "cc-by-4.0", "other"} <= set(d["license"])
    assert isinstance(d["license_name"], str) and d["license_link"] == "LICENSE.md"
    assert d["size_categories"] == [size_category(11)] == ["n<1K"]
    assert d["task_categories"] == ["image-classification", "object-detection"]
    assert d["annotations_creators"] == ["found", "machine-generated"]
    assert all(isinstance(s, str) for s in d["source_datasets"]) and "extended|all_idb2" in d["source_datasets"]
    assert "synthetic" in d["tags"] and all(isinstance(t, str) for t in d["tags"])
    text = card.text
    # composition: the rejected pbc sample is left out (4 - 1 = 3)
    assert "| `pbc` | 3 | cell 3 |" in text
    assert "| `bccd` | 3 | smear 3 |" in text
    assert "1 sample(s) tagged `reject`" in text
    assert "**Samples:** 11 (8 real, 3 synthetic)" in text
    # provenance: checkpoint, conditions without batch_index, inputs from the overlap recipe, GAN inputs unknown
    assert GAN_SHA in text and OVL_SHA in text and "batch_index" not in text
    ovl = next(line for line in text.splitlines() if OVL_SHA in line)
    assert "all_idb2, bccd" in ovl and "recipe" in ovl
    gan = next(line for line in text.splitlines() if GAN_SHA in line)
    assert "not recorded" in gan and UNKNOWN in gan
    # quality: the latest score report of the view, not the older one
    assert "| 12.5 |" in text and "999" not in text
    # benchmark gains of the engine's run: its recipe name, confidence level, every gain with its CI and n pairs
    summary = bench_run.summary
    assert "### tiny-rare" in text and "95 % bootstrap confidence intervals" in text
    assert len(summary.gains) == 2 * len(summary.metrics)  # oracle and oversample vs real
    for g in summary.gains:
        row = (f"| {g.arm} | random_forest | {g.metric} | real | {_md(g.mean)} | {_md(g.ci_low)} | {_md(g.ci_high)} "
               f"| {g.n_pairs} |")
        assert row in text and g.n_pairs == 2
    # limits and licences
    assert "ALL-IDB2 ⊂ ALL-IDB1" in text and "publish no patient id" in text
    assert "redistribution **forbidden**" in text and "Not for diagnosis" in text
    assert "Donida Labati" in text  # the citation of all_idb2
    assert (tmp_path / "card" / "LICENSE.md").read_text().count("## ") == 5  # one section per source


def test_card_of_an_allowed_real_selection(card_ds, tmp_path):
    facts = gather_facts(card_ds, Selection(sources=("bccd",)))
    assert facts["n"] == 3 and facts["n_synthetic"] == 0 and facts["all_allowed"]
    assert facts["split"]["leaking_groups"] == 0
    path = write_card(card_ds, tmp_path / "c", Selection(sources=("bccd",)))
    card = DatasetCard.load(path)
    assert card.data.license == "mit" and card.data.annotations_creators == ["found"]
    assert "license_name" not in card.data.to_dict()
    assert "No benchmark run" in card.text and "No synthetic samples in this selection." in card.text
    # re-running gives the same card
    assert write_card(card_ds, tmp_path / "c", Selection(sources=("bccd",))).read_text() == card.content


def test_selection_and_benchmark_errors_name_the_problem(card_ds, tmp_path):
    with pytest.raises(CardError, match="nope"):
        gather_facts(card_ds, Selection(sources=("nope",)))
    with pytest.raises(CardError, match="holdout"):
        gather_facts(card_ds, Selection(splits=("holdout",)))
    bad = tmp_path / "bench"
    bad.mkdir()
    with pytest.raises(CardError, match="metrics.json does not exist"):
        read_benchmark(bad)
    (bad / "metrics.json").write_text("{not json")
    with pytest.raises(CardError, match="metrics.json is not a benchmark summary"):
        read_benchmark(bad)
    (bad / "metrics.json").write_text(json.dumps({"per_cell": []}))
    with pytest.raises(CardError, match=r"is not a benchmark summary \(schema_version 1\)"):
        read_benchmark(bad)


def test_cli_card(card_ds, tmp_path):
    r = runner.invoke(app, ["card", card_ds, "--out", str(tmp_path / "cli"), "--sources", "bccd,pbc",
                            "--trained-on", "gan=pbc"])
    assert r.exit_code == 0, r.output
    assert DatasetCard.load(tmp_path / "cli" / "README.md").data.license == ["cc-by-4.0", "mit"]
    r = runner.invoke(app, ["card", card_ds, "--out", str(tmp_path / "cli"), "--sources", "nope"])
    assert r.exit_code == 1 and "nope" in r.output
