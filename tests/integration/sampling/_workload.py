"""A real task stand-in driven line by line over stdin, so tests read usage at known moments.

Commands (one per line), each answered by one line ``ok <number>`` on stdout:
  alloc MB          allocate and touch MB mebibytes more          -> ok <bytes held>
  burn S            spin until S more CPU seconds are used        -> ok <cpu seconds used>
  child_hold MB     start a child (and it a grandchild) holding MB each -> ok <pid of child>
  child_release     stop them and reap them                        -> ok 0
  child_burn S      a child burns S CPU s in a grandchild, all reaped -> ok <cpu s the grandchild used>
  free              drop everything allocated                      -> ok 0
  exit
"""

from __future__ import annotations

import subprocess
import sys
import time

HOLD = (
    "import sys,subprocess\n"
    "b = bytearray({mb} * 1048576)\n"
    "for i in range(0, len(b), 4096): b[i] = 1\n"
    "kid = None\n"
    "if {nest}:\n"
    "    kid = subprocess.Popen([sys.executable, '-c', {inner!r}], stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
    "    kid.stdout.readline()\n"
    "print('up', flush=True)\n"
    "sys.stdin.readline()\n"
    "if kid: kid.stdin.close(); kid.wait()\n"
)
BURN = (
    "import time\n"
    "t0 = time.process_time()\n"
    "while time.process_time() - t0 < {s}: pass\n"
    "print(time.process_time() - t0, flush=True)\n"
)


def _burn(seconds: float) -> float:
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < seconds:
        x += 1
    return time.process_time() - t0


def main() -> None:
    held: list[bytearray] = []
    child: subprocess.Popen[str] | None = None
    for line in sys.stdin:
        cmd, *args = line.split()
        out: float = 0.0
        if cmd == "alloc":
            block = bytearray(int(float(args[0]) * 1048576))
            for i in range(0, len(block), 4096):
                block[i] = 1
            held.append(block)
            out = sum(len(b) for b in held)
        elif cmd == "burn":
            out = _burn(float(args[0]))
        elif cmd == "child_hold":
            mb = int(args[0])
            inner = HOLD.format(mb=mb, inner="", nest=False)
            code = HOLD.format(mb=mb, inner=inner, nest=True)
            child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)  # fmt: skip
            assert child.stdout is not None
            child.stdout.readline()
            out = child.pid
        elif cmd == "child_release" and child is not None:
            assert child.stdin is not None
            child.stdin.write("\n")
            child.stdin.flush()
            child.wait()
            child = None
        elif cmd == "child_burn":
            code = (
                "import subprocess,sys\n"
                f"r = subprocess.run([sys.executable, '-c', {BURN.format(s=args[0])!r}], capture_output=True,"
                " text=True)\n"
                "print(r.stdout.strip(), flush=True)\n"
            )
            out = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)
        elif cmd == "free":
            held.clear()
        elif cmd == "exit":
            return
        print(f"ok {out}", flush=True)


if __name__ == "__main__":
    main()
