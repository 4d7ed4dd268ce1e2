"""Figures: they render, say what they show (captions, labels), and are reproducible."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmri_ica.exceptions import InvalidParameterError
from fmri_ica.reporting import plotting
from fmri_ica.saliency.projection import time_average_img


@pytest.fixture
def atlas(rng, affine, make_atlas):
    data = rng.choice(np.arange(6), size=(7, 8, 9)).astype(np.int16)
    table = pd.DataFrame(
        {
            "index": np.arange(1, 6),
            "name": [f"region{i}" for i in range(1, 6)],
            "network": ["Visual", "DefaultMode", "Visual", "Motor", "DefaultMode"],
            "x": [10.0, 20, 30, 40, 50],
            "y": [-30.0, -20, -10, 0, 10],
            "z": [0.0, 5, 10, 15, 20],
        }
    )
    return make_atlas(nib.Nifti1Image(data, affine), table)


@pytest.fixture
def values(rng):
    return rng.random((20, 5))


def texts(fig) -> list[str]:
    found = [t.get_text() for t in fig.findobj(plt.Text)]
    plt.close(fig)
    return found


def test_tail_share():
    assert plotting.tail_share(np.r_[np.zeros(19), 1.0]) == 1.0
    assert plotting.tail_share(np.ones((3, 20))) == pytest.approx(0.1)
    assert plotting.tail_share(np.ones(30), fraction=0.1) == pytest.approx(0.1)


def test_saliency_over_time_labels_and_determinism(rng, tmp_path):
    lstm = np.c_[np.zeros((4, 19)), np.ones(4)]  # all mass in the last step
    ica = rng.random((4, 20))
    on = np.zeros(20, bool)
    on[5:10] = True
    kw = dict(t_r=0.72, stride=2, task_on=on)
    fig = plotting.plot_saliency_over_time({"LSTM": lstm, "ICA-LSTM": ica}, **kw)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time from window start (s)"
    assert ax.get_xlim()[1] == pytest.approx(19.5 * 1.44)
    labels = texts(fig)
    assert any(t.startswith("LSTM (n = 4; last 10% of steps: 1.00") for t in labels)
    assert "task ON" in labels
    first = plotting.plot_saliency_over_time(
        {"LSTM": lstm, "ICA-LSTM": ica}, **kw, path=tmp_path / "a.png"
    )
    second = plotting.plot_saliency_over_time(
        {"LSTM": lstm, "ICA-LSTM": ica}, **kw, path=tmp_path / "b.png"
    )
    assert first.read_bytes() == second.read_bytes()
    assert Image.open(first).size[0] > 500
    summary = {"mean": lstm.mean(0), "std": lstm.std(0), "n": 4}
    fig = plotting.plot_saliency_over_time({"LSTM": summary}, t_r=0.72)
    line = fig.axes[0].get_lines()[0].get_ydata()
    assert any(t.startswith("LSTM (n = 4; last 10% of steps: 1.00") for t in texts(fig))
    np.testing.assert_allclose(line, lstm.mean(0))
    with pytest.raises(InvalidParameterError, match="task_on"):
        plotting.plot_saliency_over_time({"LSTM": lstm}, t_r=0.72, task_on=on[:-1])


def test_glass_brains_captions(atlas, values):
    fig = plotting.plot_glass_brains(values, atlas, t_r=0.5, n_bins=2, title="class A")
    labels = texts(fig)
    assert "t = 0–5 s" in labels and "t = 5–10 s" in labels and "class A" in labels
    with pytest.raises(InvalidParameterError, match="5 regions"):
        plotting.plot_glass_brains(values[:, :4], atlas, t_r=0.5)


def test_region_time_heatmap_groups_by_network(atlas, values):
    on = np.arange(20) % 8 < 4
    fig = plotting.plot_region_time_heatmap(values, atlas, t_r=2.0, task_on=on)
    heat = fig.axes[0]
    assert [t.get_text() for t in heat.get_yticklabels()] == [
        "DefaultMode (2)",
        "Motor (1)",
        "Visual (2)",
    ]
    image = heat.get_images()[0].get_array()
    # Rows: DefaultMode regions 2 and 5, Motor 4, Visual 1 and 3; columns: time.
    np.testing.assert_allclose(image, values[:, [1, 4, 3, 0, 2]].T)
    assert heat.get_xlabel() == "time from window start (s)"
    assert "task ON" in texts(fig)


def test_animation_frames_and_timing(atlas, values, tmp_path):
    path = plotting.animate_saliency(
        values, atlas, t_r=1.0, path=tmp_path / "a.gif", fps=5, max_frames=8
    )
    gif = Image.open(path)
    assert gif.n_frames == 8 and gif.info["duration"] == 200
    with pytest.raises(InvalidParameterError, match=".gif"):
        plotting.animate_saliency(values, atlas, t_r=1.0, path=tmp_path / "a.mp4")


def test_interactive_view_is_self_contained(atlas, values, tmp_path):
    path = plotting.save_interactive_view(
        time_average_img(values, atlas), tmp_path / "v.html", title="mean"
    )
    html = path.read_text()
    assert "<html" in html.lower() and "brainsprite" in html.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)


def test_confusion_matrix(tmp_path):
    counts = np.array([[8, 2], [0, 5]])
    fig = plotting.plot_confusion_matrix(counts, ["fear", "neut"])
    labels = texts(fig)
    assert "0.80\n(8)" in labels and "1.00\n(5)" in labels and "predicted class" in labels
    assert plotting.plot_confusion_matrix(
        counts, ["a", "b"], tmp_path / "c.png", normalize=False
    ).exists()
    with pytest.raises(InvalidParameterError, match="3 class names"):
        plotting.plot_confusion_matrix(counts, ["a", "b", "c"])


def test_top_regions_ranked(atlas):
    values = np.array([0.1, 0.5, 0.3, 0.9, 0.0])
    fig = plotting.plot_top_regions(values, atlas, k=3)
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    plt.close(fig)
    assert ticks == ["region4  (Motor)", "region2  (DefaultMode)", "region3  (Visual)"]


@pytest.mark.slow
def test_surface_bins(atlas, values, tmp_path):
    path = plotting.plot_surface_bins(values, atlas, t_r=1.0, n_bins=2, path=tmp_path / "s.png")
    assert Image.open(path).size[1] > 300


def test_glass_brains_left_on_the_left_and_only_the_top_share(make_atlas, tmp_path):
    # x runs right to left in the file (negative pixdim): the drawing must undo it.
    affine = np.diag([-3.0, 3.0, 3.0, 1.0])
    affine[:3, 3] = [12.0, -12.0, 0.0]  # x from 12 mm (right) to -9 mm (left)
    data = np.zeros((8, 8, 8), np.int16)
    data[6:, 2:6, 2:6] = 1  # x = -6, -9 mm: left hemisphere
    data[:2, 2:6, 2:6] = 2  # x = 12, 9 mm: right hemisphere
    atlas = make_atlas(nib.Nifti1Image(data, affine), pd.DataFrame(
        {"index": [1, 2], "name": ["left", "right"], "network": ["n", "n"]}))
    volume = plotting._mip_volume(time_average_img(np.array([[1.0, 0.1]]), atlas))

    def coloured_columns(threshold):
        canvas, panels = plotting._mip_row(volume, [0], cmap="YlOrRd", vmax=1.0, threshold=threshold)
        left, right = panels[0][1]  # the coronal view
        view = canvas[:, left:right]
        coloured = (np.ptp(view, axis=2) > 0.05).any(axis=0)  # grey and white have R = G = B
        return np.flatnonzero(coloured), right - left

    columns, width = coloured_columns(0.0)
    assert columns.min() < width / 2 < columns.max()  # both regions
    columns, width = coloured_columns(0.5)
    assert columns.size and columns.max() < width / 2  # only the left region, on the left

    fig = plotting.plot_glass_brains(np.array([[1.0, 0.1]] * 4), atlas, t_r=1.0, n_bins=2,
                                     top_share=0.5, path=tmp_path / "g.png")
    png = Image.open(fig)
    assert png.mode == "P" and round(png.info["dpi"][0]) >= 150  # palette PNG, 150 dpi
    with pytest.raises(InvalidParameterError, match="top_share"):
        plotting.plot_glass_brains(np.ones((4, 2)), atlas, t_r=1.0, top_share=0)
