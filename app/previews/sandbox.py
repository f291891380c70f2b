"""What LibreOffice may reach while it converts a file: no network, no files but its own, no macros, no links.

Layers, outermost first (docs/previews.md says which a machine without namespaces keeps):

1. the package is rewritten before LibreOffice sees it (app.previews.sanitize): no external relationship and no
   linking field is left to follow. Always applies.
2. a fresh network namespace (`unshare --net`; a user namespace too, `--map-root-user`, when the server is not
   root): only a loopback interface that is down, so no address, 127.0.0.1 included, can be reached.
3. a fresh mount namespace in the same `unshare`: before soffice starts, a small script mounts empty tmpfs over
   /tmp (all but the conversion's own work folder, which is bound back in place), /home, /root, /srv, /mnt,
   /media, /var/tmp, /work and the library's data dir, so a `file://` link that survived layer 1 finds nothing of
   the users' files or other documents' originals. /usr and /etc stay (LibreOffice and its fonts live there).
4. the fresh profile's registrymodifications.xcu (PROFILE_SETTINGS): link updating never (Writer, Calc), field
   and chart updating on load off, macro security "very high" with macros disabled, untrusted referer links
   blocked, and every protocol sent through a proxy at 127.0.0.1:9, where nothing listens: measured with the
   linked-picture files of tests/hostile.py and no other layer, LibreOffice 7.4.7 sent OPTIONS and GET to the
   listener without it and nothing with it. Always applies.

Layers 2 and 3 need a kernel that lets this user create namespaces (root, or unprivileged user namespaces):
probed once per process (`unshare ... /bin/true` with the same flags); where the probe fails the conversion runs
with layers 1 and 4, and the log says so once. Measured on the dev VM (Debian 12 kernel, root and the `nobody`
user): `unshare --net --mount` works as root, `unshare --net --mount --map-root-user` as a normal user; a
conversion costs the same 3.5-5.6 s inside as outside.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

HIDDEN = ("/home", "/root", "/srv", "/mnt", "/media", "/var/tmp", "/work")
"""Folders replaced by an empty tmpfs in the mount namespace (besides /tmp and the data dir), where they exist."""
DEAD_PROXY = ("127.0.0.1", 9)

PROFILE_SETTINGS: list[tuple[str, str, str]] = [
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "0"),  # 0: never (sfx2 LinkUpdateMode NEVER)
    ("/org.openoffice.Office.Writer/Content/Update", "Field", "false"),
    ("/org.openoffice.Office.Writer/Content/Update", "Chart", "false"),
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),  # 1: never (Calc's ScLkUpdMode LM_NEVER)
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "3"),
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    ("/org.openoffice.Inet/Settings", "ooInetProxyType", "1"),  # manual proxies, all dead
    ("/org.openoffice.Inet/Settings", "ooInetNoProxy", ""),
    *[("/org.openoffice.Inet/Settings", f"ooInet{p}Proxy{k}", v)
      for p in ("HTTP", "HTTPS", "FTP") for k, v in (("Name", DEAD_PROXY[0]), ("Port", str(DEAD_PROXY[1])))],
]

# Runs inside the namespaces as "root" of them: $1 = the work folder, $2 = the data dir ("" for none), the rest is
# the command. The work folder is bound to a holder on a fresh tmpfs first, /tmp is covered, then it is moved back.
_MOUNT_SCRIPT = r"""
set -e
work="$1"; shift
mount -t tmpfs -o size=64k,mode=755 lqa-hold /mnt   # covers /mnt too
mkdir /mnt/work
mount --rbind "$work" /mnt/work
while [ "$1" != "--" ]; do
  if [ "$1" != /mnt ] && [ -d "$1" ] && [ ! -L "$1" ]; then mount -t tmpfs -o size=16m,mode=1777 lqa-empty "$1"; fi
  shift
done
shift
mkdir -p "$work"
mount --rbind /mnt/work "$work"  # --move fails in a user namespace
cd "$work"
exec "$@"
"""

_probe_lock = threading.Lock()
_probed: dict[str, list[str]] = {}


def write_profile(profile: Path) -> None:
    """The fresh profile's settings (`-env:UserInstallation` points at `profile`)."""
    items = "\n".join(
        f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse"><value>{escape(value)}</value></prop></item>'
        for path, name, value in PROFILE_SETTINGS)
    (profile / "user").mkdir(parents=True, exist_ok=True)
    (profile / "user" / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<oor:items xmlns:oor="http://openoffice.org/2001/registry" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
        f"{items}\n</oor:items>\n", encoding="utf-8")


def _unshare_flags(mount: bool) -> list[str]:
    flags = ["--net"] + (["--mount"] if mount else [])
    if os.geteuid() != 0:
        flags.append("--map-root-user")
    return flags


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def layers() -> list[str]:
    """The namespace layers this process can use: ["net", "mount"], ["net"] or [] (probed once)."""
    with _probe_lock:
        if "layers" in _probed:
            return _probed["layers"]
        found: list[str] = []
        unshare = shutil.which("unshare")
        if unshare is not None:
            with tempfile.TemporaryDirectory(prefix="lecture-qa-probe-") as probe:
                script = ["/bin/sh", "-c", _MOUNT_SCRIPT, "sh", str(Path(probe).resolve()), "/tmp", *HIDDEN, "--",
                          "/bin/true"]
                mount_works = _works([unshare, *_unshare_flags(True), *script])
            if mount_works:
                found = ["net", "mount"]
            elif _works([unshare, *_unshare_flags(False), "/bin/true"]):
                found = ["net"]
        if found != ["net", "mount"]:
            log.warning("LibreOffice runs without %s namespace (the kernel or this user does not allow it): the "
                        "package rewrite and its profile's settings still apply (docs/previews.md)",
                        "a mount" if found else "a network or mount")
        _probed["layers"] = found
        return found


def _hidden(work: Path, data_dir: Path | None, keep: list[Path]) -> list[str]:
    """The folders to cover: /tmp, HIDDEN and the data dir, but none that holds `keep` (soffice's own files) and
    no system folder (a data dir of / or /usr would hide LibreOffice itself)."""
    kept = [str(k.resolve()) for k in keep]
    wanted = ["/tmp", *HIDDEN]
    if data_dir is not None:
        wanted.append(str(data_dir.resolve()))
    out = []
    for d in wanted:
        if d in ("/", "/usr", "/etc", "/lib", "/bin", "/proc", "/dev", "/sys", "/var") or any(
                k == d or k.startswith(d.rstrip("/") + "/") for k in kept):
            continue
        out.append(d)
    return out


def wrap(cmd: list[str], *, work: Path, data_dir: Path | None = None, keep: list[Path] | None = None) -> list[str]:
    """`cmd` run inside the namespaces this process may create (see the module docstring); `keep`: paths that
    must stay visible (the soffice program)."""
    found = layers()
    unshare = shutil.which("unshare")
    if not found or unshare is None:
        return cmd
    if found == ["net"]:
        return [unshare, *_unshare_flags(False), *cmd]
    return [unshare, *_unshare_flags(True), "/bin/sh", "-c", _MOUNT_SCRIPT, "sh", str(work.resolve()),
            *_hidden(work, data_dir, keep or []), "--", *cmd]
