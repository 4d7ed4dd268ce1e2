"""The synthetic benchmark says what its numbers and figures show."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fmri_ica.benchmark.synthetic import _saliency_maps_figure, format_table


def test_table_has_a_legend_of_its_cells():
    results = pd.DataFrame(
        [
            {
                "dataset": "earlier",
                "model": "lstm",
                "status": "ok",
                "wjac": 0.1,
                "euc": 1.0,
                "accuracy": 0.5,
            },
            {"dataset": "latter", "model": "lstm", "status": "failed"},
        ]
    )
    text = format_table(results)
    first, blank, header = text.splitlines()[:3]
    assert "WJac / Euc / accuracy (%)" in first
    assert "weighted Jaccard" in first and "Euclidean" in first
    assert blank == "" and header.startswith("| model |")
    assert "| LSTM | 0.100/1.000/50.0 | failed |" in text


def test_saliency_maps_figure_has_axis_labels_and_a_colour_bar():
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    datasets, models = ["earlier", "middle"], ["lstm", "ica_mean"]
    loaded = {
        (d, m): {"mean_map": rng.random((9, 7)), "mean_mask": rng.random((9, 7))}
        for d in datasets
        for m in models
    }
    fig = _saliency_maps_figure(loaded, datasets, models)
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        assert len(panels) == len(datasets) * (len(models) + 1)
        assert len(fig.axes) == len(panels) + 1  # one shared colour bar
        bar = next(ax for ax in fig.axes if ax.get_label() == "<colorbar>")
        assert "saliency" in bar.get_ylabel()
        assert all(ax.get_xlabel() == "time step" for ax in panels[-len(models) - 1 :])
        assert all("feature" in ax.get_ylabel() for ax in panels[:: len(models) + 1])
        # every panel on the bar's 0-1 scale: models' saliency differs by orders of magnitude
        assert all(ax.images[0].get_clim() == (0, 1) for ax in panels)
        assert all(ax.images[0].get_array().max() == 1 for ax in panels)
    finally:
        plt.close(fig)
