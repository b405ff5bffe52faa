"""Repoint a fileset's links from the local temporary copies to the durable ones.

An in-place import of preprocessed files leaves links in ManagedRepository
that point into the local temporary folder. :func:`redirect_links` switches
each of them to the durable copy (``<original dir>/.processed/<same name>``),
one atomic rename per link, and removes the temporary folder only when no
link needs it any more. It is the same for Dataset and Screen imports, and
running it again after a partial failure finishes the job.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

#: Maps a local temporary file to its durable copy (None: unknown).
DurableFor = Callable[[Path], "Path | None"]


@dataclass(frozen=True)
class Switch:
    link: Path
    old_target: Path
    new_target: Path


@dataclass(frozen=True)
class Problem:
    link: Path
    reason: str


@dataclass
class RedirectReport:
    switched: list[Switch] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    tmp_removed: bool = False

    @property
    def complete(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """One human-readable paragraph: what was switched, what was not."""
        text = f"{len(self.switched)} link(s) switched to the durable copies"
        if self.problems:
            shown = "; ".join(f"{p.link}: {p.reason}" for p in self.problems[:10])
            more = f" (and {len(self.problems) - 10} more)" if len(self.problems) > 10 else ""
            text += (
                f"; {len(self.problems)} not switched and still pointing at their "
                f"temporary copies, which were kept: {shown}{more}"
            )
        elif self.tmp_removed:
            text += "; temporary folder removed"
        return text


def _links(directory: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(directory):
        for name in [*dirs, *files]:
            path = Path(root, name)
            if path.is_symlink():
                yield path


def _target(link: Path) -> Path:
    return Path(os.path.normpath(link.parent / os.readlink(link)))


def _inside(path: Path, folders: Sequence[Path]) -> Path | None:
    """``path`` relative to the first folder holding it, else None."""
    for folder in folders:
        if path.is_relative_to(folder):
            return path.relative_to(folder)
    return None


def _switch(link: Path, new_target: Path) -> None:
    """Point ``link`` at ``new_target`` in one rename: it never stops existing."""
    temporary = link.with_name(f".{link.name}.adi-{secrets.token_hex(4)}")
    os.symlink(new_target, temporary)
    try:
        os.replace(temporary, link)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def redirect_links(
    fileset_dirs: Sequence[Path], tmp_dir: Path, durable_for: DurableFor, *,
    remove_tmp: bool = True,
) -> RedirectReport:
    """Switch every link under ``fileset_dirs`` that points into ``tmp_dir``.

    A link whose durable copy is unknown or missing is left as it is and
    reported; ``tmp_dir`` is deleted only when every link was switched and
    ``remove_tmp`` (False: other filesets may still link into it).
    """
    report = RedirectReport()
    tmp_forms = list(dict.fromkeys(Path(f(tmp_dir)) for f in (os.path.normpath, os.path.realpath)))
    plan: list[Switch] = []
    for directory in fileset_dirs:
        if not directory.is_dir():
            report.problems.append(Problem(directory, "fileset folder not found"))
            continue
        for link in _links(directory):
            target = _target(link)
            relative = _inside(target, tmp_forms)
            if relative is None:
                continue
            durable = durable_for(tmp_dir / relative)
            if durable is None:
                report.problems.append(Problem(link, f"no durable copy known for {target}"))
            elif not durable.exists():
                report.problems.append(Problem(link, f"durable copy {durable} does not exist"))
            else:
                plan.append(Switch(link, target, durable))
    for switch in plan:
        try:
            _switch(switch.link, switch.new_target)
        except OSError as exc:
            report.problems.append(Problem(switch.link, f"could not switch: {exc.strerror or exc}"))
        else:
            report.switched.append(switch)
    if report.complete and remove_tmp and tmp_dir.exists():
        shutil.rmtree(tmp_dir)
        report.tmp_removed = True
    return report
