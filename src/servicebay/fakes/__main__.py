"""`python -m servicebay.fakes NAME [--host H] [--port P]`: serve one fake until interrupted."""

from __future__ import annotations

import argparse
import signal
import threading

from servicebay.fakes import FAKES, fake_class


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m servicebay.fakes", description=__doc__)
    parser.add_argument("name", choices=sorted(FAKES), help="the vendor to fake")
    parser.add_argument("--host", default="127.0.0.1", help="the address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="the port (default: a free one)")
    options = parser.parse_args(argv)
    fake = fake_class(options.name)(host=options.host, port=options.port).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    print(fake.describe(), flush=True)
    try:
        stopped.wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
