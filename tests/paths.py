"""Where the tests find the repository, the real sample data and the recorded fixtures."""

from pathlib import Path

#: The repository root.
ROOT = Path(__file__).resolve().parents[1]
#: ``../shared/realdata`` beside the clone (CI has it; see its README).
REALDATA = ROOT.parent / "shared" / "realdata"
#: Recorded service responses and small files the tests serve or read.
FIXTURES = ROOT / "tests" / "fixtures"
