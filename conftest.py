"""Collection rule for the whole tree: madeflow.sbi's modules need the optional sbi extra.

The suite collects doctests from every module under ``madeflow/``; without sbi installed
(``pip install "madeflow[sbi]"``) importing ``madeflow.sbi`` raises ImportError by design, so its
modules are left out of collection instead. ``tests/test_sbi.py`` skips itself in that case.
"""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("sbi") else ["madeflow/sbi/*"]
