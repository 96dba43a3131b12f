"""DVC stage `train@<seed>`: one seed's net (model.arch) on MNIST.

SEED is one of train.seeds: dvc.yaml runs this stage once per seed (foreach), each into its own
folder, so adding a seed trains only the new one.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import load_params
from prunelab.data.mnist import load_split
from prunelab.models.networks import (
    build_model,
    resolve_device,
    to_inputs,
    to_targets,
    weights_blob,
)
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.tracking.runs import redact, seed_prefix, track
from prunelab.training.loop import loss_curve, train


@click.command(help=stage_help("train"))
@click.argument("seed", type=click.IntRange(0, 2**32 - 1))
def main(seed: int) -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS).for_seed(seed)
        with track(f"train@{seed}", cfg) as run:
            device = resolve_device(cfg.train.device)
            (xs, ys), (xt, yt) = (load_split(paths.DATA_DIR, split, limit) for split, limit in
                                  (("train", cfg.data.train_size), ("t10k", cfg.data.test_size)))
            model = build_model(cfg.model, cfg.train.seed, device)
            out = Outputs()  # every file lands together, after training, or none does
            # the initial weights: for rewinding (lottery tickets)
            out.add_bytes(paths.init_model(seed), weights_blob(model.layers(), cfg.model.arch))
            result = train(model, to_inputs(xs, device), to_targets(ys, device),
                           to_inputs(xt, device), to_targets(yt, device), cfg.train)
            last, history = result.history[-1], [vars(r) for r in result.history]
            summary = {"test_accuracy": last.test_accuracy, "final_loss": last.loss}
            timing = {"train_seconds": round(result.seconds, 3),
                      "samples_per_second": round(result.samples_per_second, 1)}
            out.add_bytes(paths.model(seed), weights_blob(model.layers(), cfg.model.arch))
            out.add_json(paths.train_metrics(seed), {**summary, "history": history})
            out.add_json(paths.train_timing(seed), timing)
            out.add_csv(paths.train_loss(seed), loss_curve(result.step_losses))
            out.add_json(paths.train_run(seed), {"mlflow_run_id": run.run_id,
                                           "tracking_uri": redact(run.uri) if run.on else None})
            out.commit()
            run.log_series({"loss": list(enumerate(result.step_losses, 1)),
                            "epoch_loss": [(r.epoch, r.loss) for r in result.history],
                            "test_accuracy": [(r.epoch, r.test_accuracy) for r in result.history]})
            prefix = seed_prefix(cfg) + "train."
            run.log_metrics(timing, parent_prefix=prefix)
            # The stage run has these as per-epoch histories already; the parent gets the summary.
            run.log_metrics(summary, parent_prefix=prefix, on_stage=False)
            run.log_artifacts([paths.train_metrics(seed), paths.train_loss(seed)])
            run.log_model(model)
    epochs = f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}"
    click.echo(f"train@{seed}: test accuracy {last.test_accuracy:.2f}% after {epochs}, "
               f"{result.seconds:.1f} s ({result.samples_per_second:,.0f} samples/s)", err=True)


if __name__ == "__main__":
    main()
