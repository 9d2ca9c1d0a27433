"""``xling-ray submit``: run an ``xling-ray`` command on a Ray cluster as a Ray job.

What ``ray job submit -- xling-ray sweep ...`` does, through
:class:`ray.job_submission.JobSubmissionClient`, plus what a sweep needs on a cluster:

- the command is checked here before anything is uploaded (a typo fails in a second,
  not after the upload), and its ``--storage`` must be a place the job can keep: a
  URI, or an absolute path that is shared when the cluster is on other machines
  (:mod:`xling_ray.tune.storage`);
- the job runs ``python -m xling_ray.cli COMMAND`` (the ``xling-ray`` command) on the
  head: it works where xling-ray is installed and also where only its dependencies are
  (a ``pip`` runtime env) and the code comes with ``--working-dir``. Ray sets
  ``RAY_ADDRESS`` for the job, so ``sweep`` joins that cluster without an ``--address``;
- heads started with token authentication (``ray start`` turns it on when
  ``~/.ray/auth_token`` exists and ``RAY_AUTH_MODE`` is unset) get that token, so a
  user does not meet ``AuthenticationError`` with a head started on this machine.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import time
from pathlib import Path
from typing import Any

from xling_ray.config import ConfigError
from xling_ray.tune.storage import check_shared_storage, is_uri

#: Never uploaded with ``--working-dir`` (Ray also skips what ``.gitignore`` names).
WORKING_DIR_EXCLUDES = [".git", ".venv", "venv", "xling_runs", "xling_models", "__pycache__", "*.egg-info",
                        ".pytest_cache", "build"]

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def dashboard_address(address: str | None) -> str:
    """The job server's URL: ``--address``, else ``$RAY_API_SERVER_ADDRESS`` (Ray's jobs CLI
    variable; ``RAY_ADDRESS`` is left alone, since an http address there breaks ``ray.init``)."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address:
        raise ConfigError("submit needs the head's dashboard address: --address http://HEAD:8265")
    if address.startswith("ray://") or address.rstrip("/").endswith(":6379"):
        raise ConfigError(f"--address {address}: jobs go to the dashboard (job server) address, e.g. http://HEAD:8265")
    return address if "://" in address else f"http://{address}"


def auth_headers() -> dict[str, str]:
    """``Authorization`` for heads that use token authentication.

    Ray's own client sends a token only when ``RAY_AUTH_MODE=token`` is exported, while
    ``ray start`` turns tokens on by itself whenever ``~/.ray/auth_token`` exists. Do what
    ``ray start`` does: unless ``RAY_AUTH_MODE=disabled``, send the token found in
    ``$RAY_AUTH_TOKEN``, ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (a head without
    authentication ignores it).
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return {}
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str):
    """A client of the head's job server; an unreachable or refusing head is a ConfigError that says why."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url = dashboard_address(address)
    try:
        return JobSubmissionClient(url, headers=auth_headers())
    except ConnectionError as err:
        raise ConfigError(f"{err} Is the head up, and is {url} its dashboard (job server) address?") from None
    except AuthenticationError as err:
        raise ConfigError(f"{url} uses token authentication: {err}") from None


def load_runtime_env(path: str | None, working_dir: str | None) -> dict[str, Any]:
    """The job's ``runtime_env``: a YAML or JSON file (``cluster/runtime_env.yaml``), then
    ``--working-dir`` on top. A local working dir is uploaded without caches, virtual
    environments and runs (:data:`WORKING_DIR_EXCLUDES`)."""
    env: dict[str, Any] = {}
    if path:
        import yaml

        try:
            env = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"--runtime-env {path}: no such file") from None
        if not isinstance(env, dict):
            raise ConfigError(f"--runtime-env {path}: expected a mapping (working_dir, pip, env_vars, ...)")
    if working_dir:
        env["working_dir"] = working_dir
    local_dir = env.get("working_dir")
    if local_dir and not is_uri(local_dir):
        if not Path(local_dir).is_dir():
            raise ConfigError(f"working_dir {local_dir}: no such folder")
        env["excludes"] = list(dict.fromkeys([*env.get("excludes", []), *WORKING_DIR_EXCLUDES]))
    return env


def check_job_command(command: argparse.Namespace, address: str) -> None:
    """What a sweep run as a job on ``address`` must get right before it is submitted.

    A relative ``--storage`` (the default ``./xling_runs`` included) would land in the
    job's temporary working folder on the head and be lost with it; a local one on a
    cluster of other machines must be shared.
    """
    if command.command != "sweep":
        return
    resume = getattr(command, "resume", None)
    flag, where = ("--resume", resume) if resume else ("--storage", command.storage)
    if not is_uri(where) and not Path(where).expanduser().is_absolute():
        raise ConfigError(
            f"{flag} {where}: a job runs in a temporary folder on the head; give an absolute path on the "
            f"cluster (shared by its nodes) or a URI such as s3://BUCKET/runs"
        )
    check_shared_storage(where, address, getattr(command, "shared_storage", False))


def follow_hint(address: str, job_id: str) -> str:
    """The Ray commands to follow, check and stop the job, ready to paste."""
    env = "RAY_AUTH_MODE=token " if auth_headers() and "RAY_AUTH_MODE" not in os.environ else ""
    a = shlex.quote(dashboard_address(address))
    return "\n".join([
        f"  follow its logs:  {env}ray job logs --address {a} --follow {job_id}",
        f"  its status:       {env}ray job status --address {a} {job_id}",
        f"  stop it:          {env}ray job stop --address {a} {job_id}",
    ])


def submit(
    address: str,
    command: list[str],
    runtime_env: dict[str, Any] | None = None,
    job_id: str | None = None,
    wait: bool = True,
) -> int:
    """Submit ``xling-ray COMMAND...`` (as ``python -m xling_ray.cli``) as a job on the cluster at
    ``address``; print its id and how to follow it. With ``wait``, stream its logs until it ends:
    0 when it SUCCEEDED, else 1. Ctrl-C stops following, not the job."""
    client = job_client(address)
    entrypoint = shlex.join(["python", "-m", "xling_ray.cli", *command])
    job_id = _submit_job(client, entrypoint, runtime_env or None, job_id)
    print(f"Submitted job {job_id} to {dashboard_address(address)}: {entrypoint}")
    print(follow_hint(address, job_id), flush=True)
    if not wait:
        return 0
    print(f"\nFollowing {job_id}'s logs (Ctrl-C stops following, not the job):\n", flush=True)
    try:
        asyncio.run(_print_logs(client, job_id))
        status = _wait_for_end(client, job_id)
    except KeyboardInterrupt:
        print(f"\nStopped following; job {job_id} goes on.\n{follow_hint(address, job_id)}")
        return 130
    info = client.get_job_info(job_id)
    print(f"\nJob {job_id} {status}" + (f": {info.message}" if status != "SUCCEEDED" and info.message else ""))
    return 0 if status == "SUCCEEDED" else 1


# A head that has just started answers job submissions with this until its job agent is up
# (Ray's job server, HTTP 500); it is worth waiting for, as for a head that is still starting.
NO_AGENT = "No available agent to submit job"


def _submit_job(client, entrypoint: str, runtime_env: dict[str, Any] | None, job_id: str | None,
                wait_s: float = 60.0, poll_s: float = 2.0) -> str:
    """``client.submit_job``, retried for up to ``wait_s`` while the head has no job agent yet."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id)
        except RuntimeError as err:
            if NO_AGENT not in str(err) or time.monotonic() > deadline:
                raise
            if not told:
                print(f"The head has no job agent yet; trying again for up to {wait_s:.0f} s", flush=True)
                told = True
            time.sleep(poll_s)


async def _print_logs(client, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def _wait_for_end(client, job_id: str, poll_s: float = 1.0) -> str:
    """The log stream can close a moment before the job's status is final."""
    while (status := client.get_job_status(job_id).value) not in TERMINAL:
        time.sleep(poll_s)
    return status


def job_status(address: str, job_id: str) -> str:
    """``PENDING``, ``RUNNING``, ``STOPPED``, ``SUCCEEDED`` or ``FAILED``."""
    return job_client(address).get_job_status(job_id).value
