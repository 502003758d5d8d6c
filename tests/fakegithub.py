"""The tests' fake GitHub: ``patchgate.fakegithub`` (the same server ``doit demo`` runs) whose
every request and response is checked against GitHub's own OpenAPI description
(``tests/data/gh-subset.json``, cut by ``tests/data/trim_github_openapi.py`` from the npm package
``@octokit/openapi``), with openapi-core.

Any request or response that does not match the description is recorded in ``problems``; the
fixture fails the test with them. Scripted fault answers and 304s are not checked (they are
the faults under test); everything else is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from patchgate import fakegithub
from patchgate.fakegithub import Answer, Call
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

SPEC_PATH = Path(__file__).resolve().parent / "data" / "gh-subset.json"
_spec_cache: dict[str, Any] = {}
_api_cache: dict[str, OpenAPI] = {}


def load_spec() -> dict[str, Any]:
    if "spec" not in _spec_cache:
        _spec_cache["spec"] = fakegithub.load_spec(SPEC_PATH)
    return _spec_cache["spec"]  # type: ignore[no-any-return]


def api() -> OpenAPI:
    """The validator (loading it costs ~1.5 s: one per test session)."""
    if "api" not in _api_cache:
        spec = dict(load_spec())
        spec["servers"] = [{"url": "/"}]  # any host: the fake's port changes per test
        _api_cache["api"] = OpenAPI.from_dict(spec)
    return _api_cache["api"]


def werkzeug_request(call: Call) -> Request:
    builder = EnvironBuilder(
        method=call.method,
        path=call.path,
        query_string=call.args,
        headers=dict(call.headers),
        data=call.data,
    )
    try:
        return Request(builder.get_environ())
    finally:
        builder.close()


class FakeGitHub(fakegithub.FakeGitHub):
    """patchgate.fakegithub.FakeGitHub, GitHub-shaped and validated against the description."""

    def check_request(self, call: Call) -> str | None:
        try:
            api().validate_request(WerkzeugOpenAPIRequest(werkzeug_request(call)))
        except Exception as exc:
            return str(exc)
        return None

    def check_response(self, call: Call, answer: Answer) -> str | None:
        response = Response(
            answer.body,
            status=answer.status,
            headers=dict(answer.headers),
            content_type=answer.content_type,
        )
        try:
            api().validate_response(
                WerkzeugOpenAPIRequest(werkzeug_request(call)), WerkzeugOpenAPIResponse(response)
            )
        except Exception as exc:
            return str(exc)
        return None


def serve(fake: FakeGitHub) -> Iterator[FakeGitHub]:
    with fake:
        yield fake


@pytest.fixture(name="github")
def fake_github() -> Iterator[FakeGitHub]:
    """A fake GitHub for repository octo/calc; the test fails on any OpenAPI mismatch."""
    fake = FakeGitHub("octo", "calc", spec=load_spec())
    yield from serve(fake)
    assert not fake.problems, "\n".join(fake.problems)
