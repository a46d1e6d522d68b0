"""The scratch wipe after every job: nothing a candidate leaves can make it fail, recurse or reach
outside, and a reset that fails anyway still answers the job's own verdict.

The wipe itself is tested here on the host (as root, and as an unprivileged user who must open
modes up himself); the rest against the real engine, the way a candidate would attack it."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

CONTAINER = Path(__file__).parents[1] / "sandbox" / "container"
sys.path.insert(0, str(CONTAINER))
import scratch  # noqa: E402

NOBODY = 65534


def build_mess(area: bytes, outside: bytes) -> None:
    """Everything an unprivileged user can leave in `area` (links point at `outside`)."""
    fd = os.open(area, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # past PATH_MAX (200-byte names) and the recursion limit
        os.mkdir(b"d" * 200, dir_fd=fd)
        inner = os.open(b"d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(os.open(b"leaf", os.O_CREAT | os.O_WRONLY, 0, dir_fd=fd))
    os.fchmod(fd, 0)  # the bottom of the chain has mode 000
    os.close(fd)
    odd = area + b"/odd\n\xff"
    os.mkdir(odd)
    for name in (b"new\nline", b"\xff\xfe", b"x" * 255, b"-rf", b"*", b"\x1b[31m"):
        with open(odd + b"/" + name, "wb") as f:
            f.write(b"x")
    os.mkfifo(odd + b"/fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(odd + b"/sock")
    sock.close()
    os.symlink(outside, odd + b"/to-outside")
    os.symlink(b"loop", odd + b"/loop")
    os.link(outside + b"/keep", odd + b"/hard-link-to-outside")
    os.makedirs(area + b"/wide")
    for i in range(5000):
        os.close(os.open(area + b"/wide/%d" % i, os.O_CREAT | os.O_WRONLY, 0o600))
    os.makedirs(area + b"/locked/inner")
    with open(area + b"/locked/inner/f", "wb") as f:
        f.write(b"x")
    os.chmod(area + b"/locked/inner/f", 0)
    os.chmod(area + b"/locked/inner", 0)
    os.chmod(area + b"/locked", 0)
    os.makedirs(area + b"/sticky/sub")
    os.chmod(area + b"/sticky", 0o1500)  # sticky, and nobody may write
    os.makedirs(area + b"/search-only/x")
    os.chmod(area + b"/search-only", 0o111)
    os.chmod(odd, 0o500)


def wipe_and_check(area: bytes, outside: bytes) -> None:
    mode = os.stat(area).st_mode
    build_mess(area, outside)
    scratch.wipe([os.fsdecode(area)])
    assert os.listdir(area) == [] and scratch.is_empty([os.fsdecode(area)])
    assert os.stat(area).st_mode == mode  # the root keeps its own mode
    assert sorted(os.listdir(outside)) == [b"keep"]  # nothing followed out of the area
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o755


def make_area(base: Path) -> tuple[bytes, bytes]:
    area, outside = base / "area", base / "outside"
    area.mkdir(mode=0o1777)
    area.chmod(0o1777)
    outside.mkdir()
    outside.chmod(0o755)
    (outside / "keep").write_text("host data")
    return os.fsencode(area), os.fsencode(outside)


@pytest.fixture
def base():
    """A folder on a tmpfs where there is one, like the container's scratch areas (and fast)."""
    where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="lineage-wipe-", dir=where))
    folder.chmod(0o755)
    yield folder
    subprocess.run(["rm", "-rf", str(folder)], check=False)


def test_the_wipe_empties_any_tree_and_stays_inside(base):
    wipe_and_check(*make_area(base))


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_the_wipe_opens_up_modes_where_it_has_no_override(base):
    """An owner without CAP_DAC_OVERRIDE/CAP_FOWNER: mode 000, sticky and search-only folders
    must be opened up (never the area's own root) before their contents can go."""
    area, outside = make_area(base)
    for path in (area, outside, outside + b"/keep"):
        os.chown(path, NOBODY, NOBODY)
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_sandbox_scratch as t  # before the switch: nobody may not read the venv
        os.setgroups([]); os.setgid({NOBODY}); os.setuid({NOBODY})
        t.wipe_and_check({area!r}, {outside!r})
        """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.docker
class TestInTheContainer:
    @pytest.fixture(scope="class", params=["fork", "exec"])
    @classmethod
    def pool(cls, request, sandbox_image):
        from sandbox import SandboxConfig, SandboxPool

        config = SandboxConfig(workers=1, candidate_start=request.param)
        with SandboxPool(config, image=sandbox_image) as pool:
            yield pool

    def test_the_issues_bomb_is_a_failed_job_on_the_same_container(self, pool):
        """1,500 folders deep under /tmp made the old recursive wipe raise, the supervisor exit
        twice and the job an infra error, which pass@k left out."""
        from sandbox import Job, Limits, Status
        from sandbox.selftest import CANARY

        bomb = (
            "import os\ndef solve():\n    os.chdir('/tmp')\n    for _ in range(1500):\n"
            "        os.mkdir('d')\n        os.chdir('d')\n    return 0\n"
        )
        before = pool.container_ids
        job = Job(bomb, ("assert candidate() == 42",), entry_point="solve", limits=Limits(5, 5))
        verdict = pool.run([job])[0]
        assert (verdict.status, verdict.attempts) == (Status.FAILED, 1), verdict
        assert pool.run([CANARY])[0].passed
        assert pool.container_ids == before and pool.replacements == 0


# Run in the container instead of the supervisor's own main: its unlink fails with something
# that is not an OSError, and each answer says which job users still had processes when it left.
FAULTY_SUPERVISOR = """
import os, sys
sys.argv[0] = '/opt/lineage/supervisor.py'
sys.path.insert(0, '/opt/lineage')
import supervisor

def unlink(*args, **kwargs):
    raise RuntimeError('injected: unlink broke')

os.unlink = unlink
send = supervisor.Supervisor.send

def send_with_survivors(self, message):
    if 'status' in message:
        users = (self.candidate_uid, self.referee_uid)
        message['survivors'] = sorted(supervisor.running_users(users))
    send(self, message)

supervisor.Supervisor.send = send_with_survivors
supervisor.main()
"""

LEAVES_A_FILE_AND_A_DAEMON = """
import os, time
def solve():
    with open('/tmp/left', 'w') as f:
        f.write('x')
    if os.fork() == 0:
        os.setsid()
        while True:
            time.sleep(0.05)
    return 42
"""


@pytest.mark.docker
@pytest.mark.parametrize("start", ["fork", "exec"])
def test_a_failing_reset_kills_everything_and_still_answers_the_verdict(sandbox_image, start):
    from sandbox.channel import AttachedChannel, ChannelClosed
    from sandbox.config import LABEL
    from sandbox.containers import CAPABILITIES
    from sandbox.engine import docker_client
    from sandbox.job import Job

    api = docker_client().api
    uid = 410_000
    command = ["python3", "-I", "-c", FAULTY_SUPERVISOR, "--candidate-uid", str(uid)]
    command += ["--referee-uid", str(uid + 1), "--python", "python3 -I -S", "--start", start]
    created = api.create_container(
        sandbox_image,
        command=command,
        stdin_open=True,
        user="0",
        working_dir="/tmp",
        network_disabled=True,
        labels={LABEL: "1"},
        host_config=api.create_host_config(
            network_mode="none",
            read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,noexec,mode=1777,size=16m"},
            cap_drop=["ALL"],
            cap_add=CAPABILITIES,
            security_opt=["no-new-privileges"],
        ),
    )
    cid = created["Id"]
    try:
        sock = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        channel = AttachedChannel(sock)
        api.start(cid)
        assert channel.receive(60)["ready"]
        job = Job(LEAVES_A_FILE_AND_A_DAEMON, ("assert candidate() == 42",), entry_point="solve")
        channel.send({"id": 7, "job": job.to_wire()})
        answer = channel.receive(30)
        with pytest.raises(ChannelClosed):
            channel.receive(30)  # it exits so that the host replaces it
        assert api.wait(cid, timeout=30)["StatusCode"] == 3
    finally:
        api.remove_container(cid, force=True)
    assert (answer["id"], answer["status"], answer["clean"]) == (7, "passed", False), answer
    assert answer["survivors"] == []  # the daemon died with the failed reset
    assert b"reset failed" in channel.stderr_tail and b"injected" in channel.stderr_tail
