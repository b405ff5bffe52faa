#!/bin/sh
# Test converter: copies the input (prefixed) to --outputfolder and --altoutputfolder
# and prints the JSON file list with key-values. --saveoption folder writes a
# folder of two files per input (plate-like); --mode nojson omits the JSON line.
while [ $# -gt 1 ]; do
    case "$1" in
        --inputfile) input="$2" ;;
        --outputfolder) out="$2" ;;
        --altoutputfolder) alt="$2" ;;
        --saveoption) save="$2" ;;
        --mode) mode="$2" ;;
    esac
    shift 2
done
name=$(basename "$input")
base="${name%.*}"
echo "converting $input" >&2
mkdir -p "$out" "$alt" || exit 4
if [ "$save" = folder ]; then
    target="$base.plate"
    for dir in "$out" "$alt"; do
        mkdir -p "$dir/$target"
        { printf 'well A1 of '; cat "$input"; } >"$dir/$target/A1.tif" || exit 5
        { printf 'well A2 of '; cat "$input"; } >"$dir/$target/A2.tif" || exit 5
    done
else
    target="$base.converted.tif"
    for dir in "$out" "$alt"; do
        { printf 'converted '; cat "$input"; } >"$dir/$target" || exit 5
    done
fi
echo "progress: done"
if [ "$mode" != nojson ]; then
    printf '[{"name": "%s", "full_path": "%s", "alt_path": "%s", "keyvalues": [{"source": "%s"}, {"saveoption": "%s"}]}]\n' \
        "$target" "$out/$target" "$alt/$target" "$name" "$save"
fi
