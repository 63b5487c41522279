"""app: the adapters' factories. The SSH library is imported on a thread while a run's first
cloud calls are under way, so nothing a run needs before its first connection may import it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_a_run_before_its_first_connection_does_not_import_asyncssh(tmp_path: Path) -> None:
    out = _python(
        "import sys\n"
        "from pathlib import Path\n"
        "import ec2backup.commands.backup, ec2backup.commands.runner, ec2backup.run.steps\n"
        "import ec2backup.run.engine, ec2backup.adapters.aws.session\n"
        "from ec2backup.adapters.keys import generate_run_key\n"
        f"generate_run_key(Path({str(tmp_path / 'run')!r}))\n"
        "print('asyncssh' in sys.modules)\n"
    )
    assert out == "False"


def test_the_connector_imports_the_ssh_module_on_a_thread() -> None:
    out = _python(
        "import sys, threading\n"
        "from ec2backup.commands.app import BackgroundLoadedConnector\n"
        "BackgroundLoadedConnector()\n"
        "(loader,) = [t for t in threading.enumerate() if t.name == 'import-asyncssh']\n"
        "loader.join(60)\n"
        "print(loader.is_alive(), 'ec2backup.adapters.host' in sys.modules,\n"
        "      'asyncssh' in sys.modules)\n"
    )
    assert out == "False True True"
