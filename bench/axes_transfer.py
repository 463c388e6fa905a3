"""Transfer beyond width and depth on the built-in GPT task: tune at the proxy's setting, predict the optimum 8x
away with hptransfer.transfer, then find the true optimum there by a bracketed sweep (2 seeds).

    python bench/axes_transfer.py --axis horizon        # LR: fit at 25/50/100 steps, predict at 800 (~4 min)
    python bench/axes_transfer.py --axis batch          # LR: fit at batch 4/8/16, predict at 128 (~5 min)
    python bench/axes_transfer.py --axis weight_decay   # WD: tuned at 100 steps, predicted at 800 (~5 min)
    python bench/axes_transfer.py --axis horizon --proxy-steps 400 --tag=-long   # fits at 100..400, target 3200
    python bench/axes_transfer.py --axis batch --factor 4 --tag=-x4    # held-out checks of the batch law: 64,
    python bench/axes_transfer.py --axis batch --factor 16 --tag=-x16  # and 256 sequences
    python bench/axes_transfer.py --axis horizon --basin --proxy-steps 400 --tag=-basin-long   # fits at 50..400
        # steps, each optimum a basin over 4 seeds (basin_optimum), the fit weighted by their errors (~17 min);
        # add --corpus stdlib (fresh characters: the standard library's source) and --warmup-steps 20
    python bench/axes_transfer.py --smoke               # seconds: every axis on a tiny grid (the tests)

The model is the reference GPT at width 64, 2 layers (mu-P at its base: plain SP numbers), AdamW (torch's
coupled decay p <- p (1 - lr wd)), cosine to each run's own horizon with 5% warmup, 64-token sequences. Each
optimum is the parabola vertex through the best half-octave grid point of the seed-mean loss. The regret of an
LR (or WD) is its seed-mean loss minus the best seed-mean loss of the target's grid; the naive baseline keeps the
proxy's value. Writes axes_transfer-<axis>-<device>.json and .png.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch

import hptransfer as hpt
from hptransfer.axes import SQRT_PRIOR, Fits, Setting, basin_optimum
from hptransfer.data import load_data
from hptransfer.data.datasets import TokenStream
from hptransfer.data.text import CharTokenizer
from hptransfer.models import ModelSpec
from hptransfer.pipeline.train import HParams, OptimSettings, TrainSettings, train
from hptransfer.pipeline.tune import interpolated_optimum

from common import RESULTS, device_name, write_result

SEQ = 64


@dataclass
class Task:
    width: int = 64
    seeds: tuple[int, ...] = (0, 1)
    proxy_steps: int = 100
    proxy_batch: int = 16
    factor: int = 8  # how far the target is from the proxy
    fit_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)  # the fits' settings, relative to the proxy's
    grid: tuple[float, float, float] = (-11.0, -3.0, 0.5)  # log2 LR: low, high, step
    bracket: float = 2.0  # the target's sweep: predicted +- this many octaves
    wd_grid: tuple[float, float, float] = (-4.0, 4.0, 0.5)  # log2 weight decay at the proxy
    # the horizon's basin design (--basin): each fit point's optimum from a parabola through every seed's losses
    basin: bool = False
    fit_seeds: tuple[int, ...] = (0, 1, 2, 3)
    fine_step: float = 0.25  # the fit points' grid, centred on a one-seed coarse sweep at the proxy's horizon
    fine_half: float = 1.25
    window: float = 1.0  # octaves either side of the best point that each parabola is fitted on
    warmup_steps: int | None = None  # a warmup of this many steps in every run, instead of 5% of each run's own
    corpus: str = "pydoc"  # the built-in text (418k characters), or "stdlib": fresh characters for long horizons


def grid(low: float, high: float, step: float) -> list[float]:
    return [round(low + i * step, 6) for i in range(int(round((high - low) / step)) + 1)]


def stdlib_corpus(val_fraction: float = 0.1) -> TokenStream:
    """The Python standard library's own source (its .py files outside tests, sorted by path, non-ASCII characters
    as '?'): 12.6M characters, so a 3200-step run of 16 x 64 tokens reads each of its tokens about once, where the
    built-in text's 418k would be seen 8 times."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.rglob("*.py") if not {"site-packages", "test", "tests"} & set(p.parts))
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    text = text.encode("ascii", errors="replace").decode("ascii")
    tokenizer = CharTokenizer(text)
    ids = tokenizer.encode(text)
    cut = int(len(ids) * (1 - val_fraction))
    return TokenStream(ids[:cut], ids[cut:], tokenizer.vocab_size)


class Runner:
    def __init__(self, task: Task) -> None:
        self.task = task
        self.data = load_data(SimpleNamespace(kind="text", path=None, val_fraction=0.1)) if task.corpus == "pydoc" \
            else stdlib_corpus()
        self.spec = ModelSpec("gpt", task.width, 2, task.width, 2, {"vocab_size": self.data.vocab_size, "n_head": 4,
                                                                    "block_size": SEQ})
        self.runs = 0
        self.done: dict[tuple, float] = {}

    def losses(self, lr: float, steps: int, batch: int, wd: float = 0.0,
               seeds: tuple[int, ...] | None = None) -> list[float]:
        """Each seed's validation loss (a diverged seed counts as the loss at init, log(vocab))."""
        values = []
        for seed in self.task.seeds if seeds is None else seeds:
            key = (lr, steps, batch, wd, seed)
            if key not in self.done:
                settings = TrainSettings(steps=steps, batch_size=batch, seq_len=SEQ, eval_every=0, eval_batches=8,
                                         seed=seed, grad_clip=1.0)
                warmup = 0.05 if self.task.warmup_steps is None else min(1.0, self.task.warmup_steps / steps)
                result = train(self.spec, "mup", self.data, HParams(lr=lr, warmup_frac=warmup), settings,
                               OptimSettings(name="adamw", weight_decay=wd))
                self.runs += 1
                self.done[key] = math.log(self.data.vocab_size) if result.diverged else result.val_loss
            values.append(self.done[key])
        return values

    def loss(self, lr: float, steps: int, batch: int, wd: float = 0.0) -> float:
        """Seed-mean validation loss."""
        return statistics.fmean(self.losses(lr, steps, batch, wd))

    def sweep(self, xs: list[float], loss_of) -> dict:
        """The optimum over log2 values ``xs`` of ``loss_of(2**x)``: interpolated vertex, losses, whether at an edge."""
        losses = [loss_of(2.0**x) for x in xs]
        vertex, point, edge = interpolated_optimum(xs, losses)
        return {"log2": xs, "loss": losses, "optimum_log2": vertex, "grid_optimum_log2": point, "at_edge": edge,
                "best_loss": min(losses)}


def lr_axis(run: Runner, axis: str) -> dict:
    task = run.task
    proxy = Setting(width=task.width, batch_size=task.proxy_batch, steps=task.proxy_steps, seq_len=SEQ)
    if axis == "horizon":
        settings = [replace(proxy, steps=int(task.proxy_steps * f)) for f in task.fit_fractions]
        target = replace(proxy, steps=task.proxy_steps * task.factor)
        x_of = lambda s: s.tokens  # noqa: E731
    else:
        settings = [replace(proxy, batch_size=int(task.proxy_batch * f)) for f in task.fit_fractions]
        target = replace(proxy, batch_size=task.proxy_batch * task.factor)
        x_of = lambda s: s.batch_size  # noqa: E731
    fits = []
    if task.basin:
        fits = basin_sweeps(run, proxy, settings, x_of)
    else:
        for setting in settings:
            sweep = run.sweep(grid(*task.grid), lambda lr, s=setting: run.loss(lr, s.steps, s.batch_size))
            fits.append({"x": x_of(setting), **sweep})
            print(f"{axis} {x_of(setting)}: optimum log2 LR {sweep['optimum_log2']:.2f}", flush=True)
    xs = [f["x"] for f in fits]
    optima = [2.0 ** f["optimum_log2"] for f in fits]
    errors = [f["basin"]["se"] for f in fits] if task.basin else None
    proxy_lr = optima[-1]  # the proxy's own setting is the last fit point
    noise, alternative = None, None
    if axis == "batch":  # the noise scale sets where the optimum saturates; the fit its exponent below that
        noise = noise_scale(run, proxy, proxy_lr)
        plain = hpt.fit_optimum(xs, optima, axis="batch", prior=SQRT_PRIOR, se=errors)
        alternative = math.log2(hpt.transfer({"lr": proxy_lr}, proxy, target, Fits(batch=plain))["lr"])
        fit = hpt.fit_optimum(xs, optima, axis="batch", prior=SQRT_PRIOR, noise_scale=noise.b_noise, se=errors)
    else:
        fit = hpt.fit_optimum(xs, optima, axis="tokens", se=errors)
    moved = hpt.transfer({"lr": proxy_lr}, proxy, target,
                         Fits(horizon=fit) if axis == "horizon" else Fits(batch=fit, noise=noise))
    predicted = math.log2(moved["lr"])
    print(f"{axis}: predicted log2 LR {predicted:.2f} at {x_of(target)} (naive {math.log2(proxy_lr):.2f})", flush=True)
    center = round(predicted * 2) / 2
    target_xs = grid(center - task.bracket, center + task.bracket, task.grid[2])
    measured = run.sweep(target_xs, lambda lr: run.loss(lr, target.steps, target.batch_size))
    if measured["at_edge"]:  # widen until the basin is bracketed
        more = grid(target_xs[0] - 2, target_xs[0] - 0.5, 0.5) if measured["grid_optimum_log2"] == target_xs[0] \
            else grid(target_xs[-1] + 0.5, target_xs[-1] + 2, 0.5)
        extra = {x: run.loss(2.0**x, target.steps, target.batch_size) for x in more}
        both = dict(zip(measured["log2"], measured["loss"])) | extra
        measured = _resweep(both)
    if task.basin:  # the target's optimum by the fit points' estimator (the three-point vertex kept beside it)
        rows = [run.losses(2.0**x, target.steps, target.batch_size) for x in measured["log2"]]
        basin = basin_optimum(measured["log2"], rows, window=2 * task.window)
        measured |= {"vertex_log2": measured["optimum_log2"], "optimum_log2": basin.log2, "basin": basin.to_dict()}
    at = lambda lr: run.loss(lr, target.steps, target.batch_size)  # noqa: E731
    loss_predicted, loss_naive = at(moved["lr"]), at(proxy_lr)
    return {"axis": axis, "proxy": vars(proxy), "target": vars(target), "fit_points": fits, "fit": fit.to_dict(),
            "noise_scale": None if noise is None else vars(noise), "transfer": moved.to_dict(),
            "power_law_predicted_log2": alternative,  # batch: a pure power of B, without the noise scale
            "predicted_log2": predicted, "naive_log2": math.log2(proxy_lr), "measured": measured,
            "error_octaves": predicted - measured["optimum_log2"],
            "naive_error_octaves": math.log2(proxy_lr) - measured["optimum_log2"],
            "regret": loss_predicted - measured["best_loss"], "naive_regret": loss_naive - measured["best_loss"],
            "x_proxy": x_of(proxy), "x_target": x_of(target)}


def basin_sweeps(run: Runner, proxy: Setting, settings: list[Setting], x_of) -> list[dict]:
    """Each fit point's optimum as a basin (``basin_optimum``) over a quarter-octave grid and ``fit_seeds`` seeds,
    the grid centred on a one-seed coarse sweep at the proxy's own setting and widened while the basin is not
    bracketed."""
    task = run.task
    coarse = run.sweep(grid(*task.grid), lambda lr: statistics.fmean(
        run.losses(lr, proxy.steps, proxy.batch_size, seeds=task.fit_seeds[:1])))
    center = coarse["grid_optimum_log2"]
    fits = []
    for setting in settings:
        xs = grid(center - task.fine_half, center + task.fine_half, task.fine_step)
        while True:
            rows = [run.losses(2.0**x, setting.steps, setting.batch_size, seeds=task.fit_seeds) for x in xs]
            basin = basin_optimum(xs, rows, window=task.window)
            if not basin.at_edge or len(xs) > 40:
                break
            low = basin.log2 <= xs[0] + task.window
            xs = grid(xs[0] - 1, xs[-1], task.fine_step) if low else grid(xs[0], xs[-1] + 1, task.fine_step)
        means = [statistics.fmean(r) for r in rows]
        fits.append({"x": x_of(setting), "log2": xs, "loss": means, "seed_losses": rows, "optimum_log2": basin.log2,
                     "basin": basin.to_dict(), "best_loss": min(means), "at_edge": basin.at_edge})
        print(f"{x_of(setting)}: basin optimum log2 LR {basin.log2:.2f} +- {basin.se:.2f}", flush=True)
    return fits


def _resweep(points: dict[float, float]) -> dict:
    xs = sorted(points)
    losses = [points[x] for x in xs]
    vertex, point, edge = interpolated_optimum(xs, losses)
    return {"log2": xs, "loss": losses, "optimum_log2": vertex, "grid_optimum_log2": point, "at_edge": edge,
            "best_loss": min(losses)}


def noise_scale(run: Runner, proxy: Setting, lr: float) -> hpt.axes.NoiseScale:
    """B_noise of the proxy model trained at its optimum (the end of training, where it matters most)."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = run.spec.parametrized("mup", width=run.task.width)
    optimizer = hpt.build_optimizer(model, "adamw", lr=lr)
    generator = torch.Generator().manual_seed(0)
    for _ in range(proxy.steps):  # constant LR: the model the proxy's optimum reaches, roughly
        inputs, targets = run.data.batch("train", proxy.batch_size, SEQ, generator)
        loss = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    pairs = [(run.data.batch("val", 4, SEQ, generator), run.data.batch("val", 64, SEQ, generator)) for _ in range(30)]

    def loss_fn(m: torch.nn.Module, batch: tuple) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(m(x).flatten(0, 1), y.flatten())

    return hpt.gradient_noise_scale(model, loss_fn, pairs, 4, 64)


def wd_axis(run: Runner) -> dict:
    """The weight decay tuned at the proxy's horizon (its LR the proxy's optimum), carried 8x longer by the
    timescale rule, with the LR moved by a horizon fit."""
    task = run.task
    proxy = Setting(width=task.width, batch_size=task.proxy_batch, steps=task.proxy_steps, seq_len=SEQ)
    target = replace(proxy, steps=task.proxy_steps * task.factor)
    horizon = lr_axis_fit_only(run, proxy)
    proxy_lr = horizon["proxy_lr"]
    wd_sweep = run.sweep(grid(*task.wd_grid), lambda wd: run.loss(proxy_lr, proxy.steps, proxy.batch_size, wd))
    proxy_wd = 2.0 ** wd_sweep["optimum_log2"]
    moved = hpt.transfer({"lr": proxy_lr, "weight_decay": proxy_wd}, proxy, target, Fits(horizon=horizon["fit"]))
    lr_t, wd_t = moved["lr"], moved["weight_decay"]
    predicted = math.log2(wd_t)
    print(f"weight_decay: proxy log2 {math.log2(proxy_wd):.2f}, predicted {predicted:.2f} at LR 2^{math.log2(lr_t):.2f}",
          flush=True)
    center = round(predicted * 2) / 2
    measured = run.sweep(grid(center - task.bracket, center + task.bracket, 0.5),
                         lambda wd: run.loss(lr_t, target.steps, target.batch_size, wd))
    at = lambda wd: run.loss(lr_t, target.steps, target.batch_size, wd)  # noqa: E731
    loss_predicted, loss_naive = at(wd_t), at(proxy_wd)
    return {"axis": "weight_decay", "proxy": vars(proxy), "target": vars(target), "proxy_lr": proxy_lr,
            "target_lr": lr_t, "proxy_sweep": wd_sweep, "transfer": moved.to_dict(), "predicted_log2": predicted,
            "naive_log2": math.log2(proxy_wd), "measured": measured,
            "error_octaves": predicted - measured["optimum_log2"],
            "naive_error_octaves": math.log2(proxy_wd) - measured["optimum_log2"],
            "regret": loss_predicted - measured["best_loss"], "naive_regret": loss_naive - measured["best_loss"],
            "horizon_fit": horizon["fit"].to_dict()}


def lr_axis_fit_only(run: Runner, proxy: Setting) -> dict:
    task = run.task
    xs, optima = [], []
    for fraction in task.fit_fractions:
        setting = replace(proxy, steps=int(task.proxy_steps * fraction))
        sweep = run.sweep(grid(*task.grid), lambda lr, s=setting: run.loss(lr, s.steps, s.batch_size))
        xs.append(setting.tokens)
        optima.append(2.0 ** sweep["optimum_log2"])
    return {"fit": hpt.fit_optimum(xs, optima, axis="tokens"), "proxy_lr": optima[-1]}


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    axis = result["axis"]
    if axis == "weight_decay":
        ax.plot(result["proxy_sweep"]["log2"], result["proxy_sweep"]["loss"], "-o", ms=3, label="proxy (100 steps)")
        ax.plot(result["measured"]["log2"], result["measured"]["loss"], "-o", ms=3, label="target (8x steps)")
        for key, style, label in (("predicted_log2", "--", "predicted"), ("naive_log2", ":", "naive (kept)"),
                                  ):
            ax.axvline(result[key], ls=style, color="k", lw=1, label=label)
        ax.axvline(result["measured"]["optimum_log2"], color="C3", lw=1, label="measured optimum")
        ax.set_xlabel("log2 weight decay")
        ax.set_ylabel("validation loss")
    else:
        xs = [p["x"] for p in result["fit_points"]]
        ys = [p["optimum_log2"] for p in result["fit_points"]]
        errors = [p["basin"]["se"] for p in result["fit_points"]] if "basin" in result["fit_points"][0] else None
        ax.errorbar([math.log2(x) for x in xs], ys, yerr=errors, fmt="o",
                    label="proxy optima (fit points" + (", +- 1 se)" if errors else ")"))
        fit = result["fit"]
        grid_x = [xs[0] * (result["x_target"] / xs[0]) ** (i / 40) for i in range(41)]
        coordinate = (lambda b: -math.log2(1 + fit["noise_scale"] / b)) if fit.get("noise_scale") else math.log2
        anchor_x, anchor_y = result["x_proxy"], result["naive_log2"]  # the rule moves the proxy's own optimum
        ax.plot([math.log2(x) for x in grid_x],
                [anchor_y + fit["slope"] * (coordinate(x) - coordinate(anchor_x)) for x in grid_x], "-", lw=1,
                label=f"rule from the proxy's optimum, fitted slope {fit['slope']:.2f} "
                      f"[{fit['slope_interval'][0]:.2f}, {fit['slope_interval'][1]:.2f}]")
        ax.plot([math.log2(result["x_target"])], [result["predicted_log2"]], "s", label="predicted at the target")
        ax.plot([math.log2(result["x_target"])], [result["measured"]["optimum_log2"]], "*", ms=12,
                label="measured at the target")
        ax.plot([math.log2(result["x_target"])], [result["naive_log2"]], "x", ms=9, label="naive (kept)")
        ax.set_xlabel("log2 " + ("training tokens" if axis == "horizon" else "batch size (sequences)"))
        ax.set_ylabel("log2 optimal LR")
    ax.set_title(f"{axis}: predicted {result['error_octaves']:+.2f} octaves off, naive "
                 f"{result['naive_error_octaves']:+.2f}; regret {result['regret']:.4f} vs {result['naive_regret']:.4f}",
                 fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def replot(path) -> None:
    """Draw a result file's picture again (``python bench/axes_transfer.py --replot FILE.json``)."""
    import json
    from pathlib import Path

    plot(json.loads(Path(path).read_text()), Path(path).with_suffix(".png"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--axis", choices=["horizon", "batch", "weight_decay"], action="append")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--proxy-steps", type=int, default=Task.proxy_steps,
                        help="the proxy's own horizon (its fits at 1/4, 1/2 and 1 of it; the target at 8x)")
    parser.add_argument("--factor", type=int, default=Task.factor, help="how far the target is (x the proxy's)")
    parser.add_argument("--basin", action="store_true",
                        help="fit at 1/8..1 of the proxy's steps (or batch), each optimum a basin fit over 4 seeds")
    parser.add_argument("--corpus", choices=["pydoc", "stdlib"], default="pydoc",
                        help="stdlib: the standard library's source, so that long horizons read fresh characters")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="every run warms up for this many steps (default: 5%% of its own steps)")
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    parser.add_argument("--replot", nargs="+", help="only draw these result files' pictures again")
    args = parser.parse_args()
    if args.replot:
        for path in args.replot:
            replot(path)
        return
    task = Task(proxy_steps=args.proxy_steps, factor=args.factor, corpus=args.corpus, warmup_steps=args.warmup_steps)
    if args.smoke:
        task = Task(width=32, seeds=(0,), proxy_steps=8, proxy_batch=4, factor=2, grid=(-8.0, -5.0, 1.0),
                    bracket=1.0, wd_grid=(-1.0, 1.0, 1.0), corpus=args.corpus)
    if args.basin:
        task = replace(task, basin=True, fit_fractions=(0.125, 0.25, 0.5, 1.0))
        if args.smoke:
            task = replace(task, proxy_steps=16, fit_seeds=(0, 1), fine_step=0.5, fine_half=1.0)
    axes = args.axis or (["horizon", "batch", "weight_decay"] if args.smoke else ["horizon"])
    for axis in axes:
        run = Runner(task)
        result = wd_axis(run) if axis == "weight_decay" else lr_axis(run, axis)
        result["runs"] = run.runs
        result["task"] = vars(task)
        name = f"axes_transfer-{axis}{args.tag}" + ("-smoke" if args.smoke else "")
        path = write_result(name, torch.device("cpu"), result)
        plot(result, RESULTS / f"{name}-{device_name(torch.device('cpu'))}.png")
        print(f"{axis}: error {result['error_octaves']:+.2f} octaves (naive {result['naive_error_octaves']:+.2f}), "
              f"regret {result['regret']:.4f} (naive {result['naive_regret']:.4f}); {path}", flush=True)


if __name__ == "__main__":
    main()
