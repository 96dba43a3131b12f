"""DVC stage `report`: reports/study.md (and .html) from the study's metrics, curves and figures.

Sections appear for whatever studies have run in this checkout: the retraining pipeline and the
LeNet-5 comparison are read when their files exist (their commands are named otherwise). They
are not this stage's DVC dependencies -- that would make `dvc repro` run them -- so after
`make retrain` or `make compare` the Makefile refreshes the report (`dvc repro -f -s report`).
"""

import _repo  # noqa: F401  (this checkout's src/ first: see stages/_repo.py)
import click

from prunelab import paths
from prunelab.runtime.files import Outputs
from prunelab.runtime.stage import stage_help
from prunelab.studies.report import STUDY, study_html, study_markdown
from prunelab.tracking.stage import open_run


@click.command(help=stage_help(STUDY.stage("report")))
def main() -> None:
    with open_run(STUDY.stage("report")) as (cfg, run):
        text = study_markdown(cfg)
        out = Outputs()
        out.add_text(paths.REPORT, text)
        out.add_text(paths.REPORT_HTML, study_html(text))
        out.commit()
        run.log_artifacts(out.paths)
    click.echo(f"report: {paths.REPORT} ({len(text.splitlines())} lines), {paths.REPORT_HTML}",
               err=True)


if __name__ == "__main__":
    main()
