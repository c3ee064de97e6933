"""The venv .run/deploy-venv with tests/deploy/requirements.txt (the offline Kubernetes schema
validator), made or remade when the requirements changed. Used by check_deploy.py and
helm_test.sh (`python3 tests/deploy/deploy_venv.py` prints the venv's python)."""
import fcntl
import os
import shutil
import subprocess
import sys


def deploy_venv(src):
    # make test runs check_deploy.py and helm_test.sh at the same time: one makes the venv, the
    # other waits for it.
    os.makedirs(os.path.join(src, ".run"), exist_ok=True)
    with open(os.path.join(src, ".run", "deploy-venv.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _deploy_venv(src)


def _deploy_venv(src):
    venv = os.path.join(src, ".run", "deploy-venv")
    reqs = os.path.join(src, "tests", "deploy", "requirements.txt")
    stamp = os.path.join(venv, ".installed")
    python = os.path.join(venv, "bin", "python")
    with open(reqs) as f:
        wanted = f.read()
    if os.path.exists(stamp) and open(stamp).read() == wanted:
        return python
    print("creating " + venv + " (pip install -r tests/deploy/requirements.txt)", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--only-binary=:all:", "-r", reqs], check=True, stdout=sys.stderr)
    with open(stamp, "w") as f:
        f.write(wanted)
    return python


if __name__ == "__main__":
    print(deploy_venv(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
