"""The teammate workflow over a real SSH server (Debian's OpenSSH on loopback, key login made
here): A runs the pipeline, commits dvc.lock and the metrics, pushes to the SSH remote; B clones,
pulls, and has nothing to re-run and a model that answers."""
import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import SHARED, copy_repo, dvc

pytestmark = pytest.mark.slow

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def run(*command, cwd=None) -> str:
    result = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def git(repo: Path, *args) -> str:
    return run("git", "-c", "user.name=folio-llm test", "-c", "user.email=test@example.org", *args, cwd=repo)


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """An OpenSSH server on a free loopback port that lets this user in with a key made here
    (and nothing else): (user, port, private key file)."""
    if not Path(SSHD).is_file() or not shutil.which("ssh-keygen"):
        pytest.fail("no OpenSSH server here: apt-get install openssh-server (make test does where it can)")
    folder = tmp_path_factory.mktemp("sshd")
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / "host_key")
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / "client_key")
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (folder / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}", f"PidFile {folder / 'sshd.pid'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "StrictModes no", "UsePAM no", "Subsystem sftp internal-sftp", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # OpenSSH's privilege separation folder
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        assert server.poll() is None, f"sshd stopped: {server.stderr.read()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.1)
    yield getpass.getuser(), port, folder / "client_key"
    server.terminate()
    server.wait(timeout=30)


def small_run(repo: Path, base: Path) -> None:
    """params.yaml for a whole run in a few minutes: the tiny model, 60 records, 2 steps."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["source"]["sample_size"] = 60
    params["model"]["base"] = str(base)
    params["train"].update({"max_steps": 2, "batch_size": 2, "compile": "off"})
    params["eval"].update({"limit": 2, "max_new_tokens": 24, "base_max_new_tokens": 8, "batch_size": 2})
    params["export"].update({"gpt4all": [], "parity_rows": 1})
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def test_a_run_pushed_over_ssh_is_pulled_by_a_teammate_who_re_runs_nothing(ssh_server, tiny_base, tmp_path):
    user, port, key = ssh_server
    url = f"ssh://{user}@127.0.0.1:{port}{tmp_path / 'remote'}"

    # A: a finished run, committed and pushed
    a = copy_repo(tmp_path / "a")
    small_run(a, tiny_base)
    dvc(a, "remote", "modify", "--local", "team", "url", str(SHARED / "dvc-remote"))
    dvc(a, "pull", "-r", "team", "data/raw.dvc")
    dvc(a, "repro")
    dvc(a, "remote", "add", "-d", "lab", url)
    dvc(a, "remote", "modify", "--local", "lab", "keyfile", str(key))  # a key is the teammate's own: not in git
    git(a, "add", "-A")
    git(a, "commit", "-q", "-m", "a finished run: dvc.lock and metrics")
    assert "Everything is up to date" not in dvc(a, "push")
    assert (tmp_path / "remote" / "files" / "md5").is_dir()

    # B: a fresh clone on another machine
    b = tmp_path / "b"
    run("git", "clone", "-q", a, b)
    assert not (b / "models").exists()
    dvc(b, "remote", "modify", "--local", "lab", "keyfile", str(key))
    dvc(b, "pull")
    assert "up to date" in dvc(b, "status")
    assert "Running stage" not in (log := dvc(b, "repro")), log
    for out in ("models/adapter/adapter_model.safetensors", "models/merged/model.safetensors",
                "models/gguf/folio-llm-q8_0.gguf", "data/predictions"):
        assert (b / out).exists(), out
    answered = subprocess.run(
        [Path(sys.executable).parent / "folio-llm", "predict", "For The jazz piano book. Published in 1989.",
         "--backend", "llama.cpp", "--rejects", "rejects.jsonl"], cwd=b, capture_output=True, text=True)
    # the tiny model writes what its two training steps taught it: a record or a kept reject,
    # but an answer from the pulled GGUF file either way
    assert "no GGUF file" not in answered.stderr and "Traceback" not in answered.stderr, answered.stderr
    rejects = (b / "rejects.jsonl").read_text().strip() if (b / "rejects.jsonl").is_file() else ""
    assert (answered.returncode == 0 and answered.stdout.strip().startswith("{")) or '"output"' in rejects, \
        (answered.stdout, answered.stderr)


def test_an_unreachable_remote_names_its_url(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the socket is: nothing listens there
    repo = copy_repo(tmp_path / "repo")
    url = f"ssh://{getpass.getuser()}@127.0.0.1:{port}/srv/folio-llm"
    dvc(repo, "remote", "add", "-d", "--local", "lab", url)
    result = subprocess.run([sys.executable, "-m", "dvc", "pull", "data/raw.dvc"], cwd=repo, capture_output=True,
                            text=True)
    said = result.stdout + result.stderr
    assert result.returncode != 0 and "Traceback" not in said
    # DVC's own words: "failed to connect to ssh (/srv/folio-llm/files/md5) - ... ('127.0.0.1', PORT)"
    assert "failed to connect to ssh (/srv/folio-llm/" in said and f"'127.0.0.1', {port}" in said, said
