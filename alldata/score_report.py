"""The typed hand-off of ``alldata score``: the quality :class:`Gates` and the :class:`ScoreReport`.

:mod:`alldata.score` measures and judges; the card and the CLI read the report it writes
(JSON). Pydantic only: importing this module imports neither numpy nor torch.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GateResult", "Gates", "PixelReport", "ScoreMetrics", "ScoreParams", "ScoreReport"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Gates(_Model):
    """The pass/fail thresholds of ``alldata score`` (each synthetic set is judged against real cells).

    Pixel gates (no encoder): per-channel mean within ``mean_levels`` of real (0-255
    levels), per-channel std and high-frequency energy (mean |neighbouring-pixel
    difference|) within ``std_rel`` / ``hf_rel`` of real, as a share. Encoder gates: FD and
    KID of synthetic vs one half of the real cells at most ``fd_ratio`` / ``kid_ratio``
    times the real-vs-real floor (that half vs the other half; for KID the floor is
    |KID| + its std over subsets); precision and recall at least ``precision_min`` /
    ``recall_min``; copy rate at most ``copy_rate_max``; CAS (a reference classifier
    trained on synthetic cells, tested on real held-out cells) at least ``cas_ratio`` × TRS
    (the same classifier trained on real cells).

    Real held-out cells scored as if synthetic pass every gate; noise fails them.
    """

    mean_levels: float = Field(10.0, gt=0, description="max |mean_syn - mean_real| per channel, 0-255 levels")
    std_rel: float = Field(0.25, gt=0, description="max |std_syn / std_real - 1| per channel")
    hf_rel: float = Field(0.25, gt=0, description="max |hf_syn / hf_real - 1|")
    fd_ratio: float = Field(3.0, gt=0, description="max FD(real half, syn) / FD(real half, other half)")
    kid_ratio: float = Field(3.0, gt=0, description="max KID(real half, syn) / (|KID floor| + its std)")
    precision_min: float = Field(0.5, ge=0, le=1, description="min improved precision (k-NN)")
    recall_min: float = Field(0.3, ge=0, le=1, description="min improved recall (k-NN)")
    copy_rate_max: float = Field(0.2, ge=0, le=1, description="max share of synthetic cells flagged as copies")
    cas_ratio: float = Field(0.8, ge=0, description="min CAS / TRS (balanced accuracy on real held-out cells)")

    def describe(self) -> str:
        """The thresholds in one line each (for ``alldata score --help`` and reports)."""
        return "\n".join(f"{name} = {getattr(self, name)}: {f.description}" for name, f in type(self).model_fields.items())


class ScoreParams(_Model):
    """Settings of the metrics ``score`` measures (recorded in the report)."""

    k_pr: int = Field(3, ge=1, description="k of the k-NN balls of precision/recall")
    k_dc: int = Field(5, ge=1, description="k of the k-NN balls of density/coverage")
    kid_subsets: int = Field(100, ge=1, description="KID subsets")
    kid_subset_size: int = Field(1000, ge=2, description="KID subset size (at most the smaller set)")
    percentile: float = Field(5.0, ge=0, le=100, description="copy threshold: percentile of real-to-real NN distances")
    seed: int = Field(0, description="seed of KID subsets, the real halves and CAS")


class GateResult(_Model):
    """One gate: the measured ``value``, its ``threshold``, and ``passed`` (None: not measured, see ``note``)."""

    name: str
    value: float | None
    threshold: float | None
    rule: str
    passed: bool | None
    note: str | None = None


class PixelReport(_Model):
    """Pixel statistics of a set of images (:func:`alldata.metrics.pixel_statistics`)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hf_energy: float


class ScoreMetrics(_Model):
    """Every number ``score`` measures; None where it could not be measured (see ``skipped``)."""

    fd: float | None = None
    kid_mean: float | None = None
    kid_std: float | None = None
    fd_half: float | None = None
    fd_floor: float | None = None
    kid_half: float | None = None
    kid_floor: float | None = None
    kid_floor_std: float | None = None
    precision: float | None = None
    recall: float | None = None
    density: float | None = None
    coverage: float | None = None
    copy_rate: float | None = None
    copy_threshold: float | None = None
    nn_distance_median: float | None = None
    nn_ratio_median: float | None = None
    cas: float | None = None
    trs: float | None = None
    cas_label_field: str | None = None


class ScoreReport(_Model):
    """What ``alldata score`` writes: the metrics, each gate, and the verdict ``passed``.

    ``passed`` is True when every measured gate passed (gates not measured, e.g. CAS
    without labelled held-out cells, are listed with ``passed=None`` and do not count).
    """

    schema_version: int = 1
    created: str
    dataset: str | None = None
    synthetic_view: str | None = None
    real_view: str | None = None
    heldout_view: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    n_real: int
    n_fake: int
    n_heldout: int = 0
    image_size: int | None = None
    #: size the pixel gates were measured at: the synthetic images' own (None: ``image_size``)
    pixel_size: int | None = None
    encoder: dict[str, Any] | None = None
    params: ScoreParams = Field(default_factory=ScoreParams)
    gates_config: Gates = Field(default_factory=Gates)
    pixels_real: PixelReport
    pixels_synthetic: PixelReport
    metrics: ScoreMetrics
    gates: list[GateResult]
    passed: bool
    skipped: dict[str, str] = Field(default_factory=dict)
    memorised: list[dict[str, Any]] = Field(default_factory=list)
    report_path: str | None = None

    def failed(self) -> list[GateResult]:
        """The gates that were measured and failed."""
        return [g for g in self.gates if g.passed is False]
