"""Security properties of a real sweep: secrets stay out of everything it writes and prints."""

from __future__ import annotations

from tests.conftest import PLANTED_SECRET


def test_no_planted_secret_in_any_output_artifact_tag_or_file(sweep):
    """The session sweep ran with credentials in its environment: grep every byte it left behind."""
    _, workdir, proc = sweep
    assert PLANTED_SECRET not in proc.stdout + proc.stderr
    files = [p for p in workdir.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in files)  # params, tags and metrics are in here
    assert any("mlartifacts" in p.parts for p in files)  # and the artifacts here
    leaked = [str(p) for p in files if PLANTED_SECRET.encode() in p.read_bytes()]
    assert leaked == []


EMBEDDED = """
import sys, time
from orchestrator.ray_session import init_ray as _init_ray
_init_ray(False)
import ray
print(ray.get_runtime_context().gcs_address, flush=True)
time.sleep(600)
"""

CONNECT = "import ray; ray.init(address={address!r}); print('CONNECTED')"


def _outside_address() -> str:
    """This machine's first non-loopback IPv4 address (127.0.0.1 where it has none)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def test_embedded_ray_refuses_unauthenticated_connections(tmp_path):
    """The sweep's own Ray start (`_init_ray`) with RAY_AUTH_MODE=disabled in the environment:
    token mode is forced on, the token file is private, and a client without the token that
    reaches the GCS port on a non-loopback address is refused."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    driver = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED], env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        gcs = driver.stdout.readline().strip()
        assert gcs, "embedded Ray did not start"
        token = home / ".ray" / "auth_token"
        assert token.exists() and token.stat().st_mode & 0o077 == 0
        port = int(gcs.rsplit(":", 1)[1])
        outside = _outside_address()
        with socket.create_connection((outside, port), timeout=5):
            pass  # Ray listens on every interface: only the token keeps others out
        attacker = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        attacker["HOME"] = str(tmp_path)  # no token file there
        for extra in ({"RAY_AUTH_MODE": "disabled"}, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}):
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", CONNECT.format(address=f"{outside}:{port}")],
                    env={**attacker, **extra},
                    capture_output=True,
                    text=True,
                    timeout=90,
                )
                refused = "CONNECTED" not in proc.stdout
            except subprocess.TimeoutExpired:
                refused = True
            assert refused, extra
        owner = {**attacker, "HOME": str(home), "RAY_AUTH_MODE": "token"}  # the same call with the token
        ok = subprocess.run(
            [sys.executable, "-c", CONNECT.format(address=f"{outside}:{port}") + "; ray.shutdown()"],
            env=owner,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "CONNECTED" in ok.stdout, ok.stderr[-2000:]
    finally:
        os.killpg(driver.pid, signal.SIGTERM)
        driver.wait(timeout=60)
