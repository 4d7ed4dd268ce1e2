"""One HTML report of a run: accuracy, when and where each model looks.

Figures are embedded as base64 PNG/GIF and styles inline; the interactive brain viewers
are linked files beside the report (or embedded as ``<iframe srcdoc>`` on request);
nothing is fetched from the network when it is opened.
Every text is HTML-escaped.

Input: a :class:`Report` (or a dict with the same keys) holding :class:`ModelResult`
entries, each with the output of :func:`fmri_ica.training.evaluate` (``evaluation``)
and the saliency figures of merit written by the explain stage (``saliency_metrics``),
and per class a :class:`ClassResult` with its figures (:func:`class_figures` draws them).
Optional parts may be missing; their sections are left out.

Saliency of a model near chance is not evidence (EVALUATION.md): a model whose balanced
accuracy is below ``chance + 0.5 * (1 - chance)`` gets a warning at the top of the report
and on each of its sections.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._utils import package_versions, write_json, write_text
from ..exceptions import InputDataError, InvalidParameterError

logger = logging.getLogger(__name__)

__all__ = ["Report", "ModelResult", "ClassResult", "write_report", "class_figures", "reliability"]

#: Figures of a class, in the order shown, with their captions.
CLASS_FIGURES = {
    "glass_brains": "Glass brains (maximum-intensity projections: sagittal, coronal, axial) of the "
    "mean saliency in each time bin, on one colour scale shared by the model's classes; regions "
    "outside the top 20% of the class's (region, time bin) means are not drawn.",
    "surface": "Inflated fsaverage5 cortex, in the glass brains' time bins: each vertex shows the atlas "
    "region under it; grey: no region there (a coarse grid misses thin cortex) or no saliency; "
    "sub-cortical and cerebellar regions are not shown.",
    "animation": "The map over time (maximum-intensity projections); red mark: current time.",
    "heatmap": "Every region (rows, grouped by network) at every time step; grey strip: task ON.",
    "top_regions_plot": "The most salient regions, coloured by network.",
}


@dataclass
class ClassResult:
    """Saliency results of one class (task) for one model.

    Parameters
    ----------
    name : str
        Class name, e.g. ``MOTOR``.
    figures : dict of str -> figure
        Keys among :data:`CLASS_FIGURES`; values are image files (PNG, GIF, JPEG, SVG),
        matplotlib figures or PNG bytes.
    interactive : path or None
        A self-contained HTML viewer (:func:`fmri_ica.reporting.plotting.save_interactive_view`).
    top_regions : pandas.DataFrame or list of dict, optional
        From :func:`fmri_ica.saliency.projection.top_regions`: rank, region, network,
        x, y, z, saliency[, share].
    n_samples : int, optional
        Test samples of this class the map averages.
    """

    name: str
    figures: dict = field(default_factory=dict)
    interactive: str | os.PathLike | None = None
    top_regions: Any = None
    n_samples: int | None = None


@dataclass
class ModelResult:
    """One model's test results.

    Parameters
    ----------
    name : str
    class_names : list of str
        In label order (rows of the confusion matrix).
    evaluation : dict, optional
        :func:`fmri_ica.training.evaluate` on the test set: ``accuracy``,
        ``balanced_accuracy``, ``precision``/``recall``/``f1`` (per class),
        ``confusion_matrix``, ``n``. For the linear baseline, ``accuracy`` alone suffices.
    saliency_metrics : dict, optional
        The explain stage's ``metrics.json``; keys used (all optional):
        ``method``, ``n_samples``, ``top_k``, ``mass_last_10pct``, ``on_share``,
        ``on_share_mismatched``, ``on_share_chance``, ``on_share_per_class``,
        ``planted_share``, ``planted_share_chance``, ``region_precision``,
        ``region_precision_chance``, ``removal`` (rows of
        :func:`fmri_ica.saliency.metrics.removal_test`). Summaries are floats or dicts
        with ``mean``, ``std``, ``n``.
    classes : list of ClassResult
    kind : {"recurrent", "linear"}, default="recurrent"
        ``linear``: the reference model (maps are |weights|; no saliency-over-time).
    description : str, default=""
    permuted : dict, optional
        Scores of the same recipe trained on subject-wise permuted labels (a null model):
        ``accuracy`` and ``run_accuracy_ci``.
    group_figure : figure, optional
        Glass brains of the group test of trained against the permuted-label model's saliency.
    confusion_figure : figure, optional
        The test confusion matrix, already drawn (default: drawn from ``evaluation``).
    """

    name: str
    class_names: list = field(default_factory=list)
    evaluation: dict | None = None
    saliency_metrics: dict | None = None
    classes: list = field(default_factory=list)
    kind: str = "recurrent"
    description: str = ""
    permuted: dict | None = None
    group_figure: Any = None
    confusion_figure: Any = None


@dataclass
class Report:
    """Everything the report shows.

    Parameters
    ----------
    title : str
    summary : dict
        Run summary, label -> value, in display order: data set, subjects per split,
        tasks, atlas, TR, window, normalisation, ...
    models : list of ModelResult
        The linear baseline, if any, is a ModelResult with ``kind="linear"``.
    saliency_over_time : figure, optional
        :func:`fmri_ica.reporting.plotting.plot_saliency_over_time` output; shown first.
    parameters : dict
        Configuration, shown as JSON at the end.
    versions : dict, optional
        Package versions (default: :func:`fmri_ica._utils.package_versions`).
    notes : list of str
        Free-text remarks shown after the summary.
    """

    title: str = "fmri_ica report"
    summary: dict = field(default_factory=dict)
    models: list = field(default_factory=list)
    saliency_over_time: Any = None
    parameters: dict = field(default_factory=dict)
    versions: dict | None = None
    notes: list = field(default_factory=list)


# --------------------------------------------------------------------------- reliability


def reliability(model: ModelResult) -> tuple[bool | None, float | None, float | None]:
    """Whether a model is accurate enough for its saliency to mean anything.

    Returns
    -------
    reliable : bool or None
        None when accuracy or the number of classes is unknown.
    score : float or None
        Balanced accuracy (accuracy if that is all there is).
    threshold : float or None
        ``chance + 0.5 * (1 - chance)``, chance = 1 / number of classes.
    """
    ev = model.evaluation or {}
    score = ev.get("balanced_accuracy", ev.get("accuracy"))
    n_classes = len(model.class_names) or ev.get("n_classes")
    if score is None or not n_classes:
        return None, score, None
    chance = 1.0 / n_classes
    threshold = chance + 0.5 * (1 - chance)
    return bool(score >= threshold), float(score), threshold


# --------------------------------------------------------------------------- rendering helpers


_MIME = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".svg": "image/svg+xml",
}


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any, digits: int = 3) -> str:
    """A number (or a mean ± std summary dict) as text; '—' when missing."""
    if value is None:
        return "—"
    if isinstance(value, dict) and "mean" in value:
        text = _fmt(value["mean"], digits)
        if value.get("std") is not None and value.get("n", 2) > 1:
            text += f" ± {_fmt(value['std'], digits)}"
        return text
    if isinstance(value, (float, np.floating)):
        return "—" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _mean(value: Any) -> float | None:
    if isinstance(value, dict):
        value = value.get("mean")
    return None if value is None else float(value)


def _image(figure: Any, alt: str) -> str:
    """An <img> with the figure embedded as a data URI."""
    if figure is None:
        return ""
    if hasattr(figure, "savefig"):
        from .plotting import save_png

        buffer = io.BytesIO()
        save_png(figure, buffer)
        data, mime = buffer.getvalue(), "image/png"
    elif isinstance(figure, (bytes, bytearray)):
        data, mime = bytes(figure), "image/png"
    else:
        path = Path(figure)
        mime = _MIME.get(path.suffix.lower())
        if mime is None:
            raise InvalidParameterError(
                f"Figure {path.name!r}: unsupported image type {path.suffix!r}; use one of {sorted(_MIME)}."
            )
        if not path.is_file():
            raise InputDataError(
                f"Figure file {path} does not exist: draw it first, or leave it out."
            )
        data = path.read_bytes()
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:{mime};base64,{encoded}" alt="{_e(alt)}">'


def _table(rows: list[dict], columns: list[tuple], caption: str = "", cls: str = "") -> str:
    """An HTML table; ``columns`` are (key, heading[, digits or formatter]) tuples."""
    if not rows:
        return ""
    head = "".join(f"<th>{_e(c[1])}</th>" for c in columns)

    def cell(row, column):
        style = column[2] if len(column) > 2 else 3
        value = row.get(column[0])
        return (
            style(value)
            if callable(style) and value is not None
            else _fmt(value, 3 if callable(style) else style)
        )

    body = "".join(
        "<tr>" + "".join(f"<td>{_e(cell(row, c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    return f'<table class="{cls}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _records(table: Any) -> list[dict]:
    if table is None:
        return []
    if hasattr(table, "to_dict"):
        return table.to_dict(orient="records")
    return [dict(row) for row in table]


def _anchor(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9]+", "-", p).strip("-").lower() for p in parts)


def _warning(text: str) -> str:
    return f'<div class="warning" role="alert">{_e(text)}</div>'


def _gate_text(model: ModelResult) -> str | None:
    reliable, score, threshold = reliability(model)
    if reliable is not False:
        return None
    chance = 1 / (len(model.class_names) or model.evaluation.get("n_classes"))
    return (
        f"{model.name}: balanced accuracy {score:.3f} is near chance ({chance:.3f}; required "
        f"≥ {threshold:.3f}). Saliency of a model near chance is not evidence: its maps below "
        "show what an untrained-like network attends to, not where the task is encoded."
    )


# --------------------------------------------------------------------------- sections


def _summary_section(report: Report) -> str:
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(_list_text(v))}</td></tr>" for k, v in report.summary.items()
    )
    notes = "".join(f"<p>{_e(n)}</p>" for n in report.notes)
    return f'<section id="summary"><h2>Run summary</h2><table class="kv">{rows}</table>{notes}</section>'


def _list_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return _fmt(value)


def _time_section(report: Report) -> str:
    rows = []
    for model in report.models:
        metrics = model.saliency_metrics or {}
        if model.kind == "linear" or "mass_last_10pct" not in metrics:
            continue
        nulls = (metrics.get("sanity") or {}).get("mass_last_10pct") or {}
        rows.append(
            {"model": model.name, "mass": metrics["mass_last_10pct"], "n": metrics.get("n_samples"),
             "untrained": nulls.get("untrained"), "permuted": nulls.get("permuted")}
        )
    table = _table(
        rows,
        [
            ("model", "model"),
            ("mass", "share of saliency in the last 10% of time steps"),
            ("untrained", "same, untrained network"),
            ("permuted", "same, permuted-label model"),
            ("n", "test windows"),
        ],
        caption="Uniform saliency would put 0.10 in the last 10%; mean ± SD over samples.",
    )
    if report.saliency_over_time is None and not rows:
        return ""
    return (
        '<section id="time"><h2>When does each model look?</h2>'
        f"<figure>{_image(report.saliency_over_time, 'saliency over time per model')}"
        "<figcaption>Share of each test window's saliency mass at each time step, per model: the "
        "trained model (solid, band ± SD across windows) beside its null models (dashed: "
        "untrained initial weights, permuted labels; dotted: cascading randomisation). A plain "
        "LSTM's gradients vanish with distance from the last step, so its saliency piles into "
        "the final frames whatever the task; input-cell attention spreads it over the window. "
        "Untrained networks draw the same shapes: where the trained curve lies on its nulls' "
        "curves, the shape is a property of the architecture, not a finding about the brain."
        "</figcaption></figure>"
        f"{table}</section>"
    )


def _overview_section(report: Report) -> str:
    rows = []
    for model in report.models:
        ev, metrics = model.evaluation or {}, model.saliency_metrics or {}
        removal = _removal_at(metrics.get("removal"), 0.1)
        reliable, _, threshold = reliability(model)
        rows.append(
            {
                "model": model.name + (" (reference)" if model.kind == "linear" else ""),
                "acc": _with_ci(ev.get("accuracy"), ev.get("run_accuracy_ci")),
                "bacc": ev.get("balanced_accuracy"),
                "perm": _with_ci((model.permuted or {}).get("accuracy"),
                                 (model.permuted or {}).get("run_accuracy_ci")),
                "differs": _verdict_word(metrics, "untrained"),
                "chance": 1 / len(model.class_names) if model.class_names else None,
                "reliable": {True: "yes", False: "NO: near chance", None: "—"}[reliable],
                "on": metrics.get("on_share"),
                "onm": metrics.get("on_share_mismatched"),
                "onc": metrics.get("on_share_chance"),
                "prec": _mean(metrics.get("region_precision")),
                "precc": metrics.get("region_precision_chance"),
                "rtop": removal.get("drop_top"),
                "rrand": removal.get("drop_random"),
            }
        )
    cols = [
        ("model", "model"),
        ("acc", "accuracy"),
        ("bacc", "balanced accuracy"),
        ("chance", "chance"),
        ("reliable", "saliency interpretable"),
        ("perm", "null: permuted labels"),
        ("differs", "maps differ from an untrained network's"),
        ("on", "task-ON share"),
        ("onm", "ON share, mismatched"),
        ("onc", "ON share, chance"),
        ("prec", "planted-region precision"),
        ("precc", "precision, chance"),
        ("rtop", "accuracy drop, top 10% removed"),
        ("rrand", "drop, random 10% removed"),
    ]
    cols = [
        c
        for c in cols
        if c[0] in ("model", "acc", "bacc", "chance", "reliable")
        or any(r[c[0]] is not None for r in rows)
    ]
    return (
        '<section id="models"><h2>Models at a glance</h2>'
        + _table(
            rows,
            cols,
            cls="wide",
            caption="Held-out subjects (with cross-validation every subject is tested once); accuracy per run "
            "with a 95% bootstrap interval over subjects. Saliency is interpretable when balanced "
            "accuracy ≥ chance + half the distance to 1 and the maps differ from the null models'. "
            "The permuted-label null is the same recipe trained on labels shuffled within each "
            "subject: it must stay near chance. Read ON shares against both the mismatched "
            "baseline and chance.",
        )
        + "</section>"
    )


def _with_ci(value, ci) -> str | None:
    if value is None:
        return None
    return f"{value:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _verdict_word(metrics: dict, check: str) -> str | None:
    verdict = ((metrics or {}).get("sanity") or {}).get("verdicts", {}).get(check)
    return verdict["differs"] if verdict else None


def _sanity_section(report: Report) -> str:
    """Trained vs null models, per model: similarity, verdicts and group tests."""
    blocks = []
    for model in report.models:
        sanity = (model.saliency_metrics or {}).get("sanity")
        if model.kind == "linear" or not sanity:
            continue
        rows = []
        for null, entry in sanity["nulls"].items():
            sim, dist = entry["map_similarity"], entry["profile_distance"]
            group = entry.get("group") or {}
            rows.append({
                "null": entry["label"],
                "rho": f"{sim['value']:.2f} [{sim['ci_low']:.2f}, {sim['ci_high']:.2f}]",
                "tv": f"{dist['value']:.3f} [{dist['ci_low']:.3f}, {dist['ci_high']:.3f}]",
                "last": (sanity.get("mass_last_10pct") or {}).get(null),
                "group": (", ".join(f"{c}: {g['n_significant']}" for c, g in group.items())
                          if group else "—"),
            })
        verdicts = sanity.get("verdicts") or {}
        headline = "".join(
            f"<p class=\"verdict\"><b>{_e(model.name)}: {_e(text)}: {_e(verdicts[key]['differs'])}.</b> "
            f"{_e(verdicts[key]['reason'])}</p>"
            for key, text in (("untrained", "these maps differ from an untrained network's"),
                              ("untrained_profile", "this time profile differs from an untrained network's"),
                              ("all_nulls", "these maps differ from every null model's"))
            if key in verdicts)
        trained_last = (sanity.get("mass_last_10pct") or {}).get("trained")
        table = _table(rows, [
            ("null", "null model"), ("rho", "map similarity (Spearman, 95% CI)"),
            ("tv", "time-profile distance (TV, 95% CI)"), ("last", "null's last-10% mass"),
            ("group", "cells above the null (FDR), per class"),
        ], caption=f"{sanity['n_subjects']} held-out subjects; maps in {sanity['n_bins']} time bins of "
           "run time. Similarity 1 = the null draws the same map (untrained: the mean of "
           "several draws of initial weights). A map differs from the nulls when the upper bound of "
           "its similarity to them lies below both its own split-half reliability and the nulls' "
           "similarity to one another; when the nulls do not agree with each other there is no null "
           "map to differ from, and the verdict is inconclusive. Trained model's last-10% mass: "
           f"{_fmt(trained_last)}. A figure a null reproduces is not evidence about the data.")
        figure = (f"<figure>{_image(model.group_figure, model.name + ' group tests')}<figcaption>"
                  "Sign-flip test across subjects of the trained model's saliency (each map scaled to "
                  "unit mass) against the permuted-label model's (same initial weights, same recipe, "
                  "labels permuted within subjects), per region and time bin, FDR-corrected; maximum z "
                  "over time bins. The test against untrained networks is in the table but is not "
                  "evidence by itself: any training shifts every subject's map the same way.</figcaption>"
                  "</figure>") if model.group_figure else ""
        blocks.append(f"<h3>{_e(model.name)}</h3>{headline}{table}{figure}")
    if not blocks:
        return ""
    return ('<section id="sanity"><h2>Are these maps evidence? Trained vs null models</h2>'
            "<p>Every model is explained beside null models that learned nothing about the data "
            "(Adebayo et al. 2018): its own untrained initial weights, its trained weights "
            "re-initialised from the output layer down (cascading randomisation), and the same "
            "recipe trained on labels permuted within each subject.</p>"
            + "".join(blocks) + "</section>")


def _percent(value: float) -> str:
    return f"{100 * float(value):.0f}%"


def _removal_at(rows: Any, fraction: float) -> dict:
    rows = rows or []
    for row in rows:
        if abs(row.get("fraction", -1) - fraction) < 1e-9:
            return row
    return rows[0] if rows else {}


def _model_section(model: ModelResult, index: int, embed_viewers: bool, base: Path) -> str:
    anchor = _anchor("model", model.name)
    kind = " — linear reference (maps are |weights|)" if model.kind == "linear" else ""
    parts = [f'<section id="{anchor}"><h2>{index}. {_e(model.name)}{_e(kind)}</h2>']
    if model.description:
        parts.append(f"<p>{_e(model.description)}</p>")
    gate = _gate_text(model)
    if gate:
        parts.append(_warning(gate))
    parts.append(_accuracy_block(model))
    parts.append(_saliency_checks(model))
    for cls in model.classes:
        parts.append(
            _class_block(model, _coerce(ClassResult, cls), gate is not None, embed_viewers, base)
        )
    parts.append("</section>")
    return "".join(parts)


def _accuracy_block(model: ModelResult) -> str:
    ev = model.evaluation or {}
    if not ev:
        return ""
    head = (
        f"<p>Accuracy <b>{_fmt(ev.get('accuracy'))}</b>, balanced accuracy "
        f"<b>{_fmt(ev.get('balanced_accuracy'))}</b>"
        + (f", chance {_fmt(1 / len(model.class_names))}" if model.class_names else "")
        + (f", {ev['n_runs']} test runs" if ev.get("n_runs") else f", {ev['n']} test samples" if ev.get("n") else "")
        + ".</p>"
    )
    rows = []
    confusion = (
        np.asarray(ev["confusion_matrix"]) if ev.get("confusion_matrix") is not None else None
    )
    for i, name in enumerate(model.class_names):
        row = {"class": name}
        for key in ("precision", "recall", "f1"):
            if ev.get(key) is not None and i < len(ev[key]):
                row[key] = float(ev[key][i])
        if confusion is not None and i < len(confusion):
            row["support"] = int(confusion[i].sum())
        rows.append(row)
    columns = [
        ("class", "class"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("f1", "F1"),
        ("support", "test samples"),
    ]
    table = _table(rows, columns) if any(len(row) > 1 for row in rows) else ""
    figure = ""
    if model.confusion_figure is not None:
        figure = f'<figure class="small">{_image(model.confusion_figure, model.name + " confusion matrix")}</figure>'
    elif confusion is not None and model.class_names:
        import matplotlib.pyplot as plt

        from .plotting import plot_confusion_matrix

        fig = plot_confusion_matrix(
            confusion, model.class_names, title=f"{model.name}: confusion matrix (test)"
        )
        figure = f'<figure class="small">{_image(fig, model.name + " confusion matrix")}</figure>'
        plt.close(fig)
    return f'<div class="accuracy"><h3>Classification</h3>{head}<div class="row">{table}{figure}</div></div>'


def _saliency_checks(model: ModelResult) -> str:
    m = model.saliency_metrics or {}
    if not m:
        return ""
    parts = ["<h3>Does the saliency point at the task?</h3>"]
    if m.get("method"):
        parts.append(
            f"<p>Attribution method: {_e(m['method'])}"
            + (f"; {_e(m['n_samples'])} test samples" if m.get("n_samples") else "")
            + ".</p>"
        )
    top_k = m.get("top_k", 0.1)
    if m.get("on_share") is not None:
        per_class = m.get("on_share_per_class") or {}
        rows = [
            {
                "what": "all classes",
                "on": m["on_share"],
                "onm": m.get("on_share_mismatched"),
                "chance": m.get("on_share_chance"),
            }
        ]
        rows += [{"what": c, "on": v} for c, v in per_class.items()]
        parts.append(
            _table(
                rows,
                [
                    ("what", "class"),
                    ("on", "task-ON share"),
                    ("onm", "mismatched baseline"),
                    ("chance", "chance"),
                ],
                caption=f"Share of the top {_fmt(100 * top_k, 0)}% saliency cells that fall in "
                "the sample's task-ON frames. The mismatched baseline scores the same "
                "maps against another class's ON frames; chance is the fraction of ON "
                "frames. Under per-region z-scoring fixation is as informative as the "
                "task, so a share near the baselines is not a failure, and a high share "
                "alone is not proof.",
            )
        )
    if m.get("planted_share") is not None or m.get("region_precision") is not None:
        precision = m.get("region_precision") or {}
        rows = [
            {
                "what": "all classes",
                "share": m.get("planted_share"),
                "sharec": m.get("planted_share_chance"),
                "prec": _mean(precision) if precision else None,
                "precc": m.get("region_precision_chance"),
            }
        ]
        rows += [{"what": c, "prec": v} for c, v in precision.items() if c != "mean"]
        parts.append(
            _table(
                rows,
                [
                    ("what", "class"),
                    ("share", "top-cell share in planted regions"),
                    ("sharec", "chance"),
                    ("prec", "region precision at k planted"),
                    ("precc", "chance"),
                ],
                caption="Simulated data only: planted regions are the ground truth.",
            )
        )
    if m.get("removal"):
        parts.append(
            _table(
                [dict(r) for r in m["removal"]],
                [
                    ("fraction", "cells removed", _percent),
                    ("accuracy", "intact accuracy"),
                    ("accuracy_top", "accuracy, top cells removed"),
                    ("accuracy_random", "accuracy, random cells removed"),
                    ("drop_top", "drop (top)"),
                    ("drop_random", "drop (random)"),
                ],
                caption="Removal test: a faithful map hurts accuracy more when its top cells are removed "
                "than random cells. A larger drop for one model does not by itself make its map "
                "more faithful (models differ in robustness).",
            )
        )
    return "".join(parts)


def _class_block(
    model: ModelResult, cls: ClassResult, gated: bool, embed_viewers: bool, base: Path
) -> str:
    anchor = _anchor("model", model.name, "class", cls.name)
    n = f" ({cls.n_samples} test samples)" if cls.n_samples else ""
    parts = [
        f'<details open id="{anchor}"><summary><h3>{_e(model.name)} · class {_e(cls.name)}{_e(n)}</h3>'
        "</summary>"
    ]
    if gated:
        parts.append(_warning(f"{model.name} is near chance: these maps are not evidence."))
        parts.append('<div class="gated">')
    for key, heading in CLASS_FIGURES.items():
        figure = (cls.figures or {}).get(key)
        if figure is not None:
            parts.append(
                f"<figure><figcaption>{_e(heading)}</figcaption>"
                f"{_image(figure, f'{model.name} {cls.name} {heading}')}</figure>"
            )
    unknown = sorted(set(cls.figures or {}) - set(CLASS_FIGURES))
    for key in unknown:
        parts.append(
            f"<figure><figcaption>{_e(key)}</figcaption>{_image(cls.figures[key], key)}</figure>"
        )
    rows = _records(cls.top_regions)
    if rows:
        parts.append(
            _table(
                rows,
                [
                    ("rank", "rank"),
                    ("region", "region"),
                    ("network", "network"),
                    ("x", "x (mm)", 0),
                    ("y", "y (mm)", 0),
                    ("z", "z (mm)", 0),
                    ("saliency", "mean saliency"),
                    ("share", "share of total"),
                    *([("planted", "planted (ground truth)")] if "planted" in rows[0] else []),
                ],
                caption="Most salient regions (mean over time and test samples of the "
                "class); MNI coordinates of the region centre.",
            )
        )
    if cls.interactive is not None:
        parts.append(
            _viewer(Path(cls.interactive), f"{model.name} {cls.name}", embed_viewers, base)
        )
    parts.append("</div></details>" if gated else "</details>")
    return "".join(parts)


def _viewer(path: Path, title: str, embed: bool, base: Path) -> str:
    if embed:
        doc = html.escape(path.read_text(), quote=True)
        return (
            f"<figure><figcaption>Interactive viewer (time-averaged map): {_e(title)}</figcaption>"
            f'<iframe class="viewer" srcdoc="{doc}" title="{_e(title)}"></iframe></figure>'
        )
    link = os.path.relpath(path, base)
    return f'<p><a href="{_e(link)}">Interactive viewer (time-averaged map): {_e(title)}</a></p>'


def _provenance_section(report: Report) -> str:
    versions = report.versions if report.versions is not None else package_versions()
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in versions.items())
    params = json.dumps(report.parameters, indent=2, sort_keys=True, default=str)
    return (
        '<section id="provenance"><h2>Versions and parameters</h2>'
        f'<table class="kv">{rows}</table><pre>{_e(params)}</pre></section>'
    )


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0 auto;
max-width:1300px;padding:1em 2em;color:#222;line-height:1.4}
h1{font-size:1.7em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{display:inline;font-size:1.1em}summary{cursor:pointer;margin:.8em 0}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
thead th{background:#f2f2f2}td{font-variant-numeric:tabular-nums}caption{caption-side:bottom;
text-align:left;font-size:.85em;color:#555;padding-top:.3em;max-width:60em}
table.kv th{background:#f7f7f7;font-weight:600}
figure{margin:.8em 0}figure img{max-width:100%;height:auto}figcaption{font-size:.9em;color:#444;
margin:.3em 0;max-width:70em}figure.small img{max-width:520px}
.row{display:flex;flex-wrap:wrap;gap:2em;align-items:flex-start}
.warning{background:#fff3cd;border:1px solid #e0b000;border-left:6px solid #e0b000;padding:.6em 1em;
margin:.6em 0;font-weight:600}
iframe.viewer{width:min(100%,800px);height:410px;border:1px solid #ccc}
.gated figure img,.gated iframe{opacity:.55}
nav{font-size:.9em;color:#555}nav a{margin-right:1em}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.8em;max-height:30em}
.sub{color:#666;font-size:.9em}
"""


# --------------------------------------------------------------------------- public


def _coerce(cls, value):
    """A dataclass instance from itself or a dict with its field names."""
    if isinstance(value, cls):
        return value
    if is_dataclass(value):
        value = asdict(value)
    if not isinstance(value, dict):
        raise InvalidParameterError(
            f"Expected a {cls.__name__} or a dict; got {type(value).__name__}."
        )
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise InvalidParameterError(
            f"Unknown {cls.__name__} field(s) {unknown}. Allowed: {sorted(names)}."
        )
    return cls(**value)


def write_report(
    path: str | os.PathLike, report: Report | dict, *, embed_viewers: bool = False
) -> Path:
    """Write the report as one HTML file (figures embedded; viewers linked or embedded).

    Parameters
    ----------
    path : path ending in .html
    report : Report or dict
        See :class:`Report`; dicts are converted (also nested models and classes).
    embed_viewers : bool, default=False
        Embed the interactive viewers in the page (about 0.7 MB each) instead of linking
        them as files relative to the report (keep the folder together to open them).

    Returns
    -------
    Path
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise InvalidParameterError(f"'path' must end in .html; got {path.name!r}.")
    report = _coerce(Report, report)
    report.models = [_coerce(ModelResult, m) for m in report.models]
    for model in report.models:
        model.classes = [_coerce(ClassResult, c) for c in model.classes]
    warnings = [w for w in (_gate_text(m) for m in report.models) if w]
    nav = "".join(f'<a href="#{_anchor("model", m.name)}">{_e(m.name)}</a>' for m in report.models)
    body = [
        f"<h1>{_e(report.title)}</h1>",
        '<p class="sub">fmri_ica: recurrent classifiers with input-cell attention on task fMRI; '
        "saliency = how much each region at each time step moves the predicted probability.</p>",
        f'<nav><a href="#summary">Summary</a><a href="#models">Models</a>'
        f'<a href="#time">Saliency over time</a><a href="#sanity">Null models</a>'
        f'{nav}<a href="#provenance">Versions</a></nav>',
        _summary_section(report),
        *(_warning(w) for w in warnings),
        _overview_section(report) if report.models else "",
        _time_section(report),
        _sanity_section(report),
        *(
            _model_section(m, i + 1, embed_viewers, path.parent)
            for i, m in enumerate(report.models)
        ),
        _provenance_section(report),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(report.title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )
    return write_text(path, page)


def class_figures(
    out_dir: str | os.PathLike,
    values,
    atlas,
    *,
    t_r: float,
    model: str,
    class_name: str,
    stride: int = 1,
    task_on=None,
    n_bins: int = 4,
    top_k: int = 15,
    surface: bool = True,
    animation: bool = True,
    interactive: bool = True,
    top_plot: bool = True,
    heatmap: bool = True,
    vmax: float | None = None,
    cache: bool = True,
    draw: bool = True,
) -> ClassResult | None:
    """Draw every figure of one class of one model and return its :class:`ClassResult`.

    Parameters
    ----------
    out_dir : path
        Figures go here, named ``<model>_<class>_<figure>.png`` (``.gif``, ``.html``).
    values : array, shape (time, region)
        The class's mean saliency (one column per atlas region).
    atlas : Atlas
    t_r : float
    model, class_name : str
    stride : int, default=1
    task_on : bool array, shape (time,), optional
    n_bins : int, default=4
        Time bins of the glass brains and the surface views.
    top_k : int, default=15
    surface, animation, interactive : bool, default=True
        Draw the slower figures (surface ~10 s, animation ~5 s, viewer ~2 s).
    top_plot, heatmap : bool, default=True
        Draw the top regions as bars (the table is always there); draw the heatmap.
    vmax : float, optional
        Shared colour-scale top (e.g. across the classes of a model).
    cache : bool, default=True
        Reuse the figures of an earlier call with the same inputs (recorded in
        ``<model>_<class>_figures.json`` with a hash of the values and every option).
    draw : bool, default=True
        False: return the cached figures' result, or None when they must be drawn.

    Returns
    -------
    ClassResult or None
    """
    from ..saliency.projection import top_regions

    out_dir = Path(out_dir)
    stem = f"{_anchor(model)}_{_anchor(class_name)}"
    values = np.asarray(values, dtype=np.float64)
    options = {"t_r": t_r, "stride": stride, "n_bins": n_bins, "top_k": top_k, "surface": surface,
               "animation": animation, "interactive": interactive, "top_plot": top_plot, "heatmap": heatmap,
               "vmax": vmax}
    key = _figures_key(values, atlas, task_on, options)
    record_path = out_dir / f"{stem}_figures.json"
    figures, viewer = _cached_figures(record_path, key) if cache else (None, None)
    if figures is None and not draw:
        return None
    if figures is None:
        figures, viewer = _draw_figures(out_dir, stem, values, atlas, task_on, options,
                                        label=f"{model} · {class_name}", class_name=class_name)
        write_json(record_path, {"key": key, "figures": {k: Path(v).name for k, v in figures.items()},
                                 "interactive": Path(viewer).name if viewer else None})
    return ClassResult(
        name=class_name,
        figures=figures,
        interactive=viewer,
        top_regions=top_regions(values, atlas, k=min(top_k, 10)),
    )


def _figures_key(values: np.ndarray, atlas, task_on, options: dict) -> str:
    """A hash of everything a class's figures depend on."""
    from .cache import figure_key

    return figure_key(values, np.asarray(atlas.img.affine), np.asarray(atlas.img.dataobj),
                      None if task_on is None else np.asarray(task_on, dtype=bool),
                      options, list(atlas.labels["name"]), atlas.name)


def _cached_figures(record_path: Path, key: str):
    """The figures recorded under ``key`` if every file is still there, else (None, None)."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return None, None
    if record.get("key") != key:
        return None, None
    folder = record_path.parent
    figures = {name: folder / file for name, file in record.get("figures", {}).items()}
    viewer = folder / record["interactive"] if record.get("interactive") else None
    if not all(p.is_file() for p in [*figures.values(), *([viewer] if viewer else [])]):
        return None, None
    return figures, viewer


def _draw_figures(out_dir: Path, stem: str, values, atlas, task_on, options: dict, *, label: str,
                  class_name: str):
    from ..saliency.projection import time_average_img
    from . import plotting

    t_r, stride, n_bins, vmax = options["t_r"], options["stride"], options["n_bins"], options["vmax"]
    figures = {
        "glass_brains": plotting.plot_glass_brains(
            values, atlas, t_r=t_r, stride=stride, n_bins=n_bins, vmax=vmax,
            title=f"{label}: saliency by time bin", path=out_dir / f"{stem}_glass.png",
        ),
    }
    if options["heatmap"]:
        figures["heatmap"] = plotting.plot_region_time_heatmap(
            values, atlas, t_r=t_r, stride=stride, task_on=task_on,
            title=f"{label}: saliency per region and time step", path=out_dir / f"{stem}_heatmap.png",
        )
    if options["top_plot"]:
        figures["top_regions_plot"] = plotting.plot_top_regions(
            values, atlas, k=options["top_k"], title=f"{label}: top {options['top_k']} regions",
            path=out_dir / f"{stem}_top.png",
        )
    if options["surface"]:
        figures["surface"] = plotting.plot_surface_bins(
            values, atlas, t_r=t_r, stride=stride, n_bins=n_bins, vmax=vmax,
            title=f"{label}: cortical surface by time bin", path=out_dir / f"{stem}_surface.png",
        )
    if options["animation"]:
        figures["animation"] = plotting.animate_saliency(
            values, atlas, t_r=t_r, stride=stride, title=label, path=out_dir / f"{stem}_animation.gif",
        )
    viewer = None
    if options["interactive"]:
        viewer = plotting.save_interactive_view(
            time_average_img(values, atlas), out_dir / f"{stem}_viewer.html",
            title=f"{class_name}: mean over time (top 10% of voxels)",
        )
    return figures, viewer
