#!/bin/sh
echo "reading input"
echo "conversion failed: unsupported file" >&2
exit 3
