"""Command-line entry points of the analysis room: `hstmon analyze` and `hstmon assess`."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

from analysis.config import RulesFileError
from analysis.report import UnknownIdError, gather, render_html, render_text
from analysis.run import AnalysisSummary, run_analysis
from models.cli import cluster_options, database_option
from models.database import SchemaOutdatedError, lost_database_message, make_engine

__all__ = ["analyze", "assess", "nightly", "print_analysis"]

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
    except DBAPIError as exc:
        raise click.ClickException(lost_database_message(exc)) from exc


@click.command()
@database_option
@_RULES_OPTION
@click.option("--full", is_flag=True, help="Re-analyse every exposure, not only changed ones.")
def analyze(database_url: str | None, rules_file: Path | None, full: bool) -> None:
    """Flag anomalous exposures and decide HOPR verdicts, for what changed since the last run.

    Each rule (guide-star acquisition failure, loss of lock, take-data flag down, guiding below
    what was commanded, wrong guide-star pair, high jitter, drift, slews, telemetry...) writes
    rows to the `flag` table with a sentence and its evidence; each exposure and visit (ipppss)
    gets a `verdict` (hopr, helpdesk, ok, not_repeatable, or incomplete when its observing logs
    are not in the store) with its HOPR deadline from the first delivery. docs/rules.md lists
    the rules. Exposures not changed by an ingest since their last analysis are skipped, unless
    a rule's version changed or --full is given.
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

    ID is a visit (IEPP01) or an association (IEPP01010): every exposure of the visit; or a
    rootname (iepp01uvq) or an exposure id (iepp01uv): that exposure. Prints the verdict with
    its HOPR deadline and first delivery in plain words (a HOPR past its 90-day limit says so),
    the JIF keyword table, unreadable keyword values and every flag with its evidence, and
    writes a self-contained HTML report with the jitter plot of each exposure.
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


def _utc_date(_ctx: click.Context, _param: click.Parameter, value: datetime | None):  # type: ignore[no-untyped-def]
    return value.replace(tzinfo=UTC) if value else None


@click.command()
@click.option(
    "--archive",
    "archive_root",
    envvar="HSTMON_ARCHIVE",
    show_envvar=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Local archive tree MAST files are downloaded into (PROGRAM/OBS_ID/FILE) and "
    "ingested from. Default: 'archive' in your hstmon data directory.",
)
@database_option
@click.option(
    "--program",
    "programs",
    multiple=True,
    metavar="ID",
    help="Only this program (proposal id, e.g. 17097). Repeatable. Default: every program.",
)
@click.option(
    "--obs-id",
    "obs_ids",
    multiple=True,
    metavar="ID",
    help="Only this observation or association (e.g. iepp01010; MAST wildcards allowed). "
    "Repeatable.",
)
@click.option(
    "--instrument",
    "instruments",
    multiple=True,
    default=("WFC3/UVIS", "WFC3/IR"),
    show_default=True,
    help="MAST instrument_name to select. Repeatable.",
)
@click.option(
    "--products",
    default="FLT,FLC,IMA,JIF,JIT,ASN",
    show_default=True,
    help="Product types to download (MAST productSubGroupDescription), comma-separated; "
    "ASN tables give each visit its members.",
)
@click.option(
    "--project",
    "projects",
    multiple=True,
    metavar="NAME",
    help="MAST project whose products to download. Repeatable. Default: the instruments' "
    "calibration pipelines (CALWF3 for WFC3, CALACS for ACS...), never HAP or HLA copies.",
)
@click.option(
    "--by",
    "date_field",
    type=click.Choice(["release", "observation"]),
    default="release",
    show_default=True,
    help="What the window bounds: the public release date, or the observation date (use this "
    "with --token to follow proprietary programs as they are observed).",
)
@click.option(
    "--since",
    type=click.DateTime(),
    callback=_utc_date,
    help="Start of the window (UTC), instead of where the last successful run ended. "
    "First run default: 7 days ago.",
)
@click.option(
    "--overlap",
    "overlap_hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Hours of the previous window to ask about again (late releases); files already "
    "present are not fetched again.",
)
@click.option(
    "--token",
    envvar="MAST_API_TOKEN",
    show_envvar=True,
    help="MAST API token for proprietary data (https://auth.mast.stsci.edu/token). "
    "Used for this run only, never stored. Prefer the environment variable: a token on the "
    "command line shows in the process list.",
)
@cluster_options
@click.option(
    "--retries",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Attempts per file after the first before a download counts as failed (with "
    "back-off: 2, 4, 8... s).",
)
@click.option(
    "--digest-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the digest (.md, .html, .json). Default: 'digests' in your hstmon "
    "data directory.",
)
@_RULES_OPTION
@click.option(
    "--progress/--no-progress", default=None, help="Show progress bars (default: on a terminal)."
)
def nightly(
    archive_root: Path | None,
    database_url: str | None,
    programs: tuple[str, ...],
    obs_ids: tuple[str, ...],
    instruments: tuple[str, ...],
    products: str,
    projects: tuple[str, ...],
    date_field: str,
    since: datetime | None,
    overlap_hours: float,
    token: str | None,
    scheduler: str | None,
    workers: int | None,
    retries: int,
    digest_dir: Path | None,
    rules_file: Path | None,
    progress: bool | None,
) -> None:
    """The nightly job: fetch what MAST released since the last good night, then ingest,
    analyze and report what needs attention.

    \b
    1. Discover: ask MAST (astroquery) for the selected instruments' products released (or
       observed, --by observation) since the last successful nightly run. Only the
       instrument's calibration pipeline FITS files are kept (no HAP or HLA copies, no
       previews), and only public ones unless a token is given; what was passed over is
       counted in the run and the digest.
    2. Download the FLT/FLC/IMA/JIF/JIT/ASN files not already in --archive (retries,
       resumes partial files, checks the FITS structure). A file MAST refuses or does not
       have (4xx), or that is still not whole FITS after its retries, is outstanding: kept
       in the download_failure table and tried again after 1, 3, 7 days, then weekly. A
       server error, timeout or lost connection fails the run instead, and the next run asks
       for the same window again.
    3. Ingest the archive (only new or changed files are read), on Dask.
    4. Analyze what changed: flags and HOPR verdicts.
    5. Digest: new flags and verdicts with HOPR deadlines, and the files outstanding with
       their next try, printed here and written as Markdown, HTML and JSON.

    Only one nightly run at a time per database: a second one exits at once (status 75). A run
    that fails or is killed is recorded in the nightly_run table, and the next run covers its
    window again. Exit status: 0 all done (outstanding files included); 1 a download failed
    for now or a file could not be ingested, or the run stopped with an error; 75 another
    nightly run holds the lock.
    """
    from analysis.digest import render_text
    from analysis.nightly import NightlyOptions, run_nightly
    from ingest.mast import MastError, MastSelection
    from ingest.pipeline import ClusterError
    from models.locks import LockBusyError

    try:
        selection = MastSelection(
            programs=programs,
            obs_ids=obs_ids,
            instruments=instruments,
            date_field=date_field,  # type: ignore[arg-type]
            product_types=tuple(p.strip().upper() for p in products.split(",") if p.strip()),
            projects=tuple(p.strip().upper() for p in projects if p.strip()),
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    options = NightlyOptions(
        archive_root=(archive_root or default_archive_root()).expanduser().resolve(),
        selection=selection,
        database_url=database_url,
        since=since,
        overlap=timedelta(hours=overlap_hours),
        scheduler=scheduler,
        workers=workers,
        token=token,
        retries=retries,
        digest_dir=digest_dir,
        rules_file=rules_file,
        progress=progress,
    )
    try:
        result = run_nightly(options)
    except LockBusyError as exc:
        click.secho(f"Not started: {exc}.", fg="yellow", err=True)
        sys.exit(75)
    except MastError as exc:
        raise click.ClickException(f"MAST: {exc} (the run is recorded; run again later)") from exc
    except (RulesFileError, SchemaOutdatedError) as exc:
        raise click.ClickException(str(exc)) from exc
    except ClusterError as exc:
        raise click.ClickException(f"{exc} (the run is recorded; run again)") from exc
    except DBAPIError as exc:
        raise click.ClickException(lost_database_message(exc)) from exc
    window = " to ".join(f"{t:%Y-%m-%d %H:%M}" if t else "the beginning" for t in result.window)
    click.secho(f"Nightly run {result.run_id}: {result.status} (window {window} UTC)", bold=True)
    if result.aborted_runs:
        click.echo(f"Earlier runs found dead and marked aborted: {result.aborted_runs}")
    if result.digest is not None:
        click.echo(render_text(result.digest, details=False))
    for kind, path in sorted(result.digest_paths.items()):
        click.echo(f"Digest ({kind}): {path}")
    if result.status != "succeeded" or result.counts.get("files_failed"):
        sys.exit(1)


def default_archive_root() -> Path:
    """Where nightly runs keep MAST's files unless told otherwise."""
    import platformdirs

    return Path(platformdirs.user_data_dir("hstmon", appauthor=False)) / "archive"
