"""RFC 4511 peer: OpenLDAP slapd holding a peer server's people, as in PEERS.md.

`slapadd` loads a generated LDIF into an mdb database in the instance's directory, then
`slapd -d stats` runs in the foreground as our child (its own process group) on
`ldap://127.0.0.1:<port>/` (StartTLS with a certificate from the test CA) and
`ldaps://127.0.0.1:<port>/`. It is stopped by its PID; nothing outlives the fixture.

The people are `inetOrgPerson` entries under `ou=people,dc=example,dc=test`, generated
deterministically by `generate_people` with a few kinds of bad data a sync must report
(see `Person` and `PeopleSet`). The IM address is in `labeledURI` as `xmpp:<address>`
(RFC 2079: a URI), which for good entries equals the template `{uid}@ocs.example`.
Tests that change the directory use `add_person`, `modify`, `delete` (as the rootdn) and
`reset()` to go back to the generated data.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import shutil
import subprocess
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from tests.helpers import require_binary
from tests.peers.pki import PrivateCA
from tests.peers.process import (
    PeerError,
    free_port,
    rotate_log,
    run_checked,
    spawn,
    stop_group,
    tail,
    wait_listening,
)

# COMPAT: ldap3 2.9.1 imports pyasn1 >= 0.6.1's deprecated `tagMap` aliases (a warning,
# an error under pytest); as in imedge.directory.ldap.
with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore", r".* is deprecated\. Please use .* instead", DeprecationWarning
    )
    import ldap3

SUFFIX = "dc=example,dc=test"
PEOPLE_DN = f"ou=people,{SUFFIX}"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret-7"  # no blanks: slapd.conf splits on them
# The read-only account IM Edge binds as, like a real deployment's service account.
SYNC_DN = f"cn=imedge-sync,ou=services,{SUFFIX}"
SYNC_PASSWORD = "sync secret 9"
IM_DOMAIN = "ocs.example"
PEOPLE_COUNT = 300  # what the `slapd_server` fixture loads
ADDRESS = "127.0.0.1"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")

_FIRST = (
    "John", "Mary", "Ahmed", "Li", "Olga", "Pedro", "Aiko", "Fatima", "Lars", "Chloe",
    "Kwame", "Priya", "Ivan", "Sofia", "Tomas", "Nia", "Omar", "Emma", "Raj", "Hana",
)  # fmt: skip
_LAST = (
    "Smith", "Jones", "Garcia", "Chen", "Novak", "Silva", "Tanaka", "Haddad", "Berg",
    "Martin", "Mensah", "Iyer", "Petrov", "Rossi", "Kral", "Okafor", "Aziz", "Weber",
)  # fmt: skip
_TITLES = ("Engineer", "Analyst", "Manager", "Director", "Designer", "Accountant")
_DEPARTMENTS = ("Sales", "Engineering", "Finance", "Support", "Legal", "Marketing")


class Flaw(StrEnum):
    """What is wrong with a generated entry (what a sync report must name)."""

    NONE = "none"
    NO_UID = "no_uid"  # no uid and no labeledURI: no IM address by attribute or template
    NO_IM_ATTRIBUTE = "no_im_attribute"  # uid, but no labeledURI (the template still works)
    DUPLICATE_IM = "duplicate_im"  # labeledURI equal to another entry's
    FOREIGN_DOMAIN = "foreign_domain"  # labeledURI outside the peer's domain


@dataclass(frozen=True, slots=True)
class Person:
    """One generated `inetOrgPerson`; None means the attribute is absent."""

    dn: str
    cn: str
    sn: str
    given_name: str
    uid: str | None
    im: str | None  # the address in labeledURI, without the `xmpp:` scheme
    mail: str | None
    phone: str | None
    title: str
    department: str
    flaw: Flaw = Flaw.NONE

    @property
    def template_im(self) -> str | None:
        """The IM address the template `{uid}@ocs.example` gives."""
        return f"{self.uid}@{IM_DOMAIN}" if self.uid else None

    def attributes(self) -> dict[str, list[str]]:
        attrs: dict[str, list[str]] = {
            "objectClass": ["top", "person", "organizationalPerson", "inetOrgPerson"],
            "cn": [self.cn],
            "sn": [self.sn],
            "givenName": [self.given_name],
            "displayName": [self.cn],
            "title": [self.title],
            "ou": [self.department],
            "departmentNumber": [self.department],
        }
        optional = {
            "uid": self.uid,
            "labeledURI": f"xmpp:{self.im}" if self.im else None,
            "mail": self.mail,
            "telephoneNumber": self.phone,
        }
        attrs.update({k: [v] for k, v in optional.items() if v is not None})
        return attrs


@dataclass(frozen=True, slots=True)
class PeopleSet:
    """The generated people and what a correct sync makes of them."""

    people: tuple[Person, ...]

    def __len__(self) -> int:
        return len(self.people)

    def with_flaw(self, flaw: Flaw) -> tuple[Person, ...]:
        return tuple(p for p in self.people if p.flaw is flaw)

    @property
    def good(self) -> tuple[Person, ...]:
        return self.with_flaw(Flaw.NONE)

    def by_uid(self, uid: str) -> Person:
        return next(p for p in self.people if p.uid == uid)

    @property
    def duplicated_ims(self) -> frozenset[str]:
        """IM addresses held by more than one entry (each such entry is in error)."""
        ims = [p.im for p in self.people if p.im]
        return frozenset(a for a in ims if ims.count(a) > 1)


def generate_people(count: int, *, domain: str = IM_DOMAIN) -> Iterator[Person]:
    """`count` people, deterministic; every 40th-ish entry has one `Flaw`.

    Flaws are placed by index so a few hundred people hold every kind: index 7 (mod 40)
    lacks uid and labeledURI, 13 lacks labeledURI only, 21 repeats the labeledURI of the
    entry before it, 33 has an address in `elsewhere.example`. Every 11th has no mail and
    every 9th no telephoneNumber (optional fields, not errors). The first person is John
    Smith, `john_smith@ocs.example` (the issue's example), with every attribute.
    """
    seen: dict[str, int] = {}
    previous_im: str | None = None
    names = itertools.product(_LAST, _FIRST)
    for i in range(count):
        last, first = next(names) if i < len(_LAST) * len(_FIRST) else (_LAST[i % 18], "Bulk")
        base = f"{first}_{last}".lower()
        n = seen.get(base, 0)
        seen[base] = n + 1
        uid: str | None = base if n == 0 else f"{base}{n + 1}"
        cn = f"{first} {last}" if n == 0 else f"{first} {last} {n + 1}"
        im: str | None = f"{uid}@{domain}"
        flaw = Flaw.NONE
        slot = i % 40
        if slot == 7:
            flaw, uid, im = Flaw.NO_UID, None, None
        elif slot == 13:
            flaw, im = Flaw.NO_IM_ATTRIBUTE, None
        elif slot == 21 and previous_im is not None:
            flaw, im = Flaw.DUPLICATE_IM, previous_im
        elif slot == 33:
            flaw, im = Flaw.FOREIGN_DOMAIN, f"{uid}@elsewhere.example"
        rdn = f"uid={uid}" if uid else f"cn={cn}"
        yield Person(
            dn=f"{rdn},{PEOPLE_DN}",
            cn=cn,
            sn=last,
            given_name=first,
            uid=uid,
            im=im,
            mail=f"{uid or base}@example.test" if i % 11 != 10 else None,
            phone=f"+1 555 {i:07d}" if i % 9 != 8 else None,
            title=_TITLES[i % len(_TITLES)],
            department=_DEPARTMENTS[i % len(_DEPARTMENTS)],
            flaw=flaw,
        )
        previous_im = im


def _ldif_value(attr: str, value: str) -> str:
    # RFC 2849 §2: a value that is not a SAFE-STRING is base64-encoded (`attr:: ...`).
    if value.isascii() and value.isprintable() and not value.startswith((" ", ":", "<")):
        return f"{attr}: {value}"
    import base64

    return f"{attr}:: {base64.b64encode(value.encode()).decode()}"


def ldif_entry(dn: str, attributes: Mapping[str, Sequence[str]]) -> str:
    lines = [_ldif_value("dn", dn)]
    lines += [_ldif_value(a, v) for a, values in attributes.items() for v in values]
    return "\n".join(lines) + "\n\n"


def _base_entries() -> Iterator[str]:
    yield ldif_entry(
        SUFFIX,
        {"objectClass": ["top", "dcObject", "organization"], "dc": ["example"], "o": ["Example"]},
    )
    for ou in ("people", "services"):
        yield ldif_entry(
            f"ou={ou},{SUFFIX}", {"objectClass": ["top", "organizationalUnit"], "ou": [ou]}
        )
    # A cleartext userPassword is fine for a simple bind (slapd compares it as stored).
    yield ldif_entry(
        SYNC_DN,
        {
            "objectClass": ["top", "person", "simpleSecurityObject"],
            "cn": ["imedge-sync"],
            "sn": ["IM Edge"],
            "userPassword": [SYNC_PASSWORD],
        },
    )


def write_ldif(path: Path, people: Iterable[Person]) -> None:
    """Stream the suffix, the service account and `people` to `path` (100,000 is fine)."""
    with path.open("w", encoding="utf-8") as f:
        f.writelines(_base_entries())
        f.writelines(ldif_entry(p.dn, p.attributes()) for p in people)


_LIVE: set[Slapd] = set()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop()


class Slapd:
    """One slapd on 127.0.0.1 serving `dc=example,dc=test` from `directory`.

    `url` speaks StartTLS (and plain LDAP), `ldaps_url` TLS from the first byte; both
    present a certificate for IP 127.0.0.1 from `ca`. `bind_dn`/`password` is the read-only
    service account; the rootdn is used by the modification helpers.
    """

    bind_dn = SYNC_DN
    password = SYNC_PASSWORD
    base_dn = PEOPLE_DN
    root_dn = ROOT_DN
    root_password = ROOT_PASSWORD
    im_domain = IM_DOMAIN

    def __init__(
        self,
        directory: Path,
        ca: PrivateCA,
        people: PeopleSet,
        *,
        binary: str = "slapd",
        slapadd: str = "slapadd",
    ) -> None:
        self.directory = directory
        self.ca = ca
        self.people = people
        self.binary = binary
        self.slapadd = slapadd
        self._proc: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port(ADDRESS)
        self.ldaps_port = free_port(ADDRESS)
        self.conf_path = directory / "slapd.conf"
        self.ldif_path = directory / "seed.ldif"
        self.db_path = directory / "db"
        self.console_path = directory / "slapd.log"
        self.cert = ca.issue(
            "ldap.example.test", directory=directory / "tls", ip_addresses=[ADDRESS]
        )

    @property
    def url(self) -> str:
        return f"ldap://{ADDRESS}:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://{ADDRESS}:{self.ldaps_port}"

    @property
    def ca_path(self) -> Path:
        return self.ca.ca_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def _config(self) -> str:
        d = self.directory
        return "\n".join(
            [
                *(
                    f"include {SCHEMA_DIR}/{s}.schema"
                    for s in ("core", "cosine", "inetorgperson", "nis")
                ),
                f"pidfile {d}/slapd.pid",
                f"argsfile {d}/slapd.args",
                f"modulepath {MODULE_DIR}",
                "moduleload back_mdb",
                f"TLSCACertificateFile {self.cert.ca}",
                f"TLSCertificateFile {self.cert.cert}",
                f"TLSCertificateKeyFile {self.cert.key}",
                # Like most servers, at most 500 entries per request or page; paging
                # (RFC 2696) is how a client gets them all.
                "sizelimit size.soft=500 size.hard=500 size.pr=500 size.prtotal=unlimited",
                "database mdb",
                "maxsize 2147483648",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ROOT_DN}"',
                f"rootpw {ROOT_PASSWORD}",
                f"directory {self.db_path}",
                "index objectClass eq",
                "index uid,mail,cn eq,sub",
                "access to attrs=userPassword by self write by anonymous auth by * none",
                "access to * by users read by * none",
                "",
            ]
        )

    def _load(self) -> None:
        if self.db_path.exists():
            shutil.rmtree(self.db_path)
        self.db_path.mkdir()
        self.conf_path.write_text(self._config())
        write_ldif(self.ldif_path, self.people.people)
        # -q: no checks beyond the schema's; slapadd of 100,000 entries stays fast.
        run_checked(
            [self.slapadd, "-q", "-f", str(self.conf_path), "-l", str(self.ldif_path)],
            what="slapadd",
            timeout=600,
        )

    def start(self) -> None:
        if self.running:
            raise PeerError("slapd already running")
        self._load()
        rotate_log(self.console_path)
        urls = f"{self.url}/ {self.ldaps_url}/"
        proc = spawn(
            [self.binary, "-f", str(self.conf_path), "-h", urls, "-d", "stats"],
            console=self.console_path,
        )
        self._proc = proc
        _LIVE.add(self)
        try:
            wait_listening(
                ADDRESS,
                (self.port, self.ldaps_port),
                proc=proc,
                what="slapd",
                logs=[self.console_path],
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _LIVE.discard(self)
        if proc is not None:
            stop_group(proc)

    def reset(self) -> None:
        """Back to the generated people (restart with a fresh database, ~0.3 s)."""
        self.stop()
        self.start()

    def __enter__(self) -> Slapd:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.console_path, lines=lines)

    # -- changing the directory while it runs (as the rootdn) ----------------------------

    @contextlib.contextmanager
    def _admin(self) -> Iterator[ldap3.Connection]:
        """A connection bound as the rootdn, unbound after (ldap3's own `with` keeps a
        connection open that was already bound on entry)."""
        server = ldap3.Server(ADDRESS, port=self.port, get_info=ldap3.NONE, connect_timeout=5)
        conn = ldap3.Connection(
            server, ROOT_DN, ROOT_PASSWORD, receive_timeout=10, raise_exceptions=True
        )
        try:
            conn.bind()
            yield conn
        finally:
            conn.unbind()

    def add(self, dn: str, attributes: Mapping[str, Sequence[str]]) -> None:
        with self._admin() as conn:
            conn.add(dn, attributes={k: list(v) for k, v in attributes.items()})

    def add_person(self, person: Person) -> None:
        self.add(person.dn, person.attributes())

    def modify(self, dn: str, changes: Mapping[str, Sequence[str] | None]) -> None:
        """Replace each attribute's values; None (or no values) deletes the attribute."""
        ops = {
            attr: [(ldap3.MODIFY_REPLACE, list(values or []))] for attr, values in changes.items()
        }
        with self._admin() as conn:
            conn.modify(dn, ops)

    def delete(self, dn: str) -> None:
        with self._admin() as conn:
            conn.delete(dn)

    def __repr__(self) -> str:
        return f"<Slapd {self.url} {len(self.people)} people>"


def new_person(uid: str, *, im: str | None = None, cn: str | None = None) -> Person:
    """A person to add while slapd runs (e.g. an incremental sync's new entry)."""
    name = cn or uid.replace("_", " ").title()
    first, _, last = name.partition(" ")
    return Person(
        dn=f"uid={uid},{PEOPLE_DN}",
        cn=name,
        sn=last or first,
        given_name=first,
        uid=uid,
        im=im if im is not None else f"{uid}@{IM_DOMAIN}",
        mail=f"{uid}@example.test",
        phone="+1 555 0000000",
        title="Engineer",
        department="Engineering",
    )


@contextlib.contextmanager
def running_slapd(directory: Path, ca: PrivateCA, count: int = 300) -> Iterator[Slapd]:
    """`with running_slapd(dir, ca, count) as ldap:` — started, and stopped after."""
    server = Slapd(
        directory,
        ca,
        PeopleSet(tuple(generate_people(count))),
        binary=require_binary("slapd"),
        slapadd=require_binary("slapadd"),
    )
    with server:
        yield server
