"""The figures of `polarref analyze`, one function per PNG (matplotlib, Agg backend).

Each function takes the numbers `analysis.report` computed and a path; none
computes a metric of its own (they only pick, sort and bin what they draw).
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

import polarref
from polarref.golden import split_pairs, to_polar

from . import baselines, metrics

COLORS = {"polar": "#1f77b4", "per_channel": "#ff7f0e", "per_token": "#2ca02c"}
NAMES = {"polar": "PolarQuant", "per_channel": "int per-channel (KIVI-style)", "per_token": "int per-token"}
STYLES = ("-", "--", ":", "-.")
DPI = 110


def _save(fig, path):
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _plain_log(ax, which="y"):
    """Label a log axis 0.02, 0.05, 0.1 ... instead of 2 x 10^-2: easier to read off."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for name in which:
        axis = ax.xaxis if name == "x" else ax.yaxis
        lo, hi = (ax.get_xlim() if name == "x" else ax.get_ylim())
        decades = np.log10(hi / lo) if lo > 0 else 99
        axis.set_major_locator(LogLocator(base=10))
        axis.set_major_formatter(plain)
        axis.set_minor_locator(LogLocator(base=10, subs=(2, 5) if decades < 3 else (), numticks=50))
        axis.set_minor_formatter(plain if decades < 3 else NullFormatter())


def _diagonal_configs(matched, most=3):
    """Up to `most` configurations to draw as lines: r=t ones first (by bits), then the rest."""
    names = sorted(matched, key=lambda n: (matched[n][0].bits[0] != matched[n][0].bits[1], -matched[n][0].bpe))
    return names[:most]


def _reference_config(matched):
    """The configuration the single-config panels use: r4t4 if asked for, else the one with most bits."""
    if "r4t4" in matched:
        return "r4t4"
    return max(matched, key=lambda n: matched[n][0].bpe)


def _quantiles(values, n=400):
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    return np.quantile(values, np.linspace(0, 1, n)), np.linspace(0, 1, n)


# --------------------------------------------------------------------------
def step_errors(path, matched, summaries, bins):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    width = bins[1] - bins[0]
    for col, (key, what) in enumerate((("r_step", "radius"), ("phi_step", "angle"))):
        ax = axes[0, col]
        for i, name in enumerate(matched):
            s = summaries[matched[name][0].label]
            density = s[key + "_hist"] / max(s[key + "_hist"].sum(), 1) / width
            ax.stairs(density, bins, label=name, linestyle=STYLES[i % len(STYLES)], linewidth=1.6)
        ax.axvline(-0.5, color="gray", lw=0.8, ls=":")
        ax.axvline(0.5, color="gray", lw=0.8, ls=":")
        ax.set_xlim(-0.8, 0.8)
        ax.set_title(f"PolarQuant {what} error, every configuration", fontsize=10.5)
        ax.set_xlabel(f"({what}_hat - {what}) / {what} step of its group and pair")
        ax.set_ylabel("density")
        ax.legend(fontsize=8, loc="lower center")

        ref = _reference_config(matched)
        ax = axes[1, col]
        for m in matched[ref]:
            s = summaries[m.label]
            density = s[key + "_hist"] / max(s[key + "_hist"].sum(), 1) / width
            ax.stairs(np.maximum(density, 1e-6), bins, color=COLORS[m.kind], linewidth=1.6,
                      label=f"{m.label} ({m.bpe:.3g} b/elem): {100 * s[key + '_beyond']:.1f}% beyond +-0.5")
        ax.axvline(-0.5, color="gray", lw=0.8, ls=":")
        ax.axvline(0.5, color="gray", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(1e-3, None)
        ax.set_xlim(bins[0], bins[-1])
        ax.set_title(f"All methods at {ref} bits, {what} error in PolarQuant {ref} steps", fontsize=10.5)
        ax.set_xlabel(f"{what} error / PolarQuant {ref} {what} step (end bins: all beyond +-1.5)", fontsize=9)
        ax.set_ylabel("density (log)")
        _plain_log(ax, "y")
        ax.legend(fontsize=7.5, loc="upper right")
    fig.suptitle("Radius and angle errors in units of the PolarQuant bin step", fontsize=12)
    _save(fig, path)


def key_errors(path, matched, summaries):
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    configs = _diagonal_configs(matched)
    for ax, key, what in ((axes[0], "key_token", "relative key error per token  ||k_hat - k|| / ||k||"),
                          (axes[1], "pair_token", "pair error / RMS radius of the pair, per token and pair")):
        for i, name in enumerate(configs):
            for m in matched[name]:
                x, p = _quantiles(np.maximum(summaries[m.label]["dist"][key], 1e-5))
                ax.plot(x, p, color=COLORS[m.kind], ls=STYLES[i % len(STYLES)], lw=1.5,
                        label=f"{name}: {m.label} ({m.bpe:.3g} b)")
        ax.set_xscale("log")
        low = min(np.percentile(summaries[m.label]["dist"][key], 0.5) for n in configs for m in matched[n])
        ax.set_xlim(left=max(low, 1e-4))
        _plain_log(ax, "x")
        ax.set_xlabel(what)
        ax.set_ylabel("fraction below (CDF)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_title("Relative key reconstruction error")
    axes[1].set_title("Per-pair vector error")
    axes[1].legend(fontsize=7.5, loc="upper left")
    fig.suptitle("Key errors at equal bits per element (colour: method, line: configuration)", fontsize=12)
    _save(fig, path)


def attention_errors(path, matched, summaries):
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5), constrained_layout=True)
    names = list(matched)
    xs = np.arange(len(names))
    width = 0.27
    panels = (("score_err", "score error / score spread", "Score error (RMS over visible keys)", True),
              ("kl", "KL(p || p_hat) in nats", "Attention KL divergence (mean over queries)", True),
              ("topk", "top-8 overlap", "Top-8 overlap of attention weights (1 = same keys)", False),
              ("out_err", "||o_hat - o|| / ||o||", "Attention output relative error", True))
    for ax, (key, ylabel, title, log) in zip(axes.ravel(), panels):
        for k, kind in enumerate(("polar", "per_channel", "per_token")):
            vals = [summaries[matched[n][k].label][key] for n in names]
            ax.bar(xs + (k - 1) * width, vals, width, color=COLORS[kind], label=NAMES[kind])
        ax.set_xticks(xs, [f"{n}\n(int{matched[n][1].bits[0]}, int{matched[n][2].bits[0]})" for n in names])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
            _plain_log(ax, "y")
        else:
            lo = min(summaries[matched[n][k].label][key] for n in names for k in range(3))
            ax.set_ylim(max(0.0, lo - 0.1), 1.0)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Attention errors at equal bits, causal, real queries (x: polar config and its integer widths)",
                 fontsize=12)
    _save(fig, path)


def error_by_pair(path, matched, summaries, head_dim, rope_base, group_size):
    fig, axes = plt.subplots(1, 2, figsize=(12.5, 5.6), layout="constrained")
    configs = _diagonal_configs(matched, most=2)
    if "r4t4" in matched and "r4t4" not in configs:
        configs = ["r4t4"] + configs[:1]
    j = np.arange(head_dim // 2)
    for ax, key, ylabel, title in (
            (axes[0], "pair_rel_by_j", "RMS pair error / RMS pair radius", "Key error by RoPE pair"),
            (axes[1], "score_by_j", "RMS score error from pair j / score spread",
             "Each pair's share of the score error")):
        for i, name in enumerate(configs):
            for m in matched[name]:
                ax.plot(j, summaries[m.label][key], color=COLORS[m.kind], ls=STYLES[i % len(STYLES)], lw=1.6,
                        marker="o", ms=2.5, label=f"{name}: {m.label} ({m.bpe:.3g} b)")
        ax.set_yscale("log")
        _plain_log(ax, "y")
        ax.set_xlabel("pair index j (0 = fastest rotation)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, pad=28 if rope_base else 6)
        ax.grid(alpha=0.3, which="both")
        if rope_base:
            # Tokens per full turn of pair j: 2 pi base^(2j/d). Right of the line a group of G tokens
            # covers less than one turn, so its angles span less than 2 pi.
            wavelength = 2 * np.pi * rope_base ** (2 * j / head_dim)
            top = ax.twiny()
            top.set_xlim(ax.get_xlim())
            marks = [w for w in (10, 100, 1000, 10_000, 100_000) if wavelength[0] <= w <= wavelength[-1]]
            top.set_xticks([np.log(w / (2 * np.pi)) / np.log(rope_base) * head_dim / 2 for w in marks],
                           [f"{w:g}" for w in marks])
            top.set_xlabel("tokens per full rotation of the pair", fontsize=9)
            cut = np.log(group_size / (2 * np.pi)) / np.log(rope_base) * head_dim / 2
            if 0 <= cut <= j[-1]:
                ax.axvline(cut, color="gray", ls=":", lw=1)
                ax.text(cut, 0.02, f" < 1 turn per\n group of {group_size}", transform=ax.get_xaxis_transform(),
                        fontsize=7.5, color="gray")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Errors by RoPE pair at equal bits (mean over layers and heads)", fontsize=12)
    _save(fig, path)


def bits_tradeoff(path, summaries):
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5), constrained_layout=True)
    for ax, key, ylabel in ((axes[0], "key_rel", "key rel error ||K_hat - K|| / ||K||"),
                            (axes[1], "score_err", "score error / score spread"),
                            (axes[2], "kl", "attention KL (nats)")):
        for kind in ("polar", "per_channel", "per_token"):
            items = sorted((s["bpe"], s[key], label) for label, s in summaries.items() if s["method"].kind == kind)
            if kind == "polar":
                ax.scatter([b for b, _, _ in items], [v for _, v, _ in items], color=COLORS[kind], zorder=3,
                           label=NAMES[kind])
                for b, v, label in items:   # configs at equal bits alternate left/right so labels don't collide
                    same = [it[2] for it in items if it[0] == b]
                    left = same.index(label) % 2 == 1
                    ax.annotate(label.split()[-1], (b, v), textcoords="offset points", xytext=(-26 if left else 4, 3),
                                fontsize=7)
            else:
                ax.plot([b for b, _, _ in items], [v for _, v, _ in items], color=COLORS[kind], marker="s", ms=4,
                        label=NAMES[kind])
                for b, v, label in items:
                    ax.annotate(label.split()[0], (b, v), textcoords="offset points", xytext=(4, -9), fontsize=7,
                                color=COLORS[kind])
        ax.set_yscale("log")
        _plain_log(ax, "y")
        ax.set_xlabel("bits per key element, parameters included")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("Error against storage for every method and bit width", fontsize=12)
    _save(fig, path)


def channel_profile(path, outliers, layer_ids, pairing):
    ratio = outliers["ratio"]                                   # (layers, H_kv, d)
    n_layers, h_kv, d = ratio.shape
    rows = ratio.reshape(n_layers * h_kv, d)
    flags = outliers["flags"].reshape(n_layers * h_kv, d)
    fig, ax = plt.subplots(figsize=(12, 0.3 * n_layers * h_kv + 2.2), constrained_layout=True)
    im = ax.imshow(rows, aspect="auto", cmap="magma", norm=LogNorm(vmin=max(rows.min(), 1e-2), vmax=rows.max()),
                   interpolation="nearest")
    yy, xx = np.nonzero(flags)
    ax.scatter(xx, yy, marker="o", s=28, facecolors="none", edgecolors="cyan", linewidths=1.2)
    ax.set_yticks(np.arange(n_layers * h_kv), [f"layer {layer_ids[i // h_kv]} head {i % h_kv}"
                                                for i in range(n_layers * h_kv)], fontsize=7)
    ax.set_xlabel("channel" + (f" (pair j = channels j and j + {d // 2})" if pairing == "half"
                               else " (pair j = channels 2j and 2j + 1)"))
    if pairing == "half":
        ax.axvline(d / 2 - 0.5, color="white", lw=1)
    for i in range(1, n_layers):
        ax.axhline(i * h_kv - 0.5, color="white", lw=0.5)
    fig.colorbar(im, ax=ax, label="channel RMS / median channel RMS of the head")
    ax.set_title(f"Key channel RMS per layer and KV head (cyan rings: outlier channels, RMS > "
                 f"{metrics.OUTLIER_FACTOR:g}x the head's median)")
    _save(fig, path)


def _polar_grid(ax, code, j, cartesian):
    """Draw the r4t4 bin edges (and in Cartesian form the reconstruction points) of pair j, group 0."""
    br, bt = 2**code.r_bits, 2**code.t_bits
    r_min, r_step = code.r_min[0, j], code.r_step[0, j]
    p_min, p_step = code.phi_min[0, j], code.phi_step[0, j]
    r_edges = r_min + np.arange(br + 1) * r_step
    p_edges = p_min + np.arange(bt + 1) * p_step
    kw = {"color": "#1f77b4", "lw": 0.6, "alpha": 0.7}
    if cartesian:
        arc = np.linspace(p_edges[0], p_edges[-1], 200)
        for r in r_edges:
            ax.plot(r * np.cos(arc), r * np.sin(arc), **kw)
        for p in p_edges:
            ax.plot([r_edges[0] * np.cos(p), r_edges[-1] * np.cos(p)],
                    [r_edges[0] * np.sin(p), r_edges[-1] * np.sin(p)], **kw)
        rc = r_min + (np.arange(br) + 0.5) * r_step
        pc = p_min + (np.arange(bt) + 0.5) * p_step
        rr, pp = np.meshgrid(rc, pc)
        ax.scatter(rr * np.cos(pp), rr * np.sin(pp), s=3, color="#1f77b4", zorder=2,
                   label=f"PolarQuant r{code.r_bits}t{code.t_bits} grid and reconstruction points")
    else:
        for r in r_edges:
            ax.axhline(r, **kw)
        for p in p_edges:
            ax.axvline(p, **kw)
        ax.plot([], [], label=f"PolarQuant r{code.r_bits}t{code.t_bits} bin edges", **kw)


def outlier_scatter(path, keys, scatter, layer_ids, group_size, pairing):
    li, h, j_out, j_norm = scatter
    length, d = keys.shape[-2:]
    lq = (length // group_size) * group_size
    group = keys[li, h, lq - group_size:lq]                    # (G, d): the last full group
    code = polarref.encode(group, r_bits=4, t_bits=4, group_size=group_size, pairing=pairing)
    kivi = baselines.quantize_per_channel(group, 4, group_size)
    x, y = split_pairs(group, pairing)
    xk, yk = split_pairs(kivi, pairing)
    r, phi = to_polar(x, y)
    fig, axes = plt.subplots(2, 2, figsize=(11.5, 10), constrained_layout=True)
    for row, (j, kind) in enumerate(((j_out, "outlier pair"), (j_norm, "normal pair"))):
        cx, cy = (j, j + d // 2) if pairing == "half" else (2 * j, 2 * j + 1)
        ax = axes[row, 0]
        _polar_grid(ax, code, j, cartesian=True)
        levels_x, levels_y = np.unique(xk[:, j]), np.unique(yk[:, j])
        lx, ly = np.meshgrid(levels_x, levels_y)
        ax.scatter(lx, ly, marker="+", s=14, color="#ff7f0e", alpha=0.7, linewidths=0.7, zorder=1,
                   label="int4 per-channel reconstruction lattice (same group)")
        ax.scatter(x[:, j], y[:, j], s=9, color="black", zorder=3, label=f"keys ({group_size} tokens)")
        span = max(np.ptp(x[:, j]), np.ptp(y[:, j]), 1e-12)
        far = np.hypot(np.mean(x[:, j]), np.mean(y[:, j])) > 2 * span
        if far:  # the origin would squeeze the data into a corner: say where it is instead
            ax.text(0.02, 0.97, f"origin (0, 0) is off the plot, {np.hypot(np.mean(x[:, j]), np.mean(y[:, j])):.3g} "
                    f"away", transform=ax.transAxes, fontsize=8, color="red", va="top")
        else:
            ax.scatter([0], [0], marker="x", color="red", s=30, zorder=4, label="origin")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel(f"x = channel {cx}")
        ax.set_ylabel(f"y = channel {cy}")
        ax.set_title(f"{kind} j={j} (layer {layer_ids[li]}, head {h}): Cartesian")
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.2)

        ax = axes[row, 1]
        _polar_grid(ax, code, j, cartesian=False)
        ax.scatter(phi[:, j], r[:, j], s=9, color="black", zorder=3, label="keys")
        ax.set_xlabel("angle phi (rad, in [0, 2 pi))")
        ax.set_ylabel("radius r")
        ax.set_title(f"{kind} j={j}: polar form, r4t4 bins")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"Outlier vs normal RoPE pair, one group of {group_size} tokens (tokens {lq - group_size}.."
                 f"{lq - 1}), with the quantization grids", fontsize=12)
    _save(fig, path)


def kurtosis_plot(path, outliers, head_dim):
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    ch = outliers["pair_channel_kurtosis"]
    po = outliers["pair_outlier"]
    j = np.broadcast_to(np.arange(head_dim // 2), ch.shape)
    for ax, key, what in ((axes[0], "radius_kurtosis", "radius r"), (axes[1], "angle_kurtosis", "angle phi")):
        val = outliers[key]
        ok = np.isfinite(val) & np.isfinite(ch)
        sc = ax.scatter(ch[ok], val[ok], c=j[ok], cmap="viridis", s=14, alpha=0.8)
        sel = ok & po
        ax.scatter(ch[sel], val[sel], s=60, facecolors="none", edgecolors="red", linewidths=1.1,
                   label="pair with an outlier channel")
        lims = [min(ch[ok].min(), val[ok].min()) * 0.9, min(ch[ok].max(), val[ok].max()) * 1.1]
        ax.plot(lims, lims, color="gray", lw=0.8, ls="--", label="equal kurtosis")
        ax.axhline(3, color="gray", lw=0.6, ls=":")
        ax.axvline(3, color="gray", lw=0.6, ls=":", label="Gaussian (3)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log(ax, "xy")
        ax.set_xlabel("channel kurtosis (larger of the pair's two channels)")
        ax.set_ylabel(f"kurtosis of the {what}")
        ax.set_title(f"{what.split()[0].capitalize()} (each point: one layer, head and pair)", fontsize=10.5)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, loc="upper left")
    fig.colorbar(sc, ax=axes, label="pair index j")
    fig.suptitle("Pearson kurtosis over all tokens: Cartesian channels against polar coordinates", fontsize=12)
    _save(fig, path)


def draw_all(out, *, inp, matched, summaries, outliers, scatter, group_size, pairing, step_bins):
    d = inp.keys.shape[-1]
    rope_base = inp.meta.get("rope_base")
    step_errors(out / "step_errors.png", matched, summaries, step_bins)
    key_errors(out / "key_errors.png", matched, summaries)
    attention_errors(out / "attention_errors.png", matched, summaries)
    error_by_pair(out / "error_by_pair.png", matched, summaries, d, rope_base, group_size)
    bits_tradeoff(out / "bits_tradeoff.png", summaries)
    channel_profile(out / "channel_profile.png", outliers, inp.layer_ids, pairing)
    outlier_scatter(out / "outlier_scatter.png", inp.keys, scatter, inp.layer_ids, group_size, pairing)
    kurtosis_plot(out / "kurtosis.png", outliers, d)
