"""The watcher inside the daemon: scan each rule on its interval, order complete units.

One thread runs every rule. Each pass of a rule scans its tree
(:class:`~omero_adi.watch.scan.Scanner`), looks again at the units still
waiting to settle, and writes an order for each complete one through the
client API, together with its ledger row. Between scans, the thread wakes
when the next waiting unit is due to settle, so a unit is ordered
``settle_seconds`` after it was first seen unchanged, not a whole interval
later.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from omero_adi.omero.boundary import OmeroError, OmeroServer, OmeroUnreachable, UserSession
from omero_adi.settings import Settings
from omero_adi.store.queue import new_owner_id
from omero_adi.watch import ledger
from omero_adi.watch.events import WatchEvent, publish
from omero_adi.watch.rules import WatchRule
from omero_adi.watch.scan import Fingerprint, Scanner, ScanResult, Settler, Unit, fingerprint

log = logging.getLogger(__name__)

#: Orders written in one transaction.
BATCH = 500


class Refused(Exception):
    """OMERO says the unit cannot become an order (unknown user or group, …)."""


@dataclass
class RuleState:
    """One rule's scanner, waiting units and tallies (for status and metrics)."""

    rule: WatchRule
    scanner: Scanner
    settler: Settler
    known: dict[str, ledger.Known] | None = None
    refused_paths: set[str] = field(default_factory=set)
    units: dict[str, Unit] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    next_scan: float = 0.0
    last_scan: float | None = None  # wall-clock time, for metrics
    scan_seconds: float = 0.0
    ordered: int = 0
    refused: int = 0
    changed: int = 0


class WatchRunner:
    def __init__(
        self, settings: Settings, engine: Engine, server: OmeroServer | None, *,
        owner: str | None = None, clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.engine = engine
        self.server = server
        self.owner = owner or new_owner_id()
        self.clock = clock
        roots = [settings.base_dir, *settings.allowed_roots]
        self.rules = {rule.name: RuleState(rule, Scanner(rule, roots), Settler(rule, clock))
                      for rule in settings.watch}
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: OMERO answers within one pass: (group, user) → refusal or None; datasets by name.
        self._owners: dict[tuple[str, str], str | None] = {}
        self._datasets: dict[tuple[str, str, str], int] = {}
        self._unreachable: OmeroUnreachable | None = None

    # --- running in the daemon -----------------------------------------------
    def start(self) -> None:
        if not self.rules:
            return
        self._thread = threading.Thread(target=self.run, name="watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        log.info("watching %d rule(s): %s", len(self.rules), ", ".join(self.rules))
        while not self.stopping.is_set():
            try:
                wait = self.step()
            except Exception:  # a bug in one pass must not end the watching (nothing is
                # half-written: each order is one transaction)
                log.exception("watch pass failed; the rules are scanned again at their interval")
                wait = min(state.rule.scan_interval for state in self.rules.values())
            self.stopping.wait(max(wait, 0.0))

    def step(self) -> float:
        """Do what is due now; return the seconds until something is due again."""
        for state in self.rules.values():
            now = self.clock()
            if now >= state.next_scan:
                state.next_scan = now + state.rule.scan_interval
                self.scan(state)
            else:
                due = state.settler.next_due()
                if due is not None and due <= now:
                    self._guarded(state, lambda: self._settle(state))
        now = self.clock()
        upcoming = [state.next_scan for state in self.rules.values()]
        upcoming += [d for s in self.rules.values() if (d := s.settler.next_due()) is not None]
        return min(upcoming, default=now + 60.0) - now

    # --- one pass ----------------------------------------------------------
    def scan(self, state: RuleState) -> ScanResult:
        """Scan the rule's tree, check changed and waiting units, order complete ones."""
        rule = state.rule
        result = state.scanner.scan()
        state.units, state.scan_seconds, state.last_scan = result.units, result.seconds, time.time()
        self._problems(state, result.problems)

        def check() -> None:
            if state.known is None:
                state.known = ledger.known_units(self.engine, rule.name)
                state.refused_paths = {p for p, k in state.known.items() if k.state == "refused"}
            if state.refused_paths:  # forgotten ones (watch --forget) are looked at afresh
                still = ledger.refused_paths(self.engine, rule.name)
                for path in state.refused_paths - still:
                    del state.known[path]
                state.refused_paths &= still
            for path in result.touched:
                known = state.known.get(path)
                if known is not None and known.state == "ordered":
                    self._verify(state, path, known)
            for path in [p for p in state.settler.waiting if p not in result.units]:
                state.settler.forget(path)  # gone before it settled
            self._settle(state, [p for p in result.units if p not in state.known])
            ledger.save_scan(self.engine, rule=rule.name, seconds=result.seconds,
                             units_seen=len(result.units), waiting=len(state.settler.waiting),
                             problems="\n".join(result.problems) or None, daemon=self.owner)

        self._guarded(state, check)
        return result

    def _guarded(self, state: RuleState, work: Callable[[], None]) -> None:
        """Run a pass; the database being away only postpones it. OMERO's answers
        are kept for the length of one pass."""
        self._owners.clear()
        self._datasets.clear()
        self._unreachable = None
        try:
            work()
        except SQLAlchemyError as exc:
            log.warning("watch rule %r: the order database is unavailable (%s); will try again",
                        state.rule.name, type(exc).__name__)

    def _settle(self, state: RuleState, paths: Sequence[str] | None = None) -> None:
        """Look at waiting (or the given) units again; order the complete ones."""
        assert state.known is not None
        complete = []
        for path in list(state.settler.waiting) if paths is None else paths:
            if path in state.known or path not in state.units:
                state.settler.forget(path)
                continue
            look = state.settler.check(path)
            if look is not None:
                complete.append((state.units[path], look))
        for start in range(0, len(complete), BATCH):
            self._order(state, complete[start:start + BATCH])

    def _problems(self, state: RuleState, problems: list[str]) -> None:
        """Log each problem when it appears (not on every scan) and when it is gone."""
        for problem in problems:
            if problem not in state.problems:
                log.error("watch rule %r: %s", state.rule.name, problem)
        if state.problems and not problems:
            log.info("watch rule %r: no problems any more", state.rule.name)
        state.problems = list(problems)

    # --- ordering ----------------------------------------------------------
    def _order(self, state: RuleState, complete: Sequence[tuple[Unit, Fingerprint]]) -> None:
        """Write the orders of complete units, in one transaction. A unit whose
        order must wait (OMERO unreachable) stays waiting; one OMERO refuses is
        recorded as refused; one another daemon ordered first is left to it."""
        rule, known = state.rule, state.known
        assert known is not None
        orders = []
        waiting = 0
        for unit, look in complete:
            try:
                info = self._order_info(rule, unit)
            except OmeroUnreachable:
                waiting += 1
                continue
            except Refused as exc:
                self._refuse(state, unit, look, str(exc))
                continue
            orders.append((unit.path, look.as_json(), info))
        if waiting:
            log.warning("watch rule %r: %s; %d complete unit(s) wait for the next pass",
                        rule.name, self._unreachable, waiting)
        ordered = ledger.order_units(self.engine, rule=rule.name, kind=rule.unit,
                                     daemon=self.owner, orders=orders)
        for path, look_json, info in orders:
            state.settler.forget(path)
            if path not in ordered:  # another daemon (or rule) ordered it first
                found = ledger.known_unit(self.engine, path)
                if found is not None:
                    known[path] = found
                continue
            state.ordered += 1
            known[path] = ledger.Known("ordered", info["UUID"], look_json, None)
            log.info("watch rule %r: ordered %s as %s for %s/%s", rule.name, path, info["UUID"],
                     info["Group"], info["Username"])
            publish(WatchEvent("ordered", rule.name, path, info["UUID"],
                               f"for {info['Username']} in {info['Group']}"))

    def _refuse(self, state: RuleState, unit: Unit, look: Fingerprint, reason: str) -> None:
        assert state.known is not None
        if ledger.refuse_unit(self.engine, rule=state.rule.name, path=unit.path,
                              kind=state.rule.unit, fingerprint=look.as_json(),
                              daemon=self.owner, description=reason):
            state.refused += 1
            log.error("watch rule %r: %s not ordered: %s", state.rule.name, unit.path, reason)
            publish(WatchEvent("refused", state.rule.name, unit.path, None, reason))
        state.known[unit.path] = ledger.Known("refused", None, look.as_json(), None)
        state.refused_paths.add(unit.path)
        state.settler.forget(unit.path)

    def _order_info(self, rule: WatchRule, unit: Unit) -> dict[str, Any]:
        """The order, as the client API takes it; OMERO is asked only when the
        rule takes owner or Dataset from the path."""
        group, user = rule.owner(unit.segments)
        uuid = str(uuidlib.uuid4())
        destination = rule.destination_id
        name = rule.destination_name(unit.segments)
        if name is not None:
            destination = self._dataset(group, user, name)
        elif rule.group is None or rule.user is None:
            self._check_owner(group, user)
        info: dict[str, Any] = {
            "Group": group, "Username": user, "UUID": uuid, "DestinationID": destination,
            "DestinationType": rule.destination_type, "Files": [unit.path],
            "Description": f"ordered by watch rule {rule.name!r}",
        }
        pre = rule.preprocessing
        if pre is not None:
            info.update({
                "preprocessing_container": pre.container,
                "preprocessing_inputfile": pre.input_file,
                "preprocessing_outputfolder": pre.output_folder,
                "preprocessing_altoutputfolder": pre.alt_output_folder,
                "extra_params": dict(pre.extra_params),
            })
        return info

    def _session(self, group: str, user: str) -> UserSession:
        """A session as the user; once OMERO did not answer, not asked again this pass."""
        if self.server is None:
            self._unreachable = OmeroUnreachable("no OMERO connection in this process")
        if self._unreachable is not None:
            raise self._unreachable
        assert self.server is not None
        try:
            return self.server.user_session(user, group, self.settings.ttl_for_user_conn)
        except OmeroUnreachable as exc:
            self._unreachable = exc
            raise
        except OmeroError as exc:
            raise Refused(str(exc)) from exc

    def _check_owner(self, group: str, user: str) -> None:
        if (group, user) not in self._owners:
            try:
                _close(self._session(group, user))
                self._owners[group, user] = None
            except Refused as exc:
                self._owners[group, user] = str(exc)
        refusal = self._owners[group, user]
        if refusal is not None:
            raise Refused(refusal)

    def _dataset(self, group: str, user: str, name: str) -> int:
        """The Dataset's id, found or created as the user; one daemon at a time
        per name, so two daemons never create two Datasets of one name."""
        key = (group, user, name)
        if key not in self._datasets:
            with ledger.locked(self.engine, f"omero-adi watch dataset {group}/{user}/{name}"):
                omero = self._session(group, user)
                try:
                    self._datasets[key] = omero.find_or_create_dataset(name)
                except OmeroUnreachable as exc:
                    self._unreachable = exc
                    raise
                except OmeroError as exc:
                    raise Refused(str(exc)) from exc
                finally:
                    _close(omero)
        return self._datasets[key]

    # --- after ordering ------------------------------------------------------
    def _verify(self, state: RuleState, path: str, known: ledger.Known) -> None:
        """Report an ordered unit that no longer looks as it did when ordered."""
        now = fingerprint(state.rule, path)
        if now is None:
            return
        look = now.as_json()
        if look in (known.fingerprint, known.reported):
            return
        known.reported = look
        if not ledger.report_change(self.engine, path, look):
            return  # another daemon reported this look
        state.changed += 1
        before = Fingerprint.from_json(known.fingerprint)
        detail = (f"changed after it was ordered (order {known.uuid}): now {now.entries} "
                  f"file(s), {now.bytes} bytes"
                  + (f"; then {before.entries} file(s), {before.bytes} bytes" if before else "")
                  + "; it is not imported again")
        log.warning("watch rule %r: %s %s", state.rule.name, path, detail)
        publish(WatchEvent("changed", state.rule.name, path, known.uuid, detail))


def _close(session: UserSession) -> None:
    """End a session whose work is done; if OMERO cannot be told, it expires by itself."""
    try:
        session.close()
    except OmeroError as exc:
        log.debug("closing an OMERO session failed (%s); it expires by its time limit", exc)
