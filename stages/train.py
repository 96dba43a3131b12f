"""DVC stage `train@<seed>`: one seed's net (model.arch) on MNIST.

SEED is one of train.seeds: dvc.yaml runs this stage once per seed (foreach), each into its own
folder, so adding a seed trains only the new one.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.models.networks import build_model, model_blob
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.dense import STUDY
from prunelab.studies.opening import open_stage
from prunelab.tracking.runs import redact, seed_prefix
from prunelab.training.loop import loss_curve, train


@click.command(help=stage_help(STUDY.stage("train")))
@click.argument("seed", type=click.IntRange(0, 2**32 - 1))
def main(seed: int) -> None:
    with open_stage(STUDY.stage("train"), seed) as stage:
        cfg, run, data = stage.cfg, stage.run, stage.split
        model = build_model(cfg.model, cfg.train.seed, stage.device)
        out = Outputs()  # every file lands together, after training, or none does
        # the initial weights: for rewinding (lottery tickets)
        out.add_bytes(paths.init_model(seed), model_blob(model, cfg.model.arch))
        result = train(model, data.x, data.y, data.x_test, data.y_test, cfg.train)
        last, history = result.history[-1], [vars(r) for r in result.history]
        summary = {"test_accuracy": last.test_accuracy, "final_loss": last.loss}
        timing = {"train_seconds": round(result.seconds, 3),
                  "samples_per_second": round(result.samples_per_second, 1)}
        out.add_bytes(paths.model(seed), model_blob(model, cfg.model.arch))
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
