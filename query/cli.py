"""`omnivision query SCENE_DIR ...`: select Gaussians by phrase, exemplar, 3D click, SAM 2 prompt
or a 2D mask; optionally edit the selection and write the edited scene; always print the count
and write a preview (before | score heatmap | selection | after)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro

from omnivision.scenes.errors import SceneError
from omnivision.scenes.load import WRITE_SUFFIXES, write_suffix
from omnivision.twod.clip_dense import CANONICAL_NEGATIVES

from .selection import Selection


class QueryError(ValueError):
    """Bad query input (a malformed point, an unknown edit, ...): one line, exit code 2."""

    exit_code = 2


SceneArg = Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="SCENE_DIR")]


@dataclass
class QueryCommand:
    scene: SceneArg
    """A 3DGS scene folder (or .ply) lifted with omnivision-lift (phrase and exemplar need features)."""
    text: str | None = None
    """Phrase query: LERF relevancy on lifted CLIP features, or cosine through --bridge on DINO ones."""
    exemplar: str | None = None
    """VIEW:X,Y: the rendered lifted feature under this pixel of camera VIEW; cosine against all."""
    click: str | None = None
    """VIEW:X,Y: 3D click: the Gaussian with the largest blending weight on that pixel's ray, and
    those whose lifted features match it (or the nearest ones when the scene has no features)."""
    sam: tuple[str, ...] | None = None
    """VIEW:X,Y [VIEW:X,Y ...]: positive SAM 2 points on the rendered view; the mask is lifted."""
    sam_negative: tuple[str, ...] = ()
    """VIEW:X,Y points SAM 2 should leave out (with --sam)."""
    mask: str | None = None
    """VIEW:MASK.png: a 2D mask (non-zero = in) on the rendered view, lifted like a SAM 2 mask."""
    classes: tuple[str, ...] | None = None
    """NAME[,NAME...] on lifted segment features (omnivision-lift --features segment:...): the
    Gaussians whose most probable class is one of them ("mug,box"); --classes alone: every
    class. --then paint colours them by class; an exported scene carries class_id."""
    ref: Path | None = None
    """PHOTO of the object, taken anywhere (mark it with --ref-box or --ref-click): localized by
    example in every view (the scene's photos, else renders) with --backbone, masks lifted."""
    ref_box: str | None = None
    """X0,Y0,X1,Y1: the object's box on the --ref photo, in pixels."""
    ref_click: tuple[str, ...] = ()
    """X,Y [X,Y ...]: points on the object in the --ref photo (instead of --ref-box)."""
    backbone: str = "colour"
    """Patch features for --ref: colour (weight-free, offline), dinov3-vitb16, dinov2-small, a hub
    id or a local folder."""
    features: str | None = None
    """Lifted feature name in SCENE_DIR/omnivision (default: a clip-* one for --text, else the first)."""
    negatives: tuple[str, ...] = CANONICAL_NEGATIVES
    """Negatives of the --text relevancy (LERF: in CLIP's space, or the bridge's with --bridge):
    the canonical four; add the names of other things in the scene to keep them out (e.g.
    --negatives object things stuff texture table)."""
    tau: float = 10.0
    """Relevancy temperature."""
    bridge: Path | None = None
    """Text bridge folder (omnivision train-bridge) for --text on DINO/colour features: the phrase
    and --negatives go through it into the features' space (it must be trained on the backbone
    the features were lifted with), scored by LERF relevancy."""
    clip: str | None = None
    """OpenCLIP model for --text (default: the one the features were lifted with)."""
    clip_pretrained: str | None = None
    """OpenCLIP pretrained tag (default: the lift's)."""
    sam_model: str = "facebook/sam2.1-hiera-tiny"
    """SAM 2 hub id or local .pt checkpoint (with --sam-config)."""
    sam_config: str | None = None
    """SAM 2 config for a local checkpoint."""
    refine_views: int = 4
    """With --sam: re-prompt SAM 2 in this many nearest other cameras and lift all masks together."""
    diffuse: int = 0
    """With --sam / --mask / --ref: diffuse the lifted mask this many steps on the 16-NN graph
    (edges weighted by the lifted features when there are any); Gaussians no view saw take their
    neighbours' scores, so one view selects the hidden side too. 50 is a good start; 0: off."""
    threshold: float | None = None
    """Score cut (default: Otsu's, and for CLIP relevancy at least 0.5 (nearer the phrase than
    every negative); 0.5 for lifted masks)."""
    instance: Literal["graphcut", "component"] | None = None
    """With --click, --exemplar or --sam: select only the object under the point, not everything
    like it (e.g. one of two identical mugs, or the can but not the wooden table of the same
    colour): the part of the selection connected to the Gaussian under the point through
    neighbours of similar colour (16-NN graph). graphcut: the scores cut by max-flow with a
    smoothness term first (GaussianCut; robust to noisy scores); component: the plain
    threshold's connected piece (cheaper)."""
    then: str | None = None
    """Edit the selection: delete | extract | hide | isolate | recolor=#RRGGBB | paint (with
    --classes: each Gaussian in its class colour)."""
    out: Path | None = None
    """Where the edited scene goes, by the end of its name: .ply, .splat, .spz, .compressed.ply,
    .sog, .glb or .gltf (as omnivision export; default SCENE_DIR/omnivision/edited.ply)."""
    preview: tuple[int, Path] | None = None
    """VIEW OUT.png for the preview (default: the query's view, SCENE_DIR/omnivision/query_preview.png)."""
    export_mesh: Path | None = None
    """OUT.glb | OUT.obj | OUT.ply: the selected Gaussians' centres as a point cloud coloured by
    their SH DC colour, and (.glb, .obj) their oriented box, for Blender or a robotics stack."""
    summary: Path | None = None
    """The JSON summary (default SCENE_DIR/omnivision/query.json): the query, the count, what was
    written, and the selection's centroid, axis-aligned and oriented boxes, in scene units."""
    device: str | None = None
    """cpu or cuda (default: cuda when present): the scene, its features and the models go there."""


DESCRIPTION = """Select Gaussians of a lifted 3DGS scene by phrase, example, 3D click, SAM 2 prompt or 2D mask;
print how many were selected, write a preview (before | score heatmap | selection | after) and,
with --then, the edited scene.

examples:
  omnivision-lift scene/ --features clip-pyramid && omnivision query scene/ --text "red mug" --then recolor=#00ff00
  omnivision query demo_out/scene --exemplar 0:233,142 --then delete --out no_mug.ply
  omnivision query demo_out/scene --click 0:233,142 --then extract --out mug.ply
  omnivision query demo_out/scene --click 0:233,142 --export-mesh mug.glb --summary mug.json
  omnivision query demo_out/scene --click 0:154,148 --instance graphcut --then extract --out can.ply
  omnivision query scene/ --sam 3:200,140 3:210,180 --sam-negative 3:20,20 --then hide
  omnivision query demo_out/scene --mask 0:mug_mask.png --preview 4 mug.png
  omnivision query demo_out/scene --ref mug_photo.jpg --ref-box 40,30,120,110 --then extract --out mug.ply
  omnivision-lift scene/ --features "segment:mug,box,table" --diffuse && omnivision query scene/ --classes mug --then extract --out mug.ply
  omnivision query scene/ --classes --then paint --out classes.ply   # every class in its colour; plys carry class_id"""


POINT = re.compile(r"^\s*(\d+)\s*:\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*$")
EDITS = ("delete", "extract", "hide", "isolate", "recolor", "paint")


def parse_point(text: str, flag: str, num_views: int) -> tuple[int, tuple[float, float]]:
    match = POINT.match(text)
    if match is None:
        raise QueryError(f"{flag} {text!r}: want VIEW:X,Y, e.g. 0:120,80")
    view = int(match.group(1))
    if view >= num_views:
        raise QueryError(f"{flag} {text!r}: view {view} does not exist (the scene has {num_views})")
    return view, (float(match.group(2)), float(match.group(3)))


def parse_edit(text: str) -> tuple[str, tuple[float, float, float] | None]:
    name, _, arg = text.partition("=")
    if name not in EDITS:
        raise QueryError(f"--then {text!r}: want one of {', '.join(EDITS)} (recolor=#RRGGBB)")
    if name != "recolor":
        return name, None
    hexcode = arg.strip().lstrip("#")
    if not re.fullmatch(r"[0-9a-fA-F]{6}", hexcode):
        raise QueryError(f"--then {text!r}: recolor wants a colour like recolor=#ff8800")
    return name, tuple(int(hexcode[i : i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def backbone_names(name: str) -> set[str]:
    """The names one backbone goes by: as given, its hub id and the id's last part (what an
    extractor calls itself), and for a folder its absolute path and folder name."""
    from omnivision.twod.dino import resolve_model_id

    if not name:
        return set()
    hub_id = resolve_model_id(name)
    names = {name, hub_id, hub_id.rstrip("/").rsplit("/", 1)[-1]}
    folder = Path(name).expanduser()
    if folder.is_dir():
        names |= {str(folder.resolve()), folder.resolve().name}
    return names


def check_bridge(folder: Path, lifted: Any, feature_name: str) -> None:
    """A bridge maps text into the space of the backbone it was trained on: refuse features
    lifted with another backbone (or of another width) before any model loads."""
    from omnivision.twod.bridge import read_bridge_config

    config = read_bridge_config(folder)
    lifted_with = lifted.entry.get("request", {}).get("features")
    trained_on = backbone_names(config.backbone) | backbone_names(config.backbone_source)
    if lifted_with and not backbone_names(lifted_with) & trained_on:
        raise QueryError(
            f"--bridge {folder}: trained on backbone {config.backbone_source or config.backbone!r}, "
            f"but the {feature_name!r} features were lifted with {lifted_with!r}: lift with "
            f"--features {config.backbone_source or config.backbone} or train a bridge for it"
        )
    dims = lifted.dims if lifted.pca is None else lifted.pca.components.shape[0]
    if dims != config.dino_dim:
        raise QueryError(
            f"--bridge {folder}: maps text to {config.dino_dim}-d features, the {feature_name!r} "
            f"features are {dims}-d"
        )


def text_encoder(
    lifted: Any,
    feature_name: str,
    bridge: Path | None,
    clip: str | None,
    clip_pretrained: str | None,
    device: str,
    fallback: str,
) -> Callable[[Sequence[str]], torch.Tensor]:
    """Phrases -> vectors in the lifted features' space: through `bridge` (checked against the
    features' backbone before any model loads) for DINO/colour features, else the CLIP the lift
    recorded (or `clip`). `fallback` ends a missing-weights error with the caller's alternative."""
    request = lifted.entry.get("request", {})
    if bridge is not None:
        from omnivision.twod.bridge import TextBridge

        check_bridge(bridge, lifted, feature_name)
        model = TextBridge.load(bridge, device=device)

        def through_bridge(texts: Sequence[str]) -> torch.Tensor:
            with torch.no_grad():
                return model(list(texts)).float().cpu()

        return through_bridge
    clip_name = clip or request.get("clip")
    if clip_name is None:
        raise QueryError(
            f"features {feature_name!r} are not CLIP features: give --bridge DIR (omnivision "
            "train-bridge) or lift CLIP ones (omnivision-lift SCENE_DIR --features clip-pyramid)"
        )
    from omnivision.twod.clip import load_clip

    pretrained = clip_pretrained or request.get("clip_pretrained")
    model = load_clip(clip_name, pretrained, device=device, fallback=fallback)
    return lambda texts: model.encode_text(list(texts)).cpu()


def text_scores(cmd: QueryCommand, lifted: Any, feature_name: str, device: str) -> torch.Tensor:
    """LERF relevancy of the lifted features to --text against --negatives (temperature --tau),
    the texts embedded by CLIP (CLIP features) or through --bridge (DINO/colour features)."""
    from .queries import phrase_relevancy

    text = text_encoder(
        lifted, feature_name, cmd.bridge, cmd.clip, cmd.clip_pretrained, device,
        fallback="or query DINO features with --bridge DIR",
    )  # fmt: skip
    # a codebook file is scored per entry and gathered, never decoded
    return phrase_relevancy(
        lifted.queryable, text, cmd.text or "", cmd.negatives, cmd.tau, lifted.pca
    )


def nearest_views(cameras: Any, view: int, count: int) -> list[int]:
    centres = cameras.centers
    order = torch.argsort((centres - centres[view]).norm(dim=-1)).tolist()
    return [v for v in order if v != view][:count]


def prompt_scores(
    cmd: QueryCommand, scene: Any, cameras: Any, device: str, features: Any = None
) -> tuple[int, torch.Tensor]:
    """SAM 2 points (--sam) or a given mask (--mask) on a rendered view -> lifted mask scores
    (filled and diffused on the kNN graph with --diffuse)."""
    import numpy as np

    from omnivision.lift.diffusion import knn_graph
    from omnivision.scenes.render import RenderConfig, render

    from .queries import mask_prompt_scores

    def diffusion() -> dict[str, Any]:
        """mask_prompt_scores' diffusion arguments, the graph built only once the input is valid
        (on the CPU, as the lift's diffusion runs: the scores come back there)."""
        if cmd.diffuse == 0:
            return {}
        return {
            "graph": knn_graph(scene.means.cpu(), 16),
            "features": None if features is None else features.cpu(),
            "iterations": cmd.diffuse,
        }

    if cmd.mask is not None:
        view_text, _, path = cmd.mask.partition(":")
        if not view_text.isdigit() or not path:
            raise QueryError(f"--mask {cmd.mask!r}: want VIEW:MASK.png")
        view = int(view_text)
        if view >= len(cameras):
            raise QueryError(f"--mask: view {view} does not exist (the scene has {len(cameras)})")
        from omnivision.scenes.io_images import read_image

        if not Path(path).is_file():
            raise SceneError(Path(path), "mask image not found")
        image = read_image(Path(path))
        hw = (cameras.heights[view], cameras.widths[view])
        if tuple(image.shape[:2]) != hw:
            raise SceneError(
                Path(path),
                f"mask is {image.shape[1]}x{image.shape[0]}, view {view} is {hw[1]}x{hw[0]}",
            )
        mask = image.reshape(*hw, -1).amax(-1) > 0
        return view, mask_prompt_scores(scene, cameras, view, mask, **diffusion())
    assert cmd.sam is not None
    points = [parse_point(p, "--sam", len(cameras)) for p in cmd.sam]
    negatives = [parse_point(p, "--sam-negative", len(cameras)) for p in cmd.sam_negative]
    views = {v for v, _ in points + negatives}
    if len(views) != 1:
        raise QueryError(f"--sam points must all be on one view, got views {sorted(views)}")
    view = views.pop()
    from omnivision.twod.sam import load_sam2

    sam = load_sam2(cmd.sam_model, cmd.sam_config, device=device)
    rgb = render(scene, cameras[view], config=RenderConfig(background=(1.0, 1.0, 1.0))).rgb
    assert rgb is not None
    sam.set_image(rgb[0].clamp(0, 1))
    xy = np.array([p for _, p in points + negatives], np.float32)
    labels = np.array([1] * len(points) + [0] * len(negatives), np.int64)
    mask = sam.predict(xy, labels, multimask=True).masks[0]

    def segment(
        other: int, image: torch.Tensor, box: tuple[float, float, float, float]
    ) -> torch.Tensor:
        return sam.predict_boxes(image, [box])[0]

    refine = nearest_views(cameras, view, cmd.refine_views)
    return view, mask_prompt_scores(scene, cameras, view, mask, segment, refine, **diffusion())


def query_main(argv: list[str], prog: str) -> int:
    from omnivision.lift.store import default_features, load_features
    from omnivision.scenes.io_images import save_image
    from omnivision.scenes.load import load_scene

    from . import edits
    from .maps import preview_panels
    from .queries import click_scores, exemplar_scores, relevancy_threshold

    cmd: QueryCommand = tyro.cli(QueryCommand, args=argv, prog=prog, description=DESCRIPTION)
    queries = ("text", "exemplar", "click", "sam", "mask", "ref", "classes")
    kinds = [k for k in queries if getattr(cmd, k) is not None]
    if len(kinds) != 1:
        raise QueryError(
            "give exactly one query: --text, --exemplar, --click, --sam, --mask, --ref or --classes"
            + (f" (got --{' --'.join(kinds)})" if kinds else "")
        )
    if cmd.text is not None and not cmd.text.strip():
        raise QueryError("--text is empty: give a phrase, e.g. --text 'red mug'")
    if cmd.instance is not None and kinds[0] in ("text", "mask", "ref", "classes"):
        raise QueryError(
            f"--instance needs a seed, the Gaussian under a clicked point: --{kinds[0]} has "
            "none; use --click, --exemplar or --sam"
        )
    from .cli_geometry import check_mesh_path, selection_report, write_summary
    from .cli_reference import read_reference, reference_scores

    photo = read_reference(cmd)  # the photo and its box, checked before the scene loads
    edit = parse_edit(cmd.then) if cmd.then else None
    if edit is not None and edit[0] == "paint" and cmd.classes is None:
        raise QueryError("--then paint colours Gaussians by class: use it with --classes")
    if cmd.out is not None and write_suffix(cmd.out) not in WRITE_SUFFIXES:
        raise QueryError(f"--out {cmd.out}: the name must end in {', '.join(WRITE_SUFFIXES)}")
    check_mesh_path(cmd.export_mesh)
    device = cmd.device or ("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    loaded = load_scene(cmd.scene, orbit_views=24)
    # queries and the preview render on the device; edits and the export stay on the CPU
    scene, cameras = loaded.gaussians.to(device), loaded.cameras_or_orbit()
    out_dir = loaded.root / "omnivision"
    kind = kinds[0]
    feature_name = None
    if cmd.diffuse < 0:
        raise QueryError(f"--diffuse {cmd.diffuse}: want a number of steps >= 0")
    if cmd.diffuse > 0 and kind not in ("sam", "mask", "ref"):
        raise QueryError("--diffuse spreads lifted 2D masks: use it with --sam, --mask or --ref")
    # a click, and a diffused mask, use features when there are any
    if kind == "classes":  # the segment features, checked before any scoring
        from .classes import default_class_features

        feature_name = cmd.features or default_class_features(out_dir)
        if feature_name is None:
            raise SceneError(out_dir, "no segment features here: omnivision-lift SCENE_DIR "
                             "--features segment:CLASSES first")  # fmt: skip
    elif kind in ("text", "exemplar", "click") or cmd.diffuse > 0:
        feature_name = cmd.features or default_features(out_dir, prefer_clip=kind == "text")
        if feature_name is None and kind in ("text", "exemplar"):
            raise SceneError(
                out_dir, "no lifted features here: run omnivision-lift SCENE_DIR first"
            )
    lifted = (
        None
        if feature_name is None
        else load_features(out_dir, feature_name, scene_file=loaded.gaussians_file)
    )
    if lifted is not None and lifted.num_gaussians != len(scene):
        raise SceneError(
            out_dir / f"features_{feature_name}.safetensors",
            f"has {lifted.num_gaussians} Gaussians, the scene {len(scene)}: lift again (--force)",
        )
    # a phrase reads `lifted.queryable`; the other queries the (decoded) features
    lifted_features = lifted.features.to(device) if lifted is not None and kind != "text" else None

    view, threshold, seed = 0, cmd.threshold, -1
    classes_result = None
    if kind == "text":
        assert lifted is not None and feature_name is not None
        scores = text_scores(cmd, lifted, feature_name, device)
        if threshold is None:
            threshold = relevancy_threshold(scores)
    elif kind == "exemplar":
        assert lifted_features is not None and cmd.exemplar is not None
        view, xy = parse_point(cmd.exemplar, "--exemplar", len(cameras))
        scores = _pixel_checked(lambda: exemplar_scores(scene, cameras, view, lifted_features, xy))
        if cmd.instance is not None:
            seed = _seed_under(scene, cameras, view, xy, f"--exemplar {cmd.exemplar}")
    elif kind == "click":
        assert cmd.click is not None
        view, xy = parse_point(cmd.click, "--click", len(cameras))
        picked, scores = _pixel_checked(
            lambda: click_scores(scene, cameras, view, xy, lifted_features)
        )
        if picked < 0:
            raise QueryError(f"--click {cmd.click}: no Gaussian covers that pixel")
        print(f"picked Gaussian {picked}")
        seed = picked
    elif kind == "classes":
        assert lifted is not None and feature_name is not None
        from .classes import classes_query

        classes_result = classes_query(cmd.classes or (), lifted, feature_name)
        scores = classes_result.selection.scores
        loaded.gaussians = classes_result.labelled(loaded.gaussians)  # exports carry class_id
    elif photo is not None:
        view, scores = reference_scores(cmd, photo, scene, cameras, device, lifted_features)
        threshold = 0.5 if threshold is None else threshold
    else:
        view, scores = prompt_scores(cmd, scene, cameras, device, lifted_features)
        threshold = 0.5 if threshold is None else threshold
        if cmd.instance is not None and cmd.sam:  # the Gaussian under the first --sam point
            seed_view, xy = parse_point(cmd.sam[0], "--sam", len(cameras))
            seed = _seed_under(scene, cameras, seed_view, xy, f"--sam {cmd.sam[0]}")
    selection = Selection.from_scores(scores.cpu(), threshold)
    if classes_result is not None:  # the argmax decides, not a cut of the scores
        selection = classes_result.selection
    alike = ""
    if cmd.instance is not None:
        from omnivision.lift.diffusion import knn_graph

        from .instance import InstanceConfig, instance_adjacency, instance_selection

        config = InstanceConfig(method=cmd.instance, threshold=threshold)
        graph = knn_graph(scene.means.cpu(), 16)  # on the CPU, where the scores come back
        matrix = instance_adjacency(graph, scene.rgb_dc.cpu(), edges=config.edges)
        like_it = selection.count
        selection = instance_selection(scores.cpu(), seed, matrix, config)
        alike = f": the {cmd.instance} instance of Gaussian {seed} ({like_it} like it)"
    count = selection.count
    share = 100 * count / max(len(scene), 1)
    via = f" ({feature_name} features)" if feature_name else ""
    print(f"selected {count} of {len(scene)} Gaussians ({share:.1f}%) by --{kind}{via}{alike}")
    # exports carry the selection as a uint8 `selected` field, beside object and class ids
    selected = {"selected": selection.mask.cpu().to(torch.uint8)}
    loaded.gaussians = replace(loaded.gaussians, extras={**loaded.gaussians.extras, **selected})
    geometry = selection_report(loaded.gaussians, selection, cmd.export_mesh)

    after = None
    if edit is not None:
        name, colour = edit
        if name == "paint":
            assert classes_result is not None  # checked with the arguments
            after = classes_result.painted(loaded.gaussians)
        elif name == "recolor":
            after = edits.recolor(loaded.gaussians, selection, colour)  # type: ignore[arg-type]
        else:
            after = getattr(edits, name)(loaded.gaussians, selection)
        target = cmd.out or out_dir / "edited.ply"
        edits.export(after, target)
        print(f"{name}: wrote {target} ({len(after)} Gaussians)")
    preview_view, preview_path = cmd.preview or (view, out_dir / "query_preview.png")
    if preview_view >= len(cameras):
        raise QueryError(
            f"--preview: view {preview_view} does not exist (the scene has {len(cameras)})"
        )
    shown = None if after is None else after.to(device)
    panels = preview_panels(scene, shown, cameras, preview_view, selection)
    save_image(preview_path, panels)
    columns = "before | scores | selection" + (" | after" if after is not None else "")
    print(
        f"preview: {preview_path} (view {preview_view}: {columns}); {time.perf_counter() - start:.1f} s"
    )
    value = getattr(cmd, kind)
    summary = {
        "scene": str(loaded.gaussians_file),
        "query": {kind: list(value) if isinstance(value, tuple) else str(value)},
        "features": feature_name,
        "selected": count,
        "gaussians": len(scene),
        "geometry": geometry,
        "edited": None if after is None else str(cmd.out or out_dir / "edited.ply"),
        "mesh": None if cmd.export_mesh is None else str(cmd.export_mesh),
        "preview": str(preview_path),
    }
    print(f"summary: {write_summary(cmd.summary or out_dir / 'query.json', summary)}")
    return 0


def _seed_under(scene: Any, cameras: Any, view: int, xy: tuple[float, float], what: str) -> int:
    """The Gaussian with the largest blending weight at the pixel: --instance's seed."""
    from .queries import pick_gaussian

    seed = _pixel_checked(lambda: pick_gaussian(scene, cameras, view, xy))
    if seed < 0:
        raise QueryError(f"{what}: no Gaussian covers that pixel (--instance needs one)")
    return seed


def _pixel_checked(fn):
    try:
        return fn()
    except ValueError as err:
        raise QueryError(str(err)) from None
