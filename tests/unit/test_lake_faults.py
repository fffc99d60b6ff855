from __future__ import annotations

from pathlib import Path

import pytest

from services.common.lake import Lake, LakeTransientError, LocalLake
from services.common.settings import LakeSettings, load_settings
from services.common.signals import Shutdown
from services.consumer.wiring import run_writer
from tests.fixtures.faulty_lake import FaultyLake
from tests.fixtures.faulty_writer import FAULT_RATE_ENV, FAULT_SEED_ENV, open_faulty_lake


def test_faults_strike_before_and_after_the_write(tmp_path: Path) -> None:
    lake = FaultyLake(LocalLake(tmp_path), rate=0.5, seed=7)
    outcomes = []
    for i in range(200):
        path = f"t/f{i}.bin"
        try:
            lake.write(path, b"x")
            outcomes.append("ok")
        except LakeTransientError as exc:
            outcomes.append("after" if "after" in str(exc) else "before")
        durable = lake.exists(path)
        assert durable == (outcomes[-1] != "before")  # durable unless it struck before the write
    assert outcomes.count("ok") > 50
    assert outcomes.count("before") > 20
    assert outcomes.count("after") > 20
    assert lake.injected == 200 - outcomes.count("ok")


def test_same_seed_same_faults(tmp_path: Path) -> None:
    def run(seed: int) -> list[bool]:
        lake = FaultyLake(LocalLake(tmp_path / str(seed)), rate=0.3, seed=seed)
        failed = []
        for i in range(50):
            try:
                lake.write(f"a/{i}", b"x")
                failed.append(False)
            except LakeTransientError:
                failed.append(True)
        return failed

    assert run(3) == run(3)


def test_the_fault_rate_is_a_share(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fault rate"):
        FaultyLake(LocalLake(tmp_path), rate=1.0)


def test_the_faulty_writer_wraps_the_configured_lake_at_its_own_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAULT_RATE_ENV, "0.999")
    monkeypatch.setenv(FAULT_SEED_ENV, "5")
    lake = open_faulty_lake(LakeSettings(), str(tmp_path / "lake"))
    assert isinstance(lake, FaultyLake)
    with pytest.raises(LakeTransientError, match="injected fault"):
        lake.write("t/a.bin", b"x")


class _OpenedError(Exception):
    pass


def test_the_writer_opens_its_lake_with_the_opener_it_is_given(tmp_path: Path) -> None:
    opened: list[tuple[LakeSettings, str]] = []

    def opener(settings: LakeSettings, default_root: str) -> Lake:
        opened.append((settings, default_root))
        raise _OpenedError  # stops the writer before it reaches for Kafka

    settings = load_settings({"CDCFLOW_STACK__STATE_DIR": str(tmp_path), "CDCFLOW_WRITER__HEALTH_PORT": "0"})
    with pytest.raises(_OpenedError):
        run_writer(settings, Shutdown(), lake_opener=opener)
    assert opened == [(settings.lake, settings.lake_root())]
