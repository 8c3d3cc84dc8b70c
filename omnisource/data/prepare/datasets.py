"""One preparer per dataset of the zoo: the dataset's official annotation files -> :class:`Split`.

Each reader names the files it looks for (found anywhere under ``--src``, or given with
``--annotations``), parses them with line-numbered errors, and locates each listed video the way
the dataset's downloads lay them out. The class order is the one mmaction2's label maps use
(``tools/data/<dataset>/label_map.txt``): the official index files where the dataset has one,
sorted class names where it has none (Kinetics).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from omnisource.data.prepare.common import (Prepared, Split, VideoIndex, find_file, finish, label_index,
                                            read_csv_rows, read_json, read_lines)
from omnisource.errors import InputError

__all__ = ["PREPARERS", "DOCS"]

Opts = dict[str, Any]


def _ann(opts: Opts, key: str) -> Path | None:
    given = (opts.get("annotations") or {}).get(key)
    return Path(given) if given else None


def _num(tok: str, what: str, path: Path, line: int) -> int:
    try:
        return int(float(tok))
    except ValueError:
        raise InputError(f"{what} must be a number, got {tok!r}", file=path, line=line) from None


def _label(index: dict[str, int], name: str, path: Path, line: int) -> int:
    try:
        return index[name]
    except KeyError:
        raise InputError(f"class {name!r} is not in the label map", file=path, line=line) from None


def _finish_videos(dataset: str, src: Path, out: Path, classes: list[str], splits: list[Split], force: bool,
                   locate: Callable[[str], str | None], **kw: Any) -> Prepared:
    return finish(dataset, src, out, classes, [(s, [locate(p) for p, _ in s.rows]) for s in splits], force, **kw)


# --------------------------------------------------------------------------------------------- Kinetics
def _kinetics_rows(path: Path) -> list[tuple[str, str, list[str]]]:
    """(video stem, youtube_id, [label]) of a Kinetics csv or json annotation file."""
    out = []
    if path.suffix.lower() == ".json":
        data = read_json(path)
        if not isinstance(data, dict):
            raise InputError("expected a JSON object {youtube_id: {annotations, subset, ...}}", file=path)
        for yid, rec in data.items():
            ann = rec.get("annotations") or {}
            seg = ann.get("segment") or [0, 0]
            stem = f"{yid}_{int(seg[0]):06d}_{int(seg[1]):06d}"
            out.append((stem, yid, [ann["label"]] if ann.get("label") else []))
        return out
    rows = list(read_csv_rows(path))
    if not rows:
        raise InputError("empty annotation file", file=path)
    head = [h.strip() for h in rows[0][1]]
    need = {"youtube_id", "time_start", "time_end"}
    if not need <= set(head):
        raise InputError(f"expected a Kinetics csv header with {sorted(need)} (and 'label'), got {head}",
                         file=path, line=rows[0][0])
    col = {h: i for i, h in enumerate(head)}
    for line, f in rows[1:]:
        if len(f) < len(head) - (1 if "is_cc" in col else 0):
            raise InputError(f"expected {len(head)} comma-separated fields ({','.join(head)}), got {len(f)}",
                             file=path, line=line)
        yid = f[col["youtube_id"]]
        s, e = _num(f[col["time_start"]], "time_start", path, line), _num(f[col["time_end"]], "time_end", path, line)
        label = f[col["label"]] if "label" in col else ""
        out.append((f"{yid}_{s:06d}_{e:06d}", yid, [label] if label else []))
    return out


def _kinetics(variant: str) -> Callable[..., Prepared]:
    def prepare(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
        files = {}
        for split, pats in (("train", ["*train*.csv", "*train*.json"]), ("val", ["*val*.csv", "*validate*.json", "*val*.json"]),
                            ("test", ["*test*.csv", "*test*.json"])):
            try:
                files[split] = find_file(src, pats, f"Kinetics {split} annotations", _ann(opts, split))
            except InputError:
                if split == "train":
                    raise
        parsed = {k: _kinetics_rows(p) for k, p in files.items()}
        subset = None
        if variant == "mini_kinetics_200":
            subset = _mini_kinetics_classes(src, opts)
        if opts.get("label_map"):
            classes = [c for _, c in read_lines(Path(opts["label_map"]))]
        elif subset is not None:
            classes = subset
        else:   # mmaction2's label_map_k{400,600,700}: the class names in sorted order
            classes = sorted({lab[0] for rows in parsed.values() for _, _, lab in rows if lab})
        index = label_index(classes)
        idx = VideoIndex(src)
        splits = []
        for name, rows in parsed.items():
            sp = Split(name, source=str(files[name]))
            for stem, yid, lab in rows:
                if lab and lab[0] not in index:
                    if subset is not None:        # Mini-Kinetics: rows of the other 200 classes
                        continue
                    raise InputError(f"class {lab[0]!r} of {yid} is not in the label map", file=files[name])
                sp.rows.append((stem, [index[lab[0]]] if lab else []))
            splits.append(sp)
        return _finish_videos(variant, src, out, classes, splits, force,
                              lambda stem: idx.video(stem) or idx.video(stem.rsplit("_", 2)[0]))
    return prepare


def _mini_kinetics_classes(src: Path, opts: Opts) -> list[str]:
    """The 200 classes: ``k200_actions.txt`` of the OmniSource release when found, else the list
    derived from the S3D split files (omnisource/resources/mini_kinetics_200_classes.txt)."""
    given = opts.get("classes")
    hits = [Path(given)] if given else sorted(src.rglob("k200_actions.txt"))
    path = hits[0] if hits else Path(__file__).resolve().parents[2] / "resources" / "mini_kinetics_200_classes.txt"
    names = [c for _, c in read_lines(path)]
    if len(names) != 200:
        raise InputError(f"expected the 200 Mini-Kinetics class names, found {len(names)}", file=path)
    return names


# --------------------------------------------------------------------------------------------- UCF101 / HMDB51
def _ucf101(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    split_no = int(opts.get("split") or 1)
    cls_file = find_file(src, ["classInd.txt"], "UCF101 classInd.txt", _ann(opts, "classes"))
    classes, index = [], {}
    for line, text in read_lines(cls_file):
        f = text.split()
        if len(f) != 2 or not f[0].isdigit():
            raise InputError("expected 'index ClassName' (1-based)", file=cls_file, line=line)
        classes.append(f[1])
    index = label_index(classes, cls_file)
    splits = []
    for name, fname in (("train", f"trainlist0{split_no}.txt"), ("val", f"testlist0{split_no}.txt")):
        path = find_file(src, [fname], f"UCF101 {fname}", _ann(opts, name))
        sp = Split(f"{name}_split_{split_no}", source=str(path))
        for line, text in read_lines(path):
            rel = text.split()[0]
            cls = rel.split("/")[0]
            sp.rows.append((rel, [_label(index, cls, path, line)]))
        splits.append(sp)
    idx = VideoIndex(src)
    return _finish_videos("ucf101", src, out, classes, splits, force,
                          lambda rel: idx.video(Path(rel).stem))


def _hmdb51(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    split_no = int(opts.get("split") or 1)
    files = sorted(src.rglob(f"*_test_split{split_no}.txt"))
    if not files:
        raise InputError(f"HMDB51 split files (<class>_test_split{split_no}.txt of testTrainMulti_7030_splits) not "
                         "found under the source folder", file=src)
    classes = sorted(p.name[: -len(f"_test_split{split_no}.txt")] for p in files)
    index = label_index(classes)
    train, test = Split(f"train_split_{split_no}"), Split(f"val_split_{split_no}")
    for p in files:
        cls = p.name[: -len(f"_test_split{split_no}.txt")]
        for line, text in read_lines(p):
            f = text.split()
            if len(f) != 2 or f[1] not in ("0", "1", "2"):
                raise InputError("expected 'video.avi 0|1|2' (unused / train / test)", file=p, line=line)
            if f[1] == "1":
                train.rows.append((f"{cls}/{f[0]}", [index[cls]]))
            elif f[1] == "2":
                test.rows.append((f"{cls}/{f[0]}", [index[cls]]))
    train.source = test.source = str(files[0].parent)
    idx = VideoIndex(src)
    return _finish_videos("hmdb51", src, out, classes, [train, test], force, lambda rel: idx.video(Path(rel).stem))


# --------------------------------------------------------------------------------------------- 20BN datasets
def _sthv2(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    lab_file = find_file(src, ["something-something-v2-labels.json", "*labels.json"], "Something-Something V2 labels",
                         _ann(opts, "classes"))
    labels = read_json(lab_file)
    if not isinstance(labels, dict):
        raise InputError("expected {template: index}", file=lab_file)
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    index = label_index(classes, lab_file)
    splits = []
    for name, pats in (("train", ["something-something-v2-train.json", "*train.json"]),
                       ("val", ["something-something-v2-validation.json", "*validation.json"])):
        path = find_file(src, pats, f"Something-Something V2 {name} annotations", _ann(opts, name))
        data = read_json(path)
        if not isinstance(data, list):
            raise InputError("expected a JSON list of {id, template, ...}", file=path)
        sp = Split(name, source=str(path))
        for i, rec in enumerate(data):
            try:
                template = rec["template"].replace("[", "").replace("]", "")
                vid = str(rec["id"])
            except (KeyError, TypeError, AttributeError):
                raise InputError(f"item {i} lacks 'id' / 'template'", file=path) from None
            if template not in index:
                raise InputError(f"item {i} ({vid}): template {template!r} is not in the labels", file=path)
            sp.rows.append((vid, [index[template]]))
        splits.append(sp)
    idx = VideoIndex(src)
    return _finish_videos("sthv2", src, out, classes, splits, force, lambda vid: idx.video(vid))


def _twentybn_frames(dataset: str, names: dict[str, list[str]], labels_pat: list[str]) -> Callable[..., Prepared]:
    """Something-Something V1 and Jester: ``labels.csv`` (one class per line), ``id;class``
    split csvs, videos as JPEG frame folders named by id (rawframes lists with frame counts)."""
    def prepare(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
        lab_file = find_file(src, labels_pat, f"{dataset} labels", _ann(opts, "classes"))
        classes = [c for _, c in read_lines(lab_file)]
        index = label_index(classes, lab_file)
        splits = []
        for name, pats in names.items():
            path = find_file(src, pats, f"{dataset} {name} annotations", _ann(opts, name))
            sp = Split(name, kind="rawframes", source=str(path))
            for line, text in read_lines(path):
                vid, sep, cls = text.partition(";")
                if not sep:
                    raise InputError("expected 'id;class name'", file=path, line=line)
                sp.rows.append((vid, [_label(index, cls, path, line)]))
            splits.append(sp)
        idx = VideoIndex(src)
        frames_root = {d.rsplit("/", 1)[0] for d in idx.dirs if "/" in d}
        parents = sorted(frames_root | {""}, key=len)

        def locate(vid: str) -> str | None:
            for parent in parents:
                rel = f"{parent}/{vid}" if parent else vid
                if idx.has_dir(rel):
                    return rel
            return None
        return _finish_videos(dataset, src, out, classes, splits, force, locate)
    return prepare


# --------------------------------------------------------------------------------------------- Diving48, Gym
def _diving48(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    vocab = None
    try:
        vocab = find_file(src, ["Diving48_vocab.json"], "Diving48 vocabulary", _ann(opts, "classes"))
    except InputError:
        pass
    if vocab is not None:
        classes = ["+".join(x) if isinstance(x, list) else str(x) for x in read_json(vocab)]
    else:
        classes = [str(i) for i in range(48)]
    splits = []
    for name, pats in (("train", ["Diving48_V2_train.json", "Diving48_train.json"]),
                       ("val", ["Diving48_V2_test.json", "Diving48_test.json"])):
        path = find_file(src, pats, f"Diving48 {name} annotations", _ann(opts, name))
        data = read_json(path)
        if not isinstance(data, list):
            raise InputError("expected a JSON list of {vid_name, label, ...}", file=path)
        sp = Split(name, source=str(path))
        for i, rec in enumerate(data):
            try:
                lab = int(rec["label"])
                vid = str(rec["vid_name"])
            except (KeyError, TypeError, ValueError):
                raise InputError(f"item {i} lacks 'vid_name' / integer 'label'", file=path) from None
            if not 0 <= lab < len(classes):
                raise InputError(f"item {i} ({vid}): label {lab} outside 0..{len(classes) - 1}", file=path)
            sp.rows.append((vid, [lab]))
        splits.append(sp)
    idx = VideoIndex(src)
    return _finish_videos("diving48", src, out, classes, splits, force, lambda vid: idx.video(vid))


def _gym99(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    """FineGym Gym99: ``gym99_{train,val}_element_v1.1.txt`` rows ``clip_id label`` (the clips cut
    by mmaction2's trim scripts, ``subactions/<clip_id>.mp4``); classes from ``gym99_categories.txt``
    (``Clabel: 0; set: 1; Glabel: 1; (VT) ...``) when present, else the indices."""
    classes: list[str] = []
    try:
        cat = find_file(src, ["gym99_categories.txt"], "Gym99 categories", _ann(opts, "classes"))
        for line, text in read_lines(cat):
            name = text.split(";")[-1].strip()
            classes.append(name)
    except InputError:
        classes = [str(i) for i in range(99)]
    splits = []
    for name, pats in (("train", ["gym99_train_element_v1.1.txt", "gym99_train_element.txt"]),
                       ("val", ["gym99_val_element.txt", "gym99_val_element_v1.1.txt"])):
        path = find_file(src, pats, f"Gym99 {name} list", _ann(opts, name))
        sp = Split(name, source=str(path))
        for line, text in read_lines(path):
            f = text.split()
            if len(f) != 2:
                raise InputError("expected 'clip_id label'", file=path, line=line)
            lab = _num(f[1], "label", path, line)
            if not 0 <= lab < len(classes):
                raise InputError(f"label {lab} outside 0..{len(classes) - 1}", file=path, line=line)
            sp.rows.append((f[0], [lab]))
        splits.append(sp)
    idx = VideoIndex(src)
    return _finish_videos("gym99", src, out, classes, splits, force, lambda vid: idx.video(vid))


# --------------------------------------------------------------------------------------------- Moments in Time
def _mit(multi: bool) -> Callable[..., Prepared]:
    """MiT: ``moments_categories.txt`` (``name,index``), ``trainingSet.csv`` / ``validationSet.csv``
    (``class/video.mp4,class,...``). Multi-MiT: ``trainingSet.txt`` / ``validationSet.txt`` rows
    ``path,index[,index...]`` (multi-label)."""
    dataset = "mmit" if multi else "mit"

    def prepare(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
        cat = find_file(src, ["moments_categories.txt"], f"{dataset} categories", _ann(opts, "classes"))
        pairs = []
        for line, text in read_lines(cat):
            name, sep, i = text.rpartition(",")
            if not sep or not i.strip().isdigit():
                raise InputError("expected 'category,index'", file=cat, line=line)
            pairs.append((int(i), name))
        classes = [n for _, n in sorted(pairs)]
        index = label_index(classes, cat)
        splits = []
        ext = "txt" if multi else "csv"
        for name, fname in (("train", f"trainingSet.{ext}"), ("val", f"validationSet.{ext}")):
            path = find_file(src, [fname], f"{dataset} {fname}", _ann(opts, name))
            sp = Split(name, source=str(path))
            for line, f in read_csv_rows(path):
                if multi:
                    labs = [_num(t, "label", path, line) for t in f[1:] if t.strip()]
                    if not labs or any(not 0 <= x < len(classes) for x in labs):
                        raise InputError(f"expected 'path,label[,label...]' with labels in 0..{len(classes) - 1}",
                                         file=path, line=line)
                    sp.rows.append((f[0], labs))
                else:
                    if len(f) < 2:
                        raise InputError("expected 'class/video.mp4,class,...'", file=path, line=line)
                    sp.rows.append((f[0], [_label(index, f[1], path, line)]))
            splits.append(sp)
        roots = {"train": ["training", ""], "val": ["validation", ""]}
        split_list = []
        for sp in splits:
            found = []
            for rel, _ in sp.rows:
                hit = None
                for r in roots[sp.name]:
                    cand = f"{r}/{rel}" if r else rel
                    if (src / cand).is_file():
                        hit = cand
                        break
                found.append(hit)
            split_list.append((sp, found))
        return finish(dataset, src, out, classes, split_list, force, multi_label=multi)
    return prepare


# --------------------------------------------------------------------------------------------- HVU
def _hvu(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    """HVU: ``HVU_Tags_Categories_V1.0.csv`` (``Tag,Category``) and ``HVU_{Train,Val}_V1.0.csv``
    (``Tags,youtube_id,time_start,time_end``, tags ``|``-separated; Kinetics-style video names).
    Writes a multi-label list over every tag (categories in mmaction2's order: action, attribute,
    concept, event, object, scene; tags sorted within each) and ``hvu_categories.json`` (category ->
    its tag indices) for per-category mAP."""
    cat_file = find_file(src, ["HVU_Tags_Categories_V1.0.csv", "*Tags_Categories*.csv"], "HVU tag categories",
                         _ann(opts, "classes"))
    by_cat: dict[str, list[str]] = {}
    for line, f in list(read_csv_rows(cat_file))[1:]:
        if len(f) != 2:
            raise InputError("expected 'Tag,Category'", file=cat_file, line=line)
        by_cat.setdefault(f[1].strip(), []).append(f[0].strip())
    order = ["action", "attribute", "concept", "event", "object", "scene"]
    cats = [c for c in order if c in by_cat] + sorted(c for c in by_cat if c not in order)
    classes, categories = [], {}
    for c in cats:
        tags = sorted(set(by_cat[c]))
        categories[c] = list(range(len(classes), len(classes) + len(tags)))
        classes += tags
    index = label_index(classes, cat_file)
    splits = []
    for name, pats in (("train", ["HVU_Train_V1.0.csv", "*Train*.csv"]), ("val", ["HVU_Val_V1.0.csv", "*Val*.csv"])):
        path = find_file(src, pats, f"HVU {name} annotations", _ann(opts, name))
        rows = list(read_csv_rows(path))
        head = [h.strip() for h in rows[0][1]] if rows else []
        if head[:4] != ["Tags", "youtube_id", "time_start", "time_end"]:
            raise InputError(f"expected the header 'Tags,youtube_id,time_start,time_end', got {head}", file=path,
                             line=rows[0][0] if rows else None)
        sp = Split(name, source=str(path))
        for line, f in rows[1:]:
            tags = [t for t in f[0].split("|") if t]
            s, e = _num(f[2], "time_start", path, line), _num(f[3], "time_end", path, line)
            sp.rows.append((f"{f[1]}_{s:06d}_{e:06d}", sorted({_label(index, t, path, line) for t in tags})))
        splits.append(sp)
    import json

    idx = VideoIndex(src)
    return _finish_videos("hvu", src, out, classes, splits, force, lambda stem: idx.video(stem),
                          multi_label=True, extra_files={"hvu_categories.json": json.dumps(categories, indent=1) + "\n"})


# --------------------------------------------------------------------------------------------- ActivityNet
def _activitynet(src: Path, out: Path, force: bool = False, **opts: Any) -> Prepared:
    """ActivityNet v1.3 (``activity_net.v1-3.min.json``): video-level lists (``v_<id>``, the label
    of its first annotation) and clip-level JSONL manifests (one row per annotated segment, read
    as that segment of the untrimmed video: ``omnisource`` manifests carry ``segment`` seconds)."""
    from omnisource.utils.io import atomic_write_text

    path = find_file(src, ["activity_net.v1-3.min.json", "activity_net*.json"], "ActivityNet annotations",
                     _ann(opts, "train"))
    data = read_json(path)
    db = data.get("database") if isinstance(data, dict) else None
    if not isinstance(db, dict):
        raise InputError("expected {'database': {video_id: {subset, annotations, ...}}}", file=path)
    if opts.get("label_map"):
        classes = [c for _, c in read_lines(Path(opts["label_map"]))]
    else:
        classes = sorted({a["label"] for v in db.values() for a in v.get("annotations", [])})
    index = label_index(classes)
    idx = VideoIndex(src)
    splits, clips = [], {}
    for name, subset in (("train", "training"), ("val", "validation")):
        sp = Split(name, source=str(path))
        clip_rows = []
        for vid, rec in db.items():
            if rec.get("subset") != subset:
                continue
            anns = rec.get("annotations") or []
            if not anns:
                continue
            for a in anns:
                if a.get("label") not in index:
                    raise InputError(f"{vid}: class {a.get('label')!r} is not in the label map", file=path)
            sp.rows.append((f"v_{vid}" if not vid.startswith("v_") else vid, [index[anns[0]["label"]]]))
            clip_rows.append((sp.rows[-1][0], anns))
        splits.append(sp)
        clips[name] = clip_rows
    found = [(sp, [idx.video(p) for p, _ in sp.rows]) for sp in splits]
    prepared = finish("activitynet", src, out, classes, found, force)
    import json

    for (sp, disk), name in zip(found, ("train", "val")):
        lines = []
        for (stem, anns), d in zip(clips[name], disk):
            if d is None:
                continue
            for a in anns:
                s, e = float(a["segment"][0]), float(a["segment"][1])
                lines.append(json.dumps({"path": d, "source": "activitynet", "kind": "video",
                                         "label": index[a["label"]], "segment": [s, e]}))
        target = out / f"activitynet_{name}_clips.jsonl"
        atomic_write_text(target, "".join(x + "\n" for x in lines))
        prepared.report["splits"][name]["clips"] = len(lines)
    from omnisource.utils.io import atomic_write_json

    atomic_write_json(out / "prepare_report.json", prepared.report)
    return prepared


PREPARERS: dict[str, Callable[..., Prepared]] = {
    "kinetics400": _kinetics("kinetics400"),
    "kinetics600": _kinetics("kinetics600"),
    "kinetics700": _kinetics("kinetics700"),
    "mini_kinetics_200": _kinetics("mini_kinetics_200"),
    "ucf101": _ucf101,
    "hmdb51": _hmdb51,
    "sthv1": _twentybn_frames("sthv1", {"train": ["something-something-v1-train.csv", "*v1-train.csv"],
                                        "val": ["something-something-v1-validation.csv", "*v1-validation.csv"]},
                              ["something-something-v1-labels.csv", "*v1-labels.csv"]),
    "sthv2": _sthv2,
    "jester": _twentybn_frames("jester", {"train": ["jester-v1-train.csv"], "val": ["jester-v1-validation.csv"]},
                               ["jester-v1-labels.csv"]),
    "diving48": _diving48,
    "gym99": _gym99,
    "mit": _mit(False),
    "mmit": _mit(True),
    "hvu": _hvu,
    "activitynet": _activitynet,
}

DOCS: dict[str, str] = {
    "kinetics400": "Kinetics-400: train/val(/test) csv or json (label, youtube_id, time_start, time_end); "
                   "videos <youtube_id>_<start:06d>_<end:06d>.mp4 in class folders or flat",
    "kinetics600": "Kinetics-600: as Kinetics-400",
    "kinetics700": "Kinetics-700: as Kinetics-400",
    "mini_kinetics_200": "Mini-Kinetics-200: the Kinetics-400 files, rows of its 200 classes (k200_actions.txt "
                         "of the OmniSource release if present), labels 0..199",
    "ucf101": "UCF101: ucfTrainTestlist/classInd.txt + trainlist0N / testlist0N (--split N, 1-3)",
    "hmdb51": "HMDB51: testTrainMulti_7030_splits/<class>_test_splitN.txt (1 train, 2 test; --split N)",
    "sthv1": "Something-Something V1: labels / train / validation csv ('id;class'), JPEG frame folders",
    "sthv2": "Something-Something V2: labels / train / validation json (template -> class), <id>.webm",
    "jester": "Jester: jester-v1-{labels,train,validation}.csv ('id;class'), JPEG frame folders",
    "diving48": "Diving48: Diving48_V2_{train,test}.json (vid_name, label), Diving48_vocab.json",
    "gym99": "FineGym Gym99: gym99_{train,val}_element*.txt ('clip_id label'), subaction clips",
    "mit": "Moments in Time: moments_categories.txt, trainingSet.csv / validationSet.csv",
    "mmit": "Multi-Moments in Time: moments_categories.txt, trainingSet.txt / validationSet.txt (multi-label)",
    "hvu": "HVU: HVU_Tags_Categories_V1.0.csv + HVU_{Train,Val}_V1.0.csv (multi-label tags, per-category map)",
    "activitynet": "ActivityNet v1.3: activity_net.v1-3.min.json -> video-level lists + clip-level manifests",
}
