"""Ring / bidirectional ring / all-gather losses in real gloo processes vs the single-process loss.

One spawn of 5 processes runs world sizes 1–5 (sub-groups of the last W processes; W = 5 through the
default group), every case, impl and dtype. Tolerances: float64 atol 1e-10 (rtol 0),
float32 atol 1e-5 (rtol 1e-5), on values and on every input gradient. Values must be bit-identical
across ranks.
"""

import datetime
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model.loss import clip_loss, sed_and_prior_loss
from model.ring import Comm, all_gather_with_grad, ring_exchange

VARIANTS = [("ring", True), ("bidir", True), ("gather", False), ("ring", False)]
CASES = ["mixed", "all_empty", "no_clips_on_rank_1"]
PRIOR_WEIGHT = 0.37  # backward of l_sed + 0.37·l_prior: separates the two via the β gradient
WORLD_SIZES = [1, 2, 3, 4, 5]
TOL = {torch.float64: dict(rtol=0.0, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def make_case(name, world, dtype):
    """Per-rank inputs (list of 8-tuples): uneven B and K, duplicates within and across ranks, an
    all-masked rank, event ids without a slot, repeated ids inside a clip."""
    g = torch.Generator().manual_seed(1000 * world + CASES.index(name))
    n_frames, dim, n_events = 4, 3, 3
    ranks = []
    for r in range(world):
        n_clips = 0 if (name == "no_clips_on_rank_1" and r == 1) else 1 + (r % 3)
        n_slots = 2 + (r * 2) % 5
        frames = torch.nn.functional.normalize(torch.randn(n_clips, n_frames, dim, generator=g), dim=-1)
        texts = torch.nn.functional.normalize(torch.randn(n_slots, dim, generator=g), dim=-1)
        alpha = torch.rand(n_slots, generator=g) * 8 + 0.5
        beta = torch.randn(n_slots, generator=g) * 2
        text_ids = torch.randint(0, 6, (n_slots,), generator=g) + 10**12
        text_mask = torch.rand(n_slots, generator=g) < 0.75
        if name == "all_empty" or r == world - 1 and world > 2:
            text_mask[:] = False  # a rank whose masks are all empty
        event_ids = torch.randint(0, 7, (n_clips, n_events), generator=g) + 10**12
        event_ids[torch.rand(n_clips, n_events, generator=g) < 0.25] = -1
        event_frames = torch.rand(n_clips, n_events, n_frames, generator=g) < 0.5
        floats = [t.to(dtype) for t in (frames, texts, alpha, beta)]
        ranks.append((*floats, text_ids, text_mask, event_ids, event_frames))
    return ranks


def concat(ranks):
    return tuple(torch.cat(parts) for parts in zip(*ranks, strict=True))


def run_sed(inputs, impl, recompute, group=None):
    leaves = [t.clone().requires_grad_() for t in inputs[:4]]
    l_sed, l_prior = sed_and_prior_loss(*leaves, *inputs[4:], impl=impl, group=group, recompute=recompute)
    (l_sed + PRIOR_WEIGHT * l_prior).backward()
    return {"sed": l_sed.detach(), "prior": l_prior.detach(), "grads": [t.grad for t in leaves]}


def clip_case(world, dtype):
    g = torch.Generator().manual_seed(77 + world)
    sizes = [1 + (r * 2) % 3 for r in range(world)]
    audio = [torch.nn.functional.normalize(torch.randn(n, 5, generator=g), dim=-1).to(dtype) for n in sizes]
    text = [torch.nn.functional.normalize(torch.randn(n, 5, generator=g), dim=-1).to(dtype) for n in sizes]
    return audio, text


def run_clip(audio, text, dtype, group=None):
    a, t = audio.clone().requires_grad_(), text.clone().requires_grad_()
    scale = torch.tensor(2.5, dtype=dtype, requires_grad=True)
    loss = clip_loss(a, t, scale, group=group)
    loss.backward()
    return {"loss": loss.detach(), "grads": [a.grad, t.grad], "scale_grad": scale.grad}


def _run_all(world, rank, group, results):
    comm = Comm.of(group)
    assert (comm.rank, comm.world_size) == (rank, world)
    # primitives: ring step both ways and gather, with gradients routed back to the owner
    x = torch.full((2,), float(rank), requires_grad=True)
    from_prev, from_next = ring_exchange(comm, x * 1, x * 10)  # W = 2: both directions, one peer
    gathered = all_gather_with_grad(comm, x * 1)
    loss = (from_prev * (rank + 1)).sum() + gathered.sum() + from_next.sum()
    loss.backward()
    results["prim"] = {"from_prev": from_prev.detach(), "from_next": from_next.detach(), "grad": x.grad}
    # a bad input on one rank raises a ValueError on every rank (no rank is left hanging in a collective)
    bad = list(make_case("mixed", world, torch.float64)[rank])
    if rank == world - 1:
        bad[6] = bad[6].int()
    try:
        sed_and_prior_loss(*bad, group=group)
        results["error"] = None
    except ValueError as e:
        results["error"] = str(e)
    for dtype in (torch.float64, torch.float32):
        for name in CASES:
            if name == "no_clips_on_rank_1" and world < 2:
                continue
            inputs = make_case(name, world, dtype)[rank]
            for impl, recompute in VARIANTS:
                results[(name, str(dtype), impl, recompute)] = run_sed(inputs, impl, recompute, group)
        audio, text = clip_case(world, dtype)
        results[("clip", str(dtype))] = run_clip(audio[rank], text[rank], dtype, group)


def _worker(rank, n_procs, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=n_procs,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    results = {}
    for world in WORLD_SIZES:
        # world size W runs on the LAST W processes (group rank != global rank); the full size uses the
        # default group through group=None
        members = list(range(n_procs - world, n_procs))
        group = dist.new_group(members) if world < n_procs else None
        if rank in members:
            results[world] = {}
            _run_all(world, rank - members[0], group, results[world])
        dist.barrier()

    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def assert_close(actual, expected, dtype, what):
    torch.testing.assert_close(actual, expected, **TOL[dtype], msg=lambda m: f"{what}: {m}")


def test_distributed_losses_equal_single_process(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    n_procs = max(WORLD_SIZES)
    # fork: the children reuse this process's imports (a fresh torch import costs seconds per process here)
    args = (n_procs, str(tmp_path / "pg_init"), str(tmp_path))
    mp.start_processes(_worker, args=args, nprocs=n_procs, join=True, start_method="fork")
    saved = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(n_procs)]
    for world in WORLD_SIZES:
        check_world(world, [saved[n_procs - world + r][world] for r in range(world)])


def check_world(world, per_rank):
    for r, res in enumerate(per_rank):  # primitives
        assert res["prim"]["from_prev"].tolist() == [float((r - 1) % world)] * 2
        assert res["prim"]["from_next"].tolist() == [10.0 * ((r + 1) % world)] * 2
        # d/dx: rank r+1 scales what it got from r by (r+2); gather: every rank's sum; from_next: rank r−1 × 10
        expected = ((r + 1) % world + 1) + world + 10
        assert res["prim"]["grad"].tolist() == [float(expected)] * 2

    for r, res in enumerate(per_rank):
        expected = "rank" if r == world - 1 else f"invalid inputs on rank(s) [{world - 1}]"
        assert res["error"] is not None and expected in res["error"], res["error"]

    for dtype in (torch.float64, torch.float32):
        for name in CASES:
            if name == "no_clips_on_rank_1" and world < 2:
                continue
            ranks = make_case(name, world, dtype)
            if name == "mixed" and world > 1:  # the case really holds what it claims
                valid = [set(p[4][p[5]].tolist()) for p in ranks]
                assert any(valid[i] & valid[j] for i in range(world) for j in range(i)), "no cross-rank dup"
                assert len(set(torch.cat([p[4] for p in ranks]).tolist())) < sum(len(p[4]) for p in ranks)
                assert world < 3 or not ranks[-1][5].any()
            ref = run_sed(concat(ranks), "ring", False)
            sizes = [[len(part[i]) for part in ranks] for i in range(4)]
            ref_grads = [torch.split(g, s) for g, s in zip(ref["grads"], sizes, strict=True)]
            for impl, recompute in VARIANTS:
                key = (name, str(dtype), impl, recompute)
                for r, res in enumerate(per_rank):
                    got = res[key]
                    assert torch.equal(got["sed"], per_rank[0][key]["sed"]), f"{key}: rank values differ"
                    assert torch.equal(got["prior"], per_rank[0][key]["prior"]), f"{key}: rank values differ"
                    assert_close(got["sed"], ref["sed"], dtype, f"{key} l_sed")
                    assert_close(got["prior"], ref["prior"], dtype, f"{key} l_prior")
                    for i, what in enumerate(("frames", "texts", "alpha", "beta")):
                        assert_close(got["grads"][i], ref_grads[i][r], dtype, f"{key} rank {r} d/d{what}")
            if name == "all_empty":
                assert ref["sed"] == 0 and ref["prior"] == 0
                assert all(torch.count_nonzero(g) == 0 for g in ref["grads"])
            else:
                assert ref["sed"] > 0 and ref["prior"] > 0 and torch.count_nonzero(ref["grads"][3]) > 0

        audio, text = clip_case(world, dtype)
        ref = run_clip(torch.cat(audio), torch.cat(text), dtype)
        a_grads = torch.split(ref["grads"][0], [len(a) for a in audio])
        t_grads = torch.split(ref["grads"][1], [len(t) for t in text])
        for r, res in enumerate(per_rank):
            got = res[("clip", str(dtype))]
            assert_close(got["loss"], ref["loss"], dtype, f"clip {dtype} loss")
            assert_close(got["grads"][0], a_grads[r], dtype, f"clip {dtype} rank {r} d/daudio")
            assert_close(got["grads"][1], t_grads[r], dtype, f"clip {dtype} rank {r} d/dtext")
        scale_grad = sum(res[("clip", str(dtype))]["scale_grad"] for res in per_rank)  # replicated parameter
        assert_close(scale_grad, ref["scale_grad"], dtype, f"clip {dtype} logit scale grad (sum over ranks)")
