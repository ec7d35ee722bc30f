"""``eventfold privacy``: forget a data subject from the command line, and ask about one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import msgspec
import pytest
from click.testing import CliRunner, Result

import eventfold
import eventfold.privacy
from eventfold.cli import cli
from eventfold.privacy import AUDIT_STREAM, Personal


class CliPatientAdmitted(eventfold.Event):
    patient_id: str
    name: Annotated[str, Personal(subject="patient_id", replacement="<erased>")]
    ward: str


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/clinic.db"

    async def seed() -> None:
        async with eventfold.connect(url) as store:
            eventfold.privacy.enable(store)
            for n in (1, 2):
                await store.append(
                    f"patient-{n}",
                    [CliPatientAdmitted(patient_id=f"p{n}", name=f"Patient {n}", ward="B")],
                    expected_version=eventfold.NO_STREAM,
                )

    asyncio.run(seed())
    return url


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--url", url, "privacy", *args])


def names(url: str) -> dict[str, str]:
    async def read() -> dict[str, str]:
        async with eventfold.connect(url) as store:
            eventfold.privacy.enable(store, cache_seconds=0)
            return {e.stream_id: e.data.name async for e in store.read_all()
                    if isinstance(e.data, CliPatientAdmitted)}  # fmt: skip

    return asyncio.run(read())


def test_forget_erases_one_subjects_fields_and_records_it(url: str) -> None:
    assert names(url) == {"patient-1": "Patient 1", "patient-2": "Patient 2"}
    result = run(url, "forget", "p1", "--reason", "request 12", "--actor", "ann", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert (record["subject"], record["keys_deleted"]) == ("p1", 1)
    assert names(url) == {"patient-1": "<erased>", "patient-2": "Patient 2"}

    async def audit() -> list[eventfold.RecordedEvent]:
        async with eventfold.connect(url) as store:
            return [e async for e in store.read_stream(AUDIT_STREAM)]

    [forgotten] = asyncio.run(audit())
    assert (forgotten.data.subject, forgotten.data.reason, forgotten.data.actor) == (
        "p1",
        "request 12",
        "ann",
    )
    assert str(forgotten.position) == record["audit_position"]
    assert "Patient 1" not in msgspec.json.encode(forgotten.data).decode()


def test_status_says_whether_a_subjects_fields_can_be_opened(url: str) -> None:
    kept = run(url, "status", "p2")
    assert kept.exit_code == 0, kept.output
    assert "has keys" in kept.output
    assert run(url, "forget", "p2").exit_code == 0
    gone = run(url, "status", "p2")
    assert gone.exit_code == 1
    assert "no keys" in gone.output


def test_a_bad_subject_is_refused_and_nothing_is_recorded(url: str) -> None:
    result = run(url, "forget", "")
    assert result.exit_code == 2
    assert "subject" in result.output
    assert names(url)["patient-1"] == "Patient 1"
