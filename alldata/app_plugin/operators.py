"""alldata's FiftyOne operators and panel (loaded by the App through this folder's ``fiftyone.yml``).

Every operator acts on the App's target (the selected samples, the current view or the
whole dataset: FiftyOne's own "view target" choice) and calls one function of
:mod:`alldata.app_plugin.actions`. Long work (generate, compose, score, benchmark, Brain)
may run delegated: scheduled from the App and run by ``fiftyone delegated launch``, with
progress in the App's Runs list. When run at once, the App reloads and shows the result
(message, saved view, count); the saved view is in the App's view list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fiftyone.operators as foo
from fiftyone.operators import types

from alldata.app_plugin import actions
from alldata.app_plugin.sample_panel import pick_sample, sample_card

__all__ = ["OPERATORS", "register"]


def _progress(ctx: Any):
    return lambda fraction, label: ctx.set_progress(progress=fraction, label=label)


def _target(ctx: Any) -> Any:
    """The App's target choice; with none made (a call from Python), the selection if any, else the view."""
    chosen = ctx.params.get("view_target") or ctx.request_params.get("view_target")
    if chosen is None and ctx.selected:
        return ctx.dataset.select(ctx.selected)
    return ctx.target_view()


def _ids(ctx: Any) -> list[str]:
    return _target(ctx).values("id")


def _finish(ctx: Any, result: actions.ActionResult) -> dict[str, Any]:
    """Reload the App (immediate runs: new samples and saved views show) and return the outputs it displays."""
    if not ctx.delegated:
        ctx.ops.reload_dataset()
        ctx.ops.notify(result.message, variant="success")
    return {"message": result.message, "view": result.view or "", "count": len(result.ids)}


def _outputs() -> types.Property:
    out = types.Object()
    out.str("message", label="result")
    out.str("view", label="saved view")
    out.int("count", label="samples")
    return types.Property(out)


class _Base(foo.Operator):
    """Shared: the App's target choice first in every form, results as outputs."""

    def resolve_output(self, ctx: Any) -> types.Property:
        return _outputs()


def _long(name: str, label: str, description: str) -> foo.OperatorConfig:
    return foo.OperatorConfig(name=name, label=label, description=description, dynamic=False,
                              allow_immediate_execution=True, allow_delegated_execution=True,
                              default_choice_to_delegated=False, icon="auto_awesome")


class GenerateLike(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return _long("generate_like", "alldata: generate N more like this",
                     "sample a checkpoint for the target's most common labels (or a condition); new samples and a saved view")

    def resolve_input(self, ctx: Any) -> types.Property:
        ctx.target_view()
        form = types.Object()
        form.str("checkpoint", label="checkpoint folder", required=True,
                 description="a folder written by `alldata train-generator` (config.json + model.safetensors)")
        form.int("num_samples", label="how many", default=16, min=1, required=True)
        form.str("condition", label="condition (optional)", default="",
                 description="e.g. cell_type=lymphoblast; empty: the target's most common labels")
        form.int("seed", default=0)
        form.int("batch_size", default=16, min=1)
        form.enum("sampler", ["ddim", "dpm++", "ddpm"], default="ddim", label="sampler (diffusion)")
        form.int("steps", default=20, min=1, label="sampler steps (diffusion)")
        return types.Property(form, view=types.View(label="Generate more like this"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        p = ctx.params
        r = actions.generate_like(ctx.dataset, _target(ctx), p["checkpoint"], int(p.get("num_samples", 16)),
                                  condition=p.get("condition") or "", seed=int(p.get("seed", 0)),
                                  batch_size=int(p.get("batch_size", 16)),
                                  options={"sampler": p.get("sampler", "ddim"), "num_inference_steps": int(p.get("steps", 20))},
                                  progress=_progress(ctx))
        return _finish(ctx, r)


class ComposeOverlaps(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return _long("compose_overlaps", "alldata: compose overlaps from the selected cells",
                     "paste the selected cells onto real smears with controlled overlap (alldata compose-overlaps)")

    def resolve_input(self, ctx: Any) -> types.Property:
        ctx.target_view()
        form = types.Object()
        form.int("num_samples", label="composites", default=8, min=1, required=True)
        form.int("seed", default=0)
        return types.Property(form, view=types.View(label="Compose overlaps"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        p = ctx.params
        r = actions.compose_from_selected(ctx.dataset, _ids(ctx), int(p.get("num_samples", 8)), seed=int(p.get("seed", 0)),
                                          progress=_progress(ctx))
        return _finish(ctx, r)


class ScoreView(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return _long("score_view", "alldata: score the synthetic view",
                     "quality gates and memorisation of the target's synthetic samples vs real cells (alldata score)")

    def resolve_input(self, ctx: Any) -> types.Property:
        ctx.target_view()
        form = types.Object()
        form.str("real", label="real reference", default="split=train")
        form.str("heldout", label="held-out real (CAS)", default="split=test")
        form.str("encoder", label="encoder folder (optional)", default="",
                 description="`alldata train-encoder` output; empty: hand-crafted features")
        return types.Property(form, view=types.View(label="Score synthetic samples"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        p = ctx.params
        r = actions.score_view(ctx.dataset, _ids(ctx), real=p.get("real") or "split=train", heldout=p.get("heldout") or "",
                               encoder_dir=p.get("encoder") or None, progress=_progress(ctx))
        return _finish(ctx, r)


class TagReject(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(name="tag_reject", label="alldata: tag as reject",
                                  description="take the target samples out of mixes, benchmarks, cards and exports",
                                  icon="block")

    def resolve_input(self, ctx: Any) -> types.Property:
        ctx.target_view()
        form = types.Object()
        form.bool("undo", label="remove the reject tag instead", default=False)
        return types.Property(form, view=types.View(label="Tag as reject"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        return _finish(ctx, actions.tag_reject(ctx.dataset, _ids(ctx), undo=bool(ctx.params.get("undo", False))))


class CorrectLabel(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(name="correct_label", label="alldata: correct a label", dynamic=True,
                                  description="set a label field of the target samples (the old value is kept)", icon="edit")

    def resolve_input(self, ctx: Any) -> types.Property:
        import fiftyone as fo

        ctx.target_view()
        form = types.Object()
        fields = sorted(f for f in ctx.dataset.get_field_schema(embedded_doc_type=fo.Classification) if not f.startswith("pred_"))
        form.enum("label_field", fields or ["cell_type"], default=fields[0] if fields else None, required=True, label="field")
        field_ = ctx.params.get("label_field") or (fields[0] if fields else None)
        values = sorted(v for v in ctx.dataset.distinct(f"{field_}.label") if v) if field_ else []
        form.str("label", required=True, label="new label", description=f"e.g. one of {values[:8]}")
        return types.Property(form, view=types.View(label="Correct a label"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        p = ctx.params
        return _finish(ctx, actions.correct_label(ctx.dataset, _ids(ctx), p["label_field"], p["label"]))


class RunBenchmark(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return _long("run_benchmark", "alldata: run a benchmark recipe",
                     "run a recipe on this dataset (alldata benchmark); the gain plot shows in the alldata panel")

    def resolve_input(self, ctx: Any) -> types.Property:
        form = types.Object()
        form.str("recipe", label="recipe YAML", required=True, description="e.g. recipes/rare-class-recovery.yaml")
        form.bool("quick", label="quick (the recipe's quick: block)", default=True)
        return types.Property(form, view=types.View(label="Run a benchmark recipe"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        p = ctx.params
        r = actions.run_benchmark_recipe(ctx.dataset, Path(p["recipe"]).expanduser(), quick=bool(p.get("quick", True)),
                                         progress=_progress(ctx))
        return _finish(ctx, r)


class RunBrain(_Base):
    @property
    def config(self) -> foo.OperatorConfig:
        return _long("run_brain", "alldata: Brain on alldata's embeddings",
                     "uniqueness, representativeness, hardness, mistakenness and leaky splits (alldata brain)")

    def resolve_input(self, ctx: Any) -> types.Property:
        form = types.Object()
        form.float("leak_threshold", label="leak distance (cosine)", default=0.05, min=0.0, max=2.0)
        return types.Property(form, view=types.View(label="FiftyOne Brain on alldata's embeddings"))

    def execute(self, ctx: Any) -> dict[str, Any]:
        from alldata.brain import run_brain

        ctx.set_progress(progress=0.0, label="Brain runs")
        r = run_brain(ctx.dataset, leak_threshold=float(ctx.params.get("leak_threshold", 0.05)))
        first = next(iter(r.views), None)
        msg = f"fields {', '.join(r.fields)}; views {', '.join(r.views)}; exact leak check: {r.exact_leak or 'clean'}"
        return _finish(ctx, actions.ActionResult([], first, msg))


class SamplePanel(foo.Panel):
    """Provenance, quality, nearest real neighbours and the benchmark gain plot of one sample."""

    @property
    def config(self) -> foo.PanelConfig:
        return foo.PanelConfig(name="alldata_sample", label="alldata sample", surfaces="grid modal", icon="biotech",
                               help_markdown="The sample open in the modal, else the first selected one, else the "
                                             "view's first synthetic sample.")

    def _refresh(self, ctx: Any) -> None:
        sid = pick_sample(ctx.dataset, ctx.view, ctx.current_sample, ctx.selected)
        if sid is None:
            ctx.panel.state.markdown = "No sample: open or select one."
            ctx.panel.state.n_neighbours = 0
            return
        card = sample_card(ctx.dataset, sid)
        ctx.panel.state.markdown = card.markdown()
        ctx.panel.set_state("images.own.image", card.image)
        ctx.panel.state.n_neighbours = len(card.neighbours)
        for i, n in enumerate(card.neighbours):
            ctx.panel.set_state(f"images.nn_col_{i}.nn_{i}", n["image"])
            ctx.panel.set_state(f"nn_caption_{i}", f"{n['label'] or 'real'}  \nd = {n['distance']:.3f}")
        ctx.panel.state.has_gains = card.benchmark is not None
        if card.benchmark is not None:  # the App's Plotly view takes the traces as data, the layout in the schema
            fig = card.benchmark["figure"]
            ctx.panel.set_state("gains_layout", fig["layout"])
            ctx.panel.set_data("gains", fig["data"])

    def on_load(self, ctx: Any) -> None:
        self._refresh(ctx)

    def on_change_current_sample(self, ctx: Any) -> None:
        self._refresh(ctx)

    def on_change_selected(self, ctx: Any) -> None:
        self._refresh(ctx)

    def on_change_view(self, ctx: Any) -> None:
        self._refresh(ctx)

    def render(self, ctx: Any) -> types.Property:
        panel = types.Object()
        row = panel.h_stack("images", gap=2, align_y="top")
        own = row.v_stack("own", gap=0)
        own.img("image", height="160px", width="160px", alt_text="this sample")
        own.md("**this sample**", name="own_caption")
        for i in range(int(ctx.panel.state.n_neighbours or 0)):
            col = row.v_stack(f"nn_col_{i}", gap=0)
            col.img(f"nn_{i}", height="96px", width="96px", alt_text=f"real neighbour {i + 1}")
            col.md(ctx.panel.get_state(f"nn_caption_{i}") or "", name=f"nn_text_{i}")
        panel.md(ctx.panel.state.markdown or "", name="card")
        if ctx.panel.state.has_gains:
            layout = ctx.panel.get_state("gains_layout") or {}
            panel.plot("gains", layout=layout, config={"displayModeBar": False}, height=f"{layout.get('height', 300)}px")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))


OPERATORS = (GenerateLike, ComposeOverlaps, ScoreView, TagReject, CorrectLabel, RunBenchmark, RunBrain)


def register(p: Any) -> None:
    """FiftyOne's plugin hook: register the operators and the panel."""
    for cls in (*OPERATORS, SamplePanel):
        p.register(cls)
