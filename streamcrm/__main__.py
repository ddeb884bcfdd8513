"""``python -m streamcrm`` is the ``streamcrm`` command."""

from streamcrm.cli import main

raise SystemExit(main())
