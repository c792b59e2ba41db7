import subprocess
import sys
from pathlib import Path

from tests.paths import ROOT

SCRIPT = ROOT / "scripts" / "readme_results.py"
README = ROOT / "README.md"


def test_readme_block_is_replaced_by_the_run_s_table(tmp_path: Path) -> None:
    results = tmp_path / "results.md"
    results.write_text(
        "# lcip demo\n\n| prior | map |\n| --- | --- |\n| nlcd | QR (q) |\n\nMachine: x.\n"
    )
    readme = tmp_path / "README.md"
    readme.write_text(README.read_text())
    subprocess.run([sys.executable, str(SCRIPT), str(results), str(readme)], check=True)
    text = readme.read_text()
    block = text.split("<!-- demo-results:start")[1].split("<!-- demo-results:end -->")[0]
    assert "| nlcd | QR (q) |" in block and "Machine: x." in block and "# lcip demo" not in block
    assert (
        text.split("<!-- demo-results:end -->")[1]
        == README.read_text().split("<!-- demo-results:end -->")[1]
    )
