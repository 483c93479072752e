"""RFC 4511 / RFC 2696 / RFC 4513: the LDAP fetcher against a real OpenLDAP slapd.

Paged search over several pages with progress, StartTLS and ldaps:// with the test CA,
and each failure an administrator must be told about in words they can act on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from imedge.directory import ldap
from imedge.directory.ldap import LdapError, LdapErrorKind, LdapInterrupted
from imedge.directory.model import LdapSource
from tests.peers.pki import PrivateCA
from tests.peers.process import free_port
from tests.peers.slapd import PEOPLE_COUNT, Flaw, Slapd, new_person, running_slapd

pytestmark = pytest.mark.interop

ATTRIBUTES = ("uid", "cn", "mail", "telephoneNumber", "title", "departmentNumber", "labeledURI")


def plain(server: Slapd, **changes: object) -> LdapSource:
    """The service account over plain LDAP (the TLS tests say so explicitly)."""
    source = LdapSource(
        url=server.url,
        base_dn=server.base_dn,
        start_tls=False,
        bind_dn=server.bind_dn,
        bind_password=server.password,
        page_size=40,
        timeout=5.0,
    )
    return dataclasses.replace(source, **changes)  # type: ignore[arg-type]


def trusting(source: LdapSource, ca_path: Path, **changes: object) -> LdapSource:
    """`source` validating the server's certificate against `ca_path` (its `ca_file`)."""
    return dataclasses.replace(source, ca_file=str(ca_path), **changes)  # type: ignore[arg-type]


async def expect_error(source: LdapSource, kind: LdapErrorKind) -> LdapError:
    with pytest.raises(LdapError) as caught:
        await ldap.fetch(source, ATTRIBUTES)
    assert caught.value.kind is kind, caught.value
    if source.bind_password:
        assert source.bind_password not in str(caught.value)
    return caught.value


async def test_fetches_every_person_in_pages_with_progress(slapd_server: Slapd) -> None:
    seen: list[int] = []
    records = await ldap.fetch(plain(slapd_server, page_size=40), ATTRIBUTES, progress=seen.append)

    # 300 people in pages of 40: seven full pages and one of 20, reported as running totals.
    assert seen == [*range(40, PEOPLE_COUNT, 40), PEOPLE_COUNT]
    assert sorted(r.dn for r in records) == sorted(p.dn for p in slapd_server.people.people)
    john = next(r for r in records if r.dn.startswith("uid=john_smith,"))
    assert john.attributes == {
        "uid": ("john_smith",),
        "cn": ("John Smith",),
        "mail": ("john_smith@example.test",),
        "telephoneNumber": ("+1 555 0000000",),
        "title": ("Engineer",),
        "departmentNumber": ("Sales",),
        "labeledURI": ("xmpp:john_smith@ocs.example",),
    }
    # Absent attributes are absent, not empty: the sync reports them.
    no_uid = slapd_server.people.with_flaw(Flaw.NO_UID)[0]
    record = next(r for r in records if r.dn == no_uid.dn)
    assert "uid" not in record.attributes
    assert "labeledURI" not in record.attributes


async def test_attribute_names_come_back_as_requested(slapd_server: Slapd) -> None:
    # RFC 4512 §2.5: names are case-insensitive; the caller's spelling is kept.
    source = plain(slapd_server, filter="(uid=john_smith)")
    [record] = await ldap.fetch(source, ["UID", "telephonenumber"])
    assert record.attributes == {"UID": ("john_smith",), "telephonenumber": ("+1 555 0000000",)}


async def test_start_tls_validates_the_certificate_against_the_ca(
    slapd_server: Slapd,
) -> None:
    source = trusting(plain(slapd_server), slapd_server.ca_path, start_tls=True)
    records = await ldap.fetch(source, ATTRIBUTES)
    assert len(records) == PEOPLE_COUNT
    summary = await ldap.test_connection(source)
    assert "StartTLS, certificate verified" in summary
    assert slapd_server.base_dn in summary


async def test_ldaps_validates_the_certificate_against_the_ca(
    slapd_server: Slapd,
) -> None:
    source = trusting(plain(slapd_server), slapd_server.ca_path, url=slapd_server.ldaps_url)
    assert len(await ldap.fetch(source, ATTRIBUTES)) == PEOPLE_COUNT


@pytest.mark.parametrize("scheme", ["starttls", "ldaps"])
async def test_an_untrusted_certificate_is_a_tls_error(slapd_server: Slapd, scheme: str) -> None:
    # Without the test CA the system store does not know the server's issuer.
    source = (
        plain(slapd_server, start_tls=True)
        if scheme == "starttls"
        else plain(slapd_server, url=slapd_server.ldaps_url)
    )
    error = await expect_error(source, LdapErrorKind.TLS)
    assert "certificate" in error.message
    assert "127.0.0.1" in error.message


async def test_a_certificate_for_another_name_is_a_tls_error(
    slapd_server: Slapd,
) -> None:
    # RFC 6125: the certificate names 127.0.0.1, not "localhost".
    source = trusting(
        plain(slapd_server),
        slapd_server.ca_path,
        url=f"ldaps://localhost:{slapd_server.ldaps_port}",
    )
    with pytest.raises(LdapError) as caught:
        await ldap.fetch(source, ATTRIBUTES)
    # "localhost" may resolve to ::1 first, where nothing listens; 127.0.0.1 then answers.
    assert caught.value.kind is LdapErrorKind.TLS, caught.value
    assert "localhost" in caught.value.message


async def test_wrong_password_is_a_credentials_error_without_the_password(
    slapd_server: Slapd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = plain(slapd_server, bind_password="not the password 123")
    error = await expect_error(source, LdapErrorKind.CREDENTIALS)
    assert error.message == (
        f"the LDAP server refused the bind DN {slapd_server.bind_dn}: invalid credentials "
        "(check the DN and password)"
    )
    assert "not the password 123" not in caplog.text


async def test_a_dn_without_password_is_refused_before_an_unauthenticated_bind(
    slapd_server: Slapd,
) -> None:
    # RFC 4513 §5.1.2: DN + empty password would be an anonymous bind in disguise.
    error = await expect_error(plain(slapd_server, bind_password=""), LdapErrorKind.CREDENTIALS)
    assert "needs a password" in error.message


async def test_unreachable_port() -> None:
    port = free_port()  # free: nothing listens there
    source = LdapSource(url=f"ldap://127.0.0.1:{port}", base_dn="dc=example,dc=test")
    error = await expect_error(source, LdapErrorKind.UNREACHABLE)
    assert error.message == f"cannot reach ldap://127.0.0.1:{port}: connection refused"


async def test_a_server_that_never_answers_times_out() -> None:
    # The kernel completes the TCP handshake from the backlog; nobody ever reads.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        source = LdapSource(
            url=f"ldap://127.0.0.1:{port}",
            base_dn="dc=example,dc=test",
            start_tls=False,
            timeout=1.0,
        )
        error = await expect_error(source, LdapErrorKind.TIMEOUT)
    assert "did not answer within 1 s" in error.message


@pytest.mark.parametrize("bad", ["(cn=", "cn=john", "(&(uid=a)", "((uid=a))"])
async def test_bad_filter_syntax(slapd_server: Slapd, bad: str) -> None:
    error = await expect_error(plain(slapd_server, filter=bad), LdapErrorKind.BAD_FILTER)
    assert error.message.startswith(f"the filter {bad!r} is not valid LDAP filter syntax")


async def test_wrong_base_dn(slapd_server: Slapd) -> None:
    base = "ou=nobody,dc=example,dc=test"
    error = await expect_error(plain(slapd_server, base_dn=base), LdapErrorKind.NO_SUCH_BASE)
    assert error.message.startswith(f"the base DN {base} does not exist on {slapd_server.url}")
    with pytest.raises(LdapError) as caught:
        await ldap.test_connection(plain(slapd_server, base_dn=base))
    assert caught.value.kind is LdapErrorKind.NO_SUCH_BASE


async def test_a_page_larger_than_the_server_allows_says_so(slapd_server: Slapd) -> None:
    # slapd is configured like most servers: at most 500 entries per page.
    error = await expect_error(plain(slapd_server, page_size=1000), LdapErrorKind.OTHER)
    assert "lower the page size (now 1000)" in error.message


async def test_cancel_between_pages_interrupts(slapd_server: Slapd) -> None:
    cancel = asyncio.Event()
    seen: list[int] = []

    def progress(count: int) -> None:
        seen.append(count)
        cancel.set()

    with pytest.raises(LdapInterrupted) as caught:
        await ldap.fetch(
            plain(slapd_server, page_size=5), ATTRIBUTES, progress=progress, cancel=cancel
        )
    # The worker may have read a page or two more before it saw the flag, never all 60.
    assert 5 <= caught.value.fetched < PEOPLE_COUNT
    assert seen[0] == 5


async def test_cancel_before_the_first_page(slapd_server: Slapd) -> None:
    cancel = asyncio.Event()
    cancel.set()
    with pytest.raises(LdapInterrupted) as caught:
        await ldap.fetch(plain(slapd_server), ATTRIBUTES, cancel=cancel)
    assert caught.value.fetched == 0


async def test_test_connection_summary(slapd_server: Slapd) -> None:
    summary = await ldap.test_connection(plain(slapd_server))
    assert summary.startswith(f"bound to {slapd_server.url} as {slapd_server.bind_dn}")
    assert "the password travels in clear" in summary
    assert "matches entries" in summary
    with pytest.raises(LdapError) as caught:
        await ldap.test_connection(plain(slapd_server, bind_password="wrong"))
    assert caught.value.kind is LdapErrorKind.CREDENTIALS


async def test_changes_made_while_slapd_runs_are_fetched(slapd_server: Slapd) -> None:
    try:
        john = slapd_server.people.by_uid("john_smith")
        gone = slapd_server.people.good[1]
        slapd_server.add_person(new_person("zoe_quinn"))
        slapd_server.modify(john.dn, {"title": ["Chief Engineer"], "telephoneNumber": None})
        slapd_server.delete(gone.dn)

        records = {r.dn: r for r in await ldap.fetch(plain(slapd_server), ATTRIBUTES)}
        assert len(records) == PEOPLE_COUNT
        assert records["uid=zoe_quinn,ou=people,dc=example,dc=test"].attributes["labeledURI"] == (
            "xmpp:zoe_quinn@ocs.example",
        )
        assert records[john.dn].attributes["title"] == ("Chief Engineer",)
        assert "telephoneNumber" not in records[john.dn].attributes
        assert gone.dn not in records
    finally:
        await asyncio.to_thread(slapd_server.reset)
    assert len(await ldap.fetch(plain(slapd_server), ATTRIBUTES)) == PEOPLE_COUNT


@pytest.fixture(scope="module")
def big_slapd(tmp_path_factory: pytest.TempPathFactory, peer_pki: PrivateCA) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd-2000"), peer_pki, 2000) as server:
        yield server


async def test_two_thousand_entries_in_server_sized_pages(big_slapd: Slapd) -> None:
    seen: list[int] = []
    records = await ldap.fetch(
        plain(big_slapd, page_size=500), ("uid", "labeledURI"), progress=seen.append
    )
    assert seen == [500, 1000, 1500, 2000]
    assert len({r.dn for r in records}) == 2000
    # More than the server's 500-entry limit only arrives because of paging.
    unpaged = plain(big_slapd, page_size=2000)
    await expect_error(unpaged, LdapErrorKind.OTHER)
