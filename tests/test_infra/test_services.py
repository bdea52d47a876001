from __future__ import annotations

from pathlib import Path

from infra.kafka import EmbeddedKafka, check_reachable
from infra.services import running_services
from infra.settings import load_settings


def test_running_services_stops_only_what_it_started(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    with running_services(settings, postgres=False) as endpoints:
        assert endpoints.started == ["kafka"]
        assert endpoints.kafka_bootstrap is not None
        check_reachable(endpoints.kafka_bootstrap)
    assert EmbeddedKafka(settings).running() is None


def test_keep_leaves_a_producers_broker_running_for_the_worker(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    try:
        with running_services(settings, postgres=False, keep=True) as endpoints:
            first = endpoints.kafka_bootstrap
        record = EmbeddedKafka(settings).running()
        assert record is not None and record.url == first
        with running_services(settings, postgres=False) as endpoints:  # reused, not restarted
            assert endpoints.started == [] and endpoints.kafka_bootstrap == first
        assert EmbeddedKafka(settings).running() is not None  # not ours to stop
    finally:
        EmbeddedKafka(settings).stop()


def test_embedded_postgres_stop_then_exit_is_clean(service_tmp_path: Path) -> None:
    """A process that stopped its embedded PostgreSQL exits without embedded-postgres's exit hook
    failing on the handle we dropped (it printed a KeyError traceback at every exit before)."""
    import subprocess
    import sys

    script = (
        "from pathlib import Path; from infra.settings import load_settings; "
        "from infra.postgres import EmbeddedPostgres; "
        f"pg = EmbeddedPostgres(load_settings(state_dir=Path({str(service_tmp_path)!r}))); "
        "pg.start(); pg.stop(); pg.start(); pg.stop(); print('stopped twice')"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "stopped twice" in done.stdout, done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
