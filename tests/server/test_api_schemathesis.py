"""The admin REST API attacked from its own OpenAPI document with schemathesis: every
operation, with valid and with invalid input, and no answer may be a 5xx (issue 4).

The server runs in the test's event loop; schemathesis (synchronous, `requests`-based,
driven by Hypothesis) runs in a worker thread against the server's real HTTP port, with
the admin token. DNS is replaced by a resolver that fails at once, so that connection
tests of generated domains neither leave the machine nor wait for time-outs.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup

from imedge.server.s2s.resolver import Resolution, ResolutionError, Target
from tests.helpers import running_server

EXAMPLES = 25  # per operation and generation mode: the whole module stays well under a minute


class NoDns:
    """A resolver that knows no domain (stands in for `S2SResolver`)."""

    async def resolve(
        self, domain: str, *, override: tuple[str, int] | None = None
    ) -> list[Target]:
        raise ResolutionError(f"no DNS in this test ({domain})", temporary=False)

    async def explain(self, domain: str, *, override: tuple[str, int] | None = None) -> Resolution:
        raise ResolutionError(f"no DNS in this test ({domain})", temporary=False)


def attack(doc: dict[str, Any], base_url: str, token: str) -> tuple[list[str], Counter[int]]:
    """Run schemathesis on every operation; return what failed (one line per operation and
    generation mode) and how many answers of each status code came back."""
    schema = schemathesis.openapi.from_dict(doc)
    auth = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)
            test = _operation_test(strategy, base_url, auth, statuses)
            try:
                test()
            except Unsatisfiable:
                # Negative mode on an operation without parameters or body: no invalid
                # request exists to send.
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
            except (Exception, FailureGroup) as exc:  # FailureGroup is a BaseExceptionGroup
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures, statuses


def _operation_test(
    strategy: Any, base_url: str, auth: dict[str, str], statuses: Counter[int]
) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,  # nothing written to .hypothesis/
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def test(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=auth, timeout=30)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=[not_a_server_error], headers=auth)

    return test


async def test_no_operation_answers_with_a_server_error(tmp_path: Path) -> None:
    async with running_server(tmp_path, partners=()) as rs:
        rs.server.s2s.resolver = NoDns()  # type: ignore[assignment]
        await rs.add_user("alice")
        base_url = f"http://127.0.0.1:{rs.http_port}"
        async with httpx.AsyncClient(base_url=base_url) as http:
            doc = (await http.get("/api/openapi.json")).json()
        assert len(doc["paths"]) > 15
        failures, statuses = await asyncio.to_thread(attack, doc, base_url, rs.server.admin_token)
        assert not failures, "\n\n".join(failures)
        # The attack got past authentication, and both through and refused.
        assert statuses[401] == 0, statuses
        assert sum(n for code, n in statuses.items() if code < 300) > 100, statuses
        assert statuses[422] > 100, statuses
        # Still serving, and still able to say so.
        async with httpx.AsyncClient(base_url=base_url) as http:
            assert (await http.get("/health")).status_code == 200
