"""``python -m control_plane.stack``: ``af up``, ``af down``, ``af status`` and ``af worker start``."""

from control_plane.stack.launcher import main

main()
