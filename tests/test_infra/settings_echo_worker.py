"""`python -m tests.test_infra.settings_echo_worker worker ...`: a stand-in worker for spawn_worker's
tests. It prints the Settings it loads (secrets revealed) and its argv as one JSON line, then exits."""

from __future__ import annotations

import json
import os
import sys

from pydantic import SecretStr

from infra.settings import load_settings

settings = load_settings()
values = {name: (value.get_secret_value() if isinstance(value, SecretStr) else value)
          for name, value in settings}
print(json.dumps({"settings": values, "argv": sys.argv[1:], "knob": os.environ.get("ECHO_KNOB")}, default=str))
