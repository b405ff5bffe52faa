"""The order store: tables, event writing, queue queries, migrations."""
