"""Run one stage for the reliability tests: ``python stage_driver.py DB STAGE [SOURCE] [JSON]``.

Prints ``START`` once imports and the database are ready (so a test can kill the
stage at a moment of its own work, not during start-up) and ``DONE <seconds>`` at
the end. A file, not ``python -c``, because the map stage starts worker processes
with ``spawn``, which re-imports the main module by path.
"""

from __future__ import annotations

import json
import sys
import time


def main() -> None:
    db_url, stage = sys.argv[1], sys.argv[2]
    source = sys.argv[3] if len(sys.argv) > 3 else ""
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    if isinstance(options.get("retry"), dict):
        from connector.fhir.config import RetryConfig

        options["retry"] = RetryConfig(**options["retry"])
    import connector.cohort  # noqa: F401  (imports first: START means "at work")
    import connector.extract  # noqa: F401
    import connector.mapping  # noqa: F401
    from connector import pipeline

    engine = pipeline.open_db(db_url)
    print("START", flush=True)
    t0 = time.perf_counter()
    if stage == "extract":
        pipeline.extract(engine, source, **options)
    elif stage == "map":
        pipeline.map_(engine)
    elif stage == "derive":
        pipeline.derive(engine)
    else:
        raise SystemExit(f"unknown stage {stage}")
    print(f"DONE {time.perf_counter() - t0:.3f}", flush=True)


if __name__ == "__main__":
    main()
