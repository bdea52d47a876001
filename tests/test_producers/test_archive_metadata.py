"""The YouTube Data API client on recorded responses through googleapiclient's own HTTP mocks."""

from __future__ import annotations

import copy
import json
import logging
import traceback
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from googleapiclient.http import HttpMock, HttpMockSequence, RequestMockBuilder
from pydantic import SecretStr

from infra.errors import InputError, RetriesExceeded
from producers.archive.backoff import Backoff
from producers.archive.metadata import YouTubeMetadata, build_youtube_client

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "archive"
KEY = SecretStr("AIzaSyFAKE-fixture-key_0123456789abcdef")
OK = {"status": "200", "content-type": "application/json; charset=UTF-8"}


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class RecordingSequence(HttpMockSequence):
    """googleapiclient's HttpMockSequence, remembering each request URI."""

    def __init__(self, iterable: list[tuple[dict[str, str], str]]) -> None:
        super().__init__(iterable)
        self.uris: list[str] = []

    def request(self, uri, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.uris.append(uri)
        return super().request(uri, *args, **kwargs)


def ids_requested(uri: str) -> list[str]:
    return parse_qs(urlsplit(uri).query)["id"][0].split(",")


def client(http: object, sleeps: list[float] | None = None, attempts: int = 3) -> YouTubeMetadata:
    return YouTubeMetadata.from_key(
        KEY, http=http, backoff=Backoff(attempts=attempts, initial_seconds=1.0, max_seconds=5.0),
        sleep=(sleeps.append if sleeps is not None else (lambda _: None)),
    )


def test_recorded_response_is_parsed_and_missing_ids_reported() -> None:
    http = HttpMock(str(FIXTURES / "videos_list.json"), OK)
    result = client(http).fetch(["v1x01abcdef", "v1x02abcdef", "v1x03abcdef", "v1x04abcdef", "deletedXXXX"])

    query = parse_qs(urlsplit(http.uri).query)
    assert query["part"] == ["snippet,liveStreamingDetails"]
    assert query["id"] == ["v1x01abcdef,v1x02abcdef,v1x03abcdef,v1x04abcdef,deletedXXXX"]
    assert result.calls == 1
    assert result.missing == ["deletedXXXX"]
    by_id = {v.video_id: v for v in result.videos}
    first = by_id["v1x01abcdef"]
    assert first.title == "\u3010\u96d1\u8ac7\u3011Saturday chat & games \U0001f389"
    assert first.channel_id == "UCfixtureChannel00000001"
    assert first.published_at == datetime(2024, 3, 2, 17, 58, 41, tzinfo=UTC)
    assert first.actual_start == datetime(2024, 3, 2, 18, 0, 7, tzinfo=UTC)
    assert first.actual_end == datetime(2024, 3, 2, 21, 14, 52, tzinfo=UTC)
    assert [by_id[i].status for i in ("v1x01abcdef", "v1x02abcdef", "v1x03abcdef", "v1x04abcdef")] == [
        "completed", "upcoming", "live", "completed"]
    assert by_id["v1x02abcdef"].actual_start is None
    assert by_id["v1x04abcdef"].published_at == datetime(2024, 2, 24, 20, 31, 9, tzinfo=UTC)  # fractional form


def _response_for(ids: list[str]) -> str:
    template = json.loads(fixture("videos_list.json"))
    items = []
    for video_id in ids:
        item = copy.deepcopy(template["items"][0])
        item["id"] = video_id
        item["snippet"]["title"] = f"stream {video_id}"
        items.append(item)
    return json.dumps({**template, "items": items, "pageInfo": {"totalResults": len(items), "resultsPerPage": len(items)}})


def test_ids_go_fifty_to_a_call() -> None:
    ids = [f"batch{n:06d}" for n in range(120)]
    http = RecordingSequence([(OK, _response_for(ids[0:50])), (OK, _response_for(ids[50:100])),
                              (OK, _response_for(ids[100:120]))])
    result = client(http).fetch(ids + ids[:7])  # repeats are asked for once

    assert [len(ids_requested(u)) for u in http.uris] == [50, 50, 20]
    assert [i for u in http.uris for i in ids_requested(u)] == ids
    assert result.calls == 3
    assert [v.video_id for v in result.videos] == ids
    assert result.missing == []


def _assert_key_hidden(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    secret = KEY.get_secret_value()
    shown = "".join(traceback.format_exception(error))
    assert secret not in str(error) and secret not in repr(error) and secret not in shown
    assert error.__context__ is None and error.__cause__ is None  # no HttpError (URI with key) attached
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_quota_errors_back_off_capped_then_raise_retries_exceeded_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # googleapiclient logs each request URI (with key) at DEBUG
    quota = ({"status": "403"}, fixture("error_quota_exceeded.json"))
    sleeps: list[float] = []
    http = RecordingSequence([quota] * 5)

    with pytest.raises(RetriesExceeded) as raised:
        client(http, sleeps, attempts=5).fetch(["v1x01abcdef"])

    assert len(http.uris) == 5
    assert sleeps == [1.0, 2.0, 4.0, 5.0]  # exponential, capped at max_seconds
    message = str(raised.value)
    assert "403" in message and "quotaExceeded" in message and "<a href" not in message
    assert KEY.get_secret_value() in http.uris[0]  # the key really was in play
    assert any("URL being requested" in r.getMessage() for r in caplog.records)
    _assert_key_hidden(raised.value, caplog)


def test_rate_limit_and_server_errors_are_retried_until_success() -> None:
    sleeps: list[float] = []
    http = RecordingSequence([
        ({"status": "503"}, fixture("error_backend.json")),
        ({"status": "429", "retry-after": "4"}, fixture("error_rate_limited.json")),
        (OK, fixture("videos_list.json")),
    ])
    result = client(http, sleeps).fetch(["v1x01abcdef"])
    assert len(result.videos) == 4
    assert sleeps == [1.0, 4.0]  # the server's Retry-After beat the 2 s step


def test_a_rejected_key_fails_at_once_with_a_clear_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    http = RecordingSequence([({"status": "400"}, fixture("error_key_invalid.json"))] * 3)
    with pytest.raises(InputError, match="API key not valid.*DONORCAST_YOUTUBE_API_KEY") as raised:
        client(http, sleeps).fetch(["v1x01abcdef"])
    assert len(http.uris) == 1 and sleeps == []
    _assert_key_hidden(raised.value, caplog)


@pytest.mark.parametrize("key", [None, SecretStr(""), SecretStr("   ")])
def test_no_key_is_an_input_error_naming_the_setting(key: SecretStr | None) -> None:
    with pytest.raises(InputError, match="DONORCAST_YOUTUBE_API_KEY"):
        build_youtube_client(key)


def test_request_mock_builder_path() -> None:
    builder = RequestMockBuilder({"youtube.videos.list": (None, fixture("videos_list.json"))}, check_unexpected=True)
    result = YouTubeMetadata.from_key(KEY, request_builder=builder).fetch(["v1x01abcdef", "v1x04abcdef"])
    assert {v.video_id: v.status for v in result.videos}["v1x04abcdef"] == "completed"
