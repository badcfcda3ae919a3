"""pytest fixtures: one emulator process per test (isolated state), on a free loopback port."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

HERE = Path(__file__).resolve().parent


class Emulator:
    """A running emulator: ``url``, ``client(service)``, ``stop()``."""

    def __init__(self, time_scale=None):
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL", None)
        if time_scale is not None:
            env["BAKE_EMULATOR_TIME_SCALE"] = str(time_scale)
        # Its own process group: stop() takes every thread and child down with it.
        self.proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "bake_emulator.server", "--port", "0"],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"emulator did not start: {line!r}")
        self.url = line.removeprefix("listening on ")
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def client(self, service, region="us-east-1"):
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def emulator_factory():
    """Start emulators with chosen settings; all are stopped at the end of the test, pass or fail."""
    started = []

    def start(time_scale=None):
        emu = Emulator(time_scale=time_scale)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(emulator_factory):
    """An emulator on a fast clock (BAKE_EMULATOR_TIME_SCALE=0.01)."""
    return emulator_factory(time_scale=0.01)
