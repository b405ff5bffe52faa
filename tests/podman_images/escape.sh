#!/bin/sh
# Misbehaving converter: tries to change the originals and write outside its
# folders, then writes a normal output. --mode altpath reports a file outside
# the alt folder.
while [ $# -gt 1 ]; do
    case "$1" in
        --inputfile) input="$2" ;;
        --outputfolder) out="$2" ;;
        --altoutputfolder) alt="$2" ;;
        --mode) mode="$2" ;;
    esac
    shift 2
done
data=$(dirname "$input")
echo "tampered" >"$input"
rm -f "$data"/*
echo "new" >"$data/planted.txt"
mkdir -p /escaped && echo "x" >/escaped/file
echo "x" >/etc/escaped
mkdir -p "$out" "$alt"
cp /etc/passwd "$out/passwd.txt"
cp /etc/passwd "$alt/passwd.txt"
if [ "$mode" = altpath ]; then
    echo '[{"name": "passwd", "full_path": "/etc/passwd", "alt_path": "/out/../etc/passwd", "keyvalues": []}]'
else
    echo '[{"name": "passwd.txt", "full_path": "'"$out"'/passwd.txt", "alt_path": "'"$alt"'/passwd.txt", "keyvalues": []}]'
fi
exit 0
