from __future__ import annotations

from pathlib import Path

import pytest

from services.common.lake import LakeTransientError, LocalLake, open_lake
from services.common.lake.faulty import FaultyLake
from services.common.settings import LakeSettings


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


def test_open_lake_wraps_only_when_asked(tmp_path: Path) -> None:
    assert isinstance(open_lake(LakeSettings(fault_rate=0.2), str(tmp_path)), FaultyLake)
    assert isinstance(open_lake(LakeSettings(), str(tmp_path)), LocalLake)
    with pytest.raises(ValueError, match="fault rate"):
        FaultyLake(LocalLake(tmp_path), rate=1.0)
