"""`python -m stream_agents worker -l info`: one worker, configured by DONORCAST_* settings (faust's CLI).

Kafka and PostgreSQL come from DONORCAST_KAFKA_BOOTSTRAP / DONORCAST_DATABASE_URL, or from the embedded
services `donorcast up` left running. `donorcast worker` starts those itself and can run several workers.
"""

from __future__ import annotations

import sys

from infra.errors import DonorcastError


def main() -> None:
    from stream_agents.app import app_from_environment

    try:
        app = app_from_environment()
    except DonorcastError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    app.main()


if __name__ == "__main__":
    main()
