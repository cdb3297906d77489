"""Ingesting the synthetic archive gives back the generator's truth, exposure by exposure."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from ingest.pipeline import run_ingest
from ingest.synth import read_truth


def _ingested(synthetic_archive: Path, database_url: str, engine: Engine, scheduler: str) -> dict:
    summary = run_ingest([synthetic_archive], database_url, scheduler=scheduler)
    assert summary.failed == 0, summary.failures
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT e.*, a.guidecmd, a.t_gsfail, a.t_tdfdwn FROM exposure e"
                " JOIN association a ON a.asn_id = e.asn_id"
            )
        ).mappings()
        return {row["exposure_id"]: dict(row) for row in rows}


def test_ingest_gives_back_the_generators_truth(
    synthetic_archive: Path, database_url: str, engine: Engine, dask_scheduler: str
) -> None:
    ingested = _ingested(synthetic_archive, database_url, engine, dask_scheduler)
    _every_exposure_has_its_identity_and_sample_counts(synthetic_archive, ingested)
    _labelled_failures_show_in_the_logs(synthetic_archive, ingested)
    _the_iepp01010_visit_lost_its_guide_star_in_exposures_4_to_7(ingested)


def _every_exposure_has_its_identity_and_sample_counts(synthetic_archive: Path, ingested) -> None:
    truth = read_truth(synthetic_archive)
    assert set(ingested) == {t.exposure_id for t in truth}
    for t in truth:
        row = ingested[t.exposure_id]
        assert (row["asn_id"], row["jitter_name"], row["rootname"]) == (
            t.asn_id, t.jitter_name, t.rootname,
        ), t  # fmt: skip
        assert (row["proposid"], row["config"], row["asn_member_index"]) == (
            t.proposid, t.config, t.member_index,
        ), t  # fmt: skip
        assert (row["jit_n_samples"], row["jit_n_fill"]) == (t.n_samples, t.n_fill), t


def _labelled_failures_show_in_the_logs(synthetic_archive: Path, ingested) -> None:
    for t in read_truth(synthetic_archive):
        row = ingested[t.exposure_id]
        failed_acquisition = row["gsfail"] is not None
        assert failed_acquisition == (t.mode == "gs_acq_failure"), t
        if t.mode == "gs_acq_failure":
            assert row["gsacq"] is None and row["v2_rms_mas"] is None, t
            assert row["jit_n_fill"] == row["jit_n_samples"] and row["t_gsfail"], t
        if t.mode == "loss_of_lock":
            assert row["nlosses"] > 0 and row["lockloss_s"] > 0 and row["jit_n_fill"] > 0, t
        assert bool(row["tdf_down"]) == (t.mode == "tdf_down"), t
        if t.mode == "tdf_down":
            assert row["jit_takedata_frac"] < 0.9 and row["t_tdfdwn"], t
        if t.mode == "gyro_drift":
            assert row["guideact"] != row["guidecmd"], t
            assert max(row["drift_v2_mas"], row["drift_v3_mas"]) > 10, t
        if t.mode == "high_jitter":
            assert (row["v2_rms_mas"] ** 2 + row["v3_rms_mas"] ** 2) ** 0.5 > 15, t
        if t.mode == "nominal":
            assert row["nlosses"] == 0 and row["guideact"] == row["guidecmd"], t
            assert (row["v2_rms_mas"] ** 2 + row["v3_rms_mas"] ** 2) ** 0.5 < 15, t


def _the_iepp01010_visit_lost_its_guide_star_in_exposures_4_to_7(ingested) -> None:
    visit = sorted(
        (row for row in ingested.values() if row["asn_id"] == "iepp01010"),
        key=lambda row: row["asn_member_index"],
    )
    assert [row["gsfail"] for row in visit] == [None] * 3 + ["NOLOCK"] * 4
    assert all(row["jit_n_fill"] == 0 for row in visit[:3])
