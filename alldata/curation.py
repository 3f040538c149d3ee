"""Curation decisions made in the FiftyOne App, respected by every consumer.

A curator tags a sample ``reject`` in the App to take it out of everything alldata builds
from the dataset (``mix``, ``benchmark``, ``card``, ``export``, ``publish``); a label
corrected in the App is simply the field's new value, so consumers that read the field see
the correction. :func:`curated` is the one place that applies the tag. The round trip in
the App, step by step: docs/curation.md#curation-in-the-app.

Examples:
    >>> REJECT_TAG
    'reject'
"""

from __future__ import annotations

from typing import Any

__all__ = ["REJECT_TAG", "curated", "rejected_count"]

#: The sample tag that excludes a sample from mixes, benchmarks, cards and exports.
REJECT_TAG = "reject"


def curated(view: Any) -> Any:
    """``view`` without the samples a curator tagged :data:`REJECT_TAG`."""
    from fiftyone import ViewField as FF

    return view.match(~FF("tags").contains(REJECT_TAG))


def rejected_count(view: Any) -> int:
    """How many samples of ``view`` carry :data:`REJECT_TAG`."""
    return len(view.match_tags(REJECT_TAG))
