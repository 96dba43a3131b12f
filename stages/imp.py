"""DVC stage `imp` (stages/retrain/dvc.yaml): iterative magnitude pruning with rewinding -- the
lottery-ticket experiment -- and its two controls, one round at a time.

Each finished round is saved in models/imp/ (a persistent output), so a killed run resumes
after its last finished round, and raising imp.rounds computes only the new rounds.
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.models.networks import load_net
from prunelab.reporting.figures import lottery_figure
from prunelab.runtime.files import Outputs
from prunelab.runtime.pool import plan
from prunelab.runtime.stage import stage_help
from prunelab.studies import imp
from prunelab.studies import imp_outputs as report
from prunelab.studies.imp_outputs import STUDY
from prunelab.studies.opening import open_stage

DETAILS = ("Round 0 trains the dense net from models/init.pt; each round r then prunes "
           "imp.rate of every hidden layer's remaining weights (imp.output_rate of the output "
           "layer's) by |w|, rewinds the survivors (imp.rewind: init, or step n of the dense "
           "run) and retrains for train.epochs, testing every imp.eval_every steps. The "
           "controls of imp.controls train on the same per-layer sizes: reinit (the ticket's "
           "mask, fresh weights) and random_mask (random mask, the ticket's start weights).")


@click.command(help=stage_help(STUDY.stage("imp"), details=DETAILS))
def main() -> None:
    # Killed, the stage keeps what it finished: the round files are written one by one.
    kept = f"finished rounds stay in {paths.IMP_DIR}/ and the next run resumes"
    with open_stage(STUDY.stage("imp"), kept=kept) as stage:
        cfg, device, init_blob = stage.cfg, stage.device, stage.initial_blob()
        init = load_net(paths.init_model(stage.seed), device)
        workers, threads = plan(device)  # CPU: single-threaded trainings side by side
        store = imp.RoundStore(paths.IMP_DIR,
                               imp.fingerprint(cfg, init_blob, device.type, threads))
        done, stale = store.resume(device)
        done = done[: cfg.imp.rounds + 1]  # imp.rounds lowered: the first rounds only
        for line in report.resume_lines(done, stale):
            click.echo(line, err=True)
        rounds = imp.run(init, stage.split, cfg, store, done,
                         on_round=lambda rnd: click.echo(report.round_line(rnd), err=True),
                         workers=workers, threads=threads)
        rows, summary, timing = (report.rows(rounds), report.summary(rounds),
                                 report.timing(rounds))
        out = Outputs()
        out.add_csv(paths.IMP_CURVE, rows)
        out.add_json(paths.IMP_METRICS, summary)
        out.add_json(paths.IMP_HEADLINE, report.headline(summary))
        out.add_json(paths.IMP_TIMING, timing)
        out.add_bytes(paths.LOTTERY_FIGURE, lottery_figure(
            [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows],
            cfg.model.arch))
        out.commit()
        report.log_study(stage.run, rounds, summary, timing)
        stage.run.log_artifacts(out.paths)
    ran = sum(not r.resumed for r in rounds[1:])  # pruning rounds; round 0 is the dense run
    click.echo(f"imp: {len(rounds) - 1} rounds ({ran} run now); {paths.LOTTERY_FIGURE}",
               err=True)


if __name__ == "__main__":
    main()
