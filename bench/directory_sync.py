"""RFC 2696 paged sync benchmark: N generated people from a real slapd into a SQLite store.

Runs the directory sync's phases one by one (fetch over LDAP, map to entries, read the
current directory, plan, apply in one transaction) and prints the elapsed time of each
and the process's peak resident memory; then changes 1% of the people in LDAP and syncs
again to show the incremental plan.

    .venv/bin/python bench/directory_sync.py [--count 100000] [--tls]

Needs slapd and slapadd (PEERS.md); listens on 127.0.0.1 only; leaves nothing running.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.peers

from tests.peers.pki import PrivateCA
from tests.peers.slapd import Slapd, running_slapd

from imedge.directory import ldap
from imedge.directory.mapping import map_records, requested_attributes
from imedge.directory.model import AttributeMapping, LdapSource, PeerServer
from imedge.directory.plan import plan_sync, sync_report
from imedge.store.sql import SqlStore, open_store
from imedge.store.sql.secrets import KEY_BYTES

PAGE_SIZE = 500  # the test slapd's size.pr limit for the sync account


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def phase(name: str, timings: dict[str, float]) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    print(f"  {name:<8} {timings[name]:8.2f} s   peak RSS {peak_rss_mib():7.1f} MiB", flush=True)


def peer_server(server: Slapd, tls: bool) -> PeerServer:
    return PeerServer(
        name="Bench",
        domains=(server.im_domain,),
        ldap=LdapSource(
            url=server.url,
            base_dn=server.base_dn,
            start_tls=tls,
            ca_file=str(server.ca_path) if tls else None,
            bind_dn=server.bind_dn,
            bind_password=server.password,
            page_size=PAGE_SIZE,
            timeout=60.0,
        ),
        mapping=AttributeMapping(im_address="{uid}@" + server.im_domain),
    )


async def sync_once(store: SqlStore, peer: PeerServer, title: str) -> None:
    assert peer.id is not None
    print(title, flush=True)
    timings: dict[str, float] = {}
    started = time.time()
    with phase("fetch", timings):
        records = await ldap.fetch(peer.ldap, requested_attributes(peer))
    with phase("map", timings):
        entries, issues = map_records(records, peer)
    with phase("read", timings):
        current = await store.directory.entries(peer.id)
    with phase("plan", timings):
        plan = plan_sync(current, entries)
    report = sync_report(peer.id, started=started, finished=time.time(), plan=plan, issues=issues)
    with phase("apply", timings):
        await store.directory.apply_plan(peer.id, plan, report)
    print(
        f"  total    {sum(timings.values()):8.2f} s   {len(records)} records: "
        f"{len(plan.added)} added, {len(plan.changed)} changed, {len(plan.removed)} removed, "
        f"{plan.unchanged} unchanged, {len(issues)} issues",
        flush=True,
    )


def change_one_percent(server: Slapd) -> int:
    """Give every 100th person a new title: the incremental sync's changed entries."""
    changed = 0
    for person in server.people.people[::100]:
        server.modify(person.dn, {"title": ["Benchmark tester"]})
        changed += 1
    return changed


async def run(count: int, tls: bool, work: Path) -> None:
    print(f"peak RSS after imports {peak_rss_mib():.1f} MiB", flush=True)
    print(f"generating {count} people into slapd ...", flush=True)
    start = time.perf_counter()
    with running_slapd(work / "slapd", PrivateCA(work / "ca"), count) as server:
        print(f"  slapd loaded in {time.perf_counter() - start:.1f} s", flush=True)
        key = secrets.token_bytes(KEY_BYTES)
        store = await open_store(f"sqlite+aiosqlite:///{work / 'imedge.db'}", secret_key=key)
        try:
            peer = await store.directory.add_peer_server(peer_server(server, tls), "bench")
            await sync_once(store, peer, f"first sync ({'StartTLS' if tls else 'plain LDAP'})")
            start = time.perf_counter()
            changed = change_one_percent(server)
            print(f"changed {changed} people in LDAP in {time.perf_counter() - start:.1f} s")
            await sync_once(store, peer, "second sync (1% changed)")
        finally:
            await store.close()
    print(f"peak RSS {peak_rss_mib():.1f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="people to generate")
    parser.add_argument("--tls", action="store_true", help="StartTLS with the test CA")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imedge-bench-") as tmp:
        asyncio.run(run(args.count, args.tls, Path(tmp)))


if __name__ == "__main__":
    main()
