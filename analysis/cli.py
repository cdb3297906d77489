"""Command-line entry points of the analysis room: `hstmon analyze` and `hstmon assess`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from sqlalchemy.exc import OperationalError

from analysis.config import RulesFileError
from analysis.report import UnknownIdError, gather, render_html, render_text
from analysis.run import AnalysisSummary, run_analysis
from models.cli import database_option
from models.database import SchemaOutdatedError, make_engine

__all__ = ["analyze", "assess", "print_analysis"]

_RULES_OPTION = click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A TOML file overriding the shipped rules' thresholds, severities or versions.",
)


def print_analysis(summary: AnalysisSummary) -> None:
    flags = ", ".join(f"{n} {s}" for s, n in sorted(summary.flags.items())) or "no"
    verdicts = ", ".join(f"{n} {v}" for v, n in sorted(summary.verdicts.items())) or "none new"
    click.echo(
        f"Analysis run {summary.run_id}: {summary.exposures_analyzed} exposures analysed in "
        f"{summary.seconds:.1f} s; {flags} flags; verdicts: {verdicts}."
    )
    if summary.not_evaluated:
        click.echo(
            f"Not evaluated (they need science-file metrics): {', '.join(summary.not_evaluated)}."
        )


def _analyse(database_url: str | None, rules_file: Path | None, full: bool) -> AnalysisSummary:
    try:
        return run_analysis(database_url, rules_file=rules_file, full=full)
    except (RulesFileError, SchemaOutdatedError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OperationalError as exc:
        raise click.ClickException(f"cannot use the database: {exc.orig}") from exc


@click.command()
@database_option
@_RULES_OPTION
@click.option("--full", is_flag=True, help="Re-analyse every exposure, not only changed ones.")
def analyze(database_url: str | None, rules_file: Path | None, full: bool) -> None:
    """Flag anomalous exposures and decide HOPR verdicts, for what changed since the last run.

    Each rule (guide-star acquisition failure, loss of lock, take-data flag down, degraded
    guiding, high jitter, drift, telemetry gaps, trend outliers...) writes rows to the `flag`
    table with a sentence and its evidence; each exposure and visit gets a `verdict` (hopr,
    helpdesk, ok, not_repeatable) with its HOPR deadline. Exposures not changed by an ingest
    since their last analysis are skipped, unless a rule's version changed or --full is given.
    """
    print_analysis(_analyse(database_url, rules_file, full))


@click.command()
@click.argument("identifier", metavar="ID")
@database_option
@click.option(
    "--ingest",
    "ingest_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Ingest these files or folders first (repeatable), e.g. the files MAST gave you.",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the HTML report. Default: hstmon-assess-ID.html here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the assessment as JSON instead.")
@_RULES_OPTION
def assess(
    identifier: str,
    database_url: str | None,
    ingest_paths: tuple[Path, ...],
    html_path: Path | None,
    as_json: bool,
    rules_file: Path | None,
) -> None:
    """Work through the exception-report checklist for one visit or exposure.

    ID is an association (e.g. IEPP01010), a rootname (iepp01uvq) or an exposure id (iepp01uv).
    Prints the verdict with its HOPR deadline in plain words, the JIF keyword table and every
    flag with its evidence, and writes a self-contained HTML report with the jitter plot of
    each exposure.
    """
    if ingest_paths:
        from ingest.cli import print_summary
        from ingest.pipeline import run_ingest

        summary = run_ingest(ingest_paths, database_url, progress=False)
        if not as_json:
            print_summary(summary)
    analysis = _analyse(database_url, rules_file, full=False)
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assessment = gather(connection, identifier)
    except UnknownIdError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        engine.dispose()
    if as_json:
        json.dump(assessment.as_json(), sys.stdout, indent=1, default=str)
        click.echo()
        return
    print_analysis(analysis)
    click.echo()
    click.echo(render_text(assessment))
    target = html_path or Path(f"hstmon-assess-{identifier.lower()}.html")
    target.write_text(render_html(assessment))
    click.echo(f"\nHTML report: {target.resolve()}")
