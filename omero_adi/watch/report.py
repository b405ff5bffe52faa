"""Showing what the watcher does: ``/metrics``, ``omero-adi status``, and
``omero-adi watch --dry-run`` (what each rule would order now)."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from sqlalchemy import Engine

from omero_adi.settings import Settings
from omero_adi.watch import ledger
from omero_adi.watch.rules import WatchRule
from omero_adi.watch.scan import Scanner, fingerprint, marker_present

if TYPE_CHECKING:
    from omero_adi.watch.runner import WatchRunner

#: name, type, help, value of a rule's state: the watch metrics, one series per rule.
METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("omero_adi_watch_last_scan_timestamp_seconds", "gauge",
     "When the rule's last scan ended (Unix time).", "last_scan"),
    ("omero_adi_watch_scan_cpu_seconds", "gauge",
     "CPU time of the rule's last scan.", "scan_seconds"),
    ("omero_adi_watch_units", "gauge", "Units the rule's last scan found.", "units"),
    ("omero_adi_watch_units_waiting", "gauge",
     "Units waiting to settle (or for their ready marker).", "waiting"),
    ("omero_adi_watch_problems", "gauge",
     "Problems of the rule's last scan (unreadable folders, links out of the roots).",
     "problems"),
    ("omero_adi_watch_units_ordered", "counter", "Units this daemon turned into orders.",
     "ordered"),
    ("omero_adi_watch_units_refused", "counter",
     "Units OMERO refused (unknown user or group, …); not tried again.", "refused"),
    ("omero_adi_watch_units_changed", "counter",
     "Ordered units seen changed afterwards; not imported again.", "changed"),
)


class WatchCollector:
    """A prometheus-client collector over a :class:`WatchRunner`'s rules."""

    def __init__(self, runner: WatchRunner):
        self.runner = runner

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, kind, text, attribute in METRICS:
            family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = family_type(name, text, labels=["rule"])
            for rule, state in self.runner.rules.items():
                value = {
                    "units": len(state.units),
                    "waiting": len(state.settler.waiting),
                    "problems": len(state.problems),
                }.get(attribute, getattr(state, attribute, None))
                if value is not None:
                    family.add_metric([rule], float(value))
            yield family


def register_metrics(runner: WatchRunner, registry: Any) -> None:
    """Serve the watch metrics on the daemon's ``/metrics`` as well."""
    if runner.rules:
        registry.register(WatchCollector(runner))


STATUS_HEADER = ("RULE", "LAST SCAN", "CPU S", "UNITS", "WAITING", "ORDERED", "REFUSED",
                 "CHANGED", "PROBLEMS")


def status_rows(engine: Engine) -> list[tuple[str, ...]]:
    """One row per rule the database knows of, for ``omero-adi status``."""
    return [
        (s.rule, s.scanned_at.strftime("%Y-%m-%d %H:%M:%S") if s.scanned_at else "never",
         f"{s.seconds:.3f}" if s.seconds is not None else "", str(s.units or 0),
         str(s.waiting or 0), str(s.ordered), str(s.refused), str(s.changed),
         (s.problems or "").replace("\n", "; ")[:80])
        for s in ledger.summaries(engine)
    ]


def rule_checks(settings: Settings) -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    """For ``omero-adi check``: one scan of each rule's tree; its problems, if any."""
    roots = [settings.base_dir, *settings.allowed_roots]

    def check(rule: WatchRule) -> tuple[bool, str]:
        result = Scanner(rule, roots).scan()
        if result.problems:
            more = len(result.problems) - 3
            return False, "; ".join(result.problems[:3]) + (f" (and {more} more)" if more > 0
                                                             else "")
        return True, (f"{rule.folder}: {len(result.units)} unit(s), the scan took "
                      f"{result.seconds:.2f}s CPU")

    return [(f"watch {rule.name}", functools.partial(check, rule)) for rule in settings.watch]


def _target(rule: WatchRule, segments: dict[str, str]) -> str:
    name = rule.destination_name(segments)
    if name is not None:
        return f"Dataset named {name!r} (found or created)"
    return f"{rule.destination_type} {rule.destination_id}"


def _verdict(rule: WatchRule, path: str, now: float) -> str | None:
    """Why the unit waits, or None when it is complete (judged by modification
    times, since a dry run has no earlier look to compare with)."""
    look = fingerprint(rule, path)
    if look is None:
        return "gone"
    if look.entries == 0 or look.bytes == 0:
        return "empty"
    if look.busy:
        return "a file in it is still being written"
    if rule.ready_marker is not None:
        return None if marker_present(rule, path) else f"no ready marker {rule.ready_marker!r}"
    age = now - look.mtime_ns / 1e9
    if age < rule.settle_seconds:
        return f"changed {max(age, 0):.0f}s ago; settles after {rule.settle_seconds:.0f}s"
    return None


def dry_run(settings: Settings, known_of: Any) -> Iterator[str]:
    """What each rule would order now, one line per unit not yet in the ledger.

    ``known_of(rule_name)`` returns the rule's ledger entries (empty without a database).
    """
    roots: Sequence[str] = [settings.base_dir, *settings.allowed_roots]
    for rule in settings.watch:
        result = Scanner(rule, roots).scan()
        known = known_of(rule.name)
        yield (f"rule {rule.name!r} ({rule.folder}, {rule.unit} units): "
               f"{len(result.units)} found, scan took {result.seconds:.3f}s CPU")
        for problem in result.problems:
            yield f"  problem      {problem}"
        now = time.time()
        for path in sorted(result.units):
            if path in known:
                continue
            segments = dict(result.units[path].segments)
            group, user = rule.owner(segments)
            waits = _verdict(rule, path, now)
            if waits is None:
                yield f"  would order  {path}  for {user} in {group} into {_target(rule, segments)}"
            else:
                yield f"  waiting      {path}  ({waits})"
        states = [k.state for k in known.values()]
        yield (f"  in the ledger: {states.count('ordered')} ordered, "
               f"{states.count('refused')} refused")
