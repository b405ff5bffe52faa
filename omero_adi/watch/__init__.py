"""Watch folders: complete new files or acquisition folders become orders by themselves.

``rules`` (the settings), ``scan`` (finding units and telling when they are
complete), ``ledger`` (ADI's record of each unit, written with its order),
``runner`` (the loop inside the daemon), ``report`` (metrics, status, dry
run, checks), ``events`` (what others may hook). See docs/watch.md.
"""
