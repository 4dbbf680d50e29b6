"""
The deployment files work as shipped: systemd units verify, every command
line in them parses with echoapp's own options, each names its page of the
documentation, the logrotate rule rotates the log of the file-logging unit's
real daemon, the Dockerfile's command runs and passes its own health check,
and HAProxy really balances over two instances.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.python import usage
from twisted.python.reflect import namedAny
from twisted.trial.unittest import SynchronousTestCase

from tests.support import DEADLINE, Twistd, free_port, twistd_path

DEPLOY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy")
UNITS = os.path.join(DEPLOY, "systemd")
RULE = os.path.join(DEPLOY, "logrotate", "echoapp")
DOCS = os.path.join(os.path.dirname(DEPLOY), "docs")
# Where the docs are published (.readthedocs.yaml builds docs/); setup.cfg's url says the same.
PUBLISHED = "https://echoapp.readthedocs.io/en/latest/"
PLUGINS = {
    "echoapp": "echoapp._tap.everything",
    "echoapp-tcp": "echoapp._tap.tcp",
    "echoapp-udp": "echoapp._tap.udp",
    "echoapp-echo": "echoapp._tap.echo",
}


def read(*parts: str) -> str:
    with open(os.path.join(DEPLOY, *parts)) as file:
        return file.read()


def exec_start(unit: str, instance: str = "9001") -> list[str]:
    """ExecStart's command, as the shell would run it for instance 9001 of a template."""
    [line] = [line for line in read("systemd", unit).splitlines() if line.startswith("ExecStart=")]
    words = shlex.split(line[len("ExecStart=") :].replace("%i", instance))
    if words[:2] == ["/bin/sh", "-c"]:
        script = re.sub(r"\$\(\((\d+) \+ (\d+)\)\)", lambda m: str(int(m[1]) + int(m[2])), words[2])
        words = shlex.split(script.replace("exec ", "", 1))
    return words


def check_command(test: SynchronousTestCase, words: list[str]) -> None:
    """twistd's own options, then a plugin and options its Options accept."""
    test.assertTrue(words[0].endswith("twistd"), words)
    [at] = [i for i, word in enumerate(words) if word in PLUGINS]
    twistd_options, plugin, plugin_args = words[1:at], words[at], words[at + 1 :]
    test.assertIn("--nodaemon", twistd_options)
    if "--logger" in twistd_options:
        logger = twistd_options[twistd_options.index("--logger") + 1]
        test.assertTrue(callable(namedAny(logger)), logger)
    else:  # the file-logging unit: twistd's own text log, which logrotate rotates
        test.assertTrue(any(option.startswith("--logfile=/") for option in twistd_options), words)
    options: usage.Options = namedAny(PLUGINS[plugin]).Options()
    if any(arg.startswith("systemd:") for arg in plugin_args):
        return  # needs an inherited socket: tests/transports/test_endpoints.py runs it for real
    options.parseOptions(plugin_args)


class SystemdUnitTests(SynchronousTestCase):
    def test_command_lines_parse(self) -> None:
        for unit in os.listdir(UNITS):
            if unit.endswith(".service"):
                check_command(self, exec_start(unit))

    def test_every_unit_names_its_page_of_the_docs(self) -> None:
        """C{Documentation=} is where the docs are published, and the page it names exists in docs/."""
        for unit in os.listdir(UNITS):
            [line] = [
                line for line in read("systemd", unit).splitlines() if line.startswith("Documentation=")
            ]
            url = line[len("Documentation=") :]
            self.assertTrue(url.startswith(PUBLISHED), (unit, url))
            page = url[len(PUBLISHED) :].removesuffix(".html") + ".rst"
            self.assertTrue(os.path.exists(os.path.join(DOCS, page)), (unit, page))

    def test_a_units_install_comment_installs_what_its_page_does(self) -> None:
        """
        A unit that says how to install echoapp says what the systemd how-to
        does (C{pip install .} in a checkout), not a name pip would fetch
        from an index.
        """
        howto = open(os.path.join(DOCS, "howto", "systemd.rst"), encoding="utf-8").read()
        self.assertIn("/opt/echoapp/bin/pip install .\n", howto)
        for unit in os.listdir(UNITS):
            for line in read("systemd", unit).splitlines():
                if line.startswith("#") and "pip install" in line:
                    self.assertTrue(line.endswith("/opt/echoapp/bin/pip install ."), (unit, line))

    def test_hardening(self) -> None:
        for unit in (
            "echoapp.service",
            "echoapp-tcp.service",
            "echoapp@.service",
            "echoapp-shared@.service",
            "echoapp-logfile.service",
        ):
            text = read("systemd", unit)
            for setting in (
                "DynamicUser=yes",
                "NoNewPrivileges=yes",
                "ProtectSystem=strict",
                "MemoryMax=",
                "Restart=",
            ):
                self.assertIn(setting, text, unit)

    def test_units_verify(self) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed here")
        with tempfile.TemporaryDirectory() as directory:
            for unit in os.listdir(UNITS):
                text = read("systemd", unit).replace("/opt/echoapp/bin/twistd", twistd_path())
                with open(os.path.join(directory, unit), "w") as copy:
                    copy.write(text)
            names = [unit.replace("@.", "@9001.") for unit in sorted(os.listdir(UNITS))]
            result = subprocess.run(
                [analyze, "verify", *names],
                cwd=directory,
                capture_output=True,
                text=True,
                timeout=DEADLINE * 3,
            )
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))


def logrotate_path() -> str | None:
    return shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin")


def rotate_in_namespace(root: str) -> None:
    """
    Run inside a private mount namespace (L{LogrotateTests}): C{root}'s
    C{log} and C{run} directories are mounted over C{/var/log} and C{/run},
    so the file-logging unit's command and the shipped logrotate rule run
    with their real paths, unmodified, and touch nothing of the machine's.
    Prints what the test checks as one JSON line.
    """
    for name, target in (("log", "/var/log"), ("run", "/run")):
        subprocess.run(["mount", "--bind", os.path.join(root, name), target], check=True)
    os.makedirs("/var/log/echoapp")
    os.makedirs("/run/echoapp")
    words = exec_start("echoapp-logfile.service")
    at = words.index("echoapp")
    loop = "tcp:0:interface=127.0.0.1"
    command = [twistd_path(), *words[1:at], "echoapp", "--tcp", loop, "--echo", loop,
               "--udp", "udp:0:interface=127.0.0.1", "--log-connections"]  # fmt: skip
    log = "/var/log/echoapp/echoapp.log"
    daemon = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    result: dict[str, object] = {"command": command}
    try:
        port = int(wait_for_match(log, r"echoapp-tcp listening on tcp:127\.0\.0\.1:(\d+)")[1])
        wait_for_match("/run/echoapp/echoapp.pid", r"\d+")
        visit(port)
        wait_for_match(log, "Connection from")
        rotated = subprocess.run(
            [logrotate_path() or "logrotate", "-f", "-s", os.path.join(root, "state"),
             RULE],
            capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
        result["logrotate"] = [rotated.returncode, rotated.stdout + rotated.stderr]
        visit(port)
        result["new log"] = wait_for_match(log, "Connection from", fail=False) is not None
        result["files"] = sorted(os.listdir("/var/log/echoapp"))
    finally:
        daemon.terminate()
        daemon.wait(DEADLINE)
    print(json.dumps(result))


def wait_for_match(path: str, pattern: str, fail: bool = True) -> re.Match[str] | None:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                found = re.search(pattern, file.read())
            if found:
                return found
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    if fail:
        raise AssertionError(f"gave up waiting for {pattern!r} in {path}")
    return None


def visit(port: int) -> None:
    """One greeter session, so that the daemon logs a connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.recv(100)
        sock.sendall(b"exit\n")
        while sock.recv(100):
            pass


class LogrotateTests(SynchronousTestCase):
    """
    deploy/logrotate/echoapp, unmodified, with the real logrotate, against
    the real daemon of deploy/systemd/echoapp-logfile.service (its twistd
    options unmodified; the listen ports are the kernel's).  The paths are
    real too: the test runs in a private mount namespace (C{unshare}) with
    temporary directories over C{/var/log} and C{/run}, which needs root.
    """

    def test_debug_run_finds_no_error(self) -> None:
        """C{logrotate -d}: no unknown user, no bad directive (it handles the pattern even with no log)."""
        logrotate = logrotate_path()
        if logrotate is None:
            self.skipTest("logrotate is not installed here (.ci/run installs it with apt-get)")
        with tempfile.TemporaryDirectory() as directory:
            result = subprocess.run(
                [logrotate, "-d", "-s", os.path.join(directory, "state"), RULE],
                capture_output=True, text=True, timeout=DEADLINE,
            )  # fmt: skip
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("error", result.stdout + result.stderr)
        self.assertIn("/var/log/echoapp/*.log", result.stdout + result.stderr)

    def test_rotates_the_log_of_the_file_logging_unit(self) -> None:
        logrotate = logrotate_path()
        unshare = shutil.which("unshare")
        if logrotate is None:
            self.skipTest("logrotate is not installed here (.ci/run installs it with apt-get)")
        if unshare is None or os.geteuid() != 0:
            self.skipTest("needs root and unshare(1) for a private mount namespace over /var/log and /run")
        root = tempfile.mkdtemp(prefix="echoapp-logrotate-")
        self.addCleanup(shutil.rmtree, root, True)
        os.mkdir(os.path.join(root, "log"))
        os.mkdir(os.path.join(root, "run"))
        checkout = os.path.dirname(DEPLOY)
        script = f"import tests.test_deploy as deploy; deploy.rotate_in_namespace({root!r})"
        ran = subprocess.run(
            [unshare, "--mount", "--propagation", "private", sys.executable, "-c", script],
            cwd=checkout, capture_output=True, text=True, timeout=DEADLINE * 4,
        )  # fmt: skip
        if ran.returncode != 0 and "unshare failed" in ran.stderr:
            self.skipTest(f"no mount namespace here: {ran.stderr.strip()}")
        self.assertEqual(ran.returncode, 0, ran.stdout + ran.stderr)
        result = json.loads(ran.stdout.strip().splitlines()[-1])
        self.assertEqual(result["logrotate"], [0, ""])
        self.assertEqual(result["files"], ["echoapp.log", "echoapp.log.1"])
        self.assertTrue(result["new log"], "the daemon writes to the new file after the rotation")
        with open(os.path.join(root, "log", "echoapp", "echoapp.log.1"), errors="replace") as old:
            self.assertIn("Connection from", old.read(), "the first visit is in the rotated file")


class DockerfileTests(SynchronousTestCase):
    def instruction(self, name: str) -> str:
        lines = read("Dockerfile").replace("\\\n", " ").splitlines()
        [line] = [line for line in lines if line.startswith(name + " ")]
        return line[len(name) + 1 :].strip()

    def test_runs_as_a_user_that_is_not_root(self) -> None:
        self.assertNotIn(self.instruction("USER"), ("root", "0"))

    def test_command_runs_and_passes_its_health_check(self) -> None:
        command = json.loads(self.instruction("CMD"))
        check_command(self, command)
        # The same command on ports chosen by the kernel, on loopback.
        args = [re.sub(r"^(tcp|udp):\d+$", r"\1:0:interface=127.0.0.1", word) for word in command[1:]]
        args = [arg for arg in args if arg not in ("--nodaemon", "--pidfile=")]
        at = args.index("--logger")
        del args[at : at + 2]  # the test reads twistd's text log to learn the ports
        server = Twistd(args, expect=4)
        try:
            metrics = server.address_port("echoapp-metrics")
            healthcheck = json.loads(self.instruction("HEALTHCHECK").split("CMD", 1)[1])
            self.assertIn(":9100/healthz", healthcheck[-1])
            probe = [
                shutil.which("python") or "python3",
                *healthcheck[1:-1],
                healthcheck[-1].replace(":9100/", f":{metrics}/"),
            ]
            self.assertEqual(subprocess.run(probe, timeout=DEADLINE).returncode, 0)
        finally:
            server.stop()


def docker_ignores(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves C{path} out of the build context: a pattern matches it or a folder above it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(
        fnmatch.fnmatchcase(prefix, pattern.removeprefix("**/")) or fnmatch.fnmatchcase(prefix, pattern)
        for pattern in patterns
        for prefix in (prefixes + parts if pattern.startswith("**/") else prefixes)
    )


class DockerignoreTests(SynchronousTestCase):
    def test_the_context_holds_what_the_image_builds_from_and_nothing_else(self) -> None:
        with open(os.path.join(os.path.dirname(DEPLOY), ".dockerignore")) as file:
            patterns = [line.strip() for line in file if line.strip() and not line.startswith("#")]
        needed = subprocess.run(
            ["git", "ls-files", "setup.cfg", "pyproject.toml", "README.rst", "echoapp", "twisted"],
            cwd=os.path.dirname(DEPLOY), capture_output=True, text=True, timeout=DEADLINE,
        ).stdout.split()  # fmt: skip
        if not needed:
            self.skipTest("not a git checkout")
        self.assertEqual([path for path in needed if docker_ignores(path, patterns)], [])
        left_out = [
            ".git/config",
            "docs/_build/html/index.html",
            "tests/test_deploy.py",
            "echoapp/__pycache__/x.pyc",
            "twisted/plugins/dropin.cache",
            ".venv/bin/python",
        ]
        for path in left_out:
            self.assertTrue(docker_ignores(path, patterns), path)


class KubernetesTests(SynchronousTestCase):
    def test_manifest_parses(self) -> None:
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML is not installed")
        documents = list(yaml.safe_load_all(read("kubernetes", "echoapp.yaml")))
        self.assertEqual([document["kind"] for document in documents], ["Deployment", "Service"])
        container = documents[0]["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(
            documents[1]["spec"]["externalTrafficPolicy"], "Local", "keeps client addresses for the limits"
        )


class NginxTests(SynchronousTestCase):
    def test_stream_example_passes_nginx_t(self) -> None:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        module = "/usr/lib/nginx/modules/ngx_stream_module.so"
        if nginx is None or not os.path.exists(module):
            self.skipTest("nginx with its stream module is not installed here (.ci/run installs them)")
        example = os.path.join(DEPLOY, "nginx", "echoapp-stream.conf")
        with open(example) as conf:
            self.assertIn("proxy_protocol on;", conf.read())
        directory = tempfile.mkdtemp(prefix="echoapp-nginx-")
        self.addCleanup(shutil.rmtree, directory, True)
        os.mkdir(os.path.join(directory, "logs"))
        main = os.path.join(directory, "nginx.conf")
        with open(main, "w") as conf:
            conf.write(
                f"load_module {module};\n"
                f"error_log {directory}/logs/error.log;\n"
                f"pid {directory}/nginx.pid;\n"
                "events {}\n"
                f"include {example};\n"
            )
        checked = subprocess.run(
            [nginx, "-t", "-p", directory, "-c", main], capture_output=True, text=True, timeout=DEADLINE
        )
        self.assertEqual(checked.returncode, 0, checked.stderr)
        self.assertIn("syntax is ok", checked.stderr)


class HAProxyTests(SynchronousTestCase):
    """
    The shipped HAProxy front (ports changed only) before two real
    instances listening as the systemd template says, with the PROXY
    protocol: clients are limited by their own addresses, not HAProxy's.
    """

    def front(self, *args: str) -> tuple[int, list[Twistd]]:
        haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if haproxy is None:
            self.skipTest("haproxy is not installed here (.ci/run installs it with apt-get)")
        instances = []
        for name in ("a", "b"):
            instance = Twistd(
                [
                    "echoapp-tcp",
                    "--listen",
                    "haproxy:tcp:0:interface=127.0.0.1",
                    "--proxy-from",
                    "127.0.0.1",
                    "--banner",
                    f"Welcome from {name}!",
                    "--metrics",
                    "tcp:0:interface=127.0.0.1",
                    *args,
                ],
                expect=2,
            )
            self.addCleanup(instance.stop)
            instances.append(instance)
        config = read("haproxy", "haproxy.cfg")
        frontend = free_port()
        config = config.replace("bind 127.0.0.1:9000", f"bind 127.0.0.1:{frontend}")
        for name, instance in zip(("a", "b"), instances, strict=True):
            config, count = re.subn(
                rf"server {name} 127\.0\.0\.1:\d+ check port \d+",
                f"server {name} 127.0.0.1:{instance.address_port('echoapp-tcp')} "
                f"check port {instance.address_port('echoapp-metrics')}",
                config,
            )
            self.assertEqual(count, 1)
        servers = re.findall(r"(?m)^\s*server .* send-proxy-v2$", config)
        self.assertEqual(len(servers), 2, "the shipped servers send the PROXY header")
        directory = tempfile.mkdtemp(prefix="echoapp-haproxy-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "haproxy.cfg")
        with open(path, "w") as file:
            file.write(config)
        checked = subprocess.run(
            [haproxy, "-c", "-f", path], capture_output=True, text=True, timeout=DEADLINE
        )
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        proxy = subprocess.Popen(
            [haproxy, "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addCleanup(proxy.wait, DEADLINE)
        self.addCleanup(proxy.terminate)
        self.wait_until_both_serve(frontend)
        return frontend, instances

    def wait_until_both_serve(self, frontend: int) -> None:
        banners = set()
        end = time.monotonic() + DEADLINE
        while len(banners) < 2 and time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", frontend), timeout=2) as sock:
                    banner = sock.recv(100)
                    if banner:
                        banners.add(banner)
            except OSError:
                pass
            time.sleep(0.05)
        self.assertEqual(banners, {b"Welcome from a!\r\n", b"Welcome from b!\r\n"})

    def clients(self, frontend: int, sources: list[str]) -> list[bytes]:
        """One connection from each source address, all open at once; the first line each gets."""
        socks = []
        for source in sources:
            sock = socket.socket()
            self.addCleanup(sock.close)
            sock.bind((source, 0))
            sock.settimeout(DEADLINE)
            sock.connect(("127.0.0.1", frontend))
            socks.append(sock)
        return [sock.recv(100) for sock in socks]

    def test_balances_over_two_instances(self) -> None:
        self.front()

    def test_600_clients_from_20_addresses_are_all_welcomed(self) -> None:
        frontend, _ = self.front()
        sources = [f"127.0.0.{2 + n % 20}" for n in range(600)]
        lines = self.clients(frontend, sources)
        self.assertEqual(len([line for line in lines if line.startswith(b"Welcome from ")]), 600)

    def test_one_address_over_its_limit_is_refused_by_its_own_address(self) -> None:
        frontend, _ = self.front("--max-per-peer", "10")
        lines = self.clients(frontend, ["127.0.0.77"] * 30 + ["127.0.0.78"] * 5)
        welcomed = [line.startswith(b"Welcome from ") for line in lines]
        self.assertEqual(sum(welcomed[:30]), 20, "ten per instance, by the client's own address")
        self.assertEqual(
            set(lines[:30]) - {b"Welcome from a!\r\n", b"Welcome from b!\r\n"},
            {b"ERROR: too many connections from your address\r\n"},
        )
        self.assertEqual(welcomed[30:], [True] * 5, "another address is not held to the first one's limit")
