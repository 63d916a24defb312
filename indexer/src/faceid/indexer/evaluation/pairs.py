"""Labeled image pairs: read LFW `pairs.txt` and CSV `image_a,image_b,same` files, build pairs from per-person folders.

LFW `pairs.txt` (http://vis-www.cs.umass.edu/lfw/README.txt, "pairs.txt format"): a header line
``N_SETS N_PER_SET`` (or a single ``N`` for one set, as in ``pairsDevTrain.txt``), then per set
``N_PER_SET`` matched lines ``name<TAB>n1<TAB>n2`` followed by ``N_PER_SET`` mismatched lines
``name1<TAB>n1<TAB>name2<TAB>n2``. The image of ``(name, n)`` is ``{name}/{name}_{n:04d}.jpg`` in LFW; other
folders use another ``pattern`` (this project's ``shared/data/faces`` is ``{name}/{num:02d}.jpg``).
Each set is one fold of the 10-fold protocol, so every pair carries its fold.
"""

from __future__ import annotations

import csv
import itertools
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from faceid.indexer.errors import InvalidRequest

LFW_PATTERN = "{name}/{name}_{num:04d}.jpg"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

_TRUE = {"1", "true", "yes", "same", "y", "t"}
_FALSE = {"0", "false", "no", "different", "diff", "n", "f"}


@dataclass(frozen=True)
class ImagePair:
    """Two image files and whether they show the same person; `fold` is the LFW set (0-based) when known."""

    a: Path
    b: Path
    same: bool
    fold: int | None = None


def read_pairs(path: Path, image_dir: Path | None = None, pattern: str = LFW_PATTERN) -> list[ImagePair]:
    """Read a `.csv` pairs file or an LFW-style pairs file, chosen by the suffix (.csv or anything else).

    `image_dir` defaults to the pairs file's folder; relative CSV paths are resolved against it.
    """
    path = Path(path)
    base = Path(image_dir) if image_dir is not None else path.parent
    if path.suffix.lower() == ".csv":
        return read_csv_pairs(path, base)
    return read_lfw_pairs(path, base, pattern)


def read_lfw_pairs(path: Path, image_dir: Path, pattern: str = LFW_PATTERN) -> list[ImagePair]:
    """Parse an LFW `pairs.txt`; image paths are `image_dir / pattern.format(name=..., num=...)`.

    Raises InvalidRequest naming the line when the file does not follow the format (wrong token count,
    a non-integer image number, or set sizes that disagree with the header).
    """
    lines = [(i + 1, ln.split()) for i, ln in enumerate(Path(path).read_text().splitlines()) if ln.strip()]
    if not lines:
        raise InvalidRequest(f"{path}: empty pairs file")
    header_no, header = lines[0]
    try:
        sizes = [int(t) for t in header]
    except ValueError:
        raise InvalidRequest(f"{path}:{header_no}: header must be 'N_SETS N_PER_SET' or 'N', got {' '.join(header)!r}")
    if len(sizes) == 1:
        n_sets, per_set = 1, sizes[0]
    elif len(sizes) == 2:
        n_sets, per_set = sizes
    else:
        raise InvalidRequest(f"{path}:{header_no}: header must be 'N_SETS N_PER_SET' or 'N', got {' '.join(header)!r}")
    body = lines[1:]
    if len(body) != 2 * n_sets * per_set:
        raise InvalidRequest(
            f"{path}: header announces {n_sets} set(s) of {per_set} matched + {per_set} mismatched pairs "
            f"({2 * n_sets * per_set} lines) but the file has {len(body)} pair lines"
        )
    image_dir = Path(image_dir)

    def image(name: str, num: str, line_no: int) -> Path:
        try:
            return image_dir / pattern.format(name=name, num=int(num))
        except ValueError:
            raise InvalidRequest(f"{path}:{line_no}: image number {num!r} is not an integer")

    pairs: list[ImagePair] = []
    for idx, (line_no, tok) in enumerate(body):
        fold, within = divmod(idx, 2 * per_set)
        matched = within < per_set
        if matched and len(tok) == 3:
            pairs.append(ImagePair(image(tok[0], tok[1], line_no), image(tok[0], tok[2], line_no), True, fold))
        elif not matched and len(tok) == 4:
            pairs.append(ImagePair(image(tok[0], tok[1], line_no), image(tok[2], tok[3], line_no), False, fold))
        else:
            want = "'name n1 n2' (matched)" if matched else "'name1 n1 name2 n2' (mismatched)"
            raise InvalidRequest(f"{path}:{line_no}: expected {want}, got {' '.join(tok)!r}")
    return pairs


def read_csv_pairs(path: Path, base_dir: Path | None = None) -> list[ImagePair]:
    """Parse a CSV with the header `image_a,image_b,same` (extra columns ignored; `fold` used when present).

    `same` accepts 1/0, true/false, yes/no, same/different. Relative paths resolve against `base_dir`
    (default: the CSV's folder).
    """
    path = Path(path)
    base = Path(base_dir) if base_dir is not None else path.parent
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"image_a", "image_b", "same"} - set(reader.fieldnames or [])
        if missing:
            raise InvalidRequest(f"{path}: CSV header must contain image_a,image_b,same; missing {sorted(missing)}")
        pairs = []
        for row in reader:
            line_no = reader.line_num
            flag = (row["same"] or "").strip().lower()
            if flag not in _TRUE | _FALSE:
                raise InvalidRequest(f"{path}:{line_no}: 'same' must be 1/0, true/false, yes/no; got {row['same']!r}")
            fold_text = (row.get("fold") or "").strip()
            pairs.append(
                ImagePair(
                    base / row["image_a"].strip(),
                    base / row["image_b"].strip(),
                    flag in _TRUE,
                    int(fold_text) if fold_text else None,
                )
            )
    if not pairs:
        raise InvalidRequest(f"{path}: no pairs after the header")
    return pairs


def write_csv_pairs(path: Path, pairs: Sequence[ImagePair], base_dir: Path | None = None) -> None:
    """Write pairs as CSV `image_a,image_b,same[,fold]`, paths relative to `base_dir` when under it."""

    def rel(p: Path) -> str:
        if base_dir is not None:
            try:
                return str(Path(p).relative_to(base_dir))
            except ValueError:
                pass
        return str(p)

    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh)
        with_fold = any(p.fold is not None for p in pairs)
        writer.writerow(["image_a", "image_b", "same"] + (["fold"] if with_fold else []))
        for p in pairs:
            row = [rel(p.a), rel(p.b), int(p.same)]
            writer.writerow(row + ([p.fold if p.fold is not None else ""] if with_fold else []))


def identity_folders(root: Path) -> dict[str, list[Path]]:
    """`root/<person>/<image>` → {person: sorted image paths}; people and images in name order.

    Files that are not images (by suffix) are ignored; a root without person folders is an InvalidRequest.
    """
    root = Path(root)
    if not root.is_dir():
        raise InvalidRequest(f"{root} is not a folder of per-person sub-folders")
    people = {
        d.name: sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        for d in sorted(root.iterdir())
        if d.is_dir()
    }
    people = {name: files for name, files in people.items() if files}
    if not people:
        raise InvalidRequest(f"{root} holds no per-person sub-folders with images ({', '.join(IMAGE_SUFFIXES)})")
    return people


def all_pairs(identities: Mapping[str, Sequence[Path]]) -> list[ImagePair]:
    """Every unordered pair of images (i < j in a stable order): same when both are in one person's folder."""
    items = [(name, p) for name, files in identities.items() for p in files]
    return [ImagePair(pa, pb, na == nb) for (na, pa), (nb, pb) in itertools.combinations(items, 2)]


def lfw_style_pairs(
    identities: Mapping[str, Sequence[Path]], n_folds: int = 10, per_fold: int | None = None, seed: int = 0
) -> list[ImagePair]:
    """Balanced LFW-style pairs: `n_folds` folds of `per_fold` matched + `per_fold` mismatched pairs.

    Matched pairs are drawn without replacement from all same-person pairs; mismatched pairs pick two
    different people at random, then one image of each, without repeating a pair. `per_fold` defaults to
    the most the data allows (all same-person pairs / n_folds). Unlike LFW's own folds, these folds are not
    identity-disjoint (16 people cannot fill 10 disjoint folds); the 10-fold accuracy is then a little optimistic.
    """
    rng = random.Random(seed)
    same = [p for p in all_pairs(identities) if p.same]
    most = len(same) // n_folds
    per_fold = most if per_fold is None else per_fold
    if per_fold < 1 or per_fold > most:
        raise InvalidRequest(
            f"{len(same)} same-person pairs allow 1..{most} matched pairs per fold for {n_folds} folds; asked {per_fold}"
        )
    names = [n for n, files in identities.items() if files]
    if len(names) < 2:
        raise InvalidRequest("mismatched pairs need at least two people")
    rng.shuffle(same)
    matched = same[: per_fold * n_folds]
    seen: set[frozenset[Path]] = set()
    mismatched: list[ImagePair] = []
    n_possible = sum(len(identities[a]) * len(identities[b]) for a, b in itertools.combinations(names, 2))
    if n_possible < per_fold * n_folds:
        raise InvalidRequest(f"only {n_possible} different-person pairs exist; asked {per_fold * n_folds}")
    while len(mismatched) < per_fold * n_folds:
        na, nb = rng.sample(names, 2)
        pa, pb = rng.choice(list(identities[na])), rng.choice(list(identities[nb]))
        key = frozenset((pa, pb))
        if key not in seen:
            seen.add(key)
            mismatched.append(ImagePair(pa, pb, False))
    pairs = []
    for fold in range(n_folds):
        chunk = slice(fold * per_fold, (fold + 1) * per_fold)
        pairs += [ImagePair(p.a, p.b, True, fold) for p in matched[chunk]]
        pairs += [ImagePair(p.a, p.b, False, fold) for p in mismatched[chunk]]
    return pairs


_NUM = re.compile(r"(\d+)")


def _name_and_number(path: Path) -> tuple[str, int]:
    match = _NUM.findall(path.stem)
    if not match:
        raise InvalidRequest(f"{path}: LFW pairs name images by number, but this file name has no digits")
    return path.parent.name, int(match[-1])


def write_lfw_pairs(path: Path, pairs: Sequence[ImagePair]) -> None:
    """Write pairs made by `lfw_style_pairs` in LFW `pairs.txt` format (person folder name + image number).

    Every fold must hold the same number of matched and mismatched pairs, matched first, as LFW requires.
    """
    folds = sorted({p.fold for p in pairs}, key=lambda f: -1 if f is None else f)
    per_fold = None
    lines: list[str] = []
    for fold in folds:
        in_fold = [p for p in pairs if p.fold == fold]
        matched = [p for p in in_fold if p.same]
        mismatched = [p for p in in_fold if not p.same]
        if len(matched) != len(mismatched) or (per_fold is not None and len(matched) != per_fold):
            raise InvalidRequest("LFW pairs need folds of equal size with as many matched as mismatched pairs")
        per_fold = len(matched)
        for p in matched:
            (na, ia), (nb, ib) = _name_and_number(p.a), _name_and_number(p.b)
            if na != nb:
                raise InvalidRequest(f"matched pair {p.a} / {p.b} is not in one person folder")
            lines.append(f"{na}\t{ia}\t{ib}")
        for p in mismatched:
            (na, ia), (nb, ib) = _name_and_number(p.a), _name_and_number(p.b)
            lines.append(f"{na}\t{ia}\t{nb}\t{ib}")
    Path(path).write_text(f"{len(folds)}\t{per_fold or 0}\n" + "\n".join(lines) + "\n")
