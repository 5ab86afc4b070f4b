"""Inference on audio of any length, rate and channel count.

Stitching rule: audio (resampled to 48 kHz, downmixed) is cut into 10-s windows with a hop of h output frames
(`model.inference_hop_frames`, default h = 16 = 5 s; any even h in [2, 32]); audio shorter than the windows is
zero padded at the end. Window j covers global frames [hj, hj+32). Each global frame is taken from the window
where it is most central: local frames [m, m+h) of every window, m = (32−h)/2 (h = 16: [8, 24)), plus local
[0, m) of the first window and [m+h, 32) of the last. h = 24 costs 1.33× instead of 2× the audio length with
8 frames (2.5 s) of context kept on each side instead of 8–24. The stitched grid has frame
k ↔ [k, k+1)·0.3125 s and is cut to ceil(samples / 15000) frames. A 10-s input is exactly one window, so the
result equals the plain 10-s forward.

Batching: the `*_batch` functions take a list of inputs (any lengths, rates, channels). All windows of all inputs
are cut as above, concatenated and run through the audio branch in chunks of `model.inference_batch_size`
(one copy per input into the chunk, no per-window Python), stitched back per input with one gather on the
frame grid; the text side runs once per call and the probabilities are one float32 matmul + sigmoid on the
device. The single-file functions are the batch functions called with one input. After the opt-in
`model.compile()` every chunk is padded to `inference_batch_size` windows (one compiled shape).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from model.config import FLAMConfig
from model.heads import frame_probability, frame_similarity, l2_normalize
from model.text_slots import normalize_text

if TYPE_CHECKING:
    from model.flam import FLAM


def pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM → float32 by its full scale, the rule libsndfile decodes PCM files with: signed n-bit ÷ 2^(n−1)
    (int16 ÷ 32768, int32 ÷ 2^31, int8 ÷ 128), unsigned n-bit (x − 2^(n−1)) ÷ 2^(n−1) (uint8: (x − 128) ÷ 128).
    Float arrays become float32 unchanged; any other dtype (bool, complex, strings) is a ValueError."""
    if np.issubdtype(x.dtype, np.floating):
        with np.errstate(over="ignore"):  # float64 beyond the float32 range: refused by the caller's check
            return x.astype(np.float32, copy=False)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"wave must be floating point in [-1, 1] or integer PCM, got dtype {x.dtype}")
    half = float(2 ** (8 * x.dtype.itemsize - 1))
    y = x.astype(np.float32)
    if np.issubdtype(x.dtype, np.unsignedinteger):
        y -= np.float32(half)
    y *= np.float32(1.0 / half)  # a power of two: exact
    return y


def prepare_waveform(wave: Any, sample_rate: int, target_sr: int = 48000, check_finite: bool = True) -> torch.Tensor:  # fmt: skip
    """1-D or [channels, samples] array/tensor at `sample_rate` → mono float32 tensor at `target_sr`.

    Float input is taken as is (full scale ±1); integer PCM of any width is converted by its full scale first
    (`pcm_to_float`), whatever the layout. A [samples, channels] array (more than 16 rows, at most 16 columns) is
    refused rather than guessed. `check_finite=False` leaves the NaN/Inf check to the caller (the CUDA batch
    path checks on the device)."""
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu()
        x = (wave.float() if wave.dtype in (torch.bfloat16, torch.float16) else wave).numpy()
    else:
        x = np.asarray(wave)
    if x.ndim == 2 and x.shape[0] > 16 and x.shape[1] <= 16:
        raise ValueError(
            f"wave of shape {x.shape} looks like samples × channels; pass channels × samples (wave.T)"
        )
    if x.ndim not in (1, 2):
        raise ValueError(f"wave must be 1-D or channels × samples, got shape {x.shape}")
    if x.size == 0:
        raise ValueError("wave is empty")
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    source = x
    x = pcm_to_float(x)
    if x.ndim == 2:
        x = x.mean(0)
    with np.errstate(over="ignore"):  # loud audio may overflow the dot; the element check below decides
        finite = not check_finite or np.isfinite(np.dot(x, x)) or np.isfinite(x).all()  # dot: fast path
    if not finite:
        if np.issubdtype(source.dtype, np.floating) and np.isfinite(source).all():
            raise ValueError(f"wave of dtype {source.dtype} has values beyond the float32 range "
                             f"(peak {np.abs(source).max():.3g}); audio is expected in [-1, 1]")  # fmt: skip
        raise ValueError("wave contains NaN or Inf")
    if sample_rate != target_sr:
        from synth.audio import resample  # the resampler the training data went through (soxr)

        x = resample(x, int(sample_rate), target_sr)
    return torch.from_numpy(np.ascontiguousarray(x))


def frame_hop_samples(cfg: FLAMConfig) -> int:
    return cfg.frontend.clip_samples // cfg.audio.n_frames  # 15000 at 48 kHz


def n_output_frames(n_samples: int, cfg: FLAMConfig) -> int:
    return max(1, math.ceil(n_samples / frame_hop_samples(cfg)))


def frame_times(n_frames: int, cfg: FLAMConfig) -> np.ndarray:
    """Start time (s) of each output frame."""
    return np.arange(n_frames) * (frame_hop_samples(cfg) / cfg.frontend.sample_rate)


def check_hop_frames(hop_frames: int, cfg: FLAMConfig) -> None:
    n = cfg.audio.n_frames
    if not (2 <= hop_frames <= n and (n - hop_frames) % 2 == 0):
        raise ValueError(f"hop_frames must be an even number in [2, {n}], got {hop_frames}")


def make_windows(x: torch.Tensor, cfg: FLAMConfig, hop_frames: int = 16) -> torch.Tensor:
    """Mono 48-kHz signal → [J, clip_samples] windows, hop = hop_frames output frames (zero padded at the end)."""
    check_hop_frames(hop_frames, cfg)
    win, hop = cfg.frontend.clip_samples, hop_frames * frame_hop_samples(cfg)
    n = x.shape[0]
    n_win = 1 if n <= win else 1 + math.ceil((n - win) / hop)
    total = (n_win - 1) * hop + win
    if total > n:
        x = torch.nn.functional.pad(x, (0, total - n))
    return x.unfold(0, win, hop)


def stitch_frames(feats: torch.Tensor, hop_frames: int | None = None) -> torch.Tensor:
    """[J, L, C] window frames (hop h, default L/2) → [(J−1)·h + L, C]: each frame from its most central window."""
    n_win, length, c = feats.shape
    h = length // 2 if hop_frames is None else hop_frames
    m = (length - h) // 2
    if n_win == 1:
        return feats[0]
    return torch.cat([feats[0, :m], feats[:, m : m + h].reshape(-1, c), feats[-1, m + h :]], dim=0)


def _autocast(model: FLAM) -> torch.autocast:
    dt = model.autocast_dtype
    return torch.autocast(model.device.type, dtype=dt or torch.bfloat16, enabled=dt is not None)


def prepare_waveforms(waves: Sequence[Any], sample_rate: int | Sequence[int], target_sr: int = 48000,
                      check_finite: bool = True) -> list[torch.Tensor]:  # fmt: skip
    """Each input → mono float32 at `target_sr`; errors name the failing input's index."""
    if isinstance(waves, np.ndarray | torch.Tensor) or not isinstance(waves, Sequence):
        raise ValueError("waves must be a list of 1-D or channels × samples arrays (one per file)")
    if isinstance(sample_rate, Sequence):
        if len(sample_rate) != len(waves):
            raise ValueError(f"got {len(sample_rate)} sample rates for {len(waves)} waves")
        rates = list(sample_rate)
    else:
        rates = [sample_rate] * len(waves)
    out = []
    for i, (w, sr) in enumerate(zip(waves, rates, strict=True)):
        try:
            out.append(prepare_waveform(w, sr, target_sr, check_finite))
        except ValueError as e:
            raise ValueError(f"waves[{i}]: {e}") from None
    return out


def _window_plan(signals: list[torch.Tensor], cfg: FLAMConfig, hop: int):  # noqa: ANN202
    """Window views per input, first-window offsets, frame counts and the stitch gather index (numpy int64)."""
    views = [make_windows(x, cfg, hop) for x in signals]
    n_win = np.array([v.shape[0] for v in views], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_win)])
    counts = np.array([n_output_frames(x.shape[0], cfg) for x in signals], dtype=np.int64)
    length = cfg.audio.n_frames
    m = (length - hop) // 2
    # output frame k of input i comes from window j = clip((k − m) // h, 0, J−1), local frame k − h·j
    owner = np.repeat(np.arange(len(signals)), counts)
    k = np.arange(int(counts.sum())) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    j = np.clip((k - m) // hop, 0, n_win[owner] - 1)
    index = (offsets[owner] + j) * length + (k - hop * j)
    return views, offsets, counts, index


def _fill(buf: torch.Tensor, views: list[torch.Tensor], offsets: np.ndarray, a: int, b: int) -> None:
    """Copy global windows [a, b) into buf[: b − a] — one copy per input, none per window."""
    i = int(np.searchsorted(offsets, a, side="right")) - 1
    while i < len(views) and offsets[i] < b:
        lo, hi = max(a, int(offsets[i])), min(b, int(offsets[i + 1]))
        buf[lo - a : hi - a].copy_(views[i][lo - offsets[i] : hi - offsets[i]])
        i += 1


def _window_features(model: FLAM, views: list[torch.Tensor], offsets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """All windows through the audio branch in chunks of `inference_batch_size` → [J, L, C] float32 on device,
    and on CUDA a [J] mask of windows holding NaN/Inf (checked on the device instead of on the host).

    With `model.compile()` every chunk is padded to `inference_batch_size` (one compiled shape; the padding
    outputs are dropped). On CUDA, chunks are staged in two pinned host buffers and copied on a side stream so
    the host fill and the transfer of chunk c+1 overlap the forward of chunk c.
    """
    total = int(offsets[-1])
    bs = max(1, int(model.inference_batch_size))
    audio = model.inference_audio_branch
    pad = audio is not model.audio_branch
    win = model.config.frontend.clip_samples
    dev = model.device
    cuda = dev.type == "cuda"
    chunks = [(a, min(a + bs, total)) for a in range(0, total, bs)]
    n_slots = min(2, len(chunks)) if cuda else 1  # double buffering only where copies run beside compute
    rows = bs if (pad or len(chunks) > 1) else total
    host = [torch.empty(rows, win, pin_memory=cuda) for _ in range(n_slots)]
    if not cuda:
        outs = []
        for a, b in chunks:
            _fill(host[0], views, offsets, a, b)
            if pad:
                host[0][b - a :].zero_()
            x = host[0] if pad else host[0][: b - a]
            with _autocast(model):
                outs.append(audio(x)[: b - a].float())
        return torch.cat(outs), None
    main, side = torch.cuda.current_stream(dev), torch.cuda.Stream(dev)
    devbuf = [torch.empty(rows, win, device=dev) for _ in range(n_slots)]
    side.wait_stream(main)  # the new device buffers may still be read by earlier work on main
    done: list[torch.cuda.Event | None] = [None] * n_slots
    outs, bad = [], []
    for c, (a, b) in enumerate(chunks):
        s = c % n_slots
        if done[s] is not None:
            done[s].synchronize()  # host[s] and devbuf[s] are free again
        _fill(host[s], views, offsets, a, b)
        with torch.cuda.stream(side):
            devbuf[s][: b - a].copy_(host[s][: b - a], non_blocking=True)
            if pad and b - a < rows:
                devbuf[s][b - a :].zero_()
        main.wait_stream(side)
        x = devbuf[s] if pad else devbuf[s][: b - a]
        bad.append(~torch.isfinite(x[: b - a]).all(1))
        with _autocast(model):
            outs.append(audio(x)[: b - a].float())
        done[s] = torch.cuda.Event()
        done[s].record(main)
    return torch.cat(outs), torch.cat(bad)


def _check_finite_windows(feats: torch.Tensor, bad_input: torch.Tensor | None, offsets: np.ndarray,
                          signals: list[torch.Tensor]) -> None:  # fmt: skip
    """ValueError naming the first input whose windows hold NaN/Inf (`bad_input`, the CUDA path's device check)
    or whose frame features are not finite — audio of absurd amplitude (RMS ≳ 1e18 overflows the float32 power
    spectrum) would otherwise come out as all-NaN probabilities. One host transfer of two [J] masks."""
    bad_out = ~torch.isfinite(feats).flatten(1).all(1)
    masks = (bad_out[None] if bad_input is None else torch.stack([bad_input, bad_out])).cpu().numpy()
    for row, is_input in zip(masks, (False,) if bad_input is None else (True, False), strict=True):
        if row.any():
            i = int(np.searchsorted(offsets, int(row.argmax()), side="right")) - 1
            if is_input:
                raise ValueError(f"waves[{i}]: wave contains NaN or Inf")
            peak = float(signals[i].abs().max())
            raise ValueError(
                f"waves[{i}]: the model's output is not finite for this audio (peak amplitude {peak:.3g}); "
                "audio is expected as float in [-1, 1] or integer PCM — rescale it"
            )


@torch.inference_mode()
def stitched_features(model: FLAM, signals: list[torch.Tensor]) -> tuple[torch.Tensor, np.ndarray]:
    """Mono 48-kHz signals → stitched pre-projection frames of all inputs [Σ n_frames, C] (float32, on the model
    device) and the frame count of each input."""
    cfg = model.config
    hop = model.inference_hop_frames
    check_hop_frames(hop, cfg)
    if not signals:
        return torch.empty(0, cfg.audio.out_dim, device=model.device), np.zeros(0, dtype=np.int64)
    views, offsets, counts, index = _window_plan(signals, cfg, hop)
    feats, bad = _window_features(model, views, offsets)
    _check_finite_windows(feats, bad, offsets, signals)
    flat = feats.reshape(-1, feats.shape[-1])
    return flat.index_select(0, torch.from_numpy(index).to(flat.device)), counts


def _signals(model: FLAM, waves: Sequence[Any], sample_rate: int | Sequence[int]) -> list[torch.Tensor]:
    sr = model.config.frontend.sample_rate
    return prepare_waveforms(waves, sample_rate, sr, check_finite=model.device.type != "cuda")


@torch.inference_mode()
def frame_features(model: FLAM, wave: Any, sample_rate: int) -> torch.Tensor:
    """Stitched pre-projection frame features [n_frames, C] (float32) for audio of any length."""
    return stitched_features(model, _signals(model, [wave], sample_rate))[0]


@torch.inference_mode()
def _project_frames(model: FLAM, feats: torch.Tensor) -> torch.Tensor:
    with _autocast(model):
        return l2_normalize(model.audio_projection(feats).float())


def _split(x: np.ndarray, counts: np.ndarray, axis: int) -> list[np.ndarray]:
    return np.split(x, np.cumsum(counts)[:-1], axis=axis) if counts.size else []


def frame_embeddings_batch(model: FLAM, waves: Sequence[Any], sample_rate: int | Sequence[int]) -> list[np.ndarray]:  # fmt: skip
    """[n_frames_i, D] L2-normalised frame embeddings per input."""
    signals = _signals(model, waves, sample_rate)
    feats, counts = stitched_features(model, signals)
    return _split(_project_frames(model, feats).cpu().numpy(), counts, 0)


def frame_embeddings(model: FLAM, wave: Any, sample_rate: int) -> np.ndarray:
    return frame_embeddings_batch(model, [wave], sample_rate)[0]


@torch.inference_mode()
def embed_audio_batch(model: FLAM, waves: Sequence[Any], sample_rate: int | Sequence[int]) -> np.ndarray:
    """[B, D]: normalize(proj(mean of the stitched pre-projection frames)) per input (OpenFLAM's global
    embedding on 10-s input)."""
    signals = _signals(model, waves, sample_rate)
    feats, counts = stitched_features(model, signals)
    owner = torch.from_numpy(np.repeat(np.arange(len(counts)), counts)).to(feats.device)
    sums = torch.zeros(len(counts), feats.shape[-1], device=feats.device).index_add_(0, owner, feats)
    means = sums / torch.from_numpy(counts).to(feats.device, torch.float32)[:, None]
    return _project_frames(model, means).cpu().numpy()


def embed_audio(model: FLAM, wave: Any, sample_rate: int) -> np.ndarray:
    """normalize(proj(mean of the stitched pre-projection frames)) — OpenFLAM's global embedding on 10-s input."""
    return embed_audio_batch(model, [wave], sample_rate)[0]


def _check_texts(texts: Any) -> list[str]:
    """A non-empty list of strings, none empty after `normalize_text` (the text rule `FLAM.tokenize` applies)."""
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise ValueError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts[{bad[0]}] is not a string: {texts[bad[0]]!r:.80}")
    empty = [i for i, t in enumerate(texts) if not normalize_text(t)]
    if empty:
        raise ValueError(
            f"texts[{empty[0]}] = {texts[empty[0]]!r:.80} is empty after text normalisation "
            "(lower case, whitespace and edge punctuation stripped)"
        )
    return list(texts)


@torch.inference_mode()
def _text(model: FLAM, texts: list[str]):  # noqa: ANN202
    """Text embeddings, α and β. Texts go through `FLAM.tokenize`, which applies `normalize_text` (the training
    rule: NFKC, lower case — as OpenFLAM's lower-case training text —, whitespace collapsed, edge punctuation
    stripped), so "Dog Barking!" and "dog barking" give the same result."""
    enc = model.tokenize(_check_texts(texts))
    with _autocast(model):
        t = model.encode_text(enc["input_ids"], enc["attention_mask"])
    return t.embeds.float(), t.alpha.float(), t.beta.float()


def embed_text(model: FLAM, texts: list[str]) -> np.ndarray:
    return _text(model, texts)[0].cpu().numpy()


def median_filter_frames(probs: np.ndarray, size: int) -> np.ndarray:
    """Median over `size` consecutive frames along the last axis (edges replicated); size ≤ 1 is a no-op."""
    if size <= 1:
        return probs
    if size % 2 == 0:
        raise ValueError(f"median filter size must be odd, got {size}")
    h = size // 2
    padded = np.pad(probs, [(0, 0)] * (probs.ndim - 1) + [(h, h)], mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, size, axis=-1), axis=-1)


@torch.inference_mode()
def frame_probabilities_batch(model: FLAM, waves: Sequence[Any], sample_rate: int | Sequence[int], texts: list[str],
                              method: str = "approximate", median_filter: int = 3) -> list[np.ndarray]:  # fmt: skip
    """[n_texts, n_frames_i] frame probabilities (Eq. 8) per input: one text pass, all windows batched, one
    similarity matmul in float32 on the device, one transfer back."""
    if method not in ("approximate", "unbiased"):
        raise ValueError(f"method must be 'approximate' or 'unbiased', got {method!r}")
    if median_filter > 1 and median_filter % 2 == 0:
        raise ValueError(f"median filter size must be odd, got {median_filter}")
    texts = _check_texts(texts)
    signals = _signals(model, waves, sample_rate)
    if not signals:
        return []
    emb, alpha, beta = _text(model, texts)
    feats, counts = stitched_features(model, signals)
    frames = _project_frames(model, feats)
    probs = frame_probability(frame_similarity(frames, emb), alpha, beta, method).cpu().numpy()
    return [median_filter_frames(p, median_filter) for p in _split(probs, counts, 1)]


def frame_probabilities(model: FLAM, wave: Any, sample_rate: int, texts: list[str], method: str = "approximate",
                        median_filter: int = 3) -> np.ndarray:  # fmt: skip
    """[n_texts, n_frames] frame probabilities (Eq. 8), optional median filter."""
    return frame_probabilities_batch(model, [wave], sample_rate, texts, method, median_filter)[0]


def segments_from_probabilities(probs: np.ndarray, threshold: float, hop_s: float,
                                duration_s: float | None = None) -> list[list[tuple[float, float]]]:  # fmt: skip
    """Runs of frames with p ≥ threshold → [(start_s, end_s), …] per text; frame k ↔ [k, k+1)·hop_s."""
    from synth.relabel import runs  # the run finder the training labels were made with

    out = []
    for row in np.atleast_2d(probs) >= threshold:
        segs = []
        for a, b in runs(row):
            end = b * hop_s if duration_s is None else min(b * hop_s, duration_s)
            segs.append((float(a * hop_s), float(end)))
        out.append(segs)
    return out


def detect(model: FLAM, wave: Any, sample_rate: int, texts: list[str], threshold: float = 0.5,
           method: str = "approximate", median_filter: int = 3) -> list[list[tuple[float, float]]]:  # fmt: skip
    probs = frame_probabilities(model, wave, sample_rate, texts, method, median_filter)
    n = np.asarray(wave).shape[-1] if not isinstance(wave, torch.Tensor) else wave.shape[-1]
    hop_s = frame_hop_samples(model.config) / model.config.frontend.sample_rate
    return segments_from_probabilities(probs, threshold, hop_s, n / sample_rate)


def text_embeddings(model: FLAM, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeddings [K, D], α [K], β [K]) as float32 on the model device — the text side of
    `frame_probabilities_batch` (same checks, `normalize_text`, autocast), for scoring stored frame embeddings
    (`model.search`)."""
    return _text(model, texts)
