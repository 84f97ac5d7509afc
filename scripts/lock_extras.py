"""Post-process uv's lock for pip's --require-hashes mode: pin each package requested with
extras twice, with and without them (``celery==5.6.3`` and ``celery[redis]==5.6.3``, the
same version and hashes).

Why: with --require-hashes, pip treats a dependency's ``celery[redis]>=5.5,<6`` as a
requirement of its own; unless the lock pins ``celery[redis]`` it picks the newest release
(5.7.0) and stops ("all requirements must have their versions pinned"), and a lock that pins
only ``fastapi[standard]==...`` leaves a plain ``fastapi>=...`` unpinned in the same way.
Both spellings pinned, pip installs exactly the locked version either way (measured with
pip 23.2.1, set-up's: `pip install --dry-run --ignore-installed --require-hashes -r LOCK`).

    python scripts/lock_extras.py LOCK      rewrites LOCK in place (uv's --no-strip-extras output)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\[[^\]]+\](?P<rest>==.*)$")


def add_plain_pins(text: str) -> str:
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        j = i + 1  # an entry: its first line, then indented hash lines and "# via" comments
        while j < len(lines) and lines[j].startswith((" ", "\t")):
            j += 1
        entry = lines[i:j]
        match = ENTRY.match(lines[i])
        if match:
            plain = [f"{match['name']}{match['rest']}", *(x for x in entry[1:] if "--hash=" in x)]
            plain[-1] = plain[-1].rstrip(" \\")  # the last hash line ends the entry
            out.extend(plain)
        out.extend(entry)
        i = j
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    path = Path(sys.argv[1])
    path.write_text(add_plain_pins(path.read_text(encoding="utf-8")), encoding="utf-8")
