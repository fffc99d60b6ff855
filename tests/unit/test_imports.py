"""A process can refuse libraries it never uses, where another library would load them on its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from services.common.settings import repo_root


def _run(script: str) -> subprocess.CompletedProcess[str]:
    """In a process of its own: this one may have loaded pandas already."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=repo_root(), capture_output=True, text=True, check=False
    )


def test_a_refused_package_is_absent_and_pyarrow_converts_python_values_without_it() -> None:
    done = _run(
        """
        import sys
        from services.common.imports import refuse_imports
        refuse_imports("pandas", why="not used here")
        import pyarrow as pa
        assert pa.array(["c", "u", None]).to_pylist() == ["c", "u", None]
        assert pa.table({"a": [1, 2]}).num_rows == 2
        try:
            import pandas.core.frame
        except ModuleNotFoundError as exc:
            assert exc.name == "pandas" and "not used here" in str(exc), exc
        else:
            raise AssertionError("pandas was imported")
        assert not any(name.split(".")[0] == "pandas" for name in sys.modules)
        print("ok")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_only_the_named_packages_are_refused() -> None:
    done = _run(
        """
        import sys
        from services.common.imports import RefusedImports, refuse_imports
        refuse_imports("pandas", why="not used here")
        import numpy  # another package, loaded after the refusal
        (finder,) = [f for f in sys.meta_path if isinstance(f, RefusedImports)]
        # a package whose name only starts like a refused one is left to the other finders
        assert finder.find_spec("pandas_gbq") is None
        print(numpy.__name__)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "numpy"


def test_the_lake_writer_starts_without_pandas_or_the_postgresql_driver() -> None:
    """What ``python -m services.consumer`` imports before its first poll, prepared as its main() does."""
    done = _run(
        """
        import sys
        from services.consumer.__main__ import prepare_process
        prepare_process()
        from services.common.lake import open_lake
        from services.common.logging import configure_logging
        from services.common.settings import load_settings
        from services.consumer.wiring import run_writer
        import services.common.debezium.envelope
        print(sorted({name.split(".")[0] for name in sys.modules} & {"pandas", "psycopg"}))
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_lake_writer_allocates_arrow_memory_from_the_c_heap_in_arrows_own_code_too() -> None:
    """A dictionary-encoded Parquet file: Arrow's C++ allocates its builders from its own default pool."""
    done = _run(
        """
        import io, json
        from services.consumer.__main__ import prepare_process
        prepare_process()
        import pyarrow as pa, pyarrow.parquet as pq
        table = pa.table({"s": [str(i % 5000) for i in range(200_000)]})
        pq.write_table(table, io.BytesIO(), use_dictionary=True)
        print(json.dumps({"pool": pa.default_memory_pool().backend_name,
                          "bundled_peak": pa.mimalloc_memory_pool().max_memory(),
                          "c_heap_peak": pa.system_memory_pool().max_memory()}))
        """
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"pool": "system", "bundled_peak": 0, "c_heap_peak": result["c_heap_peak"]}
    assert result["c_heap_peak"] > 1_000_000
