"""vLLM's own command-line flags, as one release's parser has them (``vllm_ops/data/vllm/serve-flags-<v>.txt``, read
from the parser of the vLLM build the tests run; ``tests/real/test_vllm_flags_real.py`` checks the file against it).

A flag after ``--`` that vLLM's parser does not know makes ``vllm serve`` refuse to start ("unrecognized
arguments"); the plan says so first (``flag-unknown``), with the closest flag vLLM knows. On the checked release
every unknown flag is named; on a later one only a near miss of a known flag (the later release may have added the
flag, a near miss is a typo either way); on an earlier one nothing (the removed-flag table of versions.py covers
those releases).
"""
from __future__ import annotations

import difflib
from functools import lru_cache
from typing import Iterable

from vllm_ops.planning.argv import canonical_args

CHECKED_RELEASE = "0.32.0"


@lru_cache(maxsize=1)
def known_flags() -> frozenset[str]:
    """Every option string of ``vllm serve`` in :data:`CHECKED_RELEASE` (``--no-X`` forms included)."""
    from vllm_ops.resources import data_dir

    text = (data_dir() / "vllm" / f"serve-flags-{CHECKED_RELEASE}.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))


def _prefixed(name: str) -> list[str]:
    return sorted(k for k in known_flags() if k.startswith(name))


def _switch(name: str) -> str | None:
    """The other half of an on/off flag pair (``--enable-x`` <-> ``--no-enable-x``), or None."""
    known = known_flags()
    other = "--" + name[5:] if name.startswith("--no-") else "--no-" + name[2:]
    return other if name in known and other in known else None


def spelled_out(args: Iterable[str]) -> list[str]:
    """``args`` as vLLM's parser reads them: short and alias spellings in their long form (argv.canonical_args,
    ``-tp 2``) and each abbreviated ``--flag`` written in full (argparse's ``allow_abbrev``: a prefix of exactly one
    known flag is that flag; ``--max-num-seq 64`` sets max_num_seqs, and would otherwise slip past the planner beside
    its own ``--max-num-seqs``)."""
    known, out = known_flags(), []
    for tok in canonical_args(args):
        name, eq, val = tok.partition("=")
        if name.startswith("--") and name != "--" and name not in known:
            match = _prefixed(name)
            if len(match) == 1:
                tok = match[0] + eq + val
        out.append(tok)
    return out


def unknown_flag_warnings(args: Iterable[str], version: str) -> list[tuple[str, str]]:
    """(``flag-unknown``, message) for each flag in ``args`` vLLM ``version`` would refuse, as far as the checked
    parser tells; flags the removed-flag table names are left to it."""
    from vllm_ops.planning.versions import parse_version, removed_flag

    v, checked = parse_version(version), parse_version(CHECKED_RELEASE)
    if v < checked:
        return []
    known, out, seen = known_flags(), [], set()
    for tok in spelled_out(args):
        name, eq, _val = tok.partition("=")
        if eq and _switch(name) and name not in seen:
            seen.add(name)
            out.append(("flag-unknown", f"{tok}: vLLM {CHECKED_RELEASE} takes {name} without a value and refuses to "
                                        f"start (\"ignored explicit argument\"); write {name} or {_switch(name)}"))
        if not name.startswith("--") or name == "--" or name in known or name in seen or removed_flag(name):
            continue
        seen.add(name)
        several = _prefixed(name)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        if v > checked and not close and not several:
            continue
        later = "" if v == checked else f" (the newest parser checked; {version} may differ)"
        if several:
            listed = ", ".join(several[:4]) + (", ..." if len(several) > 4 else "")
            msg = (f"{name} abbreviates {len(several)} flags of vLLM {CHECKED_RELEASE}{later} ({listed}): vLLM refuses "
                   f"to start with an ambiguous option; write the flag in full")
        else:
            msg = (f"{name} is not a flag of vLLM {CHECKED_RELEASE}{later}: vLLM refuses to start with a flag it does "
                   f"not know (\"unrecognized arguments\")" + (f"; did you mean {close[0]}?" if close else ""))
        out.append(("flag-unknown", msg))
    return out
