"""The adversarial suite: each attack must end as a non-pass (or be contained), and a canary job on
the same container must then pass, with no leftover processes or files.

Shared by `lineage sandbox selftest` (quick, exits non-zero on any failure) and the pytest suite.
Every attack's check asks for something the attack can only get by beating the sandbox, so a
"passed" verdict on an attack is always a sandbox failure, except for the attacks on the scratch
wipe (`scratch_attacks`), which must pass to show they built their whole mess.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sandbox import scratch_attacks
from sandbox.job import Job, Limits, Status, Verdict

QUICK = Limits(wall_s=2.0, cpu_s=2, memory_mb=256, file_size_mb=16, processes=32, output_kb=64)
# Building a big tree takes a while on a loaded machine: room enough that it never times out.
ROOMY = Limits(wall_s=20.0, cpu_s=20, memory_mb=256, file_size_mb=16, processes=32, output_kb=64)


@dataclass(frozen=True)
class Attack:
    name: str
    program: str
    checks: tuple[str, ...] = ("assert candidate() == 42",)
    setup: str = ""
    entry_point: str = "solve"
    contained: bool = False  # a correct program that misbehaves: any verdict, but no trace after
    expect: Status | None = None  # the verdict it must get (a contained attack that must work)
    limits: Limits = field(default_factory=lambda: QUICK)

    def job(self) -> Job:
        return Job(
            self.program, self.checks, self.setup, self.entry_point, self.limits, tag=self.name
        )


FORK_LOOP = """
def _bomb():
    while True:
        try:
            os.fork()
        except OSError:
            pass
"""

READ_EVERYTHING = r"""
import gc, os, re, sys

def _search(text):
    found = re.findall(r"==\s*(\d{6,})", text)
    return int(found[0]) if found else None

def solve(x):
    texts = []
    frame = sys._getframe(1)
    while frame is not None:  # the caller's frames and their code constants
        texts.append(repr(frame.f_code.co_consts) + repr(frame.f_globals) + repr(frame.f_locals))
        frame = frame.f_back
    for obj in gc.get_objects():  # everything alive in this process
        if isinstance(obj, (str, bytes)):
            texts.append(repr(obj))
    for pid in os.listdir("/proc"):  # every other process: argv, environment, open files, memory
        for leaf in ("cmdline", "environ", "mem"):
            try:
                with open(f"/proc/{pid}/{leaf}", "rb") as f:
                    texts.append(f.read(1 << 20).decode("latin-1"))
            except OSError:
                pass
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with open(f"/proc/{pid}/fd/{fd}", "rb") as f:
                    texts.append(f.read(1 << 16).decode("latin-1"))
        except OSError:
            pass
    for root in ("/tmp", "/opt", "/dev/shm", "/run", "/var/tmp"):
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    with open(os.path.join(dirpath, name), "rb") as f:
                        texts.append(f.read(1 << 20).decode("latin-1"))
                except OSError:
                    pass
    for text in texts:
        value = _search(text)
        if value is not None:
            return value
    return -1
"""

ATTACKS: tuple[Attack, ...] = (
    Attack("fork bomb", "import os\n" + FORK_LOOP + "def solve():\n    _bomb()\n"),
    Attack(
        "fork bomb after setsid",
        "import os\n" + FORK_LOOP + "def solve():\n    if os.fork() == 0:\n        os.setsid()\n"
        "        _bomb()\n    return 41\n",
    ),
    Attack(
        "memory bomb",
        "def solve():\n    hog = []\n    while True:\n        hog.append(bytearray(64 << 20))\n",
    ),
    Attack(
        "memory bomb in many processes",
        "import os, time\ndef solve():\n    for _ in range(16):\n        if os.fork() == 0:\n"
        "            hog = []\n            try:\n                while True:\n"
        "                    hog.append(bytearray(16 << 20))\n            except MemoryError:\n"
        "                time.sleep(60)\n    time.sleep(60)\n",
    ),
    Attack(
        "2 GB file",
        "def solve():\n    with open('/tmp/big', 'wb') as f:\n        for _ in range(2048):\n"
        "            f.write(b'0' * (1 << 20))\n    return 42\n",
    ),
    Attack(
        "filling the tmpfs",
        "import os\ndef solve():\n    i = 0\n    try:\n        while True:\n"
        "            with open(f'/tmp/fill{i}', 'wb') as f:\n                f.write(b'0' * (8 << 20))\n"
        "            i += 1\n    except OSError:\n        pass\n    return 42\n",
        contained=True,
    ),
    Attack("endless printing", "def solve():\n    while True:\n        print('x' * 1000)\n"),
    Attack("endless loop in Python", "def solve():\n    while True:\n        pass\n"),
    Attack("endless loop in C", "def solve():\n    return sum(range(10**12))\n"),
    Attack("sleep(1000)", "import time\ndef solve():\n    time.sleep(1000)\n    return 42\n"),
    Attack(
        "ignoring SIGALRM",
        "import signal, time\ndef solve():\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    signal.alarm(1)\n    while True:\n        time.sleep(0.05)\n",
    ),
    Attack(
        "connecting out by IP",
        "import socket\ndef solve():\n    try:\n        socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
        "        return 42\n    except OSError:\n        return 0\n",
    ),
    Attack(
        "connecting out by DNS",
        "import socket\ndef solve():\n    try:\n        socket.getaddrinfo('pypi.org', 443)\n        return 42\n"
        "    except OSError:\n        return 0\n",
    ),
    Attack(
        "writing outside the scratch area",
        "def solve():\n    wrote = 0\n    for path in ('/opt/lineage/x', '/etc/passwd', '/x', '/usr/lib/x', '/var/tmp/x',"
        " '/run/x', '/root/x', '/proc/sys/kernel/x'):\n        try:\n            with open(path, 'a') as f:\n"
        "                f.write('x')\n            wrote += 1\n        except OSError:\n            pass\n"
        "    return 42 if wrote else 0\n",
    ),
    Attack(
        "leaving a file for the next job",
        "def solve():\n    for d in ('/tmp', '/dev/shm'):\n        with open(d + '/leftover', 'w') as f:\n"
        "            f.write('x')\n    return 42\n",
        contained=True,
    ),
    *(
        Attack(name, program, contained=True, expect=Status.PASSED, limits=ROOMY)
        for name, program in (
            ("a tree deeper than PATH_MAX in every scratch area", scratch_attacks.DEEP),
            ("a wide tree in every scratch area", scratch_attacks.WIDE),
            ("odd file types and names in every scratch area", scratch_attacks.ODD),
            ("permission tricks in every scratch area", scratch_attacks.PERMISSIONS),
        )
    ),
    Attack(
        "finding a writable place outside the scratch areas",
        scratch_attacks.WRITABLE_ELSEWHERE,
        limits=ROOMY,
    ),
    Attack(
        "leaving SysV IPC objects for the next job",
        "import ctypes\ndef solve():\n    libc = ctypes.CDLL(None)\n    flags = 0o1000 | 0o666  # IPC_CREAT\n"
        "    made = [libc.shmget(0x4C4E, 4096, flags), libc.semget(0x4C4F, 1, flags), libc.msgget(0x4C50, flags)]\n"
        "    return 42 if min(made) >= 0 else -1\n",
        contained=True,
    ),
    Attack(
        "leaving a daemon for the next job",
        "import os, time\ndef solve():\n    if os.fork() == 0:\n        os.setsid()\n        if os.fork() == 0:\n"
        "            while True:\n                time.sleep(0.05)\n                try:\n"
        "                    open('/tmp/daemon', 'a').write('x')\n                except OSError:\n"
        "                    pass\n        os._exit(0)\n    return 42\n",
        contained=True,
    ),
    Attack(
        "killing the parent",
        "import os, signal\ndef solve():\n    for pid in (os.getppid(), 1):\n        try:\n"
        "            os.kill(pid, signal.SIGKILL)\n        except OSError:\n            pass\n    return 0\n",
    ),
    Attack(
        "kill(-1)",  # Linux spares the caller: the program lives on, everything it could reach dies
        "import os, signal\ndef solve():\n    os.kill(-1, signal.SIGKILL)\n    return 42\n",
        contained=True,
    ),
    Attack("sys.exit(0)", "import sys\ndef solve():\n    sys.exit(0)\n"),
    Attack("os._exit(0)", "import os\ndef solve():\n    os._exit(0)\n"),
    Attack("sys.exit(0) while loading", "import sys\nsys.exit(0)\ndef solve():\n    return 42\n"),
    Attack(
        "atexit exits 0 after a failed assert",
        "import atexit, os\natexit.register(lambda: os._exit(0))\ndef solve():\n    return 0\n",
    ),
    Attack(
        "__eq__ always True",
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
        "def solve():\n    return Anything()\n",
    ),
    Attack(
        "__eq__ always True on an int subclass",
        "class Anything(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def solve():\n    return Anything(0)\n",
    ),
    Attack(
        "monkeypatched builtins",
        "import builtins\nbuiltins.abs = lambda x: 0\nabs = builtins.abs\n"
        "def solve():\n    return 0.0\n",
        checks=("assert abs(candidate() - 3.14159) < 1e-6",),
    ),
    Attack(
        "printing a fake verdict",
        'import os, sys\nFAKE = \'{"status":"passed","checks":[["passed",""]],"id":0,"clean":true}\\n\'\n'
        "def solve():\n    print(FAKE)\n    sys.stderr.write(FAKE)\n    for fd in range(0, 64):\n        try:\n"
        "            os.write(fd, FAKE.encode())\n        except OSError:\n            pass\n    return 0\n",
    ),
    Attack(
        "reading the test code",
        READ_EVERYTHING,
        checks=("assert candidate(5) == 987654321",),
        setup="SECRET = 987654321  # == 987654321\n",
    ),
)

CANARY = Job(
    program=(
        "import os\n"
        "def add(a, b):\n    return a + b\n"
        "def probe():\n"
        "    me, uid = os.getpid(), os.getuid()\n"
        "    others = []\n"
        "    for p in os.listdir('/proc'):\n"
        "        if not p.isdigit() or int(p) == me:\n            continue\n"
        "        try:\n            status = open(f'/proc/{p}/status').read().splitlines()\n"
        "        except OSError:\n            continue\n"
        "        fields = dict(line.split(':', 1) for line in status if ':' in line)\n"
        "        if int(fields['Uid'].split()[0]) == uid and not fields['State'].strip().startswith('Z'):\n"
        "            others.append(fields['Name'].strip())\n"
        "    files = sorted(os.listdir('/tmp') + os.listdir('/dev/shm') + os.listdir('/dev/mqueue'))\n"
        "    ipc = sum(len(open(f'/proc/sysvipc/{k}').readlines()) - 1 for k in ('shm', 'sem', 'msg'))\n"
        "    with open('/tmp/canary', 'w') as f:\n        f.write('scratch is writable')\n"
        "    return [others, files, ipc]\n"
    ),
    checks=("assert candidate(2, 3) == 5", "assert probe() == [[], [], 0]"),
    entry_point="add",
    limits=QUICK,
    tag="canary",
)


@dataclass(frozen=True)
class AttackResult:
    attack: Attack
    verdict: Verdict
    canary: Verdict
    same_container: bool
    leftover_processes: int

    @property
    def ok(self) -> bool:
        contained = self.attack.contained or self.verdict.status is not Status.PASSED
        expected = self.attack.expect in (None, self.verdict.status)
        return (
            contained
            and expected
            and self.verdict.status is not Status.INFRA_ERROR
            and self.canary.status is Status.PASSED
            and self.same_container
            and self.leftover_processes == 0
        )

    @property
    def problem(self) -> str:
        if not self.attack.contained and self.verdict.status is Status.PASSED:
            return "the attack PASSED"
        if self.attack.expect not in (None, self.verdict.status):
            return f"the attack did not get its expected {self.attack.expect.value} verdict"
        if self.verdict.status is Status.INFRA_ERROR:
            return f"the attack broke the sandbox: {self.verdict.detail}"
        if self.canary.status is not Status.PASSED:
            return f"the canary after it did not pass: {self.canary.detail}"
        if not self.same_container:
            return "the container had to be replaced"
        if self.leftover_processes:
            return f"{self.leftover_processes} leftover process(es)"
        return ""


def run_attacks(
    pool, attacks=ATTACKS, on_result: Callable[[AttackResult], None] | None = None
) -> list[AttackResult]:
    """Run each attack then the canary on a one-container pool; inspect the container between."""
    from sandbox.containers import job_processes

    results = []
    for attack in attacks:
        before = pool.container_ids
        verdict = pool.run([attack.job()])[0]
        canary = pool.run([CANARY])[0]
        after = pool.container_ids
        leftovers = sum(job_processes(cid) for cid in after)
        result = AttackResult(attack, verdict, canary, before == after, leftovers)
        results.append(result)
        if on_result:
            on_result(result)
    return results
