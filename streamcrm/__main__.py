"""``python -m streamcrm`` is the ``streamcrm`` command."""

from streamcrm.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
