"""Publish a dataset to the Hugging Face Hub: licence gate, hf-parquet export with its card, upload.

:func:`publish` builds exactly what would be uploaded (the ``hf-parquet`` export of
:mod:`alldata.export`: parquet shards, ``README.md`` card, ``LICENSE.md`` and the export
manifest) in a folder, then creates the dataset repo and uploads the folder with
``huggingface_hub.HfApi.create_repo`` + ``upload_folder``. ``dry_run`` stops after the folder.

The token is resolved by huggingface_hub's standard order (``HF_TOKEN``, then the saved
login) unless given; alldata never prints, logs or writes it. ``endpoint`` defaults to
huggingface_hub's configured endpoint (``HF_ENDPOINT`` as read when it was imported).

Examples:
    >>> check_repo_id("my-org/all-cells")
    'my-org/all-cells'
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alldata.card import Selection
from alldata.errors import AlldataError
from alldata.export import ExportReport, export_dataset

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["PublishError", "PublishReport", "check_repo_id", "publish"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


class PublishError(AlldataError, RuntimeError):
    """The Hub refused or could not be reached, a bad repo id, or no token."""


@dataclass
class PublishReport:
    """What :func:`publish` did (never holds the token)."""

    repo_id: str
    private: bool
    dry_run: bool
    folder: str | None  # the staging folder (kept for a dry run or when out_dir is given)
    files: list[str]
    size_bytes: int
    export: dict[str, Any]
    url: str | None = None  # the repo URL after an upload
    commit_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is ``ORG/NAME`` as the Hub allows; else raise :class:`PublishError`."""
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise PublishError(
            f"--repo {repo_id!r} is not a Hub dataset id: write ORG/NAME (letters, digits, '-', '_', '.'), e.g. my-lab/all-cells"
        )
    return repo_id


def _upload(folder: Path, repo_id: str, private: bool, endpoint: str | None, token: str | None, message: str) -> tuple[str, str]:
    import httpx
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if token is None and get_token() is None:
        raise PublishError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (needs write access), or use --dry-run"
        )
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message=message)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "no response"
        raise PublishError(f"the Hub at {api.endpoint} refused the upload to {repo_id} (HTTP {status}): {e.server_message or e}") from None
    except (OSError, httpx.TransportError) as e:  # connection errors
        raise PublishError(f"could not reach the Hub at {api.endpoint}: {e}") from None
    return str(url), str(info.commit_url)


def publish(
    dataset: str | fo.Dataset,
    repo_id: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    out_dir: str | Path | None = None,
    selection: Selection | None = None,
    overrides: Iterable[str] = (),
    trained_on: dict[str, list[str]] | None = None,
    benchmarks: list[str | Path] | None = None,
    score_reports: list[str | Path] | None = None,
    endpoint: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> PublishReport:
    """Gate, build and (unless ``dry_run``) upload the curated ``selection`` of ``dataset`` to ``repo_id``.

    Args:
        dataset: dataset name or object.
        repo_id: ``ORG/NAME`` of the Hub dataset repo (created if missing).
        private: create the repo private.
        dry_run: write what would be uploaded to ``out_dir`` and stop (no network).
        out_dir: the staging folder (required for a dry run; else a temporary folder).
        selection, overrides, trained_on, benchmarks, score_reports: as in :func:`alldata.export.export_dataset`.
        endpoint: Hub URL (default: huggingface_hub's configured endpoint).
        token: a Hub token (default: huggingface_hub's resolution; never printed or stored).
        commit_message: the commit message (default names the dataset and selection).

    Raises:
        LicenceError: a selected source may not be redistributed and is not overridden.
        PublishError: bad repo id, no token, or the Hub refused.
    """
    check_repo_id(repo_id)
    if dry_run and out_dir is None:
        raise PublishError("--dry-run needs --out DIR: the folder that receives exactly what would be uploaded")
    tmp = None if out_dir is not None else tempfile.TemporaryDirectory(prefix="alldata-publish-")
    folder = Path(out_dir) if out_dir is not None else Path(tmp.name) / "upload"
    try:
        rep: ExportReport = export_dataset(
            dataset, folder, "hf-parquet", selection, overrides=overrides, trained_on=trained_on,
            benchmarks=benchmarks, score_reports=score_reports,
        )
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        size = sum((folder / f).stat().st_size for f in files)
        out = PublishReport(repo_id, private, dry_run, str(folder) if tmp is None else None, files, size, rep.to_dict())
        if not dry_run:
            msg = commit_message or f"alldata: {rep.dataset} ({rep.selection}), {rep.n_samples} samples"
            out.url, out.commit_url = _upload(folder, repo_id, private, endpoint, token, msg)
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()
