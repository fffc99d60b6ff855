"""The Google Cloud side of access control (deploy/access/terraform) is formatted as `terraform fmt` wants and
names exactly the service accounts the Kubernetes manifests run as. (`terraform validate` needs the Google
provider, which no registry reachable here serves; formatting is what can be checked offline.)"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.fixtures.deploy import CHECKOUT, tool

TERRAFORM_DIR = CHECKOUT / "deploy" / "access" / "terraform"


def _terraform() -> str:
    return shutil.which("terraform") or str(tool("terraform"))


def _fmt_check(directory: Path) -> subprocess.CompletedProcess[str]:
    argv = [_terraform(), "fmt", "-check", "-diff", "-recursive", str(directory)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_terraform_fmt_accepts_it() -> None:
    assert sorted(p.name for p in TERRAFORM_DIR.glob("*.tf")) == [
        "main.tf",
        "outputs.tf",
        "variables.tf",
        "versions.tf",
    ]
    done = _fmt_check(TERRAFORM_DIR)
    assert done.returncode == 0, done.stdout + done.stderr


def test_terraform_fmt_rejects_a_misaligned_file(tmp_path: Path) -> None:
    text = (
        (TERRAFORM_DIR / "main.tf")
        .read_text()
        .replace('  role   = "roles/storage.objectUser"', '  role = "roles/storage.objectUser"')
    )
    (tmp_path / "main.tf").write_text(text)
    done = _fmt_check(tmp_path)
    assert done.returncode != 0
    assert "main.tf" in done.stdout


def test_it_grants_the_service_accounts_the_cluster_runs_as() -> None:
    main = (TERRAFORM_DIR / "main.tf").read_text()
    block = re.search(r"components = \{(.*?)\n  \}", main, re.S)
    assert block is not None
    granted = set(re.findall(r'"(cdcflow-[a-z-]+)"\s*=', block.group(1)))
    accounts = yaml.safe_load_all((CHECKOUT / "deploy" / "access" / "serviceaccounts.yaml").read_text())
    assert granted == {a["metadata"]["name"] for a in accounts if a}
    # analysts: one grant, read-only, on gold
    assert re.findall(
        r"dataset_id = var\.datasets\.gold\n  role       = \"([^\"]+)\"\n  member     = each\.value", main
    ) == ["roles/bigquery.dataViewer"]
