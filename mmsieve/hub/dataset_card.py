"""Dataset cards for curated runs: YAML metadata with `configs`, and a body that says what was done to the data.

    >>> card = render_dataset_card(
    ...     json.loads(Path("curated/stats.json").read_text()),
    ...     columns={"image": "Image", "caption": "string", "unifilter_score": "float32"},
    ...     sample_rows=[{"caption": "A cat on a mat."}],
    ...     plots={"unifilter_score": "plots/unifilter_score.png"},
    ...     license=None,
    ...     source_datasets=None,
    ...     pretty_name=None,
    ...     repo_id="me/curated-captions",
    ...     splits={"train": {"rows": 1, "files": 1}},
    ... )  # doctest: +SKIP
    >>> Path("repo/README.md").write_text(card)  # doctest: +SKIP

The template is `mmsieve/model_cards/dataset_card.md.j2` (shipped in the package). The card never shows tokens,
environment variables or absolute paths: local paths in the stats are reduced to their final folder name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

from huggingface_hub import DatasetCard, DatasetCardData

from mmsieve.hub.lineage import hub_dataset_id


DATASET_CARD_TEMPLATE = Path(__file__).resolve().parent.parent / "model_cards" / "dataset_card.md.j2"
REASON_PLOT = "mmsieve_reason"  # the key (and file stem) of the removed-by-reason bar chart in `plots`
SIZE_CATEGORIES = (  # datasets/utils/resources/size_categories.json, with each category's upper bound
    (10**3, "n<1K"),
    (10**4, "1K<n<10K"),
    (10**5, "10K<n<100K"),
    (10**6, "100K<n<1M"),
    (10**7, "1M<n<10M"),
    (10**8, "10M<n<100M"),
    (10**9, "100M<n<1B"),
    (10**10, "1B<n<10B"),
    (10**11, "10B<n<100B"),
    (10**12, "100B<n<1T"),
)
TASK_CATEGORIES = {
    "caption": ["image-to-text", "image-text-to-text"],
    "interleaved": ["image-text-to-text"],
    "conversation": ["visual-question-answering", "image-text-to-text"],
}
STEP_DESCRIPTIONS = {
    "HygieneFilter": "drops rows with missing, undecodable, truncated, tiny or extreme images and empty or overlong text",
    "UniFilterScorer": "scores every row with a UniFilter quality classifier (nominally 0 worst to 3 best)",
    "UniFilterFilter": "keeps the rows whose UniFilter score passes the threshold or the keep-fraction",
    "ScoreFilter": "keeps the rows whose score passes the threshold or the keep-fraction",
    "ClipScoreScorer": "scores image-text agreement as the cosine similarity of CLIP/SigLIP embeddings",
    "ClipScoreFilter": "keeps the rows whose CLIP/SigLIP score passes the threshold or the keep-fraction",
    "Rewriter": "rewrites low-quality text with a vision-language model; the original stays in `original_text`",
    "Judge": "rates every row with a judge model",
    "RatingFilter": "drops the rows whose judge ratings fall below the minimums",
    "NearDuplicateFilter": "drops near-duplicate images, keeping one row per duplicate cluster",
    "DecontaminationFilter": "drops rows whose images or question/answer text match a benchmark's test data",
}
STEP_TAGS = {
    "HygieneFilter": "hygiene-filtering",
    "UniFilterScorer": "quality-scoring",
    "UniFilterFilter": "quality-filtering",
    "ScoreFilter": "quality-filtering",
    "ClipScoreScorer": "clip-score",
    "ClipScoreFilter": "clip-score",
    "Rewriter": "recaptioning",
    "Judge": "llm-as-a-judge",
    "RatingFilter": "llm-as-a-judge",
    "NearDuplicateFilter": "deduplication",
    "DecontaminationFilter": "decontamination",
}
_SECRET_KEY = re.compile(r"(^|_)token$|secret|password|passwd|api_key|credential|authorization", re.IGNORECASE)
_HF_TOKEN = re.compile(r"\bhf_[A-Za-z0-9]{20,}")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PREFIXED = re.compile(r"^(transformers|openai|aitqe|sscd|sscd288|clip|siglip):(.+)$")
_GENERIC_NAMES = {"kept", "removed", "model", "clusters", "data", "train", "index"}

__all__ = [
    "DATASET_CARD_TEMPLATE",
    "REASON_PLOT",
    "display_location",
    "methods_used",
    "render_dataset_card",
    "size_category",
]


def size_category(rows: int) -> str:
    """The Hub's `size_categories` value for a dataset of `rows` rows.

    Example:
        >>> size_category(0), size_category(999), size_category(1000), size_category(123_456)
        ('n<1K', 'n<1K', '1K<n<10K', '100K<n<1M')
    """
    for bound, name in SIZE_CATEGORIES:
        if rows < bound:
            return name
    return "n>1T"


def display_location(value: str) -> str:
    """How a source, model or index location is shown in a card: Hub ids and URLs as given (without credentials
    or query strings), local paths as their final folder name (with its parent when that name says nothing,
    e.g. `kept` or `model`), so no path of the user's machine is published.

    Example:
        >>> display_location("HuggingFaceM4/FineVision"), display_location("/home/me/runs/captions_dedup/kept")
        ('HuggingFaceM4/FineVision', 'captions_dedup/kept')
        >>> display_location("transformers:/tmp/x/unifilter-demo/model"), display_location("https://u:p@h.org/a?t=1")
        ('transformers:unifilter-demo/model', 'https://h.org/a')
    """
    value = str(value)
    prefixed = _PREFIXED.match(value)
    if prefixed:
        return f"{prefixed.group(1)}:{display_location(prefixed.group(2))}"
    if "://" in value:
        url = urlsplit(value)
        return f"{url.scheme}://{url.hostname or ''}{url.path}"
    local = value.startswith(("/", "~", ".", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value) is not None
    if not local and (_HUB_ID.match(value) or ("/" not in value and "\\" not in value)):
        if not _path_exists(value):
            return value
    parts = [p for p in PurePath(value.replace("\\", "/")).parts if p not in ("/", "~", ".", "..")]
    if not parts:
        return "."
    if len(parts) > 1 and parts[-1] in _GENERIC_NAMES:
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1]


def _path_exists(value: str) -> bool:
    try:
        return "/" in value and Path(value).exists()
    except OSError:
        return False


def _clean(value: Any) -> Any:
    """Parameters as they may be published: secret-looking keys dropped, paths reduced to their last folder."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, str) and ("/" in value or "\\" in value or value.startswith("~")):
        return display_location(value)
    return value


def _flatten(parameters: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for key, value in parameters.items():
        if isinstance(value, Mapping) and value:
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", _format(value)))
    return rows


def _format(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(_format(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _strings(value: Any) -> list[str]:
    """Every string value, and every key whose value is `True`, of a nested stats structure."""
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in ([str(k)] if v is True else []) + _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def methods_used(stats: Mapping[str, Any]) -> list[str]:
    """The published methods a run's steps applied (keys of the card's citations), in a fixed order.

    Example:
        >>> methods_used({"steps": [{"step": "UniFilterScorer", "parameters": {}}]})
        ['unifilter']
        >>> methods_used({"steps": [{"step": "ClipScoreFilter", "parameters": {"model": "google/siglip-base"}}]})
        ['siglip']
    """
    steps = list(stats.get("steps") or [])
    names = {step.get("step", "") for step in steps}
    words = [s.lower() for s in _strings([step.get("step") for step in steps])]
    words += [s.lower() for s in _strings([step.get("parameters", {}) for step in steps])]
    words += [s.lower() for s in _strings(stats.get("dedup") or {})]
    models = [w for w in words if ":" in w or "/" in w]
    used = set()
    if any("unifilter" in w for w in words):
        used.add("unifilter")
    if any("aitqe" in w for w in words):
        used.add("aitqe")
    if any(w == "mlm_filter" for w in words):
        used.add("mlm_filter")
    if any(w == "finevision" for w in words) or names & {"DecontaminationFilter", "NearDuplicateFilter"}:
        used.add("finevision")
    if any(w.startswith("sscd") for w in words):
        used.add("sscd")
    clip_models = [w for w in models if w.startswith(("clip:", "siglip:"))]
    if names & {"ClipScoreScorer", "ClipScoreFilter"}:
        clip_models += [str(step.get("parameters", {}).get("model", "")).lower() for step in steps]
        clip_models += [str(step.get("parameters", {}).get("scorer", {}).get("model", "")).lower() for step in steps]
    for model in filter(None, clip_models):
        used.add("siglip" if "siglip" in model else "clip")
    order = ("unifilter", "aitqe", "mlm_filter", "finevision", "sscd", "clip", "siglip")
    return [m for m in order if m in used]


def _steps(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for step in stats.get("steps") or []:
        parameters = _clean(step.get("parameters") or {})
        extras = {k: v for k, v in step.items() if k not in ("step", "parameters", "removed", "contamination")}
        out.append(
            {
                "name": step.get("step", "?"),
                "description": STEP_DESCRIPTIONS.get(step.get("step", ""), ""),
                "parameters": _flatten(parameters),
                "removed": sum(int(v) for v in (step.get("removed") or {}).values()),
                "extras": _clean(extras),
            }
        )
    return out


def _models(stats: Mapping[str, Any]) -> list[str]:
    """The models and embedders the steps name, as markdown: Hub ids linked, local folders by name only."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                if key in ("model", "vision_model", "vision_tower", "embedder") and isinstance(inner, str):
                    found.append(inner)
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk([step.get("parameters") or {} for step in stats.get("steps") or []])
    if isinstance(stats.get("dedup"), Mapping) and stats["dedup"].get("embedder"):
        found.append(str(stats["dedup"]["embedder"]))
    return list(dict.fromkeys(_hub_link(value) for value in found))


def _judges(stats: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One summary per judge step: method, models, axes, and for a rating filter the minimums and removals."""
    out = []
    for step in stats.get("steps") or []:
        if step.get("step") not in ("Judge", "RatingFilter"):
            continue
        parameters = _clean(step.get("parameters") or {})
        judge = parameters.get("judge", parameters) if step["step"] == "RatingFilter" else parameters
        out.append(
            {
                "step": step["step"],
                "method": judge.get("method"),
                "models": [display_location(m) for m in (judge.get("model"), judge.get("vision_model")) if m],
                "axes": judge.get("axes") or [],
                "minimums": list((parameters.get("min_ratings") or {}).items()),
                "removed": sorted((step.get("removed") or {}).items()),
            }
        )
    return out


def _hub_link(value: str, prefix: str = "") -> str:
    """`value` for the card: a Hub id (optionally `backend:`-prefixed) as a link, anything else by `display_location`."""
    prefixed = _PREFIXED.match(value)
    bare = prefixed.group(2) if prefixed else value
    if _HUB_ID.match(bare) and not _path_exists(bare):
        return f"[`{value}`](https://huggingface.co/{prefix}{bare})"
    return f"`{_cell(display_location(value))}`"


def _cell(value: Any) -> str:
    text = str(value).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def render_dataset_card(
    stats: Mapping[str, Any],
    *,
    columns: Mapping[str, str],
    sample_rows: Sequence[Mapping[str, str]],
    plots: Mapping[str, str],
    license: str | None,
    source_datasets: Sequence[str] | None,
    pretty_name: str | None,
    repo_id: str | None,
    splits: Mapping[str, Mapping[str, int]],
    earlier: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Render the `README.md` of a curated dataset repo from a run's `stats.json`.

    Args:
        stats: the run's `stats.json` (rows in, kept, removed by reason, steps with parameters, versions, ...).
        columns: column name -> type shown in the column table (e.g. `"Image"`, `"float32"`).
        sample_rows: a few rows of text columns, already truncated (no image bytes).
        plots: column -> relative path of its histogram; the key `REASON_PLOT` holds the removed-by-reason chart.
        license: the card's license (`unknown` when None).
        source_datasets: Hub ids of the source data (default: the original source when it is a Hub dataset).
        pretty_name: the title (default: the repo name, else the original source's name).
        repo_id: where the dataset is published (`user/name`); used in the usage example.
        splits: split -> `{"rows": n, "files": k}`; a split with files gets a `configs` entry `data/{split}-*`.
        earlier: the stats of earlier mmsieve runs whose output this run read, the first run first
            (`mmsieve.hub.lineage.earlier_runs`): shown with their steps and removals, their methods cited.

    Returns:
        The card as markdown with YAML front matter (`huggingface_hub.DatasetCard(text)` parses it).

    Raises:
        ValueError: the rendered card contains what looks like a Hugging Face token.

    Example:
        >>> text = render_dataset_card(stats, columns={}, sample_rows=[], plots={}, license=None,
        ...     source_datasets=None, pretty_name="demo", repo_id=None, splits={"train": {"rows": 0, "files": 1}})  # doctest: +SKIP
    """
    runs = [*earlier, stats]  # every run of the chain, the first first
    original = str(runs[0].get("source") or "")
    original_hub_id = hub_dataset_id(original)
    if source_datasets is None:
        source_datasets = [original_hub_id] if original_hub_id else []
    published_rows = sum(int(split.get("rows", 0)) for split in splits.values())
    kind = str(stats.get("kind") or "")
    steps = _steps(stats)
    methods = list(dict.fromkeys(m.replace("_", "-") for run in runs for m in methods_used(run)))
    tags = [STEP_TAGS.get(step["name"], _kebab(step["name"])) for run in runs for step in _steps(run)]
    data_files = [{"split": name, "path": f"data/{name}-*"} for name, split in splits.items() if split.get("files")]
    card_data = DatasetCardData(
        license=license or "unknown",
        task_categories=TASK_CATEGORIES.get(kind, ["image-text-to-text"]),
        source_datasets=list(source_datasets) or None,
        size_categories=[size_category(published_rows)],
        pretty_name=pretty_name
        or (repo_id.rstrip("/").split("/")[-1] if repo_id else f"{_source_name(original)} (curated)"),
        tags=list(dict.fromkeys(["mmsieve", *tags, *methods])),
        configs=[{"config_name": "default", "data_files": data_files}] if data_files else None,
    )
    rows_in = int(stats.get("rows_in") or 0)
    removed_by_reason = dict(stats.get("removed_by_reason") or {})
    card = DatasetCard.from_template(
        card_data,
        template_path=str(DATASET_CARD_TEMPLATE),
        title=card_data.pretty_name,
        repo_id=repo_id,
        source=_source_link(str(stats.get("source") or "")),
        original=_source_link(original),
        earlier=[_run_summary(run) for run in earlier],
        read_as={k: v for k, v in (("split", stats.get("split")), ("config", stats.get("config"))) if v},
        kind=kind or "unknown",
        format=stats.get("format") or "unknown",
        roles=dict(stats.get("columns") or {}),
        rows_in=rows_in,
        kept=int(stats.get("kept") or 0),
        removed=int(stats.get("removed") or 0),
        share=lambda n: f"{100 * n / rows_in:.1f}%" if rows_in else "n/a",
        reasons=list(removed_by_reason.items()),
        splits=[(name, int(split.get("rows", 0)), int(split.get("files", 0))) for name, split in splits.items()],
        columns=[(name, _cell(kind_)) for name, kind_ in columns.items()],
        steps=steps,
        models=list(dict.fromkeys(model for run in runs for model in _models(run))),
        versions=list((stats.get("versions") or {}).items()),
        reason_plot=plots.get(REASON_PLOT),
        histograms=[(column, path) for column, path in plots.items() if column != REASON_PLOT],
        contamination=[(name, row) for name, row in (stats.get("contamination") or {}).items()],
        dedup=_clean(stats.get("dedup")) if isinstance(stats.get("dedup"), Mapping) else None,
        rewrites=[step for step in steps if step["extras"].get("rewrite")],
        judges=_judges(stats),
        sample_columns=list(dict.fromkeys(c for row in sample_rows for c in row)),
        sample_rows=[{k: _cell(v) for k, v in row.items()} for row in sample_rows],
        methods=methods,
        mmsieve_version=(stats.get("versions") or {}).get("mmsieve"),
        cell=_cell,
    )
    text = str(card)
    if _HF_TOKEN.search(text):
        raise ValueError("the dataset card contains what looks like a Hugging Face token (hf_...); check the stats")
    return text


def _source_name(source: str) -> str:
    return display_location(source) if source else "unknown"


def _source_link(source: str) -> str:
    """A source for the card's text: a Hub dataset as a link, anything else by its `display_location`."""
    repo_id = hub_dataset_id(source) if source else None
    if repo_id is not None and not source.startswith("hf://"):
        return _hub_link(source, "datasets/")
    if repo_id is not None:
        return f"[`{_cell(display_location(source))}`](https://huggingface.co/datasets/{repo_id})"
    return f"`{_cell(_source_name(source))}`"


def _run_summary(stats: Mapping[str, Any]) -> dict[str, Any]:
    """An earlier run as the card shows it: source, counts, removals by reason, steps."""
    return {
        "source": _source_link(str(stats.get("source") or "")),
        "rows_in": int(stats.get("rows_in") or 0),
        "kept": int(stats.get("kept") or 0),
        "removed": int(stats.get("removed") or 0),
        "reasons": list((stats.get("removed_by_reason") or {}).items()),
        "steps": _steps(stats),
        "contamination": [(name, row) for name, row in (stats.get("contamination") or {}).items()],
        "dedup": _clean(stats.get("dedup")) if isinstance(stats.get("dedup"), Mapping) else None,
    }


def _kebab(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()
