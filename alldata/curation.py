"""Curation decisions made in the FiftyOne App, respected by every consumer.

A curator tags a sample ``reject`` in the App to take it out of everything alldata
builds from the dataset (``mix``, ``benchmark``, ``card``, ``export``, ``publish``). A
label corrected in the App is simply the field's new value, so consumers that read the
field see the correction; :func:`curated` is the one place that applies the tag.

The round trip in the App (``alldata app NAME``): open a saved view such as
``alldata-likely-copies``, ``alldata-near-duplicates`` or ``alldata-mistakes-pred_*``,
select samples and add the sample tag ``reject`` (tag icon above the grid), or click a
sample and edit its ``cell_type`` / ``diagnosis`` / ``subtype`` label. Edits are written
to the database at once; ``alldata-rejected`` lists what has been rejected, and the
mistakes views compare with the corrected labels without a rebuild. The next ``mix``,
``benchmark``, ``card`` or ``publish`` leaves the rejected samples out and uses the
corrected labels. Remove the tag to bring a sample back.

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
