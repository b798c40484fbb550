#!/usr/bin/env bash
# Fetch the MILES stellar library (985 spectra as 1-D FITS images, and MILES_params.db)
# from the sdss-mangadap 4.5.0 wheel on PyPI, into DEST (default: data/miles in the repo).
#
#   scripts/fetch-miles.sh [DEST]
#
# Needs python3 with pip; the wheel (about 120 MB) is unpacked with Python's zipfile, so
# `unzip` is not needed. Running it again with the files in place does nothing.
# The library's provenance and citations are in tests/data/miles/README.md.
set -euo pipefail

package="sdss-mangadap==4.5.0"
wheel_sha256="b8478bb24c32fe736fa6a2881805458719281862313838f8b032f3c10527ff34"
prefix="mangadap/data/spectral_templates/miles/"

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-$repo/data/miles}"
stamp="$dest/.fetched-from"

fail() {
    echo "fetch-miles: $*" >&2
    exit 1
}

if [[ -f "$stamp" ]]; then
    expected="$(sed -n 's/^files: //p' "$stamp")"
    found="$(find "$dest" -type f ! -name .fetched-from | wc -l | tr -d ' ')"
    if [[ -n "$expected" && "$found" == "$expected" ]]; then
        echo "fetch-miles: $dest already contains the $found files of $package; nothing to do"
        exit 0
    fi
    echo "fetch-miles: $dest contains $found files, $expected expected; fetching again"
elif [[ -e "$dest" && -n "$(ls -A "$dest" 2>/dev/null || echo file)" ]]; then
    fail "$dest exists and was not written by this script; move it away or give another DEST"
fi

command -v python3 >/dev/null || fail "python3 not found; install Python 3 with pip"
python3 -m pip --version >/dev/null 2>&1 ||
    fail "pip not found for python3; install it (python3 -m ensurepip, or the python3-pip package)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-miles: downloading $package (about 120 MB) with pip"
python3 -m pip download --quiet --no-deps --only-binary=:all: "$package" -d "$work/wheel" ||
    fail "pip download of $package failed; check that PyPI is reachable"
wheel="$(find "$work/wheel" -name 'sdss_mangadap-4.5.0-*.whl' | head -n 1)"
[[ -n "$wheel" ]] || fail "pip gave no sdss_mangadap-4.5.0 wheel in $work/wheel"

echo "fetch-miles: checking $(basename "$wheel") and unpacking $prefix"
python3 - "$wheel" "$wheel_sha256" "$prefix" "$work/miles" <<'PY' || fail "unpacking the wheel failed"
import hashlib
import pathlib
import sys
import zipfile

wheel, expected, prefix, out = sys.argv[1:]
digest = hashlib.sha256(pathlib.Path(wheel).read_bytes()).hexdigest()
if digest != expected:
    sys.exit(f"sha256 of the wheel is {digest}, expected {expected}")

out = pathlib.Path(out)
count = 0
with zipfile.ZipFile(wheel) as archive:
    for member in archive.infolist():
        if member.is_dir() or not member.filename.startswith(prefix):
            continue
        relative = pathlib.PurePosixPath(member.filename[len(prefix):])
        if ".." in relative.parts:
            sys.exit(f"refusing the member {member.filename}")
        target = out.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(archive.read(member))
        count += 1
if count == 0:
    sys.exit(f"no member under {prefix} in the wheel")
PY

count="$(find "$work/miles" -type f | wc -l | tr -d ' ')"
printf 'package: %s\nwheel sha256: %s\nfiles: %s\n' "$package" "$wheel_sha256" "$count" \
    >"$work/miles/.fetched-from"

mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/miles" "$dest"
echo "fetch-miles: wrote $count files to $dest"
