"""The HTML report: one self-contained file, every section, warnings gated on accuracy."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.reporting.report import ClassResult, ModelResult, Report, reliability, write_report

CLASSES = ["MOTOR", "WM"]


class _Checker(HTMLParser):
    """Collects tags and ids; fails on unbalanced structural tags."""

    STRUCTURAL = {"html", "body", "section", "table", "details", "figure", "div"}

    def __init__(self):
        super().__init__()
        self.stack, self.ids, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.ids += [v for k, v in attrs if k == "id"]
        if tag in self.STRUCTURAL:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.STRUCTURAL:
            assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


def parse(text: str) -> _Checker:
    checker = _Checker()
    checker.feed(text)
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


def small_png(tmp_path, name="f.png"):
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    fig.savefig(tmp_path / name)
    plt.close(fig)
    return tmp_path / name


def small_gif(tmp_path):
    frames = [Image.new("RGB", (8, 6), color) for color in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=100)
    return tmp_path / "a.gif"


def evaluation(accuracy):
    n = int(accuracy * 10)
    return {
        "accuracy": accuracy,
        "balanced_accuracy": accuracy,
        "precision": [accuracy] * 2,
        "recall": [accuracy] * 2,
        "f1": [accuracy] * 2,
        "confusion_matrix": [[n, 10 - n], [10 - n, n]],
        "n": 20,
        "n_classes": 2,
    }


def saliency_metrics():
    return {
        "method": "saliency",
        "n_samples": 20,
        "top_k": 0.1,
        "mass_last_10pct": {"mean": 0.612, "std": 0.02, "n": 20},
        "on_share": {"mean": 0.7, "std": 0.1, "n": 20},
        "on_share_mismatched": 0.55,
        "on_share_chance": 0.5,
        "on_share_per_class": {"MOTOR": 0.8, "WM": 0.6},
        "region_precision": {"mean": 0.4, "MOTOR": 0.5, "WM": 0.3},
        "region_precision_chance": 0.05,
        "removal": [
            {
                "fraction": 0.1,
                "accuracy": 0.9,
                "accuracy_top": 0.6,
                "accuracy_random": 0.85,
                "drop_top": 0.3,
                "drop_random": 0.05,
            }
        ],
    }


@pytest.fixture
def full_report(tmp_path):
    png, gif = small_png(tmp_path), small_gif(tmp_path)
    viewer = tmp_path / "viewer.html"
    viewer.write_text('<html><body><div id="brain">viewer "quoted" & co</div></body></html>')
    top = pd.DataFrame(
        {
            "rank": [1, 2],
            "region": ["L_M1", "R_SMA"],
            "network": ["Motor", "Motor"],
            "x": [-38.2, 4.0],
            "y": [-22.0, -8.0],
            "z": [56.0, 60.0],
            "saliency": [0.9, 0.5],
            "share": [0.2, 0.1],
        }
    )
    classes = [
        ClassResult(
            name=c,
            figures={"glass_brains": png, "animation": gif, "heatmap": png},
            interactive=viewer,
            top_regions=top,
            n_samples=10,
        )
        for c in CLASSES
    ]
    return Report(
        title="Demo <run> & co",
        summary={
            "Data set": "simulated",
            "Subjects": {"train": 6, "validation": 2, "test": 2},
            "Tasks": CLASSES,
            "Atlas": "gm_kmeans",
            "TR (s)": 0.72,
            "Window": "100 frames",
            "Normalisation": "z-score",
        },
        models=[
            ModelResult("ICA-LSTM", CLASSES, evaluation(0.9), saliency_metrics(), classes),
            ModelResult("LSTM", CLASSES, evaluation(0.6), saliency_metrics(), classes[:1]),
            ModelResult(
                "linear",
                CLASSES,
                {"accuracy": 0.95},
                {"region_precision": {"mean": 0.8}},
                kind="linear",
            ),
        ],
        saliency_over_time=png,
        parameters={"seed": 0, "url_free": True},
        versions={"fmri_ica": "0.1", "nilearn": "0.14.1"},
        notes=["One seed only."],
    )


def test_full_report_sections_images_and_no_network(full_report, tmp_path):
    path = write_report(tmp_path / "report.html", full_report, embed_viewers=True)
    text = path.read_text()
    checker = parse(text)
    for anchor in (
        "summary",
        "time",
        "models",
        "model-ica-lstm",
        "model-lstm",
        "model-linear",
        "model-ica-lstm-class-motor",
        "model-ica-lstm-class-wm",
        "provenance",
    ):
        assert anchor in checker.ids
    # The saliency-over-time figure is the first image of the page.
    first_img = re.search(r'<img [^>]*alt="([^"]*)"', text).group(1)
    assert first_img == "saliency over time per model"
    # Every embedded image decodes.
    images = re.findall(r'src="data:(image/[a-z+]+);base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) >= 1 + 2 + 3 * 3  # time, 2 confusion matrices, 3 classes x 3 figures
    for mime, data in images:
        Image.open(io.BytesIO(base64.b64decode(data))).load()
        assert mime in ("image/png", "image/gif")
    # Nothing to fetch at view time.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text)
    assert "http://" not in text and "https://" not in text
    # The viewer is embedded, escaped, in an iframe.
    assert (
        'srcdoc="&lt;html&gt;&lt;body&gt;&lt;div id=&quot;brain&quot;&gt;viewer &quot;quoted&quot; &amp; co'
        in text
    )
    # Tables: accuracy per class, MNI coordinates rounded, removal as a percentage.
    assert "<td>L_M1</td><td>Motor</td><td>-38</td><td>-22</td><td>56</td>" in text
    assert "<td>10%</td><td>0.900</td><td>0.600</td><td>0.850</td>" in text
    assert "0.612 ± 0.020" in text  # mass in the last 10% of steps
    assert "linear (reference)" in text
    assert "Demo &lt;run&gt; &amp; co" in text and "<run>" not in text


def test_warning_only_for_models_near_chance(full_report, tmp_path):
    text = write_report(tmp_path / "r.html", full_report).read_text()
    warnings = re.findall(r'<div class="warning" role="alert">(.*?)</div>', text)
    assert warnings and all("LSTM" in w and "ICA-LSTM" not in w for w in warnings)
    assert any(
        "balanced accuracy 0.600 is near chance (0.500; required ≥ 0.750)" in w for w in warnings
    )
    assert any("not evidence" in w for w in warnings)
    assert reliability(full_report.models[0]) == (True, 0.9, 0.75)
    assert reliability(ModelResult("x", [], {})) == (None, None, None)


def test_minimal_report_and_dict_input(tmp_path):
    path = write_report(tmp_path / "min.html", {"title": "Only a title"})
    text = path.read_text()
    parse(text)
    assert "Only a title" in text and 'id="time"' not in text and "<img" not in text
    # A model with nothing but a name and a dict class still renders.
    text = write_report(
        tmp_path / "m.html", {"models": [{"name": "m", "classes": [{"name": "c"}]}]}
    ).read_text()
    assert "model-m-class-c" in parse(text).ids


def test_linked_viewers_and_bad_inputs(full_report, tmp_path):
    out = tmp_path / "sub"
    text = write_report(out / "r.html", full_report).read_text()  # linked by default
    assert 'href="../viewer.html"' in text and "srcdoc" not in text
    with pytest.raises(InvalidParameterError, match="Unknown Report field"):
        write_report(tmp_path / "x.html", {"titel": "typo"})
    with pytest.raises(InvalidParameterError, match=".html"):
        write_report(tmp_path / "x.pdf", full_report)
    full_report.models[0].classes[0].figures = {"heatmap": tmp_path / "x.tiff"}
    with pytest.raises(InvalidParameterError, match="unsupported image type"):
        write_report(tmp_path / "x.html", full_report)
    full_report.models[0].classes[0].figures = {"heatmap": tmp_path / "missing.png"}
    with pytest.raises(InputDataError, match="missing.png does not exist"):
        write_report(tmp_path / "x.html", full_report)
    assert not (tmp_path / "x.html").exists()


def test_deterministic(full_report, tmp_path):
    a = write_report(tmp_path / "a.html", full_report).read_bytes()
    b = write_report(tmp_path / "b.html", full_report).read_bytes()
    assert a == b
    assert np.all([p.suffix != ".tmp" for p in tmp_path.iterdir()])


@pytest.mark.slow
def test_class_figures_end_to_end(tmp_path, rng, affine):
    import nibabel as nib

    from fmri_ica.reporting.report import class_figures

    class Atlas:
        name, kind = "tiny", "labels"
        img = nib.Nifti1Image(rng.choice(np.arange(4), size=(7, 8, 9)).astype(np.int16), affine)
        labels = pd.DataFrame(
            {"index": [1, 2, 3], "name": ["a", "b", "c"], "network": ["n1", "n1", "n2"]}
        )
        n_regions = 3

    result = class_figures(
        tmp_path,
        rng.random((12, 3)),
        Atlas(),
        t_r=1.0,
        model="LSTM",
        class_name="WM",
        surface=False,
    )
    assert set(result.figures) == {"glass_brains", "heatmap", "top_regions_plot", "animation"}
    assert all(p.exists() for p in result.figures.values()) and result.interactive.exists()
    assert result.top_regions["region"].tolist()[0] in ("a", "b", "c")
    report = Report(models=[ModelResult("LSTM", ["WM"], classes=[result])])
    assert "model-lstm-class-wm" in parse(write_report(tmp_path / "r.html", report).read_text()).ids


def test_class_figures_are_reused_until_their_inputs_change(tmp_path, rng, affine, monkeypatch):
    import nibabel as nib

    from fmri_ica.reporting import plotting
    from fmri_ica.reporting.report import class_figures

    class Atlas:
        name, kind = "tiny", "labels"
        img = nib.Nifti1Image(rng.choice(np.arange(4), size=(7, 8, 9)).astype(np.int16), affine)
        labels = pd.DataFrame({"index": [1, 2, 3], "name": ["a", "b", "c"], "network": ["n1", "n1", "n2"]})
        n_regions = 3

    values = rng.random((12, 3))
    options = dict(t_r=1.0, model="LSTM", class_name="WM", surface=False, animation=False,
                   interactive=False)
    first = class_figures(tmp_path, values, Atlas(), **options)
    assert set(first.figures) == {"glass_brains", "heatmap", "top_regions_plot"}
    stamps = {k: p.stat().st_mtime_ns for k, p in first.figures.items()}

    def fail(*args, **kwargs):
        raise AssertionError("a cached figure was drawn again")

    monkeypatch.setattr(plotting, "plot_glass_brains", fail)
    again = class_figures(tmp_path, values, Atlas(), **options)
    assert again.figures == first.figures
    assert {k: p.stat().st_mtime_ns for k, p in again.figures.items()} == stamps
    assert class_figures(tmp_path, values + 1, Atlas(), **options, draw=False) is None
    with pytest.raises(AssertionError, match="drawn again"):  # new values: drawn again
        class_figures(tmp_path, values + 1, Atlas(), **options)
    first.figures["heatmap"].unlink()  # a figure gone: drawn again
    assert class_figures(tmp_path, values, Atlas(), **options, draw=False) is None
