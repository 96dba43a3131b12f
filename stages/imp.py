"""DVC stage `imp` (stages/retrain/dvc.yaml): iterative magnitude pruning with rewinding -- the
lottery-ticket experiment -- and its two controls, one round at a time.

Each finished round is saved in models/imp/ (a persistent output), so a killed run resumes
after its last finished round, and raising imp.rounds computes only the new rounds.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import load_params
from prunelab.data.mnist import load_split
from prunelab.errors import DataError
from prunelab.models.networks import load_net, resolve_device, to_inputs, to_targets
from prunelab.reporting.figures import lottery_figure
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.studies import imp
from prunelab.studies import imp_outputs as report
from prunelab.studies.retraining import Split
from prunelab.tracking.runs import track

DETAILS = ("Round 0 trains the dense net from models/init.pt; each round r then prunes "
           "imp.rate of every hidden layer's remaining weights (imp.output_rate of the output "
           "layer's) by |w|, rewinds the survivors (imp.rewind: init, or step n of the dense "
           "run) and retrains for train.epochs, testing every imp.eval_every steps. The "
           "controls of imp.controls train on the same per-layer sizes: reinit (the ticket's "
           "mask, fresh weights) and random_mask (random mask, the ticket's start weights).")


def _log_round(run, rnd: imp.Round) -> None:  # type: ignore[no-untyped-def]
    metrics = {"weights_remaining": rnd.remaining_percent(),
               **{f"remaining.layer{i}": n for i, n in enumerate(rnd.remaining)},
               **{f"{v}.accuracy": o.accuracy for v, o in rnd.outcomes.items()},
               **{f"{v}.best_step": o.best_step for v, o in rnd.outcomes.items()},
               **{f"{v}.train_seconds": o.seconds for v, o in rnd.outcomes.items()}}
    series = {f"{v}.test_accuracy": list(o.evals) for v, o in rnd.outcomes.items()}
    run.log_child(f"round {rnd.index}", metrics, series,
                  {"imp_round": str(rnd.index), "resumed": str(rnd.resumed).lower()})


@click.command(help=stage_help("imp", details=DETAILS))
def main() -> None:
    # Killed, the stage keeps what it finished: the round files are written one by one.
    with stage_errors(kept=f"finished rounds stay in {paths.IMP_DIR}/ and the next run resumes"):
        cfg = load_params(paths.PARAMS)
        with track("imp", cfg) as run:
            device = resolve_device(cfg.train.device)
            init_path = paths.init_model(cfg.train.seed)
            try:
                init_blob = init_path.read_bytes()
            except FileNotFoundError:
                raise DataError(f"{init_path}: missing; run: dvc repro") from None
            init = load_net(init_path, device)
            (xs, ys), (xt, yt) = (load_split(paths.DATA_DIR, split, limit) for split, limit in
                                  (("train", cfg.data.train_size), ("t10k", cfg.data.test_size)))
            data = Split(to_inputs(xs, device), to_targets(ys, device), to_inputs(xt, device),
                         to_targets(yt, device))
            store = imp.RoundStore(paths.IMP_DIR, imp.fingerprint(cfg, init_blob, device.type))
            done, stale = store.resume(device)
            done = done[: cfg.imp.rounds + 1]  # imp.rounds lowered: the first rounds only
            if stale:
                click.echo(f"imp: discarded {stale} round file(s) made with other settings or "
                           "code", err=True)
            if done:
                click.echo(f"imp: resuming after round {done[-1].index} (rounds 0-"
                           f"{done[-1].index} kept from an earlier run)", err=True)

            def announce(rnd: imp.Round) -> None:
                accs = ", ".join(f"{v} {o.accuracy:.2f}" for v, o in rnd.outcomes.items())
                click.echo(f"imp: round {rnd.index}: {rnd.remaining_percent():.2f}% of weights "
                           f"remaining: {accs}", err=True)

            rounds = imp.run(init, data, cfg, store, done, on_round=announce)
            rows, summary, timing = (report.rows(rounds), report.summary(rounds),
                                     report.timing(rounds))
            out = Outputs()
            out.add_csv(paths.IMP_CURVE, rows)
            out.add_json(paths.IMP_METRICS, summary)
            out.add_json(paths.IMP_TIMING, timing)
            out.add_bytes(paths.LOTTERY_FIGURE, lottery_figure(
                [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows],
                cfg.model.arch))
            out.commit()
            for rnd in rounds:
                _log_round(run, rnd)
            run.log_metrics({f"{v}.within_0.1pt_down_to_percent": p for v, p in
                             summary["within_0.1pt_down_to_percent"].items()},
                            parent_prefix="imp.")
            run.log_metrics({k: timing[k] for k in ("wall_seconds", "dense_seconds",
                                                     "masked_median_seconds", "masked_over_dense")},
                            parent_prefix="imp.")
            run.log_artifacts([paths.IMP_CURVE, paths.IMP_METRICS, paths.IMP_TIMING,
                               paths.LOTTERY_FIGURE])
    ran = sum(not r.resumed for r in rounds[1:])  # pruning rounds; round 0 is the dense run
    click.echo(f"imp: {len(rounds) - 1} rounds ({ran} run now); {paths.LOTTERY_FIGURE}",
               err=True)


if __name__ == "__main__":
    main()
