"""Video frames in, overlay videos out: a frame source that decodes on demand.

`open_video(path)` takes a video file (.mp4 .mov .avi .webm .mkv .m4v, decoded by the ffmpeg that
imageio-ffmpeg ships) or a folder of .jpg/.png frames (sorted by name, numbers compared as numbers)
and returns a `VideoFrames`: `len`, `frames[i]` -> uint8 (H, W, 3), `size` (H, W), `names`, `fps`,
iteration. Nothing is decoded up front; the last `cache` frames are kept (an LRU).

Cost of random access: a folder reads one image file per miss. A video file is decoded by one
ffmpeg process, forward only: reading frame i after frame j < i decodes the frames between; going
back past the cache restarts decoding from frame 0 (O(i)). Reading in order, as tracking does,
decodes each frame once. Opening a video file runs ffmpeg once over its packets without decoding
them (stream copy: ~0.1 s for 600 1080p frames) to count the frames and catch a truncated file.

Bad input is a `TwoDError` naming the file: a missing path, a file that is not a video, an
unreadable or truncated video, a folder without frames, frames of mixed sizes.
"""

from __future__ import annotations

import functools
import re
import subprocess
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .features import TwoDError
from .io import write_atomically

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_FPS = 30.0
"""The frame rate of a folder of frames unless `open_video(..., fps=)` says otherwise."""
# ffmpeg error lines that mean frames are missing (other decoder complaints are left to ffmpeg).
_TRUNCATED = ("partial file", "truncat", "end of file", "invalid data found")


class VideoFrames(ABC):
    """Frames of one video, decoded on access. `frames[i]` is uint8 (H, W, 3) RGB, read-only
    (the cache holds it: copy before drawing on it); negative indices count from the end. Build
    with `open_video`."""

    def __init__(
        self, path: Path, names: list[str], size: tuple[int, int], fps: float, cache: int
    ) -> None:
        self.path = path
        """The video file or frame folder."""
        self.names = names
        """Per frame: the file stem (folder) or `%05d` of the index (video file)."""
        self.size = size
        """(H, W) of every frame."""
        self.fps = fps
        self.cache = max(1, cache)
        """How many decoded frames are kept (least recently used goes first)."""
        self.decoded = 0
        """Frames decoded so far, cache hits not counted (what random access has cost)."""
        self._cached: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> np.ndarray:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"frame {index} of a {n}-frame video ({self.path})")
        index %= n
        frame = self._cached.get(index)
        if frame is None:
            frame = self._decode(index)
            frame.flags.writeable = False  # the cache's copy: callers must not draw on it
            self.decoded += 1
            self._cached[index] = frame
            while len(self._cached) > self.cache:
                self._cached.popitem(last=False)
        self._cached.move_to_end(index)
        return frame

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    @property
    def held(self) -> int:
        """Decoded frames held in memory now (at most `cache`)."""
        return len(self._cached)

    def close(self) -> None:
        """Drop the cache (and stop a video's decoder)."""
        self._cached.clear()

    def __enter__(self) -> VideoFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.size
        return f"VideoFrames({str(self.path)!r}, {len(self)} frames, {w}x{h}, {self.fps:g} fps)"

    @abstractmethod
    def _decode(self, index: int) -> np.ndarray:
        """Frame `index` as uint8 (H, W, 3): the one thing each source (folder, video) provides."""


class _FolderFrames(VideoFrames):
    def __init__(
        self, folder: Path, files: list[Path], size: tuple[int, int], fps: float, cache: int
    ):
        super().__init__(folder, [f.stem for f in files], size, fps, cache)
        self.files = files

    def _decode(self, index: int) -> np.ndarray:
        path = self.files[index]
        try:
            with Image.open(path) as im:
                frame = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise TwoDError(f"{path}: not a readable image ({err})") from None
        if frame.shape[:2] != self.size:
            raise TwoDError(
                f"{path}: frame is {_wxh(frame.shape[:2])}, the others {_wxh(self.size)}"
            )
        return frame


class _FileFrames(VideoFrames):
    """One ffmpeg decoder (imageio-ffmpeg's `read_frames`) read forward; restarted to go back."""

    def __init__(self, path: Path, count: int, size: tuple[int, int], fps: float, cache: int):
        super().__init__(path, [f"{i:05d}" for i in range(count)], size, fps, cache)
        self._reader: Iterator[bytes] | None = None
        self._position = 0  # index of the frame the reader yields next

    def _start(self) -> None:
        import imageio_ffmpeg

        self._stop_reader()
        # passthrough: each decoded frame once, none duplicated or dropped to hold a frame rate
        output = ["-map", "0:v:0", "-fps_mode", "passthrough"]
        reader = imageio_ffmpeg.read_frames(str(self.path), output_params=output)
        try:
            meta = next(reader)
        except (OSError, RuntimeError) as err:
            raise TwoDError(f"{self.path}: not a readable video ({_first_line(err)})") from None
        if tuple(meta["size"][::-1]) != self.size:
            given = _wxh(tuple(meta["size"][::-1]))
            raise TwoDError(f"{self.path}: decoder gives {given} frames, not {_wxh(self.size)}")
        self._reader, self._position = reader, 0

    def _decode(self, index: int) -> np.ndarray:
        if self._reader is None or index < self._position:
            self._start()
        assert self._reader is not None
        h, w = self.size
        while True:
            try:
                data = next(self._reader)
            except StopIteration:
                data = None
            except RuntimeError as err:  # ffmpeg died mid-stream
                raise TwoDError(
                    f"{self.path}: decoding failed at frame {self._position} ({_first_line(err)})"
                ) from None
            if data is None or len(data) != h * w * 3:
                self._stop_reader()
                raise TwoDError(
                    f"{self.path}: truncated or corrupt video: decoded {self._position} of "
                    f"{len(self)} frames"
                )
            self._position += 1
            if self._position > index:
                return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy()

    def _stop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()  # type: ignore[attr-defined]  # a generator: stops ffmpeg
            self._reader = None

    def close(self) -> None:
        super().close()
        self._stop_reader()


def _wxh(size: tuple[int, ...]) -> str:
    return f"{size[1]}x{size[0]}"


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _natural_key(path: Path) -> list:
    """`frame_2` before `frame_10`: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _open_folder(folder: Path, fps: float, cache: int) -> VideoFrames:
    files = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
        key=_natural_key,
    )
    if not files:
        raise TwoDError(f"{folder}: folder has no frames ({', '.join(FRAME_SUFFIXES)} files)")
    size: tuple[int, int] | None = None
    for path in files:  # headers only: PIL reads the size without decoding the pixels
        try:
            with Image.open(path) as im:
                hw = (im.height, im.width)
        except (UnidentifiedImageError, OSError) as err:
            raise TwoDError(f"{path}: not a readable image ({err})") from None
        if size is None:
            size = hw
        elif hw != size:
            raise TwoDError(
                f"{path}: frame is {_wxh(hw)} but {files[0].name} is {_wxh(size)}; "
                "all frames of a video must share one size"
            )
    assert size is not None
    return _FolderFrames(folder, files, size, fps, cache)


def _probe(path: Path) -> int:
    """Number of video packets (= frames) of `path`, by an ffmpeg stream copy (no decoding);
    a TwoDError for an unreadable or truncated file."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "level+error"]
    cmd += ["-stats", "-i", str(path), "-map", "0:v:0", "-c", "copy", "-f", "null", "-"]
    done = subprocess.run(cmd, capture_output=True, check=False)
    log = done.stderr.decode(errors="replace").replace("\r", "\n").splitlines()
    errors = [
        re.sub(r"^(\[[^\]]*\]\s*)+", "", line)
        for line in log
        if "[error]" in line or "[fatal]" in line
    ]
    if done.returncode != 0:
        reason = next((e for e in errors if "opening input" not in e.lower()), None)
        reason = reason or (errors[-1] if errors else f"ffmpeg exit code {done.returncode}")
        raise TwoDError(f"{path}: not a readable video ({reason})")
    missing = [e for e in errors if any(k in e.lower() for k in _TRUNCATED)]
    frames = [int(m) for line in log for m in re.findall(r"^frame=\s*(\d+)", line)]
    count = frames[-1] if frames else 0
    if missing:
        raise TwoDError(
            f"{path}: truncated or corrupt video ({missing[-1]}; {count} frames readable)"
        )
    if count == 0:
        raise TwoDError(f"{path}: no video frames in the file")
    return count


def _open_file(path: Path, cache: int) -> VideoFrames:
    import imageio_ffmpeg

    count = _probe(path)
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except (OSError, RuntimeError) as err:
        raise TwoDError(f"{path}: not a readable video ({_first_line(err)})") from None
    finally:
        reader.close()  # type: ignore[attr-defined]
    w, h = meta["size"]
    return _FileFrames(path, count, (h, w), float(meta.get("fps") or FOLDER_FPS), cache)


def open_video(path: str | Path, fps: float | None = None, cache: int = 4) -> VideoFrames:
    """Frames of a video file or of a folder of .jpg/.png frames, decoded on access, keeping the
    last `cache` decoded frames. `fps` sets a folder's frame rate (default `FOLDER_FPS`); a video
    file has its own."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _open_folder(path, fps or FOLDER_FPS, cache)
    if not path.exists():
        raise TwoDError(f"{path}: no such video file or frame folder")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise TwoDError(
            f"{path}: not a video (want {', '.join(VIDEO_SUFFIXES)} or a folder of "
            f"{', '.join(FRAME_SUFFIXES)} frames)"
        )
    return _open_file(path, cache)


@functools.cache
def video_encoder() -> str | None:
    """The codec `write_overlay_mp4` uses: libx264 (H.264) if this ffmpeg has it, else mpeg4
    (MPEG-4 part 2), else None."""
    import imageio_ffmpeg

    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-encoders"]
    listed = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    names = {line.split()[1] for line in listed.splitlines() if len(line.split()) > 1}
    return next((codec for codec in ("libx264", "mpeg4") if codec in names), None)


def write_overlay_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> Path:
    """Encode uint8 (H, W, 3) frames (any iterable: a generator is consumed as it yields, so a
    tracker's overlays stream to disk) as an H.264 mp4 (yuv420p, faststart), written to a temporary
    file and renamed into place. Odd sizes are padded by one row/column (yuv420p needs even
    sides). A TwoDError if no encoder exists, no frames come, or the frames change size."""
    import imageio_ffmpeg

    codec = video_encoder()
    if codec is None:
        raise TwoDError(
            f"{path}: this ffmpeg ({imageio_ffmpeg.get_ffmpeg_exe()}) has no libx264 or mpeg4 encoder"
        )
    if not fps > 0:
        raise TwoDError(f"{path}: fps must be positive, got {fps}")

    def write(tmp: Path) -> None:
        writer, size, pad_h, pad_w = None, None, 0, 0
        try:
            for k, frame in enumerate(frames):
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise TwoDError(
                        f"{path}: frame {k} is {frame.dtype} {frame.shape}, want uint8 (H, W, 3)"
                    )
                if size is None:
                    size = frame.shape[:2]
                    pad_h, pad_w = size[0] % 2, size[1] % 2
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (size[1] + pad_w, size[0] + pad_h),
                        fps=fps,  # type: ignore[arg-type]  # typed int, takes any number
                        codec=codec, quality=6, macro_block_size=2, ffmpeg_log_level="error",
                        output_params=["-movflags", "+faststart"],  # index first: streamable
                    )  # fmt: skip
                    writer.send(None)
                elif frame.shape[:2] != size:
                    raise TwoDError(
                        f"{path}: frame {k} is {_wxh(frame.shape[:2])}, frame 0 {_wxh(size)}"
                    )
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                assert writer is not None
                writer.send(np.ascontiguousarray(frame).tobytes())
            if writer is None:
                raise TwoDError(f"{path}: no frames to write")
        finally:
            if writer is not None:
                writer.close()

    return write_atomically(path, write)
