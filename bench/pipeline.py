"""Pipeline benchmark: chat through embedded Tansu and real stream workers, scoring and persistence on.

    python -m bench.pipeline [--messages 200000] [--workers 1 --workers 2] [--rate 200 --rate-seconds 60]

For each worker count, two phases, each on fresh topics (own prefix) with freshly started workers
(`python -m stream_agents worker`, one ONNX Runtime thread each) and the promoted model of the
bench's state dir (`training.demo_model.ensure_demo_model` trains one there on first use):

1. throughput: the messages are replayed at max speed (`producers.replay.replay` through the
   project's `KafkaPublisher`) while the workers score them. Sustained msgs/s is the slope of the
   workers' `records_in` counters (GET /metrics/summary) between 10 % and 90 % of the messages,
   so start-up and the tail do not count; end-to-end msgs/s is all messages over the time from the
   first publish to the last record processed. PostgreSQL rows are counted until the sink has
   caught up. CPU seconds per process tree (workers, Tansu, PostgreSQL, this producer) show where
   the cores went; with `--profile`, py-spy samples the workers.
2. latency: messages offered at a fixed rate (200 msg/s for 60 s by default). A plain consumer
   reads donor-scores as they appear; latency = read time - `DonorScore.produced_at` (the newest
   message's produce time, stamped by the publisher in this process: one clock). The workers' own
   histogram (produce -> score acknowledged by the broker) is reported beside it.

Messages are tagged per phase ("~tag" on stream and message ids), so phases never share viewers,
and PostgreSQL counts select their own rows. Real chat is read at run time and never stored.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bench.machine import Recorder, percentiles_ms
from bench.procstat import self_cpu_seconds, tree_cpu_seconds

if TYPE_CHECKING:
    from infra.events import ChatMessage
    from infra.settings import Settings

TARGET_MSGS_PER_S = 1000.0
TARGET_P99_MS = 500.0


@dataclass
class PipelineBenchConfig:
    messages: int = 200_000
    workers: tuple[int, ...] = (1, 2)
    rate: float = 200.0  # offered msgs/s in the latency phase
    rate_seconds: float = 60.0
    partitions: int = 4
    embed_batch_size: int | None = None  # None = the workers' default (settings.embed_batch_size)
    worker_env: dict[str, str] = field(default_factory=dict)  # extra environment (e.g. faust's PRODUCER_LINGER)
    worker_variant: str | None = None  # a candidate fix from bench.worker_variants (None = the stock worker)
    half_capacity_latency: bool = True  # also measure latency at half capacity when `rate` overloads the workers
    source: str = "auto"
    seed: int = 0
    profile: bool = False  # py-spy the workers during the throughput phase
    profile_seconds: float = 30.0
    start_timeout: float = 240.0
    stall_timeout: float = 90.0  # give up when nothing is processed for this long


# ---------------------------------------------------------------- worker processes


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def summary(self, timeout: float = 5.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics/summary", timeout=timeout) as r:  # noqa: S310
                return json.loads(r.read())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_workers(settings: Settings, count: int, embed_batch_size: int | None, log_dir: Path,
                  extra_env: dict[str, str] | None = None, variant: str | None = None) -> list[Worker]:
    """`python -m stream_agents worker` processes on these settings (real addresses, this phase's
    topics), each on its own port. DONORCAST_* settings in `extra_env` (--worker-env) override
    `settings` through their validation; the rest is passed as it is."""
    from infra.kafka import free_port
    from infra.settings import load_settings
    from infra.workers import setting_variables, spawn_worker

    variables = setting_variables()
    overrides = {key: value for key, value in (extra_env or {}).items() if key in variables}
    others = {key: value for key, value in (extra_env or {}).items() if key not in variables}
    if variant:
        from bench.worker_variants import VARIANT_ENV

        others[VARIANT_ENV] = variant
    update: dict[str, object] = {"worker_threads": 1}
    if embed_batch_size:
        update["embed_batch_size"] = embed_batch_size
    worker_settings = load_settings(env={**settings.model_copy(update=update).to_env(), **overrides})
    workers = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        port = free_port()
        log_path = log_dir / f"{settings.topic_prefix}worker-{index}.log"
        process = spawn_worker(worker_settings.model_copy(update={"web_port": port}), log_path=log_path,
                               module="bench.worker_variants" if variant else "stream_agents",
                               loglevel="warn", extra_env=others)
        workers.append(Worker(process, port, log_path))
    return workers


def stop_all(workers: Sequence[Worker]) -> None:
    from infra.workers import stop_workers

    stop_workers([w.process for w in workers])


def summaries(workers: Sequence[Worker]) -> list[dict[str, Any] | None]:
    return [w.summary() for w in workers]


def check_alive(workers: Sequence[Worker]) -> None:
    for worker in workers:
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker on port {worker.port} exited ({worker.process.returncode}):\n{worker.log_tail()}")


def wait_healthy(workers: Sequence[Worker], timeout: float) -> None:
    """Until every worker serves a model (it loaded the promoted version)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_alive(workers)
        states = summaries(workers)
        if all(s is not None and s.get("model_version") for s in states):
            return
        time.sleep(0.5)
    raise TimeoutError(f"workers did not load a model within {timeout:.0f} s:\n{workers[0].log_tail()}")


def total(states: Sequence[dict[str, Any] | None], key: str) -> int:
    return sum(int(s.get(key, 0)) for s in states if s)


# ---------------------------------------------------------------- messages


def tagged(messages: Sequence[ChatMessage], tag: str) -> list[ChatMessage]:
    """Copies with their own stream and message ids, so phases share no viewer and no row."""
    return [m.model_copy(update={"stream_id": f"{m.stream_id}~{tag}", "message_id": f"{m.message_id}~{tag}"})
            for m in messages]


def warmup_messages(tag: str, round_: int, viewers: int = 32) -> list[ChatMessage]:
    from infra.events import ChatMessage

    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=round_)
    return [ChatMessage(stream_id=f"bench-warmup-{tag}", message_id=f"w{round_}-{i}-{tag}",
                        timestamp=start + timedelta(seconds=i), author_id=f"UCwarm{i:04d}",
                        author_name=f"warm {i}", text="hello chat") for i in range(viewers)]


async def publish_all(settings: Settings, bootstrap: str, messages: Sequence[ChatMessage]) -> None:
    from producers.publisher import KafkaPublisher

    async with KafkaPublisher(settings, bootstrap=bootstrap) as publisher:
        for message in messages:
            await publisher.publish(message)


def warm_up(settings: Settings, bootstrap: str, workers: Sequence[Worker], tag: str, timeout: float) -> int:
    """Send small rounds until every worker has processed records: partitions are assigned and the
    first-batch costs (ONNX Runtime arena, table recovery) are paid before anything is measured."""
    deadline = time.monotonic() + timeout
    sent, round_ = 0, 0
    while time.monotonic() < deadline:
        batch = warmup_messages(tag, round_)
        asyncio.run(publish_all(settings, bootstrap, batch))
        sent += len(batch)
        round_ += 1
        settle = time.monotonic() + 15
        while time.monotonic() < settle:
            check_alive(workers)
            states = summaries(workers)
            if total(states, "records_in") >= sent and all(s and s.get("records_in", 0) > 0 for s in states):
                time.sleep(2.0)  # let a rebalance triggered by a late joiner settle
                return sent
            time.sleep(0.5)
    raise TimeoutError(f"workers did not all process warm-up records within {timeout:.0f} s")


# ---------------------------------------------------------------- the services' processes


def service_pids(settings: Settings) -> dict[str, int]:
    """Pids of the embedded broker and database this bench started or reuses (none for external ones)."""
    from infra.kafka import EmbeddedKafka
    from infra.postgres import EmbeddedPostgres

    pids = {}
    if settings.kafka_bootstrap is None and (record := EmbeddedKafka(settings).running()):
        pids["tansu"] = record.pid
    if settings.database_url is None and (record := EmbeddedPostgres(settings).running()):
        pids["postgres"] = record.pid
    return pids


def cpu_snapshot(workers: Sequence[Worker], services: dict[str, int]) -> dict[str, float | None]:
    pids = {f"worker {i}": w.process.pid for i, w in enumerate(workers)} | services
    readings = tree_cpu_seconds(list(pids.values()))
    return {name: readings[pid] for name, pid in pids.items()} | {"producer (bench process)": self_cpu_seconds()}


def cpu_delta(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (round(after[k] - before[k], 2) if after.get(k) is not None and before.get(k) is not None else None)
            for k in before}


# ---------------------------------------------------------------- PostgreSQL counts


async def persisted_rows(database_url: str, tag: str) -> dict[str, int]:
    from infra.postgres import create_pool

    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        pattern = f"%~{tag}"
        return {
            "chat_messages": int(await pool.fetchval("SELECT count(*) FROM chat_messages WHERE stream_id LIKE $1", pattern)),
            "viewer_scores": int(await pool.fetchval("SELECT count(*) FROM viewer_scores WHERE stream_id LIKE $1", pattern)),
        }
    finally:
        await pool.close()


def wait_persisted(database_url: str, tag: str, expected: int, timeout: float) -> tuple[dict[str, int], float]:
    """Poll until the sink wrote `expected` chat rows (or stops making progress); (rows, seconds waited)."""
    started = time.monotonic()
    last, last_change = -1, time.monotonic()
    rows = {"chat_messages": 0, "viewer_scores": 0}
    while time.monotonic() - last_change < timeout:
        rows = asyncio.run(persisted_rows(database_url, tag))
        if rows["chat_messages"] >= expected:
            break
        if rows["chat_messages"] != last:
            last, last_change = rows["chat_messages"], time.monotonic()
        time.sleep(1.0)
    return rows, round(time.monotonic() - started, 1)


# ---------------------------------------------------------------- phase 1: throughput


@dataclass
class Sample:
    t: float  # seconds since the replay started
    records_in: int
    scores: int
    lag: int


def sustained_rate(samples: Sequence[Sample], n: int, low: float = 0.1, high: float = 0.9) -> float | None:
    """msgs/s between the samples where low*n and high*n records had been processed."""
    first = next((s for s in samples if s.records_in >= low * n), None)
    last = next((s for s in samples if s.records_in >= high * n), None)
    if first is None or last is None or last.t <= first.t:
        return None
    return (last.records_in - first.records_in) / (last.t - first.t)


async def _replay_and_watch(settings: Settings, bootstrap: str, workers: Sequence[Worker], messages: list[ChatMessage],
                            baseline: dict[str, int], stall_timeout: float, on_start: Any) -> dict[str, Any]:
    from producers.publisher import KafkaPublisher
    from producers.replay import replay, split_by_stream

    sources = split_by_stream("bench", messages)
    samples: list[Sample] = []
    started = time.monotonic()
    publish_done: dict[str, float] = {}

    async def produce() -> Any:
        async with KafkaPublisher(settings, bootstrap=bootstrap) as publisher:
            summary = await replay(publisher, sources, speed=None)
        publish_done["t"] = time.monotonic() - started
        return summary

    producer = asyncio.create_task(produce())
    on_start()
    n = len(messages)
    last_progress, last_count = time.monotonic(), -1
    while True:
        await asyncio.sleep(1.0)
        check_alive(workers)
        states = await asyncio.to_thread(summaries, workers)
        sample = Sample(t=time.monotonic() - started, records_in=total(states, "records_in") - baseline["records_in"],
                        scores=total(states, "scores_published") - baseline["scores"], lag=total(states, "lag"))
        samples.append(sample)
        if sample.records_in != last_count:
            last_count, last_progress = sample.records_in, time.monotonic()
        if sample.records_in >= n and producer.done():
            break
        if time.monotonic() - last_progress > stall_timeout:
            break
        if producer.done() and producer.exception() is not None:
            break
    replay_summary = await producer if producer.done() else None
    if replay_summary is None:
        producer.cancel()
    return {"samples": samples, "replay": replay_summary, "publish_seconds": publish_done.get("t")}


def throughput_phase(settings: Settings, endpoints: Any, workers_n: int, messages: Sequence[ChatMessage],
                     config: PipelineBenchConfig, log_dir: Path) -> dict[str, Any]:
    from bench import profile
    from infra.kafka import ensure_topics_sync

    tag = uuid.uuid4().hex[:8]
    phase = settings.model_copy(update={"topic_prefix": f"bench-{tag}-", "topic_partitions": config.partitions})
    ensure_topics_sync(endpoints.kafka_bootstrap, phase)
    addresses = {"kafka_bootstrap": endpoints.kafka_bootstrap, "database_url": endpoints.database_url}
    workers = start_workers(phase.model_copy(update=addresses), workers_n, config.embed_batch_size, log_dir,
                            config.worker_env, config.worker_variant)
    profiles: list[Any] = []
    try:
        wait_healthy(workers, config.start_timeout)
        warm_up(phase, endpoints.kafka_bootstrap, workers, tag, config.start_timeout)
        states = summaries(workers)
        baseline = {"records_in": total(states, "records_in"), "scores": total(states, "scores_published")}
        batch = tagged(messages, tag)
        services = service_pids(settings)
        cpu_before = cpu_snapshot(workers, services)

        def start_profiles() -> None:
            if config.profile:
                for i, worker in enumerate(workers):
                    path = log_dir / f"{phase.topic_prefix}worker-{i}.pyspy.txt"
                    profiles.append((path, profile.record(worker.process.pid, config.profile_seconds, path)))

        watched = asyncio.run(_replay_and_watch(phase, endpoints.kafka_bootstrap, workers, batch, baseline,
                                                config.stall_timeout, start_profiles))
        cpu = cpu_delta(cpu_before, cpu_snapshot(workers, services))
        final_states = summaries(workers)
        samples: list[Sample] = watched["samples"]
        n = len(batch)
        done = next((s for s in samples if s.records_in >= n), None)
        rows, persist_wait = (wait_persisted(endpoints.database_url, tag, n, config.stall_timeout)
                              if endpoints.database_url else ({}, None))
        replay_summary = watched["replay"]
        end_to_end_s = done.t if done else None
        sustained = sustained_rate(samples, n)
        cpu_total = sum(v for v in cpu.values() if v is not None)
        result = {
            "workers": workers_n,
            "messages": n,
            "processed": samples[-1].records_in if samples else 0,
            "completed": done is not None,
            "publish_msgs_per_s": round(replay_summary.rate, 1) if replay_summary else None,
            "publish_seconds": round(watched["publish_seconds"], 1) if watched["publish_seconds"] else None,
            "sustained_msgs_per_s": round(sustained, 1) if sustained else None,
            "end_to_end_msgs_per_s": round(n / end_to_end_s, 1) if end_to_end_s else None,
            "end_to_end_seconds": round(end_to_end_s, 1) if end_to_end_s else None,
            "scores_published": samples[-1].scores if samples else 0,
            "max_lag": max((s.lag for s in samples), default=0),
            "postgres_rows": rows,
            "postgres_caught_up_after_s": persist_wait,
            "cpu_seconds": cpu,
            "cpu_ms_per_message": {k: (round(1000 * v / n, 3) if v is not None else None) for k, v in cpu.items()},
            "cores_busy": round(cpu_total / end_to_end_s, 2) if end_to_end_s else None,
            "worker_embed_batch_size": config.embed_batch_size,
            "worker_summaries": [_brief(s) for s in final_states],
            "timeline": [[round(s.t, 1), s.records_in] for s in samples[:: max(1, len(samples) // 60)]],
        }
        if config.profile:
            result["profiles"] = _collect_profiles(profiles)
        return result
    finally:
        stop_all(workers)
        for _, process in profiles:
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(10)


def _collect_profiles(profiles: list[Any]) -> list[dict[str, Any]]:
    from bench import profile

    out = []
    for path, process in profiles:
        if process is None:
            out.append({"error": "py-spy not installed (pip install py-spy)"})
            continue
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(10)
        out.append(profile.summarise(path) or {"error": f"no samples in {path}"})
    return out


def _brief(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    keys = ("records_in", "messages", "embedded", "scores_published", "viewers", "lag", "latency_ms", "postgres_rows")
    return {k: summary.get(k) for k in keys}


# ---------------------------------------------------------------- phase 2: latency at a fixed rate


async def _offer_and_measure(settings: Settings, bootstrap: str, messages: Sequence[ChatMessage], rate: float,
                             tag: str, processed: Callable[[], int], quiet_seconds: float = 3.0) -> dict[str, Any]:
    """Publish at `rate` while reading donor-scores; `processed()` (records the workers have done) is
    read when the offering ends, to tell a system that kept up from one that built a backlog."""
    from aiokafka import TopicPartition

    from infra.kafka import consumer as kafka_consumer
    from infra.topics import DONOR_SCORES, partitions_of, topic_name
    from producers.publisher import KafkaPublisher

    latencies: list[float] = []
    stop = asyncio.Event()
    consumer = kafka_consumer(bootstrap, fetch_max_wait_ms=50)
    await consumer.start()
    name = topic_name(DONOR_SCORES, settings)
    consumer.assign([TopicPartition(name, p) for p in range(partitions_of(DONOR_SCORES, settings))])
    last_read = {"t": time.monotonic()}

    async def read() -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    score = json.loads(record.value)
                    if score.get("produced_at") and score.get("stream_id", "").endswith(f"~{tag}"):
                        latencies.append(now - float(score["produced_at"]))
                        last_read["t"] = time.monotonic()

    reader = asyncio.create_task(read())
    try:
        async with KafkaPublisher(settings, bootstrap=bootstrap) as publisher:
            started = time.monotonic()
            for i, message in enumerate(messages):
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
                await publisher.publish(message)
            offered_seconds = time.monotonic() - started
        processed_at_offer_end = await asyncio.to_thread(processed)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and time.monotonic() - last_read["t"] < quiet_seconds:
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await reader
        await consumer.stop()
    return {"latencies": latencies, "offered_seconds": offered_seconds, "processed_at_offer_end": processed_at_offer_end}


def latency_phase(settings: Settings, endpoints: Any, workers_n: int, messages: Sequence[ChatMessage],
                  config: PipelineBenchConfig, log_dir: Path, rate: float) -> dict[str, Any]:
    """Offer `rate` msgs/s for config.rate_seconds to fresh workers; latency of every score read."""
    from infra.kafka import ensure_topics_sync

    messages = messages[: max(1, int(rate * config.rate_seconds))]

    tag = uuid.uuid4().hex[:8]
    phase = settings.model_copy(update={"topic_prefix": f"bench-{tag}-", "topic_partitions": config.partitions})
    ensure_topics_sync(endpoints.kafka_bootstrap, phase)
    addresses = {"kafka_bootstrap": endpoints.kafka_bootstrap, "database_url": endpoints.database_url}
    workers = start_workers(phase.model_copy(update=addresses), workers_n, config.embed_batch_size, log_dir,
                            config.worker_env, config.worker_variant)
    try:
        wait_healthy(workers, config.start_timeout)
        warmed = warm_up(phase, endpoints.kafka_bootstrap, workers, tag, config.start_timeout)
        services = service_pids(settings)
        cpu_before = cpu_snapshot(workers, services)
        batch = tagged(messages, tag)
        measured = asyncio.run(_offer_and_measure(phase, endpoints.kafka_bootstrap, batch, rate, tag,
                                                  lambda: total(summaries(workers), "records_in") - warmed))
        cpu = cpu_delta(cpu_before, cpu_snapshot(workers, services))
        states = summaries(workers)
        latencies = measured["latencies"]
        offered = measured["offered_seconds"]
        processed = total(states, "records_in") - warmed
        backlog = len(batch) - measured["processed_at_offer_end"]
        return {
            "workers": workers_n,
            "offered_rate": rate,
            "achieved_offered_rate": round(len(batch) / offered, 1) if offered else None,
            "messages": len(batch),
            "processed_by_end": processed,
            "backlog_at_offer_end": backlog,
            # More than 2 s of offered messages still waiting when the offering stopped: the workers did
            # not keep up, and latency grew for as long as messages were offered.
            "overloaded": backlog > 2 * rate,
            "scores_read": len(latencies),
            "latency_ms": percentiles_ms(latencies, (50, 95, 99)) | {
                "max": round(1000 * max(latencies), 1) if latencies else None,
                "mean": round(1000 * float(np.mean(latencies)), 1) if latencies else None},
            "worker_histogram_ms": [s.get("latency_ms") if s else None for s in states],
            "cpu_seconds": cpu,
            "cores_busy": round(sum(v for v in cpu.values() if v is not None) / offered, 2) if offered else None,
        }
    finally:
        stop_all(workers)


# ---------------------------------------------------------------- the run


def bench_settings(settings: Settings) -> Settings:
    """The bench's own state dir (services, registry with the demo model, worker data) under the user's."""
    return settings.model_copy(update={"state_dir": Path(settings.state_dir) / "bench", "worker_threads": 1})


def migrate_database(database_url: str) -> None:
    from infra.postgres import create_pool
    from infra.repository import migrate

    async def go() -> None:
        pool = await create_pool(database_url)
        try:
            await migrate(pool)
        finally:
            await pool.close()

    asyncio.run(go())


def run(config: PipelineBenchConfig, settings: Settings, out: Path | None = None,
        *, use_state_dir_as_is: bool = False) -> dict[str, Any]:
    """Both phases for every worker count; writes the JSON to `out` (None: do not write).
    `use_state_dir_as_is`: run in settings.state_dir itself (tests) instead of STATE_DIR/bench."""
    from bench.messages import pipeline_messages
    from infra.services import running_services
    from training.demo_model import ensure_demo_model

    recorder = Recorder("pipeline", {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()})
    recorder.data["baseline"] = f"{config.workers[0]} worker(s)"
    full = PipelineBenchConfig()
    if config.messages < full.messages or config.rate_seconds < full.rate_seconds:
        recorder.note(f"reduced size: {config.messages} messages and a {config.rate_seconds:g} s latency phase "
                      f"(full run: {full.messages} and {full.rate_seconds:g} s)")
    bench = settings if use_state_dir_as_is else bench_settings(settings)
    log_dir = Path(bench.state_dir) / "bench-logs"
    sample = pipeline_messages(config.messages, source=config.source, seed=config.seed)
    n_rate = max(1, int(config.rate * config.rate_seconds))
    rate_sample = pipeline_messages(n_rate, source=config.source, seed=config.seed + 1)
    recorder.data["data"] = {"throughput_phase": sample.source, "latency_phase": rate_sample.source,
                             "text_repeat_share_10k": text_repeat_share(sample.messages)}
    if len(sample.messages) < config.messages:
        recorder.note(f"only {len(sample.messages)} messages available (asked for {config.messages})")
    with running_services(bench) as endpoints:
        recorder.data["services"] = {"kafka": "embedded Tansu" if "kafka" in endpoints.started or bench.kafka_bootstrap is None
                                     else "external", "postgres": "embedded" if bench.database_url is None else "external",
                                     "started_here": endpoints.started}
        assert endpoints.kafka_bootstrap is not None
        if endpoints.database_url:
            migrate_database(endpoints.database_url)
        clock = time.perf_counter()
        version = ensure_demo_model(bench.model_copy(update={"database_url": endpoints.database_url}), progress=True)
        recorder.data["model"] = {"version": version.version, "track": version.manifest.get("track"),
                                  "runtime_encoder": version.manifest.get("runtime_encoder"),
                                  "base_model": version.manifest.get("base_model"),
                                  "ready_after_s": round(time.perf_counter() - clock, 1)}
        runs = []
        for workers_n in config.workers:
            runs.append({
                "workers": workers_n,
                "throughput": throughput_phase(bench, endpoints, workers_n, sample.messages, config, log_dir),
                "latency": latency_phase(bench, endpoints, workers_n, rate_sample.messages, config, log_dir,
                                         config.rate),
            })
            sustained = runs[-1]["throughput"]["sustained_msgs_per_s"]
            if config.half_capacity_latency and sustained and (sustained < config.rate or runs[-1]["latency"]["overloaded"]):
                runs[-1]["latency_half_capacity"] = latency_phase(
                    bench, endpoints, workers_n, rate_sample.messages, config, log_dir,
                    max(1.0, round(min(sustained, config.rate) / 2)))
    recorder.data["runs"] = runs
    recorder.data["targets"] = targets(runs, config)
    analyse(recorder, runs)
    return recorder.finish(out)


def targets(runs: list[dict[str, Any]], config: PipelineBenchConfig) -> list[dict[str, Any]]:
    out = []
    for run_ in runs:
        sustained = run_["throughput"]["sustained_msgs_per_s"]
        p99 = run_["latency"]["latency_ms"]["p99"]
        out.append({"name": f"pipeline sustained throughput, {run_['workers']} worker(s)",
                    "target": f">= {TARGET_MSGS_PER_S:g} msgs/s", "value": sustained,
                    "met": bool(sustained and sustained >= TARGET_MSGS_PER_S)})
        out.append({"name": f"pipeline p99 produce->score at {config.rate:g} msgs/s offered, {run_['workers']} worker(s)",
                    "target": f"<= {TARGET_P99_MS:g} ms", "value": p99, "met": bool(p99 is not None and p99 <= TARGET_P99_MS)})
    return out


def text_repeat_share(messages: Sequence[ChatMessage], window: int = 10_000) -> float:
    """Share of model-input messages whose exact text was among the previous `window` ones: what a
    text -> vector cache in the worker would save the encoder."""
    from collections import OrderedDict

    recent: OrderedDict[str, None] = OrderedDict()
    repeats = inputs = 0
    for message in messages:
        if not message.is_model_input:
            continue
        inputs += 1
        if message.text in recent:
            repeats += 1
            recent.move_to_end(message.text)
        else:
            recent[message.text] = None
            if len(recent) > window:
                recent.popitem(last=False)
    return round(repeats / inputs, 3) if inputs else 0.0


def encoder_cpu_ms(results_dir: Path) -> float | None:
    """CPU ms per message of the int8 encoder alone as the worker runs it (a micro-batch of 32 sorted
    by length, in pieces of 8; 1 thread), from the encoder benchmark's result file (None when there is none)."""
    path = results_dir / "encoder.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        run_ = next(r for r in result["runs"] if r["threads"] == 1)
        variant = next(v for v in run_["variants"] if v["name"] == "e8_onnx_int8_micro_sorted")
        return round(1000.0 / variant["msgs_per_cpu_s"], 3)
    except (OSError, ValueError, KeyError, StopIteration, ZeroDivisionError):
        return None


def analyse(recorder: Recorder, runs: list[dict[str, Any]]) -> None:
    from bench.machine import RESULTS_DIR

    encoder_ms = encoder_cpu_ms(RESULTS_DIR)
    repeat = recorder.data["data"].get("text_repeat_share_10k")
    for run_ in runs:
        t = run_["throughput"]
        per_msg = {k: v for k, v in t["cpu_ms_per_message"].items() if v is not None}
        if per_msg:
            parts = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per_msg.items(), key=lambda kv: -kv[1]))
            recorder.analysis(
                f"{run_['workers']} worker(s): CPU ms per message: {parts} "
                f"(sum {sum(per_msg.values()):.2f} ms -> at most {1000 / max(sum(per_msg.values()), 1e-9):,.0f} msgs/s "
                f"per fully used core; {t['cores_busy']} cores were busy on average)."
            )
            worker_ms = sum(v for k, v in per_msg.items() if k.startswith("worker"))
            if encoder_ms:
                expected = encoder_ms * (1.0 - (repeat or 0.0))  # repeated texts come from the worker's cache
                recorder.analysis(
                    f"{run_['workers']} worker(s): the int8 encoder alone, run as the worker runs it, costs {encoder_ms:.2f} "
                    f"CPU ms per message (bench/results/encoder.json, e8), about {expected:.2f} ms after the text cache's "
                    f"hits: {100 * expected / max(worker_ms, 1e-9):.0f}% of the workers' {worker_ms:.2f} ms; the rest is "
                    "Kafka, faust, (de)serialisation, sequences, persistence, the classifier and its explanations."
                )
        for i, prof in enumerate(t.get("profiles") or []):
            if "by_component_pct" in prof:
                top = ", ".join(f"{k} {v}%" for k, v in list(prof["by_component_pct"].items())[:6])
                inclusive = ", ".join(f"{k} {v}%" for k, v in sorted(prof["inclusive_pct"].items(), key=lambda kv: -kv[1])[:6])
                recorder.analysis(f"{run_['workers']} worker(s), worker {i} py-spy ({prof['samples']} samples) by "
                                  f"innermost component: {top}; inclusive: {inclusive}.")
    for run_ in runs:
        lat, half = run_["latency"], run_.get("latency_half_capacity")
        if lat.get("overloaded"):
            text = (f"{run_['workers']} worker(s): at {lat['offered_rate']:g} msgs/s offered, {lat['backlog_at_offer_end']} of "
                    f"{lat['messages']} messages were still waiting when the offering stopped: the offered rate exceeds capacity "
                    f"({run_['throughput']['sustained_msgs_per_s']} msgs/s sustained), so latency is queueing time and "
                    "grows for as long as the rate is offered.")
            if half:
                p = half["latency_ms"]
                text += (f" At half capacity ({half['offered_rate']:g} msgs/s) p50/p95/p99 = {p['p50']}/{p['p95']}/{p['p99']} ms"
                         + (" (still overloaded)." if half.get("overloaded") else "."))
            recorder.analysis(text)
    if repeat:
        recorder.analysis(f"{100 * repeat:.0f}% of the model-input messages repeat a text seen in the previous 10k "
                          "messages: the worker's text -> vector cache (models.vector_cache) skips the encoder for them.")


def main(argv: list[str] | None = None) -> None:
    from bench.cli import run_module

    run_module("pipeline", argv or [])


if __name__ == "__main__":
    main(sys.argv[1:])
