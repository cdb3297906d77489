"""`hstmon demo`: the whole job on the embedded default, from a sample archive to a summary."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import platformdirs
from sqlalchemy.engine import make_url

from analysis.cli import print_analysis
from analysis.run import run_analysis
from dashboard.cli import dashboard, dashboard_hint
from dashboard.queries import ProgramSummary, action_list, flag_counts, program_summaries
from ingest.cli import print_summary
from ingest.pipeline import run_ingest
from ingest.synth import write_archive
from ingest.synth_images import write_archive_images
from models.cli import database_option
from models.database import make_engine, resolve_database_url

__all__ = ["demo", "format_program_table"]

# Science files (FLC/FLT with stars) for the first exposures, the IEPP01010 visit among them.
_DEMO_IMAGES = 12
_EXAMPLE_SQL = (
    "SELECT proposid, count(*), avg(v2_rms_mas), avg(v3_rms_mas) FROM exposure GROUP BY proposid;",
    "SELECT exposure_id, gsfail, guideact, jit_n_fill FROM exposure WHERE gsfail IS NOT NULL;",
    "SELECT seconds, si_v2_avg, si_v3_avg FROM jitter_sample WHERE exposure_id = 'iepp01uv';",
)
_COLUMNS = (
    ("program", "proposid"),
    ("config", "configs"),
    ("visits", "associations"),
    ("exposures", "exposures"),
    ("samples", "samples"),
    ("GS acq fail", "gs_acq_failures"),
    ("lock lost", "loss_of_lock"),
    ("TDF down", "take_data_down"),
    ("guide degraded", "guiding_degraded"),
)


def format_program_table(summaries: list[ProgramSummary]) -> str:
    """A plain-text table, one program a line, with a total line."""
    header = [title for title, _ in _COLUMNS]
    rows = [[str(getattr(s, field)) for _, field in _COLUMNS] for s in summaries]
    totals = ["all", ""] + [
        str(sum(getattr(s, field) for s in summaries)) for _, field in _COLUMNS[2:]
    ]
    widths = [max(len(r[i]) for r in [header, *rows, totals]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *map(line, rows), rule, line(totals)])


def _print_findings(engine) -> None:  # type: ignore[no-untyped-def]
    click.echo("\nFlags by rule:")
    for rule, severity, count in flag_counts(engine):
        click.echo(f"  {rule:20s} {severity:7s} {count:6d}")
    actions = action_list(engine, limit=8)
    click.echo("\nVisits that need attention (HOPR first, nearest deadline first):")
    for item in actions:
        click.echo(f"  {item.visit_id}  {item.verdict:8s}  {item.summary}")
    if actions:
        click.echo(f"\nOne visit in full:  hstmon assess {actions[0].visit_id.upper()}")


def _default_archive() -> Path:
    return Path(platformdirs.user_data_dir("hstmon", appauthor=False)) / "sample-archive"


@click.command()
@database_option
@click.option(
    "--archive",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the sample archive. Default: sample-archive in your data directory.",
)
@click.option(
    "--exposures",
    default=400,
    show_default=True,
    type=click.IntRange(min=7),
    help="Exposures in the sample archive.",
)
@click.option("--seed", default=2026, show_default=True, help="Seed of the sample archive.")
@click.option("--workers", type=click.IntRange(min=1), help="Local Dask workers (default: cores).")
def demo(
    database_url: str | None, archive: Path | None, exposures: int, seed: int, workers: int | None
) -> None:
    """Run hstmon end to end on a sample archive; nothing to download, nothing to answer.

    Writes a synthetic WFC3 archive of jitter files (with labelled guiding failures), ingests it
    in parallel into the database (by default an SQLite file in your data directory), and prints
    what the observing logs say per program. Running it again does no new work.
    """
    archive = archive or _default_archive()
    url = resolve_database_url(database_url)
    click.echo(
        f"1/4 Writing a sample archive of {exposures} exposures (and {_DEMO_IMAGES} science "
        f"files) to {archive} ..."
    )
    truth = write_archive(archive, exposures, seed)
    write_archive_images(archive, truth, _DEMO_IMAGES, seed)
    click.echo("2/4 Ingesting it (Dask workers parse, one writer commits) ...")
    summary = run_ingest([archive], url, workers=workers)
    print_summary(summary)
    click.echo("3/4 What the observing logs say, per program:\n")
    engine = make_engine(url)
    click.echo(format_program_table(program_summaries(engine)))
    click.echo("\n4/4 Analysing: anomaly flags and HOPR verdicts ...")
    print_analysis(run_analysis(url))
    _print_findings(engine)
    engine.dispose()
    parsed = make_url(url)
    where = parsed.database if parsed.get_backend_name() == "sqlite" else parsed.render_as_string()
    click.echo(f"\nThe database is {where}")
    if parsed.get_backend_name() == "sqlite":
        click.echo(f"Try:  sqlite3 {where}")
    for sql in _EXAMPLE_SQL:
        click.echo(f"      {sql}")
    click.echo(dashboard_hint(url))
    # Only a person at a terminal is asked; a script or CI never waits for an answer.
    if (
        sys.stdin.isatty()
        and sys.stdout.isatty()
        and click.confirm("Open the dashboard now?", default=False)
    ):
        click.get_current_context().invoke(dashboard, database_url=url)
