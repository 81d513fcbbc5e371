"""Scene folders in the layouts people have: INRIA, gsplat, COLMAP, nerfstudio, gsplat npz."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import data_path, random_scene
from PIL import Image

from omnivision.scenes.cameras import GL_TO_CV, orbit_cameras
from omnivision.scenes.errors import SceneError
from omnivision.scenes.io_cameras import read_inria_cameras, read_transforms, write_inria_cameras
from omnivision.scenes.io_ply import write_ply
from omnivision.scenes.load import load_scene
from omnivision.scenes.render import RenderConfig, render


def project(cameras, i, points):
    cam = cameras.world_to_camera[i, :3, :3] @ points.T + cameras.world_to_camera[i, :3, 3:]
    uv = cameras.K[i] @ cam
    return (uv[:2] / uv[2]).T


@pytest.fixture(scope="module")
def colmap_model(tmp_path_factory):
    """A real COLMAP model of the 10 sacre_coeur photos, built with pycolmap (~15 s)."""
    from colmap_sfm import build_colmap_model

    photos = data_path("sacre_coeur")
    out = tmp_path_factory.mktemp("sfm")
    return photos, build_colmap_model(photos, out)


def test_colmap_scene_folder(colmap_model, tmp_path):
    import pycolmap

    photos, model = colmap_model
    scene_dir = tmp_path / "scene"
    shutil.copytree(model, scene_dir / "sparse" / "0")
    (scene_dir / "images").mkdir()
    for jpg in photos.glob("*.jpg"):
        (scene_dir / "images" / jpg.name).symlink_to(jpg)
    recon = pycolmap.Reconstruction(str(model))
    points = torch.tensor(np.array([p.xyz for p in recon.points3D.values()]), dtype=torch.float32)
    write_ply(random_scene(len(points)), scene_dir / "point_cloud.ply")

    scene = load_scene(scene_dir)
    cams = scene.cameras
    assert cams is not None and len(cams) == recon.num_reg_images() >= 8
    assert cams.image_paths is not None
    for i, path in enumerate(cams.image_paths):  # mixed portrait/landscape sizes kept per camera
        with Image.open(path) as im:
            assert im.size == (cams.widths[i], cams.heights[i])
    # Our OpenCV world_to_camera + K reproject COLMAP's own observations.
    errors = []
    for image in recon.images.values():
        i = cams.names.index(image.name)
        obs = [(p.xy, recon.points3D[p.point3D_id].xyz) for p in image.points2D if p.has_point3D()]
        xy = torch.tensor(np.array([o[0] for o in obs]), dtype=torch.float32)
        xyz = torch.tensor(np.array([o[1] for o in obs]), dtype=torch.float32)
        errors.append((project(cams, i, xyz) - xy).norm(dim=-1))
    assert torch.cat(errors).median() < 1.5  # pixels; SIMPLE_RADIAL distortion is ignored
    assert points.shape[0] > 100


def test_colmap_sfm_folder_without_gaussians_renders(colmap_model, tmp_path):
    """The real SfM model with no trained Gaussians: its points3D render in the photos' views."""
    import pycolmap

    photos, model = colmap_model
    shutil.copytree(model, tmp_path / "sparse" / "0")
    (tmp_path / "images").mkdir()
    for jpg in photos.glob("*.jpg"):
        (tmp_path / "images" / jpg.name).symlink_to(jpg)
    scene = load_scene(tmp_path)
    assert len(scene.gaussians) == pycolmap.Reconstruction(str(model)).num_points3D() > 100
    assert scene.cameras is not None and scene.cameras.image_paths is not None
    # SfM fixes no scale: this model's points sit 0.0004-10 units from the cameras (it depends
    # on pycolmap's thread count), so the default near plane (0.01) would cull some views whole.
    config = RenderConfig(near=1e-6)
    for i in range(len(scene.cameras)):  # measured: 45-82 % of each 160x120 view covered
        out = render(scene.gaussians, scene.cameras[i].resized(160, 120), config=config)
        assert (out.alpha > 0.05).float().mean() > 0.3, scene.cameras.names[i]


def test_garden_npz_loads_points_and_cameras():
    scene = load_scene(data_path("garden", "test_garden.npz"))
    assert len(scene.gaussians) == 138766
    assert scene.cameras is not None and len(scene.cameras) == 3
    assert (scene.cameras.widths[0], scene.cameras.heights[0]) == (648, 420)
    assert scene.cameras.K[0, 0, 0].item() == pytest.approx(480.61234, rel=1e-6)
    # The scene centre is in front of every camera and projects inside the image.
    uv = project(scene.cameras, 0, torch.zeros(1, 3))[0]
    assert 0 < uv[0] < 648 and 0 < uv[1] < 420


@pytest.mark.slow
def test_garden_renders_like_a_photo_of_a_garden():
    scene = load_scene(data_path("garden", "test_garden.npz"))
    out = render(scene.gaussians, scene.cameras[0].resized(324, 210))
    assert out.alpha.mean() > 0.5
    green_minus_blue = (out.rgb[0, ..., 1] - out.rgb[0, ..., 2]).mean()
    assert green_minus_blue > 0.05  # vegetation


def test_inria_cameras_round_trip(tmp_path):
    cams = orbit_cameras([0.1, 0.2, 0.3], 2.0, 5, 20.0, 64, 48, 50.0)
    back = read_inria_cameras(write_inria_cameras(cams, tmp_path / "cameras.json"))
    torch.testing.assert_close(back.world_to_camera, cams.world_to_camera, atol=1e-5, rtol=0)
    torch.testing.assert_close(back.K, cams.K)
    assert back.names == cams.names


def test_transforms_json_opengl_poses_become_opencv(tmp_path):
    """A Blender camera at z=+4 looking down -z sees the origin at the image centre, in front."""
    c2w_gl = np.eye(4)
    c2w_gl[2, 3] = 4.0
    meta = {
        "camera_angle_x": 0.69,
        "w": 80,
        "h": 60,
        "frames": [{"file_path": "./r_0", "transform_matrix": c2w_gl.tolist()}],
    }
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    cams = read_transforms(tmp_path / "transforms.json")
    uv = project(cams, 0, torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    torch.testing.assert_close(uv[0], torch.tensor([40.0, 30.0]))
    assert uv[1, 0] > 40 and uv[1, 1] < 30  # +x right, +y up in the world -> up in the image
    depth = (cams.world_to_camera[0] @ torch.tensor([0.0, 0, 0, 1]))[2]
    assert depth.item() == pytest.approx(4.0)
    assert torch.equal(GL_TO_CV.diagonal(), torch.tensor([1.0, -1, -1, 1], dtype=torch.float64))


def test_inria_output_folder_takes_the_highest_iteration(tmp_path):
    for it, n in ((7000, 10), (30000, 20)):
        write_ply(random_scene(n), tmp_path / "point_cloud" / f"iteration_{it}" / "point_cloud.ply")
    write_inria_cameras(orbit_cameras([0, 0, 0], 2.0, 3, 10.0, 32, 32), tmp_path / "cameras.json")
    scene = load_scene(tmp_path)
    assert len(scene.gaussians) == 20
    assert scene.cameras is not None and len(scene.cameras) == 3
    assert (
        load_scene(scene.gaussians_file).cameras is not None
    )  # the ply path finds the same cameras


def test_gsplat_checkpoint(tmp_path):
    s = random_scene(30, sh_degree=2)
    splats = {
        "means": s.means,
        "quats": s.quats * 3.0,  # gsplat stores them unnormalised
        "scales": s.log_scales,
        "opacities": s.opacity_logits,
        "sh0": s.sh[:, :1],
        "shN": s.sh[:, 1:],
    }
    (tmp_path / "ckpts").mkdir()
    torch.save({"step": 999, "splats": splats}, tmp_path / "ckpts" / "ckpt_999_rank0.pt")
    torch.save({"step": 99, "splats": {}}, tmp_path / "ckpts" / "ckpt_99_rank0.pt")
    scene = load_scene(tmp_path)
    assert scene.gaussians_file.name == "ckpt_999_rank0.pt"
    torch.testing.assert_close(scene.gaussians.quats, s.quats)
    assert scene.gaussians.sh_degree == 2


def test_donut_without_cameras_gets_an_orbit_that_sees_it():
    scene = load_scene(data_path("donut"), orbit_views=6)
    assert scene.gaussians_file.name == "fused.ply"  # color.ply is not a 3DGS ply
    assert scene.cameras is not None and len(scene.cameras) == 6
    out = render(scene.gaussians, scene.cameras.resized(96, 96))
    coverage = (out.alpha > 0.5).float().mean(dim=(1, 2))
    assert (coverage > 0.1).all() and (coverage < 0.9).all()


# -- bad input: one error naming the file and the problem ------------------------------------
def _scene_with_photos(tmp_path, size=(32, 24)):
    write_ply(random_scene(20), tmp_path / "point_cloud.ply")
    cams = orbit_cameras([0, 0, 0], 2.0, 2, 10.0, 32, 24)
    write_inria_cameras(cams, tmp_path / "cameras.json")
    (tmp_path / "images").mkdir()
    for name in cams.names:
        Image.new("RGB", size).save(tmp_path / "images" / f"{name}.png")
    return cams


def test_camera_naming_a_missing_image(tmp_path):
    cams = _scene_with_photos(tmp_path)
    (tmp_path / "images" / f"{cams.names[1]}.png").unlink()
    with pytest.raises(
        SceneError, match=r"cameras\.json: 1 camera\(s\) name images missing .*orbit_001"
    ):
        load_scene(tmp_path)


def test_intrinsics_not_matching_the_image(tmp_path):
    _scene_with_photos(tmp_path, size=(40, 40))
    with pytest.raises(
        SceneError, match=r"orbit_000\.png: image is 40x40 but its camera .* is 32x24"
    ):
        load_scene(tmp_path)


def test_downscaled_photos_rescale_intrinsics(tmp_path):
    cams = _scene_with_photos(tmp_path, size=(16, 12))
    scene = load_scene(tmp_path)
    assert scene.cameras is not None and scene.cameras.widths == [16, 16]
    torch.testing.assert_close(scene.cameras.K[:, :2], cams.K[:, :2] / 2)
    assert "rescaled" in scene.notes[0]


def test_empty_folder(tmp_path):
    with pytest.raises(SceneError, match="folder is empty"):
        load_scene(tmp_path)


def test_folder_without_a_scene(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SceneError, match="no 3DGS scene found; expected point_cloud.ply"):
        load_scene(tmp_path)


def test_corrupt_cameras_json(tmp_path):
    write_ply(random_scene(5), tmp_path / "point_cloud.ply")
    (tmp_path / "cameras.json").write_text("[{oops")
    with pytest.raises(SceneError, match=r"cameras\.json: invalid JSON"):
        load_scene(tmp_path)


def _text_colmap_model(folder, camera_ids=(1, 1), size=(64, 48)):
    """A hand-written text COLMAP model: one PINHOLE camera, two images looking down +z from
    x = 0 and x = 0.2, 60 coloured points 2-3 units in front; images/ beside sparse/."""
    model = folder / "sparse" / "0"
    model.mkdir(parents=True)
    w, h = size
    (model / "cameras.txt").write_text(f"# cameras\n1 PINHOLE {w} {h} 50 50 {w / 2} {h / 2}\n")
    lines = ["# images"]
    for i, camera_id in enumerate(camera_ids):
        lines += [f"{i + 1} 1 0 0 0 {-0.2 * i} 0 0 {camera_id} view_{i}.png", ""]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    g = np.random.default_rng(0)
    xyz = np.c_[g.uniform(-0.6, 0.6, (60, 2)), g.uniform(2, 3, 60)]
    rgb = g.integers(0, 256, (60, 3))
    (model / "points3D.txt").write_text(
        "# points\n"
        + "".join(
            f"{k + 1} {x} {y} {z} {r} {gg} {b} 0.5\n"
            for k, ((x, y, z), (r, gg, b)) in enumerate(zip(xyz, rgb, strict=True))
        )
    )
    (folder / "images").mkdir()
    for i in range(len(camera_ids)):
        Image.new("RGB", size).save(folder / "images" / f"view_{i}.png")
    return xyz, rgb


def test_colmap_folder_without_gaussians_starts_them_from_the_points(tmp_path):
    """sparse/0 + images/ and no point_cloud.ply: the points become Gaussians as 3DGS training
    initialises them, so the folder renders and can be inspected."""
    from scipy.spatial import cKDTree  # pyright: ignore[reportAttributeAccessIssue]

    from omnivision.scenes.gaussians import sh_dc_to_rgb

    xyz, rgb = _text_colmap_model(tmp_path)
    scene = load_scene(tmp_path)
    g = scene.gaussians
    assert scene.gaussians_file.name == "points3D.txt" and len(g) == 60
    assert scene.cameras is not None and scene.cameras.names == ["view_0.png", "view_1.png"]
    assert scene.cameras.image_paths is not None  # photos found under the dataset's images/
    assert any("initialised from the COLMAP points" in note for note in scene.notes)
    torch.testing.assert_close(g.means, torch.tensor(xyz, dtype=torch.float32))
    torch.testing.assert_close(sh_dc_to_rgb(g.sh[:, 0]), torch.tensor(rgb / 255.0).float())
    assert g.sh_degree == 0
    torch.testing.assert_close(torch.sigmoid(g.opacity_logits), torch.full((60,), 0.1))
    dist, _ = cKDTree(xyz).query(xyz, k=4)
    rms = np.sqrt((dist[:, 1:] ** 2).mean(1))
    torch.testing.assert_close(g.scales, torch.tensor(rms).float()[:, None].expand(-1, 3))
    out = render(g, scene.cameras[0])
    assert out.alpha.max() > 0.1  # the points are in front of the camera and show


def test_colmap_image_naming_an_unknown_camera(tmp_path):
    _text_colmap_model(tmp_path, camera_ids=(1, 7))
    with pytest.raises(
        SceneError, match=r"images\.txt: image 'view_1\.png' names camera 7, which cameras\.txt"
    ):
        load_scene(tmp_path)


def test_non_positive_image_size_names_the_camera_and_field(tmp_path):
    cams = orbit_cameras([0, 0, 0], 2.0, 3, 10.0, 32, 24)
    write_inria_cameras(cams, tmp_path / "cameras.json")
    entries = json.loads((tmp_path / "cameras.json").read_text())
    entries[2]["height"] = 0
    (tmp_path / "cameras.json").write_text(json.dumps(entries))
    with pytest.raises(
        SceneError, match=r"cameras\.json: camera 2 \('orbit_002'\): height 0 is not a positive"
    ):
        read_inria_cameras(tmp_path / "cameras.json")
