"""Back-projection of region values to NIfTI: equal to nilearn, bounded, reproducible."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fmri_ica.exceptions import InputDataError, InvalidParameterError
from fmri_ica.saliency.projection import (
    regions_to_img,
    save_saliency_maps,
    time_average_img,
    time_bin_edges,
    time_binned_imgs,
    top_regions,
    write_regions_img,
)

SHAPE = (7, 8, 9)


@pytest.fixture
def labels_atlas(rng, affine, make_atlas):
    """Builder of random label atlases: ``labels_atlas(label_values, table_values)``."""

    def build(label_values=(1, 2, 3, 4, 5), table_values=None):
        """Random label image using ``label_values``; table rows follow ``table_values``."""
        data = rng.choice([0, *label_values], size=SHAPE).astype(np.int16)
        table_values = list(label_values if table_values is None else table_values)
        table = pd.DataFrame(
            {"index": table_values, "name": [f"r{v}" for v in table_values], "network": "n"}
        )
        return make_atlas(nib.Nifti1Image(data, affine), table)

    return build


@pytest.fixture
def maps_atlas(rng, affine, make_atlas):
    """Builder of random sparse maps atlases: ``maps_atlas(n_maps=4)``."""

    def build(n_maps=4):
        data = rng.random((*SHAPE, n_maps)).astype(np.float32)
        data[data < 0.4] = 0  # sparse maps, some voxels in no map at all
        table = pd.DataFrame({"index": np.arange(1, n_maps + 1), "name": list("abcd")[:n_maps]})
        return make_atlas(nib.Nifti1Image(data, affine), table, name="maps", kind="maps")

    return build


def nilearn_inverse(atlas, values):
    from nilearn.maskers import NiftiLabelsMasker, NiftiMapsMasker

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if atlas.kind == "labels":
            masker = NiftiLabelsMasker(atlas.img, standardize=None).fit()
        else:
            masker = NiftiMapsMasker(atlas.img, standardize=None).fit()
        return masker.inverse_transform(values)


@pytest.mark.parametrize("ndim", [1, 2])
def test_labels_equal_nilearn(rng, affine, ndim, labels_atlas):
    atlas = labels_atlas()
    values = rng.standard_normal((13, 5) if ndim == 2 else (5,)).astype(np.float32)
    img = regions_to_img(values, atlas, t_r=0.72, stride=2)
    ref = nilearn_inverse(atlas, values)
    assert img.shape == ref.shape == (SHAPE if ndim == 1 else (*SHAPE, 13))
    assert img.get_data_dtype() == np.float32
    assert_allclose(img.get_fdata(), ref.get_fdata(), rtol=1e-6, atol=0)
    assert_allclose(img.affine, affine)
    if ndim == 2:
        assert img.header.get_zooms() == pytest.approx((3.0, 3.0, 3.0, 1.44))
        assert img.header.get_xyzt_units() == ("mm", "sec")


def test_noncontiguous_labels_follow_the_table(rng, labels_atlas):
    # Image labels 2, 5, 9, 11; the table lists them in another order.
    atlas = labels_atlas((2, 5, 9, 11), table_values=(9, 2, 11, 5))
    values = rng.standard_normal((6, 4))
    img = regions_to_img(values, atlas)
    # nilearn orders columns by sorted label value.
    ref = nilearn_inverse(atlas, values[:, np.argsort([9, 2, 11, 5])])
    assert_allclose(img.get_fdata(), ref.get_fdata(), rtol=1e-6)
    label_data = np.asarray(atlas.img.dataobj)
    assert_allclose(
        img.get_fdata()[label_data == 9],
        np.tile(values[:, 0], (np.sum(label_data == 9), 1)),
        rtol=1e-6,
    )


def test_regions_absent_from_image_are_ignored(rng, labels_atlas):
    # The table has 6 regions; label 4 and 6 have no voxel (e.g. lost by resampling).
    atlas = labels_atlas((1, 2, 3, 5), table_values=(1, 2, 3, 4, 5, 6))
    values = rng.standard_normal((5, 6)).astype(np.float32)
    img = regions_to_img(values, atlas)
    ref = nilearn_inverse(atlas, values[:, [0, 1, 2, 4]])
    assert_allclose(img.get_fdata(), ref.get_fdata(), rtol=1e-6)


def test_maps_equal_nilearn(rng, maps_atlas):
    atlas = maps_atlas()
    values = rng.standard_normal((11, 4))
    img = regions_to_img(values, atlas, t_r=2.0, chunk_size=4)
    ref = nilearn_inverse(atlas, values)
    assert img.shape == (*SHAPE, 11)
    assert_allclose(img.get_fdata(), ref.get_fdata(), rtol=1e-6)
    img3 = regions_to_img(values[3], atlas)
    assert_allclose(img3.get_fdata(), nilearn_inverse(atlas, values[3]).get_fdata(), rtol=1e-6)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_streaming_writer_equals_in_memory(rng, affine, tmp_path, suffix, labels_atlas):
    atlas = labels_atlas()
    values = rng.standard_normal((23, 5)).astype(np.float32)
    path = write_regions_img(tmp_path / f"x{suffix}", values, atlas, t_r=0.72, chunk_size=5)
    loaded = nib.load(path)
    expected = regions_to_img(values, atlas, t_r=0.72)
    assert loaded.shape == expected.shape
    assert_array_equal(loaded.get_fdata(), expected.get_fdata())
    assert_allclose(loaded.affine, affine)
    assert loaded.header.get_zooms() == pytest.approx((3, 3, 3, 0.72))
    assert loaded.header.get_xyzt_units() == ("mm", "sec")
    assert [p.name for p in tmp_path.iterdir()] == [f"x{suffix}"]  # no temporary left


def test_time_average_and_bins(rng, maps_atlas):
    atlas = maps_atlas(n_maps=3)
    values = rng.random((10, 3))
    mean = time_average_img(values, atlas)
    assert mean.shape == SHAPE
    assert_allclose(mean.get_fdata(), regions_to_img(values.mean(0), atlas).get_fdata(), rtol=1e-6)

    assert_array_equal(time_bin_edges(10, 3), [0, 3, 7, 10])
    binned = time_binned_imgs(values, atlas, 3)
    assert binned.shape == (*SHAPE, 3)
    assert_allclose(
        binned.get_fdata()[..., 1],
        regions_to_img(values[3:7].mean(0), atlas).get_fdata(),
        rtol=1e-6,
    )
    as_list = time_binned_imgs(values, atlas, [0, 2, 10], as_list=True)
    assert len(as_list) == 2 and as_list[1].shape == SHAPE
    assert_allclose(
        as_list[1].get_fdata(), regions_to_img(values[2:].mean(0), atlas).get_fdata(), rtol=1e-6
    )


def test_bad_inputs_name_the_problem(labels_atlas, make_atlas):
    atlas = labels_atlas()
    with pytest.raises(InvalidParameterError, match="5 regions"):
        regions_to_img(np.zeros((3, 4)), atlas)
    with pytest.raises(InvalidParameterError, match="t_r"):
        regions_to_img(np.zeros((3, 5)), atlas, t_r=-1)
    with pytest.raises(InvalidParameterError, match="n_bins"):
        time_bin_edges(3, 5)
    with pytest.raises(InvalidParameterError, match="atlas.kind"):
        regions_to_img(np.zeros(5), make_atlas(atlas.img, atlas.labels, name="x", kind="label"))
    unlisted = labels_atlas((1, 2, 3), table_values=(1, 2))
    with pytest.raises(InputDataError, match=r"\[3\].*labels table"):
        regions_to_img(np.zeros(2), unlisted)


def test_save_saliency_maps_names_sidecars_and_skips(rng, tmp_path, labels_atlas):
    atlas = labels_atlas()
    maps = {"0bk_body": rng.random((12, 5)), "2bk_body": rng.random((12, 5))}
    kw = dict(
        t_r=0.72,
        stride=2,
        model="ica-lstm",
        method="saliency",
        frames=[0, 24],
        space="MNI152NLin6Asym",
        prefix="group",
        n_bins=3,
        extra={"seed": 1},
    )
    paths = save_saliency_maps(tmp_path, maps, atlas, **kw)
    assert len(paths) == 6 and all(p.exists() for p in paths)
    stem = "group_space-MNI152NLin6Asym_atlas-tiny_model-icalstm_method-saliency_class-0bkbody"
    names = {p.name for p in paths}
    assert f"{stem}_stat-saliency_bold.nii.gz" in names
    assert f"{stem}_stat-saliencymean_statmap.nii.gz" in names
    assert f"{stem}_timebins-3_stat-saliency_statmap.nii.gz" in names

    four_d = nib.load(tmp_path / f"{stem}_stat-saliency_bold.nii.gz")
    assert four_d.shape == (*SHAPE, 12)
    assert four_d.header.get_zooms()[3] == pytest.approx(1.44)
    assert_allclose(
        four_d.get_fdata(), regions_to_img(maps["0bk_body"], atlas).get_fdata(), rtol=1e-6
    )
    sidecar = json.loads((tmp_path / f"{stem}_timebins-3_stat-saliency_statmap.json").read_text())
    params = sidecar["Parameters"]
    assert params["Class"] == "0bk_body" and params["Model"] == "ica-lstm"
    assert params["RepetitionTime"] == 0.72 and params["Stride"] == 2 and params["seed"] == 1
    assert params["BinEdgesSeconds"] == pytest.approx([0, 5.76, 11.52, 17.28])
    assert "fmri_ica" in sidecar["PackageVersions"]

    # Re-run: nothing rewritten. Changed values: that class is rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    assert save_saliency_maps(tmp_path, maps, atlas, **kw) == paths
    assert all(p.stat().st_mtime_ns == mtimes[p] for p in paths)
    maps["2bk_body"] = maps["2bk_body"] * 2
    save_saliency_maps(tmp_path, maps, atlas, **kw)
    changed = {p for p in paths if p.stat().st_mtime_ns != mtimes[p]}
    assert changed == {p for p in paths if "class-2bkbody" in p.name}
    assert len(list(tmp_path.iterdir())) == 12  # 6 images + 6 sidecars, no temporaries


def test_save_saliency_maps_rejects_colliding_class_names(tmp_path, labels_atlas):
    atlas = labels_atlas()
    maps = {"a-b": np.zeros((4, 5)), "ab": np.zeros((4, 5))}
    with pytest.raises(InvalidParameterError, match="collide"):
        save_saliency_maps(
            tmp_path, maps, atlas, t_r=1.0, model="m", method="s", frames=None, space="MNI"
        )


def test_top_regions_table(labels_atlas):
    atlas = labels_atlas()
    atlas.labels["x"] = [1.0, 2, 3, 4, 5]
    values = np.array([[0.1, 0.5, 0.2, 0.9, 0.3], [0.1, 0.5, 0.4, 0.9, 0.3]])
    table = top_regions(values, atlas, k=3)
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["region"].tolist() == ["r4", "r2", "r3"]
    assert table["x"].tolist() == [4.0, 2.0, 3.0]
    assert np.isnan(table["y"]).all()  # absent from the table
    assert table["saliency"].tolist() == pytest.approx([0.9, 0.5, 0.3])
    assert table["share"].tolist() == pytest.approx(np.array([0.9, 0.5, 0.3]) / 2.1)


def test_equal_to_the_atlas_own_masker(rng, affine):
    """With fmri_ica's Atlas (labels with gaps, as after dropping regions), equal to its masker."""
    from fmri_ica.data.atlases import Atlas

    data = rng.choice([0, 2, 5, 9, 12], size=SHAPE).astype(np.int32)
    table = pd.DataFrame({"index": [2, 5, 9, 12], "name": ["a", "b", "c", "d"], "network": "n"})
    atlas = Atlas("gaps", "labels", nib.Nifti1Image(data, affine), table)
    values = rng.standard_normal((7, 4)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = atlas.masker().fit().inverse_transform(values)
    assert_allclose(regions_to_img(values, atlas).get_fdata(), ref.get_fdata(), rtol=1e-6)


def _params(directory, name):
    return json.loads((directory / name).read_text())["Parameters"]


def test_classes_keep_their_own_length_frames_and_bin_spacing(rng, tmp_path, labels_atlas):
    atlas = labels_atlas()
    maps = {"long": rng.random((12, 5)), "short": rng.random((7, 5))}
    kw = dict(t_r=0.72, model="m", method="s", space="MNI", n_bins=3)
    save_saliency_maps(tmp_path, maps, atlas, frames={"long": [0, 12], "short": [0, 7]}, **kw)
    stem = "space-MNI_atlas-tiny_model-m_method-s_class-"
    assert nib.load(tmp_path / f"{stem}short_stat-saliency_bold.nii.gz").shape == (*SHAPE, 7)
    assert _params(tmp_path, f"{stem}short_stat-saliency_bold.json")["Frames"] == [0, 7]
    assert _params(tmp_path, f"{stem}long_stat-saliencymean_statmap.json")["Frames"] == [0, 12]
    # Equal bins of 4 steps: centres 4 x 0.72 s apart. Unequal bins [0, 2, 5, 7]: centres at
    # steps 0.5, 3, 5.5, so a mean spacing of 2.5 steps.
    for name, spacing, bins in (("long", 2.88, [[0, 4], [4, 8], [8, 12]]),
                                ("short", 1.8, [[0, 2], [2, 5], [5, 7]])):
        binned = nib.load(tmp_path / f"{stem}{name}_timebins-3_stat-saliency_statmap.nii.gz")
        params = _params(tmp_path, f"{stem}{name}_timebins-3_stat-saliency_statmap.json")
        assert binned.header.get_zooms()[3] == pytest.approx(spacing)
        assert params["BinSpacingSeconds"] == pytest.approx(spacing)
        assert params["BinFrames"] == bins
    # A list of pairs in the order of the maps is per class too; one pair for both is wrong.
    save_saliency_maps(tmp_path, maps, atlas, frames=[[0, 12], [0, 7]], **kw)
    with pytest.raises(InvalidParameterError, match="'short'.*7 time steps"):
        save_saliency_maps(tmp_path, maps, atlas, frames=[0, 12], **kw)


def test_uncovered_steps_are_nan_and_left_out_of_means(rng, tmp_path, labels_atlas):
    atlas = labels_atlas()
    values = rng.random((10, 5))
    values[:3] = np.nan  # run frames 10, 12, 14 covered by no window
    maps = {"a": values, "empty": np.full((4, 5), np.nan)}
    frames = {"a": [10, 29], "empty": [0, 7]}
    paths = save_saliency_maps(tmp_path, maps, atlas, t_r=0.5, stride=2, model="m", method="s",
                               frames=frames, space="MNI", n_bins=2)
    assert len(paths) == 3 and not any("empty" in p.name for p in paths)  # nothing to show
    stem = "space-MNI_atlas-tiny_model-m_method-s_class-a"
    mean = nib.load(tmp_path / f"{stem}_stat-saliencymean_statmap.nii.gz")
    assert_allclose(mean.get_fdata(), regions_to_img(values[3:].mean(0), atlas).get_fdata(), rtol=1e-6)
    binned = nib.load(tmp_path / f"{stem}_timebins-2_stat-saliency_statmap.nii.gz").get_fdata()
    assert_allclose(binned[..., 0], regions_to_img(values[3:5].mean(0), atlas).get_fdata(), rtol=1e-6)
    four_d = nib.load(tmp_path / f"{stem}_stat-saliency_bold.nii.gz").get_fdata()
    inside = np.asarray(atlas.img.dataobj) > 0
    assert np.isnan(four_d[inside][:, :3]).all() and np.isfinite(four_d[inside][:, 3:]).all()
    params = _params(tmp_path, f"{stem}_timebins-2_stat-saliency_statmap.json")
    assert params["UncoveredFrames"] == [[10, 15]]
    assert params["BinFrames"] == [[10, 19], [20, 29]] and params["BinStepsWithData"] == [2, 5]
    assert params["BinEdgesSeconds"] == pytest.approx([5.0, 10.0, 15.0])  # run time
    assert "NaN" in params["MissingValues"]


def test_sidecars_have_one_atlas_key(rng, tmp_path, labels_atlas):
    atlas = labels_atlas()
    kw = dict(t_r=1.0, model="m", method="s", frames=[0, 4], space="MNI")
    paths = save_saliency_maps(tmp_path, {"a": rng.random((4, 5))}, atlas,
                               extra={"atlas": "tiny", "samples": "group"}, **kw)
    for path in paths:
        params = _params(tmp_path, path.name.replace(".nii.gz", ".json"))
        assert [k for k in params if k.lower() == "atlas"] == ["Atlas"]
        assert params["Atlas"] == "tiny" and params["samples"] == "group"
    with pytest.raises(InvalidParameterError, match="contradicts.*'Atlas'"):
        save_saliency_maps(tmp_path, {"a": rng.random((4, 5))}, atlas, extra={"atlas": "x"}, **kw)
