"""DVC stage `train`: the chosen architecture (model.arch) on MNIST."""

import click

from prunelab import paths
from prunelab.cli import stage_errors, stage_help
from prunelab.config import load_params
from prunelab.data import load_split
from prunelab.files import Outputs
from prunelab.model import build_model, resolve_device, to_inputs, to_targets, weights_blob
from prunelab.tracking import redact, track
from prunelab.train import loss_curve, train


@click.command(help=stage_help("train"))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        with track("train", cfg) as run:
            device = resolve_device(cfg.train.device)
            (xs, ys), (xt, yt) = (load_split(paths.DATA_DIR, split, limit) for split, limit in
                                  (("train", cfg.data.train_size), ("t10k", cfg.data.test_size)))
            model = build_model(cfg.model, cfg.train.seed, device)
            out = Outputs()  # every file lands together, after training, or none does
            # the initial weights: for rewinding (lottery tickets)
            out.add_bytes(paths.INIT_MODEL, weights_blob(model.layers(), cfg.model.arch))
            result = train(model, to_inputs(xs, device), to_targets(ys, device),
                           to_inputs(xt, device), to_targets(yt, device), cfg.train)
            last, history = result.history[-1], [vars(r) for r in result.history]
            summary = {"test_accuracy": last.test_accuracy, "final_loss": last.loss}
            timing = {"train_seconds": round(result.seconds, 3),
                      "samples_per_second": round(result.samples_per_second, 1)}
            out.add_bytes(paths.MODEL, weights_blob(model.layers(), cfg.model.arch))
            out.add_json(paths.TRAIN_METRICS, {**summary, "history": history})
            out.add_json(paths.TRAIN_TIMING, timing)
            out.add_csv(paths.TRAIN_LOSS, loss_curve(result.step_losses))
            out.add_json(paths.TRAIN_RUN, {"mlflow_run_id": run.run_id,
                                           "tracking_uri": redact(run.uri) if run.on else None})
            out.commit()
            run.log_series({"loss": list(enumerate(result.step_losses, 1)),
                            "epoch_loss": [(r.epoch, r.loss) for r in result.history],
                            "test_accuracy": [(r.epoch, r.test_accuracy) for r in result.history]})
            run.log_metrics(timing, parent_prefix="train.")
            # The stage run has these as per-epoch histories already; the parent gets the summary.
            run.log_metrics(summary, parent_prefix="train.", on_stage=False)
            run.log_artifacts([paths.TRAIN_METRICS, paths.TRAIN_LOSS])
            run.log_model(model)
    epochs = f"{cfg.train.epochs} epoch{'s' if cfg.train.epochs != 1 else ''}"
    click.echo(f"train: test accuracy {last.test_accuracy:.2f}% after {epochs}, "
               f"{result.seconds:.1f} s ({result.samples_per_second:,.0f} samples/s)", err=True)


if __name__ == "__main__":
    main()
