"""Depth transfer: LR sweeps for mup, depth_mup and completep across depths, on the residual MLP (one layer
per block, synthetic classification) and on the reference GPT (built-in text).

Reports per model and scheme the interpolated optimal log2 LR per depth and its spread in octaves
(target: depth_mup and completep <= 0.5 over >= 8x depth).

    python bench/depth_transfer.py                 # CPU small settings
    python bench/depth_transfer.py --smoke         # seconds; used by the tests
"""

from __future__ import annotations

import argparse
import statistics
from types import SimpleNamespace

import torch

from hptransfer.data import load_data
from hptransfer.models import ModelSpec
from hptransfer.train import HParams, TrainSettings, train

from common import RESULTS, device_name, write_result
from sweeps import lr_sweep, spread
from width_transfer import plot

MODELS = {
    # name: (data config, spec builder, depths, base depth, train settings)
    "resmlp": (dict(kind="gaussian_mixture", n_train=4096, n_val=1024, d_in=32, n_classes=10, separation=0.15, seed=0),
               lambda data, depths: ModelSpec("resmlp", 128, max(depths), 128, min(depths), data.model_options),
               [2, 4, 8, 16], dict(batch_size=64, seq_len=1)),
    "gpt": (dict(kind="text", path=None, val_fraction=0.1),
            lambda data, depths: ModelSpec("gpt", 128, max(depths), 128, min(depths),
                                           {**data.model_options, "n_head": 4, "block_size": 64,
                                            "zero_init_readout": True, "zero_init_query": True}),
            [1, 2, 4, 8], dict(batch_size=16, seq_len=64)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--schemes", nargs="+", default=["mup", "depth_mup", "completep"])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--grid", type=float, nargs=2, default=[-12.0, -3.0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = "depth_transfer" + ("-smoke" if args.smoke else "")
    payload = {"seeds": args.seeds, "steps": args.steps, "models": {}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    for model_name in args.models:
        data_cfg, make_spec, depths, train_kw = MODELS[model_name]
        if args.smoke:
            depths, args.seeds, args.steps, args.grid = depths[:3], 1, 5, [-8, -6]
            train_kw = dict(batch_size=4, seq_len=16)
        data = load_data(SimpleNamespace(**data_cfg))
        spec = make_spec(data, depths)
        settings = TrainSettings(steps=args.steps, eval_every=0, eval_batches=4, **train_kw)
        grid = [float(x) for x in range(int(args.grid[0]), int(args.grid[1]) + 1)]
        results = {}
        for scheme in args.schemes:
            sweeps = {}
            for depth in depths:
                def run(log2_lr: float, seed: int, depth: int = depth) -> float:
                    return train(spec, scheme, data, HParams(lr=2.0 ** log2_lr),
                                 TrainSettings(**{**settings.__dict__, "seed": seed}), depth=depth).val_loss
                sweeps[depth] = lr_sweep(run, grid, list(range(args.seeds)), refine=not args.smoke)
                print(f"{model_name} {scheme} depth {depth}: optimum log2 lr {sweeps[depth].optimum:.2f} "
                      f"(best loss {sweeps[depth].best_loss:.4f})", flush=True)
            optima = [s.optimum for s in sweeps.values()]
            shared = min(grid, key=lambda x: abs(x - statistics.median(optima)))
            at_shared = [sweeps[d].loss_at(shared) for d in depths]
            results[scheme] = {"optima": {str(d): s.optimum for d, s in sweeps.items()},
                               "spread_octaves": spread(optima), "shared_log2_lr": shared,
                               "loss_at_shared": at_shared,
                               "deeper_better_at_shared": all(b < a for a, b in zip(at_shared, at_shared[1:])),
                               "sweeps": {str(d): s.to_dict() for d, s in sweeps.items()}}
            print(f"{model_name} {scheme}: spread {spread(optima):.2f} octaves", flush=True)
        payload["models"][model_name] = {"depths": depths, "grid": grid, "results": results}
        plot(results, RESULTS / f"{name}-{model_name}-{device_name(device)}.png", "depth")
    print(f"wrote {write_result(name, device, payload)}")


if __name__ == "__main__":
    main()
