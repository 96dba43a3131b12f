"""DVC stage `validate`: the whole params.yaml, checked before any other stage runs."""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.config import check_device
from prunelab.runtime.files import write_text
from prunelab.runtime.stage import stage_errors, stage_help
from prunelab.studies.dense import STUDY
from prunelab.studies.registry import load_params

DETAILS = ("DVC deletes a stage's outputs before it runs the stage's command, so a bad value "
           "caught inside `train` would already have cost the old results. Every other stage "
           "sits downstream of this one; on a bad value it stops `dvc repro` with one line "
           "and leaves the workspace exactly as it was.")
STAMP = ("params.yaml passed `python stages/validate.py`; this file orders the validate stage "
         "before every other stage (see dvc.yaml).\n")


@click.command(help=stage_help(STUDY.stage("validate"), details=DETAILS))
def main() -> None:
    with stage_errors():
        cfg = load_params(paths.PARAMS)
        check_device(cfg.train.device)
        # Constant content: downstream stages depend on it without rerunning when it is
        # rewritten. Skip the write when it is already there (it is a persist output).
        if not paths.PARAMS_CHECKED.is_file() or paths.PARAMS_CHECKED.read_text() != STAMP:
            write_text(paths.PARAMS_CHECKED, STAMP)
    click.echo("validate: params.yaml is valid", err=True)


if __name__ == "__main__":
    main()
