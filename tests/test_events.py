"""Events: FSL EV files, HCP EVs folders, BIDS events.tsv, and frame labels."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from _fixtures_layouts import make_bids_tree, make_hcp_tree, write_fsl_ev

from fmri_ica.data.events import (
    default_conditions,
    frame_conditions,
    frame_times,
    read_events,
    read_fsl_ev,
)
from fmri_ica.data.layouts import discover_runs
from fmri_ica.data.runs import Run
from fmri_ica.exceptions import InputDataError, InvalidParameterError


def _events(rows, conditions=None):
    frame = pd.DataFrame(rows, columns=["onset", "duration", "trial_type"])
    frame.attrs["conditions"] = conditions or sorted(frame["trial_type"].unique())
    return frame


# --------------------------------------------------------------------------- reading


def test_read_fsl_ev(tmp_path):
    path = write_fsl_ev(tmp_path / "lf.txt", [(71.35, 12.0, 1.0), (162.0, 12.0, 0.5)])
    ev = read_fsl_ev(path)
    assert list(ev.columns) == ["onset", "duration", "amplitude"]
    np.testing.assert_allclose(ev.to_numpy(), [[71.35, 12, 1], [162, 12, 0.5]])


def test_read_fsl_ev_empty_file_is_an_empty_frame(tmp_path):
    (tmp_path / "0bk_err.txt").write_text("")
    (tmp_path / "blank.txt").write_text("\n  \n")
    for name in ("0bk_err.txt", "blank.txt"):
        ev = read_fsl_ev(tmp_path / name)
        assert len(ev) == 0 and list(ev.columns) == ["onset", "duration", "amplitude"]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("1 2\n3 4\n", "has 2 columns"),
        ("1 2 x\n", "not numeric"),
        ("1 -2 1\n", "negative duration in row"),
    ],
)
def test_read_fsl_ev_rejects_malformed_files(tmp_path, text, pattern):
    path = tmp_path / "bad_ev.txt"
    path.write_text(text)
    with pytest.raises(InputDataError, match=pattern) as info:
        read_fsl_ev(path)
    assert str(path) in str(info.value)


def test_read_events_hcp_folder_skips_sync_and_keeps_empty_conditions(tmp_path):
    root = make_hcp_tree(tmp_path, dirs=("LR",))
    run = discover_runs(root)[0]
    events = read_events(run)
    assert list(events.columns) == ["onset", "duration", "trial_type", "amplitude"]
    assert events["trial_type"].tolist() == ["cue", "lf", "cue", "rh"]  # sorted by onset
    assert events["onset"].is_monotonic_increasing
    assert events.attrs["conditions"] == ["cue", "lf", "rh", "t"]  # t.txt is empty; no Sync
    assert events.attrs["source"]["lf"] == str(run.events / "lf.txt")


def test_read_events_bids_tsv(tmp_path):
    deriv, _ = make_bids_tree(tmp_path)
    run = discover_runs(deriv)[0]
    events = read_events(run)
    assert events[["onset", "duration", "trial_type"]].values.tolist() == [
        [2.0, 10.0, "left"],
        [20.0, 10.0, "right"],
    ]


def test_read_events_tsv_without_trial_type_uses_the_task(tmp_path):
    path = tmp_path / "ev.tsv"
    path.write_text("onset\tduration\tresponse_time\n4\t2\tn/a\n0\t2\t0.5\n")
    run = Run(subject="01", task="nback", run="", bold=tmp_path / "b.nii.gz", events=path)
    events = read_events(run)
    assert events["trial_type"].tolist() == ["nback", "nback"]
    assert events["onset"].tolist() == [0.0, 4.0]


def test_read_events_errors(tmp_path):
    bold = tmp_path / "b.nii.gz"
    with pytest.raises(InputDataError, match="sub-01_task-x has no events"):
        read_events(Run(subject="01", task="x", run="", bold=bold))
    path = tmp_path / "ev.tsv"
    path.write_text("start\tduration\n0\t1\n")
    with pytest.raises(InputDataError, match=r"ev\.tsv lacks column\(s\) \['onset'\]"):
        read_events(Run(subject="01", task="x", run="", bold=bold, events=path))
    path.write_text("onset\tduration\ttrial_type\n0\tn/a\tgo\n")
    with pytest.raises(InputDataError, match="not finite in row"):
        read_events(Run(subject="01", task="x", run="", bold=bold, events=path))


# --------------------------------------------------------------------------- frame labels


def test_frame_conditions_hand_computed():
    # TR 2 s, 6 frames. Middle-of-TR times: 1, 3, 5, 7, 9, 11 s.
    events = _events([(1.0, 4.0, "A"), (6.0, 2.0, "B")])
    labels, on = frame_conditions(events, 6, 2.0)
    assert labels.tolist() == ["A", "A", "fixation", "B", "fixation", "fixation"]
    assert on.tolist() == [True, True, False, True, False, False]
    # Start-of-TR times: 0, 2, 4, 6, 8, 10 s; A covers [1, 5), B [6, 8).
    labels, _ = frame_conditions(events, 6, 2.0, slice_time_ref=0.0, rest_label="")
    assert labels.tolist() == ["", "A", "A", "B", "", ""]
    # A 2 s HRF delay shifts A to [3, 7) and B to [8, 10) (middle-of-TR times).
    labels, _ = frame_conditions(events, 6, 2.0, hrf_delay=2.0)
    assert labels.tolist() == ["fixation", "A", "A", "fixation", "B", "fixation"]
    np.testing.assert_allclose(frame_times(3, 2.0), [1.0, 3.0, 5.0])


def test_frame_conditions_later_event_wins_and_ties_follow_conditions():
    # HCP MOTOR style: a cue still on when the movement block starts.
    events = _events([(0.0, 4.0, "cue"), (2.0, 6.0, "lf")])
    labels, _ = frame_conditions(events, 5, 2.0)  # times 1, 3, 5, 7, 9
    assert labels.tolist() == ["cue", "lf", "lf", "lf", "fixation"]
    tie = _events([(0.0, 4.0, "x"), (0.0, 4.0, "y")])
    assert frame_conditions(tie, 2, 2.0, conditions=["y", "x"])[0].tolist() == ["y", "y"]
    assert frame_conditions(tie, 2, 2.0, conditions=["x", "y"])[0].tolist() == ["x", "x"]


def test_frame_conditions_hcp_trial_evs_are_left_out_by_default_conditions():
    events = _events(
        [
            (0.0, 10.0, "0bk_body"),
            (1.0, 2.0, "0bk_cor"),
            (5.0, 2.0, "0bk_cor"),
            (10.0, 10.0, "2bk_tools"),
        ],
        conditions=["0bk_body", "0bk_cor", "0bk_err", "2bk_tools"],
    )
    run = Run(subject="1", task="WM", run="LR", bold=None, layout="hcp")
    conditions = default_conditions(run, events)
    assert conditions == ["0bk_body", "2bk_tools"]
    labels, _ = frame_conditions(events, 10, 2.0, conditions=conditions)
    assert labels.tolist() == ["0bk_body"] * 5 + ["2bk_tools"] * 5
    labels, _ = frame_conditions(events, 10, 2.0)  # all conditions: trials win inside the block
    assert labels[:4].tolist() == ["0bk_cor", "0bk_body", "0bk_cor", "0bk_body"]
    # An empty EV (0bk_err) may be requested; it labels nothing.
    labels, on = frame_conditions(events, 10, 2.0, conditions=["0bk_err"])
    assert not on.any() and set(labels) == {"fixation"}
    bids = Run(subject="1", task="WM", run="", bold=None, layout="bids")
    assert default_conditions(bids, events) == ["0bk_body", "0bk_cor", "0bk_err", "2bk_tools"]


def test_frame_conditions_unknown_condition_suggests():
    with pytest.raises(InvalidParameterError, match="'conditions'.*Did you mean 'story'"):
        frame_conditions(
            _events([(0.0, 4.0, "story"), (4.0, 4.0, "math")]), 4, 2.0, conditions=["stroy"]
        )


def test_frame_conditions_bad_arguments():
    events = _events([(0.0, 4.0, "a")])
    for kwargs in ({"n_frames": 0, "t_r": 2.0}, {"n_frames": 4, "t_r": 0.0}):
        with pytest.raises(InvalidParameterError):
            frame_conditions(events, **kwargs)
    with pytest.raises(InvalidParameterError, match="slice_time_ref"):
        frame_conditions(events, 4, 2.0, slice_time_ref=2.0)


def test_events_past_the_end_of_the_run(tmp_path):
    # Run of 10 frames x 2 s = 20 s.
    root = make_hcp_tree(
        tmp_path, dirs=("LR",), n_frames=10, t_r=2.0, evs={"a": [(2, 4, 1)], "late": [(25, 4, 1)]}
    )
    run = discover_runs(root)[0]
    events = read_events(run)
    with pytest.raises(
        InputDataError, match=r"start at or after the end of the run \(20 s.*late\.txt"
    ):
        frame_conditions(events, 10, run.t_r)
    with pytest.warns(UserWarning, match="Dropped"):
        labels, on = frame_conditions(events, 10, run.t_r, strict=False)
    assert labels.tolist() == ["fixation", "a", "a", "fixation"] + ["fixation"] * 6
    # Only the non-late condition: no error.
    assert frame_conditions(events, 10, run.t_r, conditions=["a"])[1].sum() == 2
    overhang = _events([(16.0, 8.0, "b")])
    with pytest.warns(UserWarning, match="run past the end"):
        labels, _ = frame_conditions(overhang, 10, 2.0)
    assert labels.tolist() == ["fixation"] * 8 + ["b", "b"]


def _reference_labels(events, n_frames, t_r, hrf_delay, ref, conditions):
    """Frame-by-frame loop: the covering event with the latest onset, ties by rank."""
    rank = {c: i for i, c in enumerate(conditions)}
    out = []
    for k in range(n_frames):
        t = (k + ref) * t_r
        best = None
        for onset, duration, kind in events[["onset", "duration", "trial_type"]].itertuples(
            index=False
        ):
            if kind in rank and onset + hrf_delay <= t < onset + hrf_delay + duration:
                key = (onset, -rank[kind])
                if best is None or key > best[0]:
                    best = (key, kind)
        out.append("fixation" if best is None else best[1])
    return out


def test_frame_conditions_equals_frame_by_frame_reference(rng):
    for _ in range(20):
        n, t_r = int(rng.integers(5, 60)), float(rng.uniform(0.5, 3.0))
        run_end = n * t_r
        k = int(rng.integers(1, 12))
        events = _events(
            list(
                zip(
                    np.round(rng.uniform(-2, run_end - 0.1, k), 1),
                    np.round(rng.uniform(0, 15, k), 1),
                    rng.choice(["a", "b", "c"], k),
                    strict=True,
                )
            ),
            conditions=["a", "b", "c"],
        )
        conditions = list(rng.permutation(["a", "b", "c"])[: int(rng.integers(1, 4))])
        delay, ref = float(rng.uniform(0, 6)), float(rng.choice([0.0, 0.5]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # overhanging events: tested elsewhere
            labels, on = frame_conditions(
                events, n, t_r, hrf_delay=delay, slice_time_ref=ref, conditions=conditions
            )
        expected = _reference_labels(events, n, t_r, delay, ref, conditions)
        assert labels.tolist() == expected
        assert on.tolist() == [e != "fixation" for e in expected]
