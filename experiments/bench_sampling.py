"""Cost of DS-LS sampling on the default CIFAR-10 networks, as ratios measured within one run.

    python experiments/bench_sampling.py [--device cpu|cuda] [--batch 256] [--compile] [--ckpt <phase-2 ckpt>]
                                         [--json out.json]

Builds the phase-2 model from configs/cifar10/{reconstruction,adversarial}.yaml (random weights unless --ckpt), the
search settings from search.yaml and the pixel-space U-Net from pixel_ncsn.yaml, then times: prior + decode, the
DS-LS search (annealed Langevin, 10 levels × 10 steps + denoise) + decode, every registered sampler at its defaults,
and pixel-space annealed Langevin with the U-Net at the same step count. Headline: search overhead =
wall(search + decode) / wall(prior + decode), and pixel/latent = pixel wall per sample / DS-LS wall per sample.
"""
from __future__ import annotations

import dsls  # noqa: F401  first: sets OMP_WAIT_POLICY before torch loads (dsls/__init__.py)

import argparse

import torch

from dsls.benchmarking import (PeakMemory, count_macs, env_lines, fmt, init_args, markdown_table, memory_method,
                               pick_device, si, time_fn, write_json)
from dsls.phases.adversarial import AdversarialModule
from dsls.phases.pixel_ncsn import PixelNCSNModule
from dsls.phases.search import load_sampling_model
from dsls.samplers import SAMPLERS, PerSampleRNG, make_sampler


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    p.add_argument("--config-dir", default="configs/cifar10")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--pixel-batch", type=int, default=None, help="default 256 on cuda, 16 on cpu")
    p.add_argument("--pixel-full", action="store_true", help="on cpu too, time all 10×10+1 pixel steps")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile D's forward and the decoder")
    p.add_argument("--ckpt", default=None, help="a phase-2 checkpoint (trained weights); default: random weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    dev = pick_device(args.device)
    torch.manual_seed(args.seed)
    B, reps = args.batch, args.repeats
    pb = args.pixel_batch or (256 if dev.type == "cuda" else 16)

    # -- networks ------------------------------------------------------------------------------------------------
    rec, adv = init_args(args.config_dir, "reconstruction"), init_args(args.config_dir, "adversarial")
    search, pix = init_args(args.config_dir, "search"), init_args(args.config_dir, "pixel_ncsn")
    if args.ckpt:
        model, weights = load_sampling_model(args.ckpt), f"trained ({args.ckpt})"
        assert model.phase == "adversarial", "--ckpt must be a phase-2 (adversarial) checkpoint"
    else:
        adv["sigma_max"] = adv.get("sigma_max") or 10.0
        model = AdversarialModule(autoencoder={**rec, "dataset_name": "cifar10"}, **adv)
        weights = "random (timing only: samples are meaningless)"
    model = model.eval().requires_grad_(False).to(dev)
    pix["sigma_max"] = 50.0
    pixel = PixelNCSNModule(**pix).eval().requires_grad_(False).to(dev)
    n_pix = sum(q.numel() for q in pixel.score_net.parameters())
    assert n_pix >= 3.5e6, f"pixel U-Net has {n_pix} parameters, expected >= 3.5 M"
    d = model.autoencoder.latent_dim
    ladder10 = model.ladder.with_overrides(num_levels=10)
    lang = make_sampler("langevin", (search.get("samplers") or {}).get("langevin")).settings()  # search.yaml's
    skw, T = {k: lang[k] for k in ("eps0", "denoise", "init")}, lang["steps_per_level"]
    g = torch.Generator(dev).manual_seed(args.seed)
    score, pixel_score = model.score_fn(), pixel.score_fn()

    def run(score_fn, name, n0, ladder, **settings):
        """One search as the search phase runs it: per-sample noise streams (drawn on the CPU, as there)."""
        rng = PerSampleRNG.for_indices(args.seed, range(len(n0)), name, dev)
        return make_sampler(name, settings).sample(score_fn, n0, ladder, rng)

    # -- MACs per sample, counted once at a small batch (before any compile) ------------------------------------
    mb = 4
    zs, ss = torch.randn(mb, d, device=dev), torch.full((mb,), 1.0, device=dev)
    with torch.no_grad():
        macs_dec = count_macs(lambda: model.decode(zs)) / mb
        macs_d = count_macs(lambda: model.discriminator(zs, ss)) / mb
    macs_score = count_macs(lambda: score(zs, 1.0)) / mb

    def sampler_decode(name, z0, ladder, **kw):
        res = run(score, name, z0, ladder, **kw)
        with torch.no_grad():
            model.decode(res.z)
        return res

    macs_of = lambda *a, **kw: count_macs(lambda: sampler_decode(*a, **kw)) / mb  # noqa: E731
    xs = torch.randn(1, *pixel.latent_shape, device=dev)
    macs_unet = count_macs(lambda: pixel_score(xs, 1.0))

    if args.compile:
        model.discriminator.compile()
        model.autoencoder.decoder.compile()

    # -- wall time and peak memory --------------------------------------------------------------------------------
    rows = []

    def measure(label, fn, nfe, macs, batch, warmup=1, scale=1.0, note=""):
        print(f"  timing {label} ...", flush=True)
        wall = time_fn(fn, dev, warmup=warmup, repeats=reps) * scale
        with PeakMemory(dev) as mem:
            fn()
        rows.append(dict(label=label, batch=batch, wall_batch_s=wall, wall_sample_ms=1e3 * wall / batch, nfe=nfe,
                         macs_per_sample=macs, peak_mb=mem.mb, note=note))
        return rows[-1]

    n0 = torch.randn(B, d, device=dev, generator=g)

    def prior_decode():
        with torch.no_grad():
            return model.decode(torch.randn(B, d, device=dev))

    prior = measure("prior + decode", prior_decode, 0, macs_dec, B)
    res = sampler_decode("langevin", n0, ladder10, steps_per_level=T, **skw)
    assert res.z.grad_fn is None and not res.z.requires_grad, "the search returned a tensor that holds a graph"
    dsls = measure(f"DS-LS langevin {ladder10.num_levels}x{T} (search.yaml eps0={skw['eps0']:g}) + decode",
                   lambda: sampler_decode("langevin", n0, ladder10, steps_per_level=T, **skw), res.nfe,
                   macs_of("langevin", n0[:mb], ladder10, steps_per_level=T, **skw), B)
    search_only = measure(f"DS-LS langevin {ladder10.num_levels}x{T}, search alone (no decode)",
                          lambda: run(score, "langevin", n0, ladder10, steps_per_level=T, **skw),
                          res.nfe, dsls["macs_per_sample"] - macs_dec, B)
    one = model.ladder.with_overrides(num_levels=1)
    small = measure("DS-LS langevin 1x1 + decode (memory check)",
                    lambda: sampler_decode("langevin", n0, one, steps_per_level=1, **skw),
                    1 + int(skw["denoise"]), macs_of("langevin", n0[:mb], one, steps_per_level=1, **skw), B)
    for name in SAMPLERS:  # every registered sampler at its own defaults
        nfe = sampler_decode(name, n0[:mb], model.ladder).nfe
        measure(f"sampler `{name}` (defaults, {model.ladder}) + decode",
                lambda name=name: sampler_decode(name, n0, model.ladder), nfe, macs_of(name, n0[:mb], model.ladder), B)

    # pixel space: the same 10 × T steps + denoise with the U-Net, no decode
    pl = pixel.ladder.with_overrides(num_levels=10)
    full_nfe = pl.num_levels * T + int(skw["denoise"])
    x0 = torch.randn(pb, *pixel.latent_shape, device=dev, generator=g)
    if dev.type == "cuda" or args.pixel_full:
        px = measure(f"pixel langevin {pl.num_levels}x{T} (U-Net {n_pix / 1e6:.2f} M params)",
                     lambda: run(pixel_score, "langevin", x0, pl, steps_per_level=T, **skw),
                     full_nfe, full_nfe * macs_unet, pb)
    else:
        short = pixel.ladder.with_overrides(num_levels=1)
        px = measure(f"pixel langevin {pl.num_levels}x{T} (U-Net {n_pix / 1e6:.2f} M params) *extrapolated*",
                     lambda: run(pixel_score, "langevin", x0, short, steps_per_level=3, **{**skw, "denoise": False}),
                     full_nfe, full_nfe * macs_unet, pb, scale=full_nfe / 3,
                     note=f"timed 1 level x 3 steps at batch {pb} after a warm-up, scaled by {full_nfe}/3 NFE; "
                          "peak memory is that of the 3-step run")

    # -- report ---------------------------------------------------------------------------------------------------
    base = prior["wall_sample_ms"]
    overhead = dsls["wall_sample_ms"] / base
    pix_ratio = px["wall_sample_ms"] / dsls["wall_sample_ms"]
    pix_ratio_search = px["wall_sample_ms"] / search_only["wall_sample_ms"]
    head = env_lines(dev) + [
        f"batch: {B} (pixel U-Net: {pb}); repeats: median of {reps} after 1 warm-up", f"weights: {weights}",
        f"torch.compile (D forward + decoder): {'yes' if args.compile else 'no'}",
        f"D: width {model.hparams.d_hidden}, depth {model.hparams.d_depth}; latent dim {d}; "
        f"decoder: {rec.get('arch')} hidden {rec.get('hidden')}",
        f"MACs per sample (FlopCounterMode FLOPs/2, matmul+conv only): decode {si(macs_dec)}, D forward {si(macs_d)}, "
        f"score eval (fwd+bwd) {si(macs_score)}, DS-LS search {si(dsls['macs_per_sample'] - macs_dec)} "
        f"({dsls['nfe']} score evals); pixel U-Net forward {si(macs_unet)}",
        f"pixel U-Net parameters: {n_pix:,}", f"peak memory: {memory_method(dev)}"]
    table = markdown_table(
        ["run", "wall / batch (s)", "wall / sample (ms)", "ratio to prior+decode", "NFE / sample", "MACs / sample",
         "peak mem (MB)"],
        [[r["label"], fmt(r["wall_batch_s"], ".4g"), fmt(r["wall_sample_ms"], ".4g"),
          fmt(r["wall_sample_ms"] / base, ".3g"), r["nfe"], si(r["macs_per_sample"]), fmt(r["peak_mb"], ".1f")]
         for r in rows])
    print("\n" + "\n".join(head) + "\n\n" + table + "\n")
    if px["note"]:
        print(f"note: pixel row {px['note']}.")
    print(f"graph check: search output holds no autograd graph; peak memory 10x{T} = {fmt(dsls['peak_mb'], '.1f')} MB "
          f"vs 1x1 = {fmt(small['peak_mb'], '.1f')} MB")
    print(f"search overhead (langevin {ladder10.num_levels}x{T}) = {overhead:.2f}")
    print(f"  MAC ratio (search+decode)/decode = {dsls['macs_per_sample'] / macs_dec:.2f}")
    extrapolated = " (pixel wall extrapolated)" if px["note"] else ""
    print(f"pixel/latent at equal steps = {pix_ratio:.0f} vs DS-LS search + decode{extrapolated}")
    print(f"pixel/latent at equal steps = {pix_ratio_search:.0f} vs the DS-LS search alone (both without decode)")
    out = dict(env=head, rows=rows, search_overhead=overhead, pixel_over_latent=pix_ratio,
               pixel_over_latent_search=pix_ratio_search, macs=dict(
        decode=macs_dec, d_forward=macs_d, score_eval=macs_score, unet_forward=macs_unet), unet_params=n_pix,
        compile=args.compile, weights=weights, device=str(dev))
    write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
