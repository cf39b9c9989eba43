"""What `/natty check` can prove about a file or a text: natty's own label and job records, C2PA manifests,
the labels other tools leave, and a detector's guess, each said for what it is worth. No Discord here.

Findings are in the requester's language.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from dataclasses import dataclass, field
from typing import Any

from bot.i18n import t
from bot.jobs.storage import Storage
from bot.ui.provenance import open_image

# IPTC digital source types a C2PA manifest may declare; each is worded by the catalog key "check.source.<type>"
SOURCE_TYPES = ("trainedalgorithmicmedia", "compositewithtrainedalgorithmicmedia", "algorithmicmedia",
                "digitalcapture", "negativefilm", "positivefilm", "print", "digitalart", "composite",
                "minorhumanedits")


def source_type(name: str, locale: str | None) -> str:
    """A declared source type in words ("made by a generative AI model"), or as it is when unknown."""
    return t(f"check.source.{name.lower()}", locale) if name.lower() in SOURCE_TYPES else name


AI_LABEL_WORDS = ("artificial", "ai", "fake", "generated", "synthetic", "machine", "sd", "sdxl")
HUMAN_LABEL_WORDS = ("human", "real", "natural", "authentic", "photo", "original")


def verify_c2pa(data: bytes, mime: str) -> dict[str, Any] | None:
    """Validate an embedded C2PA manifest with c2pa-python when it is installed.

    Returns None when c2pa-python is missing (the caller then says the manifest was not verified), else
    {"ok": bool, "state", "generator", "signer", "issuer", "time", "sources": [...], "agents": [...],
    "problems": [codes], "error"}.
    """
    try:
        import c2pa  # optional: pip install natty-bot[c2pa]
    except ImportError:
        return None
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            report = json.loads(reader.json())
    except Exception as exc:  # c2pa raises its own error types for damaged or unsupported manifests
        return {"ok": False, "error": str(exc)[:200], "problems": [], "sources": [], "agents": []}
    manifest = (report.get("manifests") or {}).get(report.get("active_manifest") or "", {})
    info = manifest.get("claim_generator_info") or [{}]
    generator = manifest.get("claim_generator") or " ".join(
        str(x) for x in (info[0].get("name"), info[0].get("version")) if x)
    sources, agents = [], []
    for assertion in manifest.get("assertions", []):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions", []):
            if action.get("digitalSourceType"):
                sources.append(str(action["digitalSourceType"]).rsplit("/", 1)[-1])
            agent = action.get("softwareAgent")
            name = agent.get("name") if isinstance(agent, dict) else agent
            if name:
                agents.append(str(name))
    sig = manifest.get("signature_info") or {}
    problems = [s.get("code", "?") for s in report.get("validation_status", [])]
    return {"ok": True, "state": report.get("validation_state") or ("Invalid" if problems else "Valid"),
            "generator": generator or None, "signer": sig.get("common_name"), "issuer": sig.get("issuer"),
            "time": sig.get("time"), "sources": sources, "agents": agents, "problems": problems}


def detector_score(labels: list[tuple[str, float]]) -> float | None:
    """The probability a detector gives to "AI", if its labels say which label means that."""
    for label, score in labels:
        words = set(label.lower().replace("-", " ").replace("_", " ").split())
        if words & set(AI_LABEL_WORDS):
            return score
    for label, score in labels:
        words = set(label.lower().replace("-", " ").replace("_", " ").split())
        if words & set(HUMAN_LABEL_WORDS):
            return 1 - score
    return None


@dataclass
class Finding:
    """What `/natty check` found and what it proves, in one language."""

    found: list[str] = field(default_factory=list)
    proves: list[str] = field(default_factory=list)
    title: str = "Nothing conclusive"
    strength: str = "none"  # none | weak | strong


def assess_file(prov: dict[str, Any], c2pa_report: dict[str, Any] | None, natty_match: str | None,
                detector: tuple[str, list[tuple[str, float]]] | None, detector_note: str | None,
                locale: str | None = None) -> Finding:
    """Turn what was read from a file into findings and an honest account of their weight, in `locale`."""
    loc = locale
    f = Finding()
    title = "check.title.none"
    natty = prov.get("natty")
    if prov.get("c2pa"):
        if c2pa_report is None:
            f.found.append(t("check.c2pa_unverified", loc))
            f.proves.append(t("check.c2pa_unverified_proves", loc))
            f.strength = "weak"
        elif not c2pa_report.get("ok"):
            f.found.append(t("check.c2pa_unreadable", loc, error=c2pa_report.get("error")))
            f.proves.append(t("check.c2pa_unreadable_proves", loc))
            f.strength = "weak"
        else:
            sources = [source_type(s, loc) for s in c2pa_report["sources"]]
            bits = [t("check.c2pa_signed_by", loc, signer=c2pa_report.get("signer") or "?",
                      issuer=c2pa_report.get("issuer") or "?")]
            if c2pa_report.get("generator"):
                bits.append(t("check.c2pa_generator", loc, generator=c2pa_report["generator"]))
            if c2pa_report["agents"]:
                bits.append(t("check.c2pa_software", loc, names=", ".join(dict.fromkeys(c2pa_report["agents"]))))
            if sources:
                bits.append(t("check.c2pa_source", loc, sources="; ".join(dict.fromkeys(sources))))
            f.found.append(t("check.c2pa_found", loc, state=c2pa_report["state"], details=", ".join(bits)))
            problems = c2pa_report["problems"]
            if "signingCredential.untrusted" in problems:
                f.proves.append(t("check.c2pa_untrusted", loc))
            elif problems:
                f.proves.append(t("check.c2pa_problems", loc, problems=", ".join(problems[:4])))
            else:
                f.proves.append(t("check.c2pa_valid", loc))
            f.strength = "strong" if not problems else "weak"
            if any("trainedalgorithmicmedia" in s.lower() for s in c2pa_report["sources"]):
                title = "check.title.c2pa_ai"
    if natty is not None:
        job = t("check.natty_label_job", loc, id=natty.job_id) if natty.job_id else ""
        f.found.append(t("check.natty_label", loc, model=natty.model, task=natty.task, created=natty.created, job=job))
        if natty_match:
            f.found.append(natty_match)
            f.proves.append(t("check.natty_match_proves", loc))
            f.strength = "strong"
            title = "check.title.natty"
        else:
            f.proves.append(t("check.natty_claim_proves", loc))
            f.strength = max(f.strength, "weak", key=["none", "weak", "strong"].index)
            title = "check.title.natty_label"
    if prov.get("generator_hints"):
        f.found.append(t("check.generator_found", loc, names=", ".join(prov["generator_hints"])))
        f.proves.append(t("check.generator_proves", loc))
        if title == "check.title.none":
            title = "check.title.generator"
            f.strength = "weak"
    software = prov.get("software")
    if software and not (natty and software.startswith("natty")):
        f.found.append(t("check.software", loc, software=software[:100]))
    if detector is not None:
        name, labels = detector
        score = detector_score(labels)
        top = ", ".join(f"{label} {s:.0%}" for label, s in labels[:3])
        if score is not None:
            f.found.append(t("check.detector_score", loc, name=name, score=f"{score:.0%}", top=top))
        else:
            f.found.append(t("check.detector_unclear", loc, name=name, top=top))
        f.proves.append(t("check.detector_proves", loc))
    elif detector_note:
        f.found.append(detector_note)
    if not f.found:
        f.found.append(t("check.nothing_found", loc))
    if f.strength == "none":
        f.proves.append(t("check.absence_proves", loc))
    f.title = t(title, loc)
    return f


def text_sha256(text: str) -> str:
    """The hash `/natty check` matches texts by: whitespace-normalized, so copy and paste does not break it."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


async def natty_text_job(storage: Storage, text: str, guild_id: int | None, limit: int = 5000) -> dict | None:
    """The natty job on this server whose result text is exactly `text`, if any (newest first)."""
    rows = await storage.public_text_results(guild_id, limit)
    # Thousands of JSON documents: parse them in a thread so the bot keeps answering meanwhile.
    return await asyncio.to_thread(_first_text_match, rows, text_sha256(text))


def _first_text_match(rows: list[tuple[Any, ...]], wanted: str) -> dict | None:
    for job_id, model, task, created_at, raw in rows:
        result = json.loads(raw)
        if result.get("kind") == "text" and result.get("text") and text_sha256(result["text"]) == wanted:
            return {"id": job_id, "model": model, "task": task, "created_at": created_at}
    return None


def same_pixels(a: bytes, b: bytes) -> bool:
    """Whether two images decode to the same pixels (a stamp adds metadata, never changes them)."""
    from PIL import ImageChops

    try:
        x = open_image(a).convert("RGBA")
        y = open_image(b).convert("RGBA")
    except Exception:
        return False
    return x.size == y.size and ImageChops.difference(x, y).getbbox() is None


def assess_text(match: dict | None, locale: str | None = None) -> Finding:
    """What `/natty check` can say about a plain text, in `locale`: only whether natty itself produced exactly it."""
    f = Finding()
    if match:
        f.title, f.strength = t("check.title.natty", locale), "strong"
        f.found.append(t("check.text_match", locale, id=match["id"], model=match["model"],
                         when=f"<t:{int(match['created_at'])}:f>"))
        f.proves.append(t("check.text_match_proves", locale))
    else:
        f.title = t("check.title.none", locale)
        f.found.append(t("check.text_no_match", locale))
        f.proves.append(t("check.text_no_match_proves", locale))
    return f
