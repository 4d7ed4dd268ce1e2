"""Atlases: built-in spheres and grey-matter parcels, user atlases, resampling, cache."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from fmri_ica.data import atlases
from fmri_ica.data.atlases import Atlas, list_atlases, load_atlas
from fmri_ica.exceptions import AtlasUnavailableError, InputDataError, InvalidParameterError


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One atlas cache for the session (both atlas test modules): built atlases are reused."""
    path = tmp_path_factory.getbasetemp() / "atlas_cache"
    path.mkdir(exist_ok=True)
    return path


def mni_grid(voxel: float) -> nib.Nifti1Image:
    """An empty image on an MNI grid of the given voxel size (covers the brain)."""
    shape = tuple(int(np.ceil(s / voxel)) + 1 for s in (180.0, 216.0, 180.0))
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [-90.0, -126.0, -72.0]
    return nib.Nifti1Image(np.zeros(shape, np.float32), affine)


def region_voxels_mm(atlas: Atlas, index: int) -> np.ndarray:
    ijk = np.argwhere(np.asarray(atlas.img.dataobj) == index)
    return nib.affines.apply_affine(atlas.img.affine, ijk)


# --------------------------------------------------------------------------- catalogue


def test_manifest_file_matches_the_catalogue_in_code():
    path = Path(atlases.__file__).resolve().parents[2] / "atlases" / "manifest.json"
    assert json.loads(path.read_text())["atlases"] == atlases._MANIFEST


def test_list_atlases_names_offline_ones():
    table = list_atlases()
    offline = set(table.loc[table["offline"], "name"])
    assert offline == {"seitzman300", "power264", "dosenbach160", "gm_kmeans"}
    assert {"schaefer2018", "harvard_oxford", "difumo"} <= set(table["name"])
    assert table["citation"].str.len().min() > 20 and table["licence"].str.len().min() > 2


def test_unknown_atlas_and_option_name_the_choices(cache):
    with pytest.raises(InvalidParameterError, match="Did you mean 'seitzman300'"):
        load_atlas("seitzman", cache_dir=cache)
    with pytest.raises(InvalidParameterError, match="n_regions"):
        load_atlas("gm_kmeans", n_parcels=10, cache_dir=cache)
    with pytest.raises(InvalidParameterError, match="yeo_networks.*18.*Allowed: 7, 17"):
        load_atlas("schaefer2018", yeo_networks=18, cache_dir=cache)


def test_schaefer_without_network_says_how_to_predownload(cache, tmp_path):
    with pytest.raises(AtlasUnavailableError) as info:
        load_atlas("schaefer2018", n_rois=200, data_dir=tmp_path, cache_dir=cache)
    message = str(info.value)
    for part in ("'schaefer2018'", "download", "NILEARN_DATA", "data_dir", "seitzman300", "200"):
        assert part in message


# --------------------------------------------------------------------------- spheres


@pytest.mark.parametrize("name,n", [("seitzman300", 300), ("power264", 264), ("dosenbach160", 160)])
def test_spheres_keep_every_region_on_a_coarse_grid(name, n, cache):
    target = mni_grid(6.0)
    atlas = load_atlas(name, target_img=target, cache_dir=cache)
    assert atlas.n_regions == n and atlas.dropped == []
    assert atlas.img.shape == target.shape and np.allclose(atlas.img.affine, target.affine)
    data = np.asarray(atlas.img.dataobj)
    assert sorted(np.unique(data[data > 0])) == sorted(atlas.labels["index"])
    assert atlas.labels["name"].is_unique
    # Each voxel lies within the sphere radius (plus half a voxel diagonal when rescued).
    reach = 5.0 + np.sqrt(3) * 6.0 / 2
    for _, row in atlas.labels.iterrows():
        dist = np.linalg.norm(
            region_voxels_mm(atlas, row["index"]) - row[["x", "y", "z"]].to_numpy(float), axis=1
        )
        assert dist.max() <= reach + 1e-6


def test_seitzman_labels_networks_and_radii(cache):
    atlas = load_atlas("seitzman300", target_img=mni_grid(4.0), cache_dir=cache)
    assert list(atlas.labels.columns) == ["index", "name", "network", "region", "x", "y", "z"]
    assert atlas.labels["network"].nunique() == 14 and atlas.labels["region"].nunique() == 8
    assert atlas.labels["index"].tolist() == list(range(1, 301))
    assert atlas.labels["name"].iloc[0].endswith("_001")


def test_default_grid_is_nilearns_2mm_template_and_spheres_are_in_the_brain(cache):
    from nilearn.datasets import load_mni152_brain_mask

    atlas = load_atlas("dosenbach160", cache_dir=cache)
    assert atlas.img.shape == (99, 117, 95) and atlas.n_regions == 160
    brain = np.asarray(load_mni152_brain_mask(resolution=2).dataobj) > 0
    data = np.asarray(atlas.img.dataobj)
    assert not (data[~brain] > 0).any()
    sizes = np.bincount(data.ravel())[1:]
    assert sizes.max() <= 81  # a 5 mm sphere holds at most 81 voxels of 2 mm


def test_overlapping_spheres_give_voxels_to_the_nearest_centre():
    shape, affine = (9, 7, 8), np.diag([2.0, 2.0, 2.0, 1.0])
    coords = np.array([[6.0, 6.0, 6.0], [9.0, 6.5, 7.0], [12.0, 3.0, 5.0]])
    radii = np.array([4.0, 5.0, 3.0])
    data = atlases._draw_spheres(coords, radii, shape, affine, np.ones(shape, bool))
    # Slow, obvious reference: every voxel, every centre.
    xyz = nib.affines.apply_affine(affine, np.indices(shape).reshape(3, -1).T)
    dist = np.linalg.norm(xyz[:, None, :] - coords[None], axis=2)
    dist[dist > radii + 1e-6] = np.inf
    expected = np.where(np.isfinite(dist.min(1)), dist.argmin(1) + 1, 0).reshape(shape)
    np.testing.assert_array_equal(data, expected)
    assert (data == 2).sum() > 0 and (data == 1).sum() > 0


def test_a_sphere_smaller_than_a_voxel_keeps_its_nearest_voxel():
    shape, affine = (5, 6, 7), np.diag([8.0, 8.0, 8.0, 1.0])
    coords = np.array([[12.0, 12.0, 12.0], [20.0, 4.0, 4.0], [500.0, 0.0, 0.0]])
    data = atlases._draw_spheres(coords, np.full(3, 2.0), shape, affine, np.ones(shape, bool))
    assert (data == 1).sum() == 1 and data[1, 1, 1] == 1 or data[2, 2, 2] == 1
    assert (data == 2).sum() == 1
    assert (data == 3).sum() == 0  # far outside the grid: nothing within reach


# --------------------------------------------------------------------------- gm parcels


def test_gm_kmeans_covers_the_grey_matter_split_by_hemisphere(cache):
    from nilearn.datasets import load_mni152_gm_mask

    atlas = load_atlas("gm_kmeans", n_regions=20, cache_dir=cache)
    gm = np.asarray(load_mni152_gm_mask(resolution=2).dataobj) > 0
    data = np.asarray(atlas.img.dataobj)
    assert atlas.n_regions == 20 and ((data > 0) == gm).all()
    x = nib.affines.apply_affine(atlas.img.affine, np.argwhere(data > 0))[:, 0]
    left = data[data > 0] <= 10
    assert (x[left] < 0).all() and (x[~left] >= 0).all()
    assert atlas.labels["name"].tolist()[:2] == ["L_parcel_001", "L_parcel_002"]
    assert atlas.labels["name"].iloc[10] == "R_parcel_001"
    assert set(atlas.labels["network"]) <= set(
        load_atlas("seitzman300", target_img=mni_grid(6.0), cache_dir=cache).labels["network"]
    )


def test_gm_kmeans_is_deterministic(tmp_path, cache):
    first = load_atlas("gm_kmeans", n_regions=20, cache_dir=cache)
    second = load_atlas("gm_kmeans", n_regions=20, cache_dir=tmp_path)  # built afresh
    np.testing.assert_array_equal(np.asarray(first.img.dataobj), np.asarray(second.img.dataobj))
    pd.testing.assert_frame_equal(first.labels, second.labels)


def test_gm_kmeans_resampled_to_data_grid(cache):
    atlas = load_atlas("gm_kmeans", n_regions=20, target_img=mni_grid(8.0), cache_dir=cache)
    assert atlas.img.shape == mni_grid(8.0).shape and atlas.n_regions == 20


# --------------------------------------------------------------------------- cache


def test_second_call_reads_the_cache_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    target = mni_grid(8.0)
    first = load_atlas("power264", target_img=target, cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 3 and any(f.endswith(".json") for f in files)

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    with monkeypatch.context() as patch:
        patch.setattr(atlases, "_build", fail)
        again = load_atlas("power264", target_img=target, cache_dir=tmp_path)
    assert again.checksum == first.checksum
    pd.testing.assert_frame_equal(again.labels, first.labels)

    nii = next(tmp_path.glob("*.nii.gz"))
    nii.write_bytes(b"garbage")
    rebuilt = load_atlas("power264", target_img=target, cache_dir=tmp_path)
    assert rebuilt.checksum == first.checksum
    assert nib.load(nii).shape == target.shape  # the cache file was rewritten


def test_cache_key_depends_on_the_grid_and_options(tmp_path):
    load_atlas("power264", target_img=mni_grid(8.0), cache_dir=tmp_path)
    load_atlas("power264", target_img=mni_grid(6.0), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FMRI_ICA_CACHE", str(tmp_path))
    assert atlases.default_cache_dir() == tmp_path / "atlases"


# --------------------------------------------------------------------------- user atlases


def labels_img(affine, shape=(7, 8, 9)):
    data = np.zeros(shape, np.int16)
    data[:3, :4] = 3
    data[3:, :4] = 7
    data[:, 4:, :5] = 9
    return nib.Nifti1Image(data, affine)


def test_user_labels_with_names_tsv(tmp_path, affine):
    path = tmp_path / "my_atlas.nii.gz"
    nib.save(labels_img(affine), path)
    pd.DataFrame(
        {
            "index": [3, 7, 9, 11],
            "name": ["a", "b", "c", "unused"],
            "network": ["n1", "n1", "n2", "n3"],
        }
    ).to_csv(tmp_path / "my_atlas.tsv", sep="\t", index=False)
    atlas = load_atlas(path)
    assert atlas.kind == "labels" and atlas.name == "my_atlas"
    assert atlas.labels["index"].tolist() == [3, 7, 9]
    assert atlas.labels["name"].tolist() == ["a", "b", "c"]
    assert atlas.labels["network"].tolist() == ["n1", "n1", "n2"]
    # The centre of label 3 (voxels i<3, j<4, all k) in mm.
    centre = nib.affines.apply_affine(affine, [1.0, 1.5, 4.0])
    np.testing.assert_allclose(atlas.labels.loc[0, ["x", "y", "z"]].to_numpy(float), centre)
    masker = atlas.masker()
    assert type(masker).__name__ == "NiftiLabelsMasker"


def test_user_labels_without_names_and_bad_names_file(tmp_path, affine):
    path = tmp_path / "plain.nii.gz"
    nib.save(labels_img(affine), path)
    assert load_atlas(path).labels["name"].tolist() == ["region_003", "region_007", "region_009"]
    bad = tmp_path / "names.tsv"
    pd.DataFrame({"index": [3], "name": ["a"]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(InputDataError, match=r"names.tsv has no row for label value\(s\) \[7, 9\]"):
        load_atlas(path, names=bad)


def test_user_maps_atlas(tmp_path, affine, rng):
    maps = np.abs(rng.standard_normal((7, 8, 9, 4))).astype(np.float32)
    path = tmp_path / "maps.nii.gz"
    nib.save(nib.Nifti1Image(maps, affine), path)
    pd.DataFrame({"index": [1, 2, 3, 4], "name": list("wxyz")}).to_csv(
        tmp_path / "maps.tsv", sep="\t", index=False
    )
    atlas = load_atlas(path)
    assert atlas.kind == "maps" and atlas.n_regions == 4 and atlas.region_names == list("wxyz")
    assert type(atlas.masker()).__name__ == "NiftiMapsMasker"


def test_unreadable_or_unusable_atlas_files(tmp_path, affine):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti")
    with pytest.raises(InputDataError, match="Cannot read atlas file .*broken.nii.gz"):
        load_atlas(broken)
    floaty = tmp_path / "float.nii.gz"
    nib.save(nib.Nifti1Image(np.full((7, 8, 9), 0.5, np.float32), affine), floaty)
    with pytest.raises(InputDataError, match="not integer-valued"):
        load_atlas(floaty)


# --------------------------------------------------------------------------- resampling


def test_flipped_atlas_resamples_to_the_same_labels(tmp_path, affine):
    atlas_img = labels_img(affine)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = atlas_img.shape[0] - 1  # voxel i -> (n-1) - i: same world positions
    flipped = nib.Nifti1Image(np.asarray(atlas_img.dataobj)[::-1].copy(), affine @ flip)
    nib.save(atlas_img, tmp_path / "a.nii.gz")
    nib.save(flipped, tmp_path / "b.nii.gz")
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), affine)
    a = load_atlas(tmp_path / "a.nii.gz", target_img=target)
    b = load_atlas(tmp_path / "b.nii.gz", target_img=target)
    np.testing.assert_array_equal(np.asarray(a.img.dataobj), np.asarray(b.img.dataobj))
    np.testing.assert_allclose(a.labels[["x", "y", "z"]], b.labels[["x", "y", "z"]])


def test_atlas_outside_the_field_of_view_is_an_error(tmp_path, affine):
    far = affine.copy()
    far[:3, 3] += 500.0
    nib.save(labels_img(far), tmp_path / "far.nii.gz")
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), affine)
    with pytest.raises(InputDataError, match="do not overlap.*Different spaces"):
        load_atlas(tmp_path / "far.nii.gz", target_img=target)


def test_regions_lost_in_resampling_are_dropped_and_reported(tmp_path, affine):
    nib.save(labels_img(affine), tmp_path / "a.nii.gz")
    target = nib.Nifti1Image(np.zeros((3, 8, 9), np.float32), affine)  # only i < 3
    with pytest.warns(UserWarning, match="1 of 3 regions .* dropped: region_007"):
        atlas = load_atlas(tmp_path / "a.nii.gz", target_img=target)
    assert atlas.labels["index"].tolist() == [3, 9]
    assert [d["index"] for d in atlas.dropped] == [7]
    assert sorted(np.unique(np.asarray(atlas.img.dataobj))) == [0, 3, 9]


def test_mask_clears_voxels_and_on_grid_atlas_is_returned_as_is(tmp_path, affine):
    nib.save(labels_img(affine), tmp_path / "a.nii.gz")
    atlas = load_atlas(tmp_path / "a.nii.gz")
    target = nib.Nifti1Image(np.zeros((7, 8, 9, 3), np.float32), affine)
    assert atlas.resample_to(target) is atlas
    mask = np.ones((7, 8, 9), np.uint8)
    mask[:, :, :2] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masked = atlas.resample_to(target, nib.Nifti1Image(mask, affine))
    assert (np.asarray(masked.img.dataobj)[:, :, :2] == 0).all() and masked.n_regions == 3


def test_spheres_on_a_flipped_hcp_grid_sit_where_they_do_on_nilearns_grid(cache):
    hcp_affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    hcp_affine[:3, 3] = [90.0, -126.0, -72.0]  # HCP's MNI152NLin6Asym 2 mm grid
    hcp = load_atlas(
        "seitzman300",
        target_img=nib.Nifti1Image(np.zeros((91, 109, 91), np.float32), hcp_affine),
        cache_dir=cache,
    )
    mni = load_atlas("seitzman300", cache_dir=cache)
    assert hcp.n_regions == mni.n_regions == 300
    for index in (1, 150, 300):
        a = region_voxels_mm(hcp, index).mean(0)
        b = region_voxels_mm(mni, index).mean(0)
        assert np.linalg.norm(a - b) < 2.5  # same place in mm, whatever the voxel order


def test_downloaded_atlas_is_converted(monkeypatch, tmp_path, affine, cache):
    """The conversion of a nilearn atlas bunch (cannot download here: a stand-in)."""
    from nilearn import datasets
    from sklearn.utils import Bunch

    lut = pd.DataFrame({"index": [0, 3, 7, 9], "name": ["Background", "A", "B", "C"]})
    calls = []

    def fake_fetch(**kwargs):
        calls.append(kwargs)
        return Bunch(maps=labels_img(affine), lut=lut, template="MNI152NLin6Asym")

    monkeypatch.setattr(datasets, "fetch_atlas_schaefer_2018", fake_fetch)
    atlas = load_atlas("schaefer2018", n_rois=100, cache_dir=tmp_path)
    assert calls[0]["n_rois"] == 100 and calls[0]["yeo_networks"] == 7
    assert atlas.kind == "labels" and atlas.region_names == ["A", "B", "C"]
    assert atlas.space == "MNI152NLin6Asym" and "MIT" in atlas.licence
    # A second call comes from the cache, not from the fetcher.
    load_atlas("schaefer2018", n_rois=100, cache_dir=tmp_path)
    assert len(calls) == 1


def test_user_atlas_refuses_unknown_options(tmp_path, affine):
    nib.save(labels_img(affine), tmp_path / "a.nii.gz")
    with pytest.raises(InvalidParameterError, match="n_regions"):
        load_atlas(tmp_path / "a.nii.gz", n_regions=3)


def test_labels_masker_carries_the_region_names(tmp_path, affine, rng):
    nib.save(labels_img(affine), tmp_path / "a.nii.gz")
    atlas = load_atlas(tmp_path / "a.nii.gz")
    img = nib.Nifti1Image(rng.standard_normal((7, 8, 9, 5)).astype(np.float32), affine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        masker = atlas.masker().fit()
        signals = masker.transform(img)
    assert signals.shape == (5, 3)
    assert list(masker.region_names_.values()) == atlas.region_names


def test_downloaded_maps_atlas_is_converted(monkeypatch, tmp_path, affine, rng):
    from nilearn import datasets
    from sklearn.utils import Bunch

    maps = nib.Nifti1Image(np.abs(rng.standard_normal((7, 8, 9, 3))).astype(np.float32), affine)
    table = pd.DataFrame(
        {
            "component": [1, 2, 3],
            "difumo_names": ["m1", "m2", "m3"],
            "yeo_networks7": ["a", "b", "c"],
        }
    )
    monkeypatch.setattr(datasets, "fetch_atlas_difumo", lambda **kw: Bunch(maps=maps, labels=table))
    atlas = load_atlas("difumo", dimension=128, cache_dir=tmp_path)
    assert atlas.kind == "maps" and atlas.region_names == ["m1", "m2", "m3"]
    assert atlas.labels["network"].tolist() == ["a", "b", "c"] and atlas.options["dimension"] == 128


@pytest.mark.slow  # the default 200-parcel build: ~10-20 s
def test_default_gm_kmeans_200(tmp_path):
    atlas = load_atlas("gm_kmeans", cache_dir=tmp_path)
    sizes = np.bincount(np.asarray(atlas.img.dataobj).ravel())[1:]
    assert atlas.n_regions == 200 and len(sizes) == 200
    assert sizes.min() > 300 and sizes.max() < 3 * sizes.min()  # compact, similar sizes
    assert atlas.labels["name"].iloc[100] == "R_parcel_001"
    assert atlas.labels["network"].nunique() > 5


def test_dropped_regions_are_reported_again_from_the_cache(tmp_path, affine):
    target = nib.Nifti1Image(np.zeros((7, 8, 9), np.float32), affine)  # a corner of the brain
    with pytest.warns(UserWarning, match="are dropped") as first:
        atlas = load_atlas("power264", target_img=target, cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="are dropped") as again:
        cached = load_atlas("power264", target_img=target, cache_dir=tmp_path)
    assert str(first[0].message) == str(again[0].message)
    assert cached.dropped == atlas.dropped and len(atlas.dropped) == 264 - atlas.n_regions > 0
