"""The typer CLI end to end (CliRunner), on fixtures and on the real data."""

from __future__ import annotations

import os
import subprocess
import sys

import fiftyone as fo
import pytest
from typer.testing import CliRunner

from alldata.cli import app
from tests._fixtures import make_bccd

runner = CliRunner()


def test_ingest_split_info(tmp_path, dataset_name):
    root = make_bccd(tmp_path / "BCCD", n=6)
    r = runner.invoke(app, ["ingest", "bccd", str(root), "--dataset", dataset_name])
    assert r.exit_code == 0, r.output
    assert "6 added" in r.output
    r = runner.invoke(app, ["ingest", "bccd", str(root), "--dataset", dataset_name])
    assert "0 added" in r.output and "6 unchanged" in r.output
    r = runner.invoke(app, ["split", "--dataset", dataset_name, "--by", "group", "--ratios", "0.5,0.5,0", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "no group and no file hash appears in two splits" in r.output
    assert set(fo.load_dataset(dataset_name).values("split")) <= {"train", "val"}
    r = runner.invoke(app, ["info", dataset_name])
    assert r.exit_code == 0 and "bccd" in r.output and "rbc 6" in r.output


def test_errors_are_one_clear_line(tmp_path, dataset_name):
    r = runner.invoke(app, ["ingest", "bcdd", "--dataset", dataset_name])
    assert r.exit_code == 1 and "Unknown source 'bcdd'" in r.output and "Did you mean 'bccd'" in r.output
    r = runner.invoke(app, ["ingest", "bccd", str(tmp_path / "missing"), "--dataset", dataset_name])
    assert r.exit_code == 1 and "BCCD not found" in r.output and "How to obtain it" in r.output
    r = runner.invoke(app, ["info", "no-such-dataset"])
    assert r.exit_code == 1 and "No dataset 'no-such-dataset'" in r.output
    r = runner.invoke(app, ["split", "--dataset", dataset_name, "--ratios", "1,1,1"])
    assert r.exit_code == 1 and "summing to 1" in r.output


def test_ingest_all_with_no_data_says_where_to_put_it(tmp_path, dataset_name, monkeypatch):
    monkeypatch.setenv("ALLDATA_DATA_ROOT", str(tmp_path / "empty"))
    r = runner.invoke(app, ["ingest", "--all", "--dataset", dataset_name])
    assert r.exit_code == 1 and "No data found under" in r.output and "alldata sources" in r.output


def test_sources_lists_every_layout():
    r = runner.invoke(app, ["sources"])
    assert r.exit_code == 0
    for text in ("all_idb1", "ALL_IDB1/im/", "cnmc", "training_data/fold_0", "atlas", "ALL_L3", "BCCD/"):
        assert text in r.output, text


def test_ingest_all_real_data(shared_data, dataset_name, monkeypatch):
    monkeypatch.setenv("ALLDATA_DATA_ROOT", str(shared_data))
    r = runner.invoke(app, ["ingest", "--all", "--dataset", dataset_name])
    assert r.exit_code == 0, r.output
    ds = fo.load_dataset(dataset_name)
    assert ds.count_values("source") == {
        "all_idb1": 30, "all_idb2": 260, "bccd": 364, "bccd_wbc": 351, "pbc": 800, "taleqani": 1085}
    assert len(ds.match_tags("duplicate")) == 82  # 40 Taleqani pairs + the ALL-IDB2 pair
    r = runner.invoke(app, ["split", "--dataset", dataset_name, "--seed", "0"])
    assert r.exit_code == 0, r.output
    keys = dict(zip(*ds.values(["key", "split"])))
    assert keys["bccd/BloodImage_00008"] == keys["bccd_wbc/Lymphocyte/BloodImage_00008_1.jpg"] if (
        "bccd_wbc/Lymphocyte/BloodImage_00008_1.jpg" in keys) else True
    assert keys["all_idb2/Im223_0"] == keys["all_idb2/Im257_0"]


#: every command, in the order `alldata --help` lists them
COMMANDS = [
    "ingest", "split", "link-crops", "info", "sources", "db", "app", "plugin", "train-generator", "finetune-generator",
    "generate", "compose-overlaps", "score", "train-encoder", "views", "embed", "brain", "card", "export", "publish",
    "mix", "benchmark", "evaluate", "previews",
]
#: cli modules that still hold commands named otherwise (to split: one module per command)
NOT_YET_SPLIT = {
}


def _command_name(cmd) -> str:
    return cmd.name or cmd.callback.__name__.strip("_").replace("_", "-")


def test_help_lists_every_command_and_imports_no_heavy_library():
    code = (
        "import sys; from typer.testing import CliRunner; from alldata.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); print(r.exit_code); print(r.output); "
        "print(sorted(m for m in ('torch', 'fiftyone', 'diffusers', 'sklearn', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "0" and out.splitlines()[-1] == "[]", out
    commands = out.split("Commands")[1]
    listed = [line.split()[1] for line in commands.splitlines() if line.startswith("│ ") and line[2] != " "]
    assert listed == COMMANDS
    assert [_command_name(c) for c in app.registered_commands] == COMMANDS


def test_cli_modules_are_named_after_their_commands():
    for cmd in app.registered_commands:
        name, module = _command_name(cmd), cmd.callback.__module__.rsplit(".", 1)[-1]
        assert module.replace("_", "-") == name or name in NOT_YET_SPLIT.get(module, ()), f"{name} lives in cli/{module}.py"


def _heavy_modules_after(args: list[str]) -> tuple[int, str, list[str]]:
    code = (
        "import sys; from typer.testing import CliRunner; from alldata.cli import app; "
        f"r = CliRunner().invoke(app, {args!r}); print(r.exit_code); print(r.output); "
        "print(sorted(m for m in ('torch', 'fiftyone', 'diffusers', 'sklearn', 'timm') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    return int(out[0]), "\n".join(out[1:-1]), eval(out[-1])


@pytest.mark.parametrize("args", [["sources"], ["db", "status"], ["info", "--help"]])
def test_light_commands_import_no_fiftyone_or_torch(args):
    code, output, heavy = _heavy_modules_after(args)
    assert code == 0 and heavy == [], (output, heavy)


@pytest.mark.parametrize(("spelling", "name"), [
    ("ALL-IDB1", "all_idb1"), ("all-idb2", "all_idb2"), ("C-NMC 2019", "cnmc"), ("C_NMC_2019", "cnmc"),
    ("C-NMC_Leukemia", "cnmc"), ("BCCD", "bccd"), ("BCCD_WBC_subtypes", "bccd_wbc"), ("ALL_Taleqani_Kaggle", "taleqani"),
    ("PBC", "pbc"), ("ATLAS", "atlas"), ("cnmc", "cnmc"), ("bcdd", "bcdd"), ("ALL", "ALL"),
])
def test_a_dataset_is_known_by_its_own_spelling(spelling, name):
    from alldata.sources import source_name

    assert source_name(spelling) == name  # an unknown or ambiguous name is left for the registry to reject


def test_ingest_accepts_the_dataset_spelling(tmp_path, dataset_name):
    r = runner.invoke(app, ["ingest", "C-NMC 2019", str(tmp_path / "missing"), "--dataset", dataset_name])
    assert r.exit_code == 1 and "Unknown source" not in r.output and "C-NMC" in r.output and "not found" in r.output
    root = make_bccd(tmp_path / "BCCD", n=2)
    r = runner.invoke(app, ["ingest", "BCCD", str(root), "--dataset", dataset_name])
    assert r.exit_code == 0 and "2 added" in r.output, r.output
    assert fo.load_dataset(dataset_name).distinct("source") == ["bccd"]


def test_ingest_all_idb1_by_its_own_name(shared_data, dataset_name):
    r = runner.invoke(app, ["ingest", "ALL-IDB1", str(shared_data / "ALL-IDB1"), "--dataset", dataset_name,
                            "--max-samples", "2"])
    assert r.exit_code == 0 and "all_idb1: 2 files, 2 added" in r.output, r.output


def test_tables_in_a_log_are_not_squeezed_and_show_every_metric():
    from alldata.cli._common import LOG_WIDTH, metric_columns

    metrics = [f"metric_{i}" for i in range(12)]
    shown, left_out = metric_columns(metrics, "metric_5")  # CliRunner: not a terminal
    assert shown == ["metric_5", *(m for m in metrics if m != "metric_5")] and left_out == []
    shown, left_out = metric_columns(metrics, "metric_5", width=80)  # an 80-column terminal
    assert shown[0] == "metric_5" and 1 <= len(shown) < 12 and shown + left_out == metric_columns(metrics, "metric_5")[0]
    code = ("from rich.table import Table; from alldata.cli._common import console; t = Table(); "
            "[t.add_column(c) for c in ('arm', 'model', *(f'metric_{i}' for i in range(12)))]; "
            "t.add_row('oversample', 'resnet18', *['0.812 [0.790, 0.834]'] * 12); console.print(t); print(console.width)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "COLUMNS"}).stdout.splitlines()
    assert int(out[-1]) == LOG_WIDTH and out[3].count("0.812 [0.790, 0.834]") == 12, "\n".join(out)
