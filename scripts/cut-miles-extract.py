#!/usr/bin/env python3
"""Cut the committed MILES extract (tests/data/miles) from the full library.

    scripts/fetch-miles.sh                # full library into data/miles
    python3 scripts/cut-miles-extract.py  # data/miles -> tests/data/miles

Picks 300 stars with Teff, log g and [Fe/H] all known, with a fixed seed, plus a few
stars with missing labels, and keeps pixels FIRST_PIXEL .. FIRST_PIXEL + N_PIXELS - 1
(0-based) of each spectrum. The files keep the formats of the originals: each spectrum
is a 1-D FITS image, BITPIX -64. Its header is copied card by card, with NAXIS1 and
CRVAL1 changed for the window and one HISTORY card added. MILES_params.db keeps its
comment lines and the original lines of the chosen stars, in the original order.

Only the Python standard library is used.
"""

import argparse
import pathlib
import random
import struct
import sys

SEED = 703
N_COMPLETE = 300
N_MISSING_TEFF = 2
N_MISSING_FEH_ONLY = 4
FIRST_PIXEL = 1400
N_PIXELS = 720
BLOCK = 2880
MISSING_TEFF = "99999"
MISSING_OTHER = "9999"


def cards(data: bytes) -> list[str]:
    """Return the 80-character cards of the first header, up to and without END."""
    out = []
    for i in range(0, len(data) - 79, 80):
        card = data[i : i + 80].decode("ascii")
        if card.rstrip() == "END":
            return out
        out.append(card)
    sys.exit("no END card in the first header")


def value(card: str) -> str:
    return card[10:].split("/")[0].strip()


def with_value(card: str, new: str) -> str:
    """Return the card with its value replaced, right-justified in columns 11-30."""
    comment = card[30:]
    return (card[:10] + new.rjust(20) + comment).ljust(80)[:80]


def cut_spectrum(source: pathlib.Path, target: pathlib.Path) -> None:
    data = source.read_bytes()
    header = cards(data)
    header_end = (len(header) // 36 + 1) * BLOCK
    keys = {c[:8].strip(): c for c in header}
    if value(keys["BITPIX"]) != "-64" or value(keys["NAXIS"]) != "1":
        sys.exit(f"{source}: expected a 1-D BITPIX -64 image")
    n = int(value(keys["NAXIS1"]))
    if FIRST_PIXEL + N_PIXELS > n:
        sys.exit(f"{source}: {n} pixels, the window needs {FIRST_PIXEL + N_PIXELS}")

    crval = float(value(keys["CRVAL1"]))
    cdelt = float(value(keys["CDELT1"]))
    crpix = float(value(keys["CRPIX1"]))
    start = crval + cdelt * (FIRST_PIXEL + 1 - crpix)

    out = []
    for card in header:
        key = card[:8].strip()
        if key == "NAXIS1":
            card = with_value(card, str(N_PIXELS))
        elif key == "CRVAL1":
            card = with_value(card, f"{start:.8f}")
        elif key == "CRPIX1" and crpix != 1:
            sys.exit(f"{source}: CRPIX1 = {crpix}; the cut assumes 1")
        out.append(card)
    first, last = FIRST_PIXEL + 1, FIRST_PIXEL + N_PIXELS
    out.append(f"HISTORY lux extract: pixels {first}-{last} of the original".ljust(80))
    out.append("END".ljust(80))
    head = "".join(out).encode("ascii")
    head += b" " * (-len(head) % BLOCK)

    body = data[header_end + 8 * FIRST_PIXEL : header_end + 8 * (FIRST_PIXEL + N_PIXELS)]
    body += b"\0" * (-len(body) % BLOCK)
    target.write_bytes(head + body)


def main() -> None:
    repo = pathlib.Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=pathlib.Path, default=repo / "data" / "miles")
    parser.add_argument("--dest", type=pathlib.Path, default=repo / "tests" / "data" / "miles")
    args = parser.parse_args()

    params = (args.source / "MILES_params.db").read_text().splitlines()
    comments = [line for line in params if line.startswith("#")]
    rows = {}
    for line in params:
        if line.strip() and not line.startswith("#"):
            number, teff, logg, feh = line.split()
            rows[number] = (line, teff, logg, feh)

    def has_file(number: str) -> bool:
        return (args.source / f"MILES_res2.50_star_m{number}V.fits").is_file()

    numbers = sorted(n for n in rows if has_file(n))
    def known(number: str) -> tuple[bool, bool, bool]:
        _, teff, logg, feh = rows[number]
        return teff != MISSING_TEFF, logg != MISSING_OTHER, feh != MISSING_OTHER

    complete = [n for n in numbers if known(n) == (True, True, True)]
    no_teff = [n for n in numbers if not known(n)[0]]
    feh_only = [n for n in numbers if known(n) == (True, True, False)]

    rng = random.Random(SEED)
    chosen = set(rng.sample(complete, N_COMPLETE))
    chosen |= set(rng.sample(no_teff, N_MISSING_TEFF))
    chosen |= set(rng.sample(feh_only, N_MISSING_FEH_ONLY))

    args.dest.mkdir(parents=True, exist_ok=True)
    for old in args.dest.glob("MILES_res2.50_star_m*V.fits"):
        old.unlink()
    for number in sorted(chosen):
        name = f"MILES_res2.50_star_m{number}V.fits"
        cut_spectrum(args.source / name, args.dest / name)

    kept = [rows[n][0] for n in rows if n in chosen]
    (args.dest / "MILES_params.db").write_text("\n".join(comments + kept) + "\n")

    missing = sorted(chosen - set(complete))
    print(f"wrote {len(chosen)} spectra ({N_PIXELS} pixels from pixel {FIRST_PIXEL}) to {args.dest}")
    print(f"stars with a missing label: {', '.join('m' + n + 'V' for n in missing)}")


if __name__ == "__main__":
    main()
