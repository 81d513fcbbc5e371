"""Published figures, as data, for the report to put beside ours (marked "published", with the paper).

Every row names its paper. Values are percentages as the paper prints them (rounded to one decimal
only when shown). `protocol` says how the figure was measured, because papers mix the two LERF-OVS
protocols in one table and ours never do:

- "2d": LangSplat / LUDVIG style. Relevancy is rendered into the labelled frame; localization
  accuracy (argmax inside a box) and mIoU of the thresholded map.
- "3d": OpenGaussian / Dr. Splat style. The phrase selects Gaussians, the selection is rendered;
  mIoU and mAcc@0.25.
- "-": the benchmark has one protocol of its own (NVOS, SPIn-NeRF, DAVIS, open-vocabulary
  segmentation).

Scenes are the benchmark's scene names; "mean" is the paper's own mean over its scenes (not
recomputed here). Where a per-scene figure could not be confirmed, only the mean is given.
Metric names follow eval/DESIGN.md ("accuracy", "miou", "macc@0.25", "pixel_accuracy", ...), plus
"j&f" for DAVIS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["2d", "3d", "-"]

LERF_SCENES = ("figurines", "ramen", "teatime", "waldo_kitchen")


@dataclass(frozen=True)
class PublishedFigure:
    method: str
    paper: str
    """Short citation: authors, name, venue and year (arXiv id where there is one)."""
    benchmark: str
    protocol: Protocol
    scene: str
    """A scene of the benchmark, or "mean" for the paper's mean over its scenes."""
    metric: str
    value: float
    """Percent, as published."""
    note: str = ""


# Papers.
LERF = "Kerr et al., LERF, ICCV 2023 (arXiv 2303.09553)"
LANGSPLAT = "Qin et al., LangSplat, CVPR 2024 (arXiv 2312.16084)"
LANGSPLAT_V2 = "Li et al., LangSplatV2, NeurIPS 2025 (arXiv 2507.07136)"
LUDVIG = "Marrie et al., LUDVIG, ICCV 2025 (arXiv 2410.14462)"
EXTRINSPLAT = "Ding et al., ExtrinSplat, CVPR 2026 (arXiv 2509.22225)"
OPENGAUSSIAN = "Wu et al., OpenGaussian, NeurIPS 2024 (arXiv 2406.02058)"
DR_SPLAT = "Kim et al., Dr. Splat, CVPR 2025 (arXiv 2502.16652)"
LIGHTSPLAT = "LightSplat, CVPR 2026 (arXiv 2603.24146)"
NVOS = "Ren et al., Neural Volumetric Object Selection (NVOS), CVPR 2022"
SA3D = "Cen et al., SA3D: Segment Anything in 3D with NeRFs, NeurIPS 2023 (arXiv 2304.12308)"
SAGA = "Cen et al., SAGA: Segment Any 3D Gaussians, AAAI 2025 (arXiv 2312.00860)"
FLASHSPLAT = "Shen et al., FlashSplat, ECCV 2024"
CLICK_GAUSSIAN = "Choi et al., Click-Gaussian, ECCV 2024"
DINOV3 = "Siméoni et al., DINOv3, arXiv 2508.10104 (model card)"
SAM2 = "Ravi et al., SAM 2, ICLR 2025 (arXiv 2408.00714)"
DINOV3_SEG = "dinov3.seg, 2026 preprint (arXiv 2603.19531 as secondary sources give it)"


def _rows(
    method: str,
    paper: str,
    benchmark: str,
    protocol: Protocol,
    metric: str,
    values: Mapping[str, float],
    note: str = "",
) -> list[PublishedFigure]:
    return [
        PublishedFigure(method, paper, benchmark, protocol, scene, metric, value, note)
        for scene, value in values.items()
    ]


def _lerf(
    method: str, paper: str, protocol: Protocol, metric: str, values: Mapping[str, float], note=""
) -> list[PublishedFigure]:
    return _rows(method, paper, "lerf-ovs", protocol, metric, values, note)


_LANGSPLAT_RERUN_OF_LERF = "LERF as re-run by LangSplat on its LERF-OVS labels (LangSplat Table 1)"

PUBLISHED: tuple[PublishedFigure, ...] = (
    # LERF-OVS, 2D protocol: localization accuracy.
    *_lerf(
        "LERF",
        LERF,
        "2d",
        "accuracy",
        {"figurines": 75.0, "ramen": 62.0, "teatime": 84.8, "waldo_kitchen": 72.7, "mean": 73.6},
        _LANGSPLAT_RERUN_OF_LERF,
    ),
    *_lerf(
        "LangSplat",
        LANGSPLAT,
        "2d",
        "accuracy",
        {"figurines": 80.4, "ramen": 73.2, "teatime": 88.1, "waldo_kitchen": 95.5, "mean": 84.3},
    ),
    *_lerf("LangSplatV2", LANGSPLAT_V2, "2d", "accuracy", {"mean": 84.1}),
    # LERF-OVS, 2D protocol: mIoU.
    *_lerf(
        "LERF",
        LERF,
        "2d",
        "miou",
        {"ramen": 28.2, "mean": 37.4},
        _LANGSPLAT_RERUN_OF_LERF + "; other scenes not confirmed",
    ),
    *_lerf(
        "LangSplat",
        LANGSPLAT,
        "2d",
        "miou",
        {"figurines": 44.7, "ramen": 51.2, "teatime": 65.1, "waldo_kitchen": 44.5, "mean": 51.4},
    ),
    *_lerf("LangSplatV2", LANGSPLAT_V2, "2d", "miou", {"mean": 59.9}),
    *_lerf("LUDVIG", LUDVIG, "2d", "miou", {"mean": 64.3}, "LUDVIG's own figure"),
    # LERF-OVS, 3D protocol.
    *_lerf(
        "LUDVIG (re-run)",
        LUDVIG,
        "3d",
        "miou",
        {"figurines": 58.0, "ramen": 42.3, "teatime": 58.6, "waldo_kitchen": 42.8, "mean": 50.4},
        f"re-run by {EXTRINSPLAT}, Table 2 (object selection in 3D space); that table also lists"
        " LangSplat at its 2D-protocol 51.4, so read the protocol with care",
    ),
    *_lerf(
        "OpenGaussian",
        OPENGAUSSIAN,
        "3d",
        "miou",
        {
            "figurines": 39.29,
            "ramen": 31.01,
            "teatime": 60.44,
            "waldo_kitchen": 22.70,
            "mean": 38.36,
        },
    ),
    *_lerf(
        "OpenGaussian",
        OPENGAUSSIAN,
        "3d",
        "macc@0.25",
        {
            "figurines": 55.36,
            "ramen": 42.25,
            "teatime": 76.27,
            "waldo_kitchen": 31.82,
            "mean": 51.43,
        },
    ),
    *_lerf("Dr. Splat", DR_SPLAT, "3d", "miou", {"mean": 43.58}, "per-scene figures not confirmed"),
    *_lerf("Dr. Splat", DR_SPLAT, "3d", "macc@0.25", {"mean": 63.87}),
    *_lerf("LightSplat", LIGHTSPLAT, "3d", "miou", {"mean": 47.58}),
    *_lerf("LightSplat", LIGHTSPLAT, "3d", "macc@0.25", {"mean": 68.32}),
    # NVOS (scribbles on a reference view, mask on a target view): mIoU and pixel accuracy.
    *_rows("NVOS", NVOS, "nvos", "-", "miou", {"mean": 39.4}, f"as tabulated in {FLASHSPLAT}"),
    *_rows(
        "NVOS", NVOS, "nvos", "-", "pixel_accuracy", {"mean": 73.6}, f"as tabulated in {FLASHSPLAT}"
    ),
    *_rows("SA3D", SA3D, "nvos", "-", "miou", {"mean": 90.3}, f"as tabulated in {FLASHSPLAT}"),
    *_rows(
        "SA3D", SA3D, "nvos", "-", "pixel_accuracy", {"mean": 98.2}, f"as tabulated in {FLASHSPLAT}"
    ),
    *_rows(
        "SAGA (arXiv v1)",
        SAGA,
        "nvos",
        "-",
        "miou",
        {"mean": 90.9},
        f"as tabulated in {FLASHSPLAT}",
    ),
    *_rows(
        "SAGA (arXiv v1)",
        SAGA,
        "nvos",
        "-",
        "pixel_accuracy",
        {"mean": 98.3},
        f"as tabulated in {FLASHSPLAT}",
    ),
    *_rows("SAGA", SAGA, "nvos", "-", "miou", {"mean": 92.6}, "AAAI 2025 version"),
    *_rows("SAGA", SAGA, "nvos", "-", "pixel_accuracy", {"mean": 98.6}, "AAAI 2025 version"),
    # SPIn-NeRF (multi-view masks).
    *_rows(
        "SA3D", SA3D, "spinnerf", "-", "miou", {"mean": 92.4}, f"as tabulated in {CLICK_GAUSSIAN}"
    ),
    *_rows(
        "SAGA (arXiv v1)",
        SAGA,
        "spinnerf",
        "-",
        "miou",
        {"mean": 88.0},
        f"as tabulated in {CLICK_GAUSSIAN}",
    ),
    # DAVIS-2017 val, J&F. DINOv3: frozen features; SAM 2: promptable video segmentation.
    *_rows("DINOv3 ViT-S/16", DINOV3, "davis-2017", "-", "j&f", {"mean": 72.7}, "frozen features"),
    *_rows("DINOv3 ViT-B/16", DINOV3, "davis-2017", "-", "j&f", {"mean": 77.2}, "frozen features"),
    *_rows("DINOv3 ViT-L/16", DINOV3, "davis-2017", "-", "j&f", {"mean": 79.9}, "frozen features"),
    *_rows("SAM 2 Hiera-B+", SAM2, "davis-2017", "-", "j&f", {"mean": 90.9}, "first-frame mask"),
    *_rows("SAM 2 Hiera-L", SAM2, "davis-2017", "-", "j&f", {"mean": 91.6}, "first-frame mask"),
    # Open-vocabulary semantic segmentation.
    *_rows("dinov3.seg", DINOV3_SEG, "ade20k-847", "-", "miou", {"mean": 20.09}),
    *_rows("dinov3.seg", DINOV3_SEG, "pascal-context-459", "-", "miou", {"mean": 27.80}),
)

BENCHMARK_ALIASES = {
    "lerf": "lerf-ovs",
    "lerf_ovs": "lerf-ovs",
    "spin-nerf": "spinnerf",
    "spin_nerf": "spinnerf",
    "davis": "davis-2017",
    "davis2017": "davis-2017",
    "ade-847": "ade20k-847",
    "a-847": "ade20k-847",
    "pc-459": "pascal-context-459",
    "ade-150": "ade20k-150",
    "a-150": "ade20k-150",
    "pc-59": "pascal-context-59",
    "spair-71k": "spair",
    "spair71k": "spair",
}


def canonical_benchmark(name: str) -> str:
    """The benchmark name published rows use ("LERF_OVS" and "lerf" both give "lerf-ovs")."""
    key = name.strip().lower()
    return BENCHMARK_ALIASES.get(key, key.replace("_", "-"))


def protocols_match(a: str, b: str) -> bool:
    """Same protocol, or one side is "-" (a benchmark with one protocol of its own)."""
    return a == b or "-" in (a, b)


def published_for(benchmark: str, protocol: str, metric: str) -> list[PublishedFigure]:
    """The published rows for one benchmark, protocol and metric, in table order."""
    bench = canonical_benchmark(benchmark)
    return [
        row
        for row in PUBLISHED
        if row.benchmark == bench
        and row.metric == metric
        and protocols_match(row.protocol, protocol)
    ]
