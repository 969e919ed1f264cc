"""The dataset card (``README.md``) and Croissant metadata (``croissant.json``) of an export."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from dermsynth.export import Selection

FIELDS = {
    "file_name": "the image file, relative to the split folder (ImageFolder only)",
    "image_id": "the synthetic image's id (`<seed id>_c<candidate>`)",
    "label": "the condition the image was made to show",
    "fst": "the Fitzpatrick skin type (1-6) the image was made to show",
    "origin": "always `synthetic`",
    "parent_id": "id of the real seed image it was made from",
    "prompt": "the text prompt",
    "random_seed": "the generator's random seed for this image",
    "candidate": "candidate number among its seed's candidates",
    "score": "the selection's combined score",
    "rank": "rank among its seed's candidates (1 = best)",
    "reviewed": "a person's decision (`accepted`, `rejected` or empty)",
    "reason": "why the image was kept",
    "ita": "individual typology angle of the healthy skin (degrees)",
    "fst_estimated": "the skin type the ITA maps to",
    "synthetic": "always true",
    "backend": "the generator backend",
    "model": "the generator's weights",
    "skin_fallback": "true where too few skin pixels were found and the whole image was used",
    "score_tone": "agreement of the estimated with the requested skin type (1 - |d| / 5)",
    "score_pathology": "probability of the intended condition (a classifier or CLIP)",
    "similarity": "cosine similarity of its embedding to its seed's",
    "flag_similarity": "`copy` (too close to its seed), `drift` (too far) or empty",
    "score_similarity": "1 inside the similarity band, lower outside",
    "blur": "variance of the Laplacian (higher is sharper)",
    "clipped": "share of clipped pixels",
    "colour_cast": "shift of the mean a*b* colour from its seed's",
    "score_quality": "mean of the three quality sub-scores",
    "leak_distance": "perceptual-hash distance to the nearest test image",
    "leak_nearest": "that test image's id",
    "excluded": "true for leaks and unreadable images (never kept)",
    "selected": "in the top k of its seed by score",
    "final": "the reviewer's decision overriding `selected`",
}
CROISSANT_CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "sc": "https://schema.org/",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "dct": "http://purl.org/dc/terms/",
    "prov": "http://www.w3.org/ns/prov#",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileObject": "cr:fileObject",
    "fileProperty": "cr:fileProperty",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
    "wasDerivedFrom": "prov:wasDerivedFrom",
    "wasGeneratedBy": "prov:wasGeneratedBy",
}
_GENERATOR_FIRST = ("backend", "model", "mode", "steps", "strength", "guidance", "resolution")


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None or value is pd.NA else str(value)


def generator_settings(selection: Selection, table: pd.DataFrame) -> list[tuple[str, str]]:
    """The settings every image shares (the generator's), the usual ones first."""
    from dermsynth.export import PER_IMAGE

    shared = {
        c: table[c].iloc[0]
        for c in table.columns
        if c not in PER_IMAGE and table[c].astype(str).nunique() == 1
    }
    for key, value in selection.run.items():
        # run.json's random_seed is the base the images' own seeds derive from.
        key = "base_random_seed" if key == "random_seed" else key
        if key not in shared and not isinstance(value, dict | list):
            shared[key] = value
    order = [k for k in _GENERATOR_FIRST if k in shared] + sorted(
        k for k in shared if k not in _GENERATOR_FIRST
    )
    return [(k, _value(shared[k])) for k in order]


def _selection_settings(selection: Selection) -> list[tuple[str, str]]:
    info = selection.info
    rows = [("kept per seed (k)", _value(info.get("k", "")))]
    if info.get("weights"):
        rows.append(("score weights", ", ".join(f"{k}={v:g}" for k, v in info["weights"].items())))
    for key in ("ita_thresholds", "embedder", "similarity_thresholds", "leakage_threshold"):
        if key in info:
            rows.append((key.replace("_", " "), _value(info[key])))
    rows.append(("pathology scored by", _value(info.get("pathology")) or "not scored"))
    return rows


def _scores(table: pd.DataFrame) -> list[dict[str, str]]:
    from dermsynth.export import SCORE_COLUMNS

    out = []
    for name in SCORE_COLUMNS:
        if name in table.columns:
            values = pd.to_numeric(table[name], errors="coerce").dropna()
            if len(values):
                out.append(
                    {
                        "name": name,
                        "mean": f"{values.mean():.3f}",
                        "min": f"{values.min():.3f}",
                        "max": f"{values.max():.3f}",
                    }
                )
    return out


def _loading(fmt: str, n_shards: int) -> str:
    if fmt == "imagefolder":
        return (
            "from datasets import load_dataset\n\n"
            'ds = load_dataset("imagefolder", data_dir="PATH/TO/THIS/FOLDER")["train"]\n'
            'ds[0]["image"], ds[0]["label"], ds[0]["fst"]'
        )
    last = max(n_shards - 1, 0)
    return (
        "import webdataset as wds\n\n"
        f'ds = wds.WebDataset("PATH/TO/THIS/FOLDER/shard-{{000000..{last:06d}}}.tar")'
        '.decode("pil").to_tuple("png", "json")\n'
        "image, record = next(iter(ds))"
    )


def licence_slug(licence: str | None) -> str:
    """The licence as a Hugging Face metadata name (``CC BY-NC-SA 3.0`` -> ``cc-by-nc-sa-3.0``)."""
    if not licence:
        return "source-dataset-terms"
    return re.sub(r"[^a-z0-9.]+", "-", licence.lower()).strip("-") or "source-dataset-terms"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return name
    return "100K<n<1M" if n < 1_000_000 else "n>1M"


def _quality_rows(quality: pd.DataFrame | None) -> dict[str, Any] | None:
    if quality is None or quality.empty:
        return None
    rows = [
        [_value(round(v, 4) if isinstance(v, float) else v) for v in r]
        for r in quality.itertuples(index=False)
    ]
    return {"columns": list(quality.columns), "rows": rows}


def dataset_card(
    title: str,
    fmt: str,
    selection: Selection,
    table: pd.DataFrame,
    licence: str | None,
    quality: pd.DataFrame | None,
    files: list[str],
) -> str:
    """The README.md of an exported set (Hugging Face dataset card)."""
    from jinja2 import Environment, PackageLoader

    from dermsynth.export import today

    env = Environment(
        loader=PackageLoader("dermsynth", "templates"), trim_blocks=True, autoescape=False
    )
    contents = table.groupby(["label", "fst"]).size().reset_index(name="n")
    reviewed = "reviewed" in table.columns and table["reviewed"].fillna("").astype(str).ne("").any()
    seeds = sorted(set(table["parent_id"]))
    k = selection.info.get("k")
    context = {
        "title": title,
        "licence": licence,
        "licence_slug": licence_slug(licence),
        "size_category": _size_category(len(table)),
        "reviewed": bool(reviewed),
        "simulated": selection.simulated,
        "n_images": len(table),
        "per_seed": f"up to {k} per seed" if k else "as selected",
        "n_candidates": selection.candidates,
        "seeds": seeds,
        "format_text": "Hugging Face ImageFolder (`train/` with `metadata.csv`)"
        if fmt == "imagefolder"
        else f"WebDataset, {len(files)} tar shard(s) of `<key>.png` + `<key>.json`",
        "date": today(),
        "contents": contents.to_dict("records"),
        "generator": generator_settings(selection, table),
        "model": _value(table["model"].iloc[0]) if "model" in table.columns else "see above",
        "selection_rule": (
            f"The candidates of each seed were scored, images close to a test image were excluded "
            f"(leakage guard), and the best {k or 'k'} of each seed by combined score were kept, a "
            "reviewer's accepted images first and rejected ones never."
        ),
        "selection": _selection_settings(selection),
        "selection_notes": list(selection.info.get("notes") or []),
        "scores": _scores(table),
        "quality": _quality_rows(quality),
        "loading": _loading(fmt, len(files)),
        "fields": [
            (c, FIELDS.get(c, "as in the selected manifest"))
            for c in (["file_name"] if fmt == "imagefolder" else []) + list(table.columns)
        ],
    }
    return env.get_template("dataset_card.md.j2").render(**context)


def _field(record_set: str, name: str, data_type: str, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "@type": "cr:Field",
        "@id": f"{record_set}/{name}",
        "name": name,
        "dataType": data_type,
        "source": source,
    }


def _data_type(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "sc:Boolean"
    if pd.api.types.is_integer_dtype(column):
        return "sc:Integer"
    if pd.api.types.is_float_dtype(column):
        return "sc:Float"
    return "sc:Text"


def _distribution(fmt: str) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Croissant files, and the sources of the images and of the records."""
    files: list[dict[str, Any]]
    if fmt == "imagefolder":
        files = [
            {
                "@type": "cr:FileObject",
                "@id": "metadata.csv",
                "name": "metadata.csv",
                "contentUrl": "train/metadata.csv",
                "encodingFormat": "text/csv",
            },
            {
                "@type": "cr:FileSet",
                "@id": "images",
                "name": "images",
                "encodingFormat": "image/png",
                "includes": "train/*.png",
            },
        ]
        return files, {"fileObject": {"@id": "metadata.csv"}}, {"fileSet": {"@id": "images"}}
    files = [
        {
            "@type": "cr:FileSet",
            "@id": "shards",
            "name": "shards",
            "encodingFormat": "application/x-tar",
            "includes": "shard-*.tar",
        },
        {
            "@type": "cr:FileSet",
            "@id": "records",
            "name": "records",
            "containedIn": {"@id": "shards"},
            "encodingFormat": "application/json",
            "includes": "*.json",
        },
        {
            "@type": "cr:FileSet",
            "@id": "images",
            "name": "images",
            "containedIn": {"@id": "shards"},
            "encodingFormat": "image/png",
            "includes": "*.png",
        },
    ]
    return files, {"fileSet": {"@id": "records"}}, {"fileSet": {"@id": "images"}}


def croissant(
    title: str,
    fmt: str,
    selection: Selection,
    table: pd.DataFrame,
    licence: str | None,
) -> dict[str, Any]:
    """Croissant 1.0 JSON-LD of an exported set, marked synthetic with the RAI terms."""
    from dermsynth.export import today

    distribution, records_source, images_source = _distribution(fmt)
    fields = [
        _field(
            "records",
            column,
            _data_type(table[column]),
            {
                **records_source,
                "extract": {"column": column}
                if fmt == "imagefolder"
                else {"jsonPath": f"$.{column}"},
            },
        )
        for column in table.columns
    ]
    image_fields = [
        _field(
            "images",
            "image",
            "sc:ImageObject",
            {**images_source, "extract": {"fileProperty": "content"}},
        ),
        _field(
            "images",
            "file_name",
            "sc:Text",
            {**images_source, "extract": {"fileProperty": "filename"}},
        ),
    ]
    model = _value(table["model"].iloc[0]) if "model" in table.columns else "a diffusion model"
    seeds = sorted(set(table["parent_id"]))
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "name": title,
        "description": (
            f"{len(table)} synthetic dermatology images made by {model} from {len(seeds)} real "
            "seed images, selected automatically for skin type and condition. Every image is "
            "synthetic; none is a photograph of a patient."
        ),
        "conformsTo": [
            "http://mlcommons.org/croissant/1.0",
            "http://mlcommons.org/croissant/RAI/1.0",
        ],
        "license": licence or "the licence terms of the seed images' source dataset (not stated)",
        "datePublished": today(),
        "version": "1.0.0",
        "keywords": ["synthetic", "dermatology", "Fitzpatrick skin type", "image classification"],
        "isLiveDataset": False,
        "rai:dataCollection": (
            "Generated: each image was made by a diffusion model from a real seed image and a text "
            "prompt, then scored (skin tone, condition, similarity to its seed, image quality), "
            "guarded against near-copies of test images, and the best kept per seed."
        ),
        "rai:dataCollectionType": ["Synthetic"],
        "rai:hasSyntheticData": True,
        "rai:dataUseCases": "Augmenting the training data of skin-condition classifiers for under-represented skin types; not for diagnosis.",
        "wasDerivedFrom": [{"@type": "sc:ImageObject", "identifier": s} for s in seeds],
        "wasGeneratedBy": {"@type": "sc:SoftwareApplication", "name": model},
        "distribution": distribution,
        "recordSet": [
            {"@type": "cr:RecordSet", "@id": "images", "name": "images", "field": image_fields},
            {
                "@type": "cr:RecordSet",
                "@id": "records",
                "name": "records",
                "description": "One record per synthetic image.",
                "field": fields,
            },
        ],
    }
