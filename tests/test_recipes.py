"""Every shipped recipe validates; bad recipes fail naming the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alldata.recipes import RecipeError, arm_kinds, load_recipe, recipe_slug

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))

GOOD = """
name: t
task: classification
data: {sources: [folder], label_field: cell_type, classes: [lymphoblast, lymphocyte]}
baseline: real
arms: [{name: real, kind: real}]
models: [{name: knn}]
metrics: [accuracy]
primary_metric: accuracy
"""


def test_the_shipped_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"rare-class-recovery.yaml", "overlap-segmentation.yaml", "allidb2-binary.yaml", "cnmc-binary.yaml",
            "bccd-wbc.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_shipped_recipe_loads(path):
    recipe = load_recipe(path)
    assert recipe.baseline in [a.name for a in recipe.arms]
    assert {a.kind for a in recipe.arms} <= arm_kinds(recipe.task)
    quick = recipe.with_quick()
    assert quick.folds <= recipe.folds and len(quick.seeds) <= len(recipe.seeds)


def test_the_real_run_recipe_is_sized_as_promised():
    r = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "rare-class-recovery.yaml")
    assert (r.folds, len(r.seeds), r.data.image_size) == (3, 3, 64)
    assert {a.kind for a in r.arms} == {"real", "oracle", "oversample", "augment", "gan", "diffusion"}
    assert {a.kind for a in r.arms} <= arm_kinds("classification")
    assert r.rare.class_ == "pro_b" and r.data.class_map()[None] == "benign"
    assert "alldata benchmark recipes/rare-class-recovery.yaml" in r.description
    q = r.with_quick()
    assert q.arm("gan").params["steps"] == 20 and q.arm("diffusion").params["num_inference_steps"] == 4


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_unknown_key_is_named_with_the_file(tmp_path):
    p = _write(tmp_path, GOOD + "foldz: 3\n")
    with pytest.raises(RecipeError, match=r"unknown key 'foldz'") as e:
        load_recipe(p)
    assert str(p) in str(e.value)
    p = _write(tmp_path, GOOD.replace("label_field: cell_type", "label_field: cell_type, imagesize: 3"))
    with pytest.raises(RecipeError, match=r"unknown key 'data.imagesize'"):
        load_recipe(p)


def test_bad_arm_kind_lists_the_allowed_kinds(tmp_path):
    p = _write(tmp_path, GOOD.replace("kind: real}", "kind: mixup}"))
    with pytest.raises(RecipeError, match=r"arms.0.kind: 'mixup'.*allowed: augment, diffusion, gan, oracle, oversample, real"):
        load_recipe(p)
    seg = GOOD.replace("task: classification", "task: segmentation").replace("kind: real}", "kind: gan}")
    with pytest.raises(RecipeError, match=r"allowed: overlap, real"):
        load_recipe(_write(tmp_path, seg))
    with pytest.raises(RecipeError, match=r"'gann'.*did you mean 'gan'"):
        load_recipe(_write(tmp_path, GOOD.replace("kind: real}", "kind: gann}")))


def test_arm_kinds_come_from_the_generator_registry_without_importing_torch():
    """Trainable families are classification arm kinds; overlap (not trained) is not; torch stays out."""
    import subprocess
    import sys

    code = ("import sys; from alldata.recipes import arm_kinds, is_generator_kind; "
            "print(sorted(arm_kinds('classification')), is_generator_kind('overlap'), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['augment', 'diffusion', 'gan', 'oracle', 'oversample', 'real'] False False"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("baseline: real", "baseline: nope"), "baseline: 'nope' is not an arm"),
        (("metrics: [accuracy]", "metrics: [acuracy]"), "metric 'acuracy' is unknown"),
        (("metrics: [accuracy]", "metrics: ['sensitivity:blast']"), "class 'blast' is not one of"),
        (("primary_metric: accuracy", "primary_metric: macro_f1"), "not in metrics"),
        (("arms: [{name: real, kind: real}]", "arms: [{name: real, kind: real}, {name: o, kind: oracle}]"),
         "needs a rare"),
    ],
)
def test_inconsistent_recipes_are_rejected(tmp_path, change, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(_write(tmp_path, GOOD.replace(*change)))


def test_generated_class_must_be_a_label_value(tmp_path):
    text = GOOD.replace("classes: [lymphoblast, lymphocyte]", "classes: {lymphoblast: blast, lymphocyte: lymphocyte}")
    text = text.replace("arms: [{name: real, kind: real}]", "arms: [{name: real, kind: real}, {name: g, kind: gan}]")
    text += "rare: {class: blast, keep_fraction: 0.1}\n"
    with pytest.raises(RecipeError, match="cell_type='blast', which is not a cell_type value"):
        load_recipe(_write(tmp_path, text))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "absent.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "name: [unclosed\n"))
    assert recipe_slug("rare-class-recovery") == "rare_class_recovery"


def test_the_cross_source_recipes_state_how_vocabularies_meet():
    root = Path(__file__).resolve().parents[1] / "recipes"
    r = load_recipe(root / "xsource-taleqani-pbc-to-allidb2.yaml")
    assert r.test.sources == ["all_idb2"] and r.test.in_pool and set(r.data.sources) == {"taleqani", "pbc"}
    assert r.data.class_names() == ["blast", "non_blast"]
    # ALL-IDB2's healthy crops have no cell_type: the map reads its diagnosis instead
    assert r.data.field_for("all_idb2") == "diagnosis" and r.data.map_for("all_idb2") == {"ALL": "blast",
                                                                                          "healthy": "non_blast"}
    assert r.data.field_for("pbc") == "cell_type" and r.data.map_for("pbc")["lymphocyte"] == "non_blast"
    loso = load_recipe(root / "xsource-loso.yaml")
    assert loso.test.leave_one_source_out and len(loso.data.sources) == 4


def test_a_test_block_is_one_pool_or_leave_one_source_out(tmp_path):
    with pytest.raises(RecipeError, match="either sources"):
        load_recipe(_write(tmp_path, GOOD + "test: {dataset: other}\n"))
    with pytest.raises(RecipeError, match="either sources"):
        load_recipe(_write(tmp_path, GOOD + "test: {sources: [a], leave_one_source_out: true}\n"))
    with pytest.raises(RecipeError, match="two or more data.sources"):
        load_recipe(_write(tmp_path, GOOD + "test: {leave_one_source_out: true}\n"))
    with pytest.raises(RecipeError, match="source_labels needs data.classes"):
        load_recipe(_write(tmp_path, GOOD.replace("classes: [lymphoblast, lymphocyte]",
                                                  "source_labels: {a: {classes: {x: y}}}") + "\n"))
    r = load_recipe(_write(tmp_path, GOOD + "test: {dataset: other, sources: [folder], where: {cell_type: x}}\n"))
    assert (r.test.dataset, r.test.sources, r.test.in_pool) == ("other", ["folder"], True)


def test_scale_arm_params_are_checked(tmp_path):
    import yaml

    base = yaml.safe_load(Path("recipes/xsource-scale-taleqani-pbc-to-allidb2.yaml").read_text())
    for params, message in [({"rbc_px": -3}, "params.rbc_px: -3"), ({"rbc_px": "16"}, "params.rbc_px: '16'"),
                            ({"rbc_px": 16, "source_rbc_px": {"pbc": 0}}, "give the common red-cell diameter"),
                            ({"source_rbc_px": {"pbc": 70}}, "source_rbc_px needs rbc_px")]:
        bad = dict(base, arms=[{"name": "real", "kind": "real", "params": params}])
        p = tmp_path / "bad.yaml"
        p.write_text(yaml.safe_dump(bad))
        with pytest.raises(RecipeError, match=re.escape(message)):
            load_recipe(p)
    gen = dict(base, arms=[{"name": "real", "kind": "real"}, {"name": "g", "kind": "gan", "params": {"rbc_px": 16}}])
    (tmp_path / "gen.yaml").write_text(yaml.safe_dump(gen))
    with pytest.raises(RecipeError, match="generates images with no source red-cell size"):
        load_recipe(tmp_path / "gen.yaml")
