"""``biomero_importer.api``: the client API, as BIOMERO.importer names its module."""

from omero_adi.store.client_api import (
    UnsupportedImportOperation,
    get_importer_capabilities,
    submit_import_order,
    supports_import_options,
)

__all__ = [
    "UnsupportedImportOperation",
    "get_importer_capabilities",
    "submit_import_order",
    "supports_import_options",
]
