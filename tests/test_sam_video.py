"""Video tracking: the frame source (folders and mp4 files, streamed), the SAM 2 video wrapper
(a tiny random SAM 2.1 saved and reloaded through `load_sam2_video`, run on the SAM 2 notebook's
bedroom frames with its prompts), and re-identification with the weight-free colour features on
a synthetic video. Random SAM 2 weights give meaningless masks, so its tests check the plumbing
(frame order, ids, sizes, bounded memory, prompts on later frames, errors); re-identification is
driven by a scripted tracker that loses the object when it is hidden, on real features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_path
from PIL import Image

from omnivision.twod.extractors import load_extractor
from omnivision.twod.features import TwoDError
from omnivision.twod.reid import (
    Match,
    PrototypeBank,
    ReidConfig,
    is_confident,
    is_lost,
    prototype,
    should_reprompt,
)
from omnivision.twod.sam import build_tiny_sam2_checkpoint
from omnivision.twod.sam_video import FrameResult, Prompt, Sam2Video, load_sam2_video
from omnivision.twod.track import frame_features, track_with_reid
from omnivision.twod.video import open_video, video_encoder, write_overlay_mp4

pytestmark = pytest.mark.usefixtures("one_thread")

BEDROOM_HW = (540, 960)
needs_encoder = pytest.mark.skipif(video_encoder() is None, reason="ffmpeg has no mp4 encoder")


# ---------------------------------------------------------------- SAM 2 on the bedroom frames


@pytest.fixture(scope="module")
def sam_video(tmp_path_factory) -> Sam2Video:
    """The tiny SAM 2 as a video predictor; object pointers cut to 2 frames so that 8 frames
    show the memory being dropped (memory_frames = max(1 x num_maskmem 2, 2) = 2)."""
    checkpoint, config = build_tiny_sam2_checkpoint(tmp_path_factory.mktemp("sam2"))
    return load_sam2_video(
        checkpoint, config=config, device="cpu", overrides=["model.max_obj_ptrs_in_encoder=2"]
    )


@pytest.fixture(scope="module")
def bedroom_run(sam_video):
    """The notebook prompts on frame 0 (click on obj 1, box on obj 4), a click for a new obj 2
    on frame 3, and one more click on obj 1 queued while frame 4 is being read (for frame 6).
    Records per frame what the state holds."""
    frames = open_video(data_path("bedroom"), cache=3)
    sam_video.start(frames)
    sam_video.add_points(0, 1, [[210, 350]], [1])
    sam_video.add_box(0, 4, [300, 0, 500, 400])
    sam_video.add_points(3, 2, [[400, 150]])
    results, held, kept = [], [], []
    for result in sam_video.track():
        results.append(result)
        state = sam_video.state
        held.append((state["images"].held, frames.held))
        kept.append({
            state["obj_idx_to_id"][k]: (sorted(out["cond_frame_outputs"]), sorted(out["non_cond_frame_outputs"]))
            for k, out in state["output_dict_per_obj"].items()
        })  # fmt: skip
        if result.frame_index == 4:
            sam_video.add_points(6, 1, [[250, 220]])
    return frames, results, held, kept


def test_load_sam2_video_builds_the_video_predictor_without_postprocessing(sam_video):
    model = sam_video.model
    assert type(model).__name__ == "SAM2VideoPredictor"
    assert model.image_size == 256 and not model.training and sam_video.device.type == "cpu"
    # sam2's apply_postprocessing overrides are not applied
    assert model.fill_hole_area == 0 and not model.binarize_mask_from_pts_for_mem_enc
    assert not model.sam_mask_decoder.dynamic_multimask_via_stability
    assert sam_video.memory_frames == 2


def test_track_yields_every_frame_in_order_with_each_prompted_object(bedroom_run):
    frames, results, _, _ = bedroom_run
    assert [r.frame_index for r in results] == list(range(8))
    assert [r.name for r in results] == [f"{i:05d}" for i in range(8)]
    for r in results:
        expected = {1, 4} if r.frame_index < 3 else {1, 2, 4}  # obj 2 exists from its frame on
        assert set(r.masks) == set(r.scores) == expected, r.frame_index
        for mask in r.masks.values():
            assert mask.shape == BEDROOM_HW == frames.size and mask.dtype == torch.bool
        assert all(0.0 <= s <= 1.0 for s in r.scores.values())
    assert {r.frame_index: r.prompted for r in results if r.prompted} == {
        0: (1, 4),
        3: (2,),
        6: (1,),
    }


def test_tracking_streams_with_bounded_memory(bedroom_run, sam_video):
    frames, _, held, kept = bedroom_run
    loader = sam_video.state["images"]
    # each frame decoded and converted once; at most 2 model inputs and 3 frames held at a time
    assert frames.decoded == 8 and loader.loads == 8
    assert loader.max_held <= 2 and all(inputs <= 2 and raw <= 3 for inputs, raw in held)
    window = sam_video.memory_frames
    for t, objects in enumerate(kept):
        for _, non_cond in objects.values():
            assert len(non_cond) <= window and all(t - window < f <= t for f in non_cond)
    # conditioning outputs: one per prompted frame, never dropped
    assert {obj: cond for obj, (cond, _) in kept[-1].items()} == {1: [0, 6], 4: [0], 2: [3]}


def test_prompts_are_checked_and_name_the_frame(sam_video, bedroom_run):
    frames = bedroom_run[0]
    with pytest.raises(TwoDError, match="already tracked"):
        sam_video.add_points(2, 1, [[10, 10]])  # the run tracked all 8 frames
    fresh = Sam2Video(sam_video.model, "tiny")
    with pytest.raises(TwoDError, match=r"start\(frames\)"):
        fresh.add_points(0, 1, [[10, 10]])
    fresh.start(frames)
    with pytest.raises(
        TwoDError, match=r"frame 0 \(00000\), object 1: click \(970, 10\) is outside the 960x540"
    ):
        fresh.add_points(0, 1, [[970, 10]])
    with pytest.raises(TwoDError, match="box .* outside"):
        fresh.add_box(1, 4, [1000, 0, 1200, 400])
    with pytest.raises(TwoDError, match=r"frame 8 is not in the video \(frames 0..7\)"):
        fresh.add_points(8, 1, [[10, 10]])
    with pytest.raises(TwoDError, match="mask is"):
        fresh.add_mask(0, 1, np.ones((10, 10), bool))
    with pytest.raises(TwoDError, match="empty"):
        fresh.add_mask(0, 1, np.zeros(BEDROOM_HW, bool))
    with pytest.raises(TwoDError, match="integers"):
        fresh.add_points(0, "child", [[10, 10]])  # type: ignore[arg-type]
    with pytest.raises(TwoDError, match="clicks, a box or a mask"):
        fresh.add(Prompt(0, 1))
    with pytest.raises(TwoDError, match=r"start\(frames\)"):
        next(Sam2Video(sam_video.model, "tiny").track())


def test_mask_prompt_and_frames_before_the_first_prompt(sam_video, tmp_path):
    """A mask prompt on frame 2 of a 3-frame clip: frames 0-1 come back empty and undecoded."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(3):
        Image.open(data_path("bedroom", f"0000{i}.jpg")).resize((320, 180)).save(
            folder / f"{i}.png"
        )
    frames = open_video(folder)
    video = Sam2Video(sam_video.model, "tiny")
    video.start(frames)
    mask = np.zeros((180, 320), bool)
    mask[40:120, 100:200] = True
    video.add_mask(2, 7, mask)
    results = list(video.track())
    assert [(r.frame_index, set(r.masks), r.prompted) for r in results] == [
        (0, set(), ()),
        (1, set(), ()),
        (2, {7}, (7,)),
    ]
    assert results[2].masks[7].shape == (180, 320) and frames.decoded == 1


# ---------------------------------------------------------------- the frame source


@pytest.fixture(scope="module")
def bedroom_frames() -> list[np.ndarray]:
    return list(open_video(data_path("bedroom")))


@needs_encoder
def test_mp4_round_trip_streams_and_seeks(tmp_path, bedroom_frames):
    path = write_overlay_mp4(tmp_path / "out" / "bedroom.mp4", iter(bedroom_frames), fps=24)
    assert [p.name for p in path.parent.iterdir()] == ["bedroom.mp4"]  # no temporary left
    video = open_video(path, cache=2)
    assert (len(video), video.size, video.fps) == (8, BEDROOM_HW, 24.0)
    assert video.names == [f"{i:05d}" for i in range(8)]
    read = list(video)
    assert video.decoded == 8 and video.held == 2
    for original, decoded in zip(bedroom_frames, read, strict=True):
        assert decoded.dtype == np.uint8 and decoded.shape == (*BEDROOM_HW, 3)
        assert np.abs(decoded.astype(np.int16) - original).mean() < 4  # H.264 at CRF 20
    assert np.array_equal(video[5], read[5]) and np.array_equal(video[1], read[1])  # back: restart
    assert np.array_equal(video[-1], read[7])
    with pytest.raises(IndexError):
        video[8]


@needs_encoder
def test_overlay_writer_pads_odd_sizes_and_refuses_mixed_sizes(tmp_path):
    odd = [np.full((45, 61, 3), 40 * i, np.uint8) for i in range(3)]
    video = open_video(write_overlay_mp4(tmp_path / "odd.mp4", odd, fps=10))
    assert (len(video), video.size) == (3, (46, 62))
    with pytest.raises(TwoDError, match=r"frame 1 is 30x20, frame 0 61x45"):
        write_overlay_mp4(tmp_path / "mixed.mp4", [odd[0], np.zeros((20, 30, 3), np.uint8)], 10)
    with pytest.raises(TwoDError, match="no frames"):
        write_overlay_mp4(tmp_path / "empty.mp4", [], 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]


@needs_encoder
def test_truncated_and_unreadable_videos_are_named(tmp_path, bedroom_frames):
    import imageio_ffmpeg

    small = [f[::4, ::4] for f in bedroom_frames]  # 240x135 -> padded to 240x136
    streamable = write_overlay_mp4(tmp_path / "fast.mp4", small, fps=24)  # index first
    data = streamable.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(TwoDError, match=r"cut\.mp4: truncated or corrupt video .*partial file"):
        open_video(cut)
    plain = tmp_path / "plain.mp4"  # ffmpeg's default layout: the index (moov) at the end
    writer = imageio_ffmpeg.write_frames(
        str(plain), (240, 136), fps=24, codec=video_encoder(), macro_block_size=2
    )
    writer.send(None)
    for frame in small:
        writer.send(np.ascontiguousarray(np.pad(frame, ((0, 1), (0, 0), (0, 0)))).tobytes())
    writer.close()
    assert len(open_video(plain)) == 8
    tail_cut = tmp_path / "tail.mp4"
    data = plain.read_bytes()
    tail_cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(TwoDError, match=r"tail\.mp4: not a readable video \(moov atom not found\)"):
        open_video(tail_cut)
    junk = tmp_path / "junk.mov"
    junk.write_bytes(b"not a video" * 50)
    with pytest.raises(TwoDError, match=r"junk\.mov: not a readable video"):
        open_video(junk)


def test_bad_frame_sources_are_named(tmp_path):
    with pytest.raises(TwoDError, match="no such video file or frame folder"):
        open_video(tmp_path / "missing.mp4")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(TwoDError, match=r"notes\.txt: not a video \(want \.mp4"):
        open_video(notes)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no frames here")
    with pytest.raises(TwoDError, match=r"empty: folder has no frames"):
        open_video(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name, size in [
        ("frame_1.png", (64, 48)),
        ("frame_2.png", (64, 48)),
        ("frame_10.png", (32, 48)),
    ]:
        Image.new("RGB", size).save(mixed / name)
    # names sort as numbers: frame_10 is the third frame, the first of another size
    with pytest.raises(TwoDError, match=r"frame_10\.png: frame is 32x48 but frame_1\.png is 64x48"):
        open_video(mixed)


def test_folder_frames_sort_by_number_and_keep_a_small_cache(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in (10, 2, 1):
        Image.new("RGB", (16, 8), (i, 0, 0)).save(folder / f"f{i}.png")
    video = open_video(folder, fps=12, cache=1)
    assert (video.names, video.size, video.fps) == (["f1", "f2", "f10"], (8, 16), 12.0)
    assert [int(frame[0, 0, 0]) for frame in video] == [1, 2, 10]
    assert video.held == 1 and video.decoded == 3
    assert not video[2].flags.writeable  # shared with the cache: copy before drawing on it


# ---------------------------------------------------------------- re-identification

H, W = 96, 128
CFG = ReidConfig(bank_every=1)


def background() -> np.ndarray:
    """A noisy blue gradient with green, yellow and orange boxes (colours near the object's red
    but not it)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    image = np.stack([60 + 40 * xx / W, 90 + 30 * yy / H, 150 + 0 * xx], -1)
    image += rng.normal(0, 6, image.shape)
    image[10:34, 90:118] = (60, 170, 70)
    image[60:86, 8:30] = (220, 200, 60)
    image[70:92, 100:124] = (230, 130, 40)
    return image


def scene(disc_at: tuple[int, int] | None, occluded: tuple[int, int] | None = None):
    """A frame and the visible mask of a red disc (radius 12) at `disc_at`, or hidden behind a
    grey box when `occluded` gives the hidden disc's centre."""
    image = background()
    yy, xx = np.mgrid[0:H, 0:W]
    visible = np.zeros((H, W), bool)
    centre = disc_at or occluded
    if centre is not None:
        disc = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= 144
        image[disc] = (210, 40, 40)
        visible = disc if disc_at else visible
    if occluded is not None:
        image[occluded[1] - 18 : occluded[1] + 18, occluded[0] - 20 : occluded[0] + 20] = 110
    return np.clip(image, 0, 255).astype(np.uint8), visible


def synthetic_video(folder: Path, kind: str):
    """(a) "hidden": the disc moves, hides behind an occluder on frames 4-6, reappears elsewhere
    on 7-9. (b) "leaves": it moves out through the right edge after frame 3, for good."""
    path = {0: (30, 30), 1: (36, 32), 2: (42, 34), 3: (48, 36)}
    if kind == "hidden":
        path |= {7: (70, 70), 8: (74, 68), 9: (78, 66)}
    else:
        path = {0: (60, 30), 1: (80, 32), 2: (100, 34), 3: (114, 36)}
    folder.mkdir()
    masks = []
    for t in range(10):
        occluded = (54, 38) if kind == "hidden" and t in (4, 5, 6) else None
        image, mask = scene(path.get(t), occluded)
        Image.fromarray(image).save(folder / f"{t:05d}.png")
        masks.append(mask)
    return open_video(folder), masks


class ScriptedTracker:
    """Stands in for Sam2Video (random SAM 2 weights track nothing): follows the object's true
    mask while it is visible, loses it when it is hidden or gone, and finds it again only from a
    click that lands on it. Records every prompt."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks
        self.prompts: list[Prompt] = []

    def start(self, frames) -> None:
        self.frames, self.pending, self.following = frames, {}, False

    def add(self, prompt: Prompt) -> None:
        self.prompts.append(prompt)
        self.pending[prompt.frame_index] = prompt

    def track(self):
        for t in range(len(self.frames)):
            prompt = self.pending.pop(t, None)
            if prompt is not None:
                x, y = np.asarray(prompt.points, dtype=float)[0]
                self.following = bool(self.masks[t][int(y), int(x)])
            self.following = self.following and bool(self.masks[t].any())
            mask = self.masks[t] if self.following else np.zeros((H, W), bool)
            score = 0.95 if self.following else 0.05
            prompted = () if prompt is None else (prompt.obj_id,)
            yield FrameResult(
                t, self.frames.names[t], {1: torch.from_numpy(mask)}, {1: score}, prompted
            )


@pytest.fixture(scope="module")
def colour():
    return load_extractor("colour", short_side=96)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    return synthetic_video(tmp_path_factory.mktemp("reid") / "hidden", "hidden")


@pytest.fixture(scope="module")
def leaves(tmp_path_factory):
    return synthetic_video(tmp_path_factory.mktemp("reid") / "leaves", "leaves")


def fed_bank(colour, frames, masks, count: int = 4) -> PrototypeBank:
    bank = PrototypeBank()
    for t in range(count):
        assert bank.observe(frame_features(colour, frames[t]), 1, torch.from_numpy(masks[t]), CFG)
    return bank


def test_search_finds_the_reappeared_object_and_not_the_background(colour, hidden, leaves):
    frames, masks = hidden
    bank = fed_bank(colour, frames, masks)
    threshold = bank.threshold(1, CFG)
    assert threshold is not None and threshold >= CFG.min_similarity
    for t in (4, 5, 6):  # behind the occluder: nothing to find
        match = bank.search(frame_features(colour, frames[t]), 1, CFG)
        assert not should_reprompt(match, threshold, None, CFG), (t, match.score)
    for t in (7, 8, 9):  # reappeared elsewhere: found, and the click lands on it
        match = bank.search(frame_features(colour, frames[t]), 1, CFG)
        x, y = match.point
        assert should_reprompt(match, threshold, None, CFG) and masks[t][int(y), int(x)], t
        assert match.box is not None and match.box[0] <= x <= match.box[2]
    left_frames, left_masks = leaves
    bank = fed_bank(colour, left_frames, left_masks)
    for t in range(4, 10):  # gone: the orange, yellow and green boxes are not it
        match = bank.search(frame_features(colour, left_frames[t]), 1, CFG)
        assert not should_reprompt(match, bank.threshold(1, CFG), None, CFG), (t, match.score)


def test_reid_loop_reprompts_a_hidden_object_where_it_reappears(colour, hidden):
    frames, masks = hidden
    tracker = ScriptedTracker(masks)
    start = Prompt(0, 1, points=[[30, 30]], labels=[1])
    results = list(track_with_reid(tracker, frames, colour, [start], CFG))
    assert [r.frame_index for r in results] == list(range(10))
    assert len(tracker.prompts) == 2
    reprompt = tracker.prompts[1]
    x, y = reprompt.points[0]
    assert reprompt.frame_index == 7 and masks[7][int(y), int(x)]
    assert results[7].prompted == (1,)
    assert [bool(r.masks[1].any()) for r in results] == [True] * 4 + [False] * 3 + [True] * 3


def test_reid_loop_lets_an_object_that_left_go(colour, leaves):
    frames, masks = leaves
    tracker = ScriptedTracker(masks)
    results = list(track_with_reid(tracker, frames, colour, [Prompt(0, 1, points=[[60, 30]])], CFG))
    assert len(results) == 10 and len(tracker.prompts) == 1  # only the user's prompt


def test_decision_rules():
    match = Match(0.9, (10.0, 10.0), None)
    assert should_reprompt(match, 0.8, None, CFG)
    assert not should_reprompt(match, None, None, CFG)  # uncalibrated: never
    assert not should_reprompt(match, 0.95, None, CFG)
    assert not should_reprompt(match, 0.8, CFG.cooldown - 1, CFG)
    assert should_reprompt(match, 0.8, CFG.cooldown, CFG)
    assert not should_reprompt(None, 0.8, None, CFG)
    mask = torch.zeros(8, 8, dtype=torch.bool)
    assert is_lost(mask, 0.99, CFG) and not is_confident(mask, 0.99, CFG)
    mask[:4, :4] = True
    assert is_confident(mask, 0.9, CFG) and not is_lost(mask, 0.9, CFG)
    assert is_lost(mask, 0.2, CFG) and not is_confident(mask, 0.6, CFG)


def test_bank_keeps_the_first_and_the_latest_prototypes(colour, hidden):
    frames, masks = hidden
    bank = PrototypeBank(max_prototypes=2)
    first = prototype(frame_features(colour, frames[0]), torch.from_numpy(masks[0]))
    for t in range(4):
        bank.observe(frame_features(colour, frames[t]), 1, torch.from_numpy(masks[t]), CFG)
    protos = bank.prototypes(1)
    assert protos.shape == (2, 2 * 19) and torch.allclose(protos[0], first)
    assert torch.allclose(protos.norm(dim=1), torch.ones(2))
    assert bank.reference(1) is not None and 1 in bank and bank.objects == [1]
    # a mask on the background is not the object: the bank refuses to learn from it
    wrong = torch.zeros(H, W, dtype=torch.bool)
    wrong[40:60, 60:80] = True
    assert not bank.observe(frame_features(colour, frames[0]), 1, wrong, CFG)
    with pytest.raises(TwoDError, match="object 9 has no prototypes yet"):
        bank.search(frame_features(colour, frames[0]), 9)


def test_reid_loop_drives_sam2_video(sam_video, colour, tmp_path):
    """The real tracker through the loop: a bank primed on a region of frame 0 and a config where
    SAM 2 always counts as lost make the loop re-prompt it on later frames, between yields."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for i in range(4):
        Image.open(data_path("bedroom", f"0000{i}.jpg")).resize((240, 135)).save(
            folder / f"{i}.png"
        )
    frames = open_video(folder)
    region = torch.zeros(135, 240, dtype=torch.bool)
    region[40:100, 40:90] = True
    bank = PrototypeBank()
    for _ in range(2):  # a prototype, then a calibration score
        bank.observe(frame_features(colour, frames[0]), 1, region, CFG)
    always_lost = ReidConfig(lost_score=1.01, confident_score=2.0, cooldown=2)
    video = Sam2Video(sam_video.model, "tiny")
    start = [Prompt(0, 1, points=[[65, 70]])]
    results = list(track_with_reid(video, frames, colour, start, always_lost, bank))
    assert [r.frame_index for r in results] == [0, 1, 2, 3]
    assert [r.prompted for r in results] == [(1,), (), (1,), ()]  # cooldown 2: frame 2 only
    assert all(r.masks[1].shape == (135, 240) for r in results)
