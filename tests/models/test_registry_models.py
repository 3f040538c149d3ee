"""The model registries: every name present, did-you-mean errors, a light import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alldata.errors import UnknownNameError
from alldata.models import (
    CLASSIFIER_MODULES,
    CLASSIFIERS,
    SEGMENTER_MODULES,
    SEGMENTERS,
    Segmenter,
    get_classifier,
    get_segmenter,
)

EXPECTED_SEGMENTERS = ["kmeans_color", "otsu_hsv", "unet", "watershed"]
EXPECTED_CLASSIFIERS = ["efficientnet_b0", "knn", "mobilenetv3", "random_forest", "resnet18", "svm"]


def test_import_is_light():
    code = (
        "import sys, alldata.models; "
        "print(sorted(m for m in ('torch', 'sklearn', 'skimage', 'fiftyone') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_registries_have_every_name():
    assert SEGMENTERS.names() == EXPECTED_SEGMENTERS
    assert CLASSIFIERS.names() == EXPECTED_CLASSIFIERS
    # the lazy module tables and the registrations agree
    assert sorted(SEGMENTER_MODULES) == EXPECTED_SEGMENTERS
    assert sorted(CLASSIFIER_MODULES) == EXPECTED_CLASSIFIERS
    assert len(SEGMENTERS) == 4 and len(CLASSIFIERS) == 6
    assert "otsu_hsv" in SEGMENTERS and "svm" in CLASSIFIERS and "resnet18" not in SEGMENTERS


@pytest.mark.parametrize("name", EXPECTED_SEGMENTERS)
def test_every_segmenter_builds_and_follows_the_protocol(name):
    seg = get_segmenter(name)
    assert isinstance(seg, Segmenter)
    assert name in SEGMENTERS and type(seg) is SEGMENTERS.get(name)


@pytest.mark.parametrize("name", EXPECTED_CLASSIFIERS)
def test_every_classifier_builds(name):
    clf = get_classifier(name, seed=3)
    assert clf.seed == 3 and clf.name == name


@pytest.mark.parametrize(
    ("registry", "typo", "hint"),
    [
        (SEGMENTERS, "otsu_hvs", "otsu_hsv"),
        (SEGMENTERS, "watershd", "watershed"),
        (CLASSIFIERS, "svn", "svm"),
        (CLASSIFIERS, "random_forrest", "random_forest"),
    ],
)
def test_unknown_names_say_did_you_mean(registry, typo, hint):
    with pytest.raises(UnknownNameError, match=f"Did you mean '{hint}'"):
        registry.get(typo)


def test_unknown_name_without_close_match_lists_the_registered_names():
    with pytest.raises(UnknownNameError, match="Registered: kmeans_color, otsu_hsv, unet, watershed") as e:
        SEGMENTERS.get("zzzz")
    assert "Did you mean" not in str(e.value)
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        CLASSIFIERS.get("deep_cnn")
