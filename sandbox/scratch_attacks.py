"""Candidate programs that leave the worst trees they can in every scratch area for the wipe.

Each program builds its mess in /tmp and /dev/shm (and queues in /dev/mqueue), checks that every
piece of it is really there, and returns 42 only then: the selftest expects these jobs to PASS
(so an attack that silently built nothing cannot look contained) and the canary after them to
find every scratch area empty, on the same container.
"""

from __future__ import annotations

# Shared by every program: the scratch areas and a POSIX message queue maker (ctypes, since the
# standard library has none). Small queues, so the per-user RLIMIT_MSGQUEUE allows many.
COMMON = r"""
import ctypes, os, socket, stat

AREAS = ('/tmp', '/dev/shm')
_libc = ctypes.CDLL(None, use_errno=True)


class _MqAttr(ctypes.Structure):
    _fields_ = [('flags', ctypes.c_long), ('maxmsg', ctypes.c_long), ('msgsize', ctypes.c_long),
                ('curmsgs', ctypes.c_long), ('pad', ctypes.c_long * 4)]


def make_queue(name, mode=0o600):
    attr = _MqAttr(0, 1, 1, 0)
    _libc.mq_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_MqAttr)]
    fd = _libc.mq_open(b'/' + name, os.O_CREAT | os.O_RDWR, mode, ctypes.byref(attr))
    if fd < 0:
        raise OSError(ctypes.get_errno(), 'mq_open ' + repr(name))
    os.close(fd)


def make_file(path, mode=0o600, data=b'x'):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, mode)
    os.write(fd, data)
    os.close(fd)
"""

# 2,000 levels of 200-character names (400 KB of path, a hundred times PATH_MAX) and 3,000 levels
# of one character (past Python's recursion limit), a file at the bottom of each.
DEEP = (
    COMMON
    + r"""
def deep(root, levels, name):
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(levels):
        os.mkdir(name, dir_fd=fd)
        inner = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    leaf = os.open('leaf', os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd)
    os.close(leaf)
    depth = 0  # check the bottom really is `levels` down
    while True:
        up = os.open('..', os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        if os.fstat(up).st_ino == os.fstat(fd).st_ino or os.fstat(up).st_ino == os.stat(root).st_ino:
            os.close(up)
            os.close(fd)
            return depth + 1
        os.close(fd)
        fd = up
        depth += 1


def solve():
    depths = [deep(root, levels, name) for root in AREAS
              for levels, name in ((2000, 'd' * 200), (3000, 'e'))]
    return 42 if depths == [2000, 3000, 2000, 3000] else depths
"""
)

# Counts: 1,000 folders of 10 files, then empty files in one folder until the area has no inode
# left (ENOSPC: the sandbox caps each area's inodes, so the wipe's work is bounded; without a cap
# this runs into the timeout and fails the selftest), and as many message queues as allowed.
WIDE = (
    COMMON
    + r"""
import errno


def fill(root):
    for i in range(1000):
        os.makedirs(f'{root}/many/{i}')
        for j in range(10):
            os.close(os.open(f'{root}/many/{i}/{j}', os.O_CREAT | os.O_WRONLY, 0o600))
    os.mkdir(root + '/flat')
    made = 0
    try:
        while True:
            os.close(os.open(f'{root}/flat/{made}', os.O_CREAT | os.O_WRONLY, 0o600))
            made += 1
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    return made


def solve():
    made = [fill(root) for root in AREAS]
    queues = 0
    for i in range(1000):
        try:
            make_queue(b'q%d' % i)
            queues += 1
        except OSError:
            break
    return 42 if min(made) >= 10000 and queues >= 16 else [made, queues]
"""
)

# Every file type an unprivileged user can make (device nodes need CAP_MKNOD: tried, refused) and
# names that break line-based or UTF-8 tools, in every area.
ODD = (
    COMMON
    + r"""
NAMES = [b'new\nline', b'\xff\xfe not utf-8', b'x' * 255, b'-rf', b' ', b'*', b'\n..\n', b'\t\r',
         b'\\', b'"\'', b'\xc3\xa9', b'\x1b[31m']


def odd(root):
    base = os.fsencode(root) + b'/odd'
    os.mkdir(base)
    for i, name in enumerate(NAMES):
        path = base + b'/' + name
        if i % 2:
            os.mkdir(path)
            make_file(path + b'/' + name)
        else:
            make_file(path)
    os.mkfifo(base + b'/fifo\n')
    sockets = []
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_UNIX, kind)
        s.bind(base + b'/sock%d\xff' % kind)
        sockets.append(s)
    for target, name in ((b'/', b'to-root'), (b'/opt/lineage', b'to-code'), (b'.', b'dot'),
                         (b'loop', b'loop'), (b'nowhere', b'dangling'), (b'..', b'up'),
                         (base + b'/' + NAMES[1], b'to-odd-dir')):
        os.symlink(target, base + b'/' + name)
    os.link(base + b'/' + NAMES[0], base + b'/hard link')
    with open(base + b'/sparse', 'wb') as f:
        f.truncate(8 << 20)
    for kind in (stat.S_IFCHR, stat.S_IFBLK):
        try:
            os.mknod(base + b'/dev', 0o666 | kind, os.makedev(1, 3))
            return -1  # a device node: the sandbox gave the candidate CAP_MKNOD
        except PermissionError:
            pass
    kinds = [stat.S_IFMT(os.lstat(base + b'/' + n).st_mode) for n in os.listdir(base)]
    return {stat.S_IFREG, stat.S_IFDIR, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFLNK} <= set(kinds)


def solve():
    made = [odd(root) for root in AREAS]
    for name in (b'new\nline', b'\xff\xfe', b'x' * 200, b'-rf', b'*'):
        make_queue(name)
    queues = len(os.listdir('/dev/mqueue'))
    return 42 if made == [True, True] and queues == 5 else [made, queues]
"""
)

# Permissions that stop a plain `rm -r`: folders of mode 000 nested inside each other, a sticky
# folder nobody may write, a read-only chain, search-only folders, setgid, a queue of mode 000.
PERMISSIONS = (
    COMMON
    + r"""
def tricks(root):
    base = root + '/perm'
    os.makedirs(base + '/locked/inner/deeper')
    make_file(base + '/locked/inner/deeper/f', 0)
    for d in ('/locked/inner/deeper', '/locked/inner', '/locked'):
        os.chmod(base + d, 0)
    os.makedirs(base + '/sticky/sub')
    make_file(base + '/sticky/f')
    make_file(base + '/sticky/sub/f')
    os.chmod(base + '/sticky/sub', 0o1000)
    os.chmod(base + '/sticky', 0o1000)
    os.makedirs(base + '/readonly/a/b')
    make_file(base + '/readonly/a/b/f', 0o400)
    for d in ('/readonly/a/b', '/readonly/a', '/readonly'):
        os.chmod(base + d, 0o500)
    os.makedirs(base + '/search-only/x')
    make_file(base + '/search-only/x/f')
    os.chmod(base + '/search-only/x', 0o111)
    os.chmod(base + '/search-only', 0o111)
    os.makedirs(base + '/setgid')
    os.chmod(base + '/setgid', 0o2070)
    make_file(root + '/no-mode', 0)
    os.chmod(base, 0)
    return stat.S_IMODE(os.stat(base).st_mode) == 0


def solve():
    made = [tricks(root) for root in AREAS]
    make_queue(b'locked', 0)
    return 42 if made == [True, True] else made
"""
)

# Whatever else a job user can write to would survive the wipe: look for any such place.
WRITABLE_ELSEWHERE = r"""
import os

SCRATCH = ('/tmp', '/dev/shm', '/dev/mqueue')


def solve():
    found = []
    for dirpath, dirs, _ in os.walk('/'):
        if dirpath in ('/proc', '/sys') or dirpath in SCRATCH:
            dirs[:] = []
            if dirpath in SCRATCH:
                continue
        try:
            fd = os.open(os.path.join(dirpath, '.lineage-probe'), os.O_CREAT | os.O_WRONLY, 0o600)
        except OSError:
            continue
        os.close(fd)
        found.append(dirpath)
    return 42 if found else 0
"""
