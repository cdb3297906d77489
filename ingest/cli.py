"""Command-line entry points of the ingest room: `hstmon ingest` and `hstmon synth`."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from sqlalchemy.exc import DBAPIError

from ingest.pipeline import ClusterError, IngestSummary, run_ingest
from models.cli import cluster_options, database_option
from models.database import SchemaOutdatedError, lost_database_message

__all__ = ["ingest", "print_summary", "synth"]


def print_summary(summary: IngestSummary) -> None:
    """A few lines a person can read at the end of a run."""
    counts = summary.counts
    click.echo(
        f"Ingest run {summary.run_id}: {summary.files_seen} files seen; "
        f"{counts.get('ingested', 0)} ingested, {counts.get('unchanged', 0)} unchanged, "
        f"{counts.get('skipped', 0)} skipped (not jitter files), {counts.get('failed', 0)} failed; "
        f"{summary.exposures} exposure records and {summary.samples} jitter samples written."
    )
    if summary.warnings:
        click.secho(
            f"  {len(summary.warnings)} keyword value(s) could not be read: they are NULL and the "
            "rest of each file was ingested (SELECT * FROM file_warning)",
            fg="yellow",
            err=True,
        )
        for message in summary.warnings[:5]:
            click.secho(f"  warning: {message}", fg="yellow", err=True)
    for path, error in summary.failures[:20]:
        click.secho(f"  failed: {path}: {error}", fg="red", err=True)
    if len(summary.failures) > 20:
        click.secho(
            f"  ... and {len(summary.failures) - 20} more "
            "(SELECT path, error FROM source_file WHERE status = 'failed')",
            fg="red",
            err=True,
        )


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@database_option
@cluster_options
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Parse again files that failed before even if their bytes have not changed.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Show a progress bar (default: on a terminal)."
)
def ingest(
    paths: tuple[Path, ...],
    database_url: str | None,
    scheduler: str | None,
    workers: int | None,
    retry_failed: bool,
    progress: bool | None,
) -> None:
    """Ingest HST jitter files (_jif, _jit, with _asn tables) found under PATHS.

    PATHS are files or directory trees (searched for *.fits and *.fits.gz, plain or gzipped).
    Files already ingested with the same content are skipped, so a nightly run only does new
    work; a changed file replaces what it said before. A file that cannot be read is recorded
    with its reason in the source_file table and the run goes on.

    Exit status: 0 when every file was ingested, unchanged or skipped; 1 when any file failed.
    """
    try:
        summary = run_ingest(
            paths,
            database_url,
            scheduler=scheduler,
            workers=workers,
            retry_failed=retry_failed,
            progress=progress,
        )
    except DBAPIError as exc:
        raise click.ClickException(lost_database_message(exc)) from exc
    except (SchemaOutdatedError, ClusterError) as exc:
        raise click.ClickException(str(exc)) from exc
    print_summary(summary)
    if summary.failed:
        sys.exit(1)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--exposures",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many exposures to write.",
)
@click.option("--seed", default=0, show_default=True, help="Random seed: same seed, same files.")
@click.option(
    "--gzip/--plain",
    default=True,
    show_default=True,
    help="Write .fits.gz as MAST serves them, or plain .fits.",
)
@click.option(
    "--images",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Also write FLC/FLT science files (stars of known FWHM, trailed where guiding "
    "failed) for this many exposures, the IEPP01010 visit first.",
)
def synth(directory: Path, exposures: int, seed: int, gzip: bool, images: int) -> None:
    """Write a synthetic WFC3 archive of jitter files into DIRECTORY.

    Files have exactly the structure of genuine HST JIF/JIT/ASN files, for many programs, with
    nominal exposures and labelled failures (guide-star acquisition failure, loss of lock,
    take-data flag down, gyro drift, high jitter). The labels are written to DIRECTORY/truth.csv.
    With --images, some exposures also get FLC/FLT files whose stars have a known FWHM.
    """
    from ingest.synth import write_archive
    from ingest.synth_images import write_archive_images

    written = write_archive(directory, exposures, seed, gzip=gzip)
    pictures = write_archive_images(directory, written, images, seed) if images else []
    modes: dict[str, int] = {}
    for exposure in written:
        modes[exposure.mode] = modes.get(exposure.mode, 0) + 1
    summary = ", ".join(f"{n} {mode}" for mode, n in sorted(modes.items()))
    click.echo(f"Wrote {len(written)} exposures to {directory} ({summary}); labels in truth.csv")
    if pictures:
        click.echo(f"and {len(pictures)} science files (injected PSF truth in images.csv)")
