"""The API against its own OpenAPI document: every operation's authorization (401 without
credentials, 404 for a customer outside their account, 403 for a viewer acting), and
property-based calls with inputs drawn from the document's schemas that must never get a
500."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from relay.redis_client import connect
from relay.web.auth import OperatorStore, Role
from tests.conftest import PASSWORD, add_sender
from tests.support.web import OPERATOR_PASSWORD, client, make_app, web_settings

OPEN = {("get", "/healthz"), ("get", "/readyz"), ("post", "/api/v1/session")}


def body_for(path: str) -> dict[str, Any]:
    """A valid body for the operation (so that only authorization decides)."""
    if path.endswith("/password"):
        return {"current": "x", "new": "y" * 9}
    if path.endswith("/unblock-requests"):
        return {"message": "please"}
    if path == "/api/v1/session":
        return {"login": "x", "password": "y"}
    return {"reason": "why"}


def operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    doc = app.openapi()
    return [
        (method, path, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if (method, path) not in OPEN
    ]


def concrete(path: str) -> str:
    """Path parameters filled in: an account that is not the customer's, any other id."""
    values = {"login": "bob", "name": "senders"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x1"), path)


@pytest.fixture
async def web(redis, tmp_path: Path):
    app, _ = make_app(redis, web_settings(tmp_path))
    await add_sender(redis, "alice")
    await add_sender(redis, "bob")
    store = OperatorStore(redis)
    await store.add("vera", OPERATOR_PASSWORD, Role.VIEWER, 0.0)
    await store.add("adam", OPERATOR_PASSWORD, Role.ADMIN, 0.0)
    return app, await store.new_token("vera"), await store.new_token("adam")


async def test_every_operation_needs_credentials(web) -> None:
    app, _, _ = web
    ops = operations(app)
    assert len(ops) >= 20
    async with client(app) as http:
        for method, path, _ in ops:
            answer = await http.request(method, concrete(path), json=body_for(path))
            assert answer.status_code == 401, (method, path, answer.text)
            if path.startswith("/v1/"):  # the applications' API: its documented shape
                assert answer.json()["detail"]["code"] == "unauthorized"
            else:
                assert answer.json()["error"]


async def test_customers_get_404_outside_their_account(web) -> None:
    app, _, _ = web
    async with client(app) as http:
        session = await http.post("/api/v1/session", json={"login": "alice", "password": PASSWORD})
        headers = {"x-csrf-token": session.json()["csrf"]}
        for method, path, _ in operations(app):
            if path == "/api/v1/session":
                continue
            answer = await http.request(
                method, concrete(path), json=body_for(path), headers=headers
            )
            if path.startswith("/v1/"):  # the applications' API takes API keys, not sessions
                assert answer.status_code == 401, (method, path, answer.text)
                continue
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text)


async def test_viewers_read_everything_and_act_on_nothing(web) -> None:
    app, viewer, admin = web
    headers = {"authorization": f"Bearer {viewer}"}
    async with client(app) as http:
        for method, path, _ in operations(app):
            answer = await http.request(
                method, concrete(path), json=body_for(path), headers=headers
            )
            if path.startswith("/v1/"):  # API keys only: an operator's token is not one
                assert answer.status_code == 401, (method, path, answer.text)
            elif method == "get" or path == "/api/v1/session":
                assert answer.status_code in (200, 404), (method, path, answer.text)
            elif "/password" in path or ("/unblock-requests" in path and "close" not in path):
                assert answer.status_code == 404, (method, path)  # customers' own actions
            else:
                assert answer.status_code == 403, (method, path, answer.text)
        # and an admin's token passes the same checks (then fails on the missing objects)
        admin_headers = {"authorization": f"Bearer {admin}"}
        lift = await http.post(
            "/api/v1/suspensions/x1/lift", json={"reason": "r"}, headers=admin_headers
        )
        assert lift.status_code == 404


def _strategy(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values for a JSON schema as FastAPI writes them (enough of it for our models)."""
    if "$ref" in schema:
        return _strategy(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([_strategy(s, components) for s in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kind == "boolean":
        return st.booleans()
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False)
    if kind == "null":
        return st.none()
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: _strategy(v, components) for k, v in props.items() if k in required},
            optional={k: _strategy(v, components) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(_strategy(schema.get("items", {}), components), max_size=3)
    return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 40))


def _anything() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=6,
    )


_SEGMENT = st.text(st.characters(codec="utf-8", exclude_characters="/?#%"), min_size=1, max_size=30)


def test_no_input_gets_a_500(redis_server, tmp_path: Path) -> None:
    """Hypothesis over the OpenAPI document, as an admin (who may call everything) and as
    a customer: path, query and body values of the documented types, and bodies of any
    shape. Synchronous, on a loop of its own (Hypothesis drives the examples)."""
    with asyncio.Runner() as runner:
        redis = connect(redis_server.url, timeout=5.0)
        app, _ = make_app(redis, web_settings(tmp_path))
        doc = app.openapi()
        components = doc.get("components", {}).get("schemas", {})
        ops = [
            *operations(app),
            ("post", "/api/v1/session", doc["paths"]["/api/v1/session"]["post"]),
        ]
        http = client(app)
        runner.run(redis.flushall())
        runner.run(add_sender(redis, "alice"))
        admin = runner.run(_admin_token(redis))
        session = runner.run(
            http.post("/api/v1/session", json={"login": "alice", "password": PASSWORD})
        )
        csrf = session.json()["csrf"]
        customer_cookies = dict(http.cookies)

        @st.composite
        def calls(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], Any, bool]:
            method, path, op = draw(st.sampled_from(ops))
            params: dict[str, Any] = {}
            url = path
            for p in op.get("parameters", []):
                if p["in"] == "path":
                    value = draw(st.sampled_from(["alice", "bob"]) | _SEGMENT)
                    url = url.replace("{" + p["name"] + "}", quote(value, safe=""))
                elif p["in"] == "query" and draw(st.booleans()):
                    params[p["name"]] = draw(_strategy(p.get("schema", {}), components))
            content = op.get("requestBody", {}).get("content", {})
            body_schema = content.get("application/json", {}).get("schema")
            body = None
            if body_schema is not None:
                body = draw(_strategy(body_schema, components) | _anything())
            return method, url, params, body, draw(st.booleans())

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        @given(calls())
        def no_500(call: tuple[str, str, dict[str, Any], Any, bool]) -> None:
            method, url, params, body, as_admin = call
            http.cookies.clear()
            if as_admin:
                headers = {"authorization": f"Bearer {admin}"}
            else:
                headers = {"x-csrf-token": csrf}
                http.cookies.update(customer_cookies)
            answer = runner.run(
                http.request(method, url, params=params, json=body, headers=headers)
            )
            assert answer.status_code < 500, (method, url, params, body, answer.text)

        try:
            no_500()
        finally:
            runner.run(http.aclose())
            runner.run(redis.aclose())


async def _admin_token(redis: Any) -> str:
    store = OperatorStore(redis)
    await store.add("adam", OPERATOR_PASSWORD, Role.ADMIN, 0.0)
    return await store.new_token("adam")
